"""MAVLink out: the lab's relay messages → pymavlink messages, and what answers each one.

A command delivery names an action and its params; :func:`overwatch_lab.protocol.command_actions.relay_messages`
maps them onto the MAVLink messages an edge relay writes (``command_long``, ``command_int``,
``set_mode``, ``mission_clear_all``, ``mission_count``, ``mission_item_int``). :func:`encode`
builds the pymavlink message of one of them for a target vehicle; :func:`plan` groups them into
the exchanges the bridge runs, each with the reply that ends it:

================================  ==========================================================
exchange                          ends with
================================  ==========================================================
``command_long`` / ``command_int``  COMMAND_ACK for that command (IN_PROGRESS: wait for the final one)
``set_mode``                      COMMAND_ACK for SET_MODE (id 11, what ArduPilot sends) or a
                                  HEARTBEAT showing the new ``custom_mode``
``mission_clear_all``             MISSION_ACK
``mission_count`` + items         MISSION_REQUEST_INT / MISSION_REQUEST (seq) answered with that
                                  MISSION_ITEM_INT, until MISSION_ACK (the mission protocol)
================================  ==========================================================

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from overwatch_lab.errors import EnvelopeError

MSG_ID_SET_MODE = 11  # COMMAND_ACK.command for a SET_MODE (ArduPilot's GCS_MAVLink handle_set_mode)

MAV_RESULT: MappingProxyType[int, str] = MappingProxyType(
    {
        0: "ACCEPTED",
        1: "TEMPORARILY_REJECTED",
        2: "DENIED",
        3: "UNSUPPORTED",
        4: "FAILED",
        5: "IN_PROGRESS",
        6: "CANCELLED",
        7: "COMMAND_LONG_ONLY",
        8: "COMMAND_INT_ONLY",
    }
)
"""MAV_RESULT value → name (COMMAND_ACK.result)."""
MAV_RESULT_ACCEPTED = 0
MAV_RESULT_IN_PROGRESS = 5

MAV_MISSION_RESULT: MappingProxyType[int, str] = MappingProxyType(
    {
        0: "ACCEPTED", 1: "ERROR", 2: "UNSUPPORTED_FRAME", 3: "UNSUPPORTED", 4: "NO_SPACE",
        5: "INVALID", 6: "INVALID_PARAM1", 7: "INVALID_PARAM2", 8: "INVALID_PARAM3",
        9: "INVALID_PARAM4", 10: "INVALID_PARAM5_X", 11: "INVALID_PARAM6_Y", 12: "INVALID_PARAM7",
        13: "INVALID_SEQUENCE", 14: "DENIED", 15: "OPERATION_CANCELLED",
    }
)  # fmt: skip
"""MAV_MISSION_RESULT value → name (MISSION_ACK.type)."""

MAV_CMD_NAMES: MappingProxyType[int, str] = MappingProxyType(
    {16: "NAV_WAYPOINT", 17: "NAV_LOITER_UNLIM", 20: "NAV_RETURN_TO_LAUNCH", 21: "NAV_LAND",
     34: "DO_ORBIT", 176: "DO_SET_MODE", 178: "DO_CHANGE_SPEED", 192: "DO_REPOSITION",
     300: "MISSION_START", 400: "COMPONENT_ARM_DISARM"}
)  # fmt: skip
"""The MAV_CMD numbers the lab's actions use → their names (for failure reasons)."""


def result_name(result: int) -> str:
    """Return ``MAV_RESULT_{name}`` of a COMMAND_ACK result (``MAV_RESULT_{n}`` when unknown)."""
    return f"MAV_RESULT_{MAV_RESULT.get(result, str(result))}"


