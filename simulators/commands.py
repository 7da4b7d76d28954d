"""Device-side command parsing: a command envelope → an :class:`Intent` a device can execute.

The command lifecycle and its NATS transport belong to the command issue; this module is the
device's half of the seam. It accepts two spellings:

* high level: ``{"command_id": "c1", "command_type": "goto", "params": {"lat": .., "lon": ..,
  "alt": 40}}`` (params may also sit at the top level). Types: goto, hold, route, orbit,
  patrol, rtl, land, arm, disarm, set_speed, set_mode.
* Overwatch's edge-relay MAVLink spelling: ``command_type`` ``command_long`` / ``command_int``
  with ``command`` (a MAV_CMD number or name) and ``param1`` … ``param7``; ``set_mode`` with
  ``custom_mode`` (ArduCopter number) or ``mode`` (name); ``mission_item_int`` (a goto).

Altitudes: ``alt`` (or MAVLink param7 / z) is metres above home; ``alt_msl`` is absolute.
Latitudes/longitudes are degrees; a MAVLink integer above 1000 in magnitude is taken as degE7.

Pure: no I/O, no device state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from overwatch_lab.protocol.mavlink import MODE_NAMES, MODE_NUMBERS

DEFAULT_ORBIT_RADIUS_M = 50.0
DEFAULT_PATROL_SPACING_M = 50.0
MAV_CMD_FORCE_DISARM_MAGIC = 21196  # COMPONENT_ARM_DISARM param2: force

MAV_CMD: dict[int, str] = {
    16: "goto",  # NAV_WAYPOINT
    17: "hold",  # NAV_LOITER_UNLIM
    20: "rtl",  # NAV_RETURN_TO_LAUNCH
    21: "land",  # NAV_LAND
    34: "orbit",  # DO_ORBIT
    176: "set_mode",  # DO_SET_MODE
    178: "set_speed",  # DO_CHANGE_SPEED
    192: "goto",  # DO_REPOSITION
    400: "arm",  # COMPONENT_ARM_DISARM (param1 0 = disarm)
}
MAV_CMD_NAMES: dict[str, int] = {
    "MAV_CMD_NAV_WAYPOINT": 16,
    "MAV_CMD_NAV_LOITER_UNLIM": 17,
    "MAV_CMD_NAV_RETURN_TO_LAUNCH": 20,
    "MAV_CMD_NAV_LAND": 21,
    "MAV_CMD_DO_ORBIT": 34,
    "MAV_CMD_DO_SET_MODE": 176,
    "MAV_CMD_DO_CHANGE_SPEED": 178,
    "MAV_CMD_DO_REPOSITION": 192,
    "MAV_CMD_COMPONENT_ARM_DISARM": 400,
}
ALIASES: dict[str, str] = {
    "goto": "goto",
    "go_to": "goto",
    "reposition": "goto",
    "hold": "hold",
    "loiter": "hold",
    "pause": "hold",
    "route": "route",
    "follow_route": "route",
    "mission": "route",
    "orbit": "orbit",
    "circle": "orbit",
    "patrol": "patrol",
    "rtl": "rtl",
    "return_to_launch": "rtl",
    "land": "land",
    "arm": "arm",
    "disarm": "disarm",
    "set_speed": "set_speed",
    "change_speed": "set_speed",
    "set_mode": "set_mode",
}
MODE_TO_KIND: dict[str, str] = {
    "RTL": "rtl",
    "SMART_RTL": "rtl",
    "AUTO_RTL": "rtl",
    "LAND": "land",
    "LOITER": "hold",
    "POSHOLD": "hold",
    "BRAKE": "hold",
    "GUIDED": "hold",
    "ALT_HOLD": "hold",
    "CIRCLE": "orbit",
}


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a device did with a command.

    Attributes:
        command_id: the command's id ("" if it had none).
        accepted: True when executed (or, for a duplicate, when first executed).
        reason: why it was rejected ("" when accepted).
        behaviour: the behaviour the device switched to, when accepted.
        duplicate: True when this command_id was seen before and nothing was done now.
    """

    command_id: str
    accepted: bool
    reason: str = ""
    behaviour: str | None = None
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Intent:
    """A parsed command: what to do, with units in the names."""

    kind: str
    lat: float | None = None
    lon: float | None = None
    alt_rel_m: float | None = None
    alt_msl_m: float | None = None
    speed_mps: float | None = None
    radius_m: float = DEFAULT_ORBIT_RADIUS_M
    clockwise: bool = True
    waypoints: tuple[tuple[float, float, float | None], ...] = ()
    loop: bool = False
    box: tuple[float, float, float, float] | None = None
    spacing_m: float = DEFAULT_PATROL_SPACING_M
    force: bool = False


