"""The MAVLink bridge end to end: pymavlink-encoded packets over loopback UDP into a real lab.

A real lab (nats-server + libSQL file) per test; the bridge and fake autopilots on a loop
thread of their own (tests/integration/mavlink_devices.py), so the test uses the blocking lab
API meanwhile. Every wait is a condition with a deadline (``lab.wait_for``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymavlink.dialects.v20 import ardupilotmega as mavlink2

from overwatch_lab import Lab
from overwatch_lab.errors import CommandError
from overwatch_lab.mavlink.tlog import write_record
from overwatch_lab.protocol.commands import CommandStatus as S
from tests.integration.command_devices import FAST
from tests.integration.mavlink_devices import (
    MAV_AUTOPILOT_INVALID,
    MAV_TYPE_FIXED_WING,
    MAV_TYPE_GCS,
    BridgeThread,
    FakeAutopilot,
    accept_everything,
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


def registered(lab: Lab, bridge: BridgeThread, system_id: int) -> FakeAutopilot:
    """A fake autopilot that sent its HEARTBEAT, once the lab has its entity and the bridge its link."""
    ap = bridge.autopilot(system_id)
    bridge.send(ap, heartbeat(ap.mav))
    lab.wait_for(lambda: lab.state_of(f"{ORG}-mav{system_id}"), what=f"system {system_id} in KV")
    return ap


def test_rtl_goes_out_as_command_long_and_its_command_ack_succeeds_the_command(mav_lab, bridge):
    ap = registered(mav_lab, bridge, 1)
    h = mav_lab.commands.send(f"{ORG}-mav1", "rtl")
    assert h.wait("SUCCEEDED", timeout=10) is S.SUCCEEDED
    (cmd,) = ap.of_type("COMMAND_LONG")
    assert cmd.command == 20 and cmd.target_system == 1 and cmd.target_component == 1  # NAV_RETURN_TO_LAUNCH
    assert cmd.get_srcSystem() == 255  # the bridge speaks as a ground station
    assert list(h.history["status"]) == ["QUEUED", "SENT", "RECEIVED", "ACCEPTED", "EXECUTING", "SUCCEEDED"]


def test_goto_and_set_mode_are_command_int_and_set_mode(mav_lab, bridge):
    ap = registered(mav_lab, bridge, 2)
    h = mav_lab.commands.send(f"{ORG}-mav2", "goto", lat=32.95, lon=-96.81, alt_m=40, speed_mps=8)
    assert h.wait("SUCCEEDED", timeout=10) is S.SUCCEEDED
    (ci,) = ap.of_type("COMMAND_INT")
    assert (ci.command, ci.x, ci.y, ci.z, ci.param1) == (
        192,
        329500000,
        -968100000,
        40.0,
        8.0,
    )  # DO_REPOSITION
    h = mav_lab.commands.send(f"{ORG}-mav2", "set_mode", mode="RTL")
    assert h.wait("SUCCEEDED", timeout=10) is S.SUCCEEDED
    (sm,) = ap.of_type("SET_MODE")
    assert sm.custom_mode == 6 and sm.base_mode == 1 and sm.target_system == 2


def test_follow_route_runs_the_mission_protocol_with_mission_item_int(mav_lab, bridge):
    ap = registered(mav_lab, bridge, 4)
    route = [[32.95, -96.80, 30], [32.96, -96.81, 35], [32.97, -96.80]]
    h = mav_lab.commands.send(f"{ORG}-mav4", "follow_route", waypoints=route)
    assert h.wait("SUCCEEDED", timeout=15) is S.SUCCEEDED
    sent = ap.of_type("MISSION_CLEAR_ALL", "MISSION_COUNT", "MISSION_ITEM_INT", "COMMAND_LONG")
    assert [m.get_type() for m in sent] == [
        "MISSION_CLEAR_ALL", "MISSION_COUNT", "MISSION_ITEM_INT", "MISSION_ITEM_INT", "MISSION_ITEM_INT",
        "COMMAND_LONG",
    ]  # fmt: skip
    items = ap.of_type("MISSION_ITEM_INT")
    assert [(m.seq, m.x, m.y, m.z) for m in items] == [
        (0, 329500000, -968000000, 30.0), (1, 329600000, -968100000, 35.0), (2, 329700000, -968000000, 0.0),
    ]  # fmt: skip
    assert sent[1].count == 3 and sent[-1].command == 300  # MISSION_START


def test_a_denied_command_fails_with_the_mav_result(mav_lab, bridge):
    def deny_arming(ap: FakeAutopilot, msg):
        if msg.get_type() == "COMMAND_LONG" and msg.command == 400:
            return [ap.mav.command_ack_encode(400, 2, 0, 0, 255, 190)]  # MAV_RESULT_DENIED
        return accept_everything(ap, msg)

    ap = bridge.autopilot(5, deny_arming)
    bridge.send(ap, heartbeat(ap.mav))
    mav_lab.wait_for(lambda: mav_lab.state_of(f"{ORG}-mav5"), what="system 5 in KV")
    h = mav_lab.commands.send(f"{ORG}-mav5", "arm")
    with pytest.raises(CommandError, match="MAV_RESULT_DENIED to MAV_CMD_COMPONENT_ARM_DISARM"):
        h.wait("SUCCEEDED", timeout=10)
    assert h.status is S.FAILED
    (cmd,) = ap.of_type("COMMAND_LONG")
    assert cmd.command == 400 and cmd.param1 == 1.0  # arm


def test_in_progress_keeps_executing_until_the_final_ack(mav_lab, bridge):
    gate: dict[str, FakeAutopilot] = {}

    def slow_land(ap: FakeAutopilot, msg):
        if msg.get_type() == "COMMAND_LONG" and msg.command == 21:
            gate["ap"] = ap
            return [ap.mav.command_ack_encode(21, 5, 50, 0, 255, 190)]  # IN_PROGRESS, 50 %
        return accept_everything(ap, msg)

    ap = bridge.autopilot(6, slow_land)
    bridge.send(ap, heartbeat(ap.mav))
    mav_lab.wait_for(lambda: mav_lab.state_of(f"{ORG}-mav6"), what="system 6 in KV")
    h = mav_lab.commands.send(f"{ORG}-mav6", "land")
    assert h.wait("EXECUTING", timeout=10) is S.EXECUTING
    assert h.status is S.EXECUTING  # IN_PROGRESS is not the end
    bridge.send(ap, ap.mav.command_ack_encode(21, 0, 100, 0, 255, 190))
    assert h.wait("SUCCEEDED", timeout=10) is S.SUCCEEDED
    assert len(ap.of_type("COMMAND_LONG")) == 1  # an IN_PROGRESS answer is not resent


def test_a_silent_autopilot_fails_the_command_after_its_retries(mav_lab, bridge):
    ap = bridge.autopilot(8, lambda _ap, _msg: [])
    bridge.send(ap, heartbeat(ap.mav))
    mav_lab.wait_for(lambda: mav_lab.state_of(f"{ORG}-mav8"), what="system 8 in KV")
    h = mav_lab.commands.send(f"{ORG}-mav8", "rtl")
    with pytest.raises(CommandError, match="no COMMAND_ACK for MAV_CMD_NAV_RETURN_TO_LAUNCH after 3 tries"):
        h.wait("SUCCEEDED", timeout=10)
    sent = ap.of_type("COMMAND_LONG")
    assert [m.confirmation for m in sent] == [0, 1, 2]  # the MAVLink command protocol's resends


def write_tlog(path: Path, *, start_us: int) -> Counter[tuple[int, str]]:
    """A telemetry log of two vehicles, written with pymavlink's own mavlogfile; returns what it holds.

    Holds per vehicle a HEARTBEAT, 20 x (GLOBAL_POSITION_INT, ATTITUDE, VFR_HUD), a few
    non-projected packets and, in the middle, one corrupt record (broken CRC) and garbage.
    """
    from pymavlink import mavutil

    log = mavutil.mavlogfile(str(path), write=True)
    want: Counter[tuple[int, str]] = Counter()
    t = start_us
    mavs = {sysid: mavlink2.MAVLink(None, srcSystem=sysid, srcComponent=1) for sysid in (11, 12)}

    def put(sysid: int, msg, *, projected: bool = True) -> None:
        nonlocal t
        t += 10_000
        log.write(write_record(t, msg.pack(mavs[sysid])))
        mavs[sysid].seq = (mavs[sysid].seq + 1) % 256
        if projected:
            want[(sysid, msg.get_type())] += 1

    for sysid, mav in mavs.items():
        put(sysid, heartbeat(mav, mav_type=MAV_TYPE_FIXED_WING if sysid == 12 else 2))
    for k in range(20):
        for sysid, mav in mavs.items():
            put(sysid, position(mav, k))
            put(sysid, mav.attitude_encode(k, 0.01 * k, 0.0, 1.0, 0.0, 0.0, 0.0))
            put(sysid, mav.vfr_hud_encode(12.0, 11.5, 90, 40, 152.4, 0.1))
            if k % 5 == 0:
                put(sysid, mav.system_time_encode(t, k), projected=False)
        if k == 10:
            bad = bytearray(position(mavs[11], 99).pack(mavs[11]))
            bad[-2] ^= 0x55
            log.write(write_record(t + 1, bytes(bad)))
            log.write(b"\x00\x01\x02 not a record \xfe")
    log.close()
    return want


def history_counts(lab: Lab) -> Counter[tuple[int, str]]:
    frame = lab.frames.telemetry(org_id=ORG)
    return Counter(zip(frame["system_id"].astype(int), frame["message_type"], strict=True))


@pytest.mark.slow  # a CLI process start (~2-5 s on a loaded box) + two replays
def test_a_tlog_replayed_through_the_cli_stores_every_projected_packet_once(mav_lab, tmp_path):
    path = tmp_path / "flight.tlog"
    want = write_tlog(path, start_us=(time.time_ns() // 1000) - 60_000_000)
    cmd = [sys.executable, "-m", "overwatch_lab.cli", "mavlink", "--org", ORG, "--replay", str(path),
           "--data-dir", str(mav_lab.config.data_dir), "--name", "12=fixed-wing-12"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    st = json.loads(done.stdout)
    assert st["registered"] == 2 and st["published"] == sum(want.values()) == 122
    assert st["publisher"]["failed"] == 0 and st["publisher"]["acked"] >= st["published"]
    assert st["ignored"] == {"SYSTEM_TIME": 8}
    assert st["bad_packets"] == 1 and st["tlog"]["resyncs"] == 1  # the broken CRC; the garbage
    mav_lab.wait_for(lambda: history_counts(mav_lab) == want, timeout=20, what=f"history {dict(want)}")
    assert mav_lab.state_of("fixed-wing-12")["entity_type"] == "aircraft_fixed_wing"
    # the live state is written after the batch's history rows: wait for it too
    lat = mav_lab.wait_for(
        lambda: (d := mav_lab.state_of(f"{ORG}-mav11")) and d["position"]["global"].get("latitude"),
        what="system 11's position in KV",
    )
    assert lat == pytest.approx(32.9488119)
    # the log's own times are the envelope times, in order
    f11 = mav_lab.frames.telemetry(entity_id=f"{ORG}-mav11")
    assert f11["ts"].is_monotonic_increasing and not f11["late"].any()
    assert f11["ts"].iloc[0] == pytest.approx((time.time() - 60), abs=30)

    # Replayed again (in process this time): the same message_uids, nothing stored twice.
    b = BridgeThread(mav_lab, ORG, listen=None, names={12: "fixed-wing-12"})
    try:
        assert b.call(b.bridge.replay(path)) == st["tlog"]["records"]
    finally:
        b.close()
    assert history_counts(mav_lab) == want
    assert mav_lab.frames.quarantine().empty
