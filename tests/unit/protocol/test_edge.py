"""Edge agents' formats (protocol/edge_telemetry.py, edge_events.py) on the golden messages of
tests/fixtures/edge/ (read from Constellation-Overwatch/pulsar, aero-arc-relay2constellation and
vision2constellation; repositories, paths and commits in that folder's README.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from overwatch_lab.errors import EnvelopeError, ProtocolError, SubjectError
from overwatch_lab.protocol import edge_events as ev
from overwatch_lab.protocol import edge_telemetry as et
from overwatch_lab.protocol import envelopes as e
from overwatch_lab.protocol.events import Detection, DeviceEvent
from overwatch_lab.protocol.mavlink import project

FIXTURES = Path(__file__).parents[2] / "fixtures" / "edge"


def golden(name: str) -> tuple[str, bytes, dict[str, Any]]:
    """(subject, body bytes, body dict) of one golden message."""
    doc = json.loads((FIXTURES / f"{name}.json").read_text())
    return doc["subject"], json.dumps(doc["body"], separators=(",", ":")).encode(), doc["body"]


def test_every_fixture_cites_its_source():
    files = sorted(FIXTURES.glob("*.json"))
    assert len(files) >= 10
    for path in files:
        doc = json.loads(path.read_text())
        assert doc["from"].startswith("Constellation-Overwatch/") and "@" in doc["from"], path.name
        assert set(doc) == {"from", "subject", "body"}, path.name


# --------------------------------------------------------------------------- telemetry


def test_pulsar_global_position_int_maps_onto_v1_and_overwatch_golden_projection():
    subject, body, _ = golden("pulsar_globalpositionint")
    t = et.decode_any_telemetry(body, subject)
    assert (t.org_id, t.entity_id, t.message_type, t.message_id) == (
        "",
        "gc35-e4b",
        "GLOBAL_POSITION_INT",
        33,
    )
    assert t.data == {
        "alt": 152400, "hdg": 9000, "lat": 329488100, "lon": -968013200,
        "relative_alt": 30480, "vx": 123, "vy": -45, "vz": 6,
    }  # fmt: skip
    assert t.timestamp == "2026-11-27T10:00:00.123456Z"  # Go's nanoseconds cut to microseconds
    assert t.message_uid.startswith("pulsar-") and len(t.message_uid) == len("pulsar-") + 32
    assert json.loads(t.data_json) == t.data
    sets = project(t.message_type, t.data, t.timestamp).sets
    assert sets[("position", "global", "latitude")] == pytest.approx(32.94881)
    assert sets[("position", "global", "longitude")] == pytest.approx(-96.80132)
    assert sets[("position", "global", "altitude_msl")] == pytest.approx(152.4)
    assert sets[("position", "global", "altitude_relative")] == pytest.approx(30.48)
    assert sets[("position", "local", "vx")] == pytest.approx(1.23)


@pytest.mark.parametrize(
    ("name", "message_type", "expected"),
    [
        ("pulsar_heartbeat", "HEARTBEAT", {"type": 2, "autopilot": 3, "base_mode": 209, "custom_mode": 4}),
        (
            "pulsar_attitude",
            "ATTITUDE",
            {"rollspeed": -0.003, "pitchspeed": 0.001, "yawspeed": 0.01, "yaw": 1.5707964},
        ),
        ("pulsar_vfr_hud", "VFR_HUD", {"groundspeed": 11.75, "alt": 152.4, "climb": 0.25, "heading": 90}),
        (
            "pulsar_systemstatus",
            "SYS_STATUS",
            {"voltage_battery": 16380, "current_battery": 1250, "load": 420},
        ),
    ],
)
def test_pulsar_messages_get_mavlink_names(name: str, message_type: str, expected: dict[str, Any]):
    subject, body, _ = golden(name)
    t = et.decode_any_telemetry(body, subject)
    assert t.message_type == message_type
    assert expected.items() <= t.data.items()
    assert not project(t.message_type, t.data, t.timestamp).skipped


def test_relay_envelope_is_recognised_with_its_extra_fields():
    subject, body, _ = golden("relay_globalpositionint")
    t = et.decode_any_telemetry(body, subject)
    assert t.message_uid.startswith("aero-arc-relay-")
    assert (t.entity_id, t.message_type, t.system_id, t.component_id) == (
        "relay-drone-1",
        "GLOBAL_POSITION_INT",
        0,
        0,
    )
    assert t.data["lat"] == 515074000 and "raw" not in t.data


def test_relay_heartbeat_on_its_three_token_subject_with_an_enum_name_and_device_time():
    subject, body, _ = golden("relay_heartbeat")
    assert subject.count(".") == 2
    t = et.decode_any_telemetry(body, subject)
    assert t.data == {"type": 2}  # MAV_TYPE_QUADROTOR
    assert t.timestamp == "2026-11-28T10:00:01.250000Z"  # timestamp_relay is Go's zero time
    assert project(t.message_type, t.data, t.timestamp).sets[("vehicle_status", "vehicle_type")] == 2


def test_stored_partitioned_subject_is_accepted():
    subject, body, _ = golden("pulsar_heartbeat")
    stored = subject.replace("constellation.telemetry.", "constellation.telemetry-p.") + ".3"
    assert et.decode_any_telemetry(body, stored).entity_id == "gc35-e4b"


def test_uid_is_deterministic_and_per_body():
    subject, body, obj = golden("pulsar_heartbeat")
    assert (
        et.decode_any_telemetry(body, subject).message_uid
        == et.decode_any_telemetry(body, subject).message_uid
    )
    other = json.dumps({**obj, "timestamp_relay": "2026-11-27T10:00:09Z"}).encode()
    assert (
        et.decode_any_telemetry(other, subject).message_uid
        != et.decode_any_telemetry(body, subject).message_uid
    )


def test_mav_type_table_matches_pymavlink():
    pymavlink = pytest.importorskip("pymavlink.dialects.v20.common")
    names = {v.name: k for k, v in pymavlink.enums["MAV_TYPE"].items()}
    for name, number in et.MAV_TYPES.items():
        if name in names:
            assert names[name] == number, name


def test_camel_case_names_convert():
    assert et.message_type_of("GpsRawInt") == "GPS_RAW_INT"
    assert et.message_type_of("SystemStatus") == "SYS_STATUS"
    assert et.message_type_of("VFR_HUD") == "VFR_HUD"
    with pytest.raises(EnvelopeError):
        et.message_type_of("no such name!")


@pytest.mark.parametrize(
    ("change", "subject", "needle"),
    [
        ({"drone_id": "other"}, None, "drone_id 'other' != subject entity 'gc35-e4b'"),
        ({"msg_name": "Attitude"}, None, "subject message 'heartbeat' != msg_name 'Attitude'"),
        ({"fields": None}, None, "'fields' must be a JSON object"),
        ({"system_id": 300}, None, "'system_id' = 300 is out of range"),
        ({"extra": 1}, None, "unknown field(s) extra"),
        ({"timestamp_relay": "yesterday"}, None, "timestamp_relay"),
        ({}, "constellation.telemetry.gc35-e4b.heartbeat.x", "must be constellation.telemetry.{entity_id}"),
    ],
)
def test_a_bad_edge_envelope_is_refused_naming_every_format(
    change: dict[str, Any], subject: str | None, needle: str
):
    subj, _, obj = golden("pulsar_heartbeat")
    body = json.dumps({**obj, **change}).encode()
    with pytest.raises(ProtocolError) as info:
        et.decode_any_telemetry(body, subject or subj)
    text = str(info.value)
    assert needle in text
    assert "tried v1, pulsar, aero-arc-relay" in text


def test_a_v1_envelope_still_decodes_and_its_errors_lead():
    env = e.make_telemetry("org-galaxy", "gc35-e4b", "HEARTBEAT", {"custom_mode": 4}, message_uid="u1")
    subject = "constellation.telemetry.org-galaxy.gc35-e4b"
    t = et.decode_any_telemetry(e.encode(env), subject)
    assert (t.message_uid, t.org_id) == ("u1", "org-galaxy")
    bad = e.encode({**env, "schema_version": "2.0.0"})
    with pytest.raises(EnvelopeError) as info:
        et.decode_any_telemetry(bad, subject)
    assert str(info.value).startswith("telemetry: unsupported schema_version '2.0.0'")
    assert "as pulsar/aero-arc-relay: no msg_name field" in str(info.value)
    with pytest.raises(SubjectError):  # a bad subject stays a SubjectError
        et.decode_any_telemetry(e.encode(env), "constellation.telemetry.a.b.c")


# --------------------------------------------------------------------------- events


def test_pulsar_detection_becomes_a_v1_detection():
    subject, body, obj = golden("pulsar_detection")
    d = ev.decode_any_event(body, subject)
    assert isinstance(d, Detection)
    assert (d.org_id, d.entity_id, d.track_id, d.label) == (
        "org-galaxy",
        "gc35-e4b",
        obj["track_id"],
        "person",
    )
    assert (d.x1, d.y1, d.x2, d.y2, d.confidence) == (0.25, 0.4, 0.375, 0.7, 0.87)
    assert d.event_uid.startswith("pulsar-") and d.timestamp == "2026-11-27T10:00:02.500000Z"


def test_pulsar_box_over_the_frame_edge_is_clipped():
    subject, _, obj = golden("pulsar_detection")
    d = ev.decode_any_event(json.dumps({**obj, "x1": -0.02, "y2": 1.01}).encode(), subject)
    assert isinstance(d, Detection) and (d.x1, d.y2) == (0.0, 1.0)


def test_vision_detection_on_its_five_token_subject():
    subject, body, obj = golden("vision_detection")
    d = ev.decode_any_event(body, subject)
    assert isinstance(d, Detection)
    det = obj["detection"]
    assert (d.org_id, d.entity_id, d.track_id) == ("org-galaxy", "cam-1", det["track_id"])
    assert (d.x1, d.y1, d.x2, d.y2) == (0.189, 0.179, 0.837, 0.997)
    assert d.timestamp == "2026-11-27T10:00:03.912559Z"
    assert d.event_uid.startswith("vision-")


def test_vision_bootsequence_is_a_device_event():
    subject, body, obj = golden("vision_bootsequence")
    d = ev.decode_any_event(body, subject)
    assert isinstance(d, DeviceEvent)
    assert (d.event_type, d.org_id, d.entity_id, d.timestamp) == (
        "bootsequence", "org-galaxy", "cam-1", "2026-11-27T10:00:00.500000Z",
    )  # fmt: skip
    assert d.data == obj


@pytest.mark.parametrize(
    ("name", "change", "needle"),
    [
        ("vision_detection", {"entity_id": "cam-2"}, "body entity_id 'cam-2' != subject entity_id 'cam-1'"),
        ("vision_detection", {"event_type": None}, "event_type"),
        (
            "vision_detection",
            {"detection": {"label": "x"}},
            "missing required field(s) bbox, confidence, track_id",
        ),
        ("pulsar_detection", {"confidence": 1.5}, "'confidence' must be a number in [0, 1]"),
        ("pulsar_detection", {"x1": 0.9, "x2": 0.1}, "right edge (0.1) must be >= its left edge (0.9)"),
        ("pulsar_detection", {"colour": "red"}, "unknown field(s) colour"),
    ],
)
def test_a_bad_edge_event_is_refused_naming_every_format(name: str, change: dict[str, Any], needle: str):
    subject, _, obj = golden(name)
    with pytest.raises(ProtocolError) as info:
        ev.decode_any_event(json.dumps({**obj, **change}).encode(), subject)
    assert needle in str(info.value)
    assert "tried v1, pulsar, vision2constellation" in str(info.value)


def test_other_subjects_fit_no_event_format():
    with pytest.raises(SubjectError) as info:
        ev.decode_any_event(b"{}", "constellation.events.other.x")
    assert "tried v1, pulsar, vision2constellation" in str(info.value)


# --------------------------------------------------------------------------- docs/wire.md in step

WIRE_DOC = (Path(__file__).parents[3] / "docs" / "wire.md").read_text()


def test_wire_doc_edge_table_matches_the_mapping():
    block = WIRE_DOC.split("<!-- table: edge-telemetry -->\n", 1)[1].split("\n\n", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()[2:]]
    assert {r[0]: r[1] for r in rows} == {
        name: mt for name, mt in et.MESSAGE_NAMES.items() if name in {r[0] for r in rows}
    }
    assert {r[1] for r in rows} >= set(et.FIELD_NAMES)
    for msg_name, message_type, renamed in rows:
        pairs = dict(p.split(" → ") for p in renamed.split(", ") if " → " in p)
        assert pairs == et.FIELD_NAMES.get(message_type, {}), msg_name


def test_wire_doc_vision_example_decodes():
    raw = WIRE_DOC.split("<!-- edge example: vision-detection -->\n```json\n", 1)[1].split("\n```", 1)[0]
    d = ev.decode_any_event(raw, "constellation.events.isr.org-galaxy.cam-1")
    assert isinstance(d, Detection) and (d.x1, d.y2, d.label) == (0.189, 0.997, "person")
