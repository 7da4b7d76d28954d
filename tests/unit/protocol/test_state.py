"""The KV entity document: creation, static fields, telemetry merge, detections, staleness."""

from __future__ import annotations

import copy
import json

import pytest

from overwatch_lab.protocol import mavlink, state
from overwatch_lab.protocol.envelopes import parse_timestamp
from overwatch_lab.protocol.events import Detection

ORG, ENT = "org-galaxy", "gc35-e4b"
NOW = "2026-11-27T09:00:00.000000Z"
T1 = "2026-11-27T10:00:00.000000Z"
T2 = "2026-11-27T10:00:01.000000Z"
T3 = "2026-11-27T10:00:02.000000Z"

RECORD = {
    "entity_id": ENT,
    "org_id": ORG,
    "name": "Drone 1",
    "entity_type": "aircraft_multirotor",
    "status": "active",
    "priority": "high",
    "metadata": {"team": "blue"},
}

WIRE_SHAPE = {
    "position": {
        "global": {
            "latitude",
            "longitude",
            "altitude_msl",
            "altitude_relative",
            "altitude_terrain",
            "accuracy_h",
            "accuracy_v",
            "satellites_visible",
            "fix_type",
            "timestamp",
        },
        "local": {"x", "y", "z", "vx", "vy", "vz", "timestamp"},
    },
    "attitude": {
        "euler": {"roll", "pitch", "yaw", "rollspeed", "pitchspeed", "yawspeed", "timestamp"},
        "quaternion": {"q1", "q2", "q3", "q4", "rollspeed", "pitchspeed", "yawspeed", "timestamp"},
    },
}
WIRE_FLAT = {
    "vehicle_status": {
        "armed",
        "mode",
        "custom_mode",
        "autopilot",
        "system_status",
        "vehicle_type",
        "landed_state",
        "vtol_state",
        "load",
        "sensors_enabled",
        "sensors_health",
        "timestamp",
    },
    "power": {
        "voltage",
        "current",
        "battery_remaining",
        "consumed",
        "energy_consumed",
        "cells",
        "temperature",
        "timestamp",
    },
    "vfr": {"airspeed", "groundspeed", "heading", "climb_rate", "throttle", "altitude", "timestamp"},
    "mission": {"current_waypoint", "total_waypoints"},
    "actuators": {"servos"},
    "environment": {"pressure_abs", "pressure_diff", "temperature", "humidity"},
}


def new_doc() -> dict:
    return state.new_entity_doc(RECORD, "Galaxy", NOW)


def merge(doc: dict, message_type: str, data: dict, ts: str, uid: str = "u") -> None:
    proj = mavlink.project(message_type, data, ts)
    state.merge_telemetry(
        doc, sets=proj.sets, cursors={message_type: (uid, ts)}, last_seen=ts, system_id=1, component_id=1
    )


def test_new_entity_doc_has_every_wire_subtree():
    doc = new_doc()
    for root, subs in WIRE_SHAPE.items():
        for sub, leaves in subs.items():
            assert set(doc[root][sub]) == leaves, (root, sub)
            assert all(v is None for v in doc[root][sub].values())
    for root, leaves in WIRE_FLAT.items():
        assert leaves <= set(doc[root]), root  # mission/actuators/environment also carry a timestamp
        assert all(v is None for v in doc[root].values())
    assert doc["detections"] == {
        "status": None,
        "is_live": False,
        "frame_count": 0,
        "tracked_objects": {},
        "timestamp": None,
    }
    assert doc["telemetry_cursors"] == {}
    json.dumps(doc, allow_nan=False)


def test_new_entity_doc_identity():
    doc = new_doc()
    assert {k: doc[k] for k in state.STATIC_FIELDS} == {**RECORD, "org_name": "Galaxy"}
    assert doc["is_live"] is False
    assert (doc["created_at"], doc["updated_at"]) == (NOW, NOW)
    assert (doc["first_seen"], doc["last_seen"], doc["system_id"], doc["component_id"]) == (None,) * 4


def test_new_entity_doc_from_a_store_row_uses_defaults_and_ignores_extras():
    row = {
        "entity_id": "e2",
        "org_id": ORG,
        "entity_type": "waypoint",
        "name": None,
        "status": None,
        "latitude": 1.0,
        "org_name": "ignored",
        "created_at": "x",
    }
    doc = state.new_entity_doc(row, None, NOW)
    assert (doc["name"], doc["status"], doc["priority"], doc["org_name"]) == ("e2", "active", "normal", None)
    assert doc["position"]["global"]["latitude"] is None
    assert "latitude" not in doc and "created_at" in doc and doc["created_at"] == NOW