def _num(params: dict[str, Any], *keys: str) -> float | None:
    for key in keys:
        v = params.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError(f"{key} must be a finite number, got {v!r}")
        return float(v)
    return None


def _deg(v: float | None) -> float | None:
    if v is None:
        return None
    return v / 1e7 if abs(v) > 1000.0 else v


def _latlon(params: dict[str, Any], required: bool) -> tuple[float | None, float | None]:
    lat = _deg(_num(params, "lat", "latitude", "param5", "x"))
    lon = _deg(_num(params, "lon", "longitude", "param6", "y"))
    if required and (lat is None or lon is None):
        raise ValueError("lat and lon are required")
    if lat is not None and not -90.0 <= lat <= 90.0:
        raise ValueError(f"lat {lat} is outside -90..90")
    if lon is not None and not -180.0 <= lon <= 180.0:
        raise ValueError(f"lon {lon} is outside -180..180")
    return lat, lon


def _speed(params: dict[str, Any], *keys: str) -> float | None:
    v = _num(params, *keys)
    return None if v is None or v <= 0 else v


def _waypoints(raw: object) -> tuple[tuple[float, float, float | None], ...]:
    if not isinstance(raw, list | tuple) or not raw:
        raise ValueError("waypoints must be a non-empty list of [lat, lon, alt] or {lat, lon, alt}")
    out: list[tuple[float, float, float | None]] = []
    for n, wp in enumerate(raw):
        if isinstance(wp, dict):
            lat, lon = _latlon(wp, True)
            alt = _num(wp, "alt", "alt_m")
        elif isinstance(wp, list | tuple) and len(wp) in (2, 3):
            try:
                lat, lon = _latlon({"lat": wp[0], "lon": wp[1]}, True)
                alt = _num({"alt": wp[2]}, "alt") if len(wp) == 3 else None
            except ValueError as exc:
                raise ValueError(f"waypoints[{n}]: {exc}") from None
        else:
            raise ValueError(f"waypoints[{n}] must be [lat, lon, alt] or an object with lat, lon, alt")
        assert lat is not None and lon is not None
        out.append((lat, lon, alt))
    return tuple(out)


def _mode_kind(params: dict[str, Any]) -> str:
    mode = params.get("mode")
    if mode is None:
        custom = _num(params, "custom_mode", "param2")
        if custom is None:
            raise ValueError("set_mode needs mode (a name) or custom_mode (a number)")
        mode = MODE_NAMES.get(int(custom), f"UNKNOWN_{int(custom)}")
    if not isinstance(mode, str):
        raise ValueError(f"mode must be a string, got {mode!r}")
    mode = mode.upper()
    if mode not in MODE_NUMBERS and not mode.startswith("UNKNOWN"):
        raise ValueError(f"unknown mode {mode!r}")
    kind = MODE_TO_KIND.get(mode)
    if kind is None:
        raise ValueError(
            f"mode {mode} is not supported by the simulator; use one of {', '.join(sorted(MODE_TO_KIND))}"
        )
    return kind


