"""One MAVLink vehicle behind the bridge: its identity, where it is, and lab commands run against it.

A :class:`Vehicle` is created by its autopilot's first HEARTBEAT and keeps what the bridge
needs to talk back: the address its packets come from, when it was last heard, its current
``custom_mode``, and the replies awaited by commands in progress (:meth:`Vehicle.expect`).

:class:`CommandRelay` is the device side of the lab's command contract for that vehicle, plugged
into a :class:`~simulators.command_link.CommandLink` (which receives, deduplicates and acks on
the wire). Its ``hook`` accepts a command when the bridge can carry it (a live link heard
recently, an action that maps onto MAVLink); its ``execute`` runs the exchanges of
:mod:`overwatch_lab.mavlink.outbound` one by one, one command at a time per vehicle (the MAVLink
command protocol), and returns None when the autopilot accepted everything (the lab records
SUCCEEDED) or the reason (FAILED): the MAV_RESULT / MAV_MISSION_RESULT it answered, or that it
did not answer after every retry. COMMAND_ACK IN_PROGRESS keeps the command EXECUTING until the
final COMMAND_ACK.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from overwatch_lab.errors import EnvelopeError
from overwatch_lab.mavlink.outbound import (
    MAV_MISSION_RESULT,
    MAV_RESULT_ACCEPTED,
    MAV_RESULT_IN_PROGRESS,
    MSG_ID_SET_MODE,
    Exchange,
    command_name,
    plan,
    result_name,
)
from overwatch_lab.protocol.command_actions import Action, relay_messages, validate_params

log = logging.getLogger(__name__)

REPLY_TYPES = frozenset({"COMMAND_ACK", "MISSION_ACK", "MISSION_REQUEST", "MISSION_REQUEST_INT", "HEARTBEAT"})
"""Message types that may answer a command (looked at only while a command waits)."""

Address = tuple[str, int]
Match = Callable[[Any], bool]


@dataclass(slots=True)
class _Expectation:
    match: Match
    replies: asyncio.Queue[Any]


@dataclass(slots=True)
class Vehicle:
    """A vehicle seen on the MAVLink side (one system id), registered as one entity.

    Attributes:
        system_id: MAVLink system id.
        component_id: its autopilot's component id (commands go there).
        entity_id: the lab entity.
        entity_type: from its HEARTBEAT ``type``.
        subject: its telemetry subject.
        addr: where its packets last came from (None for a replayed log).
        last_heard: ``time.monotonic()`` of its last packet.
        last_us: the last envelope timestamp given to its telemetry (µs; strictly increasing).
        custom_mode: from its last HEARTBEAT.
    """

    system_id: int
    component_id: int
    entity_id: str
    entity_type: str
    subject: str
    addr: Address | None = None
    last_heard: float = 0.0
    last_us: int = 0
    custom_mode: int | None = None
    _expecting: list[_Expectation] = field(default_factory=list)

    @property
    def waiting(self) -> bool:
        """True while a command waits for a reply from this vehicle."""
        return bool(self._expecting)

    def expect(self, match: Match, size: int = 64) -> _Expectation:
        """Start collecting the replies that ``match`` (until :meth:`forget`)."""
        e = _Expectation(match, asyncio.Queue(maxsize=size))
        self._expecting.append(e)
        return e

    def forget(self, e: _Expectation) -> None:
        """Stop collecting for ``e``."""
        if e in self._expecting:
            self._expecting.remove(e)

    def dispatch(self, msg: Any) -> None:
        """Hand a reply-type message to every command waiting for it (extra replies are dropped)."""
        for e in self._expecting:
            if e.match(msg) and not e.replies.full():
                e.replies.put_nowait(msg)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the relay's hook said about a command (``accepted``/``reason`` as CommandLink reads them)."""

    accepted: bool
    reason: str | None = None
    exchanges: tuple[Exchange, ...] = ()


Send = Callable[[Vehicle, dict[str, Any]], None]
"""Encodes one relay message for the vehicle and sends it (the bridge's UDP side)."""


