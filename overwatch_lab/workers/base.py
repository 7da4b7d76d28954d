"""The consumer loop every worker shares: fetch in large batches, settle each message once.

A worker only turns a batch of messages into one :class:`Result` per message; the loop does
the rest the same way for everyone:

- ``ACK``: effects are durable (the worker returns only after its DB commit and KV write).
- ``RETRY``: a transient failure. NAK with a delay, and quarantine on the configured delivery
  (WIRE.md: the 3rd) so that a message that keeps failing is never redelivered forever.
- ``POISON``: the message can never succeed (invalid envelope, unknown entity, subject/body
  mismatch): quarantined at once.
- ``HOLD``: not the message's fault (the database is full, read-only or unreachable; a
  registration it depends on is still in flight): never quarantined, retried later.

Quarantine = a record on ``constellation.quarantine.{worker}`` (published and acknowledged by
JetStream, with ``Nats-Msg-Id: quarantine-{stream}-{seq}``), then TERM. If the quarantine publish
itself fails the message is NAKed instead, so nothing is ever dropped silently.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from overwatch_lab.config import LabConfig
from overwatch_lab.protocol.envelopes import now_timestamp
from overwatch_lab.protocol.subjects import quarantine_subject
from overwatch_lab.workers.pull import BatchPuller

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    """How a message is settled."""

    ACK = "ack"
    RETRY = "retry"
    POISON = "poison"
    HOLD = "hold"


@dataclass(frozen=True, slots=True)
class Result:
    """The settlement of one message, with the reason for anything but ACK."""

    outcome: Outcome
    reason: str | None = None


ACK = Result(Outcome.ACK)


def retry(reason: str) -> Result:
    """A transient failure: redeliver later, quarantine on the configured delivery."""
    return Result(Outcome.RETRY, reason)


def poison(reason: str) -> Result:
    """A message that can never succeed: quarantine at once."""
    return Result(Outcome.POISON, reason)


def hold(reason: str) -> Result:
    """Not the message's fault (infrastructure, or a dependency in flight): retry, never quarantine."""
    return Result(Outcome.HOLD, reason)


@dataclass(slots=True)
class WorkerStats:
    """Counters of one worker, readable from Python (``lab.stats()``) and shown on dashboards."""

    handled: int = 0  # messages settled (any outcome)
    acked: int = 0
    ignored: int = 0  # acked without effect (stale or duplicate)
    retried: int = 0  # NAKed for redelivery
    quarantined: int = 0
    kv_writes: int = 0  # compare-and-set writes of entity documents (coalesced per entity per batch)
    batches: int = 0
    last_batch_size: int = 0
    peak_batch_size: int = 0
    lag: int = 0  # messages in the stream not yet delivered to this consumer
    last_error: str | None = None
    last_batch_at: float | None = None
    busy_s: float = 0.0  # time spent handling batches

    def snapshot(self) -> dict[str, Any]:
        """Return a plain dict copy."""
        return asdict(self)


class Worker(ABC):
    """One kind of message handling, run by a :class:`ConsumerLoop` on one durable consumer."""

    name: str
    stream: str
    durable: str

    def __init__(self) -> None:
        self.stats = WorkerStats()

    @abstractmethod
    async def handle_batch(self, msgs: list[Msg]) -> list[Result]:
        """Handle a batch and return one Result per message, in order.

        Must return only after the effects of every ACK result are durable.
        """

    def ignored(self, n: int = 1) -> None:
        """Count messages acknowledged without effect (stale or duplicate)."""
        self.stats.ignored += n


