"""Pure pandas reductions behind the dashboard: fleet frame, worker rates, quarantine, telemetry.

No I/O and no Panel: each function takes what the lab returned (``lab.frames.states()``,
``lab.stats()``, ``lab.frames.quarantine()``, ``lab.frames.telemetry()``) and returns a new
frame or dict. The :class:`~overwatch_lab.dashboard.datastore.DataStore` applies them on
every refresh; tests call them directly.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pandas as pd

from overwatch_lab.protocol.printable import printable
from overwatch_lab.protocol.subjects import STREAM_QUARANTINE

QUARANTINE_COLUMNS: tuple[str, ...] = (
    "quarantined_at",
    "worker",
    "original_subject",
    "num_delivered",
    "stream_sequence",
    "source_stream",
    "error",
)
"""Quarantine record fields the dashboard keeps (``original_data`` is dropped: base64 payloads)."""

FLEET_COLUMNS: tuple[str, ...] = (
    "entity_id",
    "name",
    "org_id",
    "org_name",
    "entity_type",
    "kind",
    "status",
    "priority",
    "is_live",
    "mode",
    "armed",
    "battery",
    "latitude",
    "longitude",
    "altitude",
    "speed",
    "heading",
    "climb",
    "last_seen",
    "age_s",
)
"""Columns of :func:`fleet_frame`: one row per entity, units in the docstring there."""

_FLEET_FLOATS = ("battery", "latitude", "longitude", "altitude", "speed", "heading", "climb", "age_s")

KINDS: dict[str, str] = {
    "aircraft_fixed_wing": "air",
    "aircraft_multirotor": "air",
    "aircraft_vtol": "air",
    "aircraft_helicopter": "air",
    "ground_vehicle_wheeled": "ground",
    "ground_vehicle_tracked": "ground",
    "surface_vessel_usv": "surface",
    "underwater_vehicle": "underwater",
    "sensor_platform": "sensor",
    "payload_system": "sensor",
    "operator_station": "station",
    "waypoint": "geo",
    "no_fly_zone": "geo",
    "geofence": "geo",
}
"""Entity type → the coarse kind the map and table group by (anything else is ``other``)."""


def kind_of(entity_type: object) -> str:
    """Return the coarse kind (air, ground, surface, underwater, sensor, station, geo, other)."""
    return KINDS.get(entity_type, "other") if isinstance(entity_type, str) else "other"


def empty_fleet() -> pd.DataFrame:
    """Return a fleet frame with no rows and the :data:`FLEET_COLUMNS` dtypes."""
    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in FLEET_COLUMNS})
    for c in _FLEET_FLOATS:
        frame[c] = frame[c].astype("float64")
    frame["is_live"] = frame["is_live"].astype(bool)
    return frame


def _column(states: pd.DataFrame, name: str) -> pd.Series:
    if name in states.columns:
        return states[name]
    return pd.Series([None] * len(states), index=states.index, dtype=object)


def _numbers(states: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(_column(states, name), errors="coerce").astype("float64")


def _texts(states: pd.DataFrame, name: str) -> pd.Series:
    """A text column, shown escaped (names and the like come from devices)."""
    values = _column(states, name)
    return pd.Series(
        [printable(v) if isinstance(v, str) and v else None for v in values], index=states.index, dtype=object
    )


def fleet_frame(states: pd.DataFrame, now: float | None = None) -> pd.DataFrame:
    """Reduce ``lab.frames.states()`` to the per-entity columns an operator watches.

    Args:
        states: the flattened KV documents (``lab.frames.states()``); may be empty or lack columns.
        now: epoch seconds to measure ``age_s`` against (default: the current time).

    Returns:
        One row per entity, sorted by ``entity_id``, on a fresh RangeIndex, with
        :data:`FLEET_COLUMNS`: ``battery`` in % (unknown, including MAVLink's -1, is NaN),
        ``latitude``/``longitude`` in degrees, ``altitude`` MSL in m, ``speed`` in m/s (VFR
        groundspeed, else the horizontal local velocity), ``heading`` in degrees (VFR heading,
        else the course of the local velocity when moving), ``climb`` in m/s, ``last_seen`` as
        sent, ``age_s`` seconds since ``last_seen`` (NaN when never seen), ``is_live`` bool and
        ``armed`` True/False/None. Text columns are object dtype (None when unknown).
    """
    if states is None or states.empty or "entity_id" not in states.columns:
        return empty_fleet()
    now = time.time() if now is None else now
    states = states.reset_index(drop=True)
    vx = _numbers(states, "position.local.vx")
    vy = _numbers(states, "position.local.vy")
    # numpy ufuncs on Series return Series; wrapping says so to the type checker (same index, same values)
    moving = pd.Series(np.hypot(vx, vy), index=states.index)
    course = pd.Series(np.degrees(np.arctan2(vy, vx)) % 360.0, index=states.index).where(moving > 0.2)
    battery = _numbers(states, "power.battery_remaining")
    seen = pd.to_datetime(_texts(states, "last_seen"), utc=True, format="ISO8601", errors="coerce")
    seen_s = pd.Series(
        [t.timestamp() if not pd.isna(t) else math.nan for t in seen], index=states.index, dtype="float64"
    )
    armed = [
        bool(v) if isinstance(v, bool | np.bool_) else None for v in _column(states, "vehicle_status.armed")
    ]
    is_live = _column(states, "is_live").map(lambda v: bool(v) if isinstance(v, bool | np.bool_) else False)
    frame = pd.DataFrame(
        {
            "entity_id": _texts(states, "entity_id"),
            "name": _texts(states, "name"),
            "org_id": _texts(states, "org_id"),
            "org_name": _texts(states, "org_name"),
            "entity_type": _texts(states, "entity_type"),
            "kind": pd.Series([kind_of(t) for t in _column(states, "entity_type")], dtype=object),
            "status": _texts(states, "status"),
            "priority": _texts(states, "priority"),
            "is_live": is_live.astype(bool),
            "mode": _texts(states, "vehicle_status.mode"),
            "armed": pd.Series(armed, dtype=object),
            "battery": battery.where(battery >= 0),
            "latitude": _numbers(states, "position.global.latitude"),
            "longitude": _numbers(states, "position.global.longitude"),
            "altitude": _numbers(states, "position.global.altitude_msl").fillna(
                _numbers(states, "vfr.altitude")
            ),
            "speed": _numbers(states, "vfr.groundspeed").fillna(moving),
            "heading": _numbers(states, "vfr.heading").fillna(course),
            "climb": _numbers(states, "vfr.climb_rate").fillna(0.0 - _numbers(states, "position.local.vz")),
            "last_seen": _texts(states, "last_seen"),
            "age_s": (now - seen_s).clip(lower=0.0),
        }
    )
    frame["name"] = frame["name"].where(frame["name"].notna(), frame["entity_id"])
    return frame.sort_values("entity_id", kind="stable").reset_index(drop=True)


def worker_rates(
    previous: dict[str, dict[str, Any]], current: dict[str, dict[str, Any]], dt_s: float
) -> dict[str, dict[str, float]]:
    """Return per-worker rates between two ``lab.stats()`` snapshots taken ``dt_s`` apart.

    Only entries with a ``handled`` counter count (workers, not the synchronizer). For each:
    ``handled_per_s`` (messages settled per second) and ``busy_pct`` (share of the interval
    spent handling batches, %). A counter that went backwards (a restarted lab) gives 0.
    """
    if dt_s <= 0:
        return {}
    out: dict[str, dict[str, float]] = {}
    for name, counters in current.items():
        if not isinstance(counters, dict) or not isinstance(counters.get("handled"), int | float):
            continue
        before = previous.get(name, {}) if isinstance(previous.get(name), dict) else {}
        handled = counters["handled"] - before.get("handled", counters["handled"])
        busy = float(counters.get("busy_s") or 0.0) - float(
            before.get("busy_s", counters.get("busy_s")) or 0.0
        )
        out[name] = {
            "handled_per_s": max(0.0, handled / dt_s),
            "busy_pct": min(100.0, max(0.0, 100.0 * busy / dt_s)),
        }
    return out


def quarantine_total(stats: dict[str, dict[str, Any]]) -> int:
    """Return the sum of every worker's ``quarantined`` counter."""
    return sum(int(c.get("quarantined") or 0) for c in stats.values() if isinstance(c, dict))


def quarantine_records(stats: dict[str, dict[str, Any]]) -> int:
    """Return the records the quarantine stream holds (they outlive restarts).

    Falls back to :func:`quarantine_total` (this run's worker counters) until the stream watch
    has checked the stream once.
    """
    stream = (stats.get("streams") or {}).get(STREAM_QUARANTINE) or {}
    if stream.get("checks"):
        return int(stream.get("messages") or 0)
    return quarantine_total(stats)


def trim_quarantine(frame: pd.DataFrame, rows: int) -> pd.DataFrame:
    """Keep the newest ``rows`` quarantine records, newest first, with :data:`QUARANTINE_COLUMNS`.

    Texts come out escaped (:func:`~overwatch_lab.protocol.printable.printable`): a record's
    subject is the device's, and a record written by another tool may carry a raw reason.
    """
    if frame is None or frame.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in QUARANTINE_COLUMNS})
    kept = frame.reindex(columns=list(QUARANTINE_COLUMNS)).astype(object)
    kept = kept.sort_values("quarantined_at", ascending=False, kind="stable", na_position="last")
    kept = kept.head(rows).reset_index(drop=True)
    for c in ("worker", "original_subject", "source_stream", "error"):
        kept[c] = [printable(v) if isinstance(v, str) else v for v in kept[c]]
    return kept


def merge_telemetry(
    held: pd.DataFrame | None, new: pd.DataFrame, *, since: float, max_rows: int
) -> pd.DataFrame:
    """Append newly read telemetry rows to those held, drop duplicates and trim the window.

    Args:
        held: the rows held so far for the same entity (None or empty for a first read).
        new: rows just read (they may overlap ``held``; ``id`` identifies a row).
        since: drop rows with ``ts`` before this (epoch seconds).
        max_rows: then keep at most this many newest rows.

    Returns:
        The merged rows, oldest first, on a fresh RangeIndex.
    """
    if held is None or held.empty:
        merged = new
    elif new.empty:
        merged = held
    else:
        merged = pd.concat([held, new[~new["id"].isin(held["id"])]], ignore_index=True)
    if not merged.empty:
        merged = merged[merged["ts"] >= since].sort_values(["ts", "id"], kind="stable").tail(max_rows)
    return merged.reset_index(drop=True)
