"""The deliverer: sends due commands to their devices, resends with backoff, expires and times out.

One task in the Lab's TaskGroup. Each pass (woken by a new command, or at the next due time):

1. EXPIRED: QUEUED or SENT commands whose TTL (plus ``command_expiry_grace_s``) has passed.
2. FAILED: received commands with no final result ``command_result_timeout_s`` after their
   last ack (a device that died mid-execution).
3. Deliveries: QUEUED (first send) and SENT commands whose next attempt is due. The attempt is
   recorded in libSQL first (QUEUED → SENT, attempts + 1, next attempt time with exponential
   backoff from an adaptive timeout, see :class:`~overwatch_lab.commands.ledger.RetryTimer`) and
   only then published with core NATS on
   ``constellation.devices.{org}.{entity}.commands``. A crash between the two resends after the
   restart; a device dedupes by ``command_id``, so nothing is executed twice.

Core NATS (not JetStream) on purpose: a device that is offline misses the message and the next
attempt reaches it when it is back; the lab, not the broker, owns retry and expiry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from nats.aio.client import Client as NATS

from overwatch_lab.broker import jetstream
from overwatch_lab.commands.ledger import Change, CommandLedger, Tracked
from overwatch_lab.config import LabConfig
from overwatch_lab.errors import BrokerError
from overwatch_lab.protocol import envelopes
from overwatch_lab.protocol.commands import CommandStatus, delivery_subject, make_delivery

log = logging.getLogger(__name__)
S = CommandStatus
_UNDELIVERED = frozenset({S.QUEUED, S.SENT})
_AT_DEVICE = frozenset({S.RECEIVED, S.ACCEPTED, S.EXECUTING})
MAX_IDLE_S = 1.0  # a pass at least this often, whatever is due
HOLD_RETRY_S = 0.05  # re-check a held-back resend this soon


class Deliverer:
    """Deliver, resend, expire and time out commands (see module docstring)."""

    name = "command-deliverer"

    def __init__(
        self,
        ledger: CommandLedger,
        nc: NATS,
        config: LabConfig,
        acks_pending: Callable[[], bool] = lambda: False,
    ) -> None:
        self.ledger = ledger
        self.nc = nc
        self.config = config
        self.acks_pending = acks_pending
        self.passes = 0
        self._stopping = asyncio.Event()

    def request_stop(self) -> None:
        """Ask the loop to finish its pass and return."""
        self._stopping.set()
        self.ledger.wake.set()

    async def run(self, ready: asyncio.Event) -> None:
        """Run until :meth:`request_stop`; sets ``ready`` at once."""
        ready.set()
        wake = self.ledger.wake
        while not self._stopping.is_set():
            wake.clear()
            try:
                delay = await self.run_pass()
            except asyncio.CancelledError:
                raise
            except Exception:  # a DB or broker outage: log, and try again shortly
                log.exception("command delivery pass failed")
                delay = self.config.command_retry_initial_s
            if self._stopping.is_set():
                break
            try:
                async with asyncio.timeout(delay):
                    await wake.wait()
            except TimeoutError:
                pass

    async def run_pass(self) -> float:
        """Do one pass and return the seconds until something is next due."""
        self.passes += 1
        led, cfg = self.ledger, self.config
        now = time.time()
        changes: list[Change] = []
        sends: list[tuple[Tracked, float]] = []
        next_due = now + MAX_IDLE_S
        # A resend while acks are still queued for the ack worker is premature: the RECEIVED it
        # waits for is probably among them. Resends wait for the backlog (first sends do not).
        hold_resends = self.acks_pending()
        for rec in led.open.values():
            if rec.status in _UNDELIVERED:
                expiry = rec.expires_ts + cfg.command_expiry_grace_s
                if now >= expiry:
                    reason = (
                        f"not received within ttl_s {rec.envelope.get('ttl_s')} ({rec.attempts} attempts)"
                    )
                    changes.append(Change(rec.command_id, rec.entity_id, S.EXPIRED, reason, now, "lab"))
                    continue
                due = (
                    rec.last_sent_ts + led.retry.delay(rec.attempts) if rec.attempts else rec.next_attempt_ts
                )
                if due <= now and rec.attempts and hold_resends:
                    led.stats.resends_deferred += 1
                    next_due = min(next_due, now + HOLD_RETRY_S)
                elif due <= now:
                    wait = led.retry.delay(rec.attempts + 1)
                    sends.append((rec, now + wait))
                    next_due = min(next_due, now + wait, expiry)
                else:
                    next_due = min(next_due, due, expiry)
            elif rec.status in _AT_DEVICE:
                deadline = rec.last_change_ts + cfg.command_result_timeout_s
                if now >= deadline:
                    reason = (
                        f"no result from the device within {cfg.command_result_timeout_s:g} s of {rec.status}"
                    )
                    changes.append(Change(rec.command_id, rec.entity_id, S.FAILED, reason, now, "lab"))
                else:
                    next_due = min(next_due, deadline)
        if changes or sends:
            applied, attempts = await led.change(changes, sends)
            for c, ok in zip(changes, applied, strict=True):
                if ok and c.status is S.EXPIRED:
                    led.stats.expired += 1
                elif ok:
                    led.stats.timed_out += 1
            await self._publish(
                [(rec, n) for (rec, _), n in zip(sends, attempts, strict=True) if n is not None]
            )
        await led.flush_kv()  # after the deliveries: the mirror never delays a device
        return max(next_due - time.time(), 0.001)

    async def _publish(self, deliveries: list[tuple[Tracked, int]]) -> None:
        stats = self.ledger.stats
        for rec, attempt in deliveries:
            msg = make_delivery(rec.envelope, expires_ts=rec.expires_ts, attempt=attempt)
            try:
                await jetstream.publish(
                    self.nc, delivery_subject(rec.org_id, rec.entity_id), envelopes.encode(msg)
                )
            except BrokerError as exc:  # recorded as an attempt: the next one follows the backoff
                log.warning("delivery of %s to %s failed: %r", rec.command_id, rec.entity_id, exc)
                continue
            stats.deliveries += 1
            stats.resends += attempt > 1
