"""Where CoT events go: a UDP address (unicast or multicast) or a TCP stream (a TAK server).

:func:`parse_target` reads ``udp://HOST:PORT`` or ``tcp://HOST:PORT`` (IPv6 in brackets);
:func:`open_transport` gives the socket side for it:

- **UDP** (:class:`UdpTransport`): one datagram per event. A multicast group (e.g. TAK's SA
  group ``239.2.3.1:6969``) is sent with TTL 1 (this link only) and loopback on, so a TAK
  client on the same host hears it too; ``multicast_interface`` picks the interface's address
  (default: the system's choice).
- **TCP** (:class:`TcpTransport`): events written back to back on one stream, as TAK servers
  read them (their streaming input, port 8087, splits on ``</event>``). It connects lazily and
  again after a failure, at most every ``retry_s``; whatever the server sends is read and
  dropped so its buffer never fills; a closed connection is noticed there.

TLS (port 8089, client certificates) is not supported. A socket error is never raised to the
sender: :meth:`send` returns False (the event stays due), and counts and logs it once per outage.
"""

from __future__ import annotations

import ipaddress
import logging
import select
import socket
import time
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from overwatch_lab.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"udp": 6969, "tcp": 8087}
"""Port when the URL has none: TAK's SA multicast port for UDP, the TAK server's plain TCP input."""
MULTICAST_TTL = 1


