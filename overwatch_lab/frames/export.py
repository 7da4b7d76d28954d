"""Export: any frame, or a whole run, to Parquet or CSV, with a data dictionary beside each file.

- :func:`write_frame`: one frame → ``<name>.parquet`` (pyarrow; categoricals, nullable dtypes,
  the UTC index round-trip through ``pandas.read_parquet``) or ``<name>.csv`` (index as the
  first column, times in ISO 8601), and ``<name>.dictionary.csv`` beside it.
- :func:`export_run`: the telemetry history (every column of :data:`columns.HISTORY`, written
  in chunks of ``chunk_rows`` with a progress callback), device events, detections, commands, entities and
  organisations of a database, each with its dictionary.

A data dictionary has one row per column: ``column, dtype, unit, source, description``. Known
columns (history, as-of, tracks, summary) are described from :mod:`.columns`; any other column
of a frame (one an analyst derived) is listed with its dtype and ``source`` = ``derived``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from overwatch_lab.errors import FrameError
from overwatch_lab.frames import columns as cols
from overwatch_lab.frames.filters import Filters, check_known
from overwatch_lab.frames.history import HISTORY_COLUMNS, history_sql, spec_of
from overwatch_lab.frames.reader import Reader, to_frame

Format = Literal["parquet", "csv"]
FORMATS: tuple[str, ...] = ("parquet", "csv")
DICTIONARY_FIELDS: tuple[str, ...] = ("column", "dtype", "unit", "source", "description")

Progress = Callable[[str, int, int], None]
"""Called as ``progress(table, rows_done, rows_total)`` while a run is exported."""

_EXTRA: dict[str, tuple[str, str, str]] = {
    "as_of": ("UTC", "derived", "The instant the picture is for."),
    "age_s": ("s", "derived", "Seconds from the entity's newest message to the picture's instant."),
    "is_live": ("", "derived", "Live at the instant: newest message at most stale_after_s old (as the synchronizer rules)."),
    "entity_type": ("", "entities.entity_type", "The entity's type (missing once it is no longer registered)."),
    "messages": ("", "derived", "Messages in the window."),
    "first_time": ("UTC", "derived", "The entity's first message in the window."),
    "last_time": ("UTC", "derived", "The entity's last message in the window."),
    "span_s": ("s", "derived", "last_time - first_time."),
    "distance_m": ("m", "derived", "Distance travelled: haversine between consecutive positions."),
    "max_gap_s": ("s", "derived", "Longest silence between two messages."),
    "stale_s": ("s", "derived", "Time the entity was stale: silence beyond stale_after_s."),
    "stale_pct": ("%", "derived", "stale_s as a share of the window the entity was seen in."),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Written:
    """One file an export wrote, with its dictionary."""

    table: str
    path: Path
    dictionary: Path
    rows: int


def _check_format(fmt: str) -> Format:
    if fmt not in FORMATS:
        raise FrameError(f"format={fmt!r}: use one of {', '.join(FORMATS)}")
    return "parquet" if fmt == "parquet" else "csv"


def dictionary(frame: pd.DataFrame, source: str = "derived") -> pd.DataFrame:
    """The data dictionary of ``frame`` (its index first when it is named)."""
    rows = []
    items: list[tuple[str, object]] = []
    for i, name in enumerate(frame.index.names):
        if name is not None:
            items.append((str(name), frame.index.get_level_values(i).dtype))
    items += [(str(c), frame[c].dtype) for c in frame.columns]
    for name, dtype in items:
        col = cols.BY_NAME.get(name)
        if col is not None:
            rows.append((name, str(dtype), col.unit, col.source, col.description))
        elif name in _EXTRA:
            unit, src, desc = _EXTRA[name]
            rows.append((name, str(dtype), unit, src, desc))
        else:
            rows.append((name, str(dtype), "", source, ""))
    return pd.DataFrame(rows, columns=list(DICTIONARY_FIELDS))


def _write_dictionary(frame: pd.DataFrame, path: Path, source: str) -> Path:
    out = path.with_name(path.name.rsplit(".", 1)[0] + ".dictionary.csv")
    dictionary(frame, source).to_csv(out, index=False, quoting=csv.QUOTE_MINIMAL)
    return out


def _arrow_ready(frame: pd.DataFrame) -> pd.DataFrame:
    """Give every categorical text categories (an all-missing one has none, typed as null in Arrow)."""
    out = frame
    for name in frame.columns:
        dtype = frame[name].dtype
        if (
            isinstance(dtype, pd.CategoricalDtype)
            and len(dtype.categories) == 0
            and dtype.categories.dtype != "str"
        ):
            if out is frame:
                out = frame.copy()
            out[name] = out[name].cat.set_categories(pd.Index([], dtype="str"))
    return out


def write_frame(
    frame: pd.DataFrame, out_dir: str | Path, name: str, fmt: str = "parquet", *, source: str = "derived"
) -> Written:
    """Write ``frame`` to ``out_dir/name.<fmt>`` and its dictionary to ``name.dictionary.csv``.

    Raises:
        FrameError: an unknown format or a bad name.
    """
    f = _check_format(fmt)
    if not name or "/" in name or name.startswith("."):
        raise FrameError(f"name={name!r}: a plain file name (no folder) is needed")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.{f}"
    if f == "parquet":
        frame.to_parquet(path, engine="pyarrow", index=True)
    else:
        frame.to_csv(
            path, index=any(n is not None for n in frame.index.names), date_format="%Y-%m-%dT%H:%M:%S.%fZ"
        )
    return Written(name, path, _write_dictionary(frame, path, source), len(frame))


def export_history(
    reader: Reader,
    filters: Filters,
    out_dir: str | Path,
    fmt: str = "parquet",
    *,
    chunk_rows: int = 200_000,
    progress: Progress | None = None,
) -> Written:
    """Write the telemetry history matching ``filters`` (every column) in chunks, oldest first.

    Chunks are read by ``id`` ranges (the primary key), so memory stays at ``chunk_rows`` rows.

    Raises:
        FrameError: a bad format or filter.
    """
    f = _check_format(fmt)
    check_known(reader, filters)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"telemetry.{f}"
    names = HISTORY_COLUMNS
    spec = [*spec_of(names), ("_id", "int")]
    where, params = filters.where()
    total = int(reader.rows(f"SELECT count(*) FROM telemetry{where}", params)[0][0])
    bounds = reader.rows("SELECT min(id), max(id) FROM telemetry")[0]
    lo, hi = (int(bounds[0]), int(bounds[1])) if bounds[0] is not None else (1, 0)
    base, base_params = history_sql(filters, names)
    base = base.removesuffix(" ORDER BY ts, id")
    select = base.replace(" FROM telemetry", ", id AS _id FROM telemetry", 1)
    joiner = " AND " if where else " WHERE "
    sql = f"{select}{joiner}id >= ? AND id < ? ORDER BY id"
    writer: pq.ParquetWriter | None = None
    done = 0
    first = None
    step = max(1, chunk_rows)
    if progress is not None:
        progress("telemetry", 0, total)
    try:
        start = lo
        while start <= hi:
            frame = to_frame(reader.table(sql, [*base_params, start, start + step], spec), spec).drop(
                columns="_id"
            )
            start += step
            if first is None:
                first = frame.iloc[:0]
            if frame.empty:
                continue
            if f == "parquet":
                table = pa.Table.from_pandas(_arrow_ready(frame), preserve_index=True)
                if writer is None:  # dictionary indices widened: a later chunk may have more categories
                    wide = [
                        f.with_type(pa.dictionary(pa.int32(), f.type.value_type))
                        if pa.types.is_dictionary(f.type)
                        else f
                        for f in table.schema
                    ]
                    writer = pq.ParquetWriter(path, pa.schema(wide, metadata=table.schema.metadata))
                writer.write_table(table.cast(writer.schema))
            else:
                frame.to_csv(
                    path, mode="a" if done else "w", header=not done, date_format="%Y-%m-%dT%H:%M:%S.%fZ"
                )
            done += len(frame)
            if progress is not None:
                progress("telemetry", done, total)
        empty = (
            first
            if first is not None
            else to_frame(reader.table(sql, [*base_params, 0, 0], spec), spec).drop(columns="_id")
        )
        if done == 0:
            if f == "parquet":
                _arrow_ready(empty).to_parquet(path, engine="pyarrow", index=True)
            else:
                empty.to_csv(path)
    finally:
        if writer is not None:
            writer.close()
    return Written("telemetry", path, _write_dictionary(empty, path, "telemetry"), done)


def raw_entities(reader: Reader, filters: Filters) -> pd.DataFrame:
    """The ``entities`` rows for export: JSON columns kept as JSON text (a file format's strings)."""
    where, params = Filters(filters.org, filters.entities, filters.entity_types).where(time=False)
    return reader.records(f"SELECT * FROM entities{where} ORDER BY entity_id", params)
