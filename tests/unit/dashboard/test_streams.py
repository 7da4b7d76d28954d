"""Stream health on the dashboard: one row per stream, and a red mark as soon as anything was lost."""

from __future__ import annotations

import math

from overwatch_lab.dashboard.app import Overview
from overwatch_lab.dashboard.datastore import DataStore
from overwatch_lab.dashboard.stats import WorkerStats
from overwatch_lab.dashboard.streams import STREAM_COLUMNS, loss_banner, lost_total, stream_frame
from overwatch_lab.protocol import subjects as s

TEL, Q = s.STREAM_TELEMETRY, s.STREAM_QUARANTINE
STATS = {
    "telemetry-worker": {"handled": 5},
    "streams": {
        TEL: {"consumer": "telemetry-processor", "messages": 900, "fill_pct": 90.0, "lag": 800,
              "lag_rate_per_s": 120.0, "overflow_in_s": 40.0, "discarded": 370, "dropped": 0, "lost": 370},
        Q: {"consumer": None, "messages": 5, "fill_pct": 50.0, "lag": None, "lag_rate_per_s": None,
            "overflow_in_s": None, "discarded": 0, "dropped": 0, "lost": 0},
    },
}  # fmt: skip


def test_stream_frame_one_row_per_stream():
    frame = stream_frame(STATS)
    assert list(frame.columns) == list(STREAM_COLUMNS)
    assert frame["stream"].tolist() == [Q, TEL]
    tel = frame.set_index("stream").loc[TEL]
    assert (tel["lag"], tel["lag_rate"], tel["lost"], tel["discarded"]) == (800, 120.0, 370, 370)
    assert math.isnan(frame.set_index("stream").loc[Q, "lag"])  # no consumer of ours: no lag
    assert stream_frame({}).empty and lost_total(STATS) == 370


def test_banner_marks_loss_and_a_stream_about_to_overflow():
    banner = loss_banner(STATS)
    assert "370 discarded by CONSTELLATION_TELEMETRY before any worker saw them" in banner
    assert "#cf222e" in banner and "falling behind (+120 msg/s)" in banner
    calm = {"streams": {Q: dict(STATS["streams"][Q])}}
    assert loss_banner(calm) == "" and loss_banner({}) == ""


def test_fabric_health_shows_quarantine_drops(source):
    store = DataStore(source=source)
    view, overview = WorkerStats(data_store=store), Overview(data_store=store)
    store.refresh()
    assert view.loss.object == "" and view.streams.value.empty
    source.counters["streams"] = {
        Q: {**STATS["streams"][Q], "messages": 1, "fill_pct": 100.0, "dropped": 2, "lost": 2},
    }  # three poison messages into a quarantine stream of max_msgs=1
    store.refresh()
    assert "2 records dropped" in view.loss.object
    assert view.streams.value.set_index("stream").loc[Q, "lost"] == 2
    lost_card = overview.cards.object.split(">Lost</div>")[1]
    assert lost_card.startswith(
        '<div style="font-size:22px;font-weight:600;color:#cf222e;line-height:1.3">2<'
    )


def test_quarantined_card_counts_the_streams_records_not_this_runs_counter(source):
    """After a restart the workers' counters start at 0; the records (and the card) remain."""
    store = DataStore(source=source)
    overview = Overview(data_store=store)
    source.counters["telemetry-worker"] = {"handled": 5, "quarantined": 0}  # a fresh run
    source.counters["streams"] = {Q: {**STATS["streams"][Q], "messages": 7, "checks": 1}}
    store.refresh()
    card = overview.cards.object.split(">Quarantined</div>")[1]
    assert card.startswith('<div style="font-size:22px;font-weight:600;color:#cf222e;line-height:1.3">7<')
