"""The HTML cards of the notebook reprs, each rendered from plain data (dicts, as the objects hold them).

- :func:`lab_card`: a Lab's state, where it is, its counts and a summary of its workers.
- :func:`entity_card`: one entity's live KV document (identity, position, vehicle, power, link).
- :func:`ladder_card`: a command's status ladder, one row per delivery, a time per stage.
- :func:`simulation_card`: a simulation's scenario, state, speed, counts and faults.

The objects gather the data (cheaply, bounded) and call these; a card renders whatever subset
it is given, so a missing part shows as a dash, not an error. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from overwatch_lab.notebook.html import (
    SKIP,
    Safe,
    badge,
    card,
    clock,
    epoch,
    esc,
    fields,
    grid,
    link,
    note,
    redact_url,
    section,
)
from overwatch_lab.protocol.commands import PROGRESS, TERMINAL, CommandStatus, aggregate_status

MAX_ROWS = 20
"""Rows shown in a card's table (deliveries of a broadcast, workers, faults); the rest are counted."""

LAB_TONES = {"running": "ok", "starting": "info", "stopping": "warn", "failed": "bad"}
SIM_TONES = {"running": "ok", "paused": "warn", "failed": "bad", "new": "info"}
WORKER_COLUMNS = ("handled", "acked", "retried", "quarantined", "lag")


def status_tone(status: str | None) -> str:
    """The badge tone of a command status."""
    if status == CommandStatus.SUCCEEDED:
        return "ok"
    if status in TERMINAL:
        return "bad"
    return "idle" if status is None else "info"


def get(doc: object, path: str) -> Any:
    """``doc["a"]["b"]`` for ``path`` ``"a.b"``, None where a level is missing or not a mapping."""
    cur = doc
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(part)
    return cur


def _more(total: int) -> Safe:
    return note(f"… and {total - MAX_ROWS} more") if total > MAX_ROWS else Safe("")


# ---------------------------------------------------------------------------------------------- Lab
def lab_card(info: Mapping[str, Any]) -> Safe:
    """A Lab: ``info`` as ``Lab._overview`` gathers it (``state``, ``owner``, ``failure``,
    ``nats_url``, ``monitor_url``, ``data_dir``, ``db_url``, ``dashboard_url``, ``orgs``,
    ``entities``, ``live``, ``simulations``, ``workers``: [(name, counters)], ``synchronizer``,
    ``broker``, ``commands``, ``unavailable``: what could not be read). Credentials in a URL are
    never shown."""
    state = str(info.get("state") or "unknown")
    role = "owner" if info.get("owner", True) else "attached"
    entities = info.get("entities")
    live = info.get("live")
    counts = (
        esc(None) if entities is None else f"{entities} in KV" + ("" if live is None else f", {live} live")
    )
    rows: list[tuple[str, object]] = [
        ("failure", info.get("failure") or SKIP),
        ("broker", redact_url(info["nats_url"]) if info.get("nats_url") else SKIP),
        ("monitor", link(info["monitor_url"]) if info.get("monitor_url") else SKIP),
        ("data dir", info.get("data_dir")),
        ("database", info.get("db_url") or SKIP),
        ("dashboard", link(info["dashboard_url"]) if info.get("dashboard_url") else SKIP),
        ("organisations", info.get("orgs")),
        ("entities", counts),
        ("simulations", info.get("simulations") if info.get("simulations") else SKIP),
    ]
    parts: list[object] = [fields(rows)]
    workers: Sequence[tuple[str, Mapping[str, Any]]] = info.get("workers") or ()
    if workers:
        table = grid(
            ("worker", *WORKER_COLUMNS, "state"),
            ([name, *(w.get(c) for c in WORKER_COLUMNS), _worker_state(w)] for name, w in workers[:MAX_ROWS]),
        )
        parts += [section("workers", table), _more(len(workers))]
    extra = [
        (label, value)
        for label, value in (
            ("synchronizer", _sync_line(info.get("synchronizer"))),
            ("broker restarts", get(info, "broker.restarts")),
            ("commands open", get(info, "commands.open")),
        )
        if value is not None
    ]
    if extra:
        parts.append(fields(extra))
    for problem in info.get("unavailable") or ():
        parts.append(note(f"not shown: {problem}"))
    return card(
        "overwatch-lab", *parts, tag=Safe(f"{badge(state, LAB_TONES.get(state, 'idle'))} {badge(role)}")
    )


def _worker_state(w: Mapping[str, Any]) -> Safe:
    if w.get("holding"):
        return badge(f"holding: {w.get('hold_reason') or '?'}", "warn")
    if w.get("last_error"):
        # the last error a worker recovered from (a retry's reason): there to hover, not an alarm
        return Safe(f'<span title="{esc(w["last_error"], 400)}">{badge("ok, last error ⓘ", "ok")}</span>')
    return badge("ok", "ok")