class ConsumerLoop:
    """Pull-consume one durable consumer and settle every message through its worker.

    ``on_consumer_gone(stream, durable, status)`` hears when the broker answers a pull as if the
    consumer did not exist (the lab re-provisions it); the loop keeps pulling meanwhile.
    """

    def __init__(self, worker: Worker, nc: NATS, js: JetStreamContext, config: LabConfig) -> None:
        self.worker = worker
        self.on_consumer_gone: Callable[[str, str, str], None] | None = None
        self.nc = nc
        self.js = js
        self.config = config
        self._stopping = asyncio.Event()

    def request_stop(self) -> None:
        """Ask the loop to finish its current batch and return."""
        self._stopping.set()

    async def run(self, ready: asyncio.Event) -> None:
        """Run until :meth:`request_stop`; sets ``ready`` once bound to the consumer.

        The next fetch is in flight while a batch is handled, so the broker round trip overlaps
        the DB commit and KV writes. At stop the in-flight fetch is awaited and its messages
        handled too (cancelling it could strand delivered messages until ack_wait).
        """
        w = self.worker
        gone = self.on_consumer_gone
        puller = BatchPuller(
            self.nc,
            w.stream,
            w.durable,
            on_gone=None if gone is None else (lambda status: gone(w.stream, w.durable, status)),
        )
        await puller.start()
        ready.set()
        log.info("%s consuming %s/%s", w.name, w.stream, w.durable)
        inflight: asyncio.Task[list[Msg]] | None = None
        try:
            while True:
                if inflight is None:
                    if self._stopping.is_set():
                        break
                    inflight = asyncio.create_task(self._fetch(puller), name=f"fetch:{w.name}")
                msgs = await inflight
                inflight = None
                if not msgs:
                    continue
                if not self._stopping.is_set():
                    inflight = asyncio.create_task(self._fetch(puller), name=f"fetch:{w.name}")
                await self._handle(msgs)
        finally:
            if inflight is not None:
                inflight.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await inflight
            with contextlib.suppress(Exception):
                await puller.stop()

    async def _fetch(self, puller: BatchPuller) -> list[Msg]:
        w = self.worker
        try:
            msgs = await puller.fetch(self.config.fetch_batch, self.config.fetch_timeout_s)
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
            if self._stopping.is_set():
                return []
            raise
        except nats.errors.Error as exc:  # reconnecting etc.: keep going
            w.stats.last_error = f"fetch: {exc!r}"
            log.warning("%s fetch failed: %r", w.name, exc)
            await asyncio.sleep(0.2)
            return []
        if not msgs:
            w.stats.lag = 0
        return msgs

    async def _handle(self, msgs: list[Msg]) -> None:
        w = self.worker
        started = time.perf_counter()
        try:
            results = await w.handle_batch(msgs)
            if len(results) != len(msgs):
                raise RuntimeError(f"{w.name} returned {len(results)} results for {len(msgs)} messages")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an outage: every message is retried, never lost
            log.exception("%s failed on a batch of %d", w.name, len(msgs))
            reason = f"{type(exc).__name__}: {exc}"
            results = [retry(reason)] * len(msgs)
        for msg, result in zip(msgs, results, strict=True):
            await self._settle(msg, result)
        st = w.stats
        st.batches += 1
        st.handled += len(msgs)
        st.last_batch_size = len(msgs)
        st.peak_batch_size = max(st.peak_batch_size, len(msgs))
        st.last_batch_at = time.time()
        st.busy_s += time.perf_counter() - started
        st.lag = msgs[-1].metadata.num_pending

    async def _settle(self, msg: Msg, result: Result) -> None:
        st = self.worker.stats
        if result.outcome is Outcome.ACK:
            await msg.ack()
            st.acked += 1
            return
        st.last_error = result.reason
        if result.outcome is Outcome.HOLD:
            await msg.nak(delay=self.config.retry_delay_s)
            st.retried += 1
            return
        if result.outcome is Outcome.RETRY and msg.metadata.num_delivered < self.config.quarantine_after:
            await msg.nak(delay=self.config.retry_delay_s)
            st.retried += 1
            return
        reason = result.reason or "unknown"
        if result.outcome is Outcome.RETRY:
            reason = f"failed on delivery {msg.metadata.num_delivered}: {reason}"
        if await self._quarantine(msg, reason):
            await msg.term()
            st.quarantined += 1
        else:
            await msg.nak(delay=self.config.retry_delay_s)
            st.retried += 1

    async def _quarantine(self, msg: Msg, reason: str) -> bool:
        w = self.worker
        meta = msg.metadata
        seq = meta.sequence.stream
        record = {
            "worker": w.name,
            "source_stream": w.stream,
            "source_consumer": w.durable,
            "original_subject": msg.subject,
            "original_data": base64.b64encode(msg.data).decode(),
            "error": reason,
            "num_delivered": meta.num_delivered,
            "stream_sequence": seq,
            "quarantined_at": now_timestamp(),
        }
        try:
            await self.js.publish(
                quarantine_subject(w.name),
                json.dumps(record).encode(),
                headers={"Nats-Msg-Id": f"quarantine-{w.stream}-{seq}"},
            )
        except (nats.errors.Error, TimeoutError) as exc:
            log.error("%s could not quarantine %s seq %s: %r", w.name, msg.subject, seq, exc)
            return False
        log.warning("%s quarantined %s (seq %s): %s", w.name, msg.subject, seq, reason)
        return True
