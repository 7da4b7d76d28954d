"""Device side of the command seam: parsing, mapping onto behaviours, at-most-once execution."""

from __future__ import annotations

import pytest

from simulators import behaviours as bh
from simulators.commands import Intent, parse_command

from .conftest import LAT0, LON0


@pytest.mark.parametrize(
    ("command", "kind"),
    [
        ({"command_type": "goto", "params": {"lat": 47.61, "lon": -122.3, "alt": 50}}, "goto"),
        ({"command_type": "reposition", "lat": 47.61, "lon": -122.3}, "goto"),
        ({"command_type": "rtl"}, "rtl"),
        ({"command_type": "land"}, "land"),
        ({"command_type": "hold"}, "hold"),
        ({"command_type": "arm"}, "arm"),
        ({"command_type": "disarm", "force": True}, "disarm"),
        ({"command_type": "set_speed", "speed": 5}, "set_speed"),
        ({"command_type": "set_mode", "mode": "rtl"}, "rtl"),
        ({"command_type": "set_mode", "custom_mode": 9}, "land"),
        ({"command_type": "orbit", "lat": 47.6, "lon": -122.3, "radius": -80}, "orbit"),
        (
            {"command_type": "route", "waypoints": [[47.6, -122.3, 40], {"lat": 47.61, "lon": -122.31}]},
            "route",
        ),
        ({"command_type": "patrol", "box": [47.6, -122.33, 47.61, -122.32], "spacing": 30}, "patrol"),
        ({"command_type": "command_long", "command": 20}, "rtl"),
        ({"command_type": "command_long", "command": "MAV_CMD_NAV_LAND"}, "land"),
        ({"command_type": "command_long", "command": 400, "param1": 1}, "arm"),
        ({"command_type": "command_long", "command": 400, "param1": 0, "param2": 21196}, "disarm"),
        ({"command_type": "command_long", "command": 178, "param2": 7.5}, "set_speed"),
        (
            {
                "command_type": "command_int",
                "command": 192,
                "param5": 476100000,
                "param6": -1223000000,
                "param7": 40,
            },
            "goto",
        ),
        ({"command_type": "command_long", "command": 176, "param2": 6}, "rtl"),
        ({"command_type": "mission_item_int", "x": 476100000, "y": -1223000000, "z": 30}, "goto"),
    ],
)
def test_parse_command_spellings(command, kind):
    assert parse_command(command).kind == kind


def test_parse_details_units_and_flags():
    it = parse_command(
        {
            "command_type": "command_int",
            "command": 192,
            "param5": 476100000,
            "param6": -1223000000,
            "param7": 40,
        }
    )
    assert (it.lat, it.lon, it.alt_rel_m) == (pytest.approx(47.61), pytest.approx(-122.3), 40.0)
    orbit = parse_command(
        {"command_type": "command_long", "command": 34, "param1": -120, "param5": 47.6, "param6": -122.3}
    )
    assert orbit.radius_m == 120 and orbit.clockwise is False
    assert parse_command({"command_type": "command_long", "command": 400, "param1": 0, "param2": 21196}).force
    route = parse_command({"command_type": "route", "waypoints": [[1, 2], [3, 4, 5]], "loop": True})
    assert route.waypoints == ((1.0, 2.0, None), (3.0, 4.0, 5.0)) and route.loop


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ({"command_type": "fly_to_the_moon"}, "unsupported command_type"),
        ({"command_type": "goto", "lat": 47.6}, "lat and lon are required"),
        ({"command_type": "goto", "lat": 95, "lon": 0}, "outside -90..90"),
        ({"command_type": "goto", "lat": "north", "lon": 0}, "finite number"),
        ({"command_type": "set_mode", "mode": "ACRO"}, "not supported"),
        ({"command_type": "set_mode", "mode": "WARP"}, "unknown mode"),
        ({"command_type": "set_speed"}, "needs speed"),
        ({"command_type": "route", "waypoints": []}, "non-empty list"),
        ({"command_type": "patrol", "box": [2, 2, 1, 1]}, "south < north"),
        ({"command_type": "command_long", "command": 9999}, "unsupported MAVLink command"),
    ],
)
def test_parse_errors_say_what_is_wrong(command, message):
    with pytest.raises(ValueError, match=message):
        parse_command(command)