def _sync_line(sync: object) -> str | None:
    if not isinstance(sync, Mapping):
        return None
    line = f"{sync.get('passes', 0)} passes, {sync.get('failed_passes', 0)} failed"
    if sync.get("failing_since"):
        line += " (failing now)"
    return line


# ---------------------------------------------------------------------------------------------- entity
ENTITY_SECTIONS: tuple[tuple[str, tuple[tuple[str, str, str], ...]], ...] = (
    (
        "position",
        (
            ("latitude", "position.global.latitude", "°"),
            ("longitude", "position.global.longitude", "°"),
            ("altitude MSL", "position.global.altitude_msl", " m"),
            ("altitude above home", "position.global.altitude_relative", " m"),
            ("fix / satellites", "", ""),
            ("ground speed", "vfr.groundspeed", " m/s"),
            ("heading", "vfr.heading", "°"),
        ),
    ),
    (
        "vehicle",
        (
            ("mode", "vehicle_status.mode", ""),
            ("armed", "vehicle_status.armed", ""),
            ("system status", "vehicle_status.system_status", ""),
            ("landed state", "vehicle_status.landed_state", ""),
            ("battery", "power.battery_remaining", " %"),
            ("voltage", "power.voltage", " V"),
        ),
    ),
)


def entity_card(doc: Mapping[str, Any]) -> Safe:
    """One entity's live KV document (``lab.entity(entity_id)``)."""
    live = doc.get("is_live")
    tag = badge("live", "ok") if live is True else badge("stale", "bad") if live is False else badge("?")
    name = doc.get("name") or doc.get("entity_id")
    identity = fields(
        [
            ("entity_id", doc.get("entity_id")),
            ("organisation", _org(doc)),
            ("type", doc.get("entity_type")),
            ("status / priority", f"{text(doc.get('status'))} / {text(doc.get('priority'))}"),
            ("last seen", doc.get("last_seen")),
        ]
    )
    parts: list[object] = [identity]
    for title, spec in ENTITY_SECTIONS:
        rows = [(label, _fix(doc) if not path else _unit(get(doc, path), unit)) for label, path, unit in spec]
        if any(v is not None for _, v in rows):
            parts.append(section(title, fields(rows)))
    tracked = get(doc, "detections.tracked_objects")
    if isinstance(tracked, Mapping) and tracked:
        parts.append(note(f"{len(tracked)} tracked objects"))
    if not any(get(doc, p) is not None for _, spec in ENTITY_SECTIONS for _, p, _ in spec if p):
        parts.append(note("no telemetry yet"))
    return card(name, *parts, tag=tag)


def text(value: object) -> str:
    """A value as it reads in a sentence (dash for None)."""
    return "—" if value is None else str(value)


def _org(doc: Mapping[str, Any]) -> str:
    org, name = doc.get("org_id"), doc.get("org_name")
    return text(org) if not name or name == org else f"{name} ({org})"


def _unit(value: object, unit: str) -> object:
    if value is None or not unit:
        return value
    if isinstance(value, float):
        return f"{value:.6g}{unit}"
    return f"{value}{unit}"


def _fix(doc: Mapping[str, Any]) -> object:
    fix, sats = get(doc, "position.global.fix_type"), get(doc, "position.global.satellites_visible")
    return None if fix is None and sats is None else f"{text(fix)} / {text(sats)}"


# ---------------------------------------------------------------------------------------------- ladder
_STATUSES = frozenset(str(s) for s in CommandStatus)
LADDER = (*PROGRESS[:-1], "DONE")
"""The ladder's columns: the success path up to EXECUTING, then the final status (whatever it is)."""


def ladder_rows(
    deliveries: Mapping[str, Mapping[str, Any]],
) -> list[tuple[str, str | None, dict[str, float | None], str | None, str | None]]:
    """(entity_id, status, {column: epoch s}, final status, reason) per delivery, sorted by entity.

    Each delivery is a command KV document (``status``, ``reason``, ``history``: a list of
    ``{status, at, reason}``) or the same shape built from the transitions seen so far.
    """
    out = []
    for entity_id, d in sorted(deliveries.items()):
        times: dict[str, float | None] = {}
        final: str | None = None
        for h in d.get("history") or ():
            st = str(h.get("status"))
            col = "DONE" if st in TERMINAL else st
            if col in LADDER and times.get(col) is None:
                times[col] = epoch(h.get("at"))
            if st in TERMINAL:
                final = st
        status = d.get("status")
        if status in TERMINAL:
            final = str(status)
        out.append((entity_id, None if status is None else str(status), times, final, d.get("reason")))
    return out


