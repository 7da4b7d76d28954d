"""When a device sends each telemetry message: its rates rounded to whole ticks, phases spread."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


@dataclass(slots=True)
class MessageSchedule:
    """When a device sends each telemetry message: ``slots[tick % period]`` lists the types due."""

    period: int
    slots: list[tuple[str, ...]] = field(default_factory=list)

    @classmethod
    def build(cls, rates_hz: dict[str, float], tick_hz: float, rng: np.random.Generator) -> MessageSchedule:
        """Build the schedule: each type every ``round(tick_hz / rate)`` ticks at a random phase.

        The phase spreads a fleet's messages over the ticks instead of sending them all at once.
        """
        periods: dict[str, int] = {}
        for mtype in sorted(rates_hz):
            rate = rates_hz[mtype]
            if rate > 0:
                periods[mtype] = max(1, round(tick_hz / rate))
        period = math.lcm(*periods.values()) if periods else 1
        slots: list[list[str]] = [[] for _ in range(period)]
        for mtype, p in periods.items():
            phase = int(rng.integers(p))
            for t in range(phase, period, p):
                slots[t].append(mtype)
        return cls(period, [tuple(s) for s in slots])

    def due(self, tick: int) -> tuple[str, ...]:
        """Return the message types due at ``tick``."""
        return self.slots[tick % self.period]
