"""MAVLink message bodies from a device's state, in raw MAVLink units (docs/wire.md projections).

Each builder returns the ``data`` object of one telemetry v1 envelope: degE7 for lat/lon, mm
for altitudes, cm/s for velocities, cdeg for headings, rad and rad/s for attitude, mV, cA, mAh,
hJ and % for the battery. Floats are rounded to what the sensor resolves, which also keeps the
JSON short. :data:`DEFAULT_RATES_HZ` are the rates of the issue; any type in
:data:`BUILDERS` may be given a rate per device or per fleet.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from overwatch_lab.protocol.mavlink import MODE_NUMBERS
from simulators import kinematics as k
from simulators.devices.base import MAV_AUTOPILOT_ARDUPILOTMEGA

if TYPE_CHECKING:
    from simulators.devices.base import Device

DEFAULT_RATES_HZ: MappingProxyType[str, float] = MappingProxyType(
    {
        "HEARTBEAT": 1.0,
        "GLOBAL_POSITION_INT": 5.0,
        "ATTITUDE": 10.0,
        "VFR_HUD": 2.0,
        "SYS_STATUS": 1.0,
        "BATTERY_STATUS": 0.5,
        "GPS_RAW_INT": 1.0,
    }
)
"""Default telemetry rates (Hz): 20.5 messages per second per device."""

MAV_MODE_FLAG_CUSTOM_MODE_ENABLED = 1
MAV_MODE_FLAG_GUIDED_ENABLED = 8
MAV_MODE_FLAG_STABILIZE_ENABLED = 16
MAV_MODE_FLAG_SAFETY_ARMED = 128
# MAV_SYS_STATUS_SENSOR bits
SENSOR_GYRO = 1
SENSOR_ACCEL = 2
SENSOR_MAG = 4
SENSOR_BARO = 8
SENSOR_GPS = 32
SENSOR_MOTORS = 0x8000
SENSOR_BATTERY = 0x2000000
SENSORS_PRESENT = (
    SENSOR_GYRO | SENSOR_ACCEL | SENSOR_MAG | SENSOR_BARO | SENSOR_GPS | SENSOR_MOTORS | SENSOR_BATTERY
)
# MAV_BATTERY_CHARGE_STATE
CHARGE_OK, CHARGE_LOW, CHARGE_CRITICAL, CHARGE_EMERGENCY, CHARGE_FAILED = 1, 2, 3, 4, 5
UINT16_UNUSED = 65535
INT16_MAX = 32767


def _i16(v: float) -> int:
    return max(-INT16_MAX, min(INT16_MAX, round(v)))


def heartbeat(dev: Device) -> dict[str, Any]:
    """HEARTBEAT: type, autopilot, base_mode (armed flag), custom_mode (ArduCopter number), system_status."""
    base = MAV_MODE_FLAG_CUSTOM_MODE_ENABLED | MAV_MODE_FLAG_STABILIZE_ENABLED
    if dev.armed:
        base |= MAV_MODE_FLAG_SAFETY_ARMED
    if dev.mode in ("GUIDED", "AUTO", "RTL", "LAND", "CIRCLE", "LOITER"):
        base |= MAV_MODE_FLAG_GUIDED_ENABLED
    return {
        "type": dev.spec.mav_type,
        "autopilot": MAV_AUTOPILOT_ARDUPILOTMEGA,
        "base_mode": base,
        "custom_mode": MODE_NUMBERS[dev.mode],
        "system_status": dev.system_status,
        "mavlink_version": 3,
    }


def global_position_int(dev: Device) -> dict[str, Any]:
    """GLOBAL_POSITION_INT: the autopilot's position estimate, altitudes in mm, NED velocity in cm/s."""
    lat, lon = dev.estimated_position()
    vn, ve, vd = k.ned_velocity(dev.speed_mps, dev.heading_deg, dev.climb_mps)
    return {
        "time_boot_ms": dev.time_boot_ms(),
        "lat": round(lat * 1e7),
        "lon": round(lon * 1e7),
        "alt": round(dev.alt_msl_m * 1000.0),
        "relative_alt": round((dev.alt_msl_m - dev.home.alt_msl_m) * 1000.0),
        "vx": _i16(vn * 100.0),
        "vy": _i16(ve * 100.0),
        "vz": _i16(vd * 100.0),
        "hdg": round(dev.heading_deg * 100.0) % 36000,
    }


def attitude(dev: Device) -> dict[str, Any]:
    """ATTITUDE: roll, pitch, yaw (rad, yaw in [-pi, pi)) and their rates (rad/s)."""
    return {
        "time_boot_ms": dev.time_boot_ms(),
        "roll": round(dev.roll_rad, 4),
        "pitch": round(dev.pitch_rad, 4),
        "yaw": round(k.wrap_pi(math.radians(dev.heading_deg)), 4),
        "rollspeed": round(dev.roll_rate, 4),
        "pitchspeed": round(dev.pitch_rate, 4),
        "yawspeed": round(math.radians(dev.yaw_rate_dps), 4),
    }


def vfr_hud(dev: Device) -> dict[str, Any]:
    """VFR_HUD: air/ground speed (m/s), heading (deg 0..359), throttle (%), altitude MSL (m), climb (m/s)."""
    gs = round(dev.speed_mps, 2)
    return {
        "airspeed": gs if dev.spec.airborne_kind else 0.0,
        "groundspeed": gs,
        "heading": round(dev.heading_deg) % 360,
        "throttle": dev.throttle_pct,
        "alt": round(dev.alt_msl_m, 2),
        "climb": round(dev.climb_mps, 2),
    }


