"""What ``overwatch-lab status`` reports: the running lab's lab.json, its state and its counters (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_WORKER_KEYS = ("handled", "acked", "quarantined", "retried", "holding", "held", "lag", "last_error")
_STREAM_KEYS = ("messages", "discarded", "dropped", "lost", "lag", "lag_rate_per_s")


_SECRETS = frozenset({"nats_token", "nats_auth", "system_auth"})  # lab.json fields never printed

def lab_status(info: dict[str, Any], stats: dict[str, Any], states: Any) -> dict[str, Any]:
    """What ``status`` reports (pure): the lab's lab.json (token hidden), state and counters.

    Args:
        info: the lab's ``lab.json`` (its pid, embedded flag, start time, URLs).
        stats: its ``lab.stats()`` (empty until the owner first published them).
        states: its ``lab.frames.states()`` frame (one row per entity; ``is_live`` when any).
    """
    workers = {
        name: {k: c.get(k) for k in _WORKER_KEYS}
        for name, c in stats.items()
        if isinstance(c, dict) and "handled" in c
    }
    streams = {name: {k: c.get(k) for k in _STREAM_KEYS} for name, c in (stats.get("streams") or {}).items()}
    broker = stats.get("broker") or {}
    live = int(states["is_live"].fillna(False).astype(bool).sum()) if "is_live" in states else 0
    holding = sorted(name for name, c in workers.items() if c["holding"])
    if not stats:
        state = "starting (no counters published yet)"
    elif broker.get("state") not in (None, "running"):
        state = f"broker {broker['state']}"
    elif holding:
        state = f"holding ({', '.join(holding)})"
    else:
        state = "running"
    return {
        "lab": {k: v for k, v in info.items() if k not in _SECRETS} | {"state": state},
        "entities": {"total": int(len(states)), "live": live},
        "workers": workers,
        "streams": streams,
        "broker": {k: broker.get(k) for k in ("state", "pid", "restarts", "failed_attempts")}
        if broker
        else {},
        "synchronizer": stats.get("synchronizer") or {},
    }


def _cell(value: Any) -> str:
    """A table cell: ``-`` for none, a float (the lag trend, msg/s) signed and rounded."""
    if value is None:
        return "-"
    return f"{round(value):+d}" if isinstance(value, float) else str(value)


def format_status(report: dict[str, Any]) -> str:
    """``status``'s human-readable text (pure): a header, then one table per counter group."""
    lab = report["lab"]
    lines = [f"overwatch-lab {lab.get('version', '?')} in {lab.get('data_dir')}: {lab['state']}"]
    for key in ("pid", "embedded", "started_at", "nats_url", "monitor_url", "db_url"):
        lines.append(f"  {key:<12} {lab.get(key)}")
    ent = report["entities"]
    lines.append(f"  {'entities':<12} {ent['total']} ({ent['live']} live)")
    broker = report["broker"]
    if broker:
        lines.append(
            f"  {'broker':<12} {broker['state']}, pid {broker['pid']}, {broker['restarts']} restarts"
            f" ({broker['failed_attempts']} failed attempts)"
        )

    def table(title: str, rows: dict[str, dict[str, Any]], keys: Sequence[str]) -> None:
        if not rows:
            return
        width = max(len(title), *map(len, rows))
        cells = {n: [_cell(r[k]) for k in keys] for n, r in rows.items()}
        widths = [max(len(k), *(len(c[i]) for c in cells.values())) for i, k in enumerate(keys)]
        lines.append("")
        lines.append(
            f"{title:<{width}}  " + "  ".join(f"{k:>{w}}" for k, w in zip(keys, widths, strict=True))
        )
        for name, c in cells.items():
            lines.append(
                f"{name:<{width}}  " + "  ".join(f"{v:>{w}}" for v, w in zip(c, widths, strict=True))
            )

    table("worker", report["workers"], [k for k in _WORKER_KEYS if k != "last_error"])
    table("stream", report["streams"], _STREAM_KEYS)
    errors = [f"  {n}: {c['last_error']}" for n, c in report["workers"].items() if c.get("last_error")]
    if errors:
        lines += ["", "last errors:", *errors]
    return "\n".join(lines)
