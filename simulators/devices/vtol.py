"""VTOL quadplane (~10 kg, 6S 22 Ah pack): hovers like a multirotor below 14 m/s, flies on its
wing above it (wider turns, much less power); ``vtol_state`` reports MC or FW."""

from __future__ import annotations

import math

from simulators.battery import BatterySpec
from simulators.devices.base import Device
from simulators.devices.spec import KindSpec

SPEC = KindSpec(
    kind="vtol",
    entity_type="aircraft_vtol",
    mav_type=22,  # MAV_TYPE_VTOL_FIXEDROTOR (quadplane)
    airborne_kind=True,
    can_hover=True,
    moves=True,
    cruise_speed_mps=22.0,
    max_speed_mps=30.0,
    min_speed_mps=0.0,
    accel_mps2=2.5,
    max_climb_mps=3.0,
    max_descent_mps=2.0,
    max_turn_rate_dps=60.0,  # hovering
    fw_turn_rate_dps=18.0,  # wing-borne
    transition_speed_mps=14.0,
    max_bank_deg=30.0,
    loiter_radius_m=100.0,
    acceptance_m=5.0,
    default_agl_m=80.0,
    battery=BatterySpec(capacity_wh=488.0, cells=6, internal_resistance_ohm=0.012),
    idle_w=12.0,
    hover_w=1100.0,  # lift motors, hovering
    cruise_w=250.0,  # wing-borne cruise
    speed_exponent=3.0,
    climb_w_per_mps=80.0,
    max_w=2200.0,
)


class Vtol(Device):
    """A quadplane: hover power fades out as the wing takes the load above the transition speed."""

    def _propulsion_w(self) -> float:
        spec = self.spec
        if not self.armed or self.motor_failed or self.battery_wh <= 0.0 or not self.airborne:
            return super()._propulsion_w()
        lift_share = max(0.0, 1.0 - self.speed_mps / spec.transition_speed_mps)
        ratio = self.speed_mps / spec.cruise_speed_mps
        p: float = spec.hover_w * lift_share + spec.cruise_w * ratio**spec.speed_exponent
        p += spec.climb_w_per_mps * max(0.0, self.climb_mps)
        return min(p, spec.max_w)

    def _pitch(self) -> float:
        if self.speed_mps >= self.spec.transition_speed_mps:
            return math.atan2(self.climb_mps, self.speed_mps) + 0.04
        return super()._pitch()
