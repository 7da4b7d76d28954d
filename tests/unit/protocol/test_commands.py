"""The command wire contract (protocol/commands.py): subjects, the lifecycle, command envelopes
and acks. The actions and their MAVLink relay mapping are in test_command_actions.py."""

from __future__ import annotations

import json

import pytest

from overwatch_lab.errors import EnvelopeError, SubjectError
from overwatch_lab.protocol import command_actions as ca
from overwatch_lab.protocol import commands as c
from overwatch_lab.protocol.command_actions import Action
from overwatch_lab.protocol.commands import CommandStatus as S
from overwatch_lab.protocol.envelopes import format_timestamp
from tests.unit.protocol.command_builders import NOW, decode


def goto(**extra) -> dict:
    return {"command_id": "c1", "org_id": "org-a", "entity_id": "uav-1", "action": "goto",
            "params": {"lat": 32.9, "lon": -96.8, "alt_m": 40}} | extra  # fmt: skip


# ------------------------------------------------------------------ subjects


def test_subjects_and_keys():
    assert c.delivery_subject("o", "e") == "constellation.devices.o.e.commands"
    assert c.ack_subject("o", "e") == "constellation.command_acks.o.e"
    assert c.parse_command_subject("constellation.commands.o.e") == ("o", "e")
    assert c.parse_command_subject("constellation.commands.o.broadcast") == ("o", None)
    assert c.parse_ack_subject("constellation.command_acks.o.e") == ("o", "e")
    assert c.state_key("c1", "e") == "c1.e"
    for bad in ("constellation.commands.o", "constellation.commands.o.e.x", "constellation.telemetry.o.e"):
        with pytest.raises(SubjectError):
            c.parse_command_subject(bad)
    with pytest.raises(SubjectError):
        c.delivery_subject("o", "a.b")
    with pytest.raises(SubjectError):
        c.parse_ack_subject("constellation.command_acks.o.*")


# ------------------------------------------------------------------ lifecycle


def test_lifecycle_only_moves_forward():
    order = [S.QUEUED, S.SENT, S.RECEIVED, S.ACCEPTED, S.EXECUTING, S.SUCCEEDED]
    for a, b in zip(order, order[1:], strict=False):
        assert c.can_transition(a, b)
        assert not c.can_transition(b, a)
    assert c.can_transition(S.SENT, S.SUCCEEDED)  # a lost RECEIVED/ACCEPTED does not block the result
    assert c.can_transition(S.RECEIVED, S.REJECTED) and not c.can_transition(S.ACCEPTED, S.REJECTED)
    assert c.can_transition(S.SENT, S.EXPIRED) and not c.can_transition(S.RECEIVED, S.EXPIRED)
    for terminal in c.TERMINAL:
        for new in S:
            assert not c.can_transition(terminal, new), (terminal, new)
    for new in S:
        assert not c.can_transition(new, S.QUEUED)
    assert c.LAB_CANCELLABLE == {S.QUEUED, S.SENT}


def test_reached_and_aggregate():
    assert c.reached(S.SUCCEEDED, S.ACCEPTED) and c.reached(S.EXECUTING, S.EXECUTING)
    assert not c.reached(S.SENT, S.ACCEPTED)
    assert not c.reached(S.REJECTED, S.ACCEPTED) and not c.reached(S.SUCCEEDED, S.FAILED)
    assert c.aggregate_status([]) is None
    assert c.aggregate_status([S.SUCCEEDED, S.SENT, S.EXECUTING]) is S.SENT
    assert c.aggregate_status([S.SUCCEEDED, S.SUCCEEDED]) is S.SUCCEEDED
    assert c.aggregate_status([S.SUCCEEDED, S.EXPIRED, S.FAILED]) is S.FAILED
    assert c.status_of("succeeded") is S.SUCCEEDED
    with pytest.raises(EnvelopeError, match="unknown command status"):
        c.status_of("DONE")


# ------------------------------------------------------------------ decoding


def test_valid_goto_is_normalised_with_relay_fields():
    cmd = decode(goto(ttl_s=30, issued_at=format_timestamp(NOW - 1), source="ops"))
    assert isinstance(cmd, c.Command)
    assert (cmd.command_id, cmd.org_id, cmd.entity_id, cmd.action) == ("c1", "org-a", "uav-1", Action.GOTO)
    assert cmd.params == {"lat": 32.9, "lon": -96.8, "alt_m": 40.0}
    assert cmd.expires_ts == NOW - 1 + 30
    assert cmd.command_type == "command_int" and (cmd.target_system, cmd.target_component) == (1, 1)
    (msg,) = cmd.mavlink
    assert msg["command"] == 192 and msg["x"] == 329000000 and msg["y"] == -968000000 and msg["z"] == 40.0
    assert msg["frame"] == ca.MAV_FRAME_GLOBAL_RELATIVE_ALT_INT
    env = cmd.envelope()
    assert env["action"] == "goto" and env["source"] == "ops" and env["mavlink"][0]["command"] == 192
    json.dumps(env)  # JSON-ready


