"""Holding: what a consumer loop does while an infrastructure fault keeps it from settling messages.

A message whose handling failed because of the lab's own infrastructure (the database is full,
read-only, locked or unreachable; the quarantine stream cannot be written) is not the message's
fault, so the loop neither acks, NAKs nor quarantines it: it keeps it, tells the server it is
still working on it, waits (:class:`Backoff`) and handles it again, until the fault clears. This
module holds the two small pieces of that: the retry delay and the alarm (:class:`HoldAlarm`:
the counters in the worker's stats and the log lines an operator sees).
"""

from __future__ import annotations

import logging
import random
import time
from typing import Protocol

log = logging.getLogger(__name__)

_MAX_EXPONENT = 30  # 2**30 · initial is far beyond any cap; keeps the float finite


class Backoff:
    """Bounded exponential backoff with jitter: ``initial·2ⁿ`` capped at ``cap``, times [0.5, 1).

    Args:
        initial_s: the first delay (before jitter).
        cap_s: the largest delay (before jitter).
        rng: the source of jitter (a fresh ``random.Random`` by default).
    """

    def __init__(self, initial_s: float, cap_s: float, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.cap_s = cap_s
        self._rng = rng or random.Random()
        self._n = 0

    def next(self) -> float:
        """Return the next delay in seconds and advance."""
        base = min(self.cap_s, self.initial_s * 2.0 ** min(self._n, _MAX_EXPONENT))
        self._n += 1
        return base * (0.5 + 0.5 * self._rng.random())

    def reset(self) -> None:
        """Start again from ``initial_s`` (after the fault cleared)."""
        self._n = 0


class HoldCounters(Protocol):
    """The fields of a worker's stats a hold keeps (``workers.base.WorkerStats`` has them)."""

    holding: bool
    hold_reason: str | None
    hold_since: float | None
    holds: int
    held: int
    hold_attempts: int
    last_hold_s: float | None


class HoldAlarm:
    """The visible side of a hold: stats fields, a warning when it starts and while it lasts,
    and a warning with its duration when it ends.

    Args:
        worker: the worker's name, for log lines.
        stats: the worker's stats (:class:`HoldCounters`: the fields this keeps).
        reminder_s: how often a lasting hold is logged again.
    """

    def __init__(self, worker: str, stats: HoldCounters, reminder_s: float) -> None:
        self.worker = worker
        self.stats = stats
        self.reminder_s = reminder_s
        self._started = 0.0  # monotonic
        self._next_reminder = 0.0

    def update(self, held: int, reason: str | None) -> None:
        """Record that ``held`` messages are held now (0: none), for ``reason``."""
        st = self.stats
        now = time.monotonic()
        if held and not st.holding:
            self._started = now
            self._next_reminder = now + self.reminder_s
            st.holding, st.hold_since, st.hold_attempts = True, time.time(), 0
            st.holds += 1
            st.held, st.hold_reason = held, reason
            log.warning(
                "%s HOLDING %d messages (not acked, not quarantined; retried until it clears): %s",
                self.worker,
                held,
                reason,
            )
        elif held:
            st.held = held
            st.hold_reason = reason or st.hold_reason
            if now >= self._next_reminder:
                self._next_reminder = now + self.reminder_s
                log.warning(
                    "%s still holding %d messages after %.0f s (%d attempts): %s",
                    self.worker,
                    held,
                    now - self._started,
                    st.hold_attempts,
                    st.hold_reason,
                )
        elif st.holding:
            st.last_hold_s = now - self._started
            st.holding, st.held, st.hold_since = False, 0, None
            log.warning(  # as loud as its start: `up` shows warnings only
                "%s resumed after holding for %.1f s (%d attempts; last reason: %s)",
                self.worker,
                st.last_hold_s,
                st.hold_attempts,
                st.hold_reason,
            )

    def attempt(self) -> None:
        """Count one more attempt at the held messages."""
        self.stats.hold_attempts += 1
