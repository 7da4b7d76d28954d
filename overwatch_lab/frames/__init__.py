"""``lab.frames`` and ``overwatch_lab.open(data_dir)``: a lab's data as pandas DataFrames.

One :class:`Frames` type, over a running lab (history from libSQL, live state from its KV
cache) or a data directory (history only, read-only)::

    frames = lab.frames                       # or: frames = overwatch_lab.open("overwatch-data")
    frames.history(entity=["uav-1", "uav-2"], since="2027-01-15T08:00", columns=["altitude_msl_m"])
    frames.tracks("10s", how="mean", org="org-a")   # regular per-entity series, bucketed in SQL
    frames.summary()                                # distance_m, stale_s per entity
    frames.as_of("2027-01-15T08:30:00Z")            # the picture at a past instant
    frames.export("out/", format="parquet")         # the run, with a data dictionary

Modules: :mod:`.facade` (Frames), :mod:`.opening` (open), :mod:`.columns` (names, units,
dictionary), :mod:`.validation` (bad input), :mod:`.filters` (the shared WHERE), :mod:`.reader`
(read-only SQL → Arrow → typed frames), :mod:`.history`, :mod:`.tracks`, :mod:`.asof`,
:mod:`.records` (events, commands, quarantine, entities), :mod:`.live` (KV state, LiveFrame),
:mod:`.export` (Parquet/CSV + dictionary).
"""

from __future__ import annotations

from overwatch_lab.frames.facade import Frames
from overwatch_lab.frames.live import STATES_MAX_LEVEL, ChangeSource, LiveFrame, LiveSource, flatten
from overwatch_lab.frames.opening import open_data_dir
from overwatch_lab.frames.records import QUARANTINE_COLUMNS

open = open_data_dir  # noqa: A001 - ``overwatch_lab.open(data_dir)``, as the issue names it

__all__ = [
    "QUARANTINE_COLUMNS",
    "STATES_MAX_LEVEL",
    "ChangeSource",
    "Frames",
    "LiveFrame",
    "LiveSource",
    "flatten",
    "open",
    "open_data_dir",
]
