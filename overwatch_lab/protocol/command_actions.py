"""Command actions: the high-level verbs, their parameter rules and their MAVLink relay mapping.

Part of the command wire contract (see :mod:`overwatch_lab.protocol.commands` for the table of
actions): :func:`validate_params` checks and normalises an action's params,
:func:`relay_messages` maps them onto the MAVLink messages an edge relay writes, and
:func:`action_from_relay` reads Overwatch's flat edge-relay fields back into an action.

Pure: no I/O.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import Any

from overwatch_lab.errors import EnvelopeError
from overwatch_lab.protocol.mavlink import MODE_NAMES, MODE_NUMBERS
from overwatch_lab.protocol.printable import printable_names

MAX_WAYPOINTS = 500
MAX_SPEED_MPS = 150.0
MAX_RADIUS_M = 100_000.0


class Action(enum.StrEnum):
    """High-level commands the lab validates and maps onto MAVLink relay messages."""

    GOTO = "goto"
    RTL = "rtl"
    LAND = "land"
    HOLD = "hold"
    SET_MODE = "set_mode"
    ARM = "arm"
    DISARM = "disarm"
    SET_SPEED = "set_speed"
    FOLLOW_ROUTE = "follow_route"
    ORBIT = "orbit"


_PARAMS: Mapping[Action, frozenset[str]] = {
    Action.GOTO: frozenset({"lat", "lon", "alt_m", "alt_msl_m", "speed_mps"}),
    Action.RTL: frozenset(),
    Action.LAND: frozenset({"lat", "lon"}),
    Action.HOLD: frozenset({"lat", "lon", "alt_m"}),
    Action.SET_MODE: frozenset({"mode", "custom_mode"}),
    Action.ARM: frozenset({"force"}),
    Action.DISARM: frozenset({"force"}),
    Action.SET_SPEED: frozenset({"speed_mps"}),
    Action.FOLLOW_ROUTE: frozenset({"waypoints", "loop", "speed_mps"}),
    Action.ORBIT: frozenset({"lat", "lon", "radius_m", "clockwise", "alt_m", "speed_mps"}),
}
_REQUIRED: Mapping[Action, frozenset[str]] = {
    Action.GOTO: frozenset({"lat", "lon"}),
    Action.SET_SPEED: frozenset({"speed_mps"}),
    Action.FOLLOW_ROUTE: frozenset({"waypoints"}),
}

PARAM_DOCS: Mapping[str, str] = {
    "lat": "degrees, -90..90 (given with lon)",
    "lon": "degrees, -180..180 (given with lat)",
    "alt_m": "metres above home, -500..20000",
    "alt_msl_m": "metres above mean sea level, -500..20000 (instead of alt_m)",
    "speed_mps": f"m/s, 0.1..{MAX_SPEED_MPS:g}",
    "radius_m": f"metres, 1..{MAX_RADIUS_M:g} (default 50)",
    "clockwise": "true or false (default true)",
    "loop": "true or false: start again after the last waypoint",
    "force": "true or false: even when it is unsafe (MAVLink force, 21196)",
    "waypoints": f"1..{MAX_WAYPOINTS} points, each [lat, lon] or [lat, lon, alt_m]",
    "mode": "ArduCopter mode name, e.g. LOITER or RTL",
    "custom_mode": "ArduCopter custom_mode number (instead of mode)",
}
"""What each action param means: unit and range (the values :func:`validate_params` accepts)."""


def action_params(action: Action) -> tuple[frozenset[str], frozenset[str]]:
    """Return the (allowed, required) param names of ``action``, as :func:`validate_params` checks them."""
    return _PARAMS[action], _REQUIRED.get(action, frozenset())


def _number(params: Mapping[str, Any], key: str, lo: float, hi: float) -> float:
    v = params[key]
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise EnvelopeError(f"param {key!r} must be a finite number, got {v!r:.40}")
    if not lo <= v <= hi:
        raise EnvelopeError(f"param {key!r} = {v} is outside {lo:g}..{hi:g}")
    return float(v)


def _flag(params: Mapping[str, Any], key: str) -> bool:
    v = params[key]
    if not isinstance(v, bool):
        raise EnvelopeError(f"param {key!r} must be true or false, got {v!r:.40}")
    return v


def _waypoint(wp: object, n: int) -> list[float]:
    if isinstance(wp, Mapping):
        extra = set(wp) - {"lat", "lon", "alt_m"}
        if extra or not {"lat", "lon"} <= set(wp):
            raise EnvelopeError(f"waypoints[{n}] must have lat, lon and optionally alt_m")
        vals = [wp["lat"], wp["lon"]] + ([wp["alt_m"]] if "alt_m" in wp else [])
    elif isinstance(wp, list | tuple) and len(wp) in (2, 3):
        vals = list(wp)
    else:
        raise EnvelopeError(f"waypoints[{n}] must be [lat, lon] or [lat, lon, alt_m]")
    try:
        out = [_number({"lat": vals[0]}, "lat", -90, 90), _number({"lon": vals[1]}, "lon", -180, 180)]
        if len(vals) == 3:
            out.append(_number({"alt_m": vals[2]}, "alt_m", -500, 20_000))
    except EnvelopeError as exc:
        raise EnvelopeError(f"waypoints[{n}]: {exc}") from None
    return out


def validate_params(action: Action, params: object) -> dict[str, Any]:
    """Validate an action's params and return them normalised (floats, bools, mode names upper-case).

    Raises:
        EnvelopeError: unknown or missing params, or a value out of range (the message says which).
    """
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise EnvelopeError(f"params must be an object, got {type(params).__name__}")
    allowed, required = _PARAMS[action], _REQUIRED.get(action, frozenset())
    unknown = set(params) - allowed
    if unknown:
        shown = ", ".join(sorted(allowed)) or "none"
        raise EnvelopeError(f"{action} does not take {printable_names(unknown)} (params: {shown})")
    missing = required - set(params)
    if missing:
        raise EnvelopeError(f"{action} needs {', '.join(sorted(missing))}")
    p = {k: v for k, v in params.items() if v is not None}
    out: dict[str, Any] = {}
    if ("lat" in p) != ("lon" in p):
        raise EnvelopeError(f"{action}: lat and lon go together")
    ranges = {"lat": (-90, 90), "lon": (-180, 180), "alt_m": (-500, 20_000), "alt_msl_m": (-500, 20_000)}
    for key, (lo, hi) in ranges.items():
        if key in p:
            out[key] = _number(p, key, lo, hi)
    if "alt_m" in out and "alt_msl_m" in out:
        raise EnvelopeError(f"{action}: give alt_m or alt_msl_m, not both")
    if "speed_mps" in p:
        out["speed_mps"] = _number(p, "speed_mps", 0.1, MAX_SPEED_MPS)
    if "radius_m" in p:
        out["radius_m"] = _number(p, "radius_m", 1.0, MAX_RADIUS_M)
    for key in ("force", "loop", "clockwise"):
        if key in p:
            out[key] = _flag(p, key)
    if action is Action.SET_MODE:
        out["mode"] = _mode_name(p)
    if action is Action.FOLLOW_ROUTE:
        wps = p["waypoints"]
        if not isinstance(wps, list | tuple) or not 1 <= len(wps) <= MAX_WAYPOINTS:
            raise EnvelopeError(f"waypoints must be a list of 1..{MAX_WAYPOINTS} points")
        out["waypoints"] = [_waypoint(wp, n) for n, wp in enumerate(wps)]
    return out


def _mode_name(p: Mapping[str, Any]) -> str:
    if "mode" in p and "custom_mode" in p:
        raise EnvelopeError("set_mode: give mode or custom_mode, not both")
    if "custom_mode" in p:
        number = p["custom_mode"]
        if type(number) is not int or number not in MODE_NAMES:
            raise EnvelopeError(f"set_mode: unknown custom_mode {number!r}; known: {sorted(MODE_NAMES)}")
        return MODE_NAMES[number]
    mode = p.get("mode")
    if not isinstance(mode, str) or mode.upper() not in MODE_NUMBERS:
        raise EnvelopeError(f"set_mode: unknown mode {mode!r}; one of {', '.join(sorted(MODE_NUMBERS))}")
    return mode.upper()


MAV_CMD = {"NAV_WAYPOINT": 16, "NAV_LOITER_UNLIM": 17, "NAV_RETURN_TO_LAUNCH": 20, "NAV_LAND": 21,
           "DO_ORBIT": 34, "DO_SET_MODE": 176, "DO_CHANGE_SPEED": 178, "DO_REPOSITION": 192,
           "MISSION_START": 300, "COMPONENT_ARM_DISARM": 400}  # fmt: skip
MAV_FRAME_GLOBAL_INT = 5
MAV_FRAME_GLOBAL_RELATIVE_ALT_INT = 6
MAV_MODE_FLAG_CUSTOM_MODE_ENABLED = 1
FORCE_MAGIC = 21196  # COMPONENT_ARM_DISARM param2: force


def _e7(deg: float | None) -> int:
    return 0 if deg is None else round(deg * 1e7)


def _long(command: int, *params: float) -> dict[str, Any]:
    full = [float(v) for v in params] + [0.0] * (7 - len(params))
    return {"type": "command_long", "command": command, "confirmation": 0} | {
        f"param{i + 1}": v for i, v in enumerate(full)
    }


def _int(command: int, p: Mapping[str, Any], *params: float) -> dict[str, Any]:
    full = [float(v) for v in params] + [0.0] * (4 - len(params))
    alt_msl = "alt_msl_m" in p
    return {
        "type": "command_int",
        "command": command,
        "frame": MAV_FRAME_GLOBAL_INT if alt_msl else MAV_FRAME_GLOBAL_RELATIVE_ALT_INT,
        "current": 0,
        "autocontinue": 0,
        **{f"param{i + 1}": v for i, v in enumerate(full)},
        "x": _e7(p.get("lat")),
        "y": _e7(p.get("lon")),
        "z": float(p.get("alt_msl_m", p.get("alt_m", 0.0))),
    }


def relay_messages(action: Action, p: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Map a validated action onto the MAVLink messages a relay would write, in order.

    Each message is ``{"type": <message name, lower case>, <its fields>}`` in raw MAVLink units
    (lat/lon in degE7 for the ``*_int`` messages). ``target_system``/``target_component`` are
    the envelope's.
    """
    speed = p.get("speed_mps", -1.0)
    if action is Action.GOTO:
        return [_int(MAV_CMD["DO_REPOSITION"], p, speed, 1.0)]  # param2 1: change mode to GUIDED
    if action is Action.RTL:
        return [_long(MAV_CMD["NAV_RETURN_TO_LAUNCH"])]
    if action is Action.LAND:
        return [_long(MAV_CMD["NAV_LAND"], 0, 0, 0, 0, p.get("lat", 0.0), p.get("lon", 0.0), 0)]
    if action is Action.HOLD:
        return [_long(MAV_CMD["NAV_LOITER_UNLIM"], 0, 0, 0, 0, p.get("lat", 0.0), p.get("lon", 0.0),
                      p.get("alt_m", 0.0))]  # fmt: skip
    if action is Action.SET_MODE:
        return [{"type": "set_mode", "base_mode": MAV_MODE_FLAG_CUSTOM_MODE_ENABLED,
                 "custom_mode": MODE_NUMBERS[p["mode"]]}]  # fmt: skip
    if action in (Action.ARM, Action.DISARM):
        force = FORCE_MAGIC if p.get("force") else 0
        return [_long(MAV_CMD["COMPONENT_ARM_DISARM"], 1 if action is Action.ARM else 0, force)]
    if action is Action.SET_SPEED:
        return [_long(MAV_CMD["DO_CHANGE_SPEED"], 1, p["speed_mps"], -1)]
    if action is Action.ORBIT:
        radius = p.get("radius_m", 50.0) * (1 if p.get("clockwise", True) else -1)
        return [_int(MAV_CMD["DO_ORBIT"], p, radius, speed)]
    wps = p["waypoints"]
    items = [
        {"type": "mission_item_int", "seq": n, "frame": MAV_FRAME_GLOBAL_RELATIVE_ALT_INT,
         "command": MAV_CMD["NAV_WAYPOINT"], "current": int(n == 0), "autocontinue": 1,
         "param1": 0.0, "param2": 0.0, "param3": 0.0, "param4": 0.0,
         "x": _e7(wp[0]), "y": _e7(wp[1]), "z": wp[2] if len(wp) == 3 else 0.0, "mission_type": 0}
        for n, wp in enumerate(wps)
    ]  # fmt: skip
    out = [{"type": "mission_clear_all", "mission_type": 0},
           {"type": "mission_count", "count": len(items), "mission_type": 0}, *items]  # fmt: skip
    if "speed_mps" in p:
        out.append(_long(MAV_CMD["DO_CHANGE_SPEED"], 1, p["speed_mps"], -1))
    out.append(_long(MAV_CMD["MISSION_START"], 0, len(items) - 1))
    return out


