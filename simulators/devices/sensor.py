"""Fixed sensor platform (EO/IR mast, 5 kWh pack): never moves, draws ~12 W for days."""

from __future__ import annotations

from simulators.battery import BatterySpec
from simulators.devices.base import Device
from simulators.devices.spec import KindSpec

SPEC = KindSpec(
    kind="sensor",
    entity_type="sensor_platform",
    mav_type=30,  # MAV_TYPE_CAMERA
    airborne_kind=False,
    can_hover=True,
    moves=False,
    cruise_speed_mps=0.0,
    max_speed_mps=0.0,
    min_speed_mps=0.0,
    accel_mps2=0.0,
    max_climb_mps=0.0,
    max_descent_mps=0.0,
    max_turn_rate_dps=0.0,
    fw_turn_rate_dps=0.0,
    transition_speed_mps=0.0,
    max_bank_deg=0.0,
    loiter_radius_m=0.0,
    acceptance_m=1.0,
    default_agl_m=0.0,
    battery=BatterySpec(capacity_wh=5000.0, cells=13, internal_resistance_ohm=0.05),
    idle_w=12.0,
    hover_w=0.0,
    cruise_w=0.0,
    speed_exponent=1.0,
    climb_w_per_mps=0.0,
    max_w=0.0,
    failsafe_rtl_pct=-1,
    failsafe_land_pct=-1,
)


class SensorPlatform(Device):
    """A fixed sensor: always armed (powered), never moves; motion commands are rejected."""
