"""The MAVLink bridge: autopilots, GCS forwards and SITL on UDP in, telemetry v1 and command acks out.

::

    async with Bridge(lab, org="org-a", listen="udp:127.0.0.1:14550") as bridge:
        ...                               # vehicles appear as entities {org}-mav{sysid}
        bridge.stats()                    # packets, published, ignored by type, bad packets ...

    async with Bridge(lab, org="org-a", listen=None) as bridge:
        await bridge.replay("flight.tlog")  # a telemetry log instead of a live link

``lab`` is a :class:`~overwatch_lab.lab.Lab` (anything with ``nats_url`` and ``nats_auth``) or
a NATS URL. The bridge talks to the lab only over NATS, as a device does:

- a system id's first autopilot HEARTBEAT registers an entity (organisation ``created`` once at
  start, unless ``create_org=False``; entity ``created``; a ``bootsequence`` device event);
  telemetry from that system id before its HEARTBEAT waits in a small buffer;
- each packet of the 14 projected types becomes one telemetry v1 envelope on
  ``constellation.telemetry.{org}.{entity}`` (its fields in raw MAVLink units, the receive
  time, or the log's time, as its timestamp, strictly increasing per vehicle); other types are
  counted by name and dropped; corrupt packets are counted, logged at most once per
  ``LOG_EVERY_S``, and skipped;
- publishing goes through :class:`~overwatch_lab.mavlink.publisher.Publisher` (bounded queue,
  bounded in flight, JetStream PubAcks, resends);
- each vehicle gets a :class:`~simulators.command_link.CommandLink` whose device side is a
  :class:`~overwatch_lab.mavlink.vehicle.CommandRelay`: lab commands go out as COMMAND_LONG,
  COMMAND_INT, SET_MODE or the mission protocol (MISSION_ITEM_INT), and the autopilot's
  COMMAND_ACK / MISSION_ACK moves the command to SUCCEEDED or FAILED.

The bridge owns its socket, its NATS connection (unless given one), its tasks and its links:
:meth:`Bridge.stop` (or leaving ``async with``) closes the socket, stops the links, waits up to
``drain_timeout_s`` for what was accepted to be acknowledged by JetStream, and closes the
connection. Nothing runs on a thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson
from nats.aio.client import Client as NATS

from overwatch_lab.broker.connect import connect
from overwatch_lab.errors import BrokerError, ConfigError, OverwatchError, SubjectError
from overwatch_lab.mavlink import inbound, outbound
from overwatch_lab.mavlink.publisher import Outgoing, Publisher
from overwatch_lab.mavlink.tlog import TlogStats, read_records
from overwatch_lab.mavlink.vehicle import REPLY_TYPES, Address, CommandRelay, Vehicle
from overwatch_lab.nats_auth import NatsAuth
from overwatch_lab.protocol import lifecycle
from overwatch_lab.protocol import subjects as s
from overwatch_lab.protocol.envelopes import SCHEMA_VERSION, encode, format_timestamp
from overwatch_lab.protocol.events import make_device_event
from simulators.command_link import CommandLink

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "udp:127.0.0.1:14550"
DEFAULT_ENTITY_ID = "{org}-mav{sysid}"
SOURCE = "mavlink-bridge"
GCS_SYSTEM_ID = 255  # the bridge speaks as a ground station (MAVLink convention)
GCS_COMPONENT_ID = 190  # MAV_COMP_ID_MISSIONPLANNER
PENDING_PER_SYSTEM = 256  # packets of a system id kept until its first autopilot HEARTBEAT
MAX_PEERS = 1024  # UDP source addresses with a parser of their own
RECV_BUFFER_BYTES = 4 * 1024 * 1024  # SO_RCVBUF asked for: a burst waits in the kernel, not lost
LOG_EVERY_S = 10.0  # at most one log line per kind of bad input in this many seconds
REPLAY_PEER: Address = ("replay", 0)


class NatsSource(Protocol):
    """Where the lab's broker is (a :class:`~overwatch_lab.lab.Lab` is one)."""

    @property
    def nats_url(self) -> str:
        """URL of the broker."""
        ...

    @property
    def nats_auth(self) -> NatsAuth:
        """How to connect to the broker."""
        ...


