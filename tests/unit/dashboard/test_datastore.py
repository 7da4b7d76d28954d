"""DataStore: refreshes from a FakeSource (pure data), incremental reads, failures, the periodic tick."""

from __future__ import annotations

import threading
import time

import pytest

from overwatch_lab.dashboard.datastore import TELEMETRY_OVERLAP_S, DataStore
from tests.builders import FLEET, entity_ids
from tests.polling import wait_for, wait_until


def test_refresh_reads_the_fleet_and_counters(source):
    source.fly()
    store = DataStore(source=source)
    assert store.refresh() is True
    assert store.fleet["entity_id"].tolist() == entity_ids()
    uav1 = store.fleet.set_index("entity_id").loc["uav-1"]
    assert uav1["name"] == "Hawk 1" and uav1["org_name"] == "Alpha" and uav1["mode"] == "GUIDED"
    assert uav1["battery"] == 80.0 and uav1["speed"] == 4.0 and bool(uav1["is_live"])
    assert store.stats["telemetry-worker"]["handled"] == 3 * 6
    assert (store.refreshes, store.errors, store.healthy, store.last_error) == (1, 0, True, None)
    assert store.last_refresh_at is not None and store.last_refresh_s > 0
    assert store.quarantine.empty and store.telemetry.empty  # nothing quarantined, nothing selected
    assert [m for m, _ in source.reads] == ["states", "stats", "quarantine"]  # no telemetry read


def test_selected_entity_history_is_read_incrementally(source):
    t0 = time.time() - 10
    source.fly(steps=3, t0=t0)
    store = DataStore(source=source, selected="uav-2")
    store.refresh()
    assert store.telemetry_entity == "uav-2"
    assert len(store.telemetry) == 6 and set(store.telemetry["entity_id"]) == {"uav-2"}
    first_ids = store.telemetry["id"].tolist()
    newest = store.telemetry["ts"].max()
    source.fly(steps=2, t0=t0 + 5)  # newer than every message of the first flight
    source.reads.clear()
    store.refresh()
    (asked,) = [f for m, f in source.reads if m == "telemetry"]
    assert asked["since"] == newest - TELEMETRY_OVERLAP_S  # only what is new, plus an overlap
    ids = store.telemetry["id"].tolist()
    assert len(ids) == 6 + 5 and ids[:6] == first_ids and len(set(ids)) == len(ids)
    store.selected = "ugv-1"
    store.refresh()
    assert store.telemetry_entity == "ugv-1" and set(store.telemetry["entity_id"]) == {"ugv-1"}


def test_selected_history_keeps_the_window_and_the_row_cap(source):
    now = time.time()
    for k in range(30):  # 30 VFR_HUD rows of uav-1, one per 10 s, the newest now
        source.publish_telemetry(
            "org-a", "uav-1", "VFR_HUD", {"groundspeed": k}, timestamp=now - 290 + 10 * k
        )
    store = DataStore(source=source, selected="uav-1", telemetry_window_s=100, telemetry_max_rows=10)
    store.refresh()
    assert len(store.telemetry) == 10 and store.telemetry["ts"].min() >= now - 100
    assert store.telemetry["ts"].max() == pytest.approx(now)


def test_quarantine_is_read_when_a_counter_moves(source):
    store = DataStore(source=source, quarantine_period_s=0.5)
    store.refresh()
    assert store.quarantine.empty
    source.reads.clear()
    store.refresh()
    assert "quarantine" not in [m for m, _ in source.reads]  # nothing moved: not read again
    source.publish_telemetry("org-a", "ghost", "VFR_HUD", {"groundspeed": 1.0})  # unknown entity
    reasons = wait_until(
        lambda: store.refresh() and store.quarantine["error"].tolist(), timeout=5, what="quarantine record"
    )  # read once quarantine_period_s has passed since the last read
    assert len(reasons) == 1 and reasons[0].startswith("unknown entity 'ghost'")
    assert store.quarantine["original_subject"].iloc[0] == "constellation.telemetry.org-a.ghost"


def test_a_failed_quarantine_read_keeps_the_rest_of_the_snapshot(source):
    def broken() -> None:
        raise TimeoutError("quarantine stream slow")

    source.frames.quarantine = broken
    store = DataStore(source=source)
    assert store.refresh() is True and store.healthy
    assert store.last_error == "quarantine read failed: TimeoutError: quarantine stream slow"
    assert store.fleet["entity_id"].tolist() == entity_ids()


def test_a_stopped_lab_is_counted_not_raised(source):
    store = DataStore(source=source)
    store.refresh()
    fleet = store.fleet
    source.stop()
    assert store.refresh() is False
    assert store.errors == 1 and store.healthy is False and "LabStateError" in store.last_error
    assert store.fleet is fleet  # the last good frames stay on screen
    assert store.refresh() is False and store.errors == 2


def test_a_source_that_raises_anything_is_counted():
    class Broken:
        @property
        def frames(self):
            return self

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


async def test_periodic_refresh_on_a_running_loop(source):
    """In a notebook the kernel's loop runs: the store refreshes by itself, off that loop."""
    store = DataStore(source=source, period_s=0.1)
    store.start()
    try:
        await wait_for(lambda: store.refreshes >= 3, timeout=10, what="3 refreshes")
        assert store.errors == 0 and len(store.fleet) == len(FLEET)
    finally:
        store.stop()
    assert not store.running


def test_a_tick_during_a_slow_read_is_skipped(source):
    class Slow:
        def __init__(self):
            self.release = threading.Event()
            self.entered = threading.Event()

        @property
        def frames(self):
            return self

        def states(self):
            self.entered.set()
            self.release.wait(10)
            return source.frames.states()

        def stats(self):
            return source.stats()

        def telemetry(self, **filters):
            return source.frames.telemetry(**filters)

        def quarantine(self):
            return source.frames.quarantine()

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
