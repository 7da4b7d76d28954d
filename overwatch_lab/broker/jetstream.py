"""The broker seam for the lab's parts: the few nats-py calls they make, with errors translated.

Workers, the consumer loop and its puller, the command ledger and delivery, and the stream watch
talk to nats-server through these functions, never by catching nats-py's errors themselves
(STYLE.md: translate foreign errors at the seam). Every ``nats.errors.Error`` (and so every
``nats.js.errors`` error) raised inside becomes one of ours, with the nats-py error chained
(``raise ... from exc``):

- ``ConnectionClosedError``, ``ConnectionDrainingError`` -> :class:`BrokerConnectionClosed`
- ``NoRespondersError``, ``NoServersError``, ``ConnectionReconnectingError``,
  ``StaleConnectionError``, ``OutboundBufferLimitError``, ``js.errors.NoStreamResponseError``
  -> :class:`BrokerUnavailable`
- ``TimeoutError`` (request, flush, fetch, publish ack) -> :class:`BrokerTimeout` (a ``TimeoutError``)
- ``js.errors.NotFoundError`` (404) -> :class:`BrokerNotFound`
- any other ``js.errors.APIError`` -> :class:`BrokerApiError` (with the server's code and description)
- any other ``nats.errors.Error`` -> :class:`BrokerError`

``asyncio.CancelledError`` is not a nats-py error: it passes through untouched.

The KV seam is :mod:`overwatch_lab.kvstate` (it raises :class:`~overwatch_lab.errors.KvError`);
provisioning, connecting and repair translate in their own modules of this package.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo, PubAck, RawStreamMsg

from overwatch_lab.errors import (
    BrokerApiError,
    BrokerConnectionClosed,
    BrokerError,
    BrokerNotFound,
    BrokerTimeout,
    BrokerUnavailable,
)

_CLOSED = (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError)
_UNAVAILABLE = (
    nats.errors.NoRespondersError,
    nats.errors.NoServersError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.NoStreamResponseError,  # a JetStream publish nothing answered (no stream, no responders)
)
_STREAM_NOT_FOUND = 10059  # JetStream's err_code for "stream not found"


def translate(exc: nats.errors.Error, what: str) -> BrokerError:
    """Return our error for nats-py's ``exc`` raised while doing ``what`` (see the module table).

    The caller raises it ``from exc``.
    """
    detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
    if isinstance(exc, _CLOSED):
        return BrokerConnectionClosed(f"{what}: the connection is closed or draining ({detail})")
    if isinstance(exc, _UNAVAILABLE):
        return BrokerUnavailable(f"{what}: broker unavailable ({detail})")
    if isinstance(exc, nats.errors.TimeoutError):  # also FlushTimeoutError, FetchTimeoutError
        return BrokerTimeout(f"{what}: no answer in time ({detail})")
    if isinstance(exc, nats.js.errors.APIError):
        out: BrokerApiError
        desc = exc.description
        said = f"{desc} (code {exc.code}, err_code {exc.err_code})" if desc else detail
        if isinstance(exc, nats.js.errors.NotFoundError):
            out = BrokerNotFound(f"{what}: not found: {said}")
        else:
            out = BrokerApiError(f"{what}: JetStream API error: {said}")
        out.code, out.err_code, out.description = exc.code, exc.err_code, desc
        return out
    return BrokerError(f"{what}: {detail}")


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Run the block with nats-py's errors translated to ours (``raise ... from exc``)."""
    try:
        yield
    except nats.errors.Error as exc:
        raise translate(exc, what) from exc
    except TimeoutError as exc:  # asyncio's, around a request: no answer in time
        raise BrokerTimeout(f"{what}: no answer in time ({exc!r})") from exc
    except OSError as exc:  # the socket under the client: reset, refused, closed mid-request
        raise BrokerUnavailable(f"{what}: broker unavailable ({type(exc).__name__}: {exc})") from exc


# ---------------------------------------------------------------- core NATS


async def publish(
    nc: NATS, subject: str, data: bytes, *, reply: str = "", headers: dict[str, str] | None = None
) -> None:
    """Core publish (fire and forget: buffered by the client while it reconnects).

    Raises:
        BrokerConnectionClosed: the connection is closed or draining.
        BrokerUnavailable: the client's reconnect buffer is full.
        BrokerError: any other client failure (payload too large, bad subject).
    """
    with translated(f"publish to {subject}"):
        await nc.publish(subject, data, reply=reply, headers=headers)


async def flush(nc: NATS, timeout_s: float) -> None:
    """Wait until the server has taken everything published before (one PING/PONG).

    Raises:
        BrokerTimeout: no PONG within ``timeout_s``.
        BrokerConnectionClosed: the connection is closed.
    """
    with translated("flush"):
        await nc.flush(timeout=timeout_s)  # type: ignore[arg-type]  # nats-py annotates int; it is asyncio.wait_for's float


