"""Entity and organisation lifecycle events (protocol/lifecycle.py): round trips and rejections."""

from __future__ import annotations

import pytest

from overwatch_lab.errors import EnvelopeError, SubjectError
from overwatch_lab.protocol import envelopes as e
from overwatch_lab.protocol import lifecycle
from overwatch_lab.protocol.entities import ENTITY_COLUMNS
from overwatch_lab.protocol.subjects import parse_entity_subject, parse_organization_subject

ORG, ENT = "org-galaxy", "gc35-e4b"


# --------------------------------------------------------------------------- entity events


def record(**changes: object) -> dict:
    rec: dict[str, object] = {"entity_id": ENT, "org_id": ORG, "entity_type": "aircraft_multirotor"}
    rec.update(changes)
    return rec


def entity_event(kind: str, rec: dict, **top: object) -> tuple[bytes, object]:
    env = lifecycle.make_entity_event(kind, rec)
    env.update(top)
    return e.encode(env), parse_entity_subject(env["subject"])


@pytest.mark.parametrize("kind", ["created", "updated"])
def test_entity_event_created_updated_round_trip(kind):
    raw, subject = entity_event(kind, record(status="pending", priority="high", latitude=1.5))
    ev = lifecycle.decode_entity_event(raw, subject)
    assert (ev.kind, ev.type, ev.org_id, ev.entity_id) == (kind, kind, ORG, ENT)
    assert (ev.status, ev.priority, ev.entity_type) == ("pending", "high", "aircraft_multirotor")
    assert ev.entity is not None and ev.entity["latitude"] == 1.5 and list(ev.entity) == list(ENTITY_COLUMNS)
    assert ev.source == "overwatch-lab"
    assert e.parse_timestamp(ev.timestamp)[0] == ev.timestamp


def test_entity_event_status_round_trip():
    raw, subject = entity_event("status", {"entity_id": ENT, "org_id": ORG, "status": "maintenance"})
    ev = lifecycle.decode_entity_event(raw, subject)
    assert (ev.type, ev.kind, ev.status, ev.entity) == ("status_changed", "status", "maintenance", None)


def test_entity_event_deleted_round_trip():
    raw, subject = entity_event("deleted", {"entity_id": ENT, "org_id": ORG})
    ev = lifecycle.decode_entity_event(raw, subject)
    assert (ev.type, ev.entity_id, ev.entity, ev.status) == ("deleted", ENT, None, None)


def test_entity_event_keeps_metadata():
    raw, subject = entity_event("deleted", {"entity_id": ENT, "org_id": ORG}, metadata={"why": "test"})
    assert lifecycle.decode_entity_event(raw, subject).metadata == {"why": "test"}


def _entity_env(kind: str = "created") -> dict:
    return (
        lifecycle.make_entity_event(kind, record())
        if kind != "status"
        else lifecycle.make_entity_event(kind, {"entity_id": ENT, "org_id": ORG, "status": "active"})
    )


@pytest.mark.parametrize(
    ("kind", "mutate", "match"),
    [
        ("created", lambda env: env.update(type="updated"), "subject/body mismatch.*type"),
        ("status", lambda env: env.update(type="status"), "subject/body mismatch.*type"),
        ("created", lambda env: env.update(extra=1), "unknown field.*extra"),
        ("created", lambda env: env.pop("source"), "missing required field.*source"),
        ("created", lambda env: env.update(id=""), "'id'"),
        ("created", lambda env: env.update(data=None), "'data'"),
        ("created", lambda env: env.update(metadata=[]), "metadata"),
        ("created", lambda env: env.update(timestamp="0001-01-01T00:00:00Z"), "zero time"),
        ("created", lambda env: env["data"].pop("entity"), "data.entity"),
        ("created", lambda env: env["data"]["entity"].update(entity_id="other"), "data.entity.entity_id"),
        ("created", lambda env: env["data"]["entity"].update(org_id="org2"), "data.entity.org_id"),
        ("created", lambda env: env["data"]["entity"].update(latitude=91), "latitude"),
        ("created", lambda env: env["data"]["entity"].update(colour="red"), "colour"),
        ("created", lambda env: env["data"].update(status="flying"), "data.status"),
        ("status", lambda env: env["data"].pop("status"), "data.status"),
        ("status", lambda env: env["data"].update(status="broken"), "data.status"),
        ("status", lambda env: env["data"].update(priority="urgent"), "data.priority"),
    ],
)
def test_decode_entity_event_rejects(kind, mutate, match):
    env = _entity_env(kind)
    subject = parse_entity_subject(env["subject"])
    mutate(env)
    with pytest.raises(EnvelopeError, match=match):
        lifecycle.decode_entity_event(e.encode(env), subject)


