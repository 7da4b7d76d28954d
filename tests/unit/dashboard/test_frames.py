"""The pure reductions a DataStore refresh applies (overwatch_lab/dashboard/frames.py)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from overwatch_lab.dashboard.frames import (
    FLEET_COLUMNS,
    fleet_frame,
    merge_telemetry,
    quarantine_records,
    quarantine_total,
    trim_quarantine,
    worker_rates,
)


def test_fleet_frame_of_nothing_has_the_columns():
    frame = fleet_frame(pd.DataFrame())
    assert list(frame.columns) == list(FLEET_COLUMNS) and frame.empty
    assert frame["battery"].dtype == "float64" and frame["is_live"].dtype == bool


def test_fleet_frame_reduces_documents():
    now = 1_000_000.0
    states = pd.DataFrame(
        [
            {
                "entity_id": "b",
                "org_id": "o",
                "entity_type": "ground_vehicle_tracked",
                "is_live": False,
                "power.battery_remaining": -1,  # MAVLink "unknown"
                "position.local.vx": 3.0,
                "position.local.vy": 4.0,
                "last_seen": "1970-01-12T13:46:30Z",  # now - 10 s
            },
            {
                "entity_id": "a",
                "name": "Alpha one",
                "org_id": "o",
                "org_name": "Org",
                "entity_type": "aircraft_vtol",
                "is_live": True,
                "vehicle_status.mode": "AUTO",
                "vehicle_status.armed": True,
                "power.battery_remaining": 55,
                "vfr.groundspeed": 7.5,
                "vfr.heading": 270,
                "position.global.latitude": 1.5,
                "position.global.longitude": 2.5,
                "position.global.altitude_msl": 100.0,
                "last_seen": None,
            },
        ]
    )
    frame = fleet_frame(states, now)
    assert frame["entity_id"].tolist() == ["a", "b"]  # sorted
    a, b = frame.iloc[0], frame.iloc[1]
    assert (a["name"], a["kind"], a["mode"], a["armed"], a["battery"]) == (
        "Alpha one",
        "air",
        "AUTO",
        True,
        55.0,
    )
    assert (a["speed"], a["heading"], a["latitude"], a["altitude"]) == (7.5, 270.0, 1.5, 100.0)
    assert math.isnan(a["age_s"]) and bool(a["is_live"]) is True
    assert b["name"] == "b" and b["kind"] == "ground" and b["armed"] is None and b["mode"] is None
    assert math.isnan(b["battery"])
    assert b["speed"] == pytest.approx(5.0)  # from the local velocity
    assert b["heading"] == pytest.approx(math.degrees(math.atan2(4.0, 3.0)))  # course over ground
    assert b["age_s"] == pytest.approx(10.0)


def test_worker_rates_use_deltas_and_ignore_non_workers():
    before = {"w": {"handled": 10, "busy_s": 1.0}, "synchronizer": {"passes": 1}}
    after = {"w": {"handled": 30, "busy_s": 1.5}, "new": {"handled": 5}, "synchronizer": {"passes": 2}}
    rates = worker_rates(before, after, 2.0)
    assert rates["w"] == {"handled_per_s": 10.0, "busy_pct": 25.0}
    assert rates["new"]["handled_per_s"] == 0.0  # first sight: no delta yet
    assert "synchronizer" not in rates
    assert worker_rates(after, before, 1.0)["w"]["handled_per_s"] == 0.0  # restarted lab: no negative rate
    assert worker_rates(before, after, 0.0) == {}


def test_merge_telemetry_deduplicates_and_trims():
    held = pd.DataFrame({"id": [1, 2, 3], "ts": [10.0, 11.0, 12.0]})
    new = pd.DataFrame({"id": [3, 4, 5], "ts": [12.0, 13.0, 14.0]})
    merged = merge_telemetry(held, new, since=11.0, max_rows=3)
    assert merged["id"].tolist() == [3, 4, 5]
    assert merge_telemetry(None, new, since=0.0, max_rows=10)["id"].tolist() == [3, 4, 5]
    assert merge_telemetry(held, new.iloc[:0], since=0.0, max_rows=10)["id"].tolist() == [1, 2, 3]


def test_quarantine_helpers():
    assert (
        quarantine_total({"a": {"quarantined": 2}, "b": {"quarantined": 3}, "kv": {"cas_conflicts": 9}}) == 5
    )
    frame = pd.DataFrame(
        {
            "quarantined_at": ["2026-01-01T00:00:01Z", "2026-01-01T00:00:03Z", "2026-01-01T00:00:02Z"],
            "error": list("abc"),
        }
    )
    kept = trim_quarantine(frame, 2)
    assert kept["error"].tolist() == ["b", "c"]  # newest first
    assert "original_data" not in kept.columns and "worker" in kept.columns


def test_quarantine_records_prefers_the_stream_once_checked():
    workers = {"a": {"quarantined": 2}}
    unchecked = workers | {"streams": {"CONSTELLATION_QUARANTINE": {"messages": 0, "checks": 0}}}
    checked = workers | {"streams": {"CONSTELLATION_QUARANTINE": {"messages": 9, "checks": 3}}}
    assert quarantine_records(workers) == quarantine_records(unchecked) == 2  # not read yet: this run's count
    assert quarantine_records(checked) == 9
