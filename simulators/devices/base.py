"""The device model shared by every kind: state, one-tick dynamics, battery, GPS and commands.

A :class:`Device` is stepped by the fleet model at a fixed tick (``step(dt)``). Each tick its
behaviour (``simulators.behaviours``) says where it wants to go, and the kind's limits
(:class:`KindSpec`: speed, acceleration, climb/descent, turn rate, minimum airspeed) decide how
far it gets. The battery drains with the propulsion load and its voltage sags near empty; the
battery failsafe sends the device home at ``failsafe_rtl_pct`` and lands it at
``failsafe_land_pct``. Faults (``simulators.faults``) act on the flags ``motor_failed``,
``gps_mode``, ``battery_resistance_factor`` and ``battery_fail_wh_per_s``.

Devices read time only from the scenario's :class:`~simulators.clock.SimClock` and draw random
numbers only from their own ``numpy.random.Generator``.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from simulators import battery as bat
from simulators import behaviours as bh
from simulators import kinematics as k
from simulators.devices.command_handler import CommandHandler, CommandResult
from simulators.devices.gps import GpsReceiver
from simulators.devices.spec import KindSpec

if TYPE_CHECKING:
    import numpy as np

    from simulators.clock import SimClock

# MAVLink enums used here (common.xml).
MAV_AUTOPILOT_ARDUPILOTMEGA = 3
MAV_STATE_STANDBY = 3
MAV_STATE_ACTIVE = 4
MAV_STATE_CRITICAL = 5
MAV_STATE_EMERGENCY = 6
MAV_LANDED_STATE_ON_GROUND = 1
MAV_LANDED_STATE_IN_AIR = 2
MAV_LANDED_STATE_TAKEOFF = 3
MAV_LANDED_STATE_LANDING = 4
MAV_VTOL_STATE_UNDEFINED = 0
MAV_VTOL_STATE_MC = 3
MAV_VTOL_STATE_FW = 4

AIRBORNE_AGL_M = 0.3  # above this height an aircraft counts as airborne
TAKEOFF_CLEAR_M = 2.0  # a hover kind climbs this high before it moves sideways
MOTOR_FAIL_DESCENT_FACTOR = 1.5  # a forced landing descends this much faster than max_descent
TERMINAL_EVERY_TICKS = 10  # re-solve the battery's voltage/current at least this often


class Device:
    """One simulated device (any kind); subclasses tune the propulsion and attitude models.

    Args:
        spec: the kind's limits.
        entity_id: entity token.
        org_id: organisation token.
        clock: the scenario clock (the only time source).
        rng: this device's own random generator.
        lat, lon: start position in degrees.
        ground_alt_msl_m: ground (or sea surface) height at the start point.
        alt_agl_m: start height above ground (0 = on the ground, disarmed unless ``armed``).
        heading_deg: start heading.
        name: display name (default entity_id).
        system_id: MAVLink system id.
        battery_pct: start state of charge, 0..100.
        armed: start armed (default: armed when airborne).
        behaviour: start behaviour (default: hold where it is, or idle on the ground).
        cruise_speed_mps: override of the kind's cruise speed.
    """

    spec: KindSpec

    def __init__(
        self,
        spec: KindSpec,
        *,
        entity_id: str,
        org_id: str,
        clock: SimClock,
        rng: np.random.Generator,
        lat: float,
        lon: float,
        ground_alt_msl_m: float = 0.0,
        alt_agl_m: float = 0.0,
        heading_deg: float = 0.0,
        name: str | None = None,
        system_id: int = 1,
        battery_pct: float = 100.0,
        armed: bool | None = None,
        behaviour: bh.Behaviour | None = None,
        cruise_speed_mps: float | None = None,
        fleet: str = "",
    ) -> None:
        self.spec = spec
        self.entity_id = entity_id
        self.org_id = org_id
        self.name = name or entity_id
        self.fleet = fleet
        self.clock = clock
        self.rng = rng
        self.system_id = system_id
        self.component_id = 1
        self.lat = lat
        self.lon = lon
        self.ground_alt_msl_m = ground_alt_msl_m
        agl = alt_agl_m if spec.airborne_kind else 0.0
        self.alt_msl_m = ground_alt_msl_m + agl
        self.home = bh.Waypoint(lat, lon, ground_alt_msl_m)
        self.heading_deg = k.wrap_deg(heading_deg)
        self.airborne = spec.airborne_kind and agl > AIRBORNE_AGL_M
        self.speed_mps = spec.min_speed_mps if self.airborne else 0.0
        self.climb_mps = 0.0
        self.yaw_rate_dps = 0.0
        self.accel_mps2 = 0.0
        self.roll_rad = 0.0
        self.pitch_rad = 0.0
        self.roll_rate = 0.0
        self.pitch_rate = 0.0
        self.armed = self.airborne if armed is None else armed
        self._cruise = cruise_speed_mps
        self.motor_failed = False
        self.throttle_pct = 0
        self.power_w = spec.idle_w
        # battery
        self.battery_wh = spec.battery.capacity_wh * min(100.0, max(0.0, battery_pct)) / 100.0
        self.voltage_v = bat.cell_ocv(self.battery_wh / spec.battery.capacity_wh) * spec.battery.cells
        self.current_a = 0.0
        self.consumed_mah = 0.0
        self.energy_hj = 0.0
        self.battery_resistance_factor = 1.0
        self.battery_fail_wh_per_s = 0.0
        self._terminal_age = TERMINAL_EVERY_TICKS
        self._terminal_power_w = 0.0
        self._terminal_factor = 1.0
        self._failsafe = 0  # 0 none, 1 rtl done, 2 land done
        # GPS
        self.gps = GpsReceiver(rng, lat, lon, self.alt_msl_m)
        # boot
        self.boot_epoch_s = clock.now()
        self.boot_count = 1
        # behaviour and commands
        if behaviour is None:
            behaviour = (
                bh.Hold(bh.Waypoint(lat, lon, self.alt_msl_m))
                if (self.airborne or not spec.airborne_kind) and self.armed
                else bh.Idle()
            )
        self.behaviour: bh.Behaviour = behaviour
        self.commands = CommandHandler(self)
        self.seq = 0

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.entity_id} {self.lat:.6f},{self.lon:.6f} "
            f"alt={self.alt_msl_m:.1f} v={self.speed_mps:.1f} {self.behaviour!r}>"
        )

    # ------------------------------------------------------------------ derived values
    @property
    def cruise_speed_mps(self) -> float:
        """Current cruise speed (the kind's default unless changed by ``set_speed``)."""
        return self._cruise if self._cruise is not None else self.spec.cruise_speed_mps

    @cruise_speed_mps.setter
    def cruise_speed_mps(self, speed_mps: float) -> None:
        self._cruise = speed_mps

    @property
    def alt_agl_m(self) -> float:
        """Height above the ground (or sea surface)."""
        return self.alt_msl_m - self.ground_alt_msl_m

    @property
    def soc(self) -> float:
        """State of charge, 0..1."""
        return self.battery_wh / self.spec.battery.capacity_wh

    @property
    def battery_pct(self) -> int:
        """MAVLink battery_remaining, 0..100."""
        return bat.remaining_percent(self.spec.battery, self.battery_wh)

    @property
    def mode(self) -> str:
        """ArduCopter mode name of the current behaviour."""
        return self.behaviour.mode

    @property
    def landed_state(self) -> int:
        """MAV_LANDED_STATE."""
        if not self.airborne:
            return MAV_LANDED_STATE_ON_GROUND
        if self.climb_mps > 0.5 and self.alt_agl_m < 5.0:
            return MAV_LANDED_STATE_TAKEOFF
        if isinstance(self.behaviour, bh.Land):
            return MAV_LANDED_STATE_LANDING
        return MAV_LANDED_STATE_IN_AIR

    @property
    def vtol_state(self) -> int:
        """MAV_VTOL_STATE (UNDEFINED unless the kind is a VTOL)."""
        if self.spec.transition_speed_mps <= 0:
            return MAV_VTOL_STATE_UNDEFINED
        return MAV_VTOL_STATE_FW if self.speed_mps >= self.spec.transition_speed_mps else MAV_VTOL_STATE_MC

    @property
    def system_status(self) -> int:
        """MAV_STATE: standby on the ground, active armed, critical on low battery, emergency on failure."""
        if self.motor_failed or self.battery_wh <= 0.0:
            return MAV_STATE_EMERGENCY
        if self._failsafe:
            return MAV_STATE_CRITICAL
        return MAV_STATE_ACTIVE if self.armed else MAV_STATE_STANDBY

    def acceptance_radius_m(self) -> float:
        """Waypoint acceptance radius: the kind's, but at least 2.2 turn radii at the current speed.

        A point inside the circle a vehicle turns on can never be reached by turning toward it;
        every point farther than two turn radii can. So this radius guarantees convergence.
        """
        if self.spec.max_turn_rate_dps <= 0:
            return self.spec.acceptance_m
        return max(self.spec.acceptance_m, 2.2 * k.turn_radius(self.speed_mps, self.turn_rate_dps()))

    def turn_rate_dps(self) -> float:
        """Turn rate limit at the current speed."""
        if self.spec.transition_speed_mps > 0 and self.speed_mps >= self.spec.transition_speed_mps:
            return self.spec.fw_turn_rate_dps
        return self.spec.max_turn_rate_dps

    # ------------------------------------------------------------------ the tick
    def step(self, dt: float) -> None:
        """Advance the device by ``dt`` simulated seconds."""
        for _ in range(3):  # a finished behaviour hands over (goto → hold, rtl → land → idle)
            if not self.behaviour.done:
                break
            nxt = self.behaviour.next(self)
            if nxt is None:
                break
            self.behaviour = nxt
            if isinstance(nxt, bh.Idle) and not self.airborne:
                self.armed = False  # auto-disarm after landing
        self._failsafes()
        if not self.spec.moves:
            self._power(dt, 0.0)
            return
        if self.armed and not self.motor_failed and self.battery_wh > 0.0:
            g = self.behaviour.guide(self)
        else:
            g = self._unpowered_guidance()
        self._move(g, dt)
        if self.armed and not self.airborne and (self.motor_failed or self.battery_wh <= 0.0):
            self.armed = False  # down without power: disarm where it came down
            self.behaviour = bh.Idle()
        self._power(dt, self._propulsion_w())
        self.gps.drift(dt)

    def _unpowered_guidance(self) -> bh.Guidance:
        if self.spec.airborne_kind and self.airborne and not self.spec.can_hover:
            return bh.Guidance(self.heading_deg, self.spec.min_speed_mps, self.ground_alt_msl_m)
        return bh.Guidance(self.heading_deg, 0.0, self.ground_alt_msl_m)

    def _failsafes(self) -> None:
        spec = self.spec
        if not self.armed or spec.failsafe_land_pct < 0:
            return
        pct = self.battery_pct
        if pct <= spec.failsafe_land_pct and self._failsafe < 2:
            self._failsafe = 2
            if self.airborne and spec.can_hover:
                self.behaviour = bh.Land()
            elif not isinstance(self.behaviour, bh.ReturnToLaunch):
                self.behaviour = bh.ReturnToLaunch()
        elif pct <= spec.failsafe_rtl_pct and self._failsafe < 1:
            self._failsafe = 1
            self.behaviour = bh.ReturnToLaunch()

    def _move(self, g: bh.Guidance, dt: float) -> None:
        spec = self.spec
        ground = self.ground_alt_msl_m
        powered = self.armed and not self.motor_failed and self.battery_wh > 0.0
        # vertical
        if spec.airborne_kind:
            target_alt = max(g.alt_msl_m, ground)
            if not spec.can_hover and not self.airborne and self.speed_mps < spec.min_speed_mps:
                target_alt = ground  # fixed wing on its take-off roll: no lift yet
            descent = spec.max_descent_mps
            if not powered:
                descent *= MOTOR_FAIL_DESCENT_FACTOR
            elif spec.can_hover and self.alt_agl_m < bh.LAND_SLOW_AGL_M and target_alt < self.alt_msl_m:
                descent = min(descent, bh.LAND_SLOW_MPS)
            new_alt = k.approach(
                self.alt_msl_m, target_alt, spec.max_climb_mps * dt if powered else 0.0, descent * dt
            )
        else:
            new_alt = ground
        # horizontal
        target_speed = min(max(g.speed_mps, 0.0), spec.max_speed_mps)
        err = k.angle_diff(g.course_deg, self.heading_deg)
        if spec.airborne_kind:
            if self.airborne and not spec.can_hover:
                target_speed = max(target_speed, spec.min_speed_mps)
            elif spec.can_hover and self.alt_agl_m < TAKEOFF_CLEAR_M and g.alt_msl_m > self.alt_msl_m:
                target_speed = 0.0  # a hover kind lifts off vertically before moving
            elif not self.airborne and not spec.can_hover:
                if powered and g.alt_msl_m > ground + 1.0:
                    target_speed = spec.min_speed_mps * 1.1  # take-off roll along the heading
                    err = 0.0
                else:
                    target_speed = 0.0
        if spec.can_hover and abs(err) > 20.0:
            # slow down to turn: a hover kind turns on the spot, a ground kind keeps rolling a little
            floor = 0.0 if spec.airborne_kind else 0.15
            target_speed *= max(floor, math.cos(math.radians(min(abs(err), 90.0))))
        if not powered and not (spec.airborne_kind and self.airborne and not spec.can_hover):
            target_speed = 0.0
        rate = self.turn_rate_dps()
        if not spec.airborne_kind and self.speed_mps < 0.2 and target_speed <= 0.0:
            rate = 0.0  # a parked ground vehicle does not spin in place
        new_heading = k.turn_toward(self.heading_deg, self.heading_deg + err, rate * dt)
        decel = spec.accel_mps2 * (1.5 if spec.can_hover else 1.0)
        new_speed = k.approach(self.speed_mps, target_speed, spec.accel_mps2 * dt, decel * dt)
        mean_speed = 0.5 * (self.speed_mps + new_speed)
        mean_heading = k.wrap_deg(self.heading_deg + 0.5 * k.angle_diff(new_heading, self.heading_deg))
        if mean_speed > 0.0:
            self.lat, self.lon = k.move(self.lat, self.lon, mean_heading, mean_speed * dt)
        yaw_rate = k.angle_diff(new_heading, self.heading_deg) / dt
        self.accel_mps2 = (new_speed - self.speed_mps) / dt
        self.climb_mps = (new_alt - self.alt_msl_m) / dt
        self.yaw_rate_dps = yaw_rate
        self.heading_deg = new_heading
        self.speed_mps = new_speed
        self.alt_msl_m = new_alt
        if spec.airborne_kind:
            was = self.airborne
            self.airborne = self.alt_agl_m > AIRBORNE_AGL_M
            if was and not self.airborne:
                self.alt_msl_m = ground
                self.climb_mps = 0.0
                if spec.can_hover:
                    self.speed_mps = 0.0
        self._attitude(dt)

    def _attitude(self, dt: float) -> None:
        max_bank = math.radians(self.spec.max_bank_deg)
        if self.spec.airborne_kind and self.airborne:
            roll = max(
                -max_bank, min(max_bank, k.bank_angle(self.speed_mps, math.radians(self.yaw_rate_dps)))
            )
            pitch = self._pitch()
        else:
            roll, pitch = 0.0, 0.0
        self.roll_rate = (roll - self.roll_rad) / dt
        self.pitch_rate = (pitch - self.pitch_rad) / dt
        self.roll_rad, self.pitch_rad = roll, pitch

    def _pitch(self) -> float:
        """Pitch in radians; a hover kind noses down to accelerate and to hold speed against drag."""
        drag = 0.03 * self.speed_mps
        return -math.atan((self.accel_mps2 + drag) / k.G_MPS2)

    def _propulsion_w(self) -> float:
        """Propulsion power now (W): hover + speed-dependent + climb; kinds override."""
        spec = self.spec
        if not self.armed or self.motor_failed or self.battery_wh <= 0.0:
            return 0.0
        if spec.airborne_kind and not self.airborne:
            return (
                0.05 * spec.max_w
                if spec.can_hover
                else 0.1 * spec.max_w * (self.speed_mps / max(spec.min_speed_mps, 1.0))
            )
        ratio = self.speed_mps / max(spec.cruise_speed_mps, 0.1)
        p: float = spec.hover_w + spec.cruise_w * ratio**spec.speed_exponent
        p += spec.climb_w_per_mps * max(0.0, self.climb_mps)
        return min(p, spec.max_w)

    def _power(self, dt: float, propulsion_w: float) -> None:
        spec = self.spec
        self.throttle_pct = min(100, round(100.0 * propulsion_w / spec.max_w)) if spec.max_w > 0 else 0
        power = spec.idle_w + propulsion_w
        self._terminal_age += 1
        # The pack's terminal point is re-solved once a second, or at once when the load moves by
        # more than 5 % or a fault changes the pack; in between the current follows P / V.
        if (
            self._terminal_age >= TERMINAL_EVERY_TICKS
            or abs(power - self._terminal_power_w) > 0.05 * self._terminal_power_w
            or self.battery_resistance_factor != self._terminal_factor
            or self.battery_wh <= 0.0
        ):
            v, i = bat.terminal(spec.battery, self.soc, power, self.battery_resistance_factor)
            self._terminal_age = 0
            self._terminal_power_w = power
            self._terminal_factor = self.battery_resistance_factor
        else:
            v = self.voltage_v
            i = power / v if v > 0.0 else 0.0
        self.power_w = power
        self.voltage_v, self.current_a = v, i
        self.battery_wh = bat.drain(self.battery_wh, self.power_w, dt)
        if self.battery_fail_wh_per_s > 0.0:
            self.battery_wh = max(0.0, self.battery_wh - self.battery_fail_wh_per_s * dt)
        self.consumed_mah += i * dt / 3.6
        self.energy_hj += self.power_w * dt / 100.0

    # ------------------------------------------------------------------ GPS
    @property
    def gps_mode(self) -> str:
        """The GPS receiver's mode: ``ok``, ``degraded`` or ``dropout``."""
        return self.gps.mode

    def set_gps_mode(self, mode: str) -> None:
        """Switch the GPS receiver between ``ok``, ``degraded`` and ``dropout``."""
        self.gps.set_mode(mode, self.lat, self.lon, self.alt_msl_m)

    def estimated_position(self) -> tuple[float, float]:
        """Return the position the autopilot believes (the truth plus dead-reckoning drift without GPS)."""
        return self.gps.estimate(self.lat, self.lon)

    def gps_sample(self) -> tuple[int, float, float, float, int, int, int]:
        """Draw one GPS_RAW_INT reading: (fix_type, lat, lon, alt_msl_m, eph_cm, epv_cm, satellites)."""
        return self.gps.sample(self.lat, self.lon, self.alt_msl_m)

    # ------------------------------------------------------------------ boot
    def reboot(self) -> None:
        """Restart the onboard computer now: a new boot (count + 1), time since boot restarts at 0."""
        self.boot_count += 1
        self.boot_epoch_s = self.clock.now()

    def time_boot_ms(self) -> int:
        """Milliseconds since the current boot (MAVLink ``time_boot_ms``)."""
        return max(0, round((self.clock.now() - self.boot_epoch_s) * 1000.0)) & 0xFFFFFFFF

    # ------------------------------------------------------------------ commands
    def handle_command(self, command: Mapping[str, Any]) -> CommandResult:
        """Execute a command at most once per ``command_id`` (see :class:`CommandHandler`)."""
        return self.commands.handle(command)

    @property
    def executed(self) -> collections.OrderedDict[str, CommandResult]:
        """What this device did with each ``command_id`` it remembers, oldest first."""
        return self.commands.executed

    # ------------------------------------------------------------------ registration
    def entity_record(self) -> dict[str, Any]:
        """Return the entity record this device registers with (docs/wire.md entities columns)."""
        return {
            "entity_id": self.entity_id,
            "org_id": self.org_id,
            "name": self.name,
            "entity_type": self.spec.entity_type,
            "status": "active",
            "priority": "normal",
            "latitude": round(self.lat, 7),
            "longitude": round(self.lon, 7),
            "altitude": round(self.alt_msl_m, 2),
            "heading": round(self.heading_deg, 1) % 360.0,
            "source": "overwatch-lab-simulator",
            "tags": ["simulated", self.spec.kind] + ([self.fleet] if self.fleet else []),
            "metadata": {"kind": self.spec.kind, "fleet": self.fleet, "system_id": self.system_id},
        }
