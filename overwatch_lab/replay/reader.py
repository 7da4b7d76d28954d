"""Re-read a time window of telemetry from JetStream (not libSQL) into a replay frame.

:func:`read_window` asks CONSTELLATION_TELEMETRY for the window itself, so it sees exactly what
the stream holds (what devices sent and the stream kept, valid or not), whatever the history
table made of it:

1. the stream's ``last_seq`` is read first: the read ends there, so a lab that keeps ingesting
   while it runs cannot make it endless;
2. an ephemeral pull consumer is created with ``deliver_policy: by_start_time`` at ``since``
   (``all`` when open), ``ack_policy: none``, in memory, filtered on the *stored* subjects
   (docs/wire.md "Telemetry partitions": ``constellation.telemetry-p.{org}.{entity}.*`` plus the
   untransformed ``constellation.telemetry.{org}.{entity}`` of older data directories), with an
   inactivity threshold so the server removes it even if this process dies;
3. messages are pulled with raw ``CONSUMER.MSG.NEXT`` requests of ``batch`` into one callback
   subscription, as the workers' puller does (STACK-NOTES: nats-py's ``fetch`` costs a task per
   message); the stream sequence, stored time and pending count come from each message's reply
   subject, without parsing its metadata. One ``no_wait`` request at a time: the server answers
   a second one sent while the first is open with "408 Requests Pending", and the round trip
   between two requests of 5,000 is negligible; a ``404`` means nothing more is stored;
4. the read stops at the first message stored at or after ``until``, past ``last_seq``, or when
   the consumer has nothing pending; the consumer is deleted; the bodies are decoded off the
   event loop (:func:`~overwatch_lab.replay.frame.build_frame`).

With AckNone, the consumer sequence of the deliveries is 1, 2, 3, ... without gaps: a gap (a
reconnect lost a delivery) fails the read instead of returning a frame with holes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence

import pandas as pd
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from overwatch_lab.broker import jetstream
from overwatch_lab.errors import BrokerError, BrokerTimeout
from overwatch_lab.protocol.subjects import STREAM_TELEMETRY, TELEMETRY_PARTITIONED_ROOT, check_token
from overwatch_lab.replay.frame import StoredMsg, build_frame, empty_replay_frame
from overwatch_lab.store.window import TimeLike, TimeWindow, entity_ids, epoch_ns_of

__all__ = ["Progress", "read_window", "stored_filters"]

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: stage ``"read"`` or ``"publish"``; ``total`` is an upper bound while reading."""

BATCH = 5000  # messages per pull request
IN_FLIGHT = 1  # pull requests open at once (no_wait: a second one is refused while one is open)
API_TIMEOUT_S = 5.0
INACTIVE_THRESHOLD_S = 30.0  # the server removes the consumer after this long without a pull
MAX_FILTERED_ENTITIES = 100  # more entities than this are filtered here, not by the server
PROGRESS_EVERY = 5000


def stored_filters(org_id: str | None, ids: Sequence[str] | None) -> list[str]:
    """The consumer's filter subjects: partitioned and untransformed stored telemetry subjects."""
    org = "*" if org_id is None else check_token(org_id, "org_id")
    entities = ["*"] if ids is None or len(ids) > MAX_FILTERED_ENTITIES else list(ids)
    out: list[str] = []
    for e in entities:
        out += [
            f"constellation.{TELEMETRY_PARTITIONED_ROOT}.{org}.{e}.*",
            f"constellation.telemetry.{org}.{e}",
        ]
    return out


class _Collector:
    """The inbox callback: keeps deliveries in order and decides when the read is over."""

    def __init__(
        self, last_seq: int, since_ns: int, until_ns: int | None, expected: int, progress: Progress | None
    ) -> None:
        self.last_seq, self.since_ns, self.until_ns = last_seq, since_ns, until_ns
        self.expected, self.progress = expected, progress
        self.msgs: list[StoredMsg] = []
        self.next_cseq = 1
        self.delivered_in_request = 0
        self.requests_done = 0
        self.finished = False
        self.error: BrokerError | None = None
        self.changed = asyncio.Event()

    async def on_msg(self, msg: Msg) -> None:
        if self.finished:
            return
        headers = msg.headers
        status = headers.get("Status") if headers else None
        if status:
            if status == "100":  # idle heartbeat
                return
            if status in ("404", "408"):  # no_wait: nothing more available now
                self.finished = True
            else:
                desc = headers.get("Description", "") if headers else ""
                self.error = BrokerError(
                    f"replay read: the server ended a pull with {status} {desc}".rstrip()
                )
                self.finished = True
            self.changed.set()
            return
        parts = (msg.reply or "").split(".")
        if len(parts) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
            seq, cseq, ts_ns, pending = int(parts[5]), int(parts[6]), int(parts[7]), int(parts[8])
        else:  # with a domain and account hash
            md = msg.metadata
            seq, cseq, pending = md.sequence.stream, md.sequence.consumer, md.num_pending
            ts_ns = int(md.timestamp.timestamp() * 1e9)
        if cseq != self.next_cseq:
            self.error = BrokerError(
                f"replay read lost deliveries (consumer sequence {cseq}, expected {self.next_cseq}: "
                "a reconnect?); read the window again"
            )
            self.finished = True
            self.changed.set()
            return
        self.next_cseq += 1
        self.delivered_in_request += 1
        if self.delivered_in_request >= BATCH:
            self.delivered_in_request = 0
            self.requests_done += 1
        if seq > self.last_seq or (self.until_ns is not None and ts_ns >= self.until_ns):
            self.finished = True
        elif ts_ns < self.since_ns:  # the start time given to the server is floored to the µs
            if pending == 0 or seq == self.last_seq:
                self.finished = True
        else:
            self.msgs.append((msg.subject, msg.data, seq, ts_ns))
            n = len(self.msgs)
            if self.progress is not None and n % PROGRESS_EVERY == 0:
                self.progress("read", n, self.expected)
            if pending == 0 or seq == self.last_seq:
                self.finished = True
        self.changed.set()


