"""What a simulated device does with a command: the lab's actions mapped onto behaviours, at most once.

A device speaks the lab's command vocabulary, :mod:`overwatch_lab.protocol.command_actions`,
and nothing else. It takes either spelling the wire contract has:

* an action with params: ``{"command_id": "c1", "command_type": "goto", "params": {"lat": ..,
  "lon": .., "alt_m": 40}}`` (``action`` may stand for ``command_type``); this is what
  :class:`~simulators.command_link.CommandLink` hands the device from a delivery. The params
  are checked by protocol's :func:`~overwatch_lab.protocol.command_actions.validate_params`.
* Overwatch's flat edge-relay fields: ``command_type`` ``command_long``, ``command_int``,
  ``set_mode`` or ``mission_item_int`` with that message's MAVLink fields, read back into an
  action by protocol's :func:`~overwatch_lab.protocol.command_actions.action_from_relay`.

Then the device decides what it can do now (a sensor mast does not move, a disarmed aircraft
must arm first, a failed motor allows only ``land``) and switches behaviour. ``set_mode`` maps
an ArduCopter mode onto the action the simulator flies (:data:`MODE_ACTIONS`). Altitudes:
``alt_m`` is metres above home, ``alt_msl_m`` above mean sea level; without either a device
keeps its height (or takes its kind's default height when it is still on the ground).

Pure: no I/O; a command only changes the device's behaviour, arming and cruise speed.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from overwatch_lab.errors import EnvelopeError
from overwatch_lab.protocol.command_actions import (
    RELAY_FIELDS,
    RELAY_TYPES,
    Action,
    action_from_relay,
    validate_params,
)
from simulators import behaviours as bh

if TYPE_CHECKING:
    from simulators.devices.base import Device

DEFAULT_ORBIT_RADIUS_M = 50.0  # m, an orbit without radius_m
EXECUTED_MEMORY = 10_000  # command_ids remembered for at-most-once execution

MODE_ACTIONS: Mapping[str, Action] = MappingProxyType(
    {
        "RTL": Action.RTL,
        "SMART_RTL": Action.RTL,
        "AUTO_RTL": Action.RTL,
        "LAND": Action.LAND,
        "LOITER": Action.HOLD,
        "POSHOLD": Action.HOLD,
        "BRAKE": Action.HOLD,
        "GUIDED": Action.HOLD,
        "ALT_HOLD": Action.HOLD,
        "CIRCLE": Action.ORBIT,
    }
)
"""ArduCopter mode (``set_mode``) → the action a simulated device flies for it; other modes are refused."""

MOVING: frozenset[Action] = frozenset(
    {Action.GOTO, Action.FOLLOW_ROUTE, Action.ORBIT, Action.HOLD, Action.RTL, Action.LAND, Action.SET_SPEED}
)
"""Actions a device that cannot move (a sensor mast) refuses."""

_COMMAND_KEYS = frozenset(
    {"command_id", "command_type", "action", "params", "target_system", "target_component"}
)
_ACTIONS = frozenset(a.value for a in Action)


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a device did with a command.

    Attributes:
        command_id: the command's id ("" if it had none).
        accepted: True when executed (or, for a duplicate, when first executed).
        reason: why it was rejected ("" when accepted).
        behaviour: the behaviour the device switched to, when accepted.
        duplicate: True when this command_id was seen before and nothing was done now.
    """

    command_id: str
    accepted: bool
    reason: str = ""
    behaviour: str | None = None
    duplicate: bool = False


def parse_command(command: object) -> tuple[Action, dict[str, Any]]:
    """Return the action of a device command and its validated params (see the module docstring).

    Raises:
        EnvelopeError: not an object, an unknown action or relay type, or invalid params (the
            message says which).
    """
    if not isinstance(command, Mapping):
        raise EnvelopeError(f"a command must be an object, got {type(command).__name__}")
    name = command.get("action", command.get("command_type"))
    if not isinstance(name, str):
        raise EnvelopeError(f"a command needs an action (command_type): one of {', '.join(Action)}")
    if name in RELAY_TYPES and (
        name not in _ACTIONS or (set(command) & RELAY_FIELDS and "params" not in command)
    ):
        extra = sorted(set(command) - _COMMAND_KEYS - RELAY_FIELDS)
        if extra or "params" in command:
            raise EnvelopeError(
                f"a relay command carries only {name}'s MAVLink fields, flat (got {', '.join(extra or ['params'])})"
            )
        action, params = action_from_relay(name, command)
        return action, validate_params(action, params)
    try:
        action = Action(name)
    except ValueError:
        raise EnvelopeError(
            f"unknown action {name!r}; one of {', '.join(Action)} (or relay {', '.join(sorted(RELAY_TYPES))})"
        ) from None
    extra = sorted(set(command) - _COMMAND_KEYS)
    if extra:
        raise EnvelopeError(f"{action} takes its params in params, not flat (got {', '.join(extra)})")
    return action, validate_params(action, command.get("params"))


