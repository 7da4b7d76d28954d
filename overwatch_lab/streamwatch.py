"""Stream watch: messages a stream threw away before the lab saw them, and consumer lag.

A limits stream with ``discard: old`` (telemetry, entities, quarantine …) makes room for new
messages by removing the oldest ones, whether a worker has seen them or not. The server keeps
no count of that. This module does, per stream of the lab, every ``stats_period_s``:

**Discarded unseen** (streams with a durable consumer of ours). A stream sequence ``s`` that
was never delivered to the durable and is below the stream's ``first_seq`` was removed before
anyone could see it: the consumer skips over it silently. Two views catch every such ``s``:

- the worker's :class:`~overwatch_lab.workers.base.ConsumerLoop` reports every fetched batch
  (:meth:`StreamWatch.observer`); a jump in first-delivered sequences (``s > seen + 1``) is a
  *candidate* gap. Each pass confirms the part of a candidate below ``first_seq`` (gone, so it
  can never be delivered later) and counts it; a candidate still in the stream (a delivery lost
  in transit by a reconnect) is redelivered later and then dropped from the candidates;
- each pass reads the STREAM info first, then the CONSUMER info. When the loop has seen every
  delivery (``delivered.stream_seq <= seen``), every ``s`` with ``seen < s < first_seq`` was
  removed before it was delivered: a message already gone when the stream was read cannot be
  delivered after it. This catches what the loop cannot see: messages aged out of a quiet
  stream, and everything the stream dropped while the lab was down (the first pass runs at boot,
  before the workers, from the durable's stored ``delivered.stream_seq``).

``seen`` is a high-water mark, so nothing is counted twice. A brand-new durable counts nothing
from before it existed: the server starts a deliver-all durable at the stream's ``first_seq``
(its ``delivered.stream_seq`` is ``first_seq - 1`` at creation), which is the baseline here. A
durable that existed and fell behind while the lab was down does count, from where it stood.

**Lag and its trend.** Per durable: ``pending`` (in the stream, not yet delivered),
``ack_pending`` (delivered, not yet acknowledged), ``lag`` (their sum) and ``lag_rate_per_s``,
an exponentially weighted mean (time constant :data:`LAG_TAU_S`) of d(lag)/dt: positive means
the lab is falling behind. ``overflow_in_s`` estimates when, at that rate, undelivered messages
reach the stream's limits and start being discarded.

**Dropped by limits** (streams without a consumer of ours: the quarantine). Every removal moves
``first_seq``; a removal is a limit drop (msgs/bytes, counted in ``dropped``) when the oldest
removed record was younger than ``max_age`` (it cannot have aged out), and an age-out
(``aged``, normal retention) otherwise, unless the stream sits at its msgs/bytes limit. The
baseline is the stream as found at boot: earlier runs reported their own drops.

**Several durables on one stream** (the telemetry partitions and ``telemetry-processor``,
docs/wire.md): their filters are disjoint and cover the stream, so each sequence goes to exactly
one of them, and a jump in one durable's sequences is mostly other partitions' messages. For such
a stream the gap view is the *union* of what every durable fetched
(:class:`~overwatch_lab.fetched_union.FetchedUnion`): loops of this process report through
:meth:`StreamWatch.observer`, worker processes their fetched ranges through
:meth:`StreamWatch.fetched`. A missing sequence is counted as discarded once it is below
``first_seq`` and every durable has reported past it (a late report cannot fill it afterwards).
Each pass reads the stream info, then every durable's consumer info, which moves a durable's
horizon when it reported every delivery (:meth:`~overwatch_lab.fetched_union.FetchedUnion.caught_up`)
and so also counts what the stream dropped while the lab was down. ``consumers`` holds each
durable's ``delivered_seq`` / ``pending`` / ``ack_pending`` / ``lag``; the stream's counters their sums.

Each growth of ``discarded`` or ``dropped`` logs a WARNING naming the stream and the count.
The counters are per lab run. Not counted here: a message delivered but removed by the limits
before its ack (e.g. while a worker holds): the worker saw it, and whether it is lost depends on
how the worker settles it.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from overwatch_lab.broker import jetstream
from overwatch_lab.config import LabConfig, StreamLimits
from overwatch_lab.errors import BrokerError, ConfigError
from overwatch_lab.fetched_union import FetchedUnion, runs, stream_seq

__all__ = ["DeliveryGaps", "LagTrend", "StreamCounters", "StreamWatch", "classify_removal", "stream_seq"]
from overwatch_lab.protocol.commands import STREAM_COMMAND_ACKS

log = logging.getLogger(__name__)

LAG_TAU_S = 10.0  # s, time constant of the lag-trend EWMA
MAX_GAPS = 4096  # candidate gap ranges kept per durable before the oldest is counted as confirmed
API_PREFIX = "$JS.API"  # the lab's JetStream API prefix (nats-py default)
REQUEST_TIMEOUT_S = 2.0  # s, per stream/consumer info request


class DeliveryGaps:
    """Sequences a durable never delivered: a high-water mark plus candidate gap ranges (pure).

    Args:
        seen: the highest stream sequence accounted for (delivered, or counted as discarded);
            None until the first :meth:`observe` or :meth:`baseline`.
    """

    def __init__(self, seen: int | None = None) -> None:
        self.seen = seen
        self._starts: list[int] = []  # candidate ranges [start, end], sorted, disjoint
        self._ends: list[int] = []

    @property
    def unconfirmed(self) -> int:
        """Sequences in candidate gaps not yet confirmed gone."""
        return sum(e - s + 1 for s, e in zip(self._starts, self._ends, strict=True))

    def baseline(self, delivered: int) -> None:
        """Start from the durable's ``delivered.stream_seq`` if nothing was observed yet."""
        if self.seen is None:
            self.seen = delivered

    def reset(self, delivered: int) -> None:
        """Forget everything (the stream was recreated: its sequences started again)."""
        self.seen = delivered
        self._starts.clear()
        self._ends.clear()

    def observe(self, seqs: Iterable[int]) -> int:
        """Record delivered stream sequences in delivery order.

        Returns:
            Sequences counted at once, without confirmation, because more than
            :data:`MAX_GAPS` candidate ranges were pending (0 in any sane run).
        """
        counted = 0
        for seq in seqs:
            if self.seen is None:
                self.seen = seq
            elif seq > self.seen:
                if seq > self.seen + 1:
                    self._starts.append(self.seen + 1)
                    self._ends.append(seq - 1)
                    if len(self._starts) > MAX_GAPS:
                        counted += self._ends.pop(0) - self._starts.pop(0) + 1
                self.seen = seq
            elif self._starts:
                self._delivered_late(seq)
        return counted

    def confirm(self, first_seq: int) -> int:
        """Count (and forget) candidate sequences below ``first_seq``: removed, never delivered."""
        counted = 0
        while self._starts and self._starts[0] < first_seq:
            end = self._ends[0]
            if end < first_seq:
                counted += end - self._starts[0] + 1
                del self._starts[0], self._ends[0]
            else:
                counted += first_seq - self._starts[0]
                self._starts[0] = first_seq
        return counted

    def trailing(self, first_seq: int, delivered: int) -> int:
        """Count ``seen < s < first_seq`` when every delivery up to ``delivered`` was observed.

        ``first_seq`` must have been read before ``delivered`` (stream info, then consumer info).
        """
        if self.seen is None or delivered > self.seen or first_seq - 1 <= self.seen:
            return 0
        counted = first_seq - 1 - self.seen
        self.seen = first_seq - 1
        return counted

    def _delivered_late(self, seq: int) -> None:
        i = bisect.bisect_right(self._starts, seq) - 1
        if i < 0 or seq > self._ends[i]:
            return
        start, end = self._starts[i], self._ends[i]
        if start == end:
            del self._starts[i], self._ends[i]
        elif seq == start:
            self._starts[i] = seq + 1
        elif seq == end:
            self._ends[i] = seq - 1
        else:
            self._ends[i] = seq - 1
            self._starts.insert(i + 1, seq + 1)
            self._ends.insert(i + 1, end)


