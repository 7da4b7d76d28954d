"""As-of pictures: the common operating picture at a past instant, and every N seconds over a window.

An entity's state at instant T is what its KV document would have shown: for each message
type, the newest message at or before T (message time), merged newest first, so every column
holds the newest value known at T. ``is_live`` is computed as the synchronizer computes it
(:func:`~overwatch_lab.protocol.state.mark_stale`): live when the entity's newest message is at
most ``stale_after_s`` older than T. (The synchronizer measures silence on the lab's clock, the
time a message was applied; history keeps the message's own time, which is what an analyst's T
means. The two agree when devices' clocks do; a fast-forwarded simulation runs ahead of the lab.)
Late messages are part of history and count: at T the newest message known by then is the answer.

Speed: the newest message of each (entity, message type) at or before T is one seek on the
index ``(entity_id, message_type, ts)`` (schema version 4), and the (entity, type) pairs are
enumerated by seeks too (a "loose index scan" as a recursive CTE), so a picture of 1,000
entities reads a few thousand rows whatever the history's size.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import numpy as np
import pandas as pd

from overwatch_lab.frames import columns as cols
from overwatch_lab.frames import validation as v
from overwatch_lab.frames.filters import Filters, check_known
from overwatch_lab.frames.history import select_list, spec_of
from overwatch_lab.frames.reader import Reader, Spec, epoch_to_time, to_frame

PICTURE_KEYS: tuple[str, ...] = ("org_id", "entity_type", "time", "age_s", "is_live")
"""The columns of a picture before the state columns (``time``: the entity's newest message)."""

_PAIRS = """
WITH RECURSIVE pairs(e, m) AS (
    SELECT e, (SELECT MIN(message_type) FROM telemetry WHERE entity_id = e)
    FROM (SELECT MIN(entity_id) AS e FROM telemetry)
    UNION ALL
    SELECT
        CASE WHEN m IS NULL THEN (SELECT MIN(entity_id) FROM telemetry WHERE entity_id > pairs.e) ELSE e END,
        CASE WHEN m IS NULL THEN (
            SELECT MIN(message_type) FROM telemetry
            WHERE entity_id = (SELECT MIN(entity_id) FROM telemetry WHERE entity_id > pairs.e)
        ) ELSE (SELECT MIN(message_type) FROM telemetry WHERE entity_id = pairs.e AND message_type > pairs.m) END
    FROM pairs WHERE e IS NOT NULL
)
"""
# A loose index scan over (entity_id, message_type): each step is one or two index seeks. A row
# (e, NULL) means "e has no more types": the next step moves to the next entity.


def state_columns(columns: str | Iterable[str] | None) -> tuple[str, ...]:
    """The state columns of a picture (default: :data:`columns.STATE`).

    Raises:
        FrameError: an unknown state column.
    """
    return cols.resolve(columns, cols.STATE, "as-of")


def _last_rows(reader: Reader, filters: Filters, at: float, names: tuple[str, ...]) -> pd.DataFrame:
    """The newest message of each (entity, message type) at or before ``at``, unmerged."""
    where, params = filters.where(time=False)
    keep = where.replace(" WHERE ", " AND ", 1) if where else ""
    wanted = ("time", "entity_id", "org_id", "message_type", *names)
    sql = (
        f"{_PAIRS} SELECT {select_list(wanted)} FROM telemetry WHERE id IN ("
        "SELECT (SELECT id FROM telemetry WHERE entity_id = p.e AND message_type = p.m AND ts <= ? "
        f"ORDER BY ts DESC LIMIT 1) FROM pairs AS p WHERE p.m IS NOT NULL){keep}"
    )
    spec = spec_of(wanted)
    return to_frame(reader.table(sql, [at, *params], spec), spec, index=None)


def _entity_types(reader: Reader) -> dict[str, str]:
    return dict(reader.rows("SELECT entity_id, entity_type FROM entities"))


def _merge(rows: pd.DataFrame, names: tuple[str, ...], by: list[str]) -> pd.DataFrame:
    """Newest non-missing value of each column per group (rows sorted by time first)."""
    rows = rows.sort_values("time", kind="stable")
    grouped = rows.groupby(by, observed=True, sort=True)
    out = grouped[["org_id", *names]].last()
    out.insert(1, "time", grouped["time"].max())
    return out


def as_of(
    reader: Reader,
    filters: Filters,
    at: v.TimeLike,
    stale_after_s: float,
    columns: str | Iterable[str] | None = None,
) -> pd.DataFrame:
    """Return the picture at ``at``: one row per entity that had sent something by then.

    Returns:
        Indexed by ``entity_id``: ``org_id``, ``entity_type`` (from ``entities``; missing for
        an entity no longer registered), ``time`` (its newest message), ``age_s`` (``at`` minus
        that), ``is_live``, then the state columns.

    Raises:
        FrameError: a bad time, filter or column.
    """
    t = v.to_epoch(at, "at")
    names = state_columns(columns)
    check_known(reader, filters)
    rows = _last_rows(reader, filters, t, names)
    picture = _merge(rows, names, ["entity_id"])
    return _finish(reader, picture, t, stale_after_s, names)


def _finish(
    reader: Reader,
    picture: pd.DataFrame,
    at: float | np.ndarray,
    stale_after_s: float,
    names: tuple[str, ...],
) -> pd.DataFrame:
    epoch = picture["time"].to_numpy(dtype="datetime64[us]").astype("int64") / 1e6
    age = np.asarray(at, dtype="float64") - epoch
    picture["age_s"] = age
    picture["is_live"] = pd.array(age <= stale_after_s, dtype="boolean")
    eids = picture.index.get_level_values("entity_id").astype(str)
    types = _entity_types(reader)
    picture["entity_type"] = pd.Categorical([types.get(e) for e in eids])
    return picture[[*PICTURE_KEYS, *names]]


def as_of_series(
    reader: Reader,
    filters: Filters,
    every: str | float | pd.Timedelta,
    stale_after_s: float,
    columns: str | Iterable[str] | None = None,
) -> pd.DataFrame:
    """Return the picture at ``since``, ``since + every``, ... up to ``until``, as one long frame.

    The state at ``since`` comes from :func:`as_of`'s seeks; the messages of the window are read
    once and carried forward per entity, then each instant takes each entity's row at or
    before it (``pandas.merge_asof``). Cost: the history of the window, read once.

    Returns:
        Indexed by (``as_of``, ``entity_id``), sorted; columns as :func:`as_of`.

    Raises:
        FrameError: no ``since``/``until`` in the filters, a bad ``every``, filter or column.
    """
    from overwatch_lab.errors import FrameError

    if filters.since is None or filters.until is None:
        raise FrameError("as_of_series needs a window: pass since= and until=")
    step = v.interval_s(every, "every")
    names = state_columns(columns)
    check_known(reader, filters)
    count = int(np.floor((filters.until - filters.since) / step + 1e-9)) + 1
    instants = filters.since + step * np.arange(count)
    base = _last_rows(reader, filters, filters.since, names)
    where, params = filters.where(time=False)
    keep = where.replace(" WHERE ", " AND ", 1) if where else ""
    wanted = ("time", "entity_id", "org_id", "message_type", *names)
    spec: Spec = spec_of(wanted)
    sql = f"SELECT {select_list(wanted)} FROM telemetry WHERE ts > ? AND ts <= ?{keep} ORDER BY ts, id"
    window = to_frame(reader.table(sql, [filters.since, filters.until, *params], spec), spec, index=None)
    rows = pd.concat([base, window], ignore_index=True)
    for key in ("entity_id", "message_type"):
        rows[key] = rows[key].astype(str)
    rows = rows.sort_values("time", kind="stable")
    pairs = rows[["entity_id", "message_type"]].drop_duplicates()
    grid = pd.DataFrame(
        {"as_of": np.repeat(epoch_to_time(instants), len(pairs)),
         "entity_id": np.tile(pairs["entity_id"].to_numpy(), len(instants)),
         "message_type": np.tile(pairs["message_type"].to_numpy(), len(instants))}
    )  # fmt: skip
    # Each instant takes each (entity, type)'s newest message at or before it, as :func:`as_of`.
    merged = pd.merge_asof(
        grid, rows, left_on="as_of", right_on="time", by=["entity_id", "message_type"], direction="backward"
    ).dropna(subset=["time"])
    merged["org_id"] = merged["org_id"].astype("category")
    picture = _merge(merged, names, ["as_of", "entity_id"])
    if "mode" in names:
        picture["mode"] = picture["mode"].astype("category")
    index = cast(pd.MultiIndex, picture.index)
    picture.index = pd.MultiIndex.from_arrays(
        [index.get_level_values("as_of"), index.get_level_values("entity_id").astype("category")],
        names=["as_of", "entity_id"],
    )
    picture = picture.sort_index()
    at = picture.index.get_level_values("as_of").to_numpy(dtype="datetime64[us]").astype("int64") / 1e6
    return _finish(reader, picture, at, stale_after_s, names)
