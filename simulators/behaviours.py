"""Device behaviours: hold, goto, route, orbit, patrol, return to launch, land.

A behaviour is guidance only: each tick it looks at the device's state and returns a
:class:`Guidance` (the course, ground speed and altitude it wants). The device's kind then
applies its own limits (acceleration, climb, turn rate, minimum airspeed) to move toward it,
so one behaviour serves every kind. When a behaviour finishes, :meth:`Behaviour.next` names the
one that follows (goto → hold at the target, rtl → land, land → idle on the ground).

Pure: a behaviour holds only its own progress (route index); no I/O, no randomness.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from simulators import kinematics as k

if TYPE_CHECKING:
    from simulators.devices.base import Device

LAND_SLOW_AGL_M = 10.0  # below this height a hover landing slows to LAND_SLOW_MPS
LAND_SLOW_MPS = 1.0
ARRIVED_M = 0.5  # closer than this to a point a hover kind just stops
RTL_MIN_AGL_M = 30.0  # return-to-launch climbs to at least this height above home


@dataclass(frozen=True, slots=True)
class Guidance:
    """What a behaviour wants this tick.

    Attributes:
        course_deg: desired course over ground.
        speed_mps: desired ground speed.
        alt_msl_m: desired altitude above mean sea level.
    """

    course_deg: float
    speed_mps: float
    alt_msl_m: float


@dataclass(frozen=True, slots=True)
class Waypoint:
    """A 3-D point: latitude/longitude in degrees and altitude above mean sea level in metres."""

    lat: float
    lon: float
    alt_msl_m: float


def _toward(dev: Device, wp: Waypoint, speed: float, *, brake: bool) -> tuple[Guidance, float]:
    """Guidance straight at ``wp``; hover-capable kinds brake so they stop on it. Returns (guidance, distance)."""
    dist, bearing = k.distance_bearing(dev.lat, dev.lon, wp.lat, wp.lon)
    if brake and dev.spec.can_hover:
        speed = min(speed, k.stopping_speed(dist, dev.spec.accel_mps2 * 0.8), dist * 2.0)
        if dist < ARRIVED_M:
            speed = 0.0
    if dist < ARRIVED_M:
        bearing = dev.heading_deg  # on the spot: keep the heading instead of chasing noise
    return Guidance(bearing, speed, wp.alt_msl_m), dist


class Behaviour:
    """Base class: guidance for one tick, a mode name, and what follows when done."""

    name = "behaviour"
    mode = "GUIDED"  # ArduCopter mode name shown in HEARTBEAT.custom_mode

    done = False

    def guide(self, dev: Device) -> Guidance:
        """Return this tick's guidance (and update progress)."""
        raise NotImplementedError

    def next(self, dev: Device) -> Behaviour | None:
        """Return the behaviour that follows once :attr:`done` is set (None: stay)."""
        return None

    @property
    def mission(self) -> tuple[int, int]:
        """Return (current waypoint index, waypoint count) for MISSION_CURRENT; (0, 0) if none."""
        return 0, 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


class Idle(Behaviour):
    """On the ground, motors off or idling: no motion."""

    name = "idle"
    mode = "STABILIZE"

    def guide(self, dev: Device) -> Guidance:
        return Guidance(dev.heading_deg, 0.0, dev.ground_alt_msl_m)


class Hold(Behaviour):
    """Hold a point: hover-capable kinds stop on it, fixed wings circle it at their loiter radius."""

    name = "hold"
    mode = "LOITER"

    def __init__(self, point: Waypoint) -> None:
        self.point = point

    def guide(self, dev: Device) -> Guidance:
        if not dev.spec.can_hover and dev.airborne:
            radius = dev.spec.loiter_radius_m
            course = k.orbit_course(dev.lat, dev.lon, self.point.lat, self.point.lon, radius, True)
            return Guidance(course, dev.cruise_speed_mps, self.point.alt_msl_m)
        return _toward(dev, self.point, dev.cruise_speed_mps, brake=True)[0]

    def __repr__(self) -> str:
        return f"<Hold {self.point.lat:.6f},{self.point.lon:.6f} {self.point.alt_msl_m:.0f}m>"


class Goto(Behaviour):
    """Fly to a waypoint, then hold there."""

    name = "goto"
    mode = "GUIDED"

    def __init__(self, target: Waypoint, speed_mps: float | None = None) -> None:
        self.target = target
        self.speed_mps = speed_mps

    def guide(self, dev: Device) -> Guidance:
        speed = self.speed_mps if self.speed_mps is not None else dev.cruise_speed_mps
        g, dist = _toward(dev, self.target, speed, brake=True)
        alt_ok = abs(dev.alt_msl_m - self.target.alt_msl_m) < max(2.0, dev.spec.max_climb_mps)
        if dist <= dev.acceptance_radius_m() and (alt_ok or not dev.spec.can_hover):
            self.done = True
        return g

    def next(self, dev: Device) -> Behaviour:
        return Hold(self.target)

    def __repr__(self) -> str:
        return f"<Goto {self.target.lat:.6f},{self.target.lon:.6f} {self.target.alt_msl_m:.0f}m>"


