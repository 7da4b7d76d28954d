"""The limits and constants of a device kind (:class:`KindSpec`); each ``devices/<kind>.py`` has one."""

from __future__ import annotations

from dataclasses import dataclass

from simulators import battery as bat


@dataclass(frozen=True, slots=True)
class KindSpec:
    """Limits and constants of one device kind.

    Attributes:
        kind: short kind name used in scenarios (``multirotor``, ``fixed_wing`` ...).
        entity_type: the docs/wire.md entity_type.
        mav_type: HEARTBEAT ``type`` (MAV_TYPE).
        airborne_kind: an aircraft (has altitude dynamics); ground kinds keep to the ground.
        can_hover: can stop in the air (multirotor, VTOL) or on the ground (ground kinds).
        moves: False for a fixed sensor platform.
        cruise_speed_mps / max_speed_mps: default and top ground speed.
        min_speed_mps: minimum airspeed while airborne (fixed wing stall margin), else 0.
        accel_mps2: horizontal acceleration and braking.
        max_climb_mps / max_descent_mps: vertical speed limits.
        max_turn_rate_dps: turn rate limit (at low speed for a VTOL).
        fw_turn_rate_dps: turn rate in wing-borne flight (VTOL above ``transition_speed_mps``).
        transition_speed_mps: VTOL switches to wing-borne flight above this (0: not a VTOL).
        max_bank_deg: bank angle limit used for the attitude.
        loiter_radius_m: radius a fixed wing circles a held point at.
        acceptance_m: waypoint acceptance radius (a fixed wing also uses 2x its turn radius).
        default_agl_m: default operating height above ground (0 for ground kinds).
        battery: the pack.
        idle_w: avionics power, always drawn.
        hover_w: propulsion power airborne at zero speed (hovering), or 0.
        cruise_w: extra propulsion power at cruise speed.
        speed_exponent: propulsion grows with (speed / cruise) ** this.
        climb_w_per_mps: extra power per m/s of climb.
        max_w: propulsion power at 100 % throttle.
        failsafe_rtl_pct / failsafe_land_pct: battery failsafe thresholds (-1 disables).
    """

    kind: str
    entity_type: str
    mav_type: int
    airborne_kind: bool
    can_hover: bool
    moves: bool
    cruise_speed_mps: float
    max_speed_mps: float
    min_speed_mps: float
    accel_mps2: float
    max_climb_mps: float
    max_descent_mps: float
    max_turn_rate_dps: float
    fw_turn_rate_dps: float
    transition_speed_mps: float
    max_bank_deg: float
    loiter_radius_m: float
    acceptance_m: float
    default_agl_m: float
    battery: bat.BatterySpec
    idle_w: float
    hover_w: float
    cruise_w: float
    speed_exponent: float
    climb_w_per_mps: float
    max_w: float
    failsafe_rtl_pct: int = 20
    failsafe_land_pct: int = 8