def test_new_entity_docs_share_no_subtrees():
    a, b = new_doc(), new_doc()
    a["position"]["global"]["latitude"] = 1.0
    a["detections"]["tracked_objects"]["t"] = {}
    assert b["position"]["global"]["latitude"] is None
    assert b["detections"]["tracked_objects"] == {}


# --------------------------------------------------------------------------- static fields


def test_static_values_and_no_drift_for_a_fresh_doc():
    doc = new_doc()
    assert state.static_values(RECORD, "Galaxy") == {**RECORD, "org_name": "Galaxy"}
    assert state.static_drift(doc, RECORD, "Galaxy") == []


def test_static_drift_names_the_changed_fields():
    doc = new_doc()
    changed = {**RECORD, "name": "Renamed", "status": "maintenance", "metadata": None}
    assert state.static_drift(doc, changed, "Galaxy") == ["name", "status", "metadata"]
    assert state.static_drift(doc, RECORD, "Galaxy Corp") == ["org_name"]
    del doc["priority"]
    assert state.static_drift(doc, RECORD, "Galaxy") == ["priority"]


def test_apply_static_sets_only_static_fields():
    doc = new_doc()
    merge(doc, "GLOBAL_POSITION_INT", {"lat": 10}, T1)
    before = copy.deepcopy(doc)
    later = "2026-11-27T11:00:00.000000Z"
    assert state.apply_static(doc, {**RECORD, "status": "error"}, "Galaxy", later) is True
    assert doc["status"] == "error"
    assert doc["updated_at"] == later
    assert doc["position"] == before["position"]
    assert doc["telemetry_cursors"] == before["telemetry_cursors"]
    assert doc["is_live"] is True and doc["last_seen"] == T1
    assert state.static_drift(doc, {**RECORD, "status": "error"}, "Galaxy") == []


def test_apply_static_without_change_returns_false_and_leaves_doc():
    doc = new_doc()
    before = copy.deepcopy(doc)
    assert state.apply_static(doc, RECORD, "Galaxy", "2030-01-01T00:00:00.000000Z") is False
    assert doc == before


def test_apply_static_never_moves_updated_at_back():
    doc = new_doc()
    merge(doc, "HEARTBEAT", {"base_mode": 0}, T3)
    assert state.apply_static(doc, {**RECORD, "name": "x"}, "Galaxy", T1) is True
    assert doc["updated_at"] == T3


# --------------------------------------------------------------------------- sets and cursors


def test_apply_sets_creates_and_replaces_intermediates():
    doc = {"position": None, "vfr": {"heading": 1}}
    state.apply_sets(
        doc,
        {
            ("position", "global", "latitude"): 1.5,
            ("vfr", "groundspeed"): 2.0,
            ("attitude", "euler", "roll"): 0.1,
            ("a", "b", "c", "d"): 4,
            ("top",): "t",
        },
    )
    assert doc == {
        "position": {"global": {"latitude": 1.5}},
        "vfr": {"heading": 1, "groundspeed": 2.0},
        "attitude": {"euler": {"roll": 0.1}},
        "a": {"b": {"c": {"d": 4}}},
        "top": "t",
    }


def test_cursor_of():
    doc = new_doc()
    assert state.cursor_of(doc, "HEARTBEAT") is None
    assert state.cursor_of({}, "HEARTBEAT") is None
    assert state.cursor_of({"telemetry_cursors": {"HEARTBEAT": "junk"}}, "HEARTBEAT") is None
    merge(doc, "HEARTBEAT", {"base_mode": 0}, T1, uid="h1")
    assert state.cursor_of(doc, "HEARTBEAT") == T1
    assert doc["telemetry_cursors"]["HEARTBEAT"] == {"message_uid": "h1", "timestamp": T1}
    assert state.cursor_of(doc, "VFR_HUD") is None


# --------------------------------------------------------------------------- telemetry merge


def test_merge_telemetry_golden_keeps_local_xyz():
    doc = new_doc()
    merge(doc, "LOCAL_POSITION_NED", {"x": 5.0, "y": 6.0, "z": -7.0, "vx": 9.0}, T1)
    merge(
        doc,
        "GLOBAL_POSITION_INT",
        {
            "lat": 329488100,
            "lon": -968013200,
            "alt": 152400,
            "relative_alt": 30480,
            "vx": 123,
            "vy": -45,
            "vz": 6,
        },
        T2,
    )
    g, loc = doc["position"]["global"], doc["position"]["local"]
    assert (g["latitude"], g["longitude"], g["altitude_msl"], g["altitude_relative"]) == (
        32.94881,
        -96.80132,
        152.4,
        30.48,
    )
    assert (loc["x"], loc["y"], loc["z"]) == (5.0, 6.0, -7.0)
    assert (loc["vx"], loc["vy"], loc["vz"]) == (1.23, -0.45, 0.06)
    assert loc["timestamp"] == g["timestamp"] == T2
    assert doc["attitude"]["euler"]["timestamp"] is None  # untouched subtree


