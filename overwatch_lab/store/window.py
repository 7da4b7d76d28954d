"""Time windows and entity filters of a frame query, checked before anything is read (pure).

A time is epoch seconds, an RFC 3339 string, a ``datetime`` or a ``pandas.Timestamp``; a naive
value (no offset, no tzinfo) is taken as UTC. A window is ``since <= t < until``; either end
may be open (None). A window whose ``since`` is after its ``until`` is an error (it is not an
empty window: an empty window is ``since == until``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from overwatch_lab.errors import FrameError
from overwatch_lab.protocol.subjects import check_token

__all__ = ["TimeLike", "TimeWindow", "entity_ids", "epoch_ns_of", "epoch_of"]

TimeLike = float | int | str | dt.datetime | pd.Timestamp
"""What a frame filter accepts as a time (naive values are UTC)."""


def epoch_of(value: TimeLike, name: str) -> float:
    """Epoch seconds of ``value``; naive datetimes and strings without an offset are UTC.

    Raises:
        FrameError: ``value`` is not a time (a bool, NaN, an unparsable string...).
    """
    if isinstance(value, bool):
        raise FrameError(f"{name}={value!r} is not a time")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise FrameError(f"{name}={value!r} is not a time")
        return float(value)
    if not isinstance(value, str | dt.datetime):  # a pandas.Timestamp is a datetime
        raise FrameError(f"{name}={value!r} is not a time (epoch s, ISO 8601 text or datetime)")
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise FrameError(f"{name}={value!r} is not a time: {exc}") from None
    if pd.isna(stamp):
        raise FrameError(f"{name}={value!r} is not a time")
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return float(stamp.timestamp())


def epoch_ns_of(value: TimeLike, name: str) -> int:
    """Epoch nanoseconds of ``value``, exact for strings, datetimes and Timestamps (to their precision).

    For a JetStream window, whose stored times are nanoseconds: a ``pandas.Timestamp`` taken
    from a frame's ``stored_at`` selects exactly that message. Numbers are epoch seconds.

    Raises:
        FrameError: as :func:`epoch_of`.
    """
    seconds = epoch_of(value, name)  # the checks and their messages
    if isinstance(value, int | float):
        return round(seconds * 1e9)
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return int(stamp.as_unit("ns").value)


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """``since <= t < until`` in epoch seconds; None is an open end."""

    since: float | None = None
    until: float | None = None

    @classmethod
    def of(cls, since: TimeLike | None, until: TimeLike | None) -> TimeWindow:
        """Check and convert a window.

        Raises:
            FrameError: an end is not a time, or ``since`` is after ``until``.
        """
        lo = None if since is None else epoch_of(since, "since")
        hi = None if until is None else epoch_of(until, "until")
        if lo is not None and hi is not None and lo > hi:
            raise FrameError(
                f"the window starts after it ends: since ({_iso(lo)}) is after until ({_iso(hi)})"
            )
        return cls(lo, hi)

    @property
    def empty(self) -> bool:
        """True when no time can be in the window (``since == until``)."""
        return self.since is not None and self.until is not None and self.since >= self.until

    def contains(self, t: float) -> bool:
        """True when ``since <= t < until``."""
        return (self.since is None or t >= self.since) and (self.until is None or t < self.until)


def _iso(epoch: float) -> str:
    return pd.Timestamp(epoch, unit="s", tz="UTC").isoformat()


def entity_ids(entity_id: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """One entity id or many as a tuple of checked tokens (None: no filter), duplicates removed.

    Raises:
        FrameError: an empty list, or an id that breaks the token rule (no entity can have it).
    """
    if entity_id is None:
        return None
    ids = (entity_id,) if isinstance(entity_id, str) else tuple(entity_id)
    if not ids:
        raise FrameError("entity_id=[] selects nothing; pass None for every entity")
    try:
        return tuple(dict.fromkeys(check_token(e, "entity_id") for e in ids))
    except ValueError as exc:  # SubjectError
        raise FrameError(str(exc)) from None
