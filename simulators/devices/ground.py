"""Wheeled ground vehicle (UGV, 48 V 1 kWh pack): keeps to the ground, slows down to turn."""

from __future__ import annotations

from simulators.battery import BatterySpec
from simulators.devices.base import Device
from simulators.devices.spec import KindSpec

SPEC = KindSpec(
    kind="ground",
    entity_type="ground_vehicle_wheeled",
    mav_type=10,  # MAV_TYPE_GROUND_ROVER
    airborne_kind=False,
    can_hover=True,  # can stop and hold position
    moves=True,
    cruise_speed_mps=5.0,
    max_speed_mps=10.0,
    min_speed_mps=0.0,
    accel_mps2=1.5,
    max_climb_mps=0.0,
    max_descent_mps=0.0,
    max_turn_rate_dps=40.0,
    fw_turn_rate_dps=40.0,
    transition_speed_mps=0.0,
    max_bank_deg=0.0,
    loiter_radius_m=0.0,
    acceptance_m=3.0,
    default_agl_m=0.0,
    battery=BatterySpec(capacity_wh=1000.0, cells=13, internal_resistance_ohm=0.05),
    idle_w=20.0,
    hover_w=0.0,
    cruise_w=150.0,
    speed_exponent=1.5,
    climb_w_per_mps=0.0,
    max_w=600.0,
)


class GroundVehicle(Device):
    """A wheeled ground vehicle (flat attitude)."""