def test_commands_map_onto_behaviours(rig):
    r = rig("multirotor", alt_agl_m=40.0)
    d = r.dev
    cases = [
        ({"command_type": "goto", "lat": LAT0 + 0.001, "lon": LON0, "alt": 50}, bh.Goto),
        ({"command_type": "orbit", "radius": 60}, bh.Orbit),
        ({"command_type": "route", "waypoints": [[LAT0, LON0 + 0.001, 30]]}, bh.Route),
        ({"command_type": "patrol", "box": [LAT0, LON0, LAT0 + 0.002, LON0 + 0.002]}, bh.Patrol),
        ({"command_type": "hold"}, bh.Hold),
        ({"command_type": "rtl"}, bh.ReturnToLaunch),
        ({"command_type": "land"}, bh.Land),
    ]
    for n, (cmd, cls) in enumerate(cases):
        res = d.handle_command({"command_id": f"c{n}", **cmd})
        assert res.accepted, res.reason
        assert isinstance(d.behaviour, cls)
    goto = d.handle_command(
        {"command_id": "alt", "command_type": "goto", "lat": LAT0, "lon": LON0, "alt": 50}
    )
    assert goto.accepted and d.behaviour.target.alt_msl_m == d.home.alt_msl_m + 50


def test_a_command_id_is_executed_at_most_once(rig):
    d = rig("multirotor", alt_agl_m=40.0).dev
    first = {"command_id": "cmd-1", "command_type": "goto", "lat": LAT0 + 0.001, "lon": LON0}
    assert d.handle_command(first).accepted
    d.handle_command({"command_id": "cmd-2", "command_type": "hold"})
    again = d.handle_command(first)  # redelivered
    assert again.duplicate and again.accepted
    assert isinstance(d.behaviour, bh.Hold)  # not re-executed
    rejected = {"command_id": "cmd-3", "command_type": "set_speed", "speed": 1000}
    assert not d.handle_command(rejected).accepted
    dup = d.handle_command(rejected)
    assert dup.duplicate and not dup.accepted and "speed must be" in dup.reason


def test_refusals(rig):
    ground = rig("multirotor").dev  # on the ground, disarmed
    res = ground.handle_command({"command_id": "g", "command_type": "goto", "lat": LAT0, "lon": LON0})
    assert not res.accepted and "not armed" in res.reason
    flying = rig("multirotor", alt_agl_m=30.0).dev
    assert not flying.handle_command({"command_id": "d", "command_type": "disarm"}).accepted
    assert flying.armed
    assert flying.handle_command({"command_id": "f", "command_type": "disarm", "force": True}).accepted
    assert not flying.armed
    fw = rig("fixed_wing", alt_agl_m=100.0).dev
    slow = fw.handle_command({"command_id": "s", "command_type": "set_speed", "speed": 5})
    assert not slow.accepted and "below the minimum" in slow.reason
    assert fw.handle_command({"command_id": "s2", "command_type": "set_speed", "speed": 25}).accepted
    assert fw.cruise_speed_mps == 25


def test_motor_failure_refuses_everything_but_land(rig):
    d = rig("multirotor", alt_agl_m=30.0).dev
    d.motor_failed = True
    assert not d.handle_command({"command_id": "a", "command_type": "rtl"}).accepted
    assert not d.handle_command({"command_id": "b", "command_type": "arm"}).accepted
    assert d.handle_command({"command_id": "c", "command_type": "land"}).accepted


def test_intent_defaults():
    it = Intent("orbit")
    assert it.radius_m > 0 and it.clockwise


def test_every_lab_action_is_understood_by_the_device():
    from overwatch_lab.protocol.commands import Action

    params = {
        Action.GOTO: {"lat": 47.61, "lon": -122.3, "alt_m": 30.0, "speed_mps": 5.0},
        Action.RTL: {},
        Action.LAND: {"lat": 47.61, "lon": -122.3},
        Action.HOLD: {"alt_m": 20.0},
        Action.SET_MODE: {"mode": "LOITER"},
        Action.ARM: {"force": False},
        Action.DISARM: {"force": True},
        Action.SET_SPEED: {"speed_mps": 4.0},
        Action.FOLLOW_ROUTE: {
            "waypoints": [[47.6, -122.3, 30.0], [47.61, -122.31]],
            "loop": True,
            "speed_mps": 6.0,
        },
        Action.ORBIT: {"lat": 47.6, "lon": -122.3, "radius_m": 80.0, "clockwise": False, "alt_m": 50.0},
    }
    assert set(params) == set(Action)
    expected_kind = {Action.FOLLOW_ROUTE: "route", Action.SET_MODE: "hold"}
    for action, p in params.items():
        it = parse_command({"command_id": f"c-{action}", "command_type": str(action), "params": p})
        assert it.kind == expected_kind.get(action, str(action))
    goto = parse_command({"command_type": "goto", "params": params[Action.GOTO]})
    assert (goto.alt_rel_m, goto.speed_mps) == (30.0, 5.0)
    orbit = parse_command({"command_type": "orbit", "params": params[Action.ORBIT]})
    assert (orbit.radius_m, orbit.clockwise, orbit.alt_rel_m) == (80.0, False, 50.0)
