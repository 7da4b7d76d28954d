"""The stream watch's pure parts: delivery gaps, lag trend, limit drops vs age-outs."""

from __future__ import annotations

import math

import pytest
from nats.aio.msg import Msg

from overwatch_lab.config import DEFAULT_STREAMS
from overwatch_lab.protocol import subjects as s
from overwatch_lab.streamwatch import (
    MAX_GAPS,
    DeliveryGaps,
    LagTrend,
    _epoch,
    classify_removal,
    stream_seq,
)

QUARANTINE = DEFAULT_STREAMS[s.STREAM_QUARANTINE]


def test_a_jump_in_delivered_sequences_is_counted_once_confirmed_gone():
    gaps = DeliveryGaps(seen=10)
    assert gaps.observe([11, 12, 20, 21, 30]) == 0
    assert gaps.seen == 30 and gaps.unconfirmed == 7 + 8
    assert gaps.confirm(first_seq=16) == 3  # 13..15 are gone; 16..19 still in the stream
    assert gaps.unconfirmed == 4 + 8
    assert gaps.confirm(first_seq=31) == 12
    assert gaps.confirm(first_seq=40) == 0 and gaps.unconfirmed == 0  # never twice


def test_a_candidate_delivered_late_is_not_counted():
    gaps = DeliveryGaps(seen=0)
    gaps.observe([1, 10])  # 2..9 skipped: lost in transit, or removed
    gaps.observe([2, 5, 9])  # redelivered after ack_wait: they were in the stream after all
    assert gaps.unconfirmed == 5  # 3, 4, 6, 7, 8
    gaps.observe([5, 1])  # a second redelivery, or one of a seen message: no effect
    assert gaps.confirm(first_seq=100) == 5


def test_trailing_counts_only_when_every_delivery_was_observed():
    gaps = DeliveryGaps()
    gaps.baseline(delivered=50)  # the durable's position when the lab booted
    assert gaps.trailing(first_seq=81, delivered=50) == 30  # 51..80 discarded while the lab was down
    assert gaps.trailing(first_seq=81, delivered=50) == 0  # high-water mark: never twice
    assert gaps.trailing(first_seq=200, delivered=90) == 0  # 81..90 delivered, not yet observed
    gaps.observe(range(81, 91))
    assert gaps.trailing(first_seq=200, delivered=90) == 109  # 91..199 aged out unseen
    gaps.baseline(delivered=0)  # only before anything was observed
    assert gaps.seen == 199


def test_the_first_observation_without_a_baseline_counts_nothing_before_it():
    gaps = DeliveryGaps()
    assert gaps.observe([500, 502]) == 0
    assert gaps.confirm(first_seq=1000) == 1  # 501 only


def test_too_many_candidates_count_the_oldest_at_once():
    gaps = DeliveryGaps(seen=0)
    counted = gaps.observe(range(2, 2 * (MAX_GAPS + 2), 2))  # a gap of one before every even seq
    assert counted == 1  # MAX_GAPS + 1 ranges: the oldest was counted unconfirmed
    assert gaps.unconfirmed == MAX_GAPS


def test_reset_forgets_a_stream_that_started_again():
    gaps = DeliveryGaps(seen=0)
    gaps.observe([1, 5])
    gaps.reset(delivered=0)
    assert (gaps.seen, gaps.unconfirmed) == (0, 0)


def test_lag_trend_is_a_smoothed_growth_rate():
    trend = LagTrend(tau_s=10.0)
    assert trend.update(0.0, 0) is None  # one sample: no rate yet
    assert trend.update(1.0, 1000) == pytest.approx(1000.0)
    rate = trend.update(2.0, 1000)  # flat for a second: the mean decays by exp(-0.1)
    assert rate == pytest.approx(1000.0 * math.exp(-0.1))
    for t in range(3, 60):
        rate = trend.update(float(t), 1000 - 500 * (t - 2))  # catching up at 500 msg/s
    assert rate == pytest.approx(-500.0, rel=0.01)
    assert trend.update(59.0, 0) == rate  # no time passed: unchanged


def test_removals_younger_than_max_age_are_limit_drops():
    now = 1_000_000.0
    young = now - 3600.0
    assert classify_removal(3, young, now, QUARANTINE, 10, 1000) == (3, 0)
    assert classify_removal(3, None, now, QUARANTINE, 10, 1000) == (3, 0)  # arrived since the last pass
    old = now - QUARANTINE.max_age_s - 1
    assert classify_removal(3, old, now, QUARANTINE, 10, 1000) == (0, 3)  # aged out: retention
    full = QUARANTINE.max_msgs
    assert classify_removal(3, old, now, QUARANTINE, full, 1000) == (3, 0)  # at the limit: a drop
    assert classify_removal(0, young, now, QUARANTINE, 10, 1000) == (0, 0)


def test_server_timestamps_with_nanoseconds():
    assert _epoch("1970-01-01T00:00:10.500000001Z") == pytest.approx(10.5)
    assert _epoch("1970-01-01T00:01:00Z") == 60.0
    assert _epoch("0001-01-01T00:00:00Z") is None  # an empty stream
    assert _epoch(None) is None and _epoch("garbage") is None


def test_stream_seq_from_the_ack_subject():
    v1 = Msg(None, subject="x", reply="$JS.ACK.S.d.1.4242.7.1796157157102000000.3")
    assert stream_seq(v1) == 4242 == v1.metadata.sequence.stream
    domain = Msg(None, subject="x", reply="$JS.ACK.hub.ACCHASH.S.d.2.99.8.1796157157102000000.0.tok")
    assert stream_seq(domain) == 99
