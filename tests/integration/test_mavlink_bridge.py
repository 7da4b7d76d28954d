"""The MAVLink bridge end to end: pymavlink-encoded packets over loopback UDP into a real lab.

A real lab (nats-server + libSQL file) per test; the bridge and fake autopilots on a loop
thread of their own (tests/integration/mavlink_devices.py), so the test uses the blocking lab
API meanwhile. Every wait is a condition with a deadline (``lab.wait_for``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from overwatch_lab import Lab
from tests.integration.command_devices import FAST
from tests.integration.mavlink_devices import (
    MAV_AUTOPILOT_INVALID,
    MAV_TYPE_FIXED_WING,
    MAV_TYPE_GCS,
    BridgeThread,
    heartbeat,
    position,
)

ORG = "org-mav"


@pytest.fixture
def mav_lab(lab_factory) -> Lab:
    return lab_factory(**FAST)


@pytest.fixture
def bridge(mav_lab: Lab) -> Iterator[BridgeThread]:
    b = BridgeThread(mav_lab, ORG, command_timeout_s=0.5)
    yield b
    b.close()


def rows(lab: Lab, entity_id: str):
    return lab.frames.telemetry(entity_id=entity_id)


def test_two_autopilots_become_two_entities_with_history_and_live_state(mav_lab, bridge):
    a, b = bridge.autopilot(1), bridge.autopilot(7)
    bridge.send(a, heartbeat(a.mav), position(a.mav), a.mav.attitude_encode(1000, 0.1, -0.2, 1.5, 0, 0, 0.01))
    bridge.send(b, heartbeat(b.mav, mav_type=MAV_TYPE_FIXED_WING), position(b.mav, 50))
    # not projected: counted by type and dropped
    bridge.send(a, a.mav.timesync_encode(0, 1), a.mav.param_value_encode(b"RTL_ALT", 1500.0, 9, 100, 3))
    # telemetry of a system id before its HEARTBEAT waits for it, then goes out first
    c = bridge.autopilot(9)
    bridge.send(c, position(c.mav, 7))

    doc1 = mav_lab.wait_for(lambda: mav_lab.state_of(f"{ORG}-mav1"), what="system 1 in KV")
    assert doc1["org_id"] == ORG and doc1["entity_type"] == "aircraft_multirotor"
    mav_lab.wait_for(lambda: len(rows(mav_lab, f"{ORG}-mav1")) == 3, what="3 history rows of system 1")
    mav_lab.wait_for(lambda: len(rows(mav_lab, f"{ORG}-mav7")) == 2, what="2 history rows of system 7")
    frame = rows(mav_lab, f"{ORG}-mav1")
    assert sorted(frame["message_type"]) == ["ATTITUDE", "GLOBAL_POSITION_INT", "HEARTBEAT"]
    assert set(frame["system_id"]) == {1} and set(frame["component_id"]) == {1}

    # Overwatch's golden projection, from a packet pymavlink encoded
    g = mav_lab.wait_for(
        lambda: (d := mav_lab.state_of(f"{ORG}-mav1")) and d["position"]["global"].get("latitude") and d,
        what="system 1's position in KV",
    )["position"]
    lat, lon = g["global"]["latitude"], g["global"]["longitude"]
    assert (lat, lon) == (pytest.approx(32.94881), pytest.approx(-96.80132))
    alts = g["global"]["altitude_msl"], g["global"]["altitude_relative"]
    assert alts == (pytest.approx(152.4), pytest.approx(30.48))
    assert g["local"]["vx"] == pytest.approx(1.23)
    vs = mav_lab.wait_for(
        lambda: (
            (d := mav_lab.state_of(f"{ORG}-mav1")) and d["vehicle_status"].get("mode") and d["vehicle_status"]
        ),
        what="system 1's mode",
    )
    assert vs["mode"] == "LOITER" and vs["armed"] is False
    doc7 = mav_lab.state_of(f"{ORG}-mav7")
    assert doc7 is not None and doc7["entity_type"] == "aircraft_fixed_wing"

    st = bridge.stats()
    assert st["ignored"]["TIMESYNC"] == 1 and st["ignored"]["PARAM_VALUE"] == 1
    assert st["registered"] == 2 and st["bad_packets"] == 0
    assert mav_lab.state_of(f"{ORG}-mav9") is None  # no HEARTBEAT yet: not registered, its packet waits

    bridge.send(c, heartbeat(c.mav))
    mav_lab.wait_for(
        lambda: len(rows(mav_lab, f"{ORG}-mav9")) == 2, what="system 9: buffered packet + heartbeat"
    )
    f9 = rows(mav_lab, f"{ORG}-mav9")
    assert list(f9["message_type"]) == ["GLOBAL_POSITION_INT", "HEARTBEAT"]
    assert not f9["late"].any()
    assert mav_lab.frames.quarantine().empty


def test_garbage_and_non_autopilots_are_counted_and_skipped(mav_lab, bridge):
    a = bridge.autopilot(3)
    good = position(a.mav).pack(a.mav)
    a.mav.seq += 1
    corrupt = bytearray(position(a.mav).pack(a.mav))
    a.mav.seq += 1
    corrupt[-1] ^= 0xFF  # CRC broken

    async def raw() -> None:
        assert a.transport is not None
        a.transport.sendto(b"\x00\x01garbage that is not MAVLink\xfd\x03", a.target)
        a.transport.sendto(bytes(corrupt), a.target)
        a.transport.sendto(b"", a.target)

    bridge.call(raw())
    gcs = bridge.autopilot(255)
    bridge.send(gcs, gcs.mav.heartbeat_encode(MAV_TYPE_GCS, MAV_AUTOPILOT_INVALID, 0, 0, 0))
    bridge.send(a, heartbeat(a.mav))

    async def send_good() -> None:
        assert a.transport is not None
        a.transport.sendto(good, a.target)

    bridge.call(send_good())
    mav_lab.wait_for(lambda: len(rows(mav_lab, f"{ORG}-mav3")) == 2, what="system 3's two good packets")
    st = mav_lab.wait_for(lambda: (x := bridge.stats())["bad_packets"] >= 2 and x, what="bad packets counted")
    assert st["ignored"].get("HEARTBEAT (not an autopilot)") == 1
    assert st["registered"] == 1 and mav_lab.state_of(f"{ORG}-mav255") is None
    assert st["errors"] == 0
