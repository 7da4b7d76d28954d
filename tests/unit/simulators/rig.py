"""The simulator unit tests' rig: one device on a manual clock, stepped by hand.

The ``rig`` fixture (in ``conftest.py``) hands out :class:`Rig`; tests import the constants
(start time, position, tick) from here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from simulators.clock import SimClock
from simulators.devices import Device, make_device

START = 1_767_268_800.0
LAT0, LON0 = 47.6, -122.33
TICK_S = 0.1


class Rig:
    """One device and its manual clock; ``run(seconds)`` steps both at 10 Hz."""

    def __init__(self, kind: str, **kwargs: Any) -> None:
        self.clock = SimClock(START, rate=0.0)
        kwargs.setdefault("lat", LAT0)
        kwargs.setdefault("lon", LON0)
        kwargs.setdefault("ground_alt_msl_m", 100.0)
        self.dev: Device = make_device(
            kind,
            entity_id=kwargs.pop("entity_id", f"{kind}-t"),
            org_id="test-org",
            clock=self.clock,
            rng=np.random.default_rng(kwargs.pop("seed", 1)),
            **kwargs,
        )

    def tick(self) -> None:
        self.clock.advance(TICK_S)
        self.dev.step(TICK_S)

    def run(self, seconds: float, each: Callable[[Device], None] | None = None) -> None:
        for _ in range(round(seconds / TICK_S)):
            self.tick()
            if each is not None:
                each(self.dev)

    def run_until(
        self, cond: Callable[[Device], bool], limit_s: float, each: Callable[[Device], None] | None = None
    ) -> float:
        """Step until ``cond`` holds; return the simulated seconds it took (fails past ``limit_s``)."""
        for n in range(1, round(limit_s / TICK_S) + 1):
            self.tick()
            if each is not None:
                each(self.dev)
            if cond(self.dev):
                return n * TICK_S
        pytest.fail(f"condition not met within {limit_s} s: {self.dev!r}")