def parse_listen(listen: str) -> Address:
    """Parse ``udp:HOST:PORT`` (also ``udpin:`` or bare ``HOST:PORT``) into (host, port).

    Raises:
        ConfigError: another scheme, or no valid host and port.
    """
    scheme, sep, rest = listen.partition(":")
    if scheme in ("udp", "udpin"):
        target = rest
    elif scheme in ("tcp", "tcpin", "udpout", "serial"):
        raise ConfigError(f"--listen {listen!r}: only UDP is supported (udp:HOST:PORT)")
    else:
        target = listen
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--listen {listen!r} must be udp:HOST:PORT, e.g. {DEFAULT_LISTEN}")
    return host, int(port)


class _RateLog:
    """A warning at most once per ``every_s``, with how many were not logged in between."""

    def __init__(self, every_s: float = LOG_EVERY_S) -> None:
        self.every_s = every_s
        self._last = -float("inf")
        self._quiet = 0

    def __call__(self, fmt: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            self._quiet += 1
            return
        more = f" ({self._quiet} more since the last report)" if self._quiet else ""
        self._last, self._quiet = now, 0
        log.warning(fmt + more, *args)


@dataclass(slots=True)
class BridgeStats:
    """What the bridge saw and did (``Bridge.stats()`` adds the publisher's counters)."""

    datagrams: int = 0
    bytes_in: int = 0
    packets: int = 0  # MAVLink packets decoded
    bad_packets: int = 0  # corrupt: bad CRC, bad length, garbage (skipped)
    published: int = 0  # telemetry envelopes handed to the publisher
    registered: int = 0  # vehicles registered as entities
    ignored: dict[str, int] = field(default_factory=dict)  # by message type: not projected
    no_heartbeat: int = 0  # dropped: a system id never sent an autopilot HEARTBEAT in time
    seq_lost: int = 0  # packets missing by MAVLink sequence numbers (link loss, kernel drops)
    commands_sent: int = 0  # MAVLink messages written to vehicles
    send_errors: int = 0
    errors: int = 0  # unexpected errors while handling one packet (logged, the packet skipped)


class Bridge:
    """A MAVLink ⇄ lab bridge (see the module docstring).

    Args:
        lab: a Lab (its ``nats_url``/``nats_auth``) or a NATS URL.
        org: the organisation the vehicles belong to.
        listen: ``udp:HOST:PORT`` to receive on (port 0: any free port, see :attr:`address`);
            None: no socket (replay only).
        auth: credentials when ``lab`` is a URL (a relay or the lab's own; see ``overwatch-lab device``).
        nc: use this connection instead of opening one (not closed by the bridge).
        entity_id: template of entity ids, with ``{org}`` and ``{sysid}``.
        names: system id → entity id, overriding the template.
        create_org: publish the organisation's ``created`` event at start (name ``org_name``).
        org_name / org_type: for that event.
        max_inflight / queue_size: the publisher's bounds.
        command_timeout_s / command_attempts: per MAVLink request (then FAILED).
        progress_timeout_s: how long a command may stay IN_PROGRESS.
        offline_after_s: a vehicle not heard for longer gets its commands rejected.
        drain_timeout_s: how long stop() waits for JetStream to acknowledge what is queued.

    Raises:
        ConfigError: a bad ``listen`` or an entity id template that breaks the token rule.
    """

    def __init__(
        self,
        lab: NatsSource | str,
        *,
        org: str,
        listen: str | None = DEFAULT_LISTEN,
        auth: NatsAuth | None = None,
        nc: NATS | None = None,
        entity_id: str = DEFAULT_ENTITY_ID,
        names: Mapping[int, str] | None = None,
        create_org: bool = True,
        org_name: str | None = None,
        org_type: str = "civilian",
        max_inflight: int = 4000,
        queue_size: int = 20_000,
        command_timeout_s: float = 1.5,
        command_attempts: int = 3,
        progress_timeout_s: float = 30.0,
        offline_after_s: float = 10.0,
        drain_timeout_s: float = 10.0,
    ) -> None:
        if isinstance(lab, str):
            self._url, self._auth = lab, auth
        else:
            self._url, self._auth = lab.nats_url, auth if auth is not None else lab.nats_auth
        self.org = s.check_token(org, "org")
        self._listen = parse_listen(listen) if listen is not None else None
        self._template = entity_id
        self._names = dict(names or {})
        for sysid in (1, 255, *self._names):
            self.entity_id_of(sysid)  # fail now, not at the first HEARTBEAT
        self._create_org = create_org
        self._org_name = org_name or org
        self._org_type = org_type
        self._max_inflight = max_inflight
        self._queue_size = queue_size
        self._relay_opts = {
            "timeout_s": command_timeout_s,
            "attempts": command_attempts,
            "progress_timeout_s": progress_timeout_s,
            "offline_after_s": offline_after_s,
        }
        self._drain_timeout_s = drain_timeout_s
        self._nc = nc
        self._own_nc = nc is None
        self._publisher: Publisher | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._main: asyncio.Task[None] | None = None
        self._stopping = False
        self._new: asyncio.Queue[Vehicle] = asyncio.Queue(maxsize=256)  # one per system id at most
        self._parsers: collections.OrderedDict[Address, Any] = collections.OrderedDict()
        self._vehicles: dict[int, Vehicle] = {}
        self._links: dict[int, CommandLink] = {}
        self._pending: dict[int, collections.deque[tuple[Any, int]]] = {}
        self._seq: dict[tuple[int, int], int] = {}
        self._mav: Any = None  # the sending side's pymavlink MAVLink (sequence numbers)
        self._tag = f"{time.time_ns() // 1000:x}"
        self._stamp = inbound.Timestamps()
        self._bad_log = _RateLog()
        self._err_log = _RateLog()
        self._drop_log = _RateLog()
        self.counters = BridgeStats()
        self.tlog = TlogStats()

    def __repr__(self) -> str:
        where = f"{self.address[0]}:{self.address[1]}" if self._transport is not None else "not listening"
        return f"<Bridge org={self.org} {where} vehicles={len(self._vehicles)}>"

    # ------------------------------------------------------------------ identity
    def entity_id_of(self, system_id: int) -> str:
        """The entity id of a system id (``names``, else the template).

        Raises:
            ConfigError: the result breaks the token rule.
        """
        eid = self._names.get(system_id) or self._template.format(org=self.org, sysid=system_id)
        try:
            return s.check_token(eid, "entity_id")
        except SubjectError as exc:
            raise ConfigError(f"entity id {eid!r} for system {system_id}: {exc}") from None

    @property
    def vehicles(self) -> dict[int, str]:
        """System id → entity id of every vehicle registered so far."""
        return {sysid: v.entity_id for sysid, v in self._vehicles.items()}

    @property
    def address(self) -> Address:
        """(host, port) the bridge receives on.

        Raises:
            OverwatchError: not listening.
        """
        if self._transport is None:
            raise OverwatchError("the bridge is not listening (listen=None or not started)")
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> Bridge:
        """Connect, publish the organisation, open the socket and start the tasks; return self.

        Raises:
            BrokerError: the broker cannot be reached or refuses the connection.
            ConfigError: the address cannot be bound.
        """
        if self._main is not None:
            raise OverwatchError("a Bridge starts once; build a new one")
        dialect = self._dialect
        self._mav = dialect.MAVLink(None, srcSystem=GCS_SYSTEM_ID, srcComponent=GCS_COMPONENT_ID)
        if self._nc is None:
            self._nc = await connect(self._url, auth=self._auth, name=f"overwatch-lab-mavlink:{self.org}")
        try:
            self._publisher = Publisher(
                self._nc, queue_size=self._queue_size, max_inflight=self._max_inflight
            )
            if self._create_org:
                ev = lifecycle.make_org_event(
                    "created", self.org, self._org_name, self._org_type, source=SOURCE
                )
                ev["id"] = f"org-{self.org}-created-{self._tag}"
                await self._publisher.put((s.organization_subject("created"), encode(ev), ev["id"]))
            self._main = asyncio.get_running_loop().create_task(
                self._run(), name=f"mavlink-bridge:{self.org}"
            )
            if self._listen is not None:
                await self._open(*self._listen)
        except BaseException:
            await self.stop()
            raise
        return self

    async def _open(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER_BYTES)
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise ConfigError(f"cannot listen on udp:{host}:{port}: {exc.strerror or exc}") from None
        self._transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), sock=sock)
        log.info("MAVLink bridge for org %s listening on udp:%s:%d", self.org, *self.address)

    async def _run(self) -> None:
        assert self._publisher is not None
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._publisher.run(), name=f"mavlink-publish:{self.org}")
            tg.create_task(self._start_links(), name=f"mavlink-links:{self.org}")

    async def _start_links(self) -> None:
        """Give each new vehicle its command link (subscribing needs the loop, not a datagram callback)."""
        assert self._nc is not None
        while not self._stopping:  # also ends the loop when nats-py swallowed the cancellation
            v = await self._new.get()
            try:
                relay = CommandRelay(v, self._send, **self._relay_opts)  # type: ignore[arg-type]
                link = CommandLink(self._nc, self.org, v.entity_id, relay.hook, execute=relay.execute)
                try:
                    await link.start()
                except OverwatchError as exc:
                    log.warning("%s: command link not started: %s", v.entity_id, exc)
                    continue
                self._links[v.system_id] = link
            finally:
                self._new.task_done()

    async def links_started(self) -> None:
        """Return once every vehicle registered so far has its command link (or failed to get one)."""
        await self._new.join()

    async def stop(self) -> None:
        """Close the socket, stop the links, let JetStream acknowledge what was accepted, disconnect."""
        if self._transport is not None:
            self._transport.close()
        if self._main is not None and not self._main.done():
            # No link may be half subscribed when the links' task is cancelled below: nats-py
            # swallows a cancellation that lands inside its subscribe's flush, and the task then
            # waits for the next vehicle forever (a fast replay stops right after registering).
            try:
                async with asyncio.timeout(self._drain_timeout_s):
                    await self._new.join()
            except TimeoutError:
                log.warning("stopping with command links still being started")
        self._stopping = True
        await self._stop_links()
        if self._publisher is not None and self._main is not None and not self._main.done():
            try:
                async with asyncio.timeout(self._drain_timeout_s):
                    await self._publisher.drained()
            except TimeoutError:
                log.warning("stopping with %d messages not yet acknowledged", self._publisher.pending)
        if self._main is not None:
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._main
            await self._stop_links()  # one started while the task was being stopped
            if (current := asyncio.current_task()) is not None and current.cancelling():
                raise asyncio.CancelledError  # our own caller is being cancelled: keep it so
        if self._own_nc and self._nc is not None and not self._nc.is_closed:
            try:
                await self._nc.close()
            except (OSError, BrokerError) as exc:
                log.debug("closing the bridge's connection: %r", exc)

    async def _stop_links(self) -> None:
        links, self._links = list(self._links.values()), {}
        for link in links:
            await link.stop()

    async def __aenter__(self) -> Bridge:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def drained(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - a plain bound, as in stop()
        """Wait until everything accepted so far is acknowledged by JetStream.

        Raises:
            TimeoutError: not within ``timeout`` seconds.
        """
        assert self._publisher is not None, "start() first"
        async with asyncio.timeout(timeout):
            await self._publisher.drained()

    # ------------------------------------------------------------------ counters
    def stats(self) -> dict[str, Any]:
        """Counters: the bridge's, the publisher's (``publisher``), the log reader's, the vehicles."""
        out = asdict(self.counters)
        out["ignored"] = dict(sorted(self.counters.ignored.items()))
        out["publisher"] = self._publisher.stats.snapshot() if self._publisher is not None else {}
        out["tlog"] = asdict(self.tlog)
        out["links"] = {v.entity_id: link.stats.snapshot() for v, link in
                        ((self._vehicles[k], ln) for k, ln in self._links.items())}  # fmt: skip
        out["vehicles"] = [
            {"system_id": v.system_id, "component_id": v.component_id, "entity_id": v.entity_id,
             "entity_type": v.entity_type, "address": None if v.addr is None else f"{v.addr[0]}:{v.addr[1]}"}
            for v in self._vehicles.values()
        ]  # fmt: skip
        return out

    @property
    def acked(self) -> int:
        """Messages JetStream acknowledged so far (``stats()["publisher"]["acked"]``, without building the rest)."""
        return self._publisher.stats.acked if self._publisher is not None else 0

    @property
    def _dialect(self) -> Any:
        """pymavlink's MAVLink 2 ardupilotmega dialect (a superset of common), imported on first use (~0.3 s)."""
        from pymavlink.dialects.v20 import ardupilotmega

        return ardupilotmega

    # ------------------------------------------------------------------ input
    def datagram(self, data: bytes, addr: Address) -> None:
        """Take one UDP datagram (the socket's callback; also usable to inject bytes)."""
        c = self.counters
        c.datagrams += 1
        c.bytes_in += len(data)
        items = self.feed(data, addr, time.time_ns() // 1000)
        publisher = self._publisher
        if publisher is None:
            return
        for item in items:
            if not publisher.offer(item):
                self._drop_log("publish queue full: dropping telemetry (the lab is not keeping up)")

    def feed(self, data: bytes, addr: Address, ts_us: int) -> list[Outgoing]:
        """Parse bytes from one peer; return what to publish (never raises for bad input).

        Needs no connection: ``overwatch-lab bench mavlink`` times it alone (parse, map, encode).
        ``REPLAY_PEER`` as ``addr`` marks log input (no address to answer to).
        """
        parser = self._parsers.get(addr)
        if parser is None:
            parser = self._dialect.MAVLink(None)
            parser.robust_parsing = True
            self._parsers[addr] = parser
            if len(self._parsers) > MAX_PEERS:
                self._parsers.popitem(last=False)
        try:
            msgs = parser.parse_buffer(data)
        except Exception as exc:  # pymavlink raises struct/MAVError for some garbage even when robust
            self.counters.bad_packets += 1
            self._bad_log("corrupt MAVLink from %s:%s skipped: %r", addr[0], addr[1], exc)
            self._parsers.pop(addr, None)  # a fresh parser for the next datagram
            return []
        if parser.buf_len():  # a datagram (a log record) holds whole packets: a tail is a cut one
            self.counters.bad_packets += 1
            self._bad_log("truncated MAVLink packet from %s:%s skipped", addr[0], addr[1])
            self._parsers.pop(addr, None)  # so that it does not swallow the next datagram's start
        if not msgs:
            return []
        out: list[Outgoing] = []
        for msg in msgs:
            try:
                self._message(msg, None if addr == REPLAY_PEER else addr, ts_us, out)
            except Exception as exc:  # a bug or an unforeseen field must not stop the bridge
                self.counters.errors += 1
                self._err_log("a %s packet could not be bridged: %r", msg.get_type(), exc)
        return out

    def _message(self, msg: Any, addr: Address | None, ts_us: int, out: list[Outgoing]) -> None:
        c = self.counters
        mtype = msg.get_type()
        if mtype == "BAD_DATA":
            c.bad_packets += 1
            self._bad_log("corrupt MAVLink skipped: %s", msg.reason)
            return
        c.packets += 1
        hdr = msg.get_header()
        sysid, compid = hdr.srcSystem, hdr.srcComponent
        key = (sysid, compid)
        last = self._seq.get(key)
        if last is not None:
            c.seq_lost += (hdr.seq - last - 1) % 256
        self._seq[key] = hdr.seq
        v = self._vehicles.get(sysid)
        if v is not None:
            v.last_heard = time.monotonic()
            if addr is not None:
                v.addr = addr
            if mtype in REPLY_TYPES and v.waiting:
                v.dispatch(msg)
        if mtype not in inbound.PROJECTED:
            c.ignored[mtype] = c.ignored.get(mtype, 0) + 1
            return
        if mtype == "HEARTBEAT":
            if not inbound.is_vehicle_heartbeat(msg.autopilot, msg.type):
                key_name = "HEARTBEAT (not an autopilot)"
                c.ignored[key_name] = c.ignored.get(key_name, 0) + 1
                return
            if v is None:
                v = self._register(msg, sysid, compid, addr, ts_us, out)
            if compid == v.component_id:
                v.custom_mode = msg.custom_mode
        elif v is None:
            waiting = self._pending.get(sysid)
            if waiting is None:
                if len(self._pending) >= 256:
                    c.no_heartbeat += 1
                    return
                waiting = self._pending[sysid] = collections.deque(maxlen=PENDING_PER_SYSTEM)
            if len(waiting) == waiting.maxlen:
                c.no_heartbeat += 1
            waiting.append((msg, ts_us))
            return
        out.append(self._envelope(v, msg, mtype, ts_us, hdr))

    def _register(
        self, hb: Any, sysid: int, compid: int, addr: Address | None, ts_us: int, out: list[Outgoing]
    ) -> Vehicle:
        eid = self.entity_id_of(sysid)
        etype = inbound.entity_type_of(hb.type)
        v = Vehicle(sysid, compid, eid, etype, s.telemetry_subject(self.org, eid), addr, time.monotonic())
        self._vehicles[sysid] = v
        self.counters.registered += 1
        record = {
            "entity_id": eid,
            "org_id": self.org,
            "name": eid,
            "entity_type": etype,
            "status": "active",
            "priority": "normal",
            "source": SOURCE,
            "metadata": {"mavlink": {"system_id": sysid, "component_id": compid,
                                     "autopilot": hb.autopilot, "mav_type": hb.type}},
        }  # fmt: skip
        ev = lifecycle.make_entity_event("created", record, source=SOURCE)
        ev["id"] = f"{eid}-created-{self._tag}"
        out.append((s.entity_subject(self.org, "created"), encode(ev), ev["id"]))
        uid = f"{eid}-boot-{self._tag}"
        boot = make_device_event(
            self.org, eid, "bootsequence", event_uid=uid, timestamp=format_timestamp(ts_us / 1e6),
            entity_type=etype, system_id=sysid, source=SOURCE,
        )  # fmt: skip
        out.append((s.device_event_subject(self.org, eid, "bootsequence"), encode(boot), uid))
        for msg, at_us in self._pending.pop(sysid, ()):
            out.append(self._envelope(v, msg, msg.get_type(), at_us, msg.get_header()))
        try:
            self._new.put_nowait(v)
        except asyncio.QueueFull:  # cannot happen (256 slots, 256 system ids) but never raise here
            log.warning("%s: no command link (too many new vehicles at once)", eid)
        log.info("system %d (%s) registered as %s", sysid, etype, eid)
        return v

    def _envelope(self, v: Vehicle, msg: Any, mtype: str, ts_us: int, hdr: Any) -> Outgoing:
        """One telemetry v1 envelope: what :func:`~overwatch_lab.protocol.envelopes.make_telemetry`
        builds (tests/unit/mavlink checks they are equal), built here without re-checking the
        tokens validated at registration, and encoded with orjson (the hot path, as in the workers)."""
        us = ts_us if ts_us > v.last_us else v.last_us + 1
        v.last_us = us
        uid = f"{v.entity_id}-{hdr.msgId}-{us}"
        env = {
            "schema_version": SCHEMA_VERSION,
            "message_uid": uid,
            "org_id": self.org,
            "entity_id": v.entity_id,
            "message_id": hdr.msgId,
            "message_type": mtype,
            "system_id": hdr.srcSystem,
            "component_id": hdr.srcComponent,
            "data": inbound.telemetry_data(msg),
            "timestamp": self._stamp(us),
            "source": SOURCE,
        }
        self.counters.published += 1
        return (v.subject, orjson.dumps(env), uid)

    # ------------------------------------------------------------------ replay
    async def replay(self, path: str | Path, *, wait: bool = True) -> int:
        """Bridge a telemetry log (``.tlog``) as fast as the lab takes it; return packets read.

        Each record's own time becomes the envelope timestamp, so replaying a log twice stores
        it once (the same message_uids). With ``wait`` this returns once JetStream
        acknowledged everything; read ``stats()["tlog"]`` for what the reader skipped.

        Raises:
            ConfigError: the file cannot be read.
        """
        publisher = self._publisher
        if publisher is None:
            raise OverwatchError("start() the bridge before replaying")
        try:
            f = open(path, "rb")  # noqa: ASYNC230 - one read of a local file, as np.load would
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
        n = 0
        with f:
            for ts_us, packet in read_records(f, self.tlog):
                n += 1
                for item in self.feed(packet, REPLAY_PEER, ts_us):
                    await publisher.put(item)
                if n % 256 == 0:
                    await asyncio.sleep(0)  # let the publisher and the links run between chunks
        if wait:
            await publisher.drained()
        return n

    # ------------------------------------------------------------------ output
    def _send(self, v: Vehicle, relay: dict[str, Any]) -> None:
        """Encode one relay message for vehicle ``v`` and send it to where ``v`` was last heard."""
        if self._transport is None or v.addr is None:
            self.counters.send_errors += 1
            return
        msg = outbound.encode(self._mav, relay, v.system_id, v.component_id)
        buf = msg.pack(self._mav)
        self._mav.seq = (self._mav.seq + 1) % 256
        try:
            self._transport.sendto(buf, v.addr)
        except OSError as exc:
            self.counters.send_errors += 1
            log.warning("%s: sending %s failed: %r", v.entity_id, relay.get("type"), exc)
            return
        self.counters.commands_sent += 1


class _Udp(asyncio.DatagramProtocol):
    """The socket side: every datagram goes to the bridge; socket errors are logged, not fatal."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self._log = _RateLog()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.bridge.datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        self.bridge.counters.send_errors += 1
        self._log("MAVLink socket error: %r", exc)


__all__ = ["DEFAULT_ENTITY_ID", "DEFAULT_LISTEN", "Bridge", "BridgeStats", "NatsSource", "parse_listen"]
