"""The command workers: ingress (``command-processor``) and device acks (``command-ack-processor``).

:class:`CommandWorker` turns each message of the CONSTELLATION_COMMANDS work queue into ledger
records: a valid command becomes QUEUED (a broadcast one record per entity of its organisation),
a bad one REJECTED with its reason, a cancel request cancels what has not reached its device.
The message is acknowledged once the records are committed; only a body that is not a JSON
object (or a bad subject) is quarantined. A redelivered command is recognised by its id. When
the database is unavailable (full, read-only, locked, unreachable) the batch is held, never
quarantined: the ledger changes memory only after a commit, so handling it again is safe.

:class:`CommandAckWorker` applies device acks from CONSTELLATION_COMMAND_ACKS in stream order;
the store refuses any ack that would move a command backwards (recorded, not applied).
"""

from __future__ import annotations

import logging
import time

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from overwatch_lab.broker import jetstream
from overwatch_lab.commands.ledger import Change, CommandLedger, Tracked
from overwatch_lab.config import LabConfig
from overwatch_lab.errors import DatabaseUnavailable, ProtocolError
from overwatch_lab.protocol import envelopes
from overwatch_lab.protocol.commands import (
    CONSUMER_COMMAND_ACK,
    STREAM_COMMAND_ACKS,
    CancelRequest,
    Command,
    RejectedCommand,
    decode_ack,
    decode_command,
    delivery_subject,
    make_cancel,
    parse_ack_subject,
    parse_command_subject,
)
from overwatch_lab.protocol.subjects import CONSUMER_COMMAND, STREAM_COMMANDS
from overwatch_lab.registry import Registry
from overwatch_lab.workers.base import ACK, Outcome, Result, Worker, hold, poison, retry

log = logging.getLogger(__name__)


def _held(results: list[Result], exc: DatabaseUnavailable) -> list[Result]:
    """Hold every message of a batch whose records could not be written (poison stays poison)."""
    reason = f"{type(exc).__name__}: {exc}"
    return [r if r.outcome is Outcome.POISON else hold(reason) for r in results]


class CommandWorker(Worker):
    """Consumes ``command-processor`` on CONSTELLATION_COMMANDS."""

    name = "command-worker"
    stream = STREAM_COMMANDS
    durable = CONSUMER_COMMAND

    def __init__(self, ledger: CommandLedger, registry: Registry, nc: NATS, config: LabConfig) -> None:
        super().__init__()
        self.ledger = ledger
        self.registry = registry
        self.nc = nc
        self.config = config

    async def handle_batch(self, msgs: list[Msg]) -> list[Result]:
        results: list[Result] = [ACK] * len(msgs)
        records: list[Tracked] = []
        cancels: list[CancelRequest] = []
        now = time.time()
        cfg = self.config
        for i, msg in enumerate(msgs):
            try:
                decoded = decode_command(
                    msg.data,
                    parse_command_subject(msg.subject),
                    now_ts=now,
                    fallback_id=f"cmd-{msg.metadata.sequence.stream}",
                    default_ttl_s=cfg.command_default_ttl_s,
                    max_ttl_s=cfg.command_max_ttl_s,
                    max_bytes=cfg.command_max_bytes,
                )
            except ProtocolError as exc:
                results[i] = poison(str(exc))
                continue
            if isinstance(decoded, CancelRequest):
                cancels.append(decoded)
            elif isinstance(decoded, RejectedCommand):
                d = decoded
                records.append(
                    self.ledger.rejected(d.command_id, d.org_id, d.entity_id, d.reason, dict(d.body), now)
                )
            else:
                outcome = await self._targets(decoded, now)
                if isinstance(outcome, Result):
                    results[i] = outcome
                else:
                    records.extend(outcome)
        try:
            await self.ledger.add(records)  # wakes the deliverer, which sends while the KV mirror is written
            for c in cancels:
                await self._cancel(c, now)
        except DatabaseUnavailable as exc:
            return _held(results, exc)
        await self.ledger.flush_kv()
        return results

    async def _targets(self, cmd: Command, now: float) -> list[Tracked] | Result:
        """The records of a valid command: one per target entity, or one REJECTED record."""
        reg, led = self.registry, self.ledger
        body = cmd.envelope()

        def reject(reason: str) -> list[Tracked]:
            return [led.rejected(cmd.command_id, cmd.org_id, cmd.entity_id, reason, body, now)]

        if cmd.entity_id is not None:
            owner = reg.org_of(cmd.entity_id)
            if owner is None:
                reason = f"unknown entity {cmd.entity_id!r}"
                return reject(reason) if await reg.settled() else retry(reason)
            if owner != cmd.org_id:
                return reject(f"entity {cmd.entity_id!r} belongs to org {owner!r}, not {cmd.org_id!r}")
            return [led.queued(cmd, now)]
        if cmd.org_id not in reg.orgs:
            reason = f"unknown organization {cmd.org_id!r}"
            return reject(reason) if await reg.settled() else retry(reason)
        members = sorted(e for e, o in reg.entities.items() if o == cmd.org_id)
        if not members:
            return reject(f"organization {cmd.org_id!r} has no entities to broadcast to")
        return [led.queued(cmd.for_entity(e), now, fanout=len(members), broadcast=True) for e in members]

    async def _cancel(self, c: CancelRequest, now: float) -> None:
        targets = await self.ledger.cancel(c.command_id, c.entity_id, c.source or "operator", now)
        if not targets:
            log.info("cancel of %s: nothing open to cancel", c.command_id)
        for rec in targets:  # tell the device, so a delivery still in flight is not executed
            notice = make_cancel(rec.org_id, rec.entity_id, rec.command_id, source=c.source)
            await jetstream.publish(
                self.nc, delivery_subject(rec.org_id, rec.entity_id), envelopes.encode(notice)
            )


class CommandAckWorker(Worker):
    """Consumes ``command-ack-processor`` on CONSTELLATION_COMMAND_ACKS."""

    name = "command-ack-worker"
    stream = STREAM_COMMAND_ACKS
    durable = CONSUMER_COMMAND_ACK

    def __init__(self, ledger: CommandLedger) -> None:
        super().__init__()
        self.ledger = ledger
        self._handling = False

    def busy(self) -> bool:
        """True while a batch of acks is being applied (the deliverer holds resends meanwhile)."""
        return self._handling or self.stats.lag > 0

    async def handle_batch(self, msgs: list[Msg]) -> list[Result]:
        self._handling = True
        try:
            return await self._apply(msgs)
        finally:
            self._handling = False

    async def _apply(self, msgs: list[Msg]) -> list[Result]:
        results: list[Result] = [ACK] * len(msgs)
        changes: list[Change] = []
        for i, msg in enumerate(msgs):
            try:
                ack = decode_ack(msg.data, parse_ack_subject(msg.subject))
            except ProtocolError as exc:
                results[i] = poison(str(exc))
                continue
            changes.append(Change(ack.command_id, ack.entity_id, ack.status, ack.reason, ack.ts, "device"))
        try:
            applied, _ = await self.ledger.change(changes)
        except DatabaseUnavailable as exc:
            return _held(results, exc)
        n = sum(applied)
        self.ledger.stats.acks_applied += n
        self.ledger.stats.acks_ignored += len(applied) - n
        self.ignored(len(applied) - n)
        await self.ledger.flush_kv()
        return results
