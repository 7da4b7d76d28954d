"""Fixed-wing aircraft (~5 kg, 2 m span, 4S 16 Ah pack): never slower than 13 m/s in the air,
circles a held point, needs a take-off roll and glides in to land."""

from __future__ import annotations

import math

from simulators.battery import BatterySpec
from simulators.devices.base import Device
from simulators.devices.spec import KindSpec

AOA_RAD = 0.04  # angle of attack in level cruise

SPEC = KindSpec(
    kind="fixed_wing",
    entity_type="aircraft_fixed_wing",
    mav_type=1,  # MAV_TYPE_FIXED_WING
    airborne_kind=True,
    can_hover=False,
    moves=True,
    cruise_speed_mps=20.0,
    max_speed_mps=30.0,
    min_speed_mps=13.0,  # stall margin
    accel_mps2=2.0,
    max_climb_mps=4.0,
    max_descent_mps=3.0,
    max_turn_rate_dps=20.0,
    fw_turn_rate_dps=20.0,
    transition_speed_mps=0.0,
    max_bank_deg=35.0,
    loiter_radius_m=80.0,
    acceptance_m=30.0,
    default_agl_m=100.0,
    battery=BatterySpec(capacity_wh=237.0, cells=4, internal_resistance_ohm=0.015),
    idle_w=10.0,
    hover_w=60.0,  # base propulsion power airborne
    cruise_w=120.0,  # grows with (speed / cruise) ** 3
    speed_exponent=3.0,
    climb_w_per_mps=45.0,
    max_w=600.0,
)


class FixedWing(Device):
    """A fixed wing: pitch follows the flight path angle plus a small angle of attack."""

    def _pitch(self) -> float:
        return math.atan2(self.climb_mps, max(self.speed_mps, 1.0)) + AOA_RAD
