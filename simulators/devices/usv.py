"""Uncrewed surface vessel (USV, 14S 2 kWh pack): sea-level, slow to accelerate and to turn."""

from __future__ import annotations

from simulators.battery import BatterySpec
from simulators.devices.base import Device
from simulators.devices.spec import KindSpec

SPEC = KindSpec(
    kind="usv",
    entity_type="surface_vessel_usv",
    mav_type=11,  # MAV_TYPE_SURFACE_BOAT
    airborne_kind=False,
    can_hover=True,  # can stop (and drift-free hold, in this model)
    moves=True,
    cruise_speed_mps=4.0,
    max_speed_mps=8.0,
    min_speed_mps=0.0,
    accel_mps2=0.5,
    max_climb_mps=0.0,
    max_descent_mps=0.0,
    max_turn_rate_dps=15.0,
    fw_turn_rate_dps=15.0,
    transition_speed_mps=0.0,
    max_bank_deg=0.0,
    loiter_radius_m=0.0,
    acceptance_m=8.0,
    default_agl_m=0.0,
    battery=BatterySpec(capacity_wh=2000.0, cells=14, internal_resistance_ohm=0.04),
    idle_w=25.0,
    hover_w=0.0,
    cruise_w=300.0,
    speed_exponent=3.0,
    climb_w_per_mps=0.0,
    max_w=1200.0,
)


class SurfaceVessel(Device):
    """A surface vessel (flat attitude at sea level)."""