def test_merge_telemetry_bookkeeping():
    doc = new_doc()
    proj = mavlink.project("HEARTBEAT", {"custom_mode": 3}, T2)
    state.merge_telemetry(
        doc,
        sets=proj.sets,
        cursors={"HEARTBEAT": ("h2", T2), "VFR_HUD": ("v1", T1)},
        last_seen=T2,
        system_id=7,
        component_id=191,
    )
    assert doc["is_live"] is True
    assert (doc["system_id"], doc["component_id"]) == (7, 191)
    assert doc["first_seen"] == T1  # earliest message of the batch
    assert doc["last_seen"] == doc["updated_at"] == T2
    assert doc["vehicle_status"]["mode"] == "AUTO"


def test_merge_telemetry_moves_times_and_cursors_only_forward():
    doc = new_doc()
    merge(doc, "VFR_HUD", {"heading": 90}, T3, uid="new")
    first_seen = doc["first_seen"]
    merge(doc, "VFR_HUD", {"heading": 45}, T1, uid="old")
    assert doc["telemetry_cursors"]["VFR_HUD"] == {"message_uid": "new", "timestamp": T3}
    assert doc["last_seen"] == doc["updated_at"] == T3
    assert doc["first_seen"] == first_seen == T3
    assert state.cursor_of(doc, "VFR_HUD") == T3


def test_stale_filter_with_cursor_of():
    """The worker's rule: a message not newer than the type's cursor is dropped before merging."""
    doc = new_doc()
    applied = []
    for uid, ts, heading in [("a", T2, 10), ("b", T1, 20), ("c", T2, 30), ("d", T3, 40)]:
        last = state.cursor_of(doc, "VFR_HUD")
        if last is not None and ts <= last:
            continue
        merge(doc, "VFR_HUD", {"heading": heading}, ts, uid=uid)
        applied.append(uid)
    assert applied == ["a", "d"]
    assert doc["vfr"]["heading"] == 40
    # Cursors are per message_type: an older HEARTBEAT is still new for its own type.
    assert state.cursor_of(doc, "HEARTBEAT") is None


def test_merge_telemetry_repairs_a_doc_without_cursors():
    doc = {"entity_id": ENT, "telemetry_cursors": None}
    merge(doc, "ATTITUDE", {"roll": 0.5}, T1)
    assert doc["attitude"]["euler"] == {"roll": 0.5, "timestamp": T1}
    assert state.cursor_of(doc, "ATTITUDE") == T1


# --------------------------------------------------------------------------- detections


def detection(ts: str, x1=0.1, y1=0.2, x2=0.3, y2=0.4, label="person", conf=0.9, track="t1") -> Detection:
    return Detection("ev", ORG, ENT, track, label, conf, x1, y1, x2, y2, ts, parse_timestamp(ts)[1])


def test_merge_detection_first_frame():
    doc = new_doc()
    assert state.merge_detection(doc, detection(T1)) is True
    track = doc["detections"]["tracked_objects"]["t1"]
    assert track == {
        "track_id": "t1",
        "label": "person",
        "confidence": 0.9,
        "frame_count": 1,
        "bbox": {"x1": 0.1, "y1": 0.2, "x2": 0.3, "y2": 0.4},
        "cx": pytest.approx(0.2),
        "cy": pytest.approx(0.3),
        "dx": 0.0,
        "dy": 0.0,
        "first_seen": T1,
        "last_seen": T1,
    }
    d = doc["detections"]
    assert (d["status"], d["is_live"], d["frame_count"], d["timestamp"]) == ("active", True, 1, T1)
    assert doc["updated_at"] == T1


def test_merge_detection_next_frame_moves_centroid():
    doc = new_doc()
    state.merge_detection(doc, detection(T1))
    assert state.merge_detection(doc, detection(T2, x1=0.2, x2=0.4, y1=0.1, y2=0.3, label="car", conf=0.5))
    track = doc["detections"]["tracked_objects"]["t1"]
    assert track["frame_count"] == 2
    assert track["dx"] == pytest.approx(0.1)
    assert track["dy"] == pytest.approx(-0.1)
    assert (track["first_seen"], track["last_seen"]) == (T1, T2)
    assert (track["label"], track["confidence"], track["bbox"]["x2"]) == ("car", 0.5, 0.4)
    assert doc["detections"]["frame_count"] == 2


