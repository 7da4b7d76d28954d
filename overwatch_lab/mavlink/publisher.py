"""Publishing into the lab with JetStream acks, a bounded queue and bounded messages in flight.

The bridge's publisher is the device path of :mod:`simulators.registration` with the storage
confirmation a relay needs: every message carries its ``Nats-Msg-Id`` (so a resend inside the
stream's dedup window is dropped by the server) and goes out as a core publish whose reply
subject is ``{inbox}.{n}`` on one inbox subscription of the publisher's own (the pattern of
:func:`overwatch_lab.replay.publisher.republish`): the stream's PubAck comes back there. At
most ``max_inflight`` are unacknowledged; a message is sent again when its PubAck is an error
or does not come within ``ack_timeout_s``, and after ``attempts`` it is counted as failed and
logged.

What is queued goes out in batches of up to ``batch`` publishes with no yield between them, so
the client writes each batch to the socket at once (nats-py's ``publish_async`` waits on a
semaphore with ``asyncio.wait_for``, which yields and so flushes on every message; a third of
the bridge's time went there).

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

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from overwatch_lab.broker import jetstream
from overwatch_lab.errors import BrokerError

log = logging.getLogger(__name__)

Outgoing = tuple[str, bytes, str]
"""(subject, payload, Nats-Msg-Id)."""

DEFAULT_QUEUE = 20_000
DEFAULT_MAX_INFLIGHT = 4_000
DEFAULT_ACK_TIMEOUT_S = 5.0
DEFAULT_ATTEMPTS = 5
DEFAULT_BATCH = 512  # publishes written to the client's buffer between two yields to the loop


@dataclass(slots=True)
class PublisherStats:
    """What the publisher did."""

    queued: int = 0
    acked: int = 0
    resent: int = 0
    failed: int = 0  # given up after every attempt (logged)
    dropped_full: int = 0  # offered while the queue was full (live input only)
    queue_peak: int = 0
    inflight_peak: int = 0  # most messages unacknowledged at once (at most max_inflight)

    def snapshot(self) -> dict[str, Any]:
        """Return a plain dict copy."""
        return asdict(self)


@dataclass(slots=True)
class _Sent:
    item: Outgoing
    attempt: int
    at: float  # time.monotonic() of this attempt


class Publisher:
    """A bounded, acknowledged JetStream publisher run by one task (:meth:`run`).

    Args:
        nc: the connection to publish on (the publisher subscribes one reply inbox on it).
        queue_size: messages waiting to be sent.
        max_inflight: messages sent and not yet acknowledged.
        ack_timeout_s: how long a PubAck may take before the message is sent again.
        attempts: sends per message before it counts as failed.
        batch: publishes sent between two yields to the event loop.
    """

    def __init__(
        self,
        nc: NATS,
        *,
        queue_size: int = DEFAULT_QUEUE,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        ack_timeout_s: float = DEFAULT_ACK_TIMEOUT_S,
        attempts: int = DEFAULT_ATTEMPTS,
        batch: int = DEFAULT_BATCH,
    ) -> None:
        self._nc = nc
        self._queue: collections.deque[Outgoing] = collections.deque()
        self._queue_size = queue_size
        self._retry: collections.deque[_Sent] = collections.deque()  # refused: sent again first
        self._inflight: dict[int, _Sent] = {}  # reply number -> attempt; oldest first
        self._next = 0
        self._inbox = ""
        self._max_inflight = max_inflight
        self._ack_timeout_s = ack_timeout_s
        self._attempts = attempts
        self._batch = batch
        self._wake = asyncio.Event()  # something to send, a PubAck, or room in flight
        self._room = asyncio.Event()  # the queue has room
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.stats = PublisherStats()

    @property
    def pending(self) -> int:
        """Messages queued or in flight (not yet acknowledged nor given up)."""
        return len(self._queue) + len(self._retry) + len(self._inflight)

    def offer(self, item: Outgoing) -> bool:
        """Queue one message without waiting; False (counted as dropped) when the queue is full."""
        if len(self._queue) >= self._queue_size:
            self.stats.dropped_full += 1
            return False
        self._queued(item)
        return True

    async def put(self, item: Outgoing) -> None:
        """Queue one message, waiting for room."""
        while len(self._queue) >= self._queue_size:
            self._room.clear()
            await self._room.wait()
        self._queued(item)

    def _queued(self, item: Outgoing) -> None:
        self._queue.append(item)
        self._idle.clear()
        self._wake.set()
        st = self.stats
        st.queued += 1
        if len(self._queue) > st.queue_peak:
            st.queue_peak = len(self._queue)

    async def drained(self) -> None:
        """Return once every message queued so far is acknowledged (or given up)."""
        while self.pending:
            self._idle.clear()
            await self._idle.wait()

    async def run(self) -> None:
        """Send queued messages until cancelled; then settle what is in flight (bounded wait).

        Raises:
            BrokerError: the reply inbox cannot be subscribed (the connection is closed).
        """
        self._inbox = self._nc.new_inbox()
        sub = await jetstream.subscribe(self._nc, f"{self._inbox}.*", self._on_ack, unbounded=True)
        try:
            while True:
                await self._step()
        finally:
            # Stopping: what is in flight gets its PubAcks (or its retries) within the timeout;
            # what is still queued was never sent and is counted as failed.
            try:
                async with asyncio.timeout(self._ack_timeout_s * 2):
                    while self._inflight or self._retry:
                        await self._step(send_new=False)
            except TimeoutError:
                pass
            lost = self.pending
            if lost:
                self.stats.failed += lost
                log.warning("stopped with %d messages not acknowledged by JetStream", lost)
            self._inflight.clear()
            self._retry.clear()
            self._queue.clear()
            self._room.set()
            self._idle.set()
            try:
                await jetstream.unsubscribe(sub)
            except BrokerError as exc:  # the connection is gone: so is the subscription
                log.debug("publisher: unsubscribe: %s", exc)

    async def _step(self, *, send_new: bool = True) -> None:
        """Send what there is room for (retries first), give up or resend what timed out, or wait."""
        self._wake.clear()
        room = self._max_inflight - len(self._inflight)
        sent = 0
        while room > 0 and sent < self._batch and (self._retry or (send_new and self._queue)):
            if self._retry:
                again = self._retry.popleft()
                await self._send(again.item, again.attempt + 1)
            else:
                await self._send(self._queue.popleft(), 1)
            room -= 1
            sent += 1
        if sent:
            self._room.set()
            self._expire()
            await asyncio.sleep(0)  # the client writes the batch; PubAcks come in
            return
        self._expire()
        if self._retry or (send_new and self._queue and room > 0):
            return
        if not self.pending:
            self._idle.set()
        oldest = next(iter(self._inflight.values()), None)
        wait = None if oldest is None else max(oldest.at + self._ack_timeout_s - time.monotonic(), 0.001)
        try:
            async with asyncio.timeout(wait):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _send(self, item: Outgoing, attempt: int) -> None:
        subject, payload, msg_id = item
        self._next += 1
        n = self._next
        self._inflight[n] = _Sent(item, attempt, time.monotonic())
        if len(self._inflight) > self.stats.inflight_peak:
            self.stats.inflight_peak = len(self._inflight)
        try:
            await jetstream.publish(
                self._nc, subject, payload, reply=f"{self._inbox}.{n}", headers={"Nats-Msg-Id": msg_id}
            )
        except BrokerError as exc:  # closed, or the client's reconnect buffer is full
            log.debug("publish of %s failed (%s); resent after %g s", msg_id, exc, self._ack_timeout_s)

    def _expire(self) -> None:
        """Send again (or give up) every message whose PubAck is overdue (they are the oldest)."""
        limit = time.monotonic() - self._ack_timeout_s
        q = self._inflight
        while q:
            n, sent = next(iter(q.items()))
            if sent.at > limit:
                break
            del q[n]
            self._failed(sent, f"no PubAck within {self._ack_timeout_s:g} s")

    def _failed(self, sent: _Sent, reason: str) -> None:
        if sent.attempt < self._attempts:
            self.stats.resent += 1
            self._retry.append(sent)
        else:
            self.stats.failed += 1
            log.warning("gave up publishing %s (%s) after %d attempts: %s",
                        sent.item[2], sent.item[0], sent.attempt, reason)  # fmt: skip
        self._wake.set()

    async def _on_ack(self, msg: Msg) -> None:
        """A PubAck (or a refusal) for reply number ``n``; a late one for a resent message is ignored."""
        try:
            n = int(msg.subject.rpartition(".")[2])
        except ValueError:
            return
        sent = self._inflight.pop(n, None)
        if sent is None:
            return  # answered after it timed out: its resend gets an answer of its own
        data = msg.data
        status = msg.headers.get("Status") if msg.headers else None
        if status:
            self._failed(sent, f"status {status} (no stream captures {sent.item[0]}?)")
        elif b'"error"' in data:
            try:
                error = orjson.loads(data).get("error")
            except orjson.JSONDecodeError:
                error = None
            self._failed(sent, f"refused: {error or data[:120]!r}")
        else:
            self.stats.acked += 1
        self._wake.set()
        if not self._inflight and not self._queue and not self._retry:
            self._idle.set()


__all__ = ["Outgoing", "Publisher", "PublisherStats"]