def test_decode_entity_event_rejects_org_mismatch_and_bad_tokens():
    env = _entity_env()
    with pytest.raises(EnvelopeError, match="subject/body mismatch.*org_id"):
        lifecycle.decode_entity_event(
            e.encode(env), parse_entity_subject("constellation.entities.org2.created")
        )
    env["data"]["entity_id"] = "a.b"
    with pytest.raises(SubjectError, match="data.entity_id"):
        lifecycle.decode_entity_event(e.encode(env), parse_entity_subject(env["subject"]))


def test_make_entity_event_validates():
    with pytest.raises(EnvelopeError):
        lifecycle.make_entity_event("renamed", record())
    with pytest.raises(EnvelopeError):
        lifecycle.make_entity_event("created", record(entity_type="spaceship"))
    with pytest.raises(EnvelopeError, match="status"):
        lifecycle.make_entity_event("status", {"entity_id": ENT, "org_id": ORG})
    with pytest.raises(SubjectError):
        lifecycle.make_entity_event("deleted", {"entity_id": ENT})
    env = lifecycle.make_entity_event("created", record())
    assert env["subject"] == f"constellation.entities.{ORG}.created"
    assert env["data"]["entity"]["status"] == "active"


# --------------------------------------------------------------------------- organisation events


def test_org_event_round_trip():
    env = lifecycle.make_org_event("created", "org1", "Org One", "military", {"tier": 1})
    kind = parse_organization_subject(env["subject"])
    ev = lifecycle.decode_org_event(e.encode(env), kind)
    assert (ev.kind, ev.type, ev.org_id, ev.name, ev.org_type, ev.metadata) == (
        "created",
        "created",
        "org1",
        "Org One",
        "military",
        {"tier": 1},
    )


def test_org_event_defaults_and_deleted():
    ev = lifecycle.decode_org_event(e.encode(lifecycle.make_org_event("updated", "org1")), "updated")
    assert (ev.name, ev.org_type, ev.metadata) == ("org1", "civilian", None)
    raw = e.encode({**lifecycle.make_org_event("deleted", "org1"), "data": {"org_id": "org1"}})
    ev = lifecycle.decode_org_event(raw, "deleted")
    assert (ev.org_id, ev.name, ev.org_type) == ("org1", None, None)


@pytest.mark.parametrize(
    ("kind", "mutate", "match"),
    [
        ("created", lambda d: d.pop("name"), "data.name"),
        ("created", lambda d: d.update(name=""), "data.name"),
        ("created", lambda d: d.update(name="x" * 257), "data.name"),
        ("updated", lambda d: d.pop("org_type"), "data.org_type"),
        ("created", lambda d: d.update(org_type="pirate"), "data.org_type"),
        ("created", lambda d: d.update(metadata="x"), "data.metadata"),
        ("deleted", lambda d: d.update(org_type="pirate"), "data.org_type"),
    ],
)
def test_decode_org_event_rejects(kind, mutate, match):
    env = lifecycle.make_org_event(kind, "org1", "Org One")
    mutate(env["data"])
    with pytest.raises(EnvelopeError, match=match):
        lifecycle.decode_org_event(e.encode(env), kind)


def test_decode_org_event_rejects_type_mismatch_bad_token_and_kind():
    env = lifecycle.make_org_event("created", "org1", "Org One")
    with pytest.raises(EnvelopeError, match="subject/body mismatch"):
        lifecycle.decode_org_event(e.encode(env), "updated")
    env["data"]["org_id"] = "org 1"
    with pytest.raises(SubjectError):
        lifecycle.decode_org_event(e.encode(env), "created")
    with pytest.raises(EnvelopeError):
        lifecycle.decode_org_event(e.encode(env), "status")


def test_make_org_event_validates():
    with pytest.raises(EnvelopeError):
        lifecycle.make_org_event("created", "org1", org_type="pirate")
    with pytest.raises(EnvelopeError):
        lifecycle.make_org_event("moved", "org1")
    with pytest.raises(SubjectError):
        lifecycle.make_org_event("created", "org.1")
