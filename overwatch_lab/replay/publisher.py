"""Re-publish a replay frame into a lab, at 1x, Nx or as fast as possible, with JetStream acks.

What a re-published message is (the choices, and why):

- **Subjects**: the one the device published on, ``constellation.telemetry.{org}.{entity}``
  (the stream's transform stores it under its partition again).
- **message_uid and Nats-Msg-Id**: with ``fresh_uids`` (the default) every message gets a new
  ``message_uid``, ``{uid_prefix}-{n}`` (``uid_prefix`` = ``replay-`` and 12 random hex digits,
  in the result), used as its ``Nats-Msg-Id`` too. Into the *same* lab that is required: the
  stream drops a resent ``Nats-Msg-Id`` inside its dedup window, and history stores each
  ``message_uid`` once whatever the time, so unchanged ids would add nothing. With
  ``fresh_uids=False`` the original ids are sent unchanged: right for a *fresh* lab (another
  data directory), where the mission is then stored with the ids it first had.
- **Envelope time stamps**: shifted by one constant, ``shift_s`` = replay start minus the
  frame's earliest envelope time, so the mission's first message is dated now and every series
  keeps its spacing exactly (to the microsecond) at any speed: rates, distances per second and
  per-message-type order are those of the original. Shifting matters for the live state: a
  lab applies a message to KV only when it is newer than the entity's last one of that type
  (docs/wire.md "Order"), so a mission replayed with its old time stamps into the lab that
  already has it would be history only (``late``). At a speed above 1 the time stamps run ahead
  of the wall clock (the lab's staleness uses its own receive clock, so entities stay live).
  ``keep_timestamps=True`` sends the original time stamps (into a fresh lab, for an exact copy).
- **Pacing**: by the time JetStream stored each original message (``stored_at``), in stream
  order: message n is sent ``(stored_at[n] - stored_at[0]) / speed`` after the start, so the
  arrival pattern (bursts, gaps, late messages) is reproduced; ``speed=None`` sends as fast as
  the acknowledgements allow.
- **Acknowledgements**: every message is a JetStream publish with a reply inbox; at most
  ``max_in_flight`` are unacknowledged at once, and the call returns once every one is
  acknowledged. A refused message (the server's error, or no stream) fails the call after the
  rest are sent, naming how many and why; missing acknowledgements fail it after
  ``ack_timeout_s``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import time
from dataclasses import dataclass

import numpy as np
import orjson
import pandas as pd
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from overwatch_lab.broker import jetstream
from overwatch_lab.errors import BrokerApiError, BrokerError, BrokerTimeout, FrameError
from overwatch_lab.protocol.envelopes import SCHEMA_VERSION
from overwatch_lab.replay.frame import REPLAY_FRAME_DTYPES
from overwatch_lab.replay.reader import Progress

__all__ = ["ReplayResult", "check_speed", "replay_messages", "republish"]

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 2000
ACK_TIMEOUT_S = 30.0
_AHEAD_S = 0.002  # sleep only when the schedule is this far ahead of the clock
_PROGRESS_EVERY = 5000


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a re-publish did.

    Attributes:
        published: messages sent and acknowledged by the stream.
        duplicates: of those, how many the stream said it already had (same ``Nats-Msg-Id``
            inside its dedup window: stored once, not again).
        speed: the speed asked for (None: as fast as possible).
        fresh_uids: whether new ``message_uid`` s were sent.
        uid_prefix: the prefix of every new ``message_uid`` (None with unchanged ids); history
            rows of this replay are ``message_uid.str.startswith(uid_prefix)``.
        shift_s: seconds added to every envelope time stamp (0.0 with ``keep_timestamps``).
        span_s: the window's span in original stored time, first to last message.
        elapsed_s: wall time of the re-publish, first send to last acknowledgement.
    """

    published: int
    duplicates: int
    speed: float | None
    fresh_uids: bool
    uid_prefix: str | None
    shift_s: float
    span_s: float
    elapsed_s: float


