"""Read-only queries on one lab database, returned as Arrow tables and typed DataFrames.

Every call opens its own short-lived read-only connection (a local file is opened with
``mode=ro``, so a missing file is an error rather than a new empty database, and nothing here
can write), runs one query and closes it. WAL mode lets these readers run while a lab's
writer commits (the lab may be running on the same file, in this or another process).

Two drivers, one result:

- **ADBC's SQLite driver** (``adbc-driver-sqlite``), for a local file: it builds Arrow columns
  in C, no Python object per value. On 1,000,000 history rows it read the whole table in
  0.44× the time of ``pandas.read_sql`` and one entity-hour in 0.5× (``overwatch-lab bench
  frames``). It infers each column's type from the first rows of the result, so a column that
  starts with NULLs would be typed wrongly: every query gets a typed first row (literals of
  the right types) that is dropped afterwards.
- the DB-API (``libsql_client.dbapi2``, stdlib sqlite3 for a file) for a libSQL server URL,
  or when ADBC is not installed.

Errors of either become :class:`~overwatch_lab.errors.DatabaseError` naming the database.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from overwatch_lab.errors import DatabaseError
from overwatch_lab.frames.columns import Kind
from overwatch_lab.store.connection import DB_ERRORS, connect, is_remote, normalise_location, redact

log = logging.getLogger(__name__)

Spec = Sequence[tuple[str, Kind]]
"""The output columns of a query: (name, kind), in SELECT order."""

_ARROW: dict[str, pa.DataType] = {
    "time": pa.float64(),
    "real": pa.float64(),
    "int": pa.int64(),
    "bool": pa.int64(),
    "category": pa.string(),
    "text": pa.string(),
}
_LITERAL: dict[str, str] = {
    "time": "0.0",
    "real": "0.0",
    "int": "0",
    "bool": "0",
    "category": "''",
    "text": "''",
}


def _adbc() -> Any | None:
    try:
        return importlib.import_module("adbc_driver_sqlite.dbapi")
    except ImportError:  # optional: the DB-API path gives the same frames, slower
        return None


class Reader:
    """Read-only queries on one database (file path or libSQL server URL).

    Args:
        location: the database.
        arrow_native: use ADBC for a local file when it is installed (False: always DB-API;
            the benchmark compares both).
    """

    def __init__(self, location: str, *, arrow_native: bool = True) -> None:
        self.location = normalise_location(location)
        self.remote = is_remote(self.location)
        self._adbc = _adbc() if arrow_native and not self.remote and self.location != ":memory:" else None

    @property
    def driver(self) -> str:
        """``"adbc"`` or ``"dbapi"``: what :meth:`table` uses."""
        return "adbc" if self._adbc is not None else "dbapi"

    def _fail(self, exc: BaseException) -> DatabaseError:
        return DatabaseError(f"query failed on {redact(self.location)}: {exc}")

    def rows(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[tuple[Any, ...]]:
        """Run one (small) query through the DB-API and return its rows.

        Raises:
            DatabaseError: the database cannot be opened or the query fails.
        """
        try:
            conn = connect(self.location, read_only=True)
            try:
                return [tuple(r) for r in conn.execute(sql, params).fetchall()]
            finally:
                conn.close()
        except DB_ERRORS as exc:
            raise self._fail(exc) from exc

    def records(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> pd.DataFrame:
        """Run one query through the DB-API and return its rows, named as the query names them.

        Raises:
            DatabaseError: the database cannot be opened or the query fails.
        """
        try:
            conn = connect(self.location, read_only=True)
            try:
                cursor = conn.execute(sql, params)
                names = [d[0] for d in cursor.description] if cursor.description else []
                rows = cursor.fetchall()
            finally:
                conn.close()
        except DB_ERRORS as exc:
            raise self._fail(exc) from exc
        return pd.DataFrame.from_records(rows, columns=names)

    def table(self, sql: str, params: Sequence[Any], spec: Spec) -> pa.Table:
        """Run ``sql`` (its columns as ``spec`` says) and return an Arrow table of those types.

        Raises:
            DatabaseError: the database cannot be opened or the query fails.
        """
        names = [n for n, _ in spec]
        schema = pa.schema([(n, _ARROW[k]) for n, k in spec])
        if self._adbc is None:
            try:
                conn = connect(self.location, read_only=True)
                try:
                    rows = conn.execute(sql, params).fetchall()
                finally:
                    conn.close()
            except DB_ERRORS as exc:
                raise self._fail(exc) from exc
            columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
            return pa.table(
                [pa.array(c, type=t) for c, t in zip(columns, schema.types, strict=True)], schema=schema
            )
        typed = ", ".join(f"{_LITERAL[k]} AS {n}" for n, k in spec)
        wrapped = f"SELECT {typed} UNION ALL SELECT * FROM ({sql})"
        uri = Path(self.location).expanduser().resolve().as_uri() + "?mode=ro"
        try:
            conn = self._adbc.connect(uri)
            try:
                cursor = conn.cursor()
                try:
                    cursor.execute(wrapped, tuple(params))
                    table = cursor.fetch_arrow_table()
                finally:
                    cursor.close()
            finally:
                conn.close()
        except Exception as exc:  # ADBC's errors are its own DB-API classes (and OSError)
            if isinstance(exc, self._adbc.Error | OSError):
                raise self._fail(exc) from exc
            raise
        return table.slice(1).rename_columns(names).cast(schema)


def epoch_to_time(values: pa.Array | pa.ChunkedArray | np.ndarray) -> pd.DatetimeIndex:
    """Epoch seconds (float) → a UTC DatetimeIndex at µs resolution (NaN → NaT)."""
    arr = values.to_numpy(zero_copy_only=False) if not isinstance(values, np.ndarray) else values
    arr = np.asarray(arr, dtype="float64")
    us = np.round(arr * 1e6)
    mask = np.isnan(us)
    out = np.where(mask, 0, us).astype("int64").view("datetime64[us]")
    if mask.any():
        out = out.copy()
        out[mask] = np.datetime64("NaT")
    return pd.DatetimeIndex(out).tz_localize("UTC")


def to_frame(table: pa.Table, spec: Spec, index: str | None = "time") -> pd.DataFrame:
    """Turn a :meth:`Reader.table` result into a typed DataFrame (see ``columns.Kind``).

    ``time`` kinds become UTC datetimes, ``category`` categoricals, ``int`` Int64, ``bool``
    boolean, ``real`` float64; ``index`` (when it is a column) becomes the index.
    """
    kinds = dict(spec)
    arrays: dict[str, Any] = {}
    times: dict[str, pd.DatetimeIndex] = {}
    for name in table.column_names:
        col = table.column(name)
        kind = kinds[name]
        if kind == "time":
            times[name] = epoch_to_time(col)
            continue
        if kind == "category":
            col = pc.dictionary_encode(col)
        elif kind == "bool":
            col = pc.cast(col, pa.bool_())
        arrays[name] = col
    mapper = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}.get
    frame = (
        pa.table(arrays).to_pandas(types_mapper=mapper)
        if arrays
        else pd.DataFrame(index=range(table.num_rows))
    )
    if index is not None and index in times:
        frame.index = times.pop(index).rename(index)
    if times:
        order = [n for n in table.column_names if n != index]
        for name, value in times.items():
            frame.insert(
                order.index(name), name, value if isinstance(frame.index, pd.RangeIndex) else value.to_numpy()
            )
    return frame


def empty_frame(spec: Spec, index: str | None = "time") -> pd.DataFrame:
    """A frame with no rows and the columns and dtypes ``spec`` gives them."""
    return to_frame(pa.table({n: pa.array([], type=_ARROW[k]) for n, k in spec}), spec, index)
