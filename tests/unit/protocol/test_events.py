"""ISR events (protocol/events.py): the detection envelope and generic device events."""

from __future__ import annotations

import json

import pytest

from overwatch_lab.errors import EnvelopeError, SubjectError
from overwatch_lab.protocol import envelopes as e
from overwatch_lab.protocol import events
from overwatch_lab.protocol.subjects import EventSubject, parse_event_subject

ORG, ENT = "org-galaxy", "gc35-e4b"
TS = "2026-11-27T10:00:00.000000Z"


def body(obj: object) -> bytes:
    return json.dumps(obj).encode()


# --------------------------------------------------------------------------- detection

DET_SUBJ = EventSubject(ORG, ENT, "detection", "trk-1")


def det(**changes: object) -> bytes:
    env = {
        "schema_version": "1.0.0",
        "event_uid": "ev-1",
        "org_id": ORG,
        "entity_id": ENT,
        "track_id": "trk-1",
        "label": "person",
        "confidence": 0.9,
        "x1": 0.1,
        "y1": 0.2,
        "x2": 0.3,
        "y2": 0.6,
        "timestamp": TS,
    }
    env.update(changes)
    return body({k: v for k, v in env.items() if v is not _DROP})


_DROP = object()


def test_decode_detection_valid():
    d = events.decode_detection(det(), DET_SUBJ)
    assert (d.track_id, d.label, d.confidence, d.x1, d.y2, d.timestamp) == (
        "trk-1",
        "person",
        0.9,
        0.1,
        0.6,
        TS,
    )
    assert d.ts == e.parse_timestamp(TS)[1]


def test_decode_detection_accepts_integer_edges_as_floats():
    d = events.decode_detection(det(x1=0, y1=0, x2=1, y2=1, confidence=1), DET_SUBJ)
    assert (d.x1, d.x2, d.confidence) == (0.0, 1.0, 1.0)
    assert type(d.x2) is float
    assert events.decode_detection(det(x2=0.1, y2=0.2), DET_SUBJ).x2 == 0.1  # zero-size box is allowed


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"track_id": "trk-2"}, "subject/body mismatch.*track_id"),
        ({"entity_id": "other"}, "subject/body mismatch.*entity_id"),
        ({"org_id": "other"}, "subject/body mismatch.*org_id"),
        ({"label": ""}, "label"),
        ({"label": "x" * 129}, "label"),
        ({"label": 5}, "label"),
        ({"confidence": 1.01}, "confidence"),
        ({"confidence": -0.1}, "confidence"),
        ({"confidence": True}, "confidence"),
        ({"confidence": "0.5"}, "confidence"),
        ({"x1": 1.5}, "x1"),
        ({"y2": None}, "y2"),
        ({"x1": 0.5, "x2": 0.4}, "x2"),
        ({"y1": 0.7, "y2": 0.6}, "y2"),
        ({"schema_version": "2.0.0"}, "schema_version"),
        ({"extra": 1}, "unknown field"),
        ({"timestamp": _DROP}, "missing required field.*timestamp"),
        ({"event_uid": _DROP}, "missing required field.*event_uid"),
        ({"timestamp": "0001-01-01T00:00:00Z"}, "zero time"),
    ],
)
def test_decode_detection_rejects(changes, match):
    with pytest.raises(EnvelopeError, match=match):
        events.decode_detection(det(**changes), DET_SUBJ)


def test_decode_detection_rejects_bad_tokens_and_non_detection_subject():
    with pytest.raises(SubjectError):
        events.decode_detection(det(event_uid="a.b"), DET_SUBJ)
    with pytest.raises(SubjectError):
        events.decode_detection(det(track_id="*"), DET_SUBJ)
    with pytest.raises(EnvelopeError, match="track_id"):
        events.decode_detection(det(), EventSubject(ORG, ENT, "bootsequence"))
    with pytest.raises(EnvelopeError, match="malformed"):
        events.decode_detection(b"{", DET_SUBJ)


def test_make_detection_round_trips():
    env = events.make_detection(ORG, ENT, "trk-9", "car", 0.5, 0.0, 0.1, 0.2, 0.3, timestamp=TS)
    subject = parse_event_subject(f"constellation.events.isr.{ORG}.{ENT}.detection.trk-9")
    d = events.decode_detection(e.encode(env), subject)
    assert (d.track_id, d.label, d.x2, d.y2, d.timestamp) == ("trk-9", "car", 0.2, 0.3, TS)


# --------------------------------------------------------------------------- device events

DEV_SUBJ = EventSubject(ORG, ENT, "bootsequence")


def test_device_event_round_trip():
    env = events.make_device_event(ORG, ENT, "bootsequence", firmware="4.5.1", timestamp=1795766400.0)
    ev = events.decode_device_event(e.encode(env), DEV_SUBJ)
    assert (ev.event_type, ev.org_id, ev.entity_id) == ("bootsequence", ORG, ENT)
    assert ev.timestamp == "2026-11-27T08:00:00.000000Z"
    assert ev.data["firmware"] == "4.5.1" and len(ev.data["event_uid"]) == 32


def test_device_event_is_generic():
    ev = events.decode_device_event(b'{"reason": "low battery", "timestamp": "not a time"}', DEV_SUBJ)
    assert ev.timestamp is None
    assert ev.data == {"reason": "low battery", "timestamp": "not a time"}
    assert events.decode_device_event(b"{}", DEV_SUBJ).data == {}


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"[]", "JSON object"),
        (b"{", "malformed"),
        (b'{"a": NaN}', "NaN"),
        (b'{"entity_id": "other"}', "subject/body mismatch.*entity_id"),
        (b'{"org_id": "other"}', "subject/body mismatch.*org_id"),
    ],
)
def test_decode_device_event_rejects(raw, match):
    with pytest.raises(EnvelopeError, match=match):
        events.decode_device_event(raw, DEV_SUBJ)


def test_make_device_event_rejects_bad_tokens():
    with pytest.raises(SubjectError):
        events.make_device_event(ORG, ENT, "boot.sequence")
