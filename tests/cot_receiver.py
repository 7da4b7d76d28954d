"""A CoT receiver on loopback for tests: what a TAK client would hear, read by independent code.

:class:`CotReceiver` listens on 127.0.0.1 only (UDP unicast, a UDP multicast group joined on the
loopback interface, or a TCP server) on a loop thread of its own. Reading is pytak's: its
``RXWorker.readcot`` (one datagram, or a TCP stream cut at ``</event>``, as ATAK does); parsing
is takproto's ``parse_proto`` (CoT XML to a TAK protobuf message) after a strict XML 1.0 parse
(expat, via ``xml.etree``): neither is the sender's own code.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import pytak
import takproto

from overwatch_lab.runtime import LoopThread
from tests.polling import wait_until

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Received:
    """One event as a TAK client would see it."""

    at: float  # time.monotonic() when it arrived
    raw: bytes
    xml: ET.Element  # the strict XML parse
    msg: Any  # takproto's TakMessage

    @property
    def event(self) -> Any:
        """The message's cotEvent (uid, type, lat, lon, hae, sendTime, staleTime, detail …)."""
        return self.msg.cotEvent


class _Reader(pytak.RXWorker):  # type: ignore[misc]  # pytak is untyped
    """pytak's receive worker; each CoT it reads goes to ``sink`` instead of its queue."""

    def __init__(self, reader: Any, sink: CotReceiver) -> None:
        super().__init__(asyncio.Queue(maxsize=1), {}, reader)
        self._sink = sink

    async def run_once(self) -> None:
        data = await self.readcot()
        if data is None:  # the TCP stream ended
            raise EOFError
        self._sink.add(bytes(data))

    async def handle_data(self, data: bytes) -> None:  # abstract in pytak; run_once does the work
        raise NotImplementedError


class CotReceiver:
    """Listen on loopback for CoT (``kind``: udp, multicast or tcp); ``url`` is where to send.

    Use as a context manager; events arrive in :attr:`received` (thread-safe appends). A TCP
    receiver may be given the bound socket to listen on (``sock``).
    """

    def __init__(
        self, kind: str = "udp", *, group: str = "239.2.3.1", sock: socket.socket | None = None
    ) -> None:
        self.kind = kind
        self.group = group
        self.received: list[Received] = []
        self.bad: list[tuple[bytes, str]] = []  # what could not be parsed, and why
        self._lock = threading.Lock()
        self._thread = LoopThread(f"cot-receiver:{kind}")
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._sock = sock
        self.connections = 0  # TCP connections accepted
        self.port = self._thread.call(self._open(), timeout=10)

    @property
    def url(self) -> str:
        """The destination a sender should use."""
        scheme = "tcp" if self.kind == "tcp" else "udp"
        host = self.group if self.kind == "multicast" else LOOPBACK
        return f"{scheme}://{host}:{self.port}"

    async def _open(self) -> int:
        if self.kind == "tcp":
            if self._sock is not None:
                self._server = await asyncio.start_server(self._serve, sock=self._sock)
            else:
                self._server = await asyncio.start_server(self._serve, LOOPBACK, 0)
            return int(self._server.sockets[0].getsockname()[1])
        if self.kind == "udp":
            stream = await pytak.asyncio_dgram.bind((LOOPBACK, 0))
        else:
            stream = await pytak.asyncio_dgram.from_socket(self._multicast_socket())
        self._spawn(_Reader(stream, self))
        return int(stream.sockname[1])

    def _multicast_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.group, 0))
        membership = socket.inet_aton(self.group) + socket.inet_aton(LOOPBACK)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        return sock

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await _Reader(reader, self).run()
        except EOFError:
            pass
        finally:
            writer.close()

    def _spawn(self, reader: _Reader) -> None:
        async def run() -> None:
            with contextlib.suppress(EOFError):
                await reader.run()

        task = asyncio.get_running_loop().create_task(run(), name="cot-receiver:read")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def add(self, raw: bytes) -> None:
        """Parse one event (strict XML, then takproto) and keep it (or why it failed)."""
        try:
            root = ET.fromstring(raw)
            msg = takproto.parse_proto(bytearray(raw))
            if msg is None:
                raise ValueError("takproto did not recognise it as CoT")
        except (ET.ParseError, ValueError) as exc:
            with self._lock:
                self.bad.append((raw, repr(exc)))
            return
        with self._lock:
            self.received.append(Received(time.monotonic(), raw, root, msg))

    def events(self, uid: str | None = None) -> list[Received]:
        """What arrived so far (of one uid)."""
        with self._lock:
            return [r for r in self.received if uid is None or r.event.uid == uid]

    def wait(
        self, n: int = 1, *, uid: str | None = None, timeout: float = 10.0, what: str | None = None
    ) -> list[Received]:
        """Wait until ``n`` events (of ``uid``) arrived; return them."""
        return wait_until(
            lambda: (got := self.events(uid)) and len(got) >= n and got,
            timeout=timeout,
            what=what or f"{n} CoT event(s){f' of {uid}' if uid else ''} on {self.url}",
        )

    def close(self) -> None:
        """Stop listening."""

        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()

        with contextlib.suppress(Exception):
            self._thread.call(shut(), timeout=5)
        self._thread.close()

    def __enter__(self) -> CotReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def multicast_on_loopback() -> str | None:
    """None when a multicast datagram sent on the loopback interface comes back here, else why not."""
    group = "239.255.77.77"
    rx = tx = None
    try:
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        rx.bind((group, 0))
        rx.setsockopt(
            socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(group) + socket.inet_aton(LOOPBACK)
        )
        rx.settimeout(1.0)
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(LOOPBACK))
        tx.sendto(b"probe", (group, rx.getsockname()[1]))
        return None if rx.recv(16) == b"probe" else "a different datagram came back"
    except OSError as exc:
        return f"multicast on the loopback interface does not work here: {exc}"
    finally:
        for s in (rx, tx):
            if s is not None:
                s.close()