def test_defaults_issued_at_now_and_fallback_id():
    body = goto()
    del body["command_id"]
    cmd = decode(body)
    assert cmd.command_id == "cmd-7" and cmd.issued_ts == NOW and cmd.ttl_s == 60.0


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"action": "teleport"}, "unknown action 'teleport'"),
        ({"params": {"lat": 95, "lon": 0}}, "'lat' = 95 is outside"),
        ({"params": {"lat": 1}}, "goto needs lon"),
        ({"params": {"lat": 1, "lon": 2, "altitude": 3}}, "does not take altitude"),
        ({"params": {"lat": 1, "lon": 2, "alt_m": 3, "alt_msl_m": 4}}, "not both"),
        ({"params": {"lat": 1, "lon": 2, "speed_mps": True}}, "finite number"),
        ({"ttl_s": 0}, "ttl_s must be"),
        ({"ttl_s": 10_000}, "ttl_s must be"),
        ({"issued_at": format_timestamp(NOW - 120), "ttl_s": 60}, "expired on arrival"),
        ({"entity_id": "uav-2"}, "subject/body mismatch"),
        ({"org_id": "org-b"}, "subject/body mismatch"),
        ({"surprise": 1}, "unknown field"),
        ({"command_id": "has space"}, "token rule"),
        ({"schema_version": "2.0.0"}, "schema_version"),
        ({"command": 16}, "not both"),
        ({"target_system": 300}, "target_system"),
    ],
)
def test_invalid_commands_are_rejected_with_a_reason(change, reason):
    out = decode(goto(**change))
    assert isinstance(out, c.RejectedCommand)
    assert reason in out.reason
    assert out.org_id == "org-a" and out.entity_id == "uav-1"
    assert out.command_id == ("c1" if "command_id" not in change else "cmd-7")


def test_oversize_is_rejected_and_non_objects_raise():
    big = goto(metadata={"blob": "x" * 5000})
    out = decode(big)
    assert isinstance(out, c.RejectedCommand) and out.reason.startswith("oversize") and out.command_id == "c1"
    for body in (b"not json", b"[1, 2]", b'{"a": NaN}', b'{"a": 1} {"b": 2}'):
        with pytest.raises(EnvelopeError):
            decode(body)


def test_broadcast_and_cancel():
    body = goto()
    del body["entity_id"]
    cmd = decode(body, ("org-a", None))
    assert cmd.broadcast and cmd.entity_id is None
    assert cmd.for_entity("uav-9").entity_id == "uav-9" and not cmd.for_entity("uav-9").broadcast
    out = decode(goto(), ("org-a", None))
    assert isinstance(out, c.RejectedCommand) and "broadcast carries no entity_id" in out.reason
    cancel = decode(c.make_cancel("org-a", "uav-1", "c1", source="ops"))
    assert cancel == c.CancelRequest("c1", "org-a", "uav-1", "ops")


def test_make_command_round_trips():
    env = c.make_command(
        "org-a", "uav-1", "orbit", {"radius_m": 80, "clockwise": False}, ttl_s=5, issued_at=NOW
    )
    assert env["command_id"].startswith("cmd-")
    cmd = decode(env)
    assert cmd.action is Action.ORBIT and cmd.ttl_s == 5.0
    msg = cmd.mavlink[0]
    assert (msg["type"], msg["command"], msg["param1"]) == ("command_int", 34, -80.0)


# ------------------------------------------------------------------ acks


def test_ack_round_trip_and_validation():
    env = c.make_ack("org-a", "uav-1", "c1", S.FAILED, "motor failure", ts=NOW)
    ack = c.decode_ack(json.dumps(env), ("org-a", "uav-1"))
    assert (ack.command_id, ack.status, ack.reason, ack.ts) == ("c1", S.FAILED, "motor failure", NOW)
    assert c.ack_msg_id("c1", "uav-1", S.FAILED) == "c1.uav-1.FAILED"
    cases = [
        (env, ("org-a", "uav-2"), "mismatch"),
        (env | {"status": "QUEUED"}, ("org-a", "uav-1"), "cannot report"),
        (env | {"status": "REJECTED", "reason": ""}, ("org-a", "uav-1"), "needs a reason"),
        (env | {"extra": 1}, ("org-a", "uav-1"), "unknown field"),
        ({k: v for k, v in env.items() if k != "timestamp"}, ("org-a", "uav-1"), "missing"),
    ]
    for body, subject, reason in cases:
        with pytest.raises(EnvelopeError, match=reason):
            c.decode_ack(json.dumps(body), subject)


def test_delivery_adds_expiry_and_attempt():
    cmd = decode(goto())
    msg = c.make_delivery(cmd.envelope(), expires_ts=cmd.expires_ts, attempt=3)
    assert msg["attempt"] == 3 and msg["expires_at"] == format_timestamp(NOW + 60)
    assert msg["command_id"] == "c1"