class Route(Behaviour):
    """Follow waypoints in order; loop forever or hold at the last one."""

    name = "route"
    mode = "AUTO"

    def __init__(
        self, waypoints: list[Waypoint], *, loop: bool = False, speed_mps: float | None = None
    ) -> None:
        if not waypoints:
            raise ValueError("a route needs at least one waypoint")
        self.waypoints = list(waypoints)
        self.loop = loop
        self.speed_mps = speed_mps
        self.index = 0
        self.laps = 0

    def guide(self, dev: Device) -> Guidance:
        speed = self.speed_mps if self.speed_mps is not None else dev.cruise_speed_mps
        wp = self.waypoints[self.index]
        last = self.index == len(self.waypoints) - 1 and not self.loop
        g, dist = _toward(dev, wp, speed, brake=last)
        if dist <= dev.acceptance_radius_m():
            if last:
                self.done = True
            else:
                self.index += 1
                if self.index == len(self.waypoints):
                    self.index = 0
                    self.laps += 1
        return g

    def next(self, dev: Device) -> Behaviour:
        return Hold(self.waypoints[-1])

    @property
    def mission(self) -> tuple[int, int]:
        return self.index, len(self.waypoints)

    def __repr__(self) -> str:
        return f"<Route {self.index}/{len(self.waypoints)}{' loop' if self.loop else ''}>"


class Patrol(Route):
    """Sweep a lat/lon box in a lawnmower pattern, forever."""

    name = "patrol"

    def __init__(
        self,
        south: float,
        west: float,
        north: float,
        east: float,
        *,
        alt_msl_m: float,
        spacing_m: float,
        along_ns: bool = True,
        speed_mps: float | None = None,
    ) -> None:
        points = k.lawnmower(south, west, north, east, spacing_m, along_ns=along_ns)
        super().__init__(
            [Waypoint(lat, lon, alt_msl_m) for lat, lon in points], loop=True, speed_mps=speed_mps
        )
        self.box = (south, west, north, east)


class Orbit(Behaviour):
    """Circle a point at a radius (clamped to what the kind can turn), forever."""

    name = "orbit"
    mode = "CIRCLE"

    def __init__(
        self, center: Waypoint, radius_m: float, *, clockwise: bool = True, speed_mps: float | None = None
    ) -> None:
        self.center = center
        self.radius_m = radius_m
        self.clockwise = clockwise
        self.speed_mps = speed_mps

    def guide(self, dev: Device) -> Guidance:
        speed = self.speed_mps if self.speed_mps is not None else dev.cruise_speed_mps
        radius = max(self.radius_m, 1.2 * k.turn_radius(speed, dev.spec.max_turn_rate_dps), 1.0)
        course = k.orbit_course(dev.lat, dev.lon, self.center.lat, self.center.lon, radius, self.clockwise)
        return Guidance(course, speed, self.center.alt_msl_m)


class Land(Behaviour):
    """Touch down: hover kinds fly to the point (default: here) then descend, fixed wings glide ahead."""

    name = "land"
    mode = "LAND"

    def __init__(self, point: Waypoint | None = None) -> None:
        self.point = point

    def guide(self, dev: Device) -> Guidance:
        ground = dev.ground_alt_msl_m
        if not dev.airborne:
            self.done = True
            return Guidance(dev.heading_deg, 0.0, ground)
        if not dev.spec.can_hover:
            return Guidance(dev.heading_deg, dev.spec.min_speed_mps, ground)
        if self.point is None:
            self.point = Waypoint(dev.lat, dev.lon, ground)
        g, dist = _toward(dev, self.point, dev.cruise_speed_mps, brake=True)
        if dist > dev.acceptance_radius_m():  # fly to the landing point first, then descend
            return Guidance(g.course_deg, g.speed_mps, dev.alt_msl_m)
        return Guidance(g.course_deg, g.speed_mps, ground)

    def next(self, dev: Device) -> Behaviour:
        return Idle()


class ReturnToLaunch(Behaviour):
    """Fly home at a safe height, then land (hover kinds) or circle home (fixed wings)."""

    name = "rtl"
    mode = "RTL"

    def __init__(self) -> None:
        self._alt: float | None = None

    def guide(self, dev: Device) -> Guidance:
        home = dev.home
        if self._alt is None:
            self._alt = (
                max(dev.alt_msl_m, home.alt_msl_m + RTL_MIN_AGL_M)
                if dev.spec.airborne_kind
                else home.alt_msl_m
            )
        g, dist = _toward(dev, Waypoint(home.lat, home.lon, self._alt), dev.cruise_speed_mps, brake=True)
        if dist <= dev.acceptance_radius_m():
            self.done = True
        return g

    def next(self, dev: Device) -> Behaviour:
        home = dev.home
        if not dev.spec.airborne_kind:
            return Hold(home)
        if dev.spec.can_hover:
            return Land(Waypoint(home.lat, home.lon, home.alt_msl_m))
        return Hold(Waypoint(home.lat, home.lon, self._alt if self._alt is not None else dev.alt_msl_m))