def check_speed(speed: float | None) -> float | None:
    """``speed`` if it is None or a finite number > 0.

    Raises:
        FrameError: anything else (0, a negative number, inf, NaN, a bool, text).
    """
    if speed is None:
        return None
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not (0 < speed < math.inf):
        raise FrameError(
            f"speed must be a number > 0 (1 = real time) or None (as fast as possible), got {speed!r}"
        )
    return float(speed)


def _check_frame(frame: pd.DataFrame) -> None:
    missing = [c for c in REPLAY_FRAME_DTYPES if c not in frame.columns]
    if missing or not isinstance(frame.index, pd.DatetimeIndex):
        raise FrameError(
            f"not a replay frame (from frames.replay_frame): missing {missing or 'the time index'}"
        )


def replay_messages(
    frame: pd.DataFrame, *, uid_prefix: str | None, shift_us: int
) -> list[tuple[str, bytes, str]]:
    """The (subject, body, Nats-Msg-Id) of every row of a replay frame, in its order (pure).

    Args:
        frame: a replay frame.
        uid_prefix: new ``message_uid`` = ``{uid_prefix}-{n}`` (n = row number); None keeps them.
        shift_us: microseconds added to every envelope time stamp.

    Each body is a telemetry v1 envelope with the row's fields and its ``data`` JSON text as sent.
    """
    _check_frame(frame)
    n = len(frame)
    if n == 0:
        return []
    us = pd.DatetimeIndex(frame.index).as_unit("us").asi8 + shift_us
    stamps = np.char.add(np.datetime_as_string(us.astype("datetime64[us]"), unit="us"), "Z")
    uids = frame["message_uid"].tolist() if uid_prefix is None else [f"{uid_prefix}-{i}" for i in range(n)]
    out: list[tuple[str, bytes, str]] = []
    dumps = orjson.dumps
    for uid, org, ent, src, mid, mtype, sid, cid, data, stamp in zip(
        uids,
        frame["org_id"].tolist(),
        frame["entity_id"].tolist(),
        frame["source"].tolist(),
        frame["message_id"].tolist(),
        frame["message_type"].tolist(),
        frame["system_id"].tolist(),
        frame["component_id"].tolist(),
        frame["data"].tolist(),
        stamps.tolist(),
        strict=True,
    ):
        env = {
            "schema_version": SCHEMA_VERSION,
            "message_uid": uid,
            "org_id": org,
            "entity_id": ent,
            "message_id": mid,
            "message_type": mtype,
            "system_id": sid,
            "component_id": cid,
            "timestamp": stamp,
        }
        if src is not None:
            env["source"] = src
        body = dumps(env)[:-1] + b',"data":' + data.encode() + b"}"
        out.append((f"constellation.telemetry.{org}.{ent}", body, uid))
    return out


class _Acks:
    """One reply inbox for every publish: counts acknowledgements, duplicates and refusals."""

    def __init__(self, max_in_flight: int) -> None:
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.acked = 0
        self.duplicates = 0
        self.refused = 0
        self.first_refusal: str | None = None
        self.changed = asyncio.Event()

    async def on_ack(self, msg: Msg) -> None:
        self.in_flight -= 1
        status = msg.headers.get("Status") if msg.headers else None
        reason: str | None = None
        if status:
            reason = f"status {status} (no stream captures the subject?)"
        else:
            try:
                ack = json.loads(msg.data)
            except ValueError:
                ack = {"error": {"description": f"unreadable PubAck {msg.data[:80]!r}"}}
            if "error" in ack:
                reason = str(ack["error"].get("description") or ack["error"])
            else:
                self.acked += 1
                self.duplicates += bool(ack.get("duplicate"))
        if reason is not None:
            self.refused += 1
            self.first_refusal = self.first_refusal or reason
        self.changed.set()

    async def room(self, timeout_s: float) -> None:
        """Wait until fewer than ``max_in_flight`` are unacknowledged."""
        while self.in_flight >= self.max_in_flight:
            await self._wait(timeout_s)

    async def drained(self, timeout_s: float) -> None:
        """Wait until every publish is acknowledged or refused."""
        while self.in_flight > 0:
            await self._wait(timeout_s)

    async def _wait(self, timeout_s: float) -> None:
        self.changed.clear()
        try:
            async with asyncio.timeout(timeout_s):
                await self.changed.wait()
        except TimeoutError:
            raise BrokerTimeout(
                f"re-publish: {self.in_flight} messages unacknowledged for {timeout_s:g} s"
            ) from None


