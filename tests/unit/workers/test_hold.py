"""Backoff bounds and jitter; the hold alarm's stats fields and log lines."""

from __future__ import annotations

import logging
import random

from overwatch_lab.workers.base import WorkerStats
from overwatch_lab.workers.hold import Backoff, HoldAlarm


def test_backoff_doubles_to_its_cap_with_jitter_and_resets():
    b = Backoff(0.1, 2.0, rng=random.Random(7))
    delays = [b.next() for _ in range(12)]
    bases = [min(2.0, 0.1 * 2**n) for n in range(12)]
    for delay, base in zip(delays, bases, strict=True):
        assert base / 2 <= delay < base
    assert max(delays) < 2.0 and delays[-1] >= 1.0  # capped, and it got there
    assert len(set(delays[-5:])) == 5  # jittered: two workers do not retry in lockstep
    b.reset()
    assert 0.05 <= b.next() < 0.1


def test_a_long_hold_never_overflows():
    b = Backoff(0.1, 5.0)
    for _ in range(2000):
        assert b.next() < 5.0


def test_alarm_warns_at_start_reminds_while_it_lasts_and_reports_the_duration(caplog):
    st = WorkerStats()
    alarm = HoldAlarm("telemetry-worker", st, reminder_s=0.0)  # remind on every update
    with caplog.at_level(logging.INFO, logger="overwatch_lab.workers.hold"):
        alarm.update(10, "database or disk is full")
        assert (st.holding, st.held, st.holds, st.hold_reason) == (True, 10, 1, "database or disk is full")
        assert st.hold_since is not None
        alarm.attempt()
        alarm.update(12, None)  # the prefetch joined; the reason is kept
        assert (st.held, st.hold_reason, st.hold_attempts) == (12, "database or disk is full", 1)
        alarm.update(0, None)
    assert (st.holding, st.held, st.hold_since, st.holds) == (False, 0, None, 1)
    assert st.last_hold_s is not None and st.last_hold_s >= 0
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert levels[0][0] == logging.WARNING and "HOLDING 10" in levels[0][1] and "full" in levels[0][1]
    assert levels[1][0] == logging.WARNING and "still holding 12" in levels[1][1]
    # WARNING like the start: `up` logs warnings only, and an operator who saw the hold must see it end
    assert levels[-1][0] == logging.WARNING and "resumed after holding" in levels[-1][1]
    alarm.update(3, "database is locked")  # a second episode
    assert st.holds == 2 and st.hold_attempts == 0 and st.hold_reason == "database is locked"