def ladder_card(
    command_id: str,
    target: str,
    deliveries: Mapping[str, Mapping[str, Any]],
    *,
    action: str | None = None,
    stale: str | None = None,
) -> Safe:
    """A command's status ladder: per delivery, the time of each stage after QUEUED (ms).

    Args:
        command_id: the command.
        target: the entity, or ``"{org} (broadcast)"``.
        deliveries: entity_id → KV document (or transitions in that shape); empty until recorded.
        action: shown in the title when known.
        stale: why these are not fresh (shown under the table), or None.
    """
    rows = ladder_rows(deliveries)
    statuses = [CommandStatus(r[1]) for r in rows if r[1] in _STATUSES]
    overall = aggregate_status(statuses)
    title = f"command {command_id}" + (f" · {action}" if action else "") + f" → {target}"
    parts: list[object] = []
    if not rows:
        parts.append(note("not recorded yet (the command worker has not taken it)"))
    else:
        parts.append(grid(("entity", *LADDER, "reason"), (_ladder_row(r) for r in rows[:MAX_ROWS])))
        parts.append(_more(len(rows)))
    if stale:
        parts.append(note(stale))
    return card(title, *parts, tag=badge(overall or "not recorded", status_tone(overall)))


def _ladder_row(row: tuple[str, str | None, dict[str, float | None], str | None, str | None]) -> list[object]:
    entity_id, _status, times, final, reason = row
    t0 = times.get("QUEUED")
    cells: list[object] = [entity_id]
    for col in LADDER:
        if col not in times:
            cells.append(Safe('<span style="opacity:.35">·</span>'))
            continue
        at = times[col]
        when = esc(clock(at))
        if col == "QUEUED" or at is None or t0 is None:
            shown = when
        else:
            shown = esc(f"+{(at - t0) * 1000:.0f} ms")
        label = Safe(f'<span title="{when} UTC">{shown}</span>')
        if col == "DONE":
            label = Safe(f"{badge(final, status_tone(final))} {label}")
        cells.append(label)
    cells.append(reason)
    return cells


# ---------------------------------------------------------------------------------------------- simulation
def simulation_card(stats: Mapping[str, Any], faults: Iterable[Mapping[str, Any]]) -> Safe:
    """A simulation: ``stats`` as ``sim.stats()`` returns them, ``faults`` one dict per fault
    (``kind``, ``targets``, ``start_s``, ``end_s``, ``source``)."""
    state = str(stats.get("state") or "unknown")
    sim_s = stats.get("sim_time_s")
    rows: list[tuple[str, object]] = [
        ("seed", stats.get("seed")),
        ("devices", stats.get("devices")),
        ("speed", None if stats.get("speed") is None else f"{stats['speed']:g}× real time"),
        ("simulated time", None if sim_s is None else f"{sim_s:.1f} s"),
        ("messages", _messages(stats)),
        ("lag behind real time", None if stats.get("lag_s") is None else f"{stats['lag_s']:.2f} s"),
        ("processes", stats.get("processes") or SKIP),
    ]
    listed = list(faults)
    now = sim_s if isinstance(sim_s, int | float) else None
    fault_rows = [
        [
            f.get("kind"),
            _targets(f.get("targets")),
            _span(f.get("start_s"), f.get("end_s")),
            _fault_state(f, now),
            f.get("source"),
        ]
        for f in listed[-MAX_ROWS:]
    ]
    parts: list[object] = [
        fields(rows),
        section(
            f"faults ({len(listed)})",
            grid(("kind", "targets", "simulated s", "", "source"), fault_rows, empty="none applied"),
        ),
    ]
    if len(listed) > MAX_ROWS:
        parts.append(note(f"the last {MAX_ROWS} of {len(listed)} shown"))
    return card(
        f"simulation {text(stats.get('scenario'))}", *parts, tag=badge(state, SIM_TONES.get(state, "idle"))
    )


def _messages(stats: Mapping[str, Any]) -> str | None:
    n = stats.get("messages")
    if n is None:
        return None
    rate = stats.get("msgs_per_s")
    return f"{n}" + ("" if rate is None else f" ({rate:g}/s)")


def _targets(targets: object) -> str:
    if isinstance(targets, str):
        return targets
    if isinstance(targets, Iterable):
        return ", ".join(str(t) for t in targets)
    return text(targets)


def _span(start: object, end: object) -> str:
    if not isinstance(start, int | float) or not isinstance(end, int | float):
        return "—"
    return f"{start:.1f} – {end:.1f}"


def _fault_state(fault: Mapping[str, Any], now: float | None) -> Safe:
    start, end = fault.get("start_s"), fault.get("end_s")
    if now is None or not isinstance(start, int | float) or not isinstance(end, int | float):
        return Safe("")
    if now < start:
        return badge("pending", "info")
    return badge("active", "warn") if now < end else badge("over")
