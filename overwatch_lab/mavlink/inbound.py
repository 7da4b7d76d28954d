"""MAVLink in: a pymavlink message → the ``data`` of a telemetry v1 envelope, and who sent it.

The bridge publishes exactly what a v1 device sends (docs/wire.md, "Telemetry envelope"): the
message's own field names in raw MAVLink units, one envelope per message, for the 14 types the
lab projects (:data:`PROJECTED`). A float that is NaN or infinite (MAVLink's "unknown", e.g.
``ALTITUDE.altitude_terrain``) becomes JSON ``null``, which the lab skips and keeps the previous
value for, as it does for any non-number. Character arrays become text.

A vehicle is recognised by its autopilot's HEARTBEAT (:func:`is_vehicle_heartbeat`); its
``type`` (MAV_TYPE) gives the entity type (:func:`entity_type_of`).

Pure: no I/O; only reads attributes of pymavlink message objects.
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any

from overwatch_lab.protocol.envelopes import format_timestamp
from overwatch_lab.protocol.mavlink import MESSAGE_IDS

PROJECTED: frozenset[str] = frozenset(MESSAGE_IDS)
"""The message types published as telemetry (the 14 the lab projects); others are counted and dropped."""

MAV_AUTOPILOT_INVALID = 8  # a component that is not a flight controller (camera, gimbal, GCS, companion)
MAV_TYPE_GCS = 6
MAV_TYPE_ANTENNA_TRACKER = 5

# QUAD, COAXIAL, HEXA, OCTO, TRI, DODECA, DECA, GENERIC_MULTIROTOR
_MULTIROTOR = (2, 3, 13, 14, 15, 29, 35, 43)
_VTOL = (19, 20, 21, 22, 23, 24, 25, 47)  # VTOL_* and VTOL_GYRODYNE
ENTITY_TYPES: MappingProxyType[int, str] = MappingProxyType(
    {
        1: "aircraft_fixed_wing",
        16: "aircraft_fixed_wing",  # FLAPPING_WING
        28: "aircraft_fixed_wing",  # PARAFOIL
        4: "aircraft_helicopter",
        **{t: "aircraft_multirotor" for t in _MULTIROTOR},
        **{t: "aircraft_vtol" for t in _VTOL},
        10: "ground_vehicle_wheeled",  # GROUND_ROVER
        46: "ground_vehicle_tracked",  # GROUND_QUADRUPED: legged, the nearest of the two ground kinds
        11: "surface_vessel_usv",  # SURFACE_BOAT
        12: "underwater_vehicle",  # SUBMARINE
        6: "operator_station",  # GCS
        18: "payload_system",  # ONBOARD_CONTROLLER
        26: "payload_system",  # GIMBAL
        30: "payload_system",  # CAMERA
    }
)
"""MAV_TYPE → entity type (docs/wire.md's list); any other type is a ``sensor_platform``."""
DEFAULT_ENTITY_TYPE = "sensor_platform"


def entity_type_of(mav_type: int) -> str:
    """Return the entity type of a HEARTBEAT ``type`` (MAV_TYPE)."""
    return ENTITY_TYPES.get(mav_type, DEFAULT_ENTITY_TYPE)


def is_vehicle_heartbeat(autopilot: int, mav_type: int) -> bool:
    """True for the HEARTBEAT of a vehicle's flight controller (not a GCS, camera or companion).

    Only these register an entity and are published: a camera's HEARTBEAT on the same system
    id would otherwise overwrite the vehicle's mode and armed state.
    """
    return autopilot != MAV_AUTOPILOT_INVALID and mav_type not in (MAV_TYPE_GCS, MAV_TYPE_ANTENNA_TRACKER)


def _clean(value: Any) -> Any:
    if type(value) is float:
        return value if math.isfinite(value) else None
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "backslashreplace").rstrip("\x00")
    if isinstance(value, list | tuple):
        return [v if type(v) is int else _clean(v) for v in value]  # arrays are mostly ints (cell voltages)
    return value


class Timestamps:
    """Canonical envelope timestamps of integer microseconds, the date and time part formatted once a second.

    ``Timestamps()(us) == format_timestamp(us / 1e6)`` (tests/unit/mavlink checks it); a bridge
    stamps every packet, and the packets of one second share all but the fraction.
    """

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, us: int) -> str:
        second, frac = divmod(us, 1_000_000)
        if second != self._second:
            self._second, self._prefix = second, format_timestamp(second)[:-7]  # up to the "."
        return f"{self._prefix}{frac:06d}Z"


def telemetry_data(msg: Any) -> dict[str, Any]:
    """Return the message's fields as the envelope's ``data`` (raw units, NaN/inf → None).

    Args:
        msg: a decoded pymavlink message (``MAVLink_message``).
    """
    out: dict[str, Any] = {}
    for name in msg.get_fieldnames():
        value = getattr(msg, name)
        t = type(value)
        if t is int or (t is float and math.isfinite(value)):
            out[name] = value
        else:
            out[name] = _clean(value)
    return out


__all__ = [
    "DEFAULT_ENTITY_TYPE",
    "ENTITY_TYPES",
    "PROJECTED",
    "Timestamps",
    "entity_type_of",
    "is_vehicle_heartbeat",
    "telemetry_data",
]