def _health(dev: Device) -> int:
    health = SENSORS_PRESENT
    if dev.gps_mode == "dropout":
        health &= ~SENSOR_GPS
    if dev.motor_failed:
        health &= ~SENSOR_MOTORS
    if dev.battery_pct <= max(dev.spec.failsafe_rtl_pct, 0) or dev.battery_resistance_factor > 1.0:
        health &= ~SENSOR_BATTERY
    return health


def sys_status(dev: Device) -> dict[str, Any]:
    """SYS_STATUS: sensor bitmasks, load (d%), voltage (mV), current (cA), remaining (%)."""
    return {
        "onboard_control_sensors_present": SENSORS_PRESENT,
        "onboard_control_sensors_enabled": SENSORS_PRESENT,
        "onboard_control_sensors_health": _health(dev),
        "load": 150 + 3 * dev.throttle_pct,
        "voltage_battery": round(dev.voltage_v * 1000.0),
        "current_battery": _i16(dev.current_a * 100.0),
        "battery_remaining": dev.battery_pct,
        "drop_rate_comm": 0,
        "errors_comm": 0,
    }


def _charge_state(dev: Device) -> int:
    if dev.battery_fail_wh_per_s > 0.0 or dev.battery_wh <= 0.0:
        return CHARGE_FAILED
    pct = dev.battery_pct
    if pct <= max(dev.spec.failsafe_land_pct, 0):
        return CHARGE_EMERGENCY
    if pct <= max(dev.spec.failsafe_rtl_pct, 0):
        return CHARGE_CRITICAL
    return CHARGE_LOW if pct <= 30 else CHARGE_OK


def battery_status(dev: Device) -> dict[str, Any]:
    """BATTERY_STATUS: per-cell mV (65535 = no cell), cA, mAh, hJ, cdegC, %, seconds left."""
    spec = dev.spec.battery
    cell_mv = round(dev.voltage_v * 1000.0 / spec.cells)
    cells = [cell_mv] * min(spec.cells, 10)
    ext = [cell_mv] * max(0, spec.cells - 10)
    remaining_s = round(dev.battery_wh / dev.power_w * 3600.0) if dev.power_w > 0 else 0
    return {
        "id": 0,
        "battery_function": 1,  # MAV_BATTERY_FUNCTION_ALL
        "type": 1,  # MAV_BATTERY_TYPE_LIPO
        "temperature": round((spec.temperature_c + 0.01 * dev.power_w) * 100.0),
        "voltages": cells + [UINT16_UNUSED] * (10 - len(cells)),
        "voltages_ext": ext + [0] * (4 - len(ext)),
        "current_battery": _i16(dev.current_a * 100.0),
        "current_consumed": round(dev.consumed_mah),
        "energy_consumed": round(dev.energy_hj),
        "battery_remaining": dev.battery_pct,
        "time_remaining": min(remaining_s, 0x7FFFFFFF),
        "charge_state": _charge_state(dev),
    }


def gps_raw_int(dev: Device) -> dict[str, Any]:
    """GPS_RAW_INT: one receiver reading (noisy; degraded or without fix under GPS faults)."""
    fix, lat, lon, alt, eph, epv, sats = dev.gps_sample()
    return {
        "time_usec": dev.time_boot_ms() * 1000,
        "fix_type": fix,
        "lat": round(lat * 1e7),
        "lon": round(lon * 1e7),
        "alt": round(alt * 1000.0),
        "eph": eph,
        "epv": epv,
        "vel": round(dev.speed_mps * 100.0) if fix >= 2 else UINT16_UNUSED,
        "cog": (round(dev.heading_deg * 100.0) % 36000) if fix >= 2 else UINT16_UNUSED,
        "satellites_visible": sats,
    }


def extended_sys_state(dev: Device) -> dict[str, Any]:
    """EXTENDED_SYS_STATE: MAV_VTOL_STATE and MAV_LANDED_STATE."""
    return {"vtol_state": dev.vtol_state, "landed_state": dev.landed_state}


def mission_current(dev: Device) -> dict[str, Any]:
    """MISSION_CURRENT: the route's current waypoint index and its length."""
    seq, total = dev.behaviour.mission
    return {"seq": seq, "total": total}


def altitude(dev: Device) -> dict[str, Any]:
    """ALTITUDE: AMSL, relative to home, and above terrain, in metres."""
    return {
        "time_usec": dev.time_boot_ms() * 1000,
        "altitude_amsl": round(dev.alt_msl_m, 2),
        "altitude_relative": round(dev.alt_msl_m - dev.home.alt_msl_m, 2),
        "altitude_terrain": round(dev.alt_agl_m, 2),
    }


BUILDERS: MappingProxyType[str, Callable[[Device], dict[str, Any]]] = MappingProxyType(
    {
        "HEARTBEAT": heartbeat,
        "GLOBAL_POSITION_INT": global_position_int,
        "ATTITUDE": attitude,
        "VFR_HUD": vfr_hud,
        "SYS_STATUS": sys_status,
        "BATTERY_STATUS": battery_status,
        "GPS_RAW_INT": gps_raw_int,
        "EXTENDED_SYS_STATE": extended_sys_state,
        "MISSION_CURRENT": mission_current,
        "ALTITUDE": altitude,
    }
)
"""Message type → builder. Every one is a type the lab projects."""
