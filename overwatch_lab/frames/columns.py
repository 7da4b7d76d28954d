"""The columns of the history frames: names with units, the SQL behind each, dtype and meaning.

One table (:data:`HISTORY`) says, for every column :meth:`Frames.history` can return, the SQL
expression over the ``telemetry`` table that computes it, its kind (hence its pandas dtype),
its unit, where it comes from and what it means. The same table drives the queries, the
dtypes of an empty frame, the tracks and as-of pictures, and the data dictionary written
beside an export, so the four cannot disagree.

Units: MAVLink's raw units are converted where the store keeps them raw: ``voltage_v`` is
SYS_STATUS's ``voltage_battery`` (mV) / 1000 and ``current_a`` is SYS_STATUS's
``current_battery`` (cA) / 100 or BATTERY_STATUS's (already A in history). MAVLink's
"not measured" values become missing (NaN): ``battery_remaining`` -1, ``current_battery`` -1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["time", "category", "real", "int", "bool", "text"]
"""How a column is typed in pandas: ``time`` datetime64[ns, UTC]; ``category`` categorical;
``real`` float64; ``int`` nullable Int64; ``bool`` nullable boolean; ``text`` str."""

PANDAS_DTYPES: dict[str, str] = {
    "time": "datetime64[ns, UTC]",
    "category": "category",
    "real": "float64",
    "int": "Int64",
    "bool": "boolean",
    "text": "str",
}
"""The pandas dtype (as written in the data dictionary) of each kind."""


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a frame.

    Attributes:
        name: the column's name in the frame (units in the name: ``altitude_msl_m``).
        sql: its SQL expression over the ``telemetry`` table.
        kind: its type (see :data:`Kind`).
        unit: its unit ("" when it has none).
        source: where the value comes from (table column, MAVLink message and field).
        description: what it means.
    """

    name: str
    sql: str
    kind: Kind
    unit: str
    source: str
    description: str


def _c(name: str, sql: str, kind: Kind, unit: str, source: str, description: str) -> Column:
    return Column(name, sql, kind, unit, source, description)


_GPI = "GLOBAL_POSITION_INT (GPS_RAW_INT for lat/lon/alt)"