class CommandRelay:
    """Runs the lab's commands for one vehicle over MAVLink (see the module docstring).

    Args:
        vehicle: the vehicle.
        send: writes one relay message to the vehicle.
        timeout_s: how long one request waits for its reply before it is sent again.
        attempts: sends per request (COMMAND_LONG's ``confirmation`` counts them).
        progress_timeout_s: how long a command answered IN_PROGRESS may take to finish.
        offline_after_s: a vehicle not heard for longer is offline: its commands are rejected.
    """

    def __init__(
        self,
        vehicle: Vehicle,
        send: Send,
        *,
        timeout_s: float,
        attempts: int,
        progress_timeout_s: float,
        offline_after_s: float,
    ) -> None:
        self.vehicle = vehicle
        self._send = send
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.progress_timeout_s = progress_timeout_s
        self.offline_after_s = offline_after_s
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ CommandLink's hooks
    def hook(self, command: dict[str, Any]) -> Verdict:
        """Accept a command the bridge can carry to the vehicle now; reject it with the reason otherwise."""
        v = self.vehicle
        if v.addr is None:
            return Verdict(False, f"system {v.system_id} is replayed from a log: there is no link to send on")
        quiet = time.monotonic() - v.last_heard
        if quiet > self.offline_after_s:
            return Verdict(False, f"system {v.system_id} not heard for {quiet:.0f} s (offline)")
        try:
            action = Action(command["command_type"])
            params = validate_params(action, command.get("params"))
            exchanges = plan(relay_messages(action, params))
        except (ValueError, KeyError, EnvelopeError) as exc:
            return Verdict(False, f"cannot map onto MAVLink: {exc}")
        return Verdict(True, None, tuple(exchanges))

    async def execute(self, command: dict[str, Any], verdict: Verdict) -> str | None:
        """Run the command's exchanges in order; None when all were accepted, else why not."""
        async with self._lock:  # one command at a time per vehicle
            for ex in verdict.exchanges:
                if ex.kind == "command":
                    failure = await self._command(ex)
                elif ex.kind == "set_mode":
                    failure = await self._set_mode(ex)
                elif ex.kind == "clear":
                    failure = await self._clear(ex)
                else:
                    failure = await self._mission(ex)
                if failure is not None:
                    log.info("%s: %s failed: %s", self.vehicle.entity_id, command.get("command_id"), failure)
                    return failure
        return None

    # ------------------------------------------------------------------ exchanges
    async def _ask(self, msgs: Callable[[int], dict[str, Any]], match: Match) -> Any | None:
        """Send ``msgs(attempt)`` until a reply matches (``attempts`` times); the reply or None."""
        e = self.vehicle.expect(match)
        try:
            for attempt in range(self.attempts):
                self._send(self.vehicle, msgs(attempt))
                try:
                    async with asyncio.timeout(self.timeout_s):
                        return await e.replies.get()
                except TimeoutError:
                    continue
            return None
        finally:
            self.vehicle.forget(e)

    async def _command(self, ex: Exchange) -> str | None:
        cmd = int(ex.first["command"])
        name = command_name(cmd)
        sysid = self.vehicle.system_id

        def is_ack(m: Any) -> bool:
            return bool(m.get_type() == "COMMAND_ACK" and m.command == cmd and m.get_srcSystem() == sysid)

        e = self.vehicle.expect(is_ack)
        try:
            ack = None
            for attempt in range(self.attempts):
                msg = dict(ex.first)
                if msg["type"] == "command_long":
                    msg["confirmation"] = attempt
                self._send(self.vehicle, msg)
                try:
                    async with asyncio.timeout(self.timeout_s):
                        ack = await e.replies.get()
                    break
                except TimeoutError:
                    continue
            if ack is None:
                return f"no COMMAND_ACK for {name} after {self.attempts} tries of {self.timeout_s:g} s"
            if ack.result == MAV_RESULT_IN_PROGRESS:
                try:
                    async with asyncio.timeout(self.progress_timeout_s):
                        while ack.result == MAV_RESULT_IN_PROGRESS:
                            ack = await e.replies.get()
                except TimeoutError:
                    return f"{name} still {result_name(MAV_RESULT_IN_PROGRESS)} after {self.progress_timeout_s:g} s"
        finally:
            self.vehicle.forget(e)
        if ack.result != MAV_RESULT_ACCEPTED:
            return f"the autopilot answered {result_name(ack.result)} to {name}"
        return None

    async def _set_mode(self, ex: Exchange) -> str | None:
        wanted = int(ex.first["custom_mode"])
        sysid, compid = self.vehicle.system_id, self.vehicle.component_id

        def done(m: Any) -> bool:
            if m.get_srcSystem() != sysid:
                return False
            t = m.get_type()
            if t == "COMMAND_ACK":
                return bool(m.command == MSG_ID_SET_MODE)
            return bool(t == "HEARTBEAT" and m.get_srcComponent() == compid and m.custom_mode == wanted)

        reply = await self._ask(lambda _attempt: dict(ex.first), done)
        if reply is None:
            return f"no COMMAND_ACK for SET_MODE nor a HEARTBEAT in custom_mode {wanted} after {self.attempts} tries"
        if reply.get_type() == "COMMAND_ACK" and reply.result != MAV_RESULT_ACCEPTED:
            return f"the autopilot answered {result_name(reply.result)} to SET_MODE custom_mode {wanted}"
        return None

    async def _clear(self, ex: Exchange) -> str | None:
        sysid = self.vehicle.system_id
        reply = await self._ask(
            lambda _attempt: dict(ex.first),
            lambda m: m.get_type() == "MISSION_ACK" and m.get_srcSystem() == sysid,
        )
        if reply is None:
            return f"no MISSION_ACK for MISSION_CLEAR_ALL after {self.attempts} tries"
        if reply.type != 0:
            return f"the autopilot answered MAV_MISSION_{MAV_MISSION_RESULT.get(reply.type, reply.type)} to MISSION_CLEAR_ALL"
        return None

    async def _mission(self, ex: Exchange) -> str | None:
        """MISSION_COUNT, then each MISSION_ITEM_INT the autopilot asks for, until its MISSION_ACK."""
        sysid = self.vehicle.system_id
        items = ex.items
        e = self.vehicle.expect(
            lambda m: (
                m.get_srcSystem() == sysid
                and m.get_type() in ("MISSION_REQUEST_INT", "MISSION_REQUEST", "MISSION_ACK")
            ),
            size=len(items) + 16,
        )
        try:
            asked: set[int] = set()
            tries = 0
            resend: dict[str, Any] = dict(ex.first)  # what to send again when nothing comes
            self._send(self.vehicle, resend)
            while True:
                try:
                    async with asyncio.timeout(self.timeout_s):
                        reply = await e.replies.get()
                except TimeoutError:
                    tries += 1
                    if tries >= self.attempts:
                        where = f"after item {max(asked)}" if asked else "before the first MISSION_REQUEST"
                        return (
                            f"mission upload stalled {where} ({len(asked)} of {len(items)} items asked for)"
                        )
                    self._send(self.vehicle, resend)
                    continue
                tries = 0
                if reply.get_type() == "MISSION_ACK":
                    if reply.type != 0:
                        name = MAV_MISSION_RESULT.get(reply.type, str(reply.type))
                        return f"the autopilot answered MAV_MISSION_{name} to the mission upload"
                    if len(asked) < len(items):
                        return f"MISSION_ACK after only {len(asked)} of {len(items)} items"
                    return None
                seq = int(reply.seq)
                if not 0 <= seq < len(items):
                    return f"the autopilot asked for mission item {seq} of {len(items)}"
                asked.add(seq)
                resend = dict(items[seq])
                self._send(self.vehicle, resend)
        finally:
            self.vehicle.forget(e)


__all__ = ["REPLY_TYPES", "CommandRelay", "Vehicle", "Verdict"]
