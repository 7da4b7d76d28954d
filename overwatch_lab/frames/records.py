"""Events, commands, quarantine, entities and organisations as frames with the history filters.

Each event-like frame is indexed by a UTC ``time`` and has categorical ``entity_id`` and
``org_id`` columns, like :func:`~.history.history`, so any two join on entity and time
(``pd.merge_asof(..., on="time", by="entity_id")``). The entity/org/window filters mean the
same as for history; a window is on each record's own time (event time, command queued time,
quarantine time).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from overwatch_lab.commands.api import STAGE_PAIRS
from overwatch_lab.errors import FrameError
from overwatch_lab.frames.filters import Filters, check_known
from overwatch_lab.frames.reader import Reader, epoch_to_time
from overwatch_lab.store.connection import decode_json
from overwatch_lab.store.schema import ENTITY_JSON_COLUMNS

QUARANTINE_COLUMNS = (
    "quarantined_at", "worker", "error", "original_subject", "num_delivered",
    "stream_sequence", "source_stream", "source_consumer", "original_data",
)  # fmt: skip
"""The fields of a quarantine record (docs/wire.md "Quarantine")."""

COMMAND_FILTERS = ("command_id", "status", "action")
"""Equality filters of :func:`commands` besides entity, org and window."""

_STAGES = ("queued_ts", "sent_ts", "received_ts", "accepted_ts", "executing_ts", "done_ts", "expires_ts")


def _categorical_ids(frame: pd.DataFrame, *names: str) -> None:
    for name in names:
        if name in frame:
            frame[name] = frame[name].astype("category")


def _indexed(frame: pd.DataFrame, epoch: pd.Series) -> pd.DataFrame:
    frame.index = epoch_to_time(epoch.to_numpy(dtype="float64")).rename("time")
    return frame


def device_events(reader: Reader, filters: Filters, event_type: str | None = None) -> pd.DataFrame:
    """Device events (bootsequence, shutdown, ...), oldest first, indexed by event time.

    Columns: ``entity_id``, ``org_id``, ``event_type`` (categorical), ``event_uid``, ``ts``
    (epoch s), ``timestamp`` (as sent), ``data`` (JSON text).

    Raises:
        FrameError: an unknown entity or organisation.
    """
    check_known(reader, filters)
    where, params = Filters(
        filters.org, filters.entities, filters.entity_types, None, filters.since, filters.until
    ).where()
    if event_type is not None:
        where += (" AND " if where else " WHERE ") + "event_type = ?"
        params.append(event_type)
    frame = reader.records(
        "SELECT entity_id, org_id, event_type, event_uid, ts, timestamp, data FROM device_events"
        f"{where} ORDER BY ts, id",
        params,
    )
    frame["ts"] = frame["ts"].astype("float64")
    _categorical_ids(frame, "entity_id", "org_id", "event_type")
    return _indexed(frame, frame["ts"])


def commands(reader: Reader, filters: Filters, **equals: Any) -> pd.DataFrame:
    """One row per command and entity, indexed by the time it was queued; per-stage latencies (ms).

    Columns: the command's ids and status, each stage's time (``queued_at`` … ``done_at``,
    UTC), ``queued_to_sent_ms`` … ``executing_to_done_ms`` and ``total_ms`` (queued → done;
    NaN where a stage was skipped or not reached).

    Raises:
        FrameError: an unknown filter, entity or organisation.
    """
    unknown = set(equals) - set(COMMAND_FILTERS)
    if unknown:
        raise FrameError(
            f"unknown commands filter(s) {sorted(unknown)}; use entity, org, since, until, {', '.join(COMMAND_FILTERS)}"
        )
    check_known(reader, filters)
    where, params = Filters(
        filters.org, filters.entities, filters.entity_types, None, filters.since, filters.until
    ).where(ts="queued_ts")
    for key, value in equals.items():
        if value is not None:
            where += (" AND " if where else " WHERE ") + f"{key} = ?"
            params.append(value)
    frame = reader.records(
        "SELECT command_id, entity_id, org_id, broadcast, action, command_type, status, reason, attempts, "
        f"source, issued_at, ttl_s, {', '.join(_STAGES)} FROM commands{where} ORDER BY queued_ts, entity_id",
        params,
    )
    for column in _STAGES:
        frame[column] = frame[column].astype("float64")
    for a, b in STAGE_PAIRS:
        frame[f"{a}_to_{b}_ms"] = (frame[f"{b}_ts"] - frame[f"{a}_ts"]) * 1000.0
    frame["total_ms"] = (frame["done_ts"] - frame["queued_ts"]) * 1000.0
    frame["broadcast"] = frame["broadcast"].astype(bool)
    queued = frame["queued_ts"].copy()
    for column in _STAGES:  # ns, as before (bench/commands.py reads them as int64 ns)
        frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
    frame = frame.rename(columns=lambda c: c[:-3] + "_at" if c.endswith("_ts") else c)
    _categorical_ids(frame, "entity_id", "org_id")
    return _indexed(frame, queued)


def quarantine(records: list[dict[str, Any]], filters: Filters) -> pd.DataFrame:
    """Quarantine records (from the stream), indexed by ``quarantined_at``, with the reason for each.

    ``org_id`` and ``entity_id`` are read from the original subject when it names them
    (telemetry, events, commands, entity lifecycle); other records have them missing. The
    filters keep records whose ids match and whose quarantine time is in the window.
    """
    frame = pd.DataFrame(records, columns=list(QUARANTINE_COLUMNS))
    org, entity = (
        zip(*(_ids_of(s) for s in frame["original_subject"]), strict=True) if len(frame) else ((), ())
    )
    frame["org_id"] = pd.Series(org, dtype="object", index=frame.index)
    frame["entity_id"] = pd.Series(entity, dtype="object", index=frame.index)
    stamp = pd.to_datetime(frame["quarantined_at"], utc=True, format="ISO8601", errors="coerce")
    epoch = pd.Series(stamp.to_numpy(dtype="datetime64[us]").astype("int64") / 1e6, index=frame.index)
    epoch[stamp.isna().to_numpy()] = np.nan
    keep = np.ones(len(frame), dtype=bool)
    if filters.org is not None:
        keep &= frame["org_id"].isin(filters.org).to_numpy()
    if filters.entities is not None:
        keep &= frame["entity_id"].isin(filters.entities).to_numpy()
    if filters.since is not None:
        keep &= (epoch >= filters.since).to_numpy()
    if filters.until is not None:
        keep &= (epoch < filters.until).to_numpy()
    frame, epoch = frame[keep], epoch[keep]
    _categorical_ids(frame := frame.copy(), "entity_id", "org_id")
    return _indexed(frame, epoch)


def _ids_of(subject: object) -> tuple[str | None, str | None]:
    tokens = str(subject).split(".") if isinstance(subject, str) else []
    if len(tokens) >= 4 and tokens[0] == "constellation" and tokens[1] in ("telemetry", "commands"):
        return tokens[2], tokens[3] if tokens[3] != "broadcast" else None
    if len(tokens) >= 5 and tokens[:3] == ["constellation", "events", "isr"]:
        return tokens[3], tokens[4]
    return None, None


def entities(reader: Reader, filters: Filters | None = None) -> pd.DataFrame:
    """The ``entities`` table: one row per registered entity, its live columns as last synced.

    Indexed by ``entity_id`` (also a column), with ``org_name``; JSON columns decoded,
    ``is_live`` bool, ``last_seen`` as written by the synchronizer. This is the state of a
    data directory without a running lab (position, heading, velocity, is_live, last_seen).
    """
    where, params = "", list[Any]()
    if filters is not None:
        check_known(reader, filters)
        where, params = Filters(filters.org, filters.entities, filters.entity_types).where(
            alias="e.", time=False
        )
    frame = reader.records(
        "SELECT e.*, o.name AS org_name FROM entities AS e "
        f"LEFT JOIN organizations AS o ON o.org_id = e.org_id{where} ORDER BY e.entity_id",
        params,
    )
    for column in sorted(ENTITY_JSON_COLUMNS):
        frame[column] = frame[column].map(decode_json)
    frame["is_live"] = frame["is_live"].astype(bool)
    frame.index = pd.Index(frame["entity_id"], name=None)
    return frame


def organizations(reader: Reader) -> pd.DataFrame:
    """The ``organizations`` table with ``metadata`` decoded."""
    frame = reader.records("SELECT * FROM organizations ORDER BY org_id")
    frame["metadata"] = frame["metadata"].map(decode_json)
    return frame
