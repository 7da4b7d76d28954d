"""Telemetry partitions: dealing durables to processes, summing and carrying their counters."""

from __future__ import annotations

import pytest

from overwatch_lab.workers.base import WorkerStats
from overwatch_lab.workers.partitioned import aggregate, carry_over, deal


def test_deal_round_robin_drops_empty_hands():
    assert deal(["p0", "p1", "p2", "p3"], 2) == [["p0", "p2"], ["p1", "p3"]]
    assert deal(["p0"], 3) == [["p0"]]
    with pytest.raises(ValueError):
        deal(["p0"], 0)


def test_a_restarted_worker_process_carries_its_counters_on():
    before = {**WorkerStats(acked=100, handled=100, batches=7, peak_batch_size=50, lag=9, held=3,
                            holding=True, last_error="boom").snapshot(), "db_s": 1.5}  # fmt: skip
    now = {**WorkerStats(acked=5, handled=6, batches=1, peak_batch_size=20, lag=2).snapshot(), "db_s": 0.25}
    out = carry_over(before, now)
    assert (out["acked"], out["handled"], out["batches"], out["db_s"]) == (105, 106, 8, 1.75)
    assert out["peak_batch_size"] == 50  # the largest ever
    assert (out["lag"], out["held"], out["holding"]) == (2, 0, False)  # the present is the new child's
    assert out["last_error"] == "boom"  # kept until the new child has one of its own
    assert carry_over({}, now) == now
    assert aggregate([out, now])["acked"] == 110
