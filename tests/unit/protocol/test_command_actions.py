"""Command actions (protocol/command_actions.py): parameters validated, mapped onto relay messages."""

from __future__ import annotations

import json

import pytest

from overwatch_lab.errors import EnvelopeError
from overwatch_lab.protocol import command_actions as ca
from overwatch_lab.protocol import commands as c
from overwatch_lab.protocol.command_actions import Action
from tests.unit.protocol.command_builders import decode

# ------------------------------------------------------------------ actions


@pytest.mark.parametrize(
    ("action", "params", "first"),
    [
        ("rtl", {}, ("command_long", 20)),
        ("land", {"lat": 1.0, "lon": 2.0}, ("command_long", 21)),
        ("hold", {}, ("command_long", 17)),
        ("arm", {}, ("command_long", 400)),
        ("disarm", {"force": True}, ("command_long", 400)),
        ("set_speed", {"speed_mps": 7.5}, ("command_long", 178)),
        ("set_mode", {"mode": "loiter"}, ("set_mode", None)),
        (
            "follow_route",
            {"waypoints": [[1, 2], {"lat": 3, "lon": 4, "alt_m": 30}]},
            ("mission_clear_all", None),
        ),
    ],
)
def test_every_action_maps_onto_relay_messages(action, params, first):
    p = ca.validate_params(Action(action), params)
    msgs = ca.relay_messages(Action(action), p)
    assert (msgs[0]["type"], msgs[0].get("command")) == first
    for m in msgs:
        json.dumps(m, allow_nan=False)
    if action == "disarm":
        assert msgs[0]["param1"] == 0.0 and msgs[0]["param2"] == ca.FORCE_MAGIC
    if action == "set_mode":
        assert p["mode"] == "LOITER" and msgs[0]["custom_mode"] == 5 and msgs[0]["base_mode"] == 1
    if action == "follow_route":
        items = [m for m in msgs if m["type"] == "mission_item_int"]
        assert [m["seq"] for m in items] == [0, 1] and items[1]["x"] == 30000000 and items[1]["z"] == 30.0
        assert msgs[1] == {"type": "mission_count", "count": 2, "mission_type": 0}
        assert msgs[-1]["command"] == 300


@pytest.mark.parametrize(
    ("action", "params", "reason"),
    [
        ("rtl", {"lat": 1}, "does not take lat"),
        ("land", {"lat": 1}, "lat and lon go together"),
        ("set_mode", {"mode": "WARP"}, "unknown mode"),
        ("set_mode", {"custom_mode": 99}, "unknown custom_mode"),
        ("set_speed", {}, "needs speed_mps"),
        ("set_speed", {"speed_mps": 0}, "outside"),
        ("follow_route", {"waypoints": []}, "1..500"),
        ("follow_route", {"waypoints": [[1, 200]]}, "waypoints[0]"),
        ("orbit", {"radius_m": 0.5}, "outside"),
        ("arm", {"force": "yes"}, "true or false"),
    ],
)
def test_invalid_params(action, params, reason):
    with pytest.raises(EnvelopeError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        ca.validate_params(Action(action), params)


def test_flat_overwatch_relay_commands_are_understood():
    rtl = decode({"command_id": "r1", "command_type": "command_long", "target_system": 3, "command": 20})
    assert rtl.action is Action.RTL and rtl.target_system == 3
    assert rtl.mavlink == ({"type": "command_long", "command": 20},)
    wp = decode({"command_id": "w1", "command_type": "command_int", "command": 192,
                 "x": 329000000, "y": -968000000, "z": 50, "param1": 6})  # fmt: skip
    assert wp.action is Action.GOTO and wp.params == {
        "lat": 32.9,
        "lon": -96.8,
        "alt_m": 50.0,
        "speed_mps": 6.0,
    }
    mode = decode({"command_id": "m1", "command_type": "set_mode", "custom_mode": 6, "base_mode": 1})
    assert mode.action is Action.SET_MODE and mode.params == {"mode": "RTL"}
    item = decode(
        {"command_id": "i1", "command_type": "mission_item_int", "x": 10000000, "y": 20000000, "z": 5}
    )
    assert item.action is Action.GOTO and item.params["lat"] == 1.0
    for bad, reason in (
        ({"command_type": "manual_control"}, "unsupported command_type"),
        ({"command_type": "command_long", "command": 999}, "unsupported MAVLink command"),
        ({"command_type": "command_long", "command": 16}, "position is required"),
        ({"command_type": "command_long", "command": 20, "params": {}}, "flat"),
    ):
        out = decode({"command_id": "x"} | bad)
        assert isinstance(out, c.RejectedCommand) and reason in out.reason, out
