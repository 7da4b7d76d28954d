"""Entity records (protocol/entities.py): allowed values, defaults, normalisation, rejections."""

from __future__ import annotations

import pytest

from overwatch_lab.errors import EnvelopeError, SubjectError
from overwatch_lab.protocol.entities import (
    ENTITY_COLUMNS,
    ENTITY_TYPES,
    ORG_TYPES,
    PRIORITIES,
    STATUSES,
    validate_entity_record,
)

ORG, ENT = "org-galaxy", "gc35-e4b"
TS = "2026-11-27T10:00:00.000000Z"


# --------------------------------------------------------------------------- entity records


def record(**changes: object) -> dict:
    rec: dict[str, object] = {"entity_id": ENT, "org_id": ORG, "entity_type": "aircraft_multirotor"}
    rec.update(changes)
    return rec


def test_allowed_values_match_the_wire_contract():
    assert len(ENTITY_TYPES) == 14 and "aircraft_multirotor" in ENTITY_TYPES and "geofence" in ENTITY_TYPES
    assert STATUSES == ("active", "inactive", "pending", "error", "maintenance", "unknown")
    assert PRIORITIES == ("critical", "high", "normal", "low")
    assert ORG_TYPES == ("military", "civilian", "commercial", "ngo")


def test_validate_entity_record_fills_defaults():
    out = validate_entity_record(record())
    assert list(out) == list(ENTITY_COLUMNS)
    assert out["name"] == ENT
    assert (out["status"], out["priority"], out["is_live"]) == ("active", "normal", False)
    assert out["latitude"] is None and out["tags"] is None and out["metadata"] is None


def test_validate_entity_record_normalises_and_does_not_mutate():
    rec = record(
        name="Drone 1",
        latitude=32,
        longitude=-96.5,
        heading=360,
        accuracy=0,
        is_live=1,
        expiry_time="2026-11-27T12:00:00+02:00",
        position_timestamp="2026-11-27T10:00:00Z",
        tags=["a", "b"],
        aliases=[],
        metadata={"k": 1},
        components={},
        video_config={"url": "rtsp://x"},
        source="sim",
        created_by="me",
        classification="U",
        created_at="x",
        updated_at="y",
        org_name="Galaxy",
        last_seen=None,
    )
    before = dict(rec)
    out = validate_entity_record(rec)
    assert rec == before
    assert out["latitude"] == 32.0 and type(out["latitude"]) is float
    assert out["is_live"] is True
    assert out["expiry_time"] == TS
    assert out["position_timestamp"] == TS
    assert "created_at" not in out and "org_name" not in out
    assert validate_entity_record(out) == out  # re-sendable


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"bogus": 1}, "bogus"),
        ({"entity_type": "spaceship"}, "entity_type"),
        ({"entity_type": None}, "entity_type"),
        ({"status": "flying"}, "status"),
        ({"priority": "urgent"}, "priority"),
        ({"name": ""}, "name"),
        ({"name": "x" * 257}, "name"),
        ({"name": 5}, "name"),
        ({"is_live": "yes"}, "is_live"),
        ({"is_live": 2}, "is_live"),
        ({"latitude": 90.5}, "latitude"),
        ({"longitude": -181}, "longitude"),
        ({"heading": 361}, "heading"),
        ({"heading": -1}, "heading"),
        ({"accuracy": -0.1}, "accuracy"),
        ({"altitude": True}, "altitude"),
        ({"altitude": "100"}, "altitude"),
        ({"velocity": float("inf")}, "velocity"),
        ({"velocity": 10**400}, "velocity"),
        ({"expiry_time": "tomorrow"}, "expiry_time"),
        ({"position_timestamp": "0001-01-01T00:00:00Z"}, "position_timestamp"),
        ({"tags": "a,b"}, "tags"),
        ({"aliases": [1]}, "aliases"),
        ({"components": []}, "components"),
        ({"metadata": "{}"}, "metadata"),
        ({"video_config": 1}, "video_config"),
        ({"source": 1}, "source"),
    ],
)
def test_validate_entity_record_rejects(changes, field):
    with pytest.raises(EnvelopeError, match=field):
        validate_entity_record(record(**changes))


def test_validate_entity_record_rejects_bad_identity():
    with pytest.raises(EnvelopeError, match="JSON object"):
        validate_entity_record([])
    with pytest.raises(EnvelopeError, match="entity_id"):
        validate_entity_record({"org_id": ORG, "entity_type": "waypoint"})
    with pytest.raises(SubjectError):
        validate_entity_record(record(entity_id="a.b"))
    with pytest.raises(SubjectError):
        validate_entity_record(record(org_id="o>"))
