"""The bridge's pure parts: packet → envelope, relay → MAVLink, tlog records, listen addresses.

Packets come from pymavlink's own encoder; no socket, no broker (``Bridge.feed`` needs neither).
"""

from __future__ import annotations

import io
import json
import math

import pytest
from pymavlink.dialects.v20 import ardupilotmega as mavlink2

from overwatch_lab.errors import ConfigError, EnvelopeError
from overwatch_lab.mavlink import Bridge, parse_listen
from overwatch_lab.mavlink.bridge import REPLAY_PEER
from overwatch_lab.mavlink.inbound import Timestamps, entity_type_of, is_vehicle_heartbeat, telemetry_data
from overwatch_lab.mavlink.outbound import encode, plan
from overwatch_lab.mavlink.tlog import TlogStats, read_records, write_record
from overwatch_lab.protocol.command_actions import Action, relay_messages, validate_params
from overwatch_lab.protocol.envelopes import decode_telemetry, format_timestamp, make_telemetry
from overwatch_lab.protocol.mavlink import project
from overwatch_lab.protocol.subjects import parse_telemetry_subject

MAV = mavlink2.MAVLink(None, srcSystem=3, srcComponent=1)


def pack(msg) -> bytes:
    buf = msg.pack(MAV)
    MAV.seq = (MAV.seq + 1) % 256
    return bytes(buf)


def bridge() -> Bridge:
    return Bridge("nats://127.0.0.1:1", org="org-u", listen=None)


def test_a_packet_becomes_exactly_the_envelope_make_telemetry_builds():
    b = bridge()
    out = b.feed(pack(MAV.heartbeat_encode(2, 3, 81 | 128, 4, 4)), REPLAY_PEER, 1_780_000_000_000_000)
    out += b.feed(
        pack(MAV.global_position_int_encode(1, 329488100, -968013200, 152400, 30480, 123, -45, 6, 9000)),
        REPLAY_PEER,
        1_780_000_000_000_000,  # the same time: the bridge moves it 1 µs on (strictly increasing)
    )
    subjects = [o[0] for o in out]
    assert subjects[:2] == [
        "constellation.entities.org-u.created",
        "constellation.events.isr.org-u.org-u-mav3.bootsequence",
    ]
    (subject, body, uid), (_, body2, uid2) = out[2], out[3]
    env = json.loads(body)
    assert env == make_telemetry(
        "org-u", "org-u-mav3", "HEARTBEAT", env["data"], message_uid=uid, timestamp=env["timestamp"],
        system_id=3, component_id=1, source="mavlink-bridge", message_id=0,
    )  # fmt: skip
    t = decode_telemetry(body2, parse_telemetry_subject(subject))  # the worker's own strict decoder
    assert (
        t.message_type == "GLOBAL_POSITION_INT" and t.system_id == 3 and uid2.endswith("-33-1780000000000001")
    )
    leaves = project(t.message_type, t.data, t.timestamp).sets  # the worker's projection: the golden case
    assert leaves[("position", "global", "latitude")] == pytest.approx(32.94881)
    assert env["data"]["base_mode"] & 128 and env["data"]["custom_mode"] == 4


def test_nan_becomes_null_and_arrays_stay_lists():
    msg = MAV.altitude_encode(5, math.nan, 152.4, 30.5, 30.5, math.inf, 12.0)
    msg.pack(MAV)  # fills the header
    data = telemetry_data(mavlink2.MAVLink(None).parse_buffer(msg.get_msgbuf())[0])
    assert (
        data["altitude_monotonic"] is None
        and data["altitude_terrain"] is None
        and data["altitude_amsl"] == pytest.approx(152.4)
    )
    bs = mavlink2.MAVLink(None).parse_buffer(
        pack(MAV.battery_status_encode(0, 1, 1, 2500, [4000] * 10, 120, 5, 6, 80))
    )[0]
    assert telemetry_data(bs)["voltages"] == [4000] * 10


