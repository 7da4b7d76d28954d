"""The parts of a scenario: its area, organisations, routes, fleets and timeline entries.

Plain frozen dataclasses, assembled into a :class:`~simulators.scenario.Scenario`; the file
layout they are parsed from is described in :mod:`simulators.scenario`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from simulators.faults import Fault


@dataclass(frozen=True, slots=True)
class Area:
    """The operating area: a lat/lon box and the ground height in it.

    Attributes:
        south, west, north, east: the box in degrees.
        ground_alt_m: ground height above mean sea level in metres.
    """

    south: float
    west: float
    north: float
    east: float
    ground_alt_m: float = 0.0

    @property
    def center(self) -> tuple[float, float]:
        """The box centre (lat, lon)."""
        return (self.south + self.north) / 2.0, (self.west + self.east) / 2.0

    @property
    def box(self) -> tuple[float, float, float, float]:
        """(south, west, north, east)."""
        return self.south, self.west, self.north, self.east


@dataclass(frozen=True, slots=True)
class OrgSpec:
    """One organisation the scenario registers."""

    org_id: str
    name: str
    org_type: str = "civilian"


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A named route: waypoints (lat, lon, alt_m above ground or None) and whether it loops."""

    name: str
    waypoints: tuple[tuple[float, float, float | None], ...]
    loop: bool = False


@dataclass(frozen=True, slots=True)
class BehaviourSpec:
    """A fleet's initial behaviour: its type and parameters (see :mod:`simulators.scenario`)."""

    type: str = "hold"
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """A group of identical devices placed in a formation.

    Attributes:
        name: fleet name (unique; usable as a fault or command target).
        org: org_id of one of the scenario's orgs.
        kind: a device kind (``simulators.devices.KINDS``).
        count: number of devices (>= 1).
        id_prefix: entity ids are ``{id_prefix}-{index:03d}``.
        at: formation anchor (lat, lon), default the area centre.
        formation: grid | line | column | circle | random.
        spacing_m: distance between neighbours.
        heading_deg: initial heading (and formation orientation).
        alt_m: start height above ground (0 = on the ground and disarmed, unless a behaviour
            other than idle is given, which arms it for take-off).
        battery_pct: (low, high) start charge; each device draws from it.
        speed_mps: cruise speed (None: the kind's).
        rates: telemetry rates for this fleet (merged over the scenario's).
        device_rates: per-entity overrides of the rates.
        behaviour: the initial behaviour.
        ground_alt_m: ground height here (None: the area's; a USV defaults to 0).
    """

    name: str
    org: str
    kind: str
    count: int = 1
    id_prefix: str = ""
    at: tuple[float, float] | None = None
    formation: str = "grid"
    spacing_m: float = 20.0
    heading_deg: float = 0.0
    alt_m: float | None = None
    battery_pct: tuple[float, float] = (90.0, 100.0)
    speed_mps: float | None = None
    rates: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    device_rates: Mapping[str, Mapping[str, float]] = field(default_factory=lambda: MappingProxyType({}))
    behaviour: BehaviourSpec = field(default_factory=BehaviourSpec)
    ground_alt_m: float | None = None

    def entity_ids(self) -> list[str]:
        """The entity ids of this fleet's devices, in order."""
        prefix = self.id_prefix or self.name
        width = max(3, len(str(self.count - 1)))
        return [f"{prefix}-{i:0{width}d}" for i in range(self.count)]


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """A timeline event: a fault, or a command sent to the targets at ``at_s``."""

    at_s: float
    targets: tuple[str, ...]
    fault: Fault | None = None
    command: Mapping[str, Any] | None = None