class CommandHandler:
    """One device's command endpoint: execute each ``command_id`` at most once, map it onto a behaviour.

    Args:
        dev: the device it commands.
        memory: how many command ids to remember for at-most-once execution.
    """

    __slots__ = ("dev", "executed", "memory")

    def __init__(self, dev: Device, *, memory: int = EXECUTED_MEMORY) -> None:
        self.dev = dev
        self.memory = memory
        self.executed: collections.OrderedDict[str, CommandResult] = collections.OrderedDict()

    def handle(self, command: Mapping[str, Any]) -> CommandResult:
        """Execute a command at most once per ``command_id``; map it onto a behaviour.

        A ``command_id`` seen before is not executed again: the earlier result is returned with
        ``duplicate=True``. Invalid commands and commands the device cannot do now are rejected
        (``accepted=False`` and a reason) and remembered too.
        """
        raw_id = command.get("command_id") if isinstance(command, Mapping) else None
        command_id = str(raw_id or "")
        if command_id and command_id in self.executed:
            first = self.executed[command_id]
            return CommandResult(command_id, first.accepted, first.reason, first.behaviour, duplicate=True)
        try:
            action, params = parse_command(command)
            reason = self.apply(action, params)
        except EnvelopeError as exc:
            reason = str(exc)
        result = CommandResult(
            command_id, reason == "", reason, self.dev.behaviour.name if reason == "" else None
        )
        if command_id:
            self.executed[command_id] = result
            while len(self.executed) > self.memory:
                self.executed.popitem(last=False)
        return result

    def apply(self, action: Action, p: Mapping[str, Any]) -> str:
        """Apply a validated action now; return "" when accepted, else the reason it was refused."""
        dev = self.dev
        spec = dev.spec
        if action is Action.SET_MODE:
            mapped = MODE_ACTIONS.get(p["mode"])
            if mapped is None:
                return (
                    f"mode {p['mode']} is not supported by the simulator; "
                    f"use one of {', '.join(sorted(MODE_ACTIONS))}"
                )
            action, p = mapped, {}
        if not spec.moves and action in MOVING:
            return f"{spec.kind} cannot move ({action} rejected)"
        if action is Action.ARM:
            if dev.motor_failed:
                return "motor failure: cannot arm"
            if dev.battery_pct <= max(spec.failsafe_land_pct, 0):
                return f"battery at {dev.battery_pct} %: cannot arm"
            dev.armed = True
            return ""
        if action is Action.DISARM:
            if dev.airborne and not p.get("force", False):
                return "airborne: disarm refused (send force=true to cut the motors)"
            dev.armed = False
            dev.behaviour = bh.Idle()
            return ""
        if action is Action.SET_SPEED:
            speed = p["speed_mps"]
            if not 0 < speed <= spec.max_speed_mps:
                return f"speed must be in (0, {spec.max_speed_mps}] m/s, got {speed}"
            if speed < spec.min_speed_mps:
                return f"speed {speed} m/s is below the minimum {spec.min_speed_mps} m/s"
            dev.cruise_speed_mps = speed
            return ""
        if dev.motor_failed and action is not Action.LAND:
            return f"motor failure: {action} rejected"
        if not dev.armed and action is not Action.LAND:
            return f"not armed: arm before {action}"
        self._fly(action, p)
        return ""

    def _fly(self, action: Action, p: Mapping[str, Any]) -> None:
        dev = self.dev
        alt = self._alt_msl(p)
        speed = p.get("speed_mps")
        lat, lon = p.get("lat", dev.lat), p.get("lon", dev.lon)
        if action is Action.GOTO:
            dev.behaviour = bh.Goto(bh.Waypoint(p["lat"], p["lon"], alt), speed)
        elif action is Action.HOLD:
            dev.behaviour = bh.Hold(bh.Waypoint(lat, lon, alt))
        elif action is Action.FOLLOW_ROUTE:
            wps = [
                bh.Waypoint(wp[0], wp[1], self._waypoint_alt(wp[2] if len(wp) == 3 else None))
                for wp in p["waypoints"]
            ]
            dev.behaviour = bh.Route(wps, loop=p.get("loop", False), speed_mps=speed)
        elif action is Action.ORBIT:
            radius = p.get("radius_m", DEFAULT_ORBIT_RADIUS_M)
            clockwise = p.get("clockwise", True)
            dev.behaviour = bh.Orbit(bh.Waypoint(lat, lon, alt), radius, clockwise=clockwise, speed_mps=speed)
        elif action is Action.RTL:
            dev.behaviour = bh.ReturnToLaunch()
        elif action is Action.LAND:
            if not dev.spec.airborne_kind:
                dev.behaviour = bh.Hold(bh.Waypoint(lat, lon, dev.ground_alt_msl_m))
            elif dev.airborne:
                point = bh.Waypoint(lat, lon, dev.ground_alt_msl_m) if "lat" in p else None
                dev.behaviour = bh.Land(point)

    def _alt_msl(self, p: Mapping[str, Any]) -> float:
        """The altitude (MSL) a command flies at: alt_msl_m, else alt_m above home, else as now."""
        dev = self.dev
        if "alt_msl_m" in p:
            return float(p["alt_msl_m"])
        if "alt_m" in p:
            return dev.home.alt_msl_m + float(p["alt_m"])
        if not dev.spec.airborne_kind:
            return dev.ground_alt_msl_m
        if dev.airborne:
            return dev.alt_msl_m
        return dev.home.alt_msl_m + dev.spec.default_agl_m

    def _waypoint_alt(self, alt_m: float | None) -> float:
        """The altitude (MSL) of a route waypoint: alt_m above home, else as now."""
        dev = self.dev
        if not dev.spec.airborne_kind:
            return dev.ground_alt_msl_m
        if alt_m is None:
            return dev.alt_msl_m if dev.airborne else dev.home.alt_msl_m + dev.spec.default_agl_m
        return dev.home.alt_msl_m + alt_m
