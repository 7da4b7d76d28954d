"""MAVLink on loopback for the bridge tests: the bridge on a loop thread, fake autopilots beside it.

Everything on the wire is produced by pymavlink's own encoder (``pymavlink.dialects.v20.ardupilotmega``)
and sent over UDP to 127.0.0.1 only. A :class:`FakeAutopilot` is a UDP socket with a system id:
it sends what a test tells it to, records every message the bridge writes to it, and answers
them through its ``respond`` policy (COMMAND_ACK, the mission protocol ...), like a flight
controller would.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from pymavlink.dialects.v20 import ardupilotmega as mavlink2

from overwatch_lab.mavlink import Bridge
from overwatch_lab.runtime import LoopThread

MAV_TYPE_QUADROTOR = 2
MAV_TYPE_FIXED_WING = 1
MAV_TYPE_GCS = 6
MAV_AUTOPILOT_ARDUPILOTMEGA = 3
MAV_AUTOPILOT_INVALID = 8

Respond = Callable[["FakeAutopilot", Any], list[Any]]


def heartbeat(
    mav: Any, *, mav_type: int = MAV_TYPE_QUADROTOR, custom_mode: int = 5, armed: bool = False
) -> Any:
    """An ArduPilot vehicle's HEARTBEAT (LOITER by default)."""
    return mav.heartbeat_encode(
        mav_type, MAV_AUTOPILOT_ARDUPILOTMEGA, 1 | (128 if armed else 0), custom_mode, 4
    )


def position(mav: Any, k: int = 0) -> Any:
    """GLOBAL_POSITION_INT: Overwatch's golden case, moved north by ``k`` degE7."""
    return mav.global_position_int_encode(
        1000 + k, 329488100 + k, -968013200, 152400, 30480, 123, -45, 6, 9000
    )


def accept_everything(ap: FakeAutopilot, msg: Any) -> list[Any]:
    """An autopilot that accepts every command, mode change and mission (the mission protocol)."""
    mav, t = ap.mav, msg.get_type()
    if t == "COMMAND_LONG" or t == "COMMAND_INT":
        return [mav.command_ack_encode(msg.command, 0, 0, 0, 255, 190)]
    if t == "SET_MODE":
        ap.custom_mode = msg.custom_mode
        return [mav.command_ack_encode(11, 0, 0, 0, 255, 190)]
    if t == "MISSION_CLEAR_ALL":
        return [mav.mission_ack_encode(255, 190, 0, 0)]
    if t == "MISSION_COUNT":
        ap.mission_count = msg.count
        return [mav.mission_request_int_encode(255, 190, 0, 0)]
    if t == "MISSION_ITEM_INT":
        if msg.seq + 1 < ap.mission_count:
            return [mav.mission_request_int_encode(255, 190, msg.seq + 1, 0)]
        return [mav.mission_ack_encode(255, 190, 0, 0)]
    return []


class FakeAutopilot(asyncio.DatagramProtocol):
    """A flight controller on loopback UDP (see the module docstring)."""

    def __init__(self, system_id: int, respond: Respond = accept_everything) -> None:
        self.mav = mavlink2.MAVLink(None, srcSystem=system_id, srcComponent=1)
        self.parser = mavlink2.MAVLink(None)
        self.respond = respond
        self.received: list[Any] = []
        self.custom_mode = 5
        self.mission_count = 0
        self.transport: asyncio.DatagramTransport | None = None
        self.target: tuple[str, int] | None = None
        self._lock = threading.Lock()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a _SelectorDatagramTransport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        for msg in self.parser.parse_buffer(data) or []:
            with self._lock:
                self.received.append(msg)
            for reply in self.respond(self, msg):
                self.send(reply)

    def send(self, *msgs: Any) -> None:
        """Encode and send messages to the bridge (one datagram each)."""
        assert self.transport is not None and self.target is not None
        for msg in msgs:
            self.transport.sendto(msg.pack(self.mav), self.target)
            self.mav.seq = (self.mav.seq + 1) % 256

    def of_type(self, *types: str) -> list[Any]:
        """What the bridge wrote to this autopilot, of these types, in order."""
        with self._lock:
            return [m for m in self.received if m.get_type() in types]


class BridgeThread:
    """A bridge and its fake autopilots on a loop thread of their own (like a separate process)."""

    def __init__(self, lab: Any, org: str, **options: Any) -> None:
        self.thread = LoopThread("test-mavlink")
        options.setdefault("listen", "udp:127.0.0.1:0")
        self.bridge = Bridge(lab, org=org, **options)
        self.call(self.bridge.start())
        self.autopilots: list[FakeAutopilot] = []

    def call(self, coro: Any, timeout: float = 20.0) -> Any:
        return self.thread.call(coro, timeout)

    def autopilot(self, system_id: int, respond: Respond = accept_everything) -> FakeAutopilot:
        """A fake autopilot on 127.0.0.1, sending to the bridge."""

        async def make() -> FakeAutopilot:
            loop = asyncio.get_running_loop()
            _, ap = await loop.create_datagram_endpoint(
                lambda: FakeAutopilot(system_id, respond), local_addr=("127.0.0.1", 0)
            )
            ap.target = self.bridge.address
            return ap

        ap: FakeAutopilot = self.call(make())
        self.autopilots.append(ap)
        return ap

    def send(self, ap: FakeAutopilot, *msgs: Any) -> None:
        """Send from ``ap`` on the bridge's loop (its transport lives there)."""

        async def go() -> None:
            ap.send(*msgs)

        self.call(go())

    def stats(self) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            return self.bridge.stats()

        return self.call(read())  # type: ignore[no-any-return]

    def close(self) -> None:
        async def close_autopilots() -> None:
            for ap in self.autopilots:
                if ap.transport is not None:
                    ap.transport.close()
            await asyncio.sleep(0)  # the transports' close callbacks run on the next loop pass

        try:
            self.call(self.bridge.stop(), timeout=30.0)
            self.call(close_autopilots())
        finally:
            self.thread.close()