@dataclass(frozen=True, slots=True)
class CotTarget:
    """A parsed CoT destination.

    Attributes:
        scheme: ``udp`` or ``tcp``.
        host: host name or address, without brackets.
        port: 1 … 65535.
    """

    scheme: str
    host: str
    port: int

    @property
    def multicast(self) -> bool:
        """True for a UDP multicast group address."""
        try:
            return self.scheme == "udp" and ipaddress.ip_address(self.host).is_multicast
        except ValueError:  # a host name
            return False

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_target(url: str) -> CotTarget:
    """``udp://HOST:PORT`` or ``tcp://HOST:PORT`` as a :class:`CotTarget`.

    Raises:
        ConfigError: another scheme, no host, a bad port, or a path/query it does not read.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"bad CoT destination {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ConfigError(
            f"bad CoT destination {url!r}: the scheme must be udp:// or tcp:// "
            "(e.g. udp://239.2.3.1:6969, tcp://takserver:8087; TLS is not supported)"
        )
    if not parts.hostname:
        raise ConfigError(f"bad CoT destination {url!r}: no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ConfigError(f"bad CoT destination {url!r}: only {scheme}://HOST:PORT is read")
    if port == 0:
        raise ConfigError(f"bad CoT destination {url!r}: port 0")
    return CotTarget(scheme, parts.hostname, port or DEFAULT_PORTS[scheme])


class Transport(Protocol):
    """The socket side of a :class:`CotTarget`."""

    target: CotTarget
    errors: int
    connects: int
    last_error: str | None

    def send(self, data: bytes) -> bool:
        """Send one event; False when it could not be sent now (the caller keeps it due)."""
        ...

    def poll(self) -> None:
        """Housekeeping between ticks (TCP: read what the server sent, notice a closed stream)."""
        ...

    def close(self) -> None:
        """Close the socket (idempotent)."""
        ...


def open_transport(
    target: CotTarget,
    *,
    multicast_ttl: int = MULTICAST_TTL,
    multicast_interface: str | None = None,
    timeout_s: float = 3.0,
    retry_s: float = 2.0,
) -> Transport:
    """The transport for ``target`` (nothing is connected yet for TCP).

    Raises:
        ConfigError: the host does not resolve, or a bad multicast option.
    """
    if target.scheme == "udp":
        return UdpTransport(target, multicast_ttl=multicast_ttl, multicast_interface=multicast_interface)
    return TcpTransport(target, timeout_s=timeout_s, retry_s=retry_s)


def _resolve(target: CotTarget, kind: socket.SocketKind) -> tuple[socket.AddressFamily, tuple[str, int]]:
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=kind)
    except OSError as exc:
        raise ConfigError(f"CoT destination {target}: cannot resolve {target.host!r}: {exc}") from None
    family, _, _, _, addr = infos[0]
    return family, (str(addr[0]), int(addr[1]))


class _Outage:
    """Counts errors and logs the first of each run of them."""

    def __init__(self, target: CotTarget) -> None:
        self.target = target
        self.errors = 0
        self.connects = 0
        self.last_error: str | None = None
        self._down = False

    def failed(self, what: str, exc: OSError) -> None:
        self.errors += 1
        self.last_error = f"{what}: {exc}"
        if not self._down:
            log.warning("CoT %s: %s failed: %s (retrying)", self.target, what, exc)
        self._down = True

    def ok(self) -> None:
        if self._down:
            log.info("CoT %s: sending again", self.target)
        self._down = False


class UdpTransport(_Outage):
    """One datagram per event to a unicast or multicast address (see the module docstring)."""

    def __init__(self, target: CotTarget, *, multicast_ttl: int, multicast_interface: str | None) -> None:
        super().__init__(target)
        if not 0 <= multicast_ttl <= 255:
            raise ConfigError(f"CoT multicast TTL must be 0..255, got {multicast_ttl}")
        family, self.addr = _resolve(target, socket.SOCK_DGRAM)
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if target.multicast:
                self._multicast_options(family, multicast_ttl, multicast_interface)
            elif multicast_interface is not None:
                raise ConfigError(f"a multicast interface was given, but {target} is not a multicast group")
        except BaseException:
            self.sock.close()
            raise
        self.connects = 1

    def _multicast_options(self, family: socket.AddressFamily, ttl: int, interface: str | None) -> None:
        if family == socket.AF_INET6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
            if interface is not None:
                self.sock.setsockopt(
                    socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, socket.if_nametoindex(interface)
                )
            return
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        if interface is not None:
            try:
                self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
            except OSError as exc:
                raise ConfigError(
                    f"CoT multicast interface {interface!r} (an IPv4 address) cannot be used: {exc}"
                ) from None

    def send(self, data: bytes) -> bool:
        """Send one datagram; False on a socket error."""
        try:
            self.sock.sendto(data, self.addr)
        except OSError as exc:
            self.failed("sendto", exc)
            return False
        self.ok()
        return True

    def poll(self) -> None:
        """Nothing to do for UDP."""

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


class TcpTransport(_Outage):
    """Events back to back on one TCP stream, reconnected after failures (see the module docstring)."""

    def __init__(self, target: CotTarget, *, timeout_s: float, retry_s: float) -> None:
        super().__init__(target)
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.sock: socket.socket | None = None
        self._next_try = 0.0

    def _connected(self) -> socket.socket | None:
        if self.sock is not None:
            return self.sock
        now = time.monotonic()
        if now < self._next_try:
            return None
        self._next_try = now + self.retry_s
        try:
            sock = socket.create_connection((self.target.host, self.target.port), timeout=self.timeout_s)
        except OSError as exc:
            self.failed("connect", exc)
            return None
        sock.settimeout(self.timeout_s)
        self.sock = sock
        self.connects += 1
        log.info("CoT %s: connected", self.target)
        return sock

    def _drop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def send(self, data: bytes) -> bool:
        """Write one event to the stream; False when not connected or the write failed."""
        sock = self._connected()
        if sock is None:
            return False
        try:
            sock.sendall(data)
        except OSError as exc:  # timeouts included: a server that stopped reading
            self.failed("send", exc)
            self._drop()
            return False
        self.ok()
        return True

    def poll(self) -> None:
        """Read and drop what the server sent; notice a stream it closed."""
        sock = self.sock
        if sock is None:
            return
        try:
            # select first: recv on a socket with a timeout waits for that timeout, MSG_DONTWAIT or not
            while select.select([sock], [], [], 0)[0]:
                if not sock.recv(65536):
                    self.failed("read", ConnectionResetError("the server closed the connection"))
                    self._drop()
                    return
        except OSError as exc:
            self.failed("read", exc)
            self._drop()

    def close(self) -> None:
        """Close the stream."""
        self._drop()
