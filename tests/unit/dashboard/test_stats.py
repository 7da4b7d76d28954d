"""WorkerStats: worker counters, rates, synchronizer and dashboard counters, quarantine reasons."""

from __future__ import annotations

import math

from overwatch_lab.dashboard.datastore import DataStore
from overwatch_lab.dashboard.stats import (
    WORKER_COLUMNS,
    WorkerStats,
    counters_frame,
    hold_alarm,
    worker_frame,
)
from tests.polling import wait_until


def test_worker_frame_one_row_per_worker():
    stats = {
        "b-worker": {"handled": 5, "acked": 4, "quarantined": 1, "lag": 7, "last_error": "x"},
        "a-worker": {"handled": 2},
        "synchronizer": {"passes": 3},
        "kv": {"cas_conflicts": 0},
    }
    frame = worker_frame(stats, {"b-worker": {"handled_per_s": 2.5, "busy_pct": 10.0}})
    assert list(frame.columns) == list(WORKER_COLUMNS)
    assert frame["worker"].tolist() == ["a-worker", "b-worker"]
    b = frame.set_index("worker").loc["b-worker"]
    assert (b["handled"], b["quarantined"], b["lag"], b["rate"], b["last_error"]) == (5, 1, 7, 2.5, "x")
    assert math.isnan(frame.set_index("worker").loc["a-worker", "rate"])  # no rate before two refreshes


def test_counters_frame_includes_the_dashboards_own(source):
    store = DataStore(source=source)
    store.refresh()
    rows = dict(counters_frame(store.stats, store).itertuples(index=False))
    assert rows["dashboard · refreshes"] == "1" and rows["dashboard · failed refreshes"] == "0"
    assert int(rows["sync · passes"]) >= 1 and "kv · cas_conflicts" in rows


def test_worker_stats_view_follows_its_source(source):
    store = DataStore(source=source, quarantine_period_s=0.5)
    view = WorkerStats(data_store=store)
    workers_table = view.workers
    store.refresh()
    sent = source.fly(steps=2)
    source.counters["telemetry-worker"]["busy_s"] = 0.5
    store.refresh()
    assert (
        view.workers.value.set_index("worker").loc["telemetry-worker", "rate"] > 0
    )  # handled since the last refresh
    source.publish_telemetry("org-a", "ghost", "VFR_HUD", {"groundspeed": 1.0})  # unknown: quarantined
    wait_until(lambda: store.refresh() and not view.quarantine.value.empty, timeout=5, what="quarantine row")
    assert view.workers is workers_table
    tel = view.workers.value.set_index("worker").loc["telemetry-worker"]
    assert tel["handled"] == source.counters["telemetry-worker"]["handled"] == sent + 1
    assert tel["quarantined"] == 1
    assert "unknown entity 'ghost'" in view.quarantine.value["error"].iloc[0]
    counters = dict(view.counters.value.itertuples(index=False))
    assert int(counters["dashboard · refreshes"]) == store.refreshes >= 2

    source.stop()
    store.refresh()
    counters = dict(view.counters.value.itertuples(index=False))
    assert (
        counters["dashboard · failed refreshes"] == "1"
        and "LabStateError" in counters["dashboard · last error"]
    )


def test_hold_alarm_names_each_holding_worker_with_its_reason():
    stats = {
        "telemetry-worker": {
            "handled": 9, "holding": True, "held": 4200, "hold_since": 1000.0, "hold_attempts": 7,
            "hold_reason": "history insert failed: database or disk is full <x>",
        },
        "entity-worker": {"handled": 3, "holding": False, "held": 0},
        "kv": {"cas_conflicts": 0},
    }  # fmt: skip
    alarm = hold_alarm(stats, now=1042.0)
    assert (
        "HOLDING" in alarm and "<b>telemetry-worker</b> holds 4,200 messages for 42 s (7 attempts)" in alarm
    )
    assert "database or disk is full &lt;x&gt;" in alarm  # escaped
    assert "entity-worker" not in alarm
    assert hold_alarm({"entity-worker": {"handled": 3, "holding": False}}) == ""
    assert worker_frame(stats, {}).set_index("worker").loc["telemetry-worker", "held"] == 4200


def test_worker_stats_view_raises_the_alarm_while_a_worker_holds(source):
    store = DataStore(source=source)
    view = WorkerStats(data_store=store)
    store.refresh()
    assert not view.alarm.visible
    source.counters["telemetry-worker"].update(
        holding=True, held=500, hold_since=1000.0, hold_attempts=3,
        hold_reason="history insert failed: database or disk is full",
    )  # fmt: skip
    store.refresh()
    assert view.alarm.visible
    assert "telemetry-worker" in view.alarm.object and "database or disk is full" in view.alarm.object
    assert view.workers.value.set_index("worker").loc["telemetry-worker", "held"] == 500
    source.counters["telemetry-worker"].update(holding=False, held=0)
    store.refresh()
    assert not view.alarm.visible
    assert view.workers.value.set_index("worker").loc["telemetry-worker", "held"] == 0


def test_device_text_is_shown_escaped_and_hover_text_is_never_html(source):
    """A quarantine reason quotes the device: control characters shown, HTML not interpreted."""
    import pandas as pd

    from overwatch_lab.dashboard.frames import trim_quarantine
    from overwatch_lab.dashboard.stats import TEXT_CELL

    hostile = "unknown field(s) x\n<img src=x onerror=alert(1)>\x1b[31m"
    frame = pd.DataFrame(
        [{"quarantined_at": "2026-11-27T10:00:00.000000Z", "worker": "telemetry-worker",
          "original_subject": "constellation.telemetry.a.\x1b[2J", "error": hostile}]
    )  # fmt: skip
    shown = trim_quarantine(frame, 5)
    assert shown.loc[0, "error"] == "unknown field(s) x\\n<img src=x onerror=alert(1)>\\x1b[31m"
    assert shown.loc[0, "original_subject"] == "constellation.telemetry.a.\\x1b[2J"
    assert worker_frame({"w": {"handled": 1, "last_error": hostile}}, {}).loc[0, "last_error"].isprintable()

    view = WorkerStats(data_store=DataStore(source=source))
    for table, columns in (
        (view.quarantine, ("worker", "original_subject", "error")),
        (view.workers, ("last_error",)),
    ):
        # Tabulator's tooltip: true would set the value as innerHTML; the title attribute is text
        assert "tooltip" not in str(table._configuration)  # the constructor argument (no public param)
        for c in columns:
            assert table.formatters[c].template == TEXT_CELL
    assert TEXT_CELL.count("<%-") == 2 and "<%=" not in TEXT_CELL  # both uses HTML-escaped
