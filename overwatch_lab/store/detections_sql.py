"""The ``detections`` history table (schema version 4) as a DataFrame.

One row per stored detection (docs/wire.md "Detection envelope"), oldest first, with a tz-aware
UTC ``DatetimeIndex`` named ``time`` (the detection's own time stamp, to the microsecond) so it
joins telemetry history on ``entity_id`` and ``time`` (``pd.merge_asof(..., on="time",
by="entity_id")``). Ids and labels are categoricals; the bbox and its centre ``cx``/``cy`` are
normalised image coordinates in [0, 1].

The query runs in the database on the ``(entity_id, ts)`` and ``ts`` indexes, on a fresh
read-only connection (:func:`overwatch_lab.store.queries.read_frame`), so it is safe from any
thread while a lab writes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from overwatch_lab.errors import FrameError
from overwatch_lab.store.queries import read_frame
from overwatch_lab.store.window import TimeLike, TimeWindow, entity_ids

__all__ = ["DETECTION_FRAME_DTYPES", "detections_frame", "empty_detections_frame"]

DETECTION_FRAME_DTYPES: dict[str, str] = {
    "org_id": "category",
    "entity_id": "category",
    "track_id": "category",
    "label": "category",
    "confidence": "float64",
    "x1": "float64",
    "y1": "float64",
    "x2": "float64",
    "y2": "float64",
    "cx": "float64",
    "cy": "float64",
    "event_uid": "object",
    "ingested_at": "datetime64[us, UTC]",
}
"""The columns of :func:`detections_frame`, in order, with their dtypes (the index is ``time``)."""

_SELECT = (
    "SELECT event_uid, org_id, entity_id, track_id, label, confidence, x1, y1, x2, y2, ts, ingested_at "
    "FROM detections"
)
_MAX_INLINE_IDS = 500  # more entity ids than this go in as one JSON array (json_each), not as ? each


def _utc_index(seconds: Any) -> pd.DatetimeIndex:
    """Epoch seconds (stored to the microsecond) as a UTC DatetimeIndex named ``time``."""
    us = np.round(np.asarray(seconds, dtype="float64") * 1e6).astype("int64")
    return pd.DatetimeIndex(us.astype("datetime64[us]"), name="time").tz_localize("UTC")


def empty_detections_frame() -> pd.DataFrame:
    """The frame of no detections: every column of :data:`DETECTION_FRAME_DTYPES`, right dtypes."""
    return pd.DataFrame(
        {c: pd.Series(dtype=t) for c, t in DETECTION_FRAME_DTYPES.items()}, index=_utc_index([])
    )


def _where(
    org_id: str | None, ids: tuple[str, ...] | None, window: TimeWindow, track_id: str | None
) -> tuple[str, list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if ids is not None:
        if len(ids) <= _MAX_INLINE_IDS:
            where.append(f"entity_id IN ({', '.join('?' * len(ids))})")
            params.extend(ids)
        else:
            where.append("entity_id IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(list(ids)))
    for column, value in (("org_id", org_id), ("track_id", track_id)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if window.since is not None:
        where.append("ts >= ?")
        params.append(window.since)
    if window.until is not None:
        where.append("ts < ?")
        params.append(window.until)
    return (" WHERE " + " AND ".join(where)) if where else "", params


def _check_known(location: str, org_id: str | None, missing: Sequence[str]) -> None:
    """Raise FrameError for an organisation or entity neither registered nor in the history."""
    if org_id is not None:
        known = read_frame(
            location,
            "SELECT EXISTS (SELECT 1 FROM organizations WHERE org_id = ?) "
            "OR EXISTS (SELECT 1 FROM detections WHERE org_id = ?) AS known",
            (org_id, org_id),
        )
        if not int(known["known"].iloc[0]):
            raise FrameError(f"unknown organisation {org_id!r}: not registered and no detection names it")
    if missing:
        marks = ", ".join("?" * len(missing))
        seen = read_frame(
            location,
            f"SELECT entity_id FROM entities WHERE entity_id IN ({marks}) "
            f"UNION SELECT DISTINCT entity_id FROM detections WHERE entity_id IN ({marks})",
            (*missing, *missing),
        )
        unknown = sorted(set(missing) - set(seen["entity_id"]))
        if unknown:
            raise FrameError(
                f"unknown entity {', '.join(map(repr, unknown[:5]))}"
                f"{f' (and {len(unknown) - 5} more)' if len(unknown) > 5 else ''}: "
                "not registered and no detection names it"
            )


def detections_frame(
    location: str,
    *,
    org_id: str | None = None,
    entity_id: str | Sequence[str] | None = None,
    track_id: str | None = None,
    since: TimeLike | None = None,
    until: TimeLike | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """Return stored detections, oldest first (see the module docstring for the shape).

    Args:
        location: the store's file path or libSQL server URL.
        org_id: keep one organisation's.
        entity_id: keep one entity's, or several (a list); duplicates are ignored.
        track_id: keep one track's.
        since / until: keep ``since <= time < until`` (epoch s, RFC 3339, datetime; naive = UTC).
        limit: keep the newest ``limit`` matching rows (still returned oldest first).

    Returns:
        A frame indexed by ``time`` with the columns of :data:`DETECTION_FRAME_DTYPES`; with
        no match, the same columns and dtypes and no rows.

    Raises:
        FrameError: ``since`` after ``until``, a value that is not a time, a bad ``limit``, or an
            organisation or entity that is neither registered nor named by any detection.
        DatabaseError: the database cannot be read (e.g. a schema older than version 4 that no
            lab has opened since).
    """
    window = TimeWindow.of(since, until)
    ids = entity_ids(entity_id)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise FrameError(f"limit must be a non-negative int, got {limit!r}")
    where, params = _where(org_id, ids, window, track_id)
    if window.empty or limit == 0:
        raw = pd.DataFrame()
    elif limit is None:
        raw = read_frame(location, f"{_SELECT}{where} ORDER BY ts, id", params)
    else:
        raw = read_frame(
            location,
            f"SELECT * FROM ({_SELECT.replace('SELECT ', 'SELECT id, ', 1)}{where} "
            "ORDER BY ts DESC, id DESC LIMIT ?) ORDER BY ts, id",
            [*params, limit],
        )
    missing = [] if ids is None or raw.empty else sorted(set(ids) - set(raw["entity_id"]))
    if raw.empty and ids is not None:
        missing = list(ids)
    if (raw.empty and org_id is not None) or missing:
        _check_known(location, org_id if raw.empty else None, missing)
    if raw.empty:
        return empty_detections_frame()
    index = _utc_index(raw["ts"])
    columns: dict[str, Any] = {c: raw[c].to_numpy() for c in DETECTION_FRAME_DTYPES if c in raw.columns}
    columns["cx"] = (raw["x1"].to_numpy(float) + raw["x2"].to_numpy(float)) / 2
    columns["cy"] = (raw["y1"].to_numpy(float) + raw["y2"].to_numpy(float)) / 2
    columns["ingested_at"] = _utc_index(raw["ingested_at"]).array
    frame = pd.DataFrame({c: columns[c] for c in DETECTION_FRAME_DTYPES}, index=index)
    return frame.astype(DETECTION_FRAME_DTYPES)