class LagTrend:
    """Exponentially weighted mean of d(lag)/dt in messages per second (pure).

    Args:
        tau_s: time constant; a step change in the rate is 63 % reflected after ``tau_s``.
    """

    def __init__(self, tau_s: float = LAG_TAU_S) -> None:
        self.tau_s = tau_s
        self.rate_per_s: float | None = None
        self._last: tuple[float, int] | None = None

    def update(self, t_s: float, lag: int) -> float | None:
        """Add a sample (monotonic time, lag) and return the smoothed rate (None after one sample)."""
        if self._last is not None:
            t0, lag0 = self._last
            dt = t_s - t0
            if dt <= 0:
                return self.rate_per_s
            rate = (lag - lag0) / dt
            if self.rate_per_s is None:
                self.rate_per_s = rate
            else:
                alpha = 1.0 - math.exp(-dt / self.tau_s)
                self.rate_per_s += alpha * (rate - self.rate_per_s)
        self._last = (t_s, lag)
        return self.rate_per_s


def classify_removal(
    removed: int,
    oldest_removed_ts: float | None,
    now_ts: float,
    limits: StreamLimits,
    messages: int,
    nbytes: int,
) -> tuple[int, int]:
    """Split records a consumer-less stream removed into (limit drops, age-outs) (pure).

    Args:
        removed: how far ``first_seq`` moved since the last pass.
        oldest_removed_ts: epoch time of the record that was first at the last pass (None
            when the stream was empty then: everything removed arrived since, and was young).
        now_ts: epoch time of this pass.
        limits: the stream's limits.
        messages / nbytes: the stream's state now.
    """
    if removed <= 0:
        return 0, 0
    max_age = limits.max_age_s if limits.max_age_s > 0 else math.inf
    if oldest_removed_ts is None or oldest_removed_ts > now_ts - max_age:
        return removed, 0  # even the oldest removed record was too young to age out
    at_limit = messages >= limits.max_msgs or nbytes + limits.max_msg_size > limits.max_bytes
    return (removed, 0) if at_limit else (0, removed)


