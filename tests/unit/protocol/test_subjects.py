"""Subjects, the token rule and subject parsers (overwatch_lab/protocol/subjects.py)."""

from __future__ import annotations

import pytest

from overwatch_lab.errors import ProtocolError, SubjectError
from overwatch_lab.protocol import subjects as s

BAD_TOKENS = [
    pytest.param("a.b", id="dot"),
    pytest.param("*", id="star"),
    pytest.param(">", id="gt"),
    pytest.param("a*", id="star-suffix"),
    pytest.param("a b", id="space"),
    pytest.param("a\rb", id="cr"),
    pytest.param("a\nb", id="lf"),
    pytest.param("x" * 129, id="129-chars"),
    pytest.param("", id="empty"),
    pytest.param("é", id="non-ascii"),
    pytest.param(None, id="none"),
    pytest.param(5, id="int"),
]


@pytest.mark.parametrize("token", ["a", "A-z_09", "x" * 128, "gc35-e4b", "org-galaxy"])
def test_check_token_accepts_valid_tokens(token):
    assert s.check_token(token) == token


@pytest.mark.parametrize("token", BAD_TOKENS)
def test_check_token_rejects(token):
    with pytest.raises(SubjectError, match="entity_id"):
        s.check_token(token, "entity_id")


def test_subject_error_is_a_protocol_error():
    assert issubclass(SubjectError, ProtocolError)


def test_check_token_shortens_long_values_in_the_message():
    with pytest.raises(SubjectError) as info:
        s.check_token("y" * 500)
    assert len(str(info.value)) < 250


def test_check_token_rejects_trailing_newline():
    with pytest.raises(SubjectError):
        s.check_token("abc\n")


def test_telemetry_subject_builds_four_tokens():
    assert s.telemetry_subject("org-galaxy", "gc35-e4b") == "constellation.telemetry.org-galaxy.gc35-e4b"


@pytest.mark.parametrize("token", BAD_TOKENS)
def test_telemetry_subject_rejects_bad_tokens(token):
    with pytest.raises(SubjectError):
        s.telemetry_subject("org", token)
    with pytest.raises(SubjectError):
        s.telemetry_subject(token, "ent")


def test_parse_telemetry_subject_round_trips():
    parsed = s.parse_telemetry_subject(s.telemetry_subject("o1", "e1"))
    assert parsed == s.TelemetrySubject("o1", "e1")


@pytest.mark.parametrize(
    "subject",
    [
        "constellation.telemetry.org.gc35.e4b",  # 5 tokens: the pre-v1 form, now rejected
        "constellation.telemetry.org.mavlink.gc35",
        "constellation.telemetry.org",
        "constellation.telemetry.org.*",
        "constellation.telemetry.org.>",
        "constellation.telemetry.*.ent",
        "constellation.telemetry..ent",
        "constellation.events.org.ent",
        "overwatch.telemetry.org.ent",
        "constellation.telemetry.org.e nt",
    ],
)
def test_parse_telemetry_subject_rejects(subject):
    with pytest.raises(SubjectError):
        s.parse_telemetry_subject(subject)


def test_parse_telemetry_subject_names_the_token_count():
    with pytest.raises(SubjectError, match="got 5"):
        s.parse_telemetry_subject("constellation.telemetry.a.b.c")


@pytest.mark.parametrize("kind", s.ENTITY_EVENT_KINDS)
def test_entity_subject_round_trips(kind):
    subject = s.entity_subject("org1", kind)
    assert subject == f"constellation.entities.org1.{kind}"
    assert s.parse_entity_subject(subject) == s.EntitySubject("org1", kind)


@pytest.mark.parametrize(
    "subject",
    [
        "constellation.entities.org1.telemetry",  # defined upstream but unused: not an event kind
        "constellation.entities.org1.created.x",
        "constellation.entities.org1",
        "constellation.entities.o.rg.created",
        "constellation.entities.*.created",
        "constellation.organizations.org1.created",
    ],
)
def test_parse_entity_subject_rejects(subject):
    with pytest.raises(SubjectError):
        s.parse_entity_subject(subject)