def command_name(command: int) -> str:
    """Return ``MAV_CMD_{name}`` of a MAV_CMD number, or the number."""
    name = MAV_CMD_NAMES.get(command)
    return f"MAV_CMD_{name}" if name else f"MAV_CMD {command}"


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request the bridge sends and the reply it waits for.

    Attributes:
        kind: ``command`` (COMMAND_LONG/COMMAND_INT), ``set_mode``, ``clear`` (MISSION_CLEAR_ALL)
            or ``mission`` (MISSION_COUNT, then the items on request).
        first: the relay message sent first.
        items: for ``mission``, the MISSION_ITEM_INT relay messages by seq.
    """

    kind: str
    first: Mapping[str, Any]
    items: Sequence[Mapping[str, Any]] = field(default_factory=tuple)


def plan(relay: Sequence[Mapping[str, Any]]) -> list[Exchange]:
    """Group relay messages into exchanges, in order.

    Raises:
        EnvelopeError: a relay message of a type the bridge does not write, or mission items
            without their MISSION_COUNT.
    """
    out: list[Exchange] = []
    k = 0
    while k < len(relay):
        msg = relay[k]
        kind = msg.get("type")
        if kind in ("command_long", "command_int"):
            out.append(Exchange("command", msg))
        elif kind == "set_mode":
            out.append(Exchange("set_mode", msg))
        elif kind == "mission_clear_all":
            out.append(Exchange("clear", msg))
        elif kind == "mission_count":
            count = int(msg["count"])
            items = relay[k + 1 : k + 1 + count]
            if len(items) != count or any(i.get("type") != "mission_item_int" for i in items):
                raise EnvelopeError(f"mission_count {count} is not followed by {count} mission_item_int")
            out.append(Exchange("mission", msg, tuple(items)))
            k += count
        else:
            raise EnvelopeError(f"the MAVLink bridge does not write {kind!r} messages")
        k += 1
    return out


def encode(mav: Any, msg: Mapping[str, Any], target_system: int, target_component: int) -> Any:
    """Build the pymavlink message of one relay message for a target.

    Args:
        mav: a pymavlink ``MAVLink`` instance of the v2 dialect (its ``*_encode`` methods).
        msg: a relay message (``{"type": ..., fields}``, raw MAVLink units).
        target_system / target_component: the vehicle.

    Raises:
        EnvelopeError: an unknown relay type.
    """
    kind = msg["type"]
    ts, tc = target_system, target_component
    if kind == "command_long":
        p = [float(msg.get(f"param{i}", 0.0)) for i in range(1, 8)]
        return mav.command_long_encode(ts, tc, int(msg["command"]), int(msg.get("confirmation", 0)), *p)
    if kind == "command_int":
        p = [float(msg.get(f"param{i}", 0.0)) for i in range(1, 5)]
        return mav.command_int_encode(
            ts, tc, int(msg["frame"]), int(msg["command"]), int(msg.get("current", 0)),
            int(msg.get("autocontinue", 0)), *p, int(msg["x"]), int(msg["y"]), float(msg["z"]),
        )  # fmt: skip
    if kind == "set_mode":
        return mav.set_mode_encode(ts, int(msg["base_mode"]), int(msg["custom_mode"]))
    if kind == "mission_clear_all":
        return mav.mission_clear_all_encode(ts, tc, int(msg.get("mission_type", 0)))
    if kind == "mission_count":
        return mav.mission_count_encode(ts, tc, int(msg["count"]), int(msg.get("mission_type", 0)))
    if kind == "mission_item_int":
        p = [float(msg.get(f"param{i}", 0.0)) for i in range(1, 5)]
        return mav.mission_item_int_encode(
            ts, tc, int(msg["seq"]), int(msg["frame"]), int(msg["command"]), int(msg.get("current", 0)),
            int(msg.get("autocontinue", 1)), *p, int(msg["x"]), int(msg["y"]), float(msg["z"]),
            int(msg.get("mission_type", 0)),
        )  # fmt: skip
    raise EnvelopeError(f"the MAVLink bridge does not write {kind!r} messages")


__all__ = [
    "MAV_CMD_NAMES",
    "MAV_MISSION_RESULT",
    "MAV_RESULT",
    "Exchange",
    "command_name",
    "encode",
    "plan",
    "result_name",
]
