"""History frames on a real SQLite file: filters, dtypes, units, bad input (overwatch_lab/frames/history.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from overwatch_lab.errors import FrameError
from overwatch_lab.frames import Frames
from overwatch_lab.frames import columns as cols

from .conftest import T0


def test_history_is_typed_with_units_and_a_utc_index(small_db):
    h = Frames(small_db).history(entity="uav-a")
    assert isinstance(h.index, pd.DatetimeIndex) and str(h.index.tz) == "UTC" and h.index.name == "time"
    assert h.index.is_monotonic_increasing and h.index[0] == pd.Timestamp(T0, unit="s", tz="UTC")
    assert list(h.columns) == list(cols.DEFAULT[1:])
    for name in ("entity_id", "org_id", "message_type", "mode"):
        assert isinstance(h[name].dtype, pd.CategoricalDtype), name
    assert h["altitude_msl_m"].dtype == "float64" and h["battery_pct"].dtype == "float64"
    assert str(h["armed"].dtype) == "boolean" and str(h["late"].dtype) == "boolean"
    sys = h[h["message_type"] == "SYS_STATUS"]
    assert sys["battery_pct"].tolist()[0] == 90.0 and pd.isna(sys["battery_pct"].tolist()[1])  # -1 = unknown
    assert sys["voltage_v"].tolist() == [15.8, 15.7]
    assert sys["current_a"].tolist()[0] == 12.5 and pd.isna(
        sys["current_a"].tolist()[1]
    )  # cA -> A; -1 missing


def test_filters_combine_in_sql(small_db):
    f = Frames(small_db)
    both = f.history(
        entity=["uav-a", "uav-b"], message_type="GLOBAL_POSITION_INT", since=T0 + 2, until=T0 + 4
    )
    assert sorted(both["entity_id"].astype(str)) == ["uav-a", "uav-a", "uav-b", "uav-b"]
    assert set(f.history(org="org-b")["entity_id"]) == {"sensor-1"}
    assert set(f.history(entity_type="sensor_platform")["entity_id"]) == {"sensor-1"}
    newest = f.history(entity="uav-b", limit=3)
    assert newest.index.tolist() == [pd.Timestamp(T0 + k + 0.5, unit="s", tz="UTC") for k in (7, 8, 9)]
    narrow = f.history(entity="uav-a", columns=["altitude_msl_m", "message_uid"])
    assert list(narrow.columns) == ["entity_id", "org_id", "message_type", "altitude_msl_m", "message_uid"]
    naive = f.history(entity="uav-a", since=pd.Timestamp("2027-01-15T08:00:08"))  # naive: UTC
    assert len(naive[naive["message_type"] == "GLOBAL_POSITION_INT"]) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"entity": "ghost"}, "unknown entity 'ghost'"),
        ({"entity": ["uav-a", "ghost"]}, "unknown entity 'ghost'"),
        ({"org": "org-zz"}, "unknown organisation 'org-zz'"),
        ({"columns": ["altitude"]}, "unknown history column 'altitude'"),
        ({"since": T0 + 5, "until": T0}, "is after until"),
        ({"since": "not a time"}, "is not a time"),
        ({"limit": -1}, "limit"),
    ],
)
def test_bad_input_is_named(small_db, kwargs, message):
    with pytest.raises(FrameError, match=message):
        Frames(small_db).history(**kwargs)


def test_an_empty_answer_keeps_the_columns_and_dtypes(small_db):
    f = Frames(small_db)
    full = f.history(entity="uav-a")
    for empty in (f.history(since=T0, until=T0), f.history(entity="idle-1"), f.history(since=T0 + 999)):
        assert empty.empty
        assert list(empty.columns) == list(full.columns)
        assert empty.dtypes.astype(str).tolist() == full.dtypes.astype(str).tolist()
        assert str(empty.index.dtype) == str(full.index.dtype)


def test_raw_telemetry_rows_keep_the_table_columns(small_db):
    raw = Frames(small_db).telemetry(entity_id="uav-a", since=T0 + 8)
    assert raw.columns[0] == "time" and {"id", "ts", "latitude", "late"} <= set(raw.columns)
    assert raw["ts"].tolist() == [T0 + 8, T0 + 9]


def test_records_are_indexed_by_time_and_joinable_on_entity(small_db):
    f = Frames(small_db)
    events = f.device_events(entity="uav-a")
    assert events.empty and isinstance(events.index, pd.DatetimeIndex)
    commands = f.commands(entity="uav-a")
    assert commands.empty and "total_ms" in commands.columns
    with pytest.raises(FrameError, match="unknown commands filter"):
        f.commands(colour="red")
    ents = f.entities(org="org-b")
    assert ents.index.tolist() == ["idle-1", "sensor-1"]