async def republish(
    nc: NATS,
    frame: pd.DataFrame,
    *,
    speed: float | None = None,
    fresh_uids: bool = True,
    keep_timestamps: bool = False,
    max_in_flight: int = MAX_IN_FLIGHT,
    ack_timeout_s: float = ACK_TIMEOUT_S,
    progress: Progress | None = None,
) -> ReplayResult:
    """Publish every row of a replay frame to the lab ``nc`` is connected to (see the module docstring).

    Args:
        nc: a connection to the target lab's broker.
        frame: a replay frame (``frames.replay_frame``), maybe filtered.
        speed: 1 = the original pace, N = N times faster, None = as fast as possible.
        fresh_uids: send new message_uids (required into the lab the frame came from).
        keep_timestamps: send the original envelope time stamps instead of shifting them to now.
        max_in_flight: publishes unacknowledged at most.
        ack_timeout_s: fail when no acknowledgement comes for this long.
        progress: called every 5,000 messages and at the end as ``progress("publish", done, total)``.

    Returns:
        What was sent (:class:`ReplayResult`).

    Raises:
        FrameError: a bad speed, or not a replay frame.
        BrokerApiError: the stream refused some messages (after the others were sent).
        BrokerTimeout: acknowledgements stopped coming.
        BrokerError: the connection failed.
    """
    speed = check_speed(speed)
    _check_frame(frame)
    uid_prefix = f"replay-{secrets.token_hex(6)}" if fresh_uids else None
    n = len(frame)
    if n == 0:
        return ReplayResult(0, 0, speed, fresh_uids, uid_prefix, 0.0, 0.0, 0.0)
    shift_us = (
        0
        if keep_timestamps
        else time.time_ns() // 1000 - int(pd.DatetimeIndex(frame.index).as_unit("us").asi8.min())
    )
    msgs = await asyncio.to_thread(replay_messages, frame, uid_prefix=uid_prefix, shift_us=shift_us)
    stored = frame["stored_at"].dt.as_unit("ns").astype("int64").to_numpy()
    offsets = (stored - stored[0]) / 1e9
    span_s = float(offsets[-1])
    schedule = None if speed is None else (offsets / speed).tolist()
    acks = _Acks(max_in_flight)
    inbox = nc.new_inbox()
    sub = await jetstream.subscribe(nc, f"{inbox}.*", acks.on_ack, unbounded=True)
    started = time.monotonic()
    try:
        for i, (subject, body, msg_id) in enumerate(msgs):
            if schedule is not None and (ahead := started + schedule[i] - time.monotonic()) > _AHEAD_S:
                await asyncio.sleep(ahead)
            await acks.room(ack_timeout_s)
            acks.in_flight += 1
            await jetstream.publish(nc, subject, body, reply=f"{inbox}.{i}", headers={"Nats-Msg-Id": msg_id})
            if progress is not None and (i + 1) % _PROGRESS_EVERY == 0:
                progress("publish", i + 1, n)
        await acks.drained(ack_timeout_s)
    finally:
        try:
            await jetstream.unsubscribe(sub)
        except BrokerError as exc:  # the connection is gone: so is the subscription
            log.debug("re-publish: unsubscribe: %s", exc)
    elapsed = time.monotonic() - started
    if progress is not None:
        progress("publish", n, n)
    if acks.refused:
        raise BrokerApiError(
            f"re-publish: the stream refused {acks.refused} of {n} messages; first: {acks.first_refusal}"
        )
    log.info("re-published %d messages in %.2f s (speed %s, span %.2f s)", n, elapsed, speed, span_s)
    return ReplayResult(
        acks.acked, acks.duplicates, speed, fresh_uids, uid_prefix, shift_us / 1e6, span_s, elapsed
    )