def test_entity_subject_rejects_unknown_kind_and_bad_org():
    with pytest.raises(SubjectError, match="kind"):
        s.entity_subject("org1", "status_changed")
    with pytest.raises(SubjectError):
        s.entity_subject("org.1", "created")


@pytest.mark.parametrize("kind", s.ORG_EVENT_KINDS)
def test_organization_subject_round_trips(kind):
    subject = s.organization_subject(kind)
    assert subject == f"constellation.organizations.{kind}"
    assert s.parse_organization_subject(subject) == kind


@pytest.mark.parametrize(
    "subject",
    [
        "constellation.organizations.status",
        "constellation.organizations",
        "constellation.organizations.created.x",
    ],
)
def test_parse_organization_subject_rejects(subject):
    with pytest.raises(SubjectError):
        s.parse_organization_subject(subject)


def test_organization_subject_rejects_unknown_kind():
    with pytest.raises(SubjectError):
        s.organization_subject("renamed")


def test_detection_subject_round_trips():
    subject = s.detection_subject("o", "e", "t-1")
    assert subject == "constellation.events.isr.o.e.detection.t-1"
    assert s.parse_event_subject(subject) == s.EventSubject("o", "e", "detection", "t-1")


def test_device_event_subject_round_trips():
    subject = s.device_event_subject("o", "e", "bootsequence")
    assert subject == "constellation.events.isr.o.e.bootsequence"
    parsed = s.parse_event_subject(subject)
    assert parsed == s.EventSubject("o", "e", "bootsequence")
    assert parsed.track_id is None


@pytest.mark.parametrize(
    ("subject", "match"),
    [
        ("constellation.events.isr.o.e.detection", "7 tokens"),
        ("constellation.events.isr.o.e.detection.t.x", "7 tokens"),
        ("constellation.events.isr.o.e.shutdown.x", "6 tokens"),
        ("constellation.events.isr.o.e", "event subject"),
        ("constellation.events.other.o.e.shutdown", "event subject"),
        ("constellation.events.isr.o.e.detection.*", "track_id"),
        ("constellation.events.isr.o.*.shutdown", "entity_id"),
        ("constellation.events.isr.>.e.shutdown", "org_id"),
    ],
)
def test_parse_event_subject_rejects(subject, match):
    with pytest.raises(SubjectError, match=match):
        s.parse_event_subject(subject)


def test_detection_and_device_subjects_reject_bad_tokens():
    with pytest.raises(SubjectError):
        s.detection_subject("o", "e", "t.1")
    with pytest.raises(SubjectError):
        s.device_event_subject("o", "e", "boot>")


def test_command_subjects():
    assert s.command_subject("o", "e") == "constellation.commands.o.e"
    assert s.command_subject("o") == "constellation.commands.o.broadcast"
    with pytest.raises(SubjectError):
        s.command_subject("o", "e*")


@pytest.mark.parametrize(
    ("worker", "token"),
    [
        ("telemetry-worker", "telemetry-worker"),
        ("Telemetry Worker", "telemetry-worker"),
        ("entity.processor", "entity-processor"),
        ("a>b*c", "a-b-c"),
        ("", "unknown"),
    ],
)
def test_quarantine_subject_lowercases_and_replaces(worker, token):
    assert s.quarantine_subject(worker) == f"constellation.quarantine.{token}"


def test_stream_and_consumer_names_match_the_wire_contract():
    assert s.STREAM_TELEMETRY == "CONSTELLATION_TELEMETRY"
    assert s.KV_GLOBAL_STATE == "CONSTELLATION_GLOBAL_STATE"
    assert s.TELEMETRY_ALL == "constellation.telemetry.>"
    assert (s.CONSUMER_ENTITY, s.CONSUMER_EVENT, s.CONSUMER_TELEMETRY, s.CONSUMER_COMMAND) == (
        "entity-processor",
        "event-processor",
        "telemetry-processor",
        "command-processor",
    )
