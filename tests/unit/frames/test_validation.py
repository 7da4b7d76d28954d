"""Bad input to a frame query, caught before any SQL (overwatch_lab/frames/validation.py)."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from overwatch_lab.errors import FrameError
from overwatch_lab.frames import validation as v

T0 = 1_800_000_000.0


def test_naive_datetimes_and_strings_are_utc():
    naive = dt.datetime(2027, 1, 15, 8, 0, 0)
    assert v.to_epoch(naive, "since") == T0
    assert v.to_epoch("2027-01-15T08:00:00", "since") == T0
    assert v.to_epoch("2027-01-15T09:00:00+01:00", "since") == T0
    assert v.to_epoch(pd.Timestamp(T0, unit="s", tz="UTC"), "since") == T0
    assert v.to_epoch(T0, "since") == T0


@pytest.mark.parametrize("bad", ["yesterday-ish", True, float("nan"), object(), "NaT"])
def test_a_value_that_is_not_a_time_is_named(bad):
    with pytest.raises(FrameError, match="since=.* is not a time"):
        v.to_epoch(bad, "since")


def test_start_after_end_is_an_error_and_an_empty_window_is_not():
    with pytest.raises(FrameError, match=r"since \(2027-01-15T08:00:10\+00:00\) is after until"):
        v.window(T0 + 10, T0)
    assert v.window(T0, T0) == (T0, T0)
    assert v.window(None, "2027-01-15T08:00:00") == (None, T0)


def test_ids_types_and_intervals():
    assert v.ids("a", "entity") == ("a",) and v.ids(["a", "b", "a"], "entity") == ("a", "b")
    with pytest.raises(FrameError, match="not an identifier"):
        v.ids(["ok", "bad.id"], "entity")
    with pytest.raises(FrameError, match="empty list"):
        v.ids([], "entity")
    with pytest.raises(FrameError, match="unknown entity_type 'blimp'"):
        v.entity_types("blimp")
    with pytest.raises(FrameError, match="unknown message_type 'NOPE'"):
        v.message_types(["HEARTBEAT", "NOPE"])
    assert v.interval_s("10s") == 10.0 and v.interval_s("1min") == 60.0 and v.interval_s(0.5) == 0.5
    for bad in ("soon", 0, -1, "0s"):
        with pytest.raises(FrameError, match="interval"):
            v.interval_s(bad)
    with pytest.raises(FrameError, match="how='median'"):
        v.how("median")