RELAY_TYPES = frozenset({"command_long", "command_int", "set_mode", "mission_item_int"})
RELAY_FIELDS = frozenset(
    {"command", "confirmation", "frame", "current", "autocontinue", "x", "y", "z", "custom_mode",
     "base_mode", "seq", "mission_type", *(f"param{i}" for i in range(1, 8))}
)  # fmt: skip


def _relay_num(msg: Mapping[str, Any], key: str, default: float = 0.0) -> float:
    v = msg.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise EnvelopeError(f"relay field {key!r} must be a finite number, got {v!r:.40}")
    return float(v)


def action_from_relay(command_type: str, msg: Mapping[str, Any]) -> tuple[Action, dict[str, Any]]:
    """Infer (action, params) from Overwatch's flat edge-relay fields; params are then validated.

    Raises:
        EnvelopeError: an unsupported command_type or MAV_CMD, or a malformed field.
    """
    if command_type == "set_mode":
        return Action.SET_MODE, {"custom_mode": int(_relay_num(msg, "custom_mode", -1))}
    if command_type == "mission_item_int":
        return Action.GOTO, _position(msg, True) | ({"alt_m": _relay_num(msg, "z")} if "z" in msg else {})
    if command_type not in ("command_long", "command_int"):
        raise EnvelopeError(
            f"unsupported command_type {command_type!r}; one of {', '.join(sorted(RELAY_TYPES))}"
        )
    cmd = msg.get("command")
    is_int = command_type == "command_int"
    if cmd == MAV_CMD["NAV_RETURN_TO_LAUNCH"]:
        return Action.RTL, {}
    if cmd == MAV_CMD["COMPONENT_ARM_DISARM"]:
        force = _relay_num(msg, "param2") == FORCE_MAGIC
        arm = _relay_num(msg, "param1") >= 0.5
        return (Action.ARM if arm else Action.DISARM), ({"force": True} if force else {})
    if cmd == MAV_CMD["DO_CHANGE_SPEED"]:
        return Action.SET_SPEED, {"speed_mps": _relay_num(msg, "param2")}
    if cmd == MAV_CMD["DO_SET_MODE"]:
        return Action.SET_MODE, {"custom_mode": int(_relay_num(msg, "param2", -1))}
    alt_key = "z" if is_int else "param7"
    alt = {"alt_m": _relay_num(msg, alt_key)} if _relay_num(msg, alt_key) else {}
    if cmd in (MAV_CMD["NAV_WAYPOINT"], MAV_CMD["DO_REPOSITION"]):
        speed = _relay_num(msg, "param1", -1) if cmd == MAV_CMD["DO_REPOSITION"] else -1
        return Action.GOTO, _position(msg, True, is_int) | alt | ({"speed_mps": speed} if speed > 0 else {})
    if cmd == MAV_CMD["NAV_LAND"]:
        return Action.LAND, _position(msg, False, is_int)
    if cmd == MAV_CMD["NAV_LOITER_UNLIM"]:
        return Action.HOLD, _position(msg, False, is_int) | alt
    if cmd == MAV_CMD["DO_ORBIT"]:
        radius = _relay_num(msg, "param1", 50.0) or 50.0
        speed = _relay_num(msg, "param2", -1)
        return Action.ORBIT, (_position(msg, False, is_int) | alt | {"radius_m": abs(radius)}
                              | {"clockwise": radius >= 0} | ({"speed_mps": speed} if speed > 0 else {}))  # fmt: skip
    raise EnvelopeError(
        f"unsupported MAVLink command {cmd!r} in {command_type}; supported: {sorted(MAV_CMD.values())}"
    )


def _position(msg: Mapping[str, Any], required: bool, is_int: bool = True) -> dict[str, Any]:
    lat_key, lon_key = ("x", "y") if is_int else ("param5", "param6")
    lat, lon = _relay_num(msg, lat_key), _relay_num(msg, lon_key)
    if is_int:
        lat, lon = lat / 1e7, lon / 1e7
    if lat == 0.0 and lon == 0.0:
        if required:
            raise EnvelopeError(f"a position is required ({lat_key}, {lon_key})")
        return {}
    return {"lat": lat, "lon": lon}
