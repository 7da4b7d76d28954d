"""What a load test runs: ramp steps or one hold, and the thresholds that judge them."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from overwatch_lab.errors import ConfigError

MIN_DEVICES = 39  # the load fleet's mix (20 fleets) scales down to this many devices at the least
DEVICES_PER_SIM_PROCESS = 500  # default simulator processes per step: ceil(devices / this)
MESSAGES_PER_DEVICE_S = 20.5  # load fleet, default MAVLink rates (simulators.fleets.load_1000)


@dataclass(frozen=True)
class LoadPlan:
    """The steps of a load test and how each is judged.

    Args:
        mode: ``ramp`` (steps of growing load until one is not held) or ``hold`` (one load).
        devices: device counts, one step each (a hold has one).
        rate_factors: multipliers of the MAVLink rates; each device count is run at each factor.
        step_s: how long each step holds its load (s; a hold's duration).
        max_p99_ms: publish → KV p99 above this means the step was not held.
        sample_entities: entities whose KV writes and history rows are timed (evenly spaced).
        sim_processes: simulator processes per step (None: ceil(devices / 500)).
        drain_timeout_s: after a step, how long to wait for the consumer lag to reach 0.
        stop_on_failure: a ramp stops after the first step not held.
        register_timeout_s: how long simulators wait for the lab to register their devices.
        warmup_s: latency percentiles leave out messages sent in a step's first
            ``min(warmup_s, step_s / 4)`` seconds (new processes, a new fleet registering); the
            step's ``*_latency_all_ms`` keep them.
        workers: telemetry worker processes of a lab booted for the test (``LabConfig.workers``;
            None: its default; 0: in the lab's own process). Ignored when loading a running lab.
    """

    mode: Literal["ramp", "hold"] = "ramp"
    devices: tuple[int, ...] = (100, 250, 500, 750, 1000)
    rate_factors: tuple[float, ...] = (1.0,)
    step_s: float = 20.0
    max_p99_ms: float = 1000.0
    sample_entities: int = 50
    sim_processes: int | None = None
    drain_timeout_s: float = 60.0
    stop_on_failure: bool = True
    register_timeout_s: float = 60.0
    warmup_s: float = 2.0
    workers: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in ("ramp", "hold"):
            raise ConfigError(f"mode must be 'ramp' or 'hold', got {self.mode!r}")
        if not self.devices:
            raise ConfigError("a load test needs at least one device count")
        if self.mode == "hold" and len(self.devices) * len(self.rate_factors) != 1:
            raise ConfigError("a hold runs one device count at one rate factor")
        for d in self.devices:
            if d < MIN_DEVICES:
                raise ConfigError(f"device counts must be >= {MIN_DEVICES} (the load fleet's mix), got {d}")
        for f in self.rate_factors:
            if not 0 < f <= 10 or not math.isfinite(f):
                raise ConfigError(f"rate factors must be in (0, 10], got {f}")
        if not 0 < self.step_s < math.inf:
            raise ConfigError(f"step time must be > 0 and finite, got {self.step_s}")
        if not 0 < self.max_p99_ms < math.inf:
            raise ConfigError(f"max_p99_ms must be > 0, got {self.max_p99_ms}")
        if not 0 <= self.warmup_s < math.inf:
            raise ConfigError(f"warmup_s must be >= 0 and finite, got {self.warmup_s}")
        if self.sample_entities < 1:
            raise ConfigError(f"sample_entities must be >= 1, got {self.sample_entities}")
        if self.sim_processes is not None and self.sim_processes < 1:
            raise ConfigError(f"sim_processes must be >= 1, got {self.sim_processes}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")

    @classmethod
    def ramp(cls, devices: tuple[int, ...] | list[int], step_s: float = 20.0, **kw: Any) -> LoadPlan:
        """Steps of ``devices`` counts, each held ``step_s`` seconds, until one is not held."""
        return cls(mode="ramp", devices=tuple(devices), step_s=step_s, **kw)

    @classmethod
    def hold(cls, devices: int, duration_s: float, **kw: Any) -> LoadPlan:
        """One load of ``devices`` devices held for ``duration_s`` seconds."""
        return cls(mode="hold", devices=(devices,), step_s=duration_s, **kw)

    @property
    def effective_warmup_s(self) -> float:
        """The warm-up left out of each step's latency percentiles (s)."""
        return min(self.warmup_s, self.step_s / 4)

    def steps(self) -> list[tuple[int, float]]:
        """(devices, rate factor) of every step, in order."""
        return [(d, f) for d in self.devices for f in self.rate_factors]

    def processes_for(self, devices: int) -> int:
        """Simulator processes for a step of ``devices`` devices."""
        n = self.sim_processes or math.ceil(devices / DEVICES_PER_SIM_PROCESS)
        return max(1, min(n, devices))

    def expected_messages(self) -> int:
        """Telemetry messages all steps offer at nominal rates."""
        return round(sum(d * f * MESSAGES_PER_DEVICE_S * self.step_s for d, f in self.steps()))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for the JSON result)."""
        return asdict(self)
