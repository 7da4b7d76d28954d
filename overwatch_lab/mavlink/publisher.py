"""Publishing into the lab with JetStream acks, a bounded queue and bounded messages in flight.

The bridge's publisher is the device path of :mod:`simulators.registration` with the storage
confirmation a relay needs: every message carries its ``Nats-Msg-Id`` (so a resend inside the
stream's dedup window is dropped by the server), goes out with ``publish_async`` (pipelined,
at most ``max_inflight`` unacknowledged), and is sent again when its PubAck is an error or does
not come within ``ack_timeout_s``; after ``attempts`` it is counted as failed and logged.

Two ways in: :meth:`Publisher.offer` never waits (live UDP: a datagram cannot be pushed back,
so a full queue counts the message as dropped), :meth:`Publisher.put` waits for room (a log
replay is pushed back instead of dropping anything).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

log = logging.getLogger(__name__)

Outgoing = tuple[str, bytes, str]
"""(subject, payload, Nats-Msg-Id)."""

DEFAULT_QUEUE = 20_000
DEFAULT_MAX_INFLIGHT = 4_000
DEFAULT_ACK_TIMEOUT_S = 5.0
DEFAULT_ATTEMPTS = 5


@dataclass(slots=True)
class PublisherStats:
    """What the publisher did."""

    queued: int = 0
    acked: int = 0
    resent: int = 0
    failed: int = 0  # given up after every attempt (logged)
    dropped_full: int = 0  # offered while the queue was full (live input only)
    queue_peak: int = 0

    def snapshot(self) -> dict[str, Any]:
        """Return a plain dict copy."""
        return asdict(self)


@dataclass(slots=True)
class _Sent:
    item: Outgoing
    future: asyncio.Future[Any]
    attempt: int
    at: float


class Publisher:
    """A bounded, acknowledged JetStream publisher run by one task (:meth:`run`).

    Args:
        js: a JetStream context; its own ``publish_async_max_pending`` must be at least
            ``max_inflight``.
        queue_size: messages waiting to be sent.
        max_inflight: messages sent and not yet acknowledged.
        ack_timeout_s: how long a PubAck may take before the message is sent again.
        attempts: sends per message before it counts as failed.
    """

    def __init__(
        self,
        js: JetStreamContext,
        *,
        queue_size: int = DEFAULT_QUEUE,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        ack_timeout_s: float = DEFAULT_ACK_TIMEOUT_S,
        attempts: int = DEFAULT_ATTEMPTS,
    ) -> None:
        self._js = js
        self._queue: asyncio.Queue[Outgoing] = asyncio.Queue(maxsize=queue_size)
        self._inflight: collections.deque[_Sent] = collections.deque()
        self._max_inflight = max_inflight
        self._ack_timeout_s = ack_timeout_s
        self._attempts = attempts
        self._idle = asyncio.Event()
        self._idle.set()
        self.stats = PublisherStats()

    @property
    def pending(self) -> int:
        """Messages queued or in flight (not yet acknowledged nor given up)."""
        return self._queue.qsize() + len(self._inflight)

    def offer(self, item: Outgoing) -> bool:
        """Queue one message without waiting; False (counted as dropped) when the queue is full."""
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.stats.dropped_full += 1
            return False
        self._queued()
        return True

    async def put(self, item: Outgoing) -> None:
        """Queue one message, waiting for room."""
        await self._queue.put(item)
        self._queued()

    def _queued(self) -> None:
        self._idle.clear()
        self.stats.queued += 1
        depth = self._queue.qsize()
        if depth > self.stats.queue_peak:
            self.stats.queue_peak = depth

    async def drained(self) -> None:
        """Return once every message queued so far is acknowledged (or given up)."""
        while self.pending:
            self._idle.clear()
            await self._idle.wait()

    async def run(self) -> None:
        """Send queued messages until cancelled; then settle what is in flight (bounded wait)."""
        try:
            while True:
                if self._queue.empty() and self._inflight:
                    await self._settle_oldest()
                    continue
                item = await self._queue.get()
                await self._send(item, 1)
                self._reap()
                while len(self._inflight) >= self._max_inflight:
                    await self._settle_oldest()
        finally:
            # Stopping: what is in flight gets its PubAcks (or its retries) within the timeout;
            # what is still queued was never sent and is counted as failed.
            try:
                async with asyncio.timeout(self._ack_timeout_s * 2):
                    while self._inflight:
                        await self._settle_oldest()
            except TimeoutError:
                pass
            lost = len(self._inflight) + self._queue.qsize()
            if lost:
                self.stats.failed += lost
                log.warning("stopped with %d messages not acknowledged by JetStream", lost)
            for s in self._inflight:
                s.future.cancel()
            self._inflight.clear()
            while not self._queue.empty():
                self._queue.get_nowait()
            self._idle.set()

    async def _send(self, item: Outgoing, attempt: int) -> None:
        subject, payload, msg_id = item
        try:
            future = await self._js.publish_async(
                subject, payload, wait_stall=self._ack_timeout_s, headers={"Nats-Msg-Id": msg_id}
            )
        except (nats.errors.Error, nats.js.errors.Error) as exc:  # stalled, closed, no connection
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # nats-py turns a cancellation during its stall wait into TooManyStalledMsgsError:
                # give the cancellation back (the publisher is being stopped).
                raise asyncio.CancelledError from exc
            future = asyncio.get_running_loop().create_future()
            future.set_exception(exc)
        self._inflight.append(_Sent(item, future, attempt, time.monotonic()))

    def _reap(self) -> None:
        """Drop the acknowledged messages at the head of the window (no waiting)."""
        q = self._inflight
        while q and q[0].future.done() and not q[0].future.cancelled() and q[0].future.exception() is None:
            q.popleft()
            self.stats.acked += 1
        if not q and self._queue.empty():
            self._idle.set()

    async def _settle_oldest(self) -> None:
        """Wait for the oldest message's PubAck (up to its deadline); resend it when it failed."""
        sent = self._inflight[0]
        left = self._ack_timeout_s - (time.monotonic() - sent.at)
        if not sent.future.done() and left > 0:
            await asyncio.wait({sent.future}, timeout=left)
        self._inflight.popleft()
        f = sent.future
        if f.done() and not f.cancelled() and f.exception() is None:
            self.stats.acked += 1
        else:
            if not f.done():
                f.cancel()
                reason = f"no PubAck within {self._ack_timeout_s:g} s"
            else:
                reason = repr(f.exception()) if not f.cancelled() else "cancelled"
            if sent.attempt < self._attempts:
                self.stats.resent += 1
                await self._send(sent.item, sent.attempt + 1)
            else:
                self.stats.failed += 1
                log.warning("gave up publishing %s (%s) after %d attempts: %s",
                            sent.item[2], sent.item[0], sent.attempt, reason)  # fmt: skip
        self._reap()


__all__ = ["Outgoing", "Publisher", "PublisherStats"]
