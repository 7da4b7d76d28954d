"""The device side of commands, on the wire: receive, acknowledge, execute at most once.

A :class:`CommandLink` is what a device (or its MAVLink relay) runs for one entity, following
the contract in :mod:`overwatch_lab.protocol.commands`:

1. subscribe to ``constellation.devices.{org}.{entity}.commands`` (core NATS);
2. on a delivery, ack RECEIVED; refuse it if its ``expires_at`` has passed (REJECTED);
3. hand the command to the device's hook: rejected → REJECTED with the hook's reason; accepted →
   ACCEPTED, EXECUTING, then SUCCEEDED, or FAILED with a reason when the optional ``execute``
   coroutine reports a failure (or raises);
4. acks go to ``constellation.command_acks.{org}.{entity}`` through JetStream, pipelined (sent
   in order at once, their storage confirmed before a long execution starts and at the end; an
   unconfirmed ack is sent again, and ``Nats-Msg-Id`` makes a resent ack harmless).

A ``command_id`` is executed at most once: a second delivery (the lab resends until it sees an
ack, and resends everything open after a restart) only re-sends the latest ack. A cancel notice
cancels a command not yet delivered (it is then never executed) or still executing (its
``execute`` task is cancelled and CANCELLED is acked).

The hook gets the delivery's action and params, ``{"command_id", "command_type": <action>,
"params": {...}}``: the lab's vocabulary, which a simulated device reads with
:func:`simulators.devices.command_handler.parse_command`. So a simulated device is attached with
``CommandLink(nc, org, entity, device.handle_command)``; the hook returns an object with
``accepted`` and ``reason`` (:class:`simulators.devices.command_handler.CommandResult`). A runner
attaches one link per device and stops them all at the end::

    links = [CommandLink(nc, org, d.entity_id, lambda c, eid=d.entity_id: handle.command(eid, c))
             for d in devices]
    for link in links: await link.start()
    ...
    for link in links: await link.stop()
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from overwatch_lab.errors import ProtocolError
from overwatch_lab.protocol import envelopes
from overwatch_lab.protocol.commands import (
    CommandStatus,
    ack_msg_id,
    ack_subject,
    delivery_subject,
    make_ack,
)
from overwatch_lab.protocol.envelopes import loads_strict, parse_timestamp

log = logging.getLogger(__name__)
S = CommandStatus

Hook = Callable[[dict[str, Any]], Any]
"""Receives the device command; returns an object with ``accepted`` (bool) and ``reason`` (str)."""
Execute = Callable[[dict[str, Any], Any], Coroutine[Any, Any, str | None]]
"""Runs an accepted command: returns None on success or the reason it failed."""

DEFAULT_MEMORY = 10_000  # command ids remembered for dedup
DEFAULT_MAX_INFLIGHT = 1_000  # deliveries handled at once; beyond, dropped (the lab resends)
ACK_ATTEMPTS = 5
ACK_RETRY_S = 0.2
ACK_CONFIRM_S = 5.0  # how long pipelined acks may wait for their PubAck before being resent


@dataclass(slots=True)
class LinkStats:
    """What one link did."""

    deliveries: int = 0
    executed: int = 0  # hook calls: never more than one per command_id
    duplicates: int = 0
    rejected: int = 0
    failed: int = 0
    cancelled: int = 0
    invalid: int = 0  # deliveries that were not a command (logged, not acked: no command_id)
    dropped: int = 0  # deliveries over max_inflight (not acked: the lab resends them)
    acks_sent: int = 0
    ack_failures: int = 0

    def snapshot(self) -> dict[str, Any]:
        """Return a plain dict copy."""
        return asdict(self)


@dataclass(slots=True)
class _Seen:
    status: CommandStatus
    reason: str | None = None
    cancel: bool = False


@dataclass(slots=True)
class _Pending:
    """An ack published but not yet confirmed stored."""

    status: CommandStatus
    body: bytes
    future: asyncio.Future[Any] | None


def device_command(envelope: dict[str, Any]) -> dict[str, Any]:
    """The command as the device hook sees it: the action as ``command_type``, with its params."""
    return {
        "command_id": envelope["command_id"],
        "command_type": envelope["action"],
        "params": dict(envelope.get("params") or {}),
    }


class CommandLink:
    """The command endpoint of one device (see the module docstring).

    Args:
        nc: a connected NATS client.
        org_id / entity_id: the device's identity.
        hook: the device's command hook (e.g. ``device.handle_command``).
        execute: optional coroutine run after EXECUTING; None → SUCCEEDED at once.
        memory: how many command ids to remember for dedup.
        max_inflight: deliveries handled concurrently; more are dropped unacknowledged, and the
            lab's resend brings them back (a bounded device, not an unbounded task pile).
        clock: epoch seconds for ack timestamps and expiry checks.
    """

    def __init__(
        self,
        nc: NATS,
        org_id: str,
        entity_id: str,
        hook: Hook,
        *,
        execute: Execute | None = None,
        memory: int = DEFAULT_MEMORY,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.org_id = org_id
        self.entity_id = entity_id
        self.hook = hook
        self.execute = execute
        self.memory = memory
        self.max_inflight = max_inflight
        self.clock = clock
        self.stats = LinkStats()
        self._seen: collections.OrderedDict[str, _Seen] = collections.OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: dict[str, asyncio.Task[str | None]] = {}
        self._sub: Subscription | None = None
        self._subject = delivery_subject(org_id, entity_id)
        self._acks = ack_subject(org_id, entity_id)

    def __repr__(self) -> str:
        return f"<CommandLink {self.org_id}/{self.entity_id} {'online' if self.online else 'offline'}>"

    @property
    def online(self) -> bool:
        """True while subscribed."""
        return self._sub is not None

    def status_of(self, command_id: str) -> CommandStatus | None:
        """The last status this device reported for a command (None if never seen)."""
        seen = self._seen.get(command_id)
        return None if seen is None else seen.status

    async def start(self) -> None:
        """Subscribe to the device's delivery subject (the device comes online)."""
        if self._sub is None:
            self._sub = await self.nc.subscribe(self._subject, cb=self._on_msg)
            await self.nc.flush()

    async def stop(self) -> None:
        """Unsubscribe and wait for commands in progress (executions are cancelled)."""
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except nats.errors.Error as exc:
                log.debug("unsubscribe %s: %r", self._subject, exc)
        for task in self._running.values():
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> CommandLink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ internals
    async def _on_msg(self, msg: Msg) -> None:
        # One task per delivery, owned by the link (stop() awaits them): a long execution must
        # not hold up the next delivery or a cancel notice.
        if len(self._tasks) >= self.max_inflight:
            self.stats.dropped += 1
            return
        task = asyncio.get_running_loop().create_task(
            self._handle(msg.data), name=f"command:{self.entity_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, data: bytes) -> None:
        self.stats.deliveries += 1
        try:
            env = loads_strict(data, "command delivery")
            if not isinstance(env, dict) or not isinstance(env.get("command_id"), str):
                raise ProtocolError("a delivery must be an object with a command_id")
        except ProtocolError as exc:
            self.stats.invalid += 1
            log.warning("%s: ignoring an invalid delivery: %s", self.entity_id, exc)
            return
        cid = env["command_id"]
        if env.get("op") == "cancel":
            await self._cancel(cid)
            return
        seen = self._seen.get(cid)
        if seen is not None:  # a second delivery: never executed again, re-send the latest ack
            self.stats.duplicates += 1
            await self._ack(cid, seen.status, seen.reason)
            return
        seen = self._remember(cid, _Seen(S.RECEIVED))  # before any await: at most once
        pending: list[_Pending] = []
        await self._emit(pending, cid, seen, S.RECEIVED)
        reason = self._refusal(env)
        if reason is None:
            try:
                result = self.hook(device_command(env))
                self.stats.executed += 1
                reason = None if result.accepted else (result.reason or "rejected by the device")
            except Exception as exc:  # a device bug is the device's rejection, with the reason
                reason = f"device error: {type(exc).__name__}: {exc}"
                result = None
        if reason is not None:
            self.stats.rejected += 1
            await self._emit(pending, cid, seen, S.REJECTED, reason)
            await self._confirm(cid, pending)
            return
        await self._emit(pending, cid, seen, S.ACCEPTED)
        await self._emit(pending, cid, seen, S.EXECUTING)
        if self.execute is not None:
            await self._confirm(cid, pending)  # the lab must know it runs before a long execution
        outcome = await self._run(cid, env, result)
        if outcome is S.CANCELLED and seen.cancel:
            self.stats.cancelled += 1
            await self._emit(pending, cid, seen, S.CANCELLED, "cancelled during execution")
        elif outcome is S.CANCELLED:  # the link is stopping (the device shuts down) mid-execution
            self.stats.failed += 1
            await self._emit(pending, cid, seen, S.FAILED, "device link stopped during execution")
        elif isinstance(outcome, str):
            self.stats.failed += 1
            await self._emit(pending, cid, seen, S.FAILED, outcome)
        else:
            await self._emit(pending, cid, seen, S.SUCCEEDED)
        await self._confirm(cid, pending)

    def _refusal(self, env: dict[str, Any]) -> str | None:
        if "action" not in env:
            return "this device understands only commands with an action"
        expires = env.get("expires_at")
        if isinstance(expires, str):
            try:
                if self.clock() > parse_timestamp(expires, "expires_at")[1]:
                    return f"expired before it reached the device (expires_at {expires})"
            except ProtocolError as exc:
                return str(exc)
        return None

    async def _run(self, cid: str, env: dict[str, Any], result: Any) -> str | CommandStatus | None:
        """Run ``execute``; returns None (success), a failure reason, or CANCELLED."""
        if self.execute is None:
            return None
        task = asyncio.get_running_loop().create_task(self.execute(device_command(env), result))
        self._running[cid] = task
        try:
            await asyncio.wait({task})
        finally:
            self._running.pop(cid, None)
        if task.cancelled():
            return S.CANCELLED
        exc = task.exception()
        if exc is not None:
            return f"execution failed: {type(exc).__name__}: {exc}"
        return task.result()

    async def _cancel(self, cid: str) -> None:
        seen = self._seen.get(cid)
        if seen is None:  # not delivered yet: remember, so a late delivery is never executed
            self._remember(cid, _Seen(S.CANCELLED, "cancelled before delivery", cancel=True))
            return
        seen.cancel = True
        task = self._running.get(cid)
        if task is not None:
            task.cancel()
        else:  # already finished (or not started): tell the lab where it stands
            await self._ack(cid, seen.status, seen.reason)

    def _remember(self, cid: str, seen: _Seen) -> _Seen:
        self._seen[cid] = seen
        while len(self._seen) > self.memory:
            self._seen.popitem(last=False)
        return seen

    def _ack_body(self, cid: str, status: CommandStatus, reason: str | None) -> bytes:
        return envelopes.encode(make_ack(self.org_id, self.entity_id, cid, status, reason, ts=self.clock()))

    async def _emit(
        self, pending: list[_Pending], cid: str, seen: _Seen, status: CommandStatus, reason: str | None = None
    ) -> None:
        """Record the new status and publish its ack without waiting for the PubAck."""
        seen.status, seen.reason = status, reason
        body = self._ack_body(cid, status, reason)
        headers = {"Nats-Msg-Id": ack_msg_id(cid, self.entity_id, status)}
        try:
            future = await self.js.publish_async(self._acks, body, headers=headers)
        except nats.errors.Error as exc:
            log.warning("%s: ack %s %s not sent: %r", self.entity_id, cid, status, exc)
            future = None
        pending.append(_Pending(status, body, future))

    async def _confirm(self, cid: str, pending: list[_Pending]) -> None:
        """Wait for the PubAcks of the pipelined acks; send again (in order) what was not stored."""
        waiting = [p.future for p in pending if p.future is not None]
        if waiting:
            try:
                async with asyncio.timeout(ACK_CONFIRM_S):
                    await asyncio.wait(waiting)
            except TimeoutError:
                pass
        for p in pending:
            f = p.future
            if f is not None and f.done() and not f.cancelled() and f.exception() is None:
                self.stats.acks_sent += 1
                continue
            if f is not None and not f.done():
                f.cancel()
            await self._ack(cid, p.status, body=p.body)
        pending.clear()

    async def _ack(
        self, cid: str, status: CommandStatus, reason: str | None = None, *, body: bytes | None = None
    ) -> None:
        """Publish one ack and wait until JetStream stored it (retried with backoff)."""
        body = body if body is not None else self._ack_body(cid, status, reason)
        headers = {"Nats-Msg-Id": ack_msg_id(cid, self.entity_id, status)}
        for attempt in range(ACK_ATTEMPTS):
            try:
                await self.js.publish(self._acks, body, headers=headers)
                self.stats.acks_sent += 1
                return
            except (nats.errors.Error, TimeoutError) as exc:
                log.warning(
                    "%s: ack %s %s failed (attempt %d): %r", self.entity_id, cid, status, attempt + 1, exc
                )
                await asyncio.sleep(ACK_RETRY_S * 2**attempt)
        self.stats.ack_failures += 1  # the lab resends while it lacks RECEIVED; later acks wait for that
