"""Multirotor (quadcopter class, ~3 kg, 6S 6 Ah pack): hovers, ~20 min endurance at hover."""

from __future__ import annotations

from simulators.battery import BatterySpec
from simulators.devices.base import Device
from simulators.devices.spec import KindSpec

SPEC = KindSpec(
    kind="multirotor",
    entity_type="aircraft_multirotor",
    mav_type=2,  # MAV_TYPE_QUADROTOR
    airborne_kind=True,
    can_hover=True,
    moves=True,
    cruise_speed_mps=10.0,
    max_speed_mps=16.0,
    min_speed_mps=0.0,
    accel_mps2=3.0,
    max_climb_mps=4.0,
    max_descent_mps=2.5,
    max_turn_rate_dps=90.0,
    fw_turn_rate_dps=90.0,
    transition_speed_mps=0.0,
    max_bank_deg=30.0,
    loiter_radius_m=0.0,
    acceptance_m=2.0,
    default_agl_m=40.0,
    battery=BatterySpec(capacity_wh=133.0, cells=6, internal_resistance_ohm=0.025),
    idle_w=8.0,  # avionics, companion computer, radio
    hover_w=320.0,  # propulsion power to hover
    cruise_w=60.0,  # extra power at cruise speed
    speed_exponent=2.0,
    climb_w_per_mps=40.0,
    max_w=900.0,
)


class Multirotor(Device):
    """A multirotor: takes off and lands vertically, stops and holds in the air."""
