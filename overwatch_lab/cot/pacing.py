"""How often the CoT sender may speak: per entity, and for the whole fleet.

:class:`Pacer` answers one question per tick: of the entities with something new to say, which
may send now? An entity may send at most once per ``1 / rate_hz`` seconds; the whole sender at
most ``max_events_per_s`` events per second (a token bucket holding :attr:`Pacer.burst`
events, so that a tick can spend what a tenth of a second earned). When the cap bites, the
entities that have waited longest go first, so none starves.

Pure: times are passed in (monotonic seconds), nothing is read from a clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from overwatch_lab.errors import ConfigError

RATE_HZ = 1.0
"""Events per second per entity, at most, by default."""
MAX_EVENTS_PER_S = 200.0
"""Events per second for the whole fleet, at most, by default."""


class Pacer:
    """Per-entity minimum interval plus a global token bucket (see the module docstring).

    Args:
        rate_hz: events per second per entity, at most (> 0).
        max_events_per_s: events per second for all entities together, at most (> 0).

    Raises:
        ConfigError: a rate that is not > 0 and finite.
    """

    def __init__(self, rate_hz: float, max_events_per_s: float) -> None:
        for name, value in (("rate_hz", rate_hz), ("max_events_per_s", max_events_per_s)):
            if not (0 < value < math.inf):
                raise ConfigError(f"CoT {name} must be > 0 and finite, got {value!r}")
        self.interval_s = 1.0 / rate_hz
        self.max_events_per_s = max_events_per_s
        self.burst = max(1.0, max_events_per_s / 10.0)
        self._tokens = self.burst
        self._refilled_at: float | None = None
        self._last: dict[str, float] = {}  # entity key -> when it last sent
        self.capped = 0  # times an entity was due but the global cap held it back

    def due(self, waiting: Iterable[str], now: float) -> list[str]:
        """The keys of ``waiting`` that may send at ``now``, longest-waiting first.

        The global budget they use is spent now; call :meth:`sent` for each one actually sent
        (one that could not be sent stays due).
        """
        self._refill(now)
        ready = [k for k in waiting if now - self._last.get(k, -math.inf) >= self.interval_s]
        if not ready:
            return []
        ready.sort(key=lambda k: self._last.get(k, -math.inf))
        n = min(len(ready), int(self._tokens))
        self.capped += len(ready) - n
        self._tokens -= n
        return ready[:n]

    def sent(self, key: str, now: float) -> None:
        """Record that ``key`` sent at ``now``."""
        self._last[key] = now

    def last(self, key: str) -> float | None:
        """When ``key`` last sent (monotonic seconds), or None."""
        return self._last.get(key)

    def forget(self, key: str) -> None:
        """Drop what is known of ``key`` (an entity that went away)."""
        self._last.pop(key, None)

    def _refill(self, now: float) -> None:
        if self._refilled_at is not None and now > self._refilled_at:
            self._tokens = min(self.burst, self._tokens + (now - self._refilled_at) * self.max_events_per_s)
        self._refilled_at = now if self._refilled_at is None else max(self._refilled_at, now)
