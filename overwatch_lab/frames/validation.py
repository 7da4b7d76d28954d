"""Checking what a frame query asks for, before any SQL runs: times, windows, ids, intervals.

Pure functions (no database): each returns the value in the form the queries use, or raises
:class:`~overwatch_lab.errors.FrameError` with a message naming the bad value. Whether an
entity or organisation *exists* is asked of the database by :mod:`.reader`.

Times (``since``, ``until``, ``at``) accept epoch seconds, an RFC 3339 / ISO 8601 string, a
``datetime`` or a ``pandas.Timestamp``. **A naive datetime or string (no UTC offset) is taken as
UTC**, never as the machine's local time.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable
from typing import Literal

import pandas as pd

from overwatch_lab.errors import FrameError
from overwatch_lab.protocol.mavlink import MESSAGE_IDS
from overwatch_lab.store.schema import ENTITY_TYPES
from overwatch_lab.store.window import TimeLike as TimeLike  # re-exported: the frames take it
from overwatch_lab.store.window import TimeWindow, epoch_of

How = Literal["last", "mean"]

_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def to_epoch(value: TimeLike, name: str) -> float:
    """Return ``value`` as epoch seconds (a naive datetime or string is taken as UTC).

    Raises:
        FrameError: not a time (a bool, NaN, an unparsable string, another type).
    """
    return epoch_of(value, name)


def window(since: TimeLike | None, until: TimeLike | None) -> tuple[float | None, float | None]:
    """Return the window ``since <= ts < until`` as epoch seconds (None: open on that side).

    Raises:
        FrameError: a bound is not a time, or ``since`` is after ``until`` (an empty window,
            ``since == until``, is allowed: it selects nothing).
    """
    w = TimeWindow.of(since, until)
    return w.since, w.until


def ids(value: str | Iterable[str] | None, name: str) -> tuple[str, ...] | None:
    """Return one id or many as a tuple (None: no filter), each checked against the token rule.

    Raises:
        FrameError: an id that is not a string or breaks the token rule, or an empty list.
    """
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    if not items:
        raise FrameError(f"{name}: an empty list selects nothing; pass None for no filter")
    for item in items:
        if not isinstance(item, str) or not _TOKEN_RE.match(item):
            raise FrameError(f"{name}: {item!r} is not an identifier (letters, digits, _ and -, 1-128)")
    return tuple(dict.fromkeys(items))


def entity_types(value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """Return the entity types asked for, each one of the schema's.

    Raises:
        FrameError: an unknown entity type (the message lists the known ones).
    """
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    for item in items:
        if item not in ENTITY_TYPES:
            raise FrameError(f"unknown entity_type {item!r}; known: {', '.join(ENTITY_TYPES)}")
    return tuple(dict.fromkeys(items)) or None


def message_types(value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """Return the MAVLink message types asked for, each one the lab projects.

    Raises:
        FrameError: an unknown message type (the message lists the known ones).
    """
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    for item in items:
        if item not in MESSAGE_IDS:
            raise FrameError(f"unknown message_type {item!r}; known: {', '.join(sorted(MESSAGE_IDS))}")
    return tuple(dict.fromkeys(items)) or None


def interval_s(value: str | float | int | pd.Timedelta | dt.timedelta, name: str = "interval") -> float:
    """Return a resampling interval (``"1s"``, ``"10s"``, ``"1min"``, seconds, a timedelta) in seconds.

    Raises:
        FrameError: not a duration, or not positive.
    """
    if isinstance(value, bool):
        raise FrameError(f"{name}={value!r} is not a duration")
    try:
        seconds = float(value) if isinstance(value, int | float) else pd.Timedelta(value).total_seconds()
    except (ValueError, TypeError) as exc:
        raise FrameError(f"{name}={value!r} is not a duration (e.g. '1s', '10s', '1min'): {exc}") from exc
    if not math.isfinite(seconds) or seconds <= 0:
        raise FrameError(f"{name}={value!r} must be a positive duration")
    return seconds


def how(value: str) -> How:
    """Return the aggregation of a resample (``"last"`` or ``"mean"``).

    Raises:
        FrameError: anything else.
    """
    if value == "last":
        return "last"
    if value == "mean":
        return "mean"
    raise FrameError(f"how={value!r}: use 'last' or 'mean'")


def positive(value: float | int | None, name: str) -> float | None:
    """Return ``value`` as a float if it is a positive finite number (None stays None).

    Raises:
        FrameError: zero, negative, not finite or not a number.
    """
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise FrameError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def limit(value: int | None) -> int | None:
    """Return a row limit (None: no limit).

    Raises:
        FrameError: not a non-negative int.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FrameError(f"limit must be a non-negative int, got {value!r}")
    return value