def test_merge_detection_ignores_old_and_duplicate_frames():
    doc = new_doc()
    state.merge_detection(doc, detection(T2))
    before = copy.deepcopy(doc)
    assert state.merge_detection(doc, detection(T2, x1=0.0)) is False
    assert state.merge_detection(doc, detection(T1, x1=0.0)) is False
    assert doc == before


def test_merge_detection_tracks_are_independent():
    doc = new_doc()
    state.merge_detection(doc, detection(T2, track="a"))
    assert state.merge_detection(doc, detection(T1, track="b")) is True  # older than a, new for b
    d = doc["detections"]
    assert set(d["tracked_objects"]) == {"a", "b"}
    assert d["frame_count"] == 2
    assert d["timestamp"] == doc["updated_at"] == T2  # never moves back


def test_merge_detection_creates_a_missing_subtree():
    doc = {"entity_id": ENT}
    assert state.merge_detection(doc, detection(T1)) is True
    assert doc["detections"]["tracked_objects"]["t1"]["frame_count"] == 1
    assert doc["detections"]["frame_count"] == 1


# --------------------------------------------------------------------------- staleness and write-back


def test_mark_stale():
    doc = new_doc()
    merge(doc, "HEARTBEAT", {"base_mode": 0}, T1)
    t1 = parse_timestamp(T1)[1]
    assert state.mark_stale(doc, t1 + 4.9, 5.0) is False
    assert state.mark_stale(doc, t1 + 5.0, 5.0) is False
    assert doc["is_live"] is True
    assert state.mark_stale(doc, t1 + 5.1, 5.0) is True
    assert doc["is_live"] is False
    assert state.mark_stale(doc, t1 + 100, 5.0) is False  # already not live


def test_mark_stale_live_without_last_seen():
    assert state.mark_stale({"is_live": True, "last_seen": None}, 0.0, 5.0) is True
    assert state.mark_stale({"is_live": True, "last_seen": "garbage"}, 0.0, 5.0) is True
    assert state.mark_stale({"is_live": False}, 0.0, 5.0) is False
    assert state.mark_stale({}, 0.0, 5.0) is False


def test_live_fields():
    doc = new_doc()
    merge(doc, "GLOBAL_POSITION_INT", {"lat": 329488100, "lon": -968013200, "alt": 152400}, T1)
    merge(doc, "VFR_HUD", {"heading": 270, "groundspeed": 11.5}, T2)
    assert state.live_fields(doc) == {
        "latitude": 32.94881,
        "longitude": -96.80132,
        "altitude": 152.4,
        "heading": 270,
        "velocity": 11.5,
        "position_timestamp": T1,
        "is_live": True,
        "last_seen": T2,
    }


def test_live_fields_of_a_sparse_doc():
    assert state.live_fields({"position": None}) == {
        "latitude": None,
        "longitude": None,
        "altitude": None,
        "heading": None,
        "velocity": None,
        "position_timestamp": None,
        "is_live": False,
        "last_seen": None,
    }


def test_document_stays_json_serialisable_after_every_merge():
    doc = new_doc()
    for message_type in mavlink.MESSAGE_IDS:
        merge(doc, message_type, {"lat": 1, "roll": 0.1, "servo1_raw": 1500, "voltages": [4000]}, T1)
    state.merge_detection(doc, detection(T2))
    assert json.loads(json.dumps(doc, allow_nan=False)) == doc


def test_staleness_is_measured_on_the_lab_clock_not_the_device_clock():
    from overwatch_lab.protocol import envelopes, state

    now = 1_800_000_000.0
    doc = {"is_live": True, "last_seen": envelopes.format_timestamp(now + 3600)}  # device clock far ahead
    state.mark_received(doc, envelopes.format_timestamp(now - 10))
    assert state.mark_stale(doc, now, 5.0) is True  # heard nothing for 10 s, whatever the device says
    doc = {"is_live": True, "last_seen": envelopes.format_timestamp(now - 600)}  # device clock skewed back
    state.mark_received(doc, envelopes.format_timestamp(now - 1))
    assert state.mark_stale(doc, now, 5.0) is False
    state.mark_received(doc, envelopes.format_timestamp(now - 100))  # never moves backwards
    assert doc["received_at"] == envelopes.format_timestamp(now - 1)
