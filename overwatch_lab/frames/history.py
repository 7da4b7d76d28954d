"""Telemetry history as an analyst's frame: one row per message, typed, units in the names.

:func:`history` builds one SQL query from :class:`~.filters.Filters` and the asked columns
(:mod:`.columns`), runs it in the database (indexes, never load-then-filter) and returns a
frame indexed by a UTC ``time`` (the message's own timestamp), with categorical ids and types.
:func:`raw_rows` is the ``telemetry`` table's own rows (raw column names, epoch ``ts``, ``id``),
what the dashboard reads incrementally.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from overwatch_lab.frames import columns as cols
from overwatch_lab.frames import validation as v
from overwatch_lab.frames.filters import Filters, check_known
from overwatch_lab.frames.reader import Reader, Spec, empty_frame, to_frame
from overwatch_lab.store.schema import TELEMETRY_PROJECTED_COLUMNS

HISTORY_COLUMNS: tuple[str, ...] = tuple(c.name for c in cols.HISTORY)
"""Every column :func:`history` can return (``time`` is the index)."""

_RAW_FLOATS = tuple(c for c in TELEMETRY_PROJECTED_COLUMNS if c not in ("armed", "mode"))


def spec_of(names: Iterable[str]) -> Spec:
    """The (name, kind) of history columns, in the order given."""
    return [(n, cols.BY_NAME[n].kind) for n in names]


def select_list(names: Iterable[str]) -> str:
    """``expr AS name, ...`` for history columns."""
    return ", ".join(f"{cols.BY_NAME[n].sql} AS {n}" for n in names)


def wanted_columns(columns: str | Iterable[str] | None) -> tuple[str, ...]:
    """The columns of a history frame: the keys, then those asked (default: :data:`columns.DEFAULT`).

    Raises:
        FrameError: an unknown column (named).
    """
    if columns is None:
        return cols.DEFAULT
    asked = cols.resolve(columns, HISTORY_COLUMNS, "history")
    return tuple(dict.fromkeys((*cols.KEYS, *asked)))


def history_sql(
    filters: Filters, names: tuple[str, ...], limit: int | None = None
) -> tuple[str, list[object]]:
    """The SQL (and parameters) of :func:`history`."""
    where, params = filters.where()
    sql = f"SELECT {select_list(names)} FROM telemetry{where}"
    if limit is None:
        return sql + " ORDER BY ts, id", params
    inner = f"SELECT *, ts AS _ts, id AS _id FROM telemetry{where} ORDER BY ts DESC, id DESC LIMIT ?"
    return f"SELECT {select_list(names)} FROM ({inner}) ORDER BY _ts, _id", [*params, limit]


def history(
    reader: Reader,
    filters: Filters,
    columns: str | Iterable[str] | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """Return telemetry history, oldest first (see :meth:`overwatch_lab.frames.Frames.history`).

    Raises:
        FrameError: an unknown entity, organisation or column; a bad limit.
        DatabaseError: the query failed.
    """
    names = wanted_columns(columns)
    n = v.limit(limit)
    spec = spec_of(names)
    if filters.empty_window or n == 0:
        check_known(reader, filters)
        return empty_frame(spec)
    sql, params = history_sql(filters, names, n)
    frame = to_frame(reader.table(sql, params, spec), spec)
    check_known(reader, filters, frame)
    return frame


def raw_rows(reader: Reader, filters: Filters, limit: int | None = None) -> pd.DataFrame:
    """Return the ``telemetry`` table's rows as stored, oldest first (the dashboard's read).

    One row per message: a tz-aware UTC ``time`` column first, then the table's columns
    (``id``, ``ts`` epoch seconds, ``ingested_at``, the projected columns in raw units,
    ``armed`` nullable boolean, ``data`` raw JSON text, ``late`` bool). ``limit`` keeps the
    newest rows (still oldest first). Unknown ids give an empty frame (the dashboard polls).
    """
    n = v.limit(limit)
    where, params = filters.where()
    sql = f"SELECT * FROM telemetry{where}"
    if n is None:
        sql += " ORDER BY ts, id"
    else:
        sql = f"SELECT * FROM ({sql} ORDER BY ts DESC, id DESC LIMIT ?) ORDER BY ts, id"
        params = [*params, n]
    frame = reader.records(sql, params)
    frame.insert(0, "time", pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601"))
    for column in _RAW_FLOATS:
        frame[column] = frame[column].astype("float64")
    for column in ("system_id", "component_id"):
        frame[column] = frame[column].astype("Int64")
    frame["armed"] = frame["armed"].astype("boolean")
    frame["late"] = frame["late"].astype(bool)
    return frame