@dataclass(slots=True)
class StreamCounters:
    """What :class:`StreamWatch` knows of one stream (``lab.stats()["streams"][name]``).

    ``discarded`` (consumed streams) and ``dropped`` (the quarantine) are messages lost
    without a worker seeing them; ``lost`` is their sum, the number the dashboard marks.
    """

    consumer: str | None = None
    messages: int = 0
    bytes: int = 0
    first_seq: int = 0
    last_seq: int = 0
    fill_pct: float = 0.0  # of the msgs or bytes limit, whichever is closer
    discarded: int = 0  # removed before the durable delivered them
    unconfirmed: int = 0  # candidate gaps not yet confirmed gone
    dropped: int = 0  # consumer-less stream: records removed by the msgs/bytes limits
    aged: int = 0  # consumer-less stream: records removed by max_age (normal retention)
    lost: int = 0
    delivered_seq: int | None = None
    pending: int | None = None
    ack_pending: int | None = None
    lag: int | None = None
    lag_rate_per_s: float | None = None
    overflow_in_s: float | None = None
    checks: int = 0
    checked_at: float | None = None
    last_error: str | None = None
    consumers: dict[str, dict[str, Any]] = field(default_factory=dict)  # several durables: each one's lag

    def snapshot(self) -> dict[str, Any]:
        """Return a plain dict copy."""
        return asdict(self)


@dataclass(slots=True)
class _Watched:
    name: str
    limits: StreamLimits
    durable: str | None
    counters: StreamCounters
    extra: list[str] = field(default_factory=list)  # more durables on this stream (partitions)
    gaps: DeliveryGaps = field(default_factory=DeliveryGaps)
    union: FetchedUnion | None = None  # several durables: the union of what they fetched
    trend: LagTrend = field(default_factory=LagTrend)
    first_seq: int | None = None  # consumer-less: first_seq at the last pass
    first_ts: float | None = None  # consumer-less: time of that record


