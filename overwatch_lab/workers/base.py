"""The consumer loop every worker shares: fetch in large batches, settle each message once.

A worker only turns a batch of messages into one :class:`Result` per message; the loop does
the rest the same way for everyone:

- ``ACK``: effects are durable (the worker returns only after its DB commit and KV write).
- ``RETRY``: a transient failure. NAK with a delay, and quarantine on the configured delivery
  (docs/wire.md: the 3rd) so that a message that keeps failing is never redelivered forever.
- ``POISON``: the message can never succeed (invalid envelope, unknown entity, subject/body
  mismatch): quarantined at once.
- ``HOLD``: not the message's fault (the database is full, read-only, locked or unreachable):
  the loop keeps the message unacknowledged, sends ``+WPI`` (in progress) for it every
  ``ack_wait_s / 3`` so the server never redelivers it (a hold burns no delivery of
  ``max_deliver``), stops fetching (the stream keeps what follows; a prefetch already in flight
  joins the held set), waits a bounded, jittered, growing delay and hands the held messages to
  the worker again, until none is held: then it resumes by itself. Never quarantined. The worker's
  stats (``holding``, ``hold_reason``, ``held``, …) and the log raise the alarm (:mod:`.hold`).
  A *deferred* hold (:func:`defer`: a registration the message depends on is still in flight)
  is lighter: the message stays unacked and in progress and is handed to the worker again with
  the next batch, while fetching goes on; no alarm (``deferred`` counts them).

A batch that raises :class:`~overwatch_lab.errors.DatabaseUnavailable` is held whole; any other
exception retries every message of it. Quarantine = a record on ``constellation.quarantine.{worker}``
(published and acknowledged by JetStream, with ``Nats-Msg-Id: quarantine-{stream}-{seq}``), then
TERM. If the quarantine publish itself fails (broker trouble) the message is held instead, so
nothing is ever dropped silently and a broker outage does not burn deliveries.

At stop, what was delivered is handled (the last pull request is let run out first), and held
messages are NAKed (no delay) so the next run gets them at once.

Every call to the broker (pull, ack/nak/term/in-progress, the quarantine publish) goes through the
broker seam (:mod:`overwatch_lab.broker.jetstream`), so the loop handles our
:class:`~overwatch_lab.errors.BrokerError` types only.
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

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from overwatch_lab.broker import jetstream
from overwatch_lab.config import LabConfig
from overwatch_lab.errors import BrokerConnectionClosed, BrokerError, DatabaseUnavailable
from overwatch_lab.protocol.envelopes import now_timestamp
from overwatch_lab.protocol.printable import printable
from overwatch_lab.protocol.subjects import published_subject, quarantine_subject
from overwatch_lab.workers.hold import Backoff, HoldAlarm
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
    """The settlement of one message, with the reason for anything but ACK.

    Attributes:
        reason: why; kept printable (:func:`~overwatch_lab.protocol.printable.printable`), as it
            reaches the quarantine record, the worker's stats, the log and the dashboard, and it
            often quotes the device's own text.
        blocking: for HOLD only: True (an infrastructure fault) stops fetching until the held
            messages succeed; False (:func:`defer`) carries the message into the next batch.
    """

    outcome: Outcome
    reason: str | None = None
    blocking: bool = True

    def __post_init__(self) -> None:
        if self.reason is not None and not self.reason.isprintable():
            object.__setattr__(self, "reason", printable(self.reason))


ACK = Result(Outcome.ACK)


def retry(reason: str) -> Result:
    """A transient failure: redeliver later, quarantine on the configured delivery."""
    return Result(Outcome.RETRY, reason)


def poison(reason: str) -> Result:
    """A message that can never succeed: quarantine at once."""
    return Result(Outcome.POISON, reason)


def hold(reason: str) -> Result:
    """Not the message's fault (an infrastructure fault): keep it unacked and retry, never quarantine.

    The loop stops fetching and raises the hold alarm until the held messages succeed.
    """
    return Result(Outcome.HOLD, reason)


def defer(reason: str) -> Result:
    """Not yet decidable (a registration it depends on is still in flight): keep it unacked and
    hand it to the worker again with the next batch; never quarantined, no alarm, fetching goes on."""
    return Result(Outcome.HOLD, reason, blocking=False)


@dataclass(slots=True)
class WorkerStats:
    """Counters of one worker, readable from Python (``lab.stats()``) and shown on dashboards."""

    handled: int = 0  # messages settled (any outcome; a held message counts once settled)
    acked: int = 0
    ignored: int = (
        0  # acked without changing live state (late or duplicate; telemetry still stores late rows)
    )
    late: int = 0  # late messages stored in history (not newer than live state), counted once per message_uid
    retried: int = 0  # NAKed for redelivery
    quarantined: int = 0
    holding: bool = False  # the alarm: messages are held for an infrastructure fault right now
    hold_reason: str | None = None  # why the current (or the last) hold holds
    hold_since: float | None = None  # epoch seconds the current hold started (None: not holding)
    holds: int = 0  # hold episodes so far
    held: int = 0  # messages held right now (unacked, kept in progress, retried)
    hold_attempts: int = 0  # attempts at the held messages in the current (or last) hold
    last_hold_s: float | None = None  # duration of the last finished hold
    deferred: int = 0  # messages waiting for a dependency in flight, carried into the next batch
    deferrals: int = 0  # times a message was deferred (a registration race seen), cumulative
    kv_writes: int = 0  # compare-and-set writes of entity documents (coalesced per entity per batch)
    batches: int = 0
    last_batch_size: int = 0
    peak_batch_size: int = 0
    lag: int = 0  # messages in the stream not yet delivered to this consumer
    last_error: str | None = None
    last_batch_at: float | None = None
    busy_s: float = 0.0  # time spent handling batches
    # Cumulative seconds per stage of handle_batch, filled by the workers that split it (telemetry):
    decode_s: float = 0.0  # decoding, validating, projecting and planning (CPU, event loop; includes
    # the early decoding of the next batch in Worker.prepare, which is not in busy_s)
    db_s: float = 0.0  # awaiting the history insert (commit)
    kv_s: float = 0.0  # awaiting KV reads (cache misses) and compare-and-set writes

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

    async def prepare(self, msgs: list[Msg]) -> None:  # noqa: B027  # optional hook, no-op by default
        """See a fetched batch as soon as it arrives, possibly while the previous one is still
        being handled (awaiting its commit and KV writes), to do early what depends on the
        messages alone (decoding), never on state: :meth:`handle_batch` may find it done.

        Must not raise (a message it cannot decode is handled by :meth:`handle_batch`).
        """

    def ignored(self, n: int = 1) -> None:
        """Count messages acknowledged without changing live state (late or duplicate)."""
        self.stats.ignored += n


class ConsumerLoop:
    """Pull-consume one durable consumer and settle every message through its worker.

    ``on_consumer_gone(stream, durable, status)`` hears when the broker answers a pull as if the
    consumer did not exist (the lab re-provisions it); the loop keeps pulling meanwhile.

    ``on_fetched``, when given, sees every fetched batch first, in delivery order (the
    stream watch finds sequences the stream removed before they were delivered).
    """

    def __init__(
        self,
        worker: Worker,
        nc: NATS,
        js: JetStreamContext,
        config: LabConfig,
        on_fetched: Callable[[list[Msg]], None] | None = None,
    ) -> None:
        self.worker = worker
        self.on_consumer_gone: Callable[[str, str, str], None] | None = None
        self.nc = nc
        self.js = js
        self.config = config
        self.on_fetched = on_fetched
        self._stopping = asyncio.Event()
        self._held: list[Msg] = []  # in stream order; unacked, kept in progress; no fetching
        self._deferred: list[Msg] = []  # unacked, kept in progress, handled again with the next batch
        self._handling: list[Msg] = []  # the batch the worker is handling now
        self._collected: list[Msg] = []  # what the fetch in flight collected so far (the next batch)
        self._handled = True  # no batch is being handled: the fetch in flight returns what it has
        self._handling_since = 0.0
        self._backoff = Backoff(config.hold_backoff_initial_s, config.hold_backoff_max_s)
        self._alarm = HoldAlarm(worker.name, worker.stats, config.hold_reminder_s)
        self.progress_every_s = config.ack_wait_s / 3
        """How often held messages (and a batch handled for longer) are reported in progress."""

    def request_stop(self) -> None:
        """Ask the loop to finish its current batch and return."""
        self._stopping.set()

    async def run(self, ready: asyncio.Event) -> None:
        """Run until :meth:`request_stop`; sets ``ready`` once bound to the consumer.

        The next fetch is in flight while a batch is handled, so the broker round trip, and the
        worker's :meth:`Worker.prepare` of what it brings (decoding), overlap the DB commit and
        KV writes. That fetch collects everything delivered until the batch is handled (up to
        ``fetch_batch``), keeping a pull request open meanwhile: the next batch is what arrived
        during this one (small when the lab keeps up, large under a backlog), and a message
        waits for one batch at most, not for a small one handled first. At stop the in-flight fetch is awaited and its messages handled too
        (cancelling it could strand delivered messages until ack_wait), and so is what its pull
        request delivers until it ends; while holding, they join the held set, which is NAKed.
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
        keep_alive = asyncio.create_task(self._keep_alive(puller), name=f"progress:{w.name}")
        try:
            while True:
                if self._held:
                    if inflight is not None:  # a prefetch in flight joins the held set
                        self._held.extend(await inflight)
                        inflight = None
                    self._held.extend(self._take_buffered(puller))  # the rest of its pull request
                    self._alarm.update(len(self._held), None)
                    if self._stopping.is_set() or await self._wait(self._backoff.next()):
                        break
                    self._alarm.attempt()
                    await self._handle(list(self._held), fresh=False)
                    continue
                if inflight is None:
                    if self._stopping.is_set():
                        break
                    inflight = asyncio.create_task(self._fetch(puller), name=f"fetch:{w.name}")
                msgs = await inflight
                inflight = None
                if not msgs and not self._deferred:
                    continue
                self._handled = False
                if not self._stopping.is_set():
                    inflight = asyncio.create_task(self._fetch(puller), name=f"fetch:{w.name}")
                try:
                    await self._handle(self._deferred + msgs)
                finally:
                    self._handled = True  # the fetch in flight stops collecting
                    puller.wake()
            # What the last pull request delivered is handled, not NAKed: a NAK does not outlive a
            # broker restart (a graceful stop of an embedded lab), so NAKed messages would wait
            # ack_wait. The request is let run out first: one left open would strand what it
            # delivers after the unsubscribe until ack_wait too.
            await puller.settle()
            if not self._held and (last := self._take_buffered(puller)):
                await self._handle(self._deferred + last)
            await self._release(self._held + self._deferred + self._take_buffered(puller))
        finally:
            keep_alive.cancel()
            await asyncio.wait([keep_alive])  # a cancellation of run() itself still propagates
            if not keep_alive.cancelled() and keep_alive.exception() is not None:
                log.error("%s: progress reporting failed: %r", w.name, keep_alive.exception())
            if inflight is not None:
                inflight.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await inflight
            with contextlib.suppress(Exception):
                await puller.stop()

    def _take_buffered(self, puller: BatchPuller) -> list[Msg]:
        """What the puller received but no fetch returned, shown to ``on_fetched`` like a fetch."""
        msgs = puller.take_buffered()
        if msgs and self.on_fetched is not None:
            self.on_fetched(msgs)
        return msgs

    async def _wait(self, delay_s: float) -> bool:
        """Sleep ``delay_s`` or until a stop is requested; True if it was."""
        try:
            async with asyncio.timeout(delay_s):
                await self._stopping.wait()
        except TimeoutError:
            return False
        return True

    async def _keep_alive(self, puller: BatchPuller) -> None:
        """Tell the server, every ``progress_every_s``, that held messages (with what the puller
        received for them meanwhile) and a batch handled for that long already are still being
        worked on, so ack_wait never expires for them."""
        while True:
            await asyncio.sleep(self.progress_every_s)
            msgs = self._held + puller.buffered() if self._held else list(self._deferred)
            if self._handling and time.monotonic() - self._handling_since >= self.progress_every_s:
                msgs.extend(self._handling)
                msgs.extend(self._collected)
            try:
                for msg in msgs:
                    await jetstream.in_progress(msg)
            except BrokerError as exc:  # reconnecting: the next round tries again
                log.debug("%s: in-progress for %d messages failed: %r", self.worker.name, len(msgs), exc)

    async def _release(self, msgs: list[Msg]) -> None:
        """At stop: NAK what was held or buffered, so the next run gets it without waiting ack_wait."""
        holding = bool(self._held)
        self._held, self._deferred = [], []
        self.worker.stats.deferred = 0
        try:
            for msg in msgs:
                await jetstream.nak(msg)
        except BrokerError as exc:  # they come back after ack_wait instead
            log.warning("%s: could not release %d messages at stop: %r", self.worker.name, len(msgs), exc)
        if holding:
            log.warning(
                "%s stopped while holding; %d messages released for redelivery", self.worker.name, len(msgs)
            )
            self._alarm.update(0, None)

    async def _fetch(self, puller: BatchPuller) -> list[Msg]:
        """The next batch: the first messages delivered, then everything delivered until the
        batch being handled is done (``_handled``), up to ``fetch_batch``, each part prepared by
        the worker as it comes (overlapping the handling; see :meth:`run`)."""
        w = self.worker
        batch, wait_s = self.config.fetch_batch, self.config.fetch_timeout_s
        got = self._collected = []
        try:
            while len(got) < batch:
                try:
                    msgs = await puller.fetch(batch - len(got), wait_s, wakeable=bool(got))
                except BrokerConnectionClosed:
                    if self._stopping.is_set() or got:
                        break
                    raise
                except BrokerError as exc:  # reconnecting etc.: keep going
                    w.stats.last_error = f"fetch: {exc!r}"
                    log.warning("%s fetch failed: %r", w.name, exc)
                    if got:
                        break
                    await asyncio.sleep(0.2)
                    return []
                if not got and not msgs:
                    w.stats.lag = 0
                    return msgs
                got.extend(msgs)
                if msgs:
                    await w.prepare(msgs)  # overlaps the handling of the previous batch (see run)
                if self._handled:
                    break
        finally:
            self._collected = []
        if self.on_fetched is not None:
            self.on_fetched(got)
        return got

    async def _handle(self, msgs: list[Msg], *, fresh: bool = True) -> None:
        """Have the worker handle ``msgs`` and settle every result but HOLD; keep the held ones.

        ``fresh`` is False when re-handling held messages: their ``num_pending`` is as old as
        their fetch, so they do not update ``lag`` (the stream watch keeps the live lag).

        If any of them is held for an infrastructure fault they all go to the held set (no
        fetching until it is empty), else the deferred ones are carried into the next batch.
        """
        w = self.worker
        started = time.perf_counter()
        self._handling, self._handling_since = msgs, time.monotonic()
        try:
            results = await w.handle_batch(msgs)
            if len(results) != len(msgs):
                raise RuntimeError(f"{w.name} returned {len(results)} results for {len(msgs)} messages")
        except asyncio.CancelledError:
            raise
        except DatabaseUnavailable as exc:  # the lab's infrastructure, not the messages: hold them all
            log.warning("%s: infrastructure fault on a batch of %d: %s", w.name, len(msgs), exc)
            results = [hold(f"{type(exc).__name__}: {exc}")] * len(msgs)
        except Exception as exc:  # a bug or an outage: every message is retried, never lost
            log.exception("%s failed on a batch of %d", w.name, len(msgs))
            results = [retry(f"{type(exc).__name__}: {exc}")] * len(msgs)
        finally:
            self._handling = []
        held: list[Msg] = []
        reason: str | None = None  # of the first blocking hold
        for msg, result in zip(msgs, results, strict=True):
            if result.outcome is not Outcome.HOLD:
                problem = await self._settle(msg, result)
                if problem is None:
                    continue
                result = hold(problem)
            held.append(msg)
            if result.blocking and reason is None:
                reason = result.reason
            w.stats.last_error = result.reason
        st = w.stats
        st.batches += 1
        st.handled += len(msgs) - len(held)
        st.last_batch_size = len(msgs)
        st.peak_batch_size = max(st.peak_batch_size, len(msgs))
        st.last_batch_at = time.time()
        st.busy_s += time.perf_counter() - started
        if fresh:
            st.lag = msgs[-1].metadata.num_pending
        if reason is not None:
            self._held, self._deferred = held, []
        else:
            self._held, self._deferred = [], held
            st.deferrals += len(held)
            self._backoff.reset()
        st.deferred = len(self._deferred)
        self._alarm.update(len(self._held), reason)

    async def _settle(self, msg: Msg, result: Result) -> str | None:
        """Settle one message; returns why it must be held instead (its quarantine failed), else None."""
        st = self.worker.stats
        if result.outcome is Outcome.ACK:
            await jetstream.ack(msg)
            st.acked += 1
            return None
        st.last_error = result.reason
        if result.outcome is Outcome.RETRY and msg.metadata.num_delivered < self.config.quarantine_after:
            await jetstream.nak(msg, self.config.retry_delay_s)
            st.retried += 1
            return None
        reason = result.reason or "unknown"
        if result.outcome is Outcome.RETRY:
            reason = f"failed on delivery {msg.metadata.num_delivered}: {reason}"
        problem = await self._quarantine(msg, reason)
        if problem is None:
            await jetstream.term(msg)
            st.quarantined += 1
        return problem

    async def _quarantine(self, msg: Msg, reason: str) -> str | None:
        """Publish the quarantine record of ``msg``; returns why it could not be, else None."""
        w = self.worker
        meta = msg.metadata
        seq = meta.sequence.stream
        record = {
            "worker": w.name,
            "source_stream": w.stream,
            "source_consumer": w.durable,
            "original_subject": published_subject(msg.subject),  # as the device sent it
            "original_data": base64.b64encode(msg.data).decode(),
            "error": reason,
            "num_delivered": meta.num_delivered,
            "stream_sequence": seq,
            "quarantined_at": now_timestamp(),
        }
        try:
            await jetstream.js_publish(
                self.js,
                quarantine_subject(w.name),
                json.dumps(record).encode(),
                headers={"Nats-Msg-Id": f"quarantine-{w.stream}-{seq}"},
            )
        except (BrokerError, TimeoutError) as exc:
            log.error("%s could not quarantine %s seq %s (held): %r", w.name, msg.subject, seq, exc)
            return f"quarantine publish failed: {exc!r}"
        log.warning("%s quarantined %s (seq %s): %s", w.name, msg.subject, seq, reason)
        return None
