"""Per-entity and global rate limits of the CoT sender (overwatch_lab/cot/pacing.py), on a fake clock."""

from __future__ import annotations

import pytest

from overwatch_lab.cot.pacing import Pacer
from overwatch_lab.errors import ConfigError


def send_all(p: Pacer, keys, now):
    chosen = p.due(keys, now)
    for k in chosen:
        p.sent(k, now)
    return chosen


def test_one_event_per_entity_per_interval():
    p = Pacer(rate_hz=2.0, max_events_per_s=1000)
    assert send_all(p, ["a"], 0.0) == ["a"]
    assert send_all(p, ["a"], 0.49) == []
    assert send_all(p, ["a"], 0.5) == ["a"]


def test_the_global_cap_bounds_every_window_and_the_longest_waiting_go_first():
    p = Pacer(rate_hz=100.0, max_events_per_s=10.0)
    keys = [f"e{i}" for i in range(50)]
    sent_at: list[tuple[float, str]] = []
    t = 0.0
    while t < 10.0:
        sent_at += [(t, k) for k in send_all(p, keys, t)]
        t = round(t + 0.01, 2)
    for start in (0.0, 2.5, 5.0, 7.33):  # any 1 s window: at most rate + burst
        assert sum(1 for at, _ in sent_at if start <= at < start + 1.0) <= 10 + p.burst
    assert len(sent_at) >= 95  # and the budget is used
    counts = {k: sum(1 for _, kk in sent_at if kk == k) for k in keys}
    assert max(counts.values()) - min(counts.values()) <= 1  # nobody starves
    assert p.capped > 0


def test_an_entity_not_sent_stays_due_and_keeps_its_place():
    p = Pacer(rate_hz=1.0, max_events_per_s=1000)
    assert p.due(["a"], 0.0) == ["a"]  # not marked sent: the transport was down
    assert p.due(["a"], 0.01) == ["a"]
    assert p.last("a") is None


@pytest.mark.parametrize(("rate", "cap"), [(0, 1), (-1, 1), (float("nan"), 1), (1, 0), (1, float("inf"))])
def test_rates_must_be_positive_and_finite(rate, cap):
    with pytest.raises(ConfigError, match="must be > 0 and finite"):
        Pacer(rate, cap)