async def request(nc: NATS, subject: str, data: bytes, timeout_s: float) -> Msg:
    """Core request/reply.

    Raises:
        BrokerTimeout: no reply within ``timeout_s``.
        BrokerUnavailable: nothing subscribes to ``subject`` (no responders), or reconnecting.
    """
    with translated(f"request to {subject}"):
        return await nc.request(subject, data, timeout=timeout_s)


async def api_request(nc: NATS, subject: str, timeout_s: float, data: bytes = b"") -> dict[str, Any]:
    """A raw JetStream API request (``$JS.API...``), by default with an empty body; returns the decoded answer.

    For answers nats-py's typed API loses fields of (``STREAM.INFO``'s ``first_ts``), and for
    requests it cannot make (an ephemeral consumer with several filters and a start time, as
    the server takes them).

    Raises:
        BrokerApiError: the server answered with an error (:class:`BrokerNotFound` for a 404).
        BrokerTimeout, BrokerUnavailable: see :func:`request`.
    """
    msg = await request(nc, subject, data, timeout_s)
    resp: dict[str, Any] = json.loads(msg.data)
    if "error" in resp:
        with translated(subject):
            nats.js.errors.APIError.from_error(resp["error"])  # raises the matching nats-py error
        raise BrokerApiError(f"{subject}: {resp['error']}")  # not reached: from_error always raises
    return resp


async def subscribe(
    nc: NATS, subject: str, cb: Callable[[Msg], Awaitable[None]], *, unbounded: bool = False
) -> Subscription:
    """Subscribe ``cb`` to ``subject``; ``unbounded`` lifts the client's pending limits.

    Raises:
        BrokerConnectionClosed: the connection is closed or draining.
    """
    with translated(f"subscribe to {subject}"):
        if unbounded:
            return await nc.subscribe(subject, cb=cb, pending_msgs_limit=-1, pending_bytes_limit=-1)
        return await nc.subscribe(subject, cb=cb)


async def unsubscribe(sub: Subscription) -> None:
    """Unsubscribe ``sub``.

    Raises:
        BrokerConnectionClosed: the connection is already closed (the subscription is gone too).
    """
    with translated(f"unsubscribe from {sub.subject}"):
        await sub.unsubscribe()


# ---------------------------------------------------------------- JetStream


async def js_publish(
    js: JetStreamContext, subject: str, data: bytes, *, headers: dict[str, str] | None = None
) -> PubAck:
    """Publish to a stream and wait for its acknowledgement.

    Raises:
        BrokerTimeout: no acknowledgement in time (the server may still have stored it; send
            the same ``Nats-Msg-Id`` again to deduplicate).
        BrokerUnavailable: no stream captures ``subject`` (no responders), or reconnecting.
        BrokerApiError: the stream refused the message.
    """
    with translated(f"JetStream publish to {subject}"):
        return await js.publish(subject, data, headers=headers)


async def consumer_info(
    js: JetStreamContext, stream: str, durable: str, *, timeout_s: float | None = None
) -> ConsumerInfo:
    """The server's info on one durable consumer.

    Raises:
        BrokerNotFound: no such stream or consumer.
        BrokerTimeout, BrokerUnavailable: the server did not answer.
    """
    with translated(f"info of consumer {stream}/{durable}"):
        info: ConsumerInfo = await js.consumer_info(stream, durable, timeout=timeout_s)
    return info


async def next_stored(js: JetStreamContext, stream: str, seq: int, subject: str) -> RawStreamMsg | None:
    """The first message of ``stream`` at or after ``seq`` on ``subject``; None when there is none.

    Raises:
        BrokerNotFound: no such stream.
        BrokerTimeout, BrokerUnavailable: the server did not answer.
    """
    with translated(f"next message of {stream} from seq {seq}"):
        try:
            return await js.get_msg(stream, seq=seq, subject=subject, next=True)
        except nats.js.errors.NotFoundError as exc:
            if exc.err_code == _STREAM_NOT_FOUND:  # the stream itself is gone
                raise
            return None  # "no message found": nothing at or after seq


# ---------------------------------------------------------------- settling a delivered message


async def ack(msg: Msg) -> None:
    """Acknowledge ``msg`` (done).

    Raises:
        BrokerConnectionClosed, BrokerUnavailable: the acknowledgement could not be sent;
            the server redelivers after ack_wait.
        BrokerError: already acknowledged, or not a JetStream message.
    """
    with translated(f"ack of {msg.subject}"):
        await msg.ack()


async def nak(msg: Msg, delay_s: float | None = None) -> None:
    """Negatively acknowledge ``msg``: redeliver it after ``delay_s`` (at once when None).

    Raises: as :func:`ack`.
    """
    with translated(f"nak of {msg.subject}"):
        await msg.nak(delay=delay_s)


async def term(msg: Msg) -> None:
    """Terminate ``msg``: never redeliver it.

    Raises: as :func:`ack`.
    """
    with translated(f"term of {msg.subject}"):
        await msg.term()


async def in_progress(msg: Msg) -> None:
    """Tell the server ``msg`` is still being worked on (resets its ack_wait).

    Raises: as :func:`ack`.
    """
    with translated(f"in-progress of {msg.subject}"):
        await msg.in_progress()
