"""Tracks, summaries and as-of pictures on a real SQLite file, checked against plain pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from overwatch_lab.errors import FrameError
from overwatch_lab.frames import Frames
from overwatch_lab.frames import columns as cols
from overwatch_lab.frames.tracks import haversine_m

from .conftest import T0

ENTS = ["e0000", "e0001", "e0009", "e0030"]


def _pandas_resample(h: pd.DataFrame, interval: str, how: str) -> pd.DataFrame:
    numeric = list(cols.MEASUREMENTS)
    h = h.assign(entity_id=h["entity_id"].astype(str))
    out = getattr(h.groupby("entity_id")[numeric].resample(interval), how)()
    return out.reset_index().set_index("time")


@pytest.mark.parametrize("how", ["mean", "last"])
def test_resample_in_sql_equals_pandas_resample(built_db, how):
    f = Frames(built_db)
    window = {"entity": ENTS, "since": T0 + 100, "until": T0 + 700}
    ours = f.tracks("10s", how=how, **window)
    theirs = _pandas_resample(f.history(**window), "10s", how)
    assert ours.index.name == "time" and str(ours.index.tz) == "UTC"
    assert isinstance(ours["entity_id"].dtype, pd.CategoricalDtype)
    ours = ours.assign(entity_id=ours["entity_id"].astype(str))
    pd.testing.assert_frame_equal(
        ours.reset_index()[["entity_id", "time", *cols.MEASUREMENTS]],
        theirs.reset_index()[["entity_id", "time", *cols.MEASUREMENTS]],
        check_dtype=False, check_index_type=False, check_exact=False,
    )  # fmt: skip


def test_resample_grid_is_regular_and_bad_input_is_named(built_db):
    f = Frames(built_db)
    t = f.tracks("1min", entity="e0005", since=T0, until=T0 + 600, columns=["altitude_msl_m"])
    assert list(t.columns) == ["entity_id", "altitude_msl_m"]
    assert (np.diff(t.index.asi8) == 60 * 10**6).all()  # µs resolution, one row per minute
    assert f.tracks("1s", since=T0, until=T0).empty
    with pytest.raises(FrameError, match="unknown tracks"):
        f.tracks("1s", columns=["mode"])
    with pytest.raises(FrameError, match="how="):
        f.tracks("1s", how="max")


def test_summary_distance_and_staleness(small_db):
    s = Frames(small_db, stale_after_s=0.6).summary(entity=["uav-a", "uav-b"], until=T0 + 12)
    expected = haversine_m(np.zeros(9), np.arange(9) * 0.001, np.zeros(9), np.arange(1, 10) * 0.001).sum()
    assert s.loc["uav-a", "distance_m"] == pytest.approx(expected) and s.loc["uav-a", "distance_m"] > 900
    assert s.loc["uav-b", "distance_m"] == 0.0
    assert s.loc["uav-b", "messages"] == 10
    # uav-b: a message every 1 s, stale after 0.6 s: 0.4 s per gap (9 gaps) + (12 - 9.5 - 0.6) at the end
    assert s.loc["uav-b", "stale_s"] == pytest.approx(9 * 0.4 + 1.9)
    assert s.loc["uav-b", "max_gap_s"] == pytest.approx(1.0)


def test_as_of_is_each_entitys_newest_known_state(built_db):
    f = Frames(built_db)
    at = T0 + 1234.5
    picture = f.as_of(at)
    h = f.history(until=at + 1e-6)  # ts <= at
    h = h.assign(entity_id=h["entity_id"].astype(str))
    brute = h.groupby("entity_id")[list(cols.STATE)].last()
    newest = h.reset_index().groupby("entity_id")["time"].max()
    assert sorted(picture.index.astype(str)) == sorted(brute.index)
    got = picture.set_axis(picture.index.astype(str))
    for column in cols.MEASUREMENTS:
        pd.testing.assert_series_equal(
            got[column].sort_index(), brute[column].sort_index(), check_names=False
        )
    assert (got["mode"].astype(str).sort_index() == brute["mode"].astype(str).sort_index()).all()
    pd.testing.assert_series_equal(
        got["time"].sort_index(), newest.sort_index(), check_names=False, check_dtype=False
    )
    assert (got["age_s"] >= 0).all()
    assert set(picture["entity_type"].astype(str)) == {"aircraft_multirotor"}


def test_is_live_is_computed_as_at_t(small_db):
    f = Frames(small_db, stale_after_s=5.0)
    at_12 = f.as_of(T0 + 12)
    assert at_12.loc["uav-a", "is_live"] and at_12.loc["uav-b", "is_live"]
    assert "sensor-1" not in at_12.index  # had sent nothing by then
    at_20 = f.as_of(T0 + 20)
    assert not at_20.loc["uav-a", "is_live"] and at_20.loc["uav-a", "age_s"] == pytest.approx(11.0)
    # The newest SYS_STATUS said battery -1 ("unknown"): the picture says so too, as KV would.
    assert at_20.loc["uav-a", "latitude_deg"] == 0.0 and pd.isna(at_20.loc["uav-a", "battery_pct"])
    assert f.as_of(T0 + 5).loc["uav-a", "battery_pct"] == 90.0
    assert at_20.loc["uav-a", "mode"] == "GUIDED" and at_20.loc["uav-a", "voltage_v"] == 15.7
    assert f.as_of(T0 + 20, stale_after_s=60).loc["uav-a", "is_live"]
    only = f.as_of(T0 + 40, org="org-b")
    assert only.index.tolist() == ["sensor-1"]
    with pytest.raises(FrameError, match="unknown entity 'ghost'"):
        f.as_of(T0, entity="ghost")


def test_as_of_series_matches_single_pictures(small_db):
    f = Frames(small_db, stale_after_s=2.0)
    series = f.as_of_series(since=T0 + 1, until=T0 + 13, every="4s")
    assert series.index.names == ["as_of", "entity_id"]
    instants = series.index.get_level_values("as_of").unique()
    assert instants.tolist() == [pd.Timestamp(T0 + s, unit="s", tz="UTC") for s in (1, 5, 9, 13)]
    for instant in instants:
        one = f.as_of(instant)
        many = series.xs(instant, level="as_of")
        assert sorted(many.index.astype(str)) == sorted(one.index.astype(str))
        for eid in one.index:
            for column in ("latitude_deg", "longitude_deg", "battery_pct", "is_live", "age_s"):
                a, b = many.loc[eid, column], one.loc[eid, column]
                assert (pd.isna(a) and pd.isna(b)) or a == pytest.approx(b), (instant, eid, column)
    with pytest.raises(FrameError, match="every"):
        f.as_of_series(since=T0, until=T0 + 1, every="never")
