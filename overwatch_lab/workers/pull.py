"""A batch puller for a durable JetStream pull consumer, without per-message awaits.

nats-py's ``PullSubscription.fetch`` waits for each message with ``asyncio.wait_for`` (a task
per message); at 10k+ messages/s that overhead is a third of a worker's time. This puller keeps
one inbox subscription whose callback appends to a buffer, and tops the buffer up with pull
requests on ``$JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>``:

- a ``no_wait`` request first: the server sends what is available (up to the batch) and then a
  404 status, so a busy consumer gets whole batches at once;
- when nothing was available, a long poll (``expires``): the first message that arrives is
  returned at once, and the rest of that request keeps flowing into the buffer for the next call.

Only one request is open at a time; at stop, :meth:`BatchPuller.settle` waits for it to end. Messages are ordinary nats-py ``Msg`` objects (``ack()``,
``nak()``, ``term()``, ``metadata`` work as usual). A request whose end never arrives is given
up after its expiry plus a margin, and at once after a reconnect (a restarted broker has
forgotten it): the next fetch issues a new one.

A consumer that disappeared answers "409 Consumer Deleted" (to an open request) or "503" (no
responders, to a new one). The puller reports that to ``on_gone`` (the lab re-provisions) and
waits ``GONE_BACKOFF_S`` before asking again, instead of spinning on immediate 503s.

Its client calls go through the broker seam (:mod:`overwatch_lab.broker.jetstream`), so a failed
pull request raises :class:`~overwatch_lab.errors.BrokerError` (``BrokerConnectionClosed`` once the
connection is closed or draining), never a nats-py error.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from overwatch_lab.broker import jetstream

_STATUS = "Status"
_DESCRIPTION = "Description"
_LOST_REQUEST_MARGIN_S = 2.0
GONE_BACKOFF_S = 0.5  # wait before asking again a consumer that answered "deleted" / no responders


class BatchPuller:
    """Pull batches from one durable consumer; see the module docstring."""

    def __init__(
        self, nc: NATS, stream: str, durable: str, *, on_gone: Callable[[str], None] | None = None
    ) -> None:
        self._nc = nc
        self._on_gone = on_gone  # called with the server's status when the consumer seems gone
        self._api = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._buf: deque[Msg] = deque()
        self._changed = asyncio.Event()
        self._open = False  # a pull request is outstanding
        self._open_left = 0  # messages the open request may still deliver
        self._open_until = 0.0  # monotonic time after which the open request is presumed lost
        self._no_wait = False
        self._open_reconnects = 0  # the client's reconnect count when the open request was sent
        self._gone_until = 0.0  # monotonic time before which no request is sent (consumer gone)
        self._woken = False  # wake() was called: a wakeable fetch returns what is buffered
        self.last_status: str | None = None

    async def start(self) -> None:
        """Subscribe the inbox.

        Raises:
            BrokerError: the subscription could not be made (the connection is closed).
        """
        self._sub = await jetstream.subscribe(self._nc, self._inbox, self._on_msg, unbounded=True)

    async def stop(self) -> None:
        """Unsubscribe; buffered, unacknowledged messages are redelivered after ack_wait."""
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await jetstream.unsubscribe(sub)

    async def settle(self) -> None:
        """Wait, still subscribed, until no pull request is open (it ended, expired or was lost).

        At stop, before releasing what is buffered: a request left open keeps receiving
        messages (new ones, and the very ones NAKed at stop) after the inbox is unsubscribed,
        and those stay unacknowledged until ``ack_wait``. Bounded by the open request's expiry
        plus a margin; what it still delivers lands in the buffer (:meth:`take_buffered`).
        """
        while True:
            self._changed.clear()
            if (
                not self._open
                or self._sub is None
                or self._nc.is_closed
                or self._nc.stats["reconnects"] != self._open_reconnects
            ):
                break
            remaining = self._open_until - time.monotonic()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
            except TimeoutError:
                break
        self._open = False

    async def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers
        status = headers.get(_STATUS) if headers else None
        if status:
            if status != "100":  # 100 = idle heartbeat; 404/408/409/503 end the request
                self._open = False
                self.last_status = status
                description = headers.get(_DESCRIPTION, "") if headers else ""
                if status == "503" or (status == "409" and "consumer deleted" in description.lower()):
                    self._gone_until = time.monotonic() + GONE_BACKOFF_S
                    if self._on_gone is not None:
                        self._on_gone(f"{status} {description.strip() or 'no responders'}")
        else:
            self._buf.append(msg)
            self._open_left -= 1
            if self._open_left <= 0:
                self._open = False
        self._changed.set()

    async def _request(self, batch: int, expires_s: float | None) -> None:
        req: dict[str, object] = {"batch": batch}
        if expires_s is None:
            req["no_wait"] = True
            self._open_until = time.monotonic() + _LOST_REQUEST_MARGIN_S
        else:
            req["expires"] = max(int(expires_s * 1e9), 1_000_000)
            self._open_until = time.monotonic() + expires_s + _LOST_REQUEST_MARGIN_S
        self._open, self._open_left, self._no_wait = True, batch, expires_s is None
        self._open_reconnects = self._nc.stats["reconnects"]
        await jetstream.publish(self._nc, self._api, json.dumps(req).encode(), reply=self._inbox)

    def buffered(self) -> list[Msg]:
        """Return (a copy of) the messages delivered but not yet fetched, leaving them buffered."""
        return list(self._buf)

    def take_buffered(self) -> list[Msg]:
        """Remove and return every message delivered but not yet fetched."""
        out = list(self._buf)
        self._buf.clear()
        return out

    def _take(self, batch: int) -> list[Msg]:
        buf = self._buf
        n = min(batch, len(buf))
        return [buf.popleft() for _ in range(n)]

    def wake(self) -> None:
        """Make a ``wakeable`` fetch waiting now (or the next one) return what is buffered, maybe nothing."""
        self._woken = True
        self._changed.set()

    async def fetch(self, batch: int, wait_s: float, *, wakeable: bool = False) -> list[Msg]:
        """Return up to ``batch`` messages; an empty list when none arrived within ``wait_s``.

        ``wakeable``: also return (what is buffered, maybe nothing) once :meth:`wake` is called.
        Either way, a pull request is left open or sent whenever nothing is buffered, so
        deliveries keep flowing while the caller is busy.

        Raises:
            BrokerError: the pull request could not be sent (see :func:`.jetstream.publish`).
        """
        deadline = time.monotonic() + wait_s
        while True:
            if wakeable and self._woken:
                self._woken = False
                return self._take(batch)
            if self._open and (
                time.monotonic() > self._open_until or self._nc.stats["reconnects"] != self._open_reconnects
            ):
                self._open = False  # its end was lost (reconnect): don't wait for it forever
            if self._buf and (not self._open or not self._no_wait or len(self._buf) >= batch):
                return self._take(batch)
            remaining = deadline - time.monotonic()
            if not self._open:
                if self._buf:
                    return self._take(batch)
                if remaining <= 0:
                    return []
                if (gone_for := self._gone_until - time.monotonic()) > 0:
                    await asyncio.sleep(min(gone_for, remaining))  # the consumer was just gone
                    continue
                # Nothing buffered: ask for what is there now; if that was nothing, long-poll.
                last = self.last_status
                self.last_status = None
                await self._request(batch, None if last is None else remaining)
            elif remaining <= 0:
                return self._take(batch)
            self._changed.clear()
            try:
                async with asyncio.timeout(max(remaining, 0.001)):
                    await self._changed.wait()
            except TimeoutError:
                pass
