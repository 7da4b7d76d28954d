"""The scenario clock: manual stepping, real-time pacing by a rate, pause, lag accounting."""

from __future__ import annotations

import pytest

from overwatch_lab.errors import ScenarioError
from simulators.clock import SimClock


class FakeWall:
    """A wall clock the test moves by hand (pure-logic fake)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_manual_clock_moves_only_on_advance():
    wall = FakeWall()
    c = SimClock(1_700_000_000.0, rate=0.0, wall=wall)
    wall.t += 50
    assert c.due_s() == 0.0 and c.now() == 1_700_000_000.0
    assert c.wall_delay_until(0.1) is None
    c.advance(0.1)
    c.advance(0.2)
    assert c.elapsed_ns == 300_000_000
    assert c.now() == pytest.approx(1_700_000_000.3)
    with pytest.raises(ScenarioError, match="negative"):
        c.advance(-1)


def test_rate_paces_due_time_and_set_rate_reanchors():
    wall = FakeWall()
    c = SimClock(0.0, rate=1.0, wall=wall)
    wall.t += 2.0
    assert c.due_s() == pytest.approx(2.0)
    c.set_rate(10.0)
    wall.t += 1.0
    assert c.due_s() == pytest.approx(12.0)
    c.advance(11.5)
    assert c.wall_delay_until(12.5) == pytest.approx(0.05)
    assert c.wall_delay_until(1.0) == 0.0


def test_pause_freezes_due_time_and_resume_continues():
    wall = FakeWall()
    c = SimClock(0.0, rate=2.0, wall=wall)
    wall.t += 1.0
    c.pause()
    wall.t += 100.0
    assert c.paused and c.due_s() == pytest.approx(2.0)
    assert c.wall_delay_until(5.0) is None
    c.resume()
    wall.t += 1.0
    assert c.due_s() == pytest.approx(4.0)


def test_lag_is_counted_and_forgiven_beyond_the_catch_up_limit():
    wall = FakeWall()
    c = SimClock(0.0, rate=1.0, wall=wall, max_catchup_s=5.0)
    wall.t += 0.5
    assert c.note_lag() == pytest.approx(0.5)
    assert c.behind_count == 0
    wall.t += 20.0
    lag = c.note_lag()
    assert lag == pytest.approx(20.5)
    assert c.behind_count == 1 and c.max_lag_s == pytest.approx(20.5)
    assert c.lag_s() == pytest.approx(5.0)  # the rest was forgiven
    assert c.forgiven_s == pytest.approx(15.5)


def test_strict_clock_raises_when_behind():
    wall = FakeWall()
    c = SimClock(0.0, rate=1.0, wall=wall, strict=True)
    wall.t += 3.0
    with pytest.raises(ScenarioError, match="behind real time"):
        c.note_lag()


def test_negative_rates_are_rejected():
    with pytest.raises(ScenarioError):
        SimClock(0.0, rate=-1.0)
    with pytest.raises(ScenarioError):
        SimClock(0.0).set_rate(-0.5)


@pytest.mark.parametrize("rate", [float("nan"), float("inf")])
def test_non_finite_rates_are_rejected(rate):  # nan passed `rate < 0` and crashed the driver later
    with pytest.raises(ScenarioError, match="finite"):
        SimClock(0.0, rate=rate)
    with pytest.raises(ScenarioError, match="finite"):
        SimClock(0.0).set_rate(rate)