class StreamWatch:
    """Counts messages the lab's streams removed unseen, and watches consumer lag.

    Args:
        nc: the lab's connection.
        js: its JetStream context.
        config: supplies ``stats_period_s`` and each stream's limits.
        consumers: (stream, durable) of every worker, here or in a worker process; a stream named
            again gets the durable as one more of its consumers (see the module docstring).
        unconsumed: streams of the lab that no consumer of ours reads (the quarantine).
    """

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        config: LabConfig,
        consumers: Sequence[tuple[str, str]],
        unconsumed: Sequence[str] = (),
    ) -> None:
        self.nc = nc
        self.js = js
        self.config = config
        self._watched: dict[str, _Watched] = {}
        for stream, durable in consumers:
            if stream in self._watched and self._watched[stream].durable is not None:
                self._watched[stream].extra.append(durable)
            else:
                self._add(stream, durable)
        for stream in unconsumed:
            self._add(stream, None)
        for w in self._watched.values():
            if w.extra and w.durable is not None:
                w.union = FetchedUnion([w.durable, *w.extra])
        self._stopping = asyncio.Event()

    def _add(self, stream: str, durable: str | None) -> None:
        if stream in self._watched:
            raise ConfigError(f"stream {stream!r} is watched twice (one durable per stream)")
        if stream in self.config.streams:
            limits = self.config.streams[stream]
        elif stream == STREAM_COMMAND_ACKS:
            limits = self.config.command_acks_stream
        else:
            raise ConfigError(f"no limits configured for stream {stream!r}")
        self._watched[stream] = _Watched(stream, limits, durable, StreamCounters(consumer=durable))

    def observer(self, stream: str, durable: str | None = None) -> Callable[[list[Msg]], None]:
        """The callback a ConsumerLoop of ``durable`` (default: the stream's first) calls with every
        batch it fetched from ``stream``."""
        w = self._watched[stream]
        union, source = w.union, durable or w.durable or ""

        def observe(msgs: list[Msg]) -> None:
            if union is not None:
                union.add(source, runs(map(stream_seq, msgs)))
            else:
                self._add_discarded(w, w.gaps.observe(map(stream_seq, msgs)))

        return observe

    def fetched(self, stream: str, durable: str, flat: list[int]) -> None:
        """What a worker process reported ``durable`` fetched from ``stream`` (flat runs, see
        :func:`~overwatch_lab.fetched_union.runs`)."""
        w = self._watched.get(stream)
        if w is not None and w.union is not None:
            w.union.add(durable, flat)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Counters per stream name (see :class:`StreamCounters`)."""
        return {name: w.counters.snapshot() for name, w in self._watched.items()}

    def request_stop(self) -> None:
        """Ask :meth:`run` to return."""
        self._stopping.set()

    async def run(self, ready: asyncio.Event) -> None:
        """Check every ``stats_period_s`` until :meth:`request_stop`."""
        ready.set()
        while not self._stopping.is_set():
            try:
                async with asyncio.timeout(self.config.stats_period_s):
                    await self._stopping.wait()
            except TimeoutError:
                pass
            if not self._stopping.is_set():
                await self.check()

    async def check(self) -> None:
        """One pass over every watched stream (also the boot pass, before the workers run).

        A stop request ends the pass between streams: with the broker gone each read waits its
        whole timeout, and a stopping lab must not wait for all of them.
        """
        for w in self._watched.values():
            if self._stopping.is_set():
                break
            try:
                if w.durable is None:
                    await self._check_unconsumed(w)
                else:
                    await self._check_consumed(w)
                w.counters.last_error = None
            except (
                BrokerError,
                OSError,
                ValueError,
                KeyError,
            ) as exc:  # the next pass retries (OSError: a reset)
                if w.counters.last_error is None:  # say it once per outage, not every period
                    log.warning("stream watch of %s failed: %r", w.name, exc)
                w.counters.last_error = f"{type(exc).__name__}: {exc}"
            w.counters.checks += 1
            w.counters.checked_at = time.time()

    async def _check_consumed(self, w: _Watched) -> None:
        assert w.durable is not None
        if w.extra:
            await self._check_several(w)
            return
        gaps = w.gaps
        seen = gaps.seen  # before the reads: the loop keeps observing while they are awaited
        state = await self._stream_state(w)  # first: see the module docstring
        info = await jetstream.consumer_info(self.js, w.name, w.durable, timeout_s=REQUEST_TIMEOUT_S)
        first, delivered = int(state["first_seq"]), info.delivered.stream_seq if info.delivered else 0
        if seen is not None and int(state["last_seq"]) < seen:
            log.warning(
                "stream %s restarted its sequences (last %s < %s seen)", w.name, state["last_seq"], seen
            )
            gaps.reset(delivered)
        gaps.baseline(delivered)
        new = gaps.confirm(first) + gaps.trailing(first, delivered)
        c = w.counters
        c.delivered_seq = delivered
        c.pending, c.ack_pending = info.num_pending or 0, info.num_ack_pending or 0
        c.lag = c.pending + c.ack_pending
        c.lag_rate_per_s = w.trend.update(time.monotonic(), c.lag)
        c.unconfirmed = gaps.unconfirmed
        c.overflow_in_s = _overflow_in_s(w.limits, state, c.pending, c.lag_rate_per_s)
        self._add_discarded(w, new)

    async def _check_several(self, w: _Watched) -> None:
        assert w.durable is not None and w.union is not None
        union = w.union
        floor = union.floor  # before the reads: the loops keep reporting while they are awaited
        state = await self._stream_state(w)  # first: see the module docstring
        first, last = int(state["first_seq"]), int(state["last_seq"])
        c = w.counters
        per: dict[str, dict[str, Any]] = {}
        for durable in (w.durable, *w.extra):
            info = await jetstream.consumer_info(self.js, w.name, durable, timeout_s=REQUEST_TIMEOUT_S)
            delivered = info.delivered.stream_seq if info.delivered else 0
            pending, ack_pending = info.num_pending or 0, info.num_ack_pending or 0
            per[durable] = {"delivered_seq": delivered, "pending": pending, "ack_pending": ack_pending,
                            "lag": pending + ack_pending}  # fmt: skip
        positions = {d: p["delivered_seq"] for d, p in per.items()}
        if floor is not None and last < floor:
            log.warning("stream %s restarted its sequences (last %s < %s seen)", w.name, last, floor)
            union.reset(positions)
        union.baseline(positions)
        for durable, p in per.items():
            union.caught_up(durable, first, last, p["delivered_seq"], p["pending"])
        new = union.confirm(first)
        c.consumers = per
        c.delivered_seq = max(positions.values())
        c.pending = sum(p["pending"] for p in per.values())
        c.ack_pending = sum(p["ack_pending"] for p in per.values())
        c.lag = c.pending + c.ack_pending
        c.lag_rate_per_s = w.trend.update(time.monotonic(), c.lag)
        c.unconfirmed = union.unconfirmed
        c.overflow_in_s = _overflow_in_s(w.limits, state, c.pending, c.lag_rate_per_s)
        self._add_discarded(w, new)

    def _add_discarded(self, w: _Watched, new: int) -> None:
        if new <= 0:
            return
        c = w.counters
        c.discarded += new
        c.lost = c.discarded + c.dropped
        log.warning(
            "stream %s discarded %d messages before %s received them (%d this run); lag %s, %s msg/s",
            w.name, new, w.durable, c.discarded, c.lag,
            "?" if c.lag_rate_per_s is None else f"{c.lag_rate_per_s:+.0f}",
        )  # fmt: skip

    async def _check_unconsumed(self, w: _Watched) -> None:
        state = await self._stream_state(w)
        first, now = int(state["first_seq"]), time.time()
        messages, nbytes = int(state.get("messages", 0)), int(state.get("bytes", 0))
        before = None if w.first_seq is None else max(w.first_seq, 1)  # an empty new stream says 0
        if before is not None and first > before:
            dropped, aged = classify_removal(first - before, w.first_ts, now, w.limits, messages, nbytes)
            c = w.counters
            c.aged += aged
            if dropped:
                c.dropped += dropped
                c.lost = c.discarded + c.dropped
                log.warning(
                    "stream %s dropped %d records at its limits (%d this run; max_msgs %d, max_bytes %d)",
                    w.name, dropped, c.dropped, w.limits.max_msgs, w.limits.max_bytes,
                )  # fmt: skip
        w.first_seq = first
        w.first_ts = _epoch(state.get("first_ts")) if messages else None

    async def _stream_state(self, w: _Watched) -> dict[str, Any]:
        """The stream's ``state`` (raw: nats-py's StreamState drops ``first_ts``); fills the counters."""
        resp = await jetstream.api_request(self.nc, f"{API_PREFIX}.STREAM.INFO.{w.name}", REQUEST_TIMEOUT_S)
        state: dict[str, Any] = resp["state"]
        c = w.counters
        c.messages, c.bytes = int(state.get("messages", 0)), int(state.get("bytes", 0))
        c.first_seq, c.last_seq = int(state["first_seq"]), int(state["last_seq"])
        c.fill_pct = 100.0 * max(_share(c.messages, w.limits.max_msgs), _share(c.bytes, w.limits.max_bytes))
        return state


def _share(value: int, limit: int) -> float:
    return value / limit if limit > 0 else 0.0


def _overflow_in_s(
    limits: StreamLimits, state: dict[str, Any], pending: int, rate: float | None
) -> float | None:
    """Seconds until undelivered messages fill the stream's limits at the current lag growth."""
    if rate is None or rate <= 0:
        return None
    messages, nbytes = int(state.get("messages", 0)), int(state.get("bytes", 0))
    room = limits.max_msgs if limits.max_msgs > 0 else math.inf
    if limits.max_bytes > 0 and messages:
        room = min(room, limits.max_bytes / (nbytes / messages))
    return max(0.0, (room - pending) / rate)


def _epoch(ts: object) -> float | None:
    """Epoch seconds of a server RFC 3339 timestamp (nanoseconds allowed); None for the zero time."""
    if not isinstance(ts, str) or ts.startswith("0001-"):
        return None
    head, _, frac = ts.rstrip("Z").partition(".")
    try:
        base = datetime.fromisoformat(head + "+00:00").timestamp()
    except ValueError:
        return None
    return base + (float(f"0.{frac}") if frac.isdigit() else 0.0)