def test_the_per_second_timestamp_cache_formats_as_format_timestamp():
    stamp = Timestamps()
    us = 1_780_000_000_000_000
    for t in (us, us + 1, us + 999_999, us + 1_000_000, us - 1, 86_400_000_000 * 20_000 - 1, 0, us + 123_456):
        assert stamp(t) == format_timestamp(t / 1e6), t  # the cache moves back and forth between seconds


def test_vehicle_heartbeats_and_entity_types():
    assert is_vehicle_heartbeat(3, 2) and not is_vehicle_heartbeat(8, 2) and not is_vehicle_heartbeat(3, 6)
    assert entity_type_of(2) == "aircraft_multirotor" and entity_type_of(1) == "aircraft_fixed_wing"
    assert entity_type_of(20) == "aircraft_vtol" and entity_type_of(11) == "surface_vessel_usv"
    assert entity_type_of(999) == "sensor_platform"


def test_garbage_is_counted_not_raised():
    b = bridge()
    good = pack(MAV.heartbeat_encode(2, 3, 81, 4, 4))
    bad = bytearray(pack(MAV.heartbeat_encode(2, 3, 81, 4, 4)))
    bad[-1] ^= 1
    for junk in (b"\x00" * 50, bytes(bad), b"\xfd\xff\x00", b"\xfe", bytes(range(256))):
        assert b.feed(junk, ("127.0.0.1", 9), 1) == []
    assert len(b.feed(good, ("127.0.0.1", 10), 2)) == 3  # registration (2) + the HEARTBEAT
    assert b.counters.bad_packets >= 5 and b.counters.errors == 0  # each junk datagram at least once


def test_relay_messages_encode_as_the_mavlink_messages():
    p = validate_params(Action.FOLLOW_ROUTE, {"waypoints": [[32.9, -96.8, 30], [33.0, -96.7]]})
    ex = plan(relay_messages(Action.FOLLOW_ROUTE, p))
    assert [e.kind for e in ex] == ["clear", "mission", "command"] and len(ex[1].items) == 2
    item = encode(MAV, ex[1].items[1], 7, 1)
    assert item.get_type() == "MISSION_ITEM_INT" and (item.seq, item.x, item.y) == (1, 330000000, -967000000)
    (rtl,) = plan(relay_messages(Action.RTL, {}))
    msg = encode(MAV, rtl.first, 7, 1)
    assert msg.get_type() == "COMMAND_LONG" and msg.command == 20 and msg.target_system == 7
    (mode,) = plan(relay_messages(Action.SET_MODE, {"mode": "RTL"}))
    assert encode(MAV, mode.first, 7, 1).custom_mode == 6
    with pytest.raises(EnvelopeError, match="does not write"):
        plan([{"type": "param_set"}])


def test_tlog_records_resync_after_garbage_and_report_a_truncated_tail():
    pkts = [pack(MAV.heartbeat_encode(2, 3, 81, 4, 4)) for _ in range(3)]
    blob = write_record(10, pkts[0]) + b"junk!" + write_record(20, pkts[1]) + write_record(30, pkts[2])[:-4]
    st = TlogStats()
    got = list(read_records(io.BytesIO(blob), st))
    assert [(ts, p) for ts, p in got] == [(10, pkts[0]), (20, pkts[1])]
    assert st.records == 2 and st.resyncs == 1 and st.truncated


def test_listen_addresses_and_entity_id_templates():
    assert parse_listen("udp:127.0.0.1:14550") == ("127.0.0.1", 14550)
    assert parse_listen("udpin:0.0.0.0:0") == ("0.0.0.0", 0) and parse_listen("127.0.0.1:5") == (
        "127.0.0.1",
        5,
    )
    for bad in ("tcp:127.0.0.1:5760", "udp:127.0.0.1", "udp:host:99999", "nonsense"):
        with pytest.raises(ConfigError):
            parse_listen(bad)
    with pytest.raises(ConfigError, match="entity id"):
        Bridge("nats://127.0.0.1:1", org="org-u", listen=None, entity_id="{org}.{sysid}")
    assert Bridge("nats://x:1", org="o", listen=None, names={4: "alpha"}).entity_id_of(4) == "alpha"
