"""Edge agents' formats through a running lab: each golden message of tests/fixtures/edge/ (built
from Constellation-Overwatch/pulsar, aero-arc-relay2constellation and vision2constellation; see
that folder's README.md) ends up in history and KV exactly as the equivalent v1 message does, and
a message that fits no format is quarantined with a reason naming the formats tried."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from overwatch_lab.protocol import envelopes
from overwatch_lab.protocol import subjects as s
from overwatch_lab.protocol.edge_events import decode_any_event
from overwatch_lab.protocol.edge_telemetry import decode_any_telemetry
from overwatch_lab.protocol.events import Detection, make_detection, make_device_event

FIXTURES = Path(__file__).parents[1] / "fixtures" / "edge"
ORG = "org-galaxy"
TWIN = "-v1"  # the entity that gets the equivalent v1 messages
TELEMETRY = (
    "pulsar_globalpositionint", "pulsar_heartbeat", "pulsar_attitude", "pulsar_vfr_hud",
    "pulsar_systemstatus", "relay_globalpositionint", "relay_heartbeat",
)  # fmt: skip
STATE_KEYS = ("position", "attitude", "vehicle_status", "power", "vfr", "system_id", "component_id",
              "last_seen", "is_live", "detections")  # fmt: skip
VOLATILE_COLUMNS = ("message_uid", "entity_id", "ingested_at", "id")


def golden(name: str) -> tuple[str, bytes]:
    doc = json.loads((FIXTURES / f"{name}.json").read_text())
    return doc["subject"], json.dumps(doc["body"], separators=(",", ":")).encode()


@pytest.fixture
def fleet(lab):
    lab.register_org(ORG)
    records = [
        {"org_id": ORG, "entity_id": eid + twin, "entity_type": kind}
        for eid, kind in (
            ("gc35-e4b", "aircraft_multirotor"),
            ("relay-drone-1", "aircraft_multirotor"),
            ("cam-1", "sensor_platform"),
        )  # fmt: skip
        for twin in ("", TWIN)
    ]
    lab.register_entities(records)
    return lab


def _history(lab, entity_id: str, n: int) -> pd.DataFrame:
    rows = lab.wait_for(
        lambda: (f := lab.frames.telemetry(entity_id=entity_id)).shape[0] >= n and f,
        what=f"{n} history rows of {entity_id}",
    )
    return (
        rows.drop(columns=[c for c in VOLATILE_COLUMNS if c in rows.columns])
        .sort_values(["message_type", "timestamp"])
        .reset_index(drop=True)
    )


def _state(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc.get(k) for k in STATE_KEYS}


def test_golden_telemetry_lands_as_its_v1_equivalent(fleet):
    lab = fleet
    counts: dict[str, int] = {}
    for name in TELEMETRY:
        subject, body = golden(name)
        t = decode_any_telemetry(body, subject)
        lab.publish(subject, body)  # as the agent does: no Nats-Msg-Id
        twin = envelopes.make_telemetry(
            ORG, t.entity_id + TWIN, t.message_type, t.data, timestamp=t.timestamp,
            system_id=t.system_id, component_id=t.component_id, source=t.source, message_id=t.message_id,
        )  # fmt: skip
        lab.publish(s.telemetry_subject(ORG, t.entity_id + TWIN), twin, msg_id=twin["message_uid"])
        counts[t.entity_id] = counts.get(t.entity_id, 0) + 1
    for eid, n in counts.items():
        edge, v1 = _history(lab, eid, n), _history(lab, eid + TWIN, n)
        pd.testing.assert_frame_equal(edge, v1)
        assert set(edge["org_id"]) == {ORG}  # resolved from the registry: the agents send none
        assert not edge["late"].any()
        docs = lab.wait_for(
            lambda e=eid: (
                (a := lab.state_of(e))
                and (b := lab.state_of(e + TWIN))
                and a.get("last_seen") == b.get("last_seen")
                and (a, b)
            ),
            what=f"KV state of {eid} and its twin",
        )
        assert _state(docs[0]) == _state(docs[1])
    gpi = lab.state_of("gc35-e4b")["position"]["global"]  # Overwatch's golden projection
    assert (gpi["latitude"], gpi["longitude"], gpi["altitude_msl"]) == pytest.approx(
        (32.94881, -96.80132, 152.4)
    )
    assert lab.state_of("relay-drone-1")["vehicle_status"]["vehicle_type"] == 2  # MAV_TYPE_QUADROTOR
    # A redelivered or resent agent message (no Nats-Msg-Id) is one history row: its uid is its body's.
    subject, body = golden("pulsar_heartbeat")
    ignored = lab.stats()["telemetry-worker"]["ignored"]
    lab.publish(subject, body)
    lab.wait_for(lambda: lab.stats()["telemetry-worker"]["ignored"] > ignored, what="the resend ignored")
    assert lab.frames.telemetry(entity_id="gc35-e4b").shape[0] == counts["gc35-e4b"]
    assert lab.frames.quarantine().empty


def _v1_detection(d: Detection) -> dict[str, Any]:
    return make_detection(
        ORG,
        d.entity_id + TWIN,
        d.track_id,
        d.label,
        d.confidence,
        d.x1,
        d.y1,
        d.x2,
        d.y2,
        timestamp=d.timestamp,
    )


def test_golden_detections_and_vision_boot_land_as_their_v1_equivalents(fleet):
    lab = fleet
    for name in ("vision_bootsequence", "pulsar_detection", "vision_detection"):
        subject, body = golden(name)
        item = decode_any_event(body, subject)
        lab.publish(subject, body)
        if isinstance(item, Detection):
            lab.publish(s.detection_subject(ORG, item.entity_id + TWIN, item.track_id), _v1_detection(item))
        else:
            twin = make_device_event(ORG, item.entity_id + TWIN, item.event_type, timestamp=item.timestamp)
            lab.publish(s.device_event_subject(ORG, item.entity_id + TWIN, item.event_type), twin)
    for eid in ("gc35-e4b", "cam-1"):
        docs = lab.wait_for(
            lambda e=eid: (
                (a := lab.state_of(e))
                and (b := lab.state_of(e + TWIN))
                and a.get("detections")
                and b.get("detections")
                and (a, b)
            ),
            what=f"detections of {eid} and its twin",
        )
        assert docs[0]["detections"] == docs[1]["detections"]
    track = lab.state_of("cam-1")["detections"]["tracked_objects"]["clx7y3k2r0000qzrm8n7qh3k1"]
    assert (
        track["bbox"] == {"x1": 0.189, "y1": 0.179, "x2": 0.837, "y2": 0.997} and track["label"] == "person"
    )
    boots = lab.wait_for(
        lambda: (f := lab.frames.device_events()).shape[0] >= 2 and f, what="the two bootsequence rows"
    )
    by_entity = boots.set_index("entity_id")
    assert (
        by_entity.loc["cam-1", "event_type"] == by_entity.loc["cam-1" + TWIN, "event_type"] == "bootsequence"
    )
    assert by_entity.loc["cam-1", "timestamp"] == by_entity.loc["cam-1" + TWIN, "timestamp"]
    assert lab.state_of("cam-1")["is_live"] is True
    assert lab.frames.quarantine().empty


def test_a_message_that_fits_no_format_is_quarantined_naming_the_formats(fleet):
    lab = fleet
    subject, body = golden("pulsar_heartbeat")
    obj = json.loads(body)
    lab.publish(subject, {**obj, "drone_id": "relay-drone-1"})  # subject/body mismatch
    lab.publish("constellation.telemetry.gc35-e4b", b'{"hello": "world"}')  # neither shape
    lab.publish("constellation.events.isr.org-galaxy.cam-1", b'{"event_type": "detection"}')  # no ids
    q = lab.wait_for(
        lambda: (f := lab.frames.quarantine()).shape[0] >= 3 and f, timeout=15, what="quarantine"
    )
    errors = sorted(q["error"])
    tel = [e for e in errors if "tried v1, pulsar, aero-arc-relay" in e]
    assert len(tel) == 2, errors
    assert any("drone_id 'relay-drone-1' != subject entity 'gc35-e4b'" in e for e in tel)
    assert any("no msg_name field" in e for e in tel)
    assert any(
        "tried v1, pulsar, vision2constellation" in e and "missing required field(s)" in e for e in errors
    )
