"""DataStore: pure reductions, and refreshes against a real lab (including one that stopped)."""

from __future__ import annotations

import asyncio
import math
import threading
import time

import pandas as pd
import pytest

from overwatch_lab.dashboard.datastore import DataStore, FleetSource
from overwatch_lab.dashboard.frames import (
    FLEET_COLUMNS,
    fleet_frame,
    merge_telemetry,
    quarantine_total,
    trim_quarantine,
    worker_rates,
)
from tests.unit.dashboard.helpers import FLEET, fly, register_fleet, wait_until


# ---------------------------------------------------------------------------------------------- pure
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


# ---------------------------------------------------------------------------------------------- real lab
def test_lab_is_a_fleet_source(lab):
    assert isinstance(lab, FleetSource)


def test_refresh_reads_the_fleet_and_counters(lab):
    register_fleet(lab)
    fly(lab)
    store = DataStore(source=lab)
    assert store.refresh() is True
    assert store.fleet["entity_id"].tolist() == sorted(e for _, e, _, _ in FLEET)
    uav1 = store.fleet.set_index("entity_id").loc["uav-1"]
    assert uav1["name"] == "Hawk 1" and uav1["org_name"] == "Alpha" and uav1["mode"] == "GUIDED"
    assert uav1["battery"] == 80.0 and uav1["speed"] == 4.0 and bool(uav1["is_live"])
    assert store.stats["telemetry-worker"]["handled"] >= 3 * 6
    assert (store.refreshes, store.errors, store.healthy, store.last_error) == (1, 0, True, None)
    assert store.last_refresh_at is not None and store.last_refresh_s > 0
    assert store.quarantine.empty and store.telemetry.empty  # nothing quarantined, nothing selected


def test_selected_entity_history_is_read_incrementally(lab):
    register_fleet(lab)
    t0 = time.time() - 10
    fly(lab, steps=3, t0=t0)
    store = DataStore(source=lab, selected="uav-2")
    store.refresh()
    assert store.telemetry_entity == "uav-2"
    assert len(store.telemetry) == 6 and set(store.telemetry["entity_id"]) == {"uav-2"}
    first_ids = store.telemetry["id"].tolist()
    fly(lab, steps=2, t0=t0 + 5)  # newer than every message of the first flight
    store.refresh()
    ids = store.telemetry["id"].tolist()
    assert len(ids) == 6 + 5 and ids[:6] == first_ids and len(set(ids)) == len(ids)
    store.selected = "ugv-1"
    store.refresh()
    assert store.telemetry_entity == "ugv-1" and set(store.telemetry["entity_id"]) == {"ugv-1"}


def test_quarantine_is_read_when_a_counter_moves(lab):
    register_fleet(lab)
    store = DataStore(source=lab, quarantine_period_s=0.5)
    store.refresh()
    assert store.quarantine.empty
    lab.publish_telemetry("org-a", "ghost", "VFR_HUD", {"groundspeed": 1.0})  # unknown entity
    lab.wait_for(lambda: lab.stats()["telemetry-worker"]["quarantined"] == 1, what="quarantined")
    reasons = wait_until(
        lambda: store.refresh() and store.quarantine["error"].tolist(), timeout=10, what="quarantine record"
    )
    assert "unknown entity 'ghost'" in reasons[0]
    assert store.quarantine["original_subject"].iloc[0] == "constellation.telemetry.org-a.ghost"


def test_a_stopped_lab_is_counted_not_raised(lab):
    register_fleet(lab)
    store = DataStore(source=lab)
    store.refresh()
    fleet = store.fleet
    lab.down()
    assert store.refresh() is False
    assert store.errors == 1 and store.healthy is False and "LabStateError" in store.last_error
    assert store.fleet is fleet  # the last good frames stay on screen
    assert store.refresh() is False and store.errors == 2


def test_a_source_that_raises_anything_is_counted():
    class Broken:
        def states(self):
            raise ZeroDivisionError("boom")

    store = DataStore(source=Broken())
    assert store.refresh() is False
    assert store.last_error == "ZeroDivisionError: boom"


def test_start_without_a_loop_or_session_refreshes_only_on_demand():
    store = DataStore(source=None).start()
    assert not store.running and store.refreshes == 0
    assert store.refresh() is False and store.errors == 1  # no source: counted like any failure
    store.stop()
    assert not store.running


async def test_periodic_refresh_on_a_running_loop(lab):
    """In a notebook the kernel's loop runs: the store refreshes by itself, off that loop."""
    register_fleet(lab)
    store = DataStore(source=lab, period_s=0.1)
    store.start()
    try:
        deadline = time.monotonic() + 10
        while store.refreshes < 3:
            assert time.monotonic() < deadline, (
                store.refreshes,
                store.errors,
                store.skipped,
                store.last_error,
            )
            await asyncio.sleep(0.02)
        assert len(store.fleet) == len(FLEET)
    finally:
        store.stop()
    assert not store.running


def test_a_tick_during_a_slow_read_is_skipped(lab):
    class Slow:
        def __init__(self):
            self.release = threading.Event()
            self.entered = threading.Event()

        def states(self):
            self.entered.set()
            self.release.wait(10)
            return lab.states()

        def stats(self):
            return lab.stats()

        def telemetry_frame(self, **filters):
            return lab.telemetry_frame(**filters)

        def quarantine_frame(self):
            return lab.quarantine_frame()

    slow = Slow()
    applied = threading.Event()
    store = DataStore(source=slow)  # ticks driven by hand, results delivered straight to _apply
    store._deliver = lambda fn: (fn(), applied.set())
    store._tick()
    assert slow.entered.wait(5)
    store._tick()  # the first read is still running
    assert store._skipped == 1
    slow.release.set()
    assert applied.wait(10)
    assert store.refreshes == 1 and store.skipped == 1