HISTORY: tuple[Column, ...] = (
    _c("time", "ts", "time", "UTC", "telemetry.ts (envelope timestamp)", "When the device says the message was sent (the index)."),
    _c("entity_id", "entity_id", "category", "", "telemetry.entity_id", "The entity that sent the message."),
    _c("org_id", "org_id", "category", "", "telemetry.org_id", "The entity's organisation."),
    _c("message_type", "message_type", "category", "", "telemetry.message_type", "The MAVLink message name."),
    _c("latitude_deg", "latitude", "real", "deg", f"{_GPI} lat / 1e7", "WGS84 latitude."),
    _c("longitude_deg", "longitude", "real", "deg", f"{_GPI} lon / 1e7", "WGS84 longitude."),
    _c("altitude_msl_m", "altitude_msl", "real", "m", f"{_GPI} alt / 1000", "Altitude above mean sea level."),
    _c("altitude_relative_m", "altitude_relative", "real", "m", "GLOBAL_POSITION_INT relative_alt / 1000", "Altitude above home."),
    _c("vx_mps", "vx", "real", "m/s", "GLOBAL_POSITION_INT vx / 100, LOCAL_POSITION_NED vx", "Velocity north."),
    _c("vy_mps", "vy", "real", "m/s", "GLOBAL_POSITION_INT vy / 100, LOCAL_POSITION_NED vy", "Velocity east."),
    _c("vz_mps", "vz", "real", "m/s", "GLOBAL_POSITION_INT vz / 100, LOCAL_POSITION_NED vz", "Velocity down."),
    _c("roll_rad", "roll", "real", "rad", "ATTITUDE roll", "Roll angle."),
    _c("pitch_rad", "pitch", "real", "rad", "ATTITUDE pitch", "Pitch angle."),
    _c("yaw_rad", "yaw", "real", "rad", "ATTITUDE yaw", "Yaw angle."),
    _c("heading_deg", "heading", "real", "deg", "VFR_HUD heading", "Heading, 0..360."),
    _c("groundspeed_mps", "groundspeed", "real", "m/s", "VFR_HUD groundspeed", "Speed over ground."),
    _c("airspeed_mps", "airspeed", "real", "m/s", "VFR_HUD airspeed", "Indicated airspeed."),
    _c("climb_rate_mps", "climb_rate", "real", "m/s", "VFR_HUD climb", "Climb rate (up positive)."),
    _c("battery_pct", "NULLIF(battery_remaining, -1)", "real", "%", "SYS_STATUS / BATTERY_STATUS battery_remaining",
       "Remaining battery, 0..100 (MAVLink's -1 'unknown' is missing)."),
    _c("voltage_v", "NULLIF(voltage, 65535) / 1000.0", "real", "V", "SYS_STATUS voltage_battery (mV) / 1000",
       "Battery voltage (MAVLink's 65535 'unknown' is missing)."),
    _c("current_a",
       "CASE WHEN message_type = 'SYS_STATUS' THEN NULLIF(current, -1) / 100.0 ELSE NULLIF(current, -0.01) END",
       "real", "A", "SYS_STATUS current_battery (cA) / 100, BATTERY_STATUS current_battery (cA) / 100",
       "Battery current (MAVLink's -1 'not measured' is missing)."),
    _c("armed", "armed", "bool", "", "HEARTBEAT base_mode & 128", "Motors armed."),
    _c("mode", "mode", "category", "", "HEARTBEAT custom_mode (ArduCopter names)", "Flight mode name."),
    _c("late", "late", "bool", "", "telemetry.late",
       "True when the message was not newer than the live state when it arrived (history only, not applied to KV)."),
    _c("message_uid", "message_uid", "text", "", "telemetry.message_uid", "The message's unique id (dedup key)."),
    _c("ingested_at", "ingested_at", "time", "UTC", "telemetry.ingested_at", "When the lab stored the message."),
    _c("system_id", "system_id", "int", "", "telemetry.system_id", "MAVLink system id."),
    _c("component_id", "component_id", "int", "", "telemetry.component_id", "MAVLink component id."),
    _c("data", "data", "text", "", "telemetry.data", "The message's MAVLink fields as sent (JSON text, raw units)."),
)  # fmt: skip
"""Every column of :meth:`Frames.history`, in frame order (``time`` is the index)."""

BY_NAME: dict[str, Column] = {c.name: c for c in HISTORY}

KEYS: tuple[str, ...] = ("time", "entity_id", "org_id", "message_type")
"""Always in a history frame, whatever ``columns`` asks (the index and what to join on)."""

MEASUREMENTS: tuple[str, ...] = tuple(c.name for c in HISTORY if c.kind == "real")
"""The numeric measurement columns: what tracks resample and as-of pictures carry."""

STATE: tuple[str, ...] = (*MEASUREMENTS, "armed", "mode")
"""The columns of an as-of picture (each entity's newest known value of each)."""

DEFAULT: tuple[str, ...] = (*KEYS, *STATE, "late")
"""What :meth:`Frames.history` returns when ``columns`` is not given (``message_uid``,
``ingested_at``, ``system_id``, ``component_id`` and ``data`` are there on request)."""


def resolve(columns: object, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    """Return the asked columns (keys first, no duplicates), or raise naming an unknown one.

    Args:
        columns: None (the default set), one name, or an iterable of names.
        allowed: the names this frame can return.
        what: the frame's name, for the error.

    Raises:
        FrameError: a name that is not a column of this frame, or not a string.
    """
    from overwatch_lab.errors import FrameError

    if columns is None:
        return allowed
    names = [columns] if isinstance(columns, str) else list(columns)  # type: ignore[call-overload]
    for name in names:
        if not isinstance(name, str) or name not in allowed:
            raise FrameError(f"unknown {what} column {name!r}; known: {', '.join(allowed)}")
    return tuple(dict.fromkeys(names))
