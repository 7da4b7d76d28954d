"""DataFrames over the store, safe to call from any thread while the lab writes.

Each call opens its own short-lived connection (a local file is opened read-only, so a typo in
the path is an error rather than a new empty database), runs one query and closes it. WAL mode
lets these readers run while the store's writer thread commits, so a notebook cell never
queues behind a large insert. A libSQL server URL works the same way (not exercised by the
test suite; see :mod:`.connection`).

Time filters (``since``, ``until``) accept epoch seconds, an RFC 3339 string, a ``datetime``
or a ``pandas.Timestamp`` (naive values are taken as UTC) and select ``since <= ts < until``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from overwatch_lab.errors import DatabaseError
from overwatch_lab.store.connection import (
    DB_ERRORS,
    connect,
    decode_json,
    normalise_location,
    redact,
)
from overwatch_lab.store.schema import ENTITY_JSON_COLUMNS, TELEMETRY_PROJECTED_COLUMNS

__all__ = [
    "device_events_frame",
    "entities_frame",
    "organizations_frame",
    "read_frame",
    "telemetry_frame",
]

_TELEMETRY_FLOAT_COLUMNS = tuple(c for c in TELEMETRY_PROJECTED_COLUMNS if c not in ("armed", "mode"))

TimeLike = float | int | str | dt.datetime | pd.Timestamp


def read_frame(location: str, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> pd.DataFrame:
    """Run one query on a fresh read-only connection and return the rows as a DataFrame.

    Args:
        location: the store's file path or libSQL server URL (``Store.location``).
        sql: the query; ``?`` placeholders.
        params: its parameters.

    Returns:
        A DataFrame with the query's columns (also when it returned no rows).

    Raises:
        DatabaseError: the database cannot be opened or the query fails.
    """
    target = normalise_location(location)
    try:
        conn = connect(target, read_only=True)
        try:
            cursor = conn.execute(sql, params)
            columns = [d[0] for d in cursor.description] if cursor.description else []
            rows = cursor.fetchall()
        finally:
            conn.close()
    except DB_ERRORS as exc:
        raise DatabaseError(f"query failed on {redact(target)}: {exc}") from exc
    return pd.DataFrame.from_records(rows, columns=columns)


def _epoch(value: TimeLike, name: str) -> float:
    if isinstance(value, bool):
        raise DatabaseError(f"{name}={value!r} is not a time")
    if isinstance(value, int | float):
        return float(value)
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise DatabaseError(f"{name}={value!r} is not a time: {exc}") from exc
    if pd.isna(stamp):
        raise DatabaseError(f"{name}={value!r} is not a time")
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return float(stamp.timestamp())


def _history_query(
    table: str,
    equals: Mapping[str, str | None],
    since: TimeLike | None,
    until: TimeLike | None,
    limit: int | None,
) -> tuple[str, list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    for column, value in equals.items():
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if since is not None:
        where.append("ts >= ?")
        params.append(_epoch(since, "since"))
    if until is not None:
        where.append("ts < ?")
        params.append(_epoch(until, "until"))
    sql = f"SELECT * FROM {table}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    if limit is None:
        return sql + " ORDER BY ts, id", params
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise DatabaseError(f"limit must be a non-negative int, got {limit!r}")
    # The newest `limit` rows, returned oldest first.
    return f"SELECT * FROM ({sql} ORDER BY ts DESC, id DESC LIMIT ?) ORDER BY ts, id", [*params, limit]


def _with_time(frame: pd.DataFrame) -> pd.DataFrame:
    frame.insert(0, "time", pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601"))
    return frame


def telemetry_frame(
    location: str,
    *,
    entity_id: str | None = None,
    org_id: str | None = None,
    message_type: str | None = None,
    since: TimeLike | None = None,
    until: TimeLike | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """Return telemetry history, oldest first.

    Args:
        location: the store's file path or server URL.
        entity_id / org_id / message_type: keep only rows with this value.
        since / until: keep ``since <= ts < until`` (see the module docstring for types).
        limit: keep only the newest ``limit`` matching rows (still sorted oldest first).

    Returns:
        One row per message: a tz-aware UTC ``time`` column first, then the table's columns
        (``ts`` epoch seconds, ``ingested_at`` when the lab stored it, projected columns,
        ``armed`` as nullable boolean, ``data`` as raw JSON text, ``late`` True for a message
        that was not newer than the live state when it arrived, so it is history only).
    """
    sql, params = _history_query(
        "telemetry",
        {"entity_id": entity_id, "org_id": org_id, "message_type": message_type},
        since,
        until,
        limit,
    )
    frame = _with_time(read_frame(location, sql, params))
    # A column that is NULL in every row would come back as object: give each its real dtype.
    for column in _TELEMETRY_FLOAT_COLUMNS:
        frame[column] = frame[column].astype("float64")
    for column in ("system_id", "component_id"):
        frame[column] = frame[column].astype("Int64")
    frame["armed"] = frame["armed"].astype("boolean")
    frame["late"] = frame["late"].astype(bool)
    return frame


def device_events_frame(
    location: str,
    *,
    entity_id: str | None = None,
    org_id: str | None = None,
    event_type: str | None = None,
    since: TimeLike | None = None,
    until: TimeLike | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """Return device events (bootsequence, shutdown, ...), oldest first.

    Same filters as :func:`telemetry_frame`, with ``event_type`` for ``message_type``. A
    tz-aware UTC ``time`` column comes first; ``data`` is raw JSON text.
    """
    sql, params = _history_query(
        "device_events",
        {"entity_id": entity_id, "org_id": org_id, "event_type": event_type},
        since,
        until,
        limit,
    )
    return _with_time(read_frame(location, sql, params))


def entities_frame(location: str) -> pd.DataFrame:
    """Return the ``entities`` table with ``org_name``, JSON columns decoded, ``is_live`` bool."""
    frame = read_frame(
        location,
        "SELECT e.*, o.name AS org_name FROM entities AS e "
        "LEFT JOIN organizations AS o ON o.org_id = e.org_id ORDER BY e.entity_id",
    )
    for column in sorted(ENTITY_JSON_COLUMNS):
        frame[column] = frame[column].map(decode_json)
    frame["is_live"] = frame["is_live"].astype(bool)
    return frame


def organizations_frame(location: str) -> pd.DataFrame:
    """Return the ``organizations`` table with ``metadata`` decoded."""
    frame = read_frame(location, "SELECT * FROM organizations ORDER BY org_id")
    frame["metadata"] = frame["metadata"].map(decode_json)
    return frame
