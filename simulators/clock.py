"""The scenario clock: simulated time that devices read, paced against the wall clock by a rate.

A :class:`SimClock` has two faces:

* ``now()`` / ``elapsed_s`` is *simulated* time. It only moves when the driver calls
  :meth:`SimClock.advance`, in whole ticks, so every device sees exactly the same times on
  every run, whatever the machine's speed. Devices read this and never ``time.time()``.
* ``due_s()`` is where the wall clock says the simulation should be: ``rate`` simulated
  seconds per wall second (SimPy's ``RealtimeEnvironment.factor``, trio's ``MockClock.rate``).
  ``rate == 0`` means manual: ``due_s()`` never moves and a test calls ``advance()`` itself.
  ``rate == 1`` is real time, ``rate > 1`` fast-forward.

The driver (``simulators.runner``) steps while ``elapsed_s + tick <= due_s()``. If it cannot
keep up, the gap is *lag*: :meth:`SimClock.note_lag` counts and logs it; a clock made with
``strict=True`` raises instead. A lag larger than ``max_catchup_s`` is forgiven (the pacing
anchor moves forward) so a suspended laptop does not cause a minutes-long burst afterwards.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from overwatch_lab.errors import ScenarioError

log = logging.getLogger(__name__)

NS_PER_S = 1_000_000_000
DEFAULT_MAX_CATCHUP_S = 5.0  # lag beyond this is forgiven (re-anchored), not caught up
LAG_WARN_S = 1.0  # lag above this counts as "behind" and is logged (rate-limited)


class SimClock:
    """Simulated time for one scenario run, with real-time pacing by a rate factor.

    Args:
        start_epoch_s: Unix time of simulated t = 0 (the scenario's fixed start).
        rate: Simulated seconds per wall second; 0 = manual stepping.
        strict: Raise :class:`~overwatch_lab.errors.ScenarioError` when falling behind by more
            than ``LAG_WARN_S`` instead of logging it.
        max_catchup_s: Lag beyond this is forgiven instead of caught up in a burst.
        wall: Monotonic wall clock in seconds (injectable for tests).
    """

    def __init__(
        self,
        start_epoch_s: float,
        *,
        rate: float = 0.0,
        strict: bool = False,
        max_catchup_s: float = DEFAULT_MAX_CATCHUP_S,
        wall: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= rate < math.inf:  # also refuses nan
            raise ScenarioError(f"clock rate must be >= 0 and finite, got {rate}")
        self.start_epoch_s = float(start_epoch_s)
        self.strict = strict
        self.max_catchup_s = max_catchup_s
        self._wall = wall
        self._elapsed_ns = 0
        self._rate = float(rate)
        self._paused = False
        self._due_base_s = 0.0
        self._anchor = wall()
        self.behind_count = 0
        self.max_lag_s = 0.0
        self.forgiven_s = 0.0
        self._last_warn = -1e9

    def __repr__(self) -> str:
        return f"<SimClock t={self.elapsed_s:.3f}s rate={self._rate}{' paused' if self._paused else ''}>"

    # ------------------------------------------------------------------ simulated time
    @property
    def elapsed_ns(self) -> int:
        """Simulated nanoseconds since t = 0 (an exact integer)."""
        return self._elapsed_ns

    @property
    def elapsed_s(self) -> float:
        """Simulated seconds since t = 0."""
        return self._elapsed_ns / NS_PER_S

    def now(self) -> float:
        """Return the simulated time as Unix epoch seconds (what devices stamp messages with)."""
        return self.start_epoch_s + self._elapsed_ns / NS_PER_S

    def advance(self, seconds: float) -> float:
        """Move simulated time forward by ``seconds`` (rounded to whole nanoseconds).

        Returns:
            The new elapsed simulated seconds.

        Raises:
            ScenarioError: ``seconds`` is negative.
        """
        if seconds < 0:
            raise ScenarioError(f"cannot advance the clock by a negative time ({seconds} s)")
        self._elapsed_ns += round(seconds * NS_PER_S)
        return self.elapsed_s

    # ------------------------------------------------------------------ pacing
    @property
    def rate(self) -> float:
        """Simulated seconds per wall second (0 = manual)."""
        return self._rate

    @property
    def paused(self) -> bool:
        """True while pacing is paused (``due_s`` frozen)."""
        return self._paused

    def _effective_rate(self) -> float:
        return 0.0 if self._paused else self._rate

    def due_s(self) -> float:
        """Return the elapsed simulated time the wall clock says the simulation should have reached."""
        return self._due_base_s + (self._wall() - self._anchor) * self._effective_rate()

    def _reanchor(self) -> None:
        self._due_base_s = self.due_s()
        self._anchor = self._wall()

    def set_rate(self, rate: float) -> None:
        """Change the pacing rate from now on (0 = manual).

        Raises:
            ScenarioError: a negative or non-finite rate.
        """
        if not 0 <= rate < math.inf:  # also refuses nan
            raise ScenarioError(f"clock rate must be >= 0 and finite, got {rate}")
        self._reanchor()
        self._rate = float(rate)

    def pause(self) -> None:
        """Freeze ``due_s`` (the driver stops stepping); the rate is kept for :meth:`resume`."""
        if not self._paused:
            self._reanchor()
            self._paused = True

    def resume(self) -> None:
        """Let ``due_s`` move again at the kept rate."""
        if self._paused:
            self._reanchor()
            self._paused = False

    def sync_to_now(self) -> None:
        """Make ``due_s`` equal to the simulated time (start pacing from here)."""
        self._due_base_s = self.elapsed_s
        self._anchor = self._wall()

    def wall_delay_until(self, elapsed_s: float) -> float | None:
        """Return wall seconds until ``due_s`` reaches ``elapsed_s`` (0 if already), None if it never will."""
        gap = elapsed_s - self.due_s()
        if gap <= 0:
            return 0.0
        rate = self._effective_rate()
        if rate <= 0:
            return None
        return gap / rate

    def lag_s(self) -> float:
        """Return how far simulated time is behind where the wall clock says it should be (>= 0)."""
        return max(0.0, self.due_s() - self.elapsed_s)

    def note_lag(self) -> float:
        """Record the current lag: count and log it when behind, forgive it beyond ``max_catchup_s``.

        Returns:
            The lag in simulated seconds (before any forgiveness).

        Raises:
            ScenarioError: in strict mode, when the lag exceeds ``LAG_WARN_S``.
        """
        lag = self.lag_s()
        self.max_lag_s = max(self.max_lag_s, lag)
        if lag > LAG_WARN_S:
            self.behind_count += 1
            if self.strict:
                raise ScenarioError(f"simulation fell {lag:.2f} s behind real time at rate {self._rate}")
            now = self._wall()
            if now - self._last_warn > 10.0:
                self._last_warn = now
                log.warning(
                    "simulation is %.2f s behind (rate %.2f): the fleet is too large for it", lag, self._rate
                )
        if lag > self.max_catchup_s:
            forgive = lag - self.max_catchup_s
            self.forgiven_s += forgive
            self._due_base_s -= forgive
        return lag
