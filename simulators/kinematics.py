"""Pure geometry and motion helpers for the device models (no state, no I/O, no randomness).

Conventions: latitude/longitude in degrees (WGS-84, treated locally as a flat plane, which is
accurate to well under a metre over the few kilometres a scenario spans), headings and bearings
in degrees clockwise from true north in [0, 360), distances in metres, speeds in m/s, times in
seconds. North-east-down (NED) velocity components follow MAVLink.
"""

from __future__ import annotations

import math

EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius
G_MPS2 = 9.80665  # standard gravity
_DEG_PER_M_LAT = 180.0 / (math.pi * EARTH_RADIUS_M)


def wrap_deg(angle: float) -> float:
    """Return ``angle`` wrapped into [0, 360)."""
    a = angle % 360.0
    return 0.0 if a >= 360.0 else a


def angle_diff(target: float, current: float) -> float:
    """Return the signed smallest rotation from ``current`` to ``target`` in [-180, 180) degrees."""
    return (target - current + 180.0) % 360.0 - 180.0


def wrap_pi(angle_rad: float) -> float:
    """Return ``angle_rad`` wrapped into [-pi, pi)."""
    return (angle_rad + math.pi) % (2.0 * math.pi) - math.pi


def offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    """Return the point ``north_m``/``east_m`` metres away from (lat, lon)."""
    new_lat = lat + north_m * _DEG_PER_M_LAT
    new_lon = lon + east_m * _DEG_PER_M_LAT / math.cos(math.radians(lat))
    return new_lat, new_lon


def local_ne(lat0: float, lon0: float, lat: float, lon: float) -> tuple[float, float]:
    """Return (north_m, east_m) of (lat, lon) relative to (lat0, lon0)."""
    north = (lat - lat0) / _DEG_PER_M_LAT
    east = (lon - lon0) / _DEG_PER_M_LAT * math.cos(math.radians(lat0))
    return north, east


def distance_bearing(lat1: float, lon1: float, lat2: float, lon2: float) -> tuple[float, float]:
    """Return (distance_m, bearing_deg) from point 1 to point 2 (bearing 0 when they coincide)."""
    north, east = local_ne(lat1, lon1, lat2, lon2)
    dist = math.hypot(north, east)
    if dist == 0.0:
        return 0.0, 0.0
    return dist, wrap_deg(math.degrees(math.atan2(east, north)))


def move(lat: float, lon: float, heading_deg: float, distance_m: float) -> tuple[float, float]:
    """Return the point ``distance_m`` metres from (lat, lon) along ``heading_deg``."""
    h = math.radians(heading_deg)
    return offset(lat, lon, distance_m * math.cos(h), distance_m * math.sin(h))


def turn_toward(heading_deg: float, target_deg: float, max_step_deg: float) -> float:
    """Rotate ``heading_deg`` toward ``target_deg`` by at most ``max_step_deg`` (shortest way)."""
    diff = angle_diff(target_deg, heading_deg)
    if abs(diff) <= max_step_deg:
        return wrap_deg(target_deg)
    return wrap_deg(heading_deg + math.copysign(max_step_deg, diff))


def approach(value: float, target: float, max_up: float, max_down: float) -> float:
    """Move ``value`` toward ``target`` by at most ``max_up`` (rising) or ``max_down`` (falling)."""
    if target > value:
        return min(target, value + max_up)
    return max(target, value - max_down)


def stopping_speed(distance_m: float, decel_mps2: float) -> float:
    """Return the highest speed from which ``decel_mps2`` still stops within ``distance_m``."""
    return math.sqrt(2.0 * decel_mps2 * max(distance_m, 0.0))


def turn_radius(speed_mps: float, turn_rate_dps: float) -> float:
    """Return the radius of a turn flown at ``speed_mps`` and ``turn_rate_dps`` (inf if not turning)."""
    if turn_rate_dps <= 0.0:
        return math.inf
    return speed_mps / math.radians(turn_rate_dps)


def bank_angle(speed_mps: float, yaw_rate_rad_s: float) -> float:
    """Return the coordinated-turn bank angle in radians (positive = right wing down)."""
    return math.atan(speed_mps * yaw_rate_rad_s / G_MPS2)


def ned_velocity(speed_mps: float, heading_deg: float, climb_mps: float) -> tuple[float, float, float]:
    """Return (vn, ve, vd) in m/s for a ground speed, course and climb rate (climb up = vd negative)."""
    h = math.radians(heading_deg)
    return speed_mps * math.cos(h), speed_mps * math.sin(h), -climb_mps


def orbit_course(
    lat: float, lon: float, center_lat: float, center_lon: float, radius_m: float, clockwise: bool = True
) -> float:
    """Return the course that converges onto a circle of ``radius_m`` around the centre.

    On the circle the course is tangent to it; far outside it points at the centre; inside it
    points outward. The correction is ``atan(2 * (d - r) / r)`` from the tangent.
    """
    dist, bearing_from_center = distance_bearing(center_lat, center_lon, lat, lon)
    if dist == 0.0:
        return 0.0
    correction = math.degrees(math.atan(2.0 * (dist - radius_m) / max(radius_m, 1.0)))
    sign = 1.0 if clockwise else -1.0
    return wrap_deg(bearing_from_center + sign * (90.0 + correction))


def lawnmower(
    south: float, west: float, north: float, east: float, spacing_m: float, *, along_ns: bool = True
) -> list[tuple[float, float]]:
    """Return a boustrophedon (lawnmower) sweep of a lat/lon box, as (lat, lon) waypoints.

    Args:
        south, west, north, east: the box in degrees.
        spacing_m: distance between adjacent sweep lines (the sensor swath).
        along_ns: sweep lines run north-south (stepping east) when True, else east-west.

    Returns:
        The turn points, two per sweep line, starting in the south-west corner.
    """
    height_m, width_m = local_ne(south, west, north, east)
    across = width_m if along_ns else height_m
    lines = max(1, math.ceil(across / max(spacing_m, 1e-6) - 1e-6) + 1)  # the last line on the far edge
    points: list[tuple[float, float]] = []
    for k in range(lines):
        step = min(k * spacing_m, across)
        if along_ns:
            a = offset(south, west, 0.0, step)
            b = offset(south, west, height_m, step)
        else:
            a = offset(south, west, step, 0.0)
            b = offset(south, west, step, width_m)
        points.extend((a, b) if k % 2 == 0 else (b, a))
    return points