def parse_command(command: dict[str, Any]) -> Intent:
    """Parse a command envelope into an :class:`Intent`.

    Raises:
        ValueError: unknown command type, missing or invalid parameters (the message says which).
    """
    if not isinstance(command, dict):
        raise ValueError(f"a command must be an object, got {type(command).__name__}")
    params: dict[str, Any] = dict(command)
    inner = command.get("params")
    if isinstance(inner, dict):
        params.update(inner)
    ctype = str(params.get("command_type") or params.get("type") or "").lower()
    if ctype in ("command_long", "command_int"):
        cmd = params.get("command")
        if isinstance(cmd, str):
            cmd = MAV_CMD_NAMES.get(cmd.upper())
        if not isinstance(cmd, int) or cmd not in MAV_CMD:
            raise ValueError(
                f"unsupported MAVLink command {params.get('command')!r}; supported: {sorted(MAV_CMD)}"
            )
        kind = MAV_CMD[cmd]
        if cmd == 400:
            arm = _num(params, "param1") or 0.0
            force = (_num(params, "param2") or 0.0) == MAV_CMD_FORCE_DISARM_MAGIC
            return Intent("arm" if arm >= 0.5 else "disarm", force=force)
        if cmd == 178:
            return Intent("set_speed", speed_mps=_speed(params, "param2", "speed"))
        if cmd == 176:
            return Intent(_mode_kind(params))
        lat, lon = _latlon(params, cmd in (16, 192))
        alt = _num(params, "param7", "z", "alt")
        if cmd == 34:
            radius = _num(params, "param1") or DEFAULT_ORBIT_RADIUS_M
            return Intent(
                "orbit",
                lat,
                lon,
                alt,
                speed_mps=_speed(params, "param2"),
                radius_m=abs(radius),
                clockwise=radius >= 0,
            )
        speed = _speed(params, "param1") if cmd == 192 else None
        return Intent(kind, lat, lon, alt, speed_mps=speed)
    if ctype == "mission_item_int":
        lat, lon = _latlon(params, True)
        return Intent("goto", lat, lon, _num(params, "z", "alt"))
    kind = ALIASES.get(ctype)
    if kind is None:
        raise ValueError(
            f"unsupported command_type {ctype!r}; supported: {', '.join(sorted(set(ALIASES.values())))}"
        )
    if kind == "set_mode":
        return Intent(_mode_kind(params))
    if kind in ("arm", "disarm"):
        return Intent(kind, force=bool(params.get("force", False)))
    if kind == "set_speed":
        speed = _num(params, "speed", "speed_mps")
        if speed is None:
            raise ValueError("set_speed needs speed (m/s)")
        return Intent(kind, speed_mps=speed)
    alt = _num(params, "alt", "alt_m")
    alt_msl = _num(params, "alt_msl", "alt_msl_m")
    speed = _speed(params, "speed", "speed_mps")
    if kind == "route":
        return Intent(
            kind,
            waypoints=_waypoints(params.get("waypoints")),
            loop=bool(params.get("loop", False)),
            speed_mps=speed,
        )
    if kind == "patrol":
        box = params.get("box") or params.get("area")
        if not isinstance(box, list | tuple) or len(box) != 4:
            raise ValueError("patrol needs box: [south, west, north, east] in degrees")
        b = tuple(float(v) for v in box)
        if not (b[0] < b[2] and b[1] < b[3]):
            raise ValueError(
                f"patrol box {list(b)} must be [south, west, north, east] with south < north, west < east"
            )
        spacing = _num(params, "spacing", "spacing_m") or DEFAULT_PATROL_SPACING_M
        return Intent(kind, alt_rel_m=alt, alt_msl_m=alt_msl, speed_mps=speed, box=b, spacing_m=spacing)  # type: ignore[arg-type]
    lat, lon = _latlon(params, kind == "goto")
    if kind == "orbit":
        radius = _num(params, "radius", "radius_m") or DEFAULT_ORBIT_RADIUS_M
        return Intent(
            kind,
            lat,
            lon,
            alt,
            alt_msl,
            speed,
            radius_m=abs(radius),
            clockwise=bool(params.get("clockwise", True)),
        )
    return Intent(kind, lat, lon, alt, alt_msl, speed)