async def read_window(
    nc: NATS,
    since: TimeLike | None,
    until: TimeLike | None = None,
    *,
    org_id: str | None = None,
    entity_id: str | Sequence[str] | None = None,
    stream: str = STREAM_TELEMETRY,
    idle_timeout_s: float = 5.0,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Re-read the telemetry JetStream stored in ``since <= stored time < until`` (see the module docstring).

    Args:
        nc: a connection to the lab's broker (or any broker holding the stream).
        since: start of the window (epoch s, RFC 3339, datetime; naive = UTC); None: the stream's start.
        until: end of the window, exclusive; None: the stream's last message when the read starts.
        org_id: keep one organisation's messages.
        entity_id: keep one entity's messages, or several (a list).
        stream: the telemetry stream.
        idle_timeout_s: fail when the server sends nothing for this long mid-read.
        progress: called every 5,000 messages and at the end as ``progress("read", done, total)``.

    Returns:
        The replay frame (:mod:`overwatch_lab.replay.frame`), in stream order; an empty window
        (nothing stored in it, or ``since == until``) gives an empty frame with every column.

    Raises:
        FrameError: ``since`` after ``until``, a value that is not a time, or a bad id.
        BrokerNotFound: no such stream.
        BrokerTimeout: the server stopped answering mid-read.
        BrokerError: a delivery was lost (a reconnect mid-read) or the server refused the consumer.
    """
    window = TimeWindow.of(since, until)
    ids = entity_ids(entity_id)
    if org_id is not None:
        check_token(org_id, "org_id")
    if window.empty:
        return empty_replay_frame()
    info = await jetstream.api_request(nc, f"$JS.API.STREAM.INFO.{stream}", API_TIMEOUT_S)
    last_seq = int(info["state"].get("last_seq", 0))
    if int(info["state"].get("messages", 0)) == 0:
        return empty_replay_frame()
    config: dict[str, object] = {
        "deliver_policy": "all",
        "ack_policy": "none",
        "filter_subjects": stored_filters(org_id, ids),
        "inactive_threshold": int(INACTIVE_THRESHOLD_S * 1e9),
        "mem_storage": True,
        "num_replicas": 1,
        "max_waiting": 16,
    }
    since_ns = 0 if since is None else epoch_ns_of(since, "since")
    until_ns = None if until is None else epoch_ns_of(until, "until")
    if since is not None:
        config["deliver_policy"] = "by_start_time"
        start = pd.Timestamp(since_ns // 1000 * 1000, unit="ns", tz="UTC")
        config["opt_start_time"] = start.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    created = await jetstream.api_request(
        nc,
        f"$JS.API.CONSUMER.CREATE.{stream}",
        API_TIMEOUT_S,
        json.dumps({"stream_name": stream, "config": config}).encode(),
    )
    name = str(created["name"])
    expected = int(created.get("num_pending", 0))
    started = time.monotonic()
    try:
        got = _Collector(last_seq, since_ns, until_ns, expected, progress)
        msgs = await _pull(nc, stream, name, got, idle_timeout_s)
    finally:
        with contextlib.suppress(BrokerError):  # it expires by itself (inactive_threshold)
            await jetstream.api_request(nc, f"$JS.API.CONSUMER.DELETE.{stream}.{name}", API_TIMEOUT_S)
    keep = frozenset(ids) if ids is not None and len(ids) > MAX_FILTERED_ENTITIES else None
    frame = await asyncio.to_thread(build_frame, msgs, keep)
    frame.attrs["replay"].update(
        stream=stream, since=window.since, until=window.until, last_seq=last_seq, read=len(msgs)
    )
    if progress is not None:
        progress("read", len(msgs), len(msgs))
    log.info(
        "replay read %d messages (%d rows, %d skipped) from %s in %.2f s",
        len(msgs), len(frame), frame.attrs["replay"]["skipped"], stream, time.monotonic() - started,
    )  # fmt: skip
    return frame


async def _pull(
    nc: NATS, stream: str, consumer: str, got: _Collector, idle_timeout_s: float
) -> list[StoredMsg]:
    expected = got.expected
    if expected == 0:
        return got.msgs
    inbox = nc.new_inbox()
    sub = await jetstream.subscribe(nc, inbox, got.on_msg, unbounded=True)
    api = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
    request = json.dumps({"batch": BATCH, "no_wait": True}).encode()
    sent = 0
    try:
        while not got.finished:
            while sent - got.requests_done < IN_FLIGHT and sent * BATCH < expected + BATCH:
                await jetstream.publish(nc, api, request, reply=inbox)
                sent += 1
            got.changed.clear()
            if got.finished:
                break
            try:
                async with asyncio.timeout(idle_timeout_s):
                    await got.changed.wait()
            except TimeoutError:
                raise BrokerTimeout(
                    f"replay read: nothing from {stream} for {idle_timeout_s:g} s after {len(got.msgs)} messages"
                ) from None
    finally:
        with contextlib.suppress(BrokerError):
            await jetstream.unsubscribe(sub)
    if got.error is not None:
        raise got.error
    return got.msgs
