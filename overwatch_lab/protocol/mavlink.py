"""MAVLink projections: a telemetry message's ``data`` → leaf values of the entity document.

docs/wire.md "Projection into entity state" for the 14 supported message types. A projection never
raises for a bad field: an integer out of its MAVLink type's range, a non-number or a non-finite
number is *skipped* (listed in :attr:`Projection.skipped`) and the previous value is kept. Only
an unsupported ``message_type`` is an error.

The per-field work is table-driven (one tuple per field, precomputed paths) because this runs
for every telemetry message.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from overwatch_lab.errors import EnvelopeError

Path = tuple[str, ...]

MESSAGE_IDS: dict[str, int] = {
    "HEARTBEAT": 0,
    "SYS_STATUS": 1,
    "GPS_RAW_INT": 24,
    "SCALED_PRESSURE": 29,
    "ATTITUDE": 30,
    "ATTITUDE_QUATERNION": 31,
    "LOCAL_POSITION_NED": 32,
    "GLOBAL_POSITION_INT": 33,
    "SERVO_OUTPUT_RAW": 36,
    "MISSION_CURRENT": 42,
    "VFR_HUD": 74,
    "ALTITUDE": 141,
    "BATTERY_STATUS": 147,
    "EXTENDED_SYS_STATE": 245,
}
"""The 14 projected message types and their MAVLink message ids."""

MODE_NAMES: dict[int, str] = {
    0: "STABILIZE",
    1: "ACRO",
    2: "ALT_HOLD",
    3: "AUTO",
    4: "GUIDED",
    5: "LOITER",
    6: "RTL",
    7: "CIRCLE",
    9: "LAND",
    11: "DRIFT",
    13: "SPORT",
    14: "FLIP",
    15: "AUTOTUNE",
    16: "POSHOLD",
    17: "BRAKE",
    18: "THROW",
    19: "AVOID_ADSB",
    20: "GUIDED_NOGPS",
    21: "SMART_RTL",
    22: "FLOWHOLD",
    23: "FOLLOW",
    24: "ZIGZAG",
    25: "SYSTEMID",
    26: "AUTOROTATE",
    27: "AUTO_RTL",
}
"""ArduCopter ``custom_mode`` number → flight mode name."""

MODE_NUMBERS: dict[str, int] = {name: number for number, name in MODE_NAMES.items()}
"""Flight mode name → ArduCopter ``custom_mode`` number (for simulators)."""

MAV_MODE_FLAG_SAFETY_ARMED = 128
UINT16_UNUSED = 65535  # BATTERY_STATUS.voltages: "UINT16_MAX: cell not present"

HISTORY_COLUMNS: tuple[str, ...] = (
    "latitude",
    "longitude",
    "altitude_msl",
    "altitude_relative",
    "vx",
    "vy",
    "vz",
    "roll",
    "pitch",
    "yaw",
    "heading",
    "groundspeed",
    "airspeed",
    "climb_rate",
    "battery_remaining",
    "voltage",
    "current",
    "armed",
    "mode",
)
"""Columns of one telemetry history row, filled from a projection by :func:`history_values`."""


def mode_name(custom_mode: int) -> str:
    """Return the ArduCopter mode name of ``custom_mode``, else ``UNKNOWN_{n}``."""
    return MODE_NAMES.get(custom_mode) or f"UNKNOWN_{custom_mode}"


@dataclass(frozen=True, slots=True)
class Projection:
    """What one telemetry message changes in the entity document.

    Attributes:
        sets: leaf path in the entity document (e.g. ``("position", "global", "latitude")``) →
            new value, including each touched subtree's ``timestamp`` leaf.
        skipped: one human-readable reason per skipped (invalid) field.
    """

    sets: dict[Path, Any]
    skipped: tuple[str, ...] = ()


# Integer ranges by MAVLink type: (lo, hi, label).
_U8 = (0, 0xFF, "uint8")
_I8 = (-0x80, 0x7F, "int8")
_U16 = (0, 0xFFFF, "uint16")
_I16 = (-0x8000, 0x7FFF, "int16")
_U32 = (0, 0xFFFFFFFF, "uint32")
_I32 = (-0x80000000, 0x7FFFFFFF, "int32")

# Subtree roots.
_G = ("position", "global")
_L = ("position", "local")
_E = ("attitude", "euler")
_Q = ("attitude", "quaternion")
_VS = ("vehicle_status",)
_PW = ("power",)
_VFR = ("vfr",)
_MI = ("mission",)
_AC = ("actuators",)
_EN = ("environment",)

_Conv = float | Callable[[Any], Any] | None
# One field spec: (data key, lo, hi, range label, conversion, target path, subtree timestamp path).
# lo is None for a float field. conversion: None = as is, a float = divide by it, a callable = apply.
_Spec = tuple[str, int | None, int | None, str, _Conv, Path, Path]


def _i(key: str, rng: tuple[int, int, str], root: Path, leaf: str, conv: _Conv = None) -> _Spec:
    return (key, rng[0], rng[1], rng[2], conv, (*root, leaf), (*root, "timestamp"))


def _f(key: str, root: Path, leaf: str) -> _Spec:
    return (key, None, None, "float", None, (*root, leaf), (*root, "timestamp"))


def _armed(base_mode: int) -> bool:
    return bool(base_mode & MAV_MODE_FLAG_SAFETY_ARMED)


# lat/lon are also held to their geographic range (±90°/±180° in degE7): an int32 can hold
# ±214°, which the entities table (and every map) rejects.
_LAT = (-900_000_000, 900_000_000, "latitude degE7 (±90°)")
_LON = (-1_800_000_000, 1_800_000_000, "longitude degE7 (±180°)")

_SPECS: dict[str, tuple[_Spec, ...]] = {
    "HEARTBEAT": (
        _i("custom_mode", _U32, _VS, "custom_mode"),
        _i("base_mode", _U8, _VS, "armed", _armed),
        _i("autopilot", _U8, _VS, "autopilot"),
        _i("system_status", _U8, _VS, "system_status"),
        _i("type", _U8, _VS, "vehicle_type"),
    ),
    "SYS_STATUS": (
        _i("load", _U16, _VS, "load"),
        _i("onboard_control_sensors_enabled", _U32, _VS, "sensors_enabled"),
        _i("onboard_control_sensors_health", _U32, _VS, "sensors_health"),
        _i("voltage_battery", _U16, _PW, "voltage"),
        _i("current_battery", _I16, _PW, "current"),
        _i("battery_remaining", (-1, 100, "-1..100"), _PW, "battery_remaining"),
    ),
    "GPS_RAW_INT": (
        _i("lat", _LAT, _G, "latitude", 1e7),
        _i("lon", _LON, _G, "longitude", 1e7),
        _i("alt", _I32, _G, "altitude_msl", 1000.0),
        _i("eph", _U16, _G, "accuracy_h", 100.0),
        _i("epv", _U16, _G, "accuracy_v", 100.0),
        _i("satellites_visible", _U8, _G, "satellites_visible"),
        _i("fix_type", _U8, _G, "fix_type"),
    ),
    "GLOBAL_POSITION_INT": (
        _i("lat", _LAT, _G, "latitude", 1e7),
        _i("lon", _LON, _G, "longitude", 1e7),
        _i("alt", _I32, _G, "altitude_msl", 1000.0),
        _i("relative_alt", _I32, _G, "altitude_relative", 1000.0),
        _i("vx", _I16, _L, "vx", 100.0),
        _i("vy", _I16, _L, "vy", 100.0),
        _i("vz", _I16, _L, "vz", 100.0),
    ),
    "ATTITUDE": tuple(_f(k, _E, k) for k in ("roll", "pitch", "yaw", "rollspeed", "pitchspeed", "yawspeed")),
    "ATTITUDE_QUATERNION": tuple(
        _f(k, _Q, k) for k in ("q1", "q2", "q3", "q4", "rollspeed", "pitchspeed", "yawspeed")
    ),
    "LOCAL_POSITION_NED": tuple(_f(k, _L, k) for k in ("x", "y", "z", "vx", "vy", "vz")),
    "ALTITUDE": (
        _f("altitude_amsl", _G, "altitude_msl"),
        _f("altitude_relative", _G, "altitude_relative"),
        _f("altitude_terrain", _G, "altitude_terrain"),
    ),
    "VFR_HUD": (
        _f("airspeed", _VFR, "airspeed"),
        _f("groundspeed", _VFR, "groundspeed"),
        _i("heading", (0, 360, "0..360"), _VFR, "heading"),
        _f("climb", _VFR, "climb_rate"),
        _i("throttle", (0, 100, "0..100"), _VFR, "throttle"),
        _f("alt", _VFR, "altitude"),
    ),
    "MISSION_CURRENT": (
        _i("seq", _U16, _MI, "current_waypoint"),
        _i("total", _U16, _MI, "total_waypoints"),
    ),
    "BATTERY_STATUS": (
        _i("battery_remaining", (-1, 100, "-1..100"), _PW, "battery_remaining"),
        _i("current_battery", _I16, _PW, "current", 100.0),
        _i("current_consumed", _I32, _PW, "consumed"),
        _i("energy_consumed", _I32, _PW, "energy_consumed"),
        _i("temperature", _I16, _PW, "temperature"),
    ),
    "SERVO_OUTPUT_RAW": (),
    "SCALED_PRESSURE": (
        _f("press_abs", _EN, "pressure_abs"),
        _f("press_diff", _EN, "pressure_diff"),
        _i("temperature", _I16, _EN, "temperature"),
    ),
    "EXTENDED_SYS_STATE": (
        _i("vtol_state", _U8, _VS, "vtol_state"),
        _i("landed_state", _U8, _VS, "landed_state"),
    ),
}

assert set(_SPECS) == set(MESSAGE_IDS)
_SUPPORTED = ", ".join(sorted(MESSAGE_IDS))
_MISSING = object()

_VS_CUSTOM_MODE = ("vehicle_status", "custom_mode")
_VS_MODE = ("vehicle_status", "mode")
_PW_CELLS = ("power", "cells")
_PW_TS = ("power", "timestamp")
_AC_SERVOS = ("actuators", "servos")
_AC_TS = ("actuators", "timestamp")
_SERVO_KEYS = tuple(f"servo{n}_raw" for n in range(1, 9))


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_int(mt: str, key: str, v: object, lo: int, hi: int, label: str, skipped: list[str]) -> int | None:
    """Return ``v`` as an int if it is an integer in [lo, hi], else record why and return None."""
    if type(v) is int:  # not isinstance: a bool is not an integer here
        n = v
    elif type(v) is float and v.is_integer():
        # Go-built senders decode every JSON number as float64: 3.0 is the integer 3.
        n = int(v)
    else:
        skipped.append(f"{mt}.{key}: expected an integer, got {_shown(v)}")
        return None
    if lo <= n <= hi:
        return n
    skipped.append(f"{mt}.{key}: {_shown(v)} out of {label} range")
    return None


def project(message_type: str, data: dict[str, Any], timestamp: str) -> Projection:
    """Project one telemetry message onto entity-document leaves.

    Args:
        message_type: the envelope's MAVLink message name.
        data: the envelope's ``data`` object (raw MAVLink units).
        timestamp: the envelope's canonical timestamp; every touched subtree's ``timestamp``.

    Returns:
        The leaves to set and the fields skipped as invalid. A missing field is not set.

    Raises:
        EnvelopeError: ``message_type`` is not one of the 14 supported types.
    """
    specs = _SPECS.get(message_type)
    if specs is None:
        raise EnvelopeError(f"unknown message_type {message_type!r}; supported: {_SUPPORTED}")
    sets: dict[Path, Any] = {}
    skipped: list[str] = []
    get = data.get
    for key, lo, hi, label, conv, path, ts_path in specs:
        v = get(key, _MISSING)
        if v is _MISSING:
            continue
        if lo is None or hi is None:  # a float field (both bounds are None)
            t = type(v)
            if t is float:
                if v - v != 0.0:  # inf or nan (JSON cannot carry them, a caller's dict can)
                    skipped.append(f"{message_type}.{key}: {v!r} is not finite")
                    continue
            elif t is int:
                try:
                    v = float(v)
                except OverflowError:
                    skipped.append(f"{message_type}.{key}: {_shown(v)} is not finite")
                    continue
            else:
                skipped.append(f"{message_type}.{key}: expected a number, got {_shown(v)}")
                continue
        else:
            v = _check_int(message_type, key, v, lo, hi, label, skipped)
            if v is None:
                continue
            if conv is not None:
                v = v / conv if isinstance(conv, float) else conv(v)
        sets[path] = v
        sets[ts_path] = timestamp
    if message_type == "HEARTBEAT":
        custom_mode = sets.get(_VS_CUSTOM_MODE)
        if custom_mode is not None:
            sets[_VS_MODE] = mode_name(custom_mode)
    elif message_type == "BATTERY_STATUS":
        _battery_cells(data, timestamp, sets, skipped)
    elif message_type == "SERVO_OUTPUT_RAW":
        _servos(data, timestamp, sets, skipped)
    return Projection(sets, tuple(skipped))


def _battery_cells(data: dict[str, Any], timestamp: str, sets: dict[Path, Any], skipped: list[str]) -> None:
    """``voltages[]`` (uint16 mV, 65535 = no cell) → power.cells, only if every cell is valid."""
    voltages = data.get("voltages", _MISSING)
    if voltages is _MISSING:
        return
    if not isinstance(voltages, list):
        skipped.append(f"BATTERY_STATUS.voltages: expected a list, got {_shown(voltages)}")
        return
    cells: list[int] = []
    bad: list[str] = []
    for n, v in enumerate(voltages):
        c = _check_int("BATTERY_STATUS", f"voltages[{n}]", v, 0, 0xFFFF, "uint16", bad)
        if c is not None and c != UINT16_UNUSED:
            cells.append(c)
    if bad:
        skipped.append(f"BATTERY_STATUS.voltages: not applied ({'; '.join(bad)})")
        return
    sets[_PW_CELLS] = cells
    sets[_PW_TS] = timestamp


def _servos(data: dict[str, Any], timestamp: str, sets: dict[Path, Any], skipped: list[str]) -> None:
    """servo1_raw … servo8_raw (uint16 µs) → actuators.servos[8]; a missing or invalid one is None."""
    servos: list[int | None] = []
    seen = False
    for key in _SERVO_KEYS:
        v = data.get(key, _MISSING)
        if v is _MISSING:
            servos.append(None)
            continue
        seen = True
        servos.append(_check_int("SERVO_OUTPUT_RAW", key, v, 0, 0xFFFF, "uint16", skipped))
    if seen:
        sets[_AC_SERVOS] = servos
        sets[_AC_TS] = timestamp


_HISTORY_PATHS: dict[Path, str] = {
    ("position", "global", "latitude"): "latitude",
    ("position", "global", "longitude"): "longitude",
    ("position", "global", "altitude_msl"): "altitude_msl",
    ("position", "global", "altitude_relative"): "altitude_relative",
    ("position", "local", "vx"): "vx",
    ("position", "local", "vy"): "vy",
    ("position", "local", "vz"): "vz",
    ("attitude", "euler", "roll"): "roll",
    ("attitude", "euler", "pitch"): "pitch",
    ("attitude", "euler", "yaw"): "yaw",
    ("vfr", "heading"): "heading",
    ("vfr", "groundspeed"): "groundspeed",
    ("vfr", "airspeed"): "airspeed",
    ("vfr", "climb_rate"): "climb_rate",
    ("power", "battery_remaining"): "battery_remaining",
    ("power", "voltage"): "voltage",
    ("power", "current"): "current",
    ("vehicle_status", "armed"): "armed",
    ("vehicle_status", "mode"): "mode",
}
assert set(_HISTORY_PATHS.values()) == set(HISTORY_COLUMNS)


def history_values(projection: Projection) -> dict[str, Any]:
    """Return the :data:`HISTORY_COLUMNS` this projection sets (column → value).

    Note the units follow the projection: ``voltage``/``current`` from SYS_STATUS are raw (mV,
    cA), ``current`` from BATTERY_STATUS is in A (docs/wire.md keeps upstream's mix).
    """
    out: dict[str, Any] = {}
    paths = _HISTORY_PATHS
    for path, value in projection.sets.items():
        column = paths.get(path)
        if column is not None:
            out[column] = value
    return out


_HISTORY_INDEX: dict[Path, int] = {path: HISTORY_COLUMNS.index(c) for path, c in _HISTORY_PATHS.items()}
_NO_HISTORY: tuple[None, ...] = (None,) * len(HISTORY_COLUMNS)


def history_row_values(projection: Projection) -> list[Any]:
    """Return the values of :data:`HISTORY_COLUMNS`, in that order (None = not set).

    The same values as :func:`history_values`, without the intermediate dict (hot path).
    """
    out: list[Any] = list(_NO_HISTORY)
    index = _HISTORY_INDEX.get
    for path, value in projection.sets.items():
        i = index(path)
        if i is not None:
            out[i] = value
    return out
