"""The device side of commands: the lab's vocabulary parsed, mapped onto behaviours, at most once."""

from __future__ import annotations

import pytest

from overwatch_lab.errors import EnvelopeError
from overwatch_lab.protocol.command_actions import Action, validate_params
from simulators import behaviours as bh
from simulators.devices.command_handler import DEFAULT_ORBIT_RADIUS_M, MODE_ACTIONS, parse_command
from tests.unit.simulators.rig import LAT0, LON0

PARAMS = {
    Action.GOTO: {"lat": 47.61, "lon": -122.3, "alt_m": 30.0, "speed_mps": 5.0},
    Action.RTL: {},
    Action.LAND: {"lat": 47.61, "lon": -122.3},
    Action.HOLD: {"alt_m": 20.0},
    Action.SET_MODE: {"mode": "loiter"},
    Action.ARM: {"force": False},
    Action.DISARM: {"force": True},
    Action.SET_SPEED: {"speed_mps": 4.0},
    Action.FOLLOW_ROUTE: {"waypoints": [[47.6, -122.3, 30.0], {"lat": 47.61, "lon": -122.31}], "loop": True},
    Action.ORBIT: {"lat": 47.6, "lon": -122.3, "radius_m": 80.0, "clockwise": False, "alt_m": 50.0},
}


def test_every_lab_action_parses_exactly_as_the_lab_validates_it():
    assert set(PARAMS) == set(Action)
    for action, params in PARAMS.items():
        expected = (action, validate_params(action, params))
        assert parse_command({"command_id": "c", "command_type": str(action), "params": params}) == expected
        assert parse_command({"action": str(action), "params": params}) == expected


@pytest.mark.parametrize(
    ("command", "action", "params"),
    [
        ({"command_type": "command_long", "command": 20}, Action.RTL, {}),
        ({"command_type": "command_long", "command": 21, "param5": 47.6, "param6": -122.3}, Action.LAND,
         {"lat": 47.6, "lon": -122.3}),
        ({"command_type": "command_long", "command": 400, "param1": 1}, Action.ARM, {}),
        ({"command_type": "command_long", "command": 400, "param1": 0, "param2": 21196}, Action.DISARM,
         {"force": True}),
        ({"command_type": "command_long", "command": 178, "param2": 7.5}, Action.SET_SPEED, {"speed_mps": 7.5}),
        ({"command_type": "command_int", "command": 192, "x": 476100000, "y": -1223000000, "z": 40},
         Action.GOTO, {"lat": 47.61, "lon": -122.3, "alt_m": 40.0}),
        ({"command_type": "command_long", "command": 34, "param1": -120, "param5": 47.6, "param6": -122.3},
         Action.ORBIT, {"lat": 47.6, "lon": -122.3, "radius_m": 120.0, "clockwise": False}),
        ({"command_type": "command_long", "command": 176, "param2": 6}, Action.SET_MODE, {"mode": "RTL"}),
        ({"command_type": "set_mode", "custom_mode": 9}, Action.SET_MODE, {"mode": "LAND"}),
        ({"command_type": "mission_item_int", "x": 476100000, "y": -1223000000, "z": 30}, Action.GOTO,
         {"lat": 47.61, "lon": -122.3, "alt_m": 30.0}),
    ],
)  # fmt: skip
def test_the_relay_spelling_is_read_with_the_labs_mapping(command, action, params):
    got_action, got = parse_command(command)
    assert got_action is action
    assert got == pytest.approx(params)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("goto", "must be an object"),
        ({"params": {}}, "needs an action"),
        ({"command_type": "fly_to_the_moon"}, "unknown action 'fly_to_the_moon'"),
        ({"command_type": "route", "params": {"waypoints": [[1, 2]]}}, "unknown action 'route'"),
        ({"command_type": "patrol", "params": {"box": [1, 2, 3, 4]}}, "unknown action 'patrol'"),
        ({"command_type": "goto", "params": {"lat": 47.6}}, "lat and lon go together|needs lon"),
        ({"command_type": "goto", "params": {"lat": 95, "lon": 0}}, "outside -90..90"),
        ({"command_type": "goto", "params": {"lat": "north", "lon": 0}}, "finite number"),
        ({"command_type": "goto", "params": {"lat": 1, "lon": 2, "alt": 50}}, "does not take alt"),
        ({"command_type": "goto", "lat": 47.6, "lon": -122.3}, "takes its params in params"),
        ({"command_type": "set_mode", "params": {"mode": "WARP"}}, "unknown mode"),
        ({"command_type": "set_speed", "params": {}}, "set_speed needs speed_mps"),
        ({"command_type": "follow_route", "params": {"waypoints": []}}, "1..500 points"),
        ({"command_type": "command_long", "command": 9999}, "unsupported MAVLink command"),
        ({"command_type": "command_long", "command": 20, "params": {}}, "flat"),
    ],
)
def test_parse_errors_say_what_is_wrong(command, message):
    with pytest.raises(EnvelopeError, match=message):
        parse_command(command)


def test_commands_map_onto_behaviours(rig):
    d = rig("multirotor", alt_agl_m=40.0).dev
    cases = [
        ("goto", {"lat": LAT0 + 0.001, "lon": LON0, "alt_m": 50}, bh.Goto),
        ("orbit", {"radius_m": 60}, bh.Orbit),
        ("follow_route", {"waypoints": [[LAT0, LON0 + 0.001, 30]]}, bh.Route),
        ("hold", {}, bh.Hold),
        ("set_mode", {"mode": "CIRCLE"}, bh.Orbit),
        ("rtl", {}, bh.ReturnToLaunch),
        ("land", {}, bh.Land),
    ]
    for n, (action, params, cls) in enumerate(cases):
        res = d.handle_command({"command_id": f"c{n}", "command_type": action, "params": params})
        assert res.accepted, res.reason
        assert isinstance(d.behaviour, cls) and res.behaviour == d.behaviour.name
    goto = d.handle_command(
        {"command_id": "alt", "command_type": "goto", "params": {"lat": LAT0, "lon": LON0, "alt_m": 50}}
    )
    assert goto.accepted and d.behaviour.target.alt_msl_m == d.home.alt_msl_m + 50
    msl = d.handle_command(
        {"command_id": "msl", "command_type": "goto", "params": {"lat": LAT0, "lon": LON0, "alt_msl_m": 321}}
    )
    assert msl.accepted and d.behaviour.target.alt_msl_m == 321.0


def test_an_orbit_without_a_radius_or_centre_circles_here_at_the_default_radius(rig):
    d = rig("multirotor", alt_agl_m=40.0).dev
    assert d.handle_command({"command_id": "o", "command_type": "orbit"}).accepted
    assert d.behaviour.radius_m == DEFAULT_ORBIT_RADIUS_M and d.behaviour.clockwise
    assert (d.behaviour.center.lat, d.behaviour.center.lon) == (d.lat, d.lon)


def test_a_command_id_is_executed_at_most_once(rig):
    d = rig("multirotor", alt_agl_m=40.0).dev
    first = {"command_id": "cmd-1", "command_type": "goto", "params": {"lat": LAT0 + 0.001, "lon": LON0}}
    assert d.handle_command(first).accepted
    d.handle_command({"command_id": "cmd-2", "command_type": "hold"})
    again = d.handle_command(first)  # redelivered
    assert again.duplicate and again.accepted
    assert isinstance(d.behaviour, bh.Hold)  # not re-executed
    rejected = {"command_id": "cmd-3", "command_type": "set_speed", "params": {"speed_mps": 100}}
    assert not d.handle_command(rejected).accepted
    dup = d.handle_command(rejected)
    assert dup.duplicate and not dup.accepted and "speed must be" in dup.reason
    assert list(d.executed) == ["cmd-1", "cmd-2", "cmd-3"]


def test_refusals(rig):
    ground = rig("multirotor").dev  # on the ground, disarmed
    res = ground.handle_command(
        {"command_id": "g", "command_type": "goto", "params": {"lat": LAT0, "lon": LON0}}
    )
    assert not res.accepted and "not armed: arm before goto" in res.reason
    flying = rig("multirotor", alt_agl_m=30.0).dev
    assert not flying.handle_command({"command_id": "d", "command_type": "disarm"}).accepted
    assert flying.armed
    force = {"command_id": "f", "command_type": "disarm", "params": {"force": True}}
    assert flying.handle_command(force).accepted and not flying.armed
    fw = rig("fixed_wing", alt_agl_m=100.0).dev
    slow = fw.handle_command({"command_id": "s", "command_type": "set_speed", "params": {"speed_mps": 5}})
    assert not slow.accepted and "below the minimum" in slow.reason
    assert fw.handle_command(
        {"command_id": "s2", "command_type": "set_speed", "params": {"speed_mps": 25}}
    ).accepted
    assert fw.cruise_speed_mps == 25
    acro = fw.handle_command({"command_id": "m", "command_type": "set_mode", "params": {"mode": "ACRO"}})
    assert not acro.accepted and "not supported by the simulator" in acro.reason
    mast = rig("sensor").dev
    hold = mast.handle_command({"command_id": "h", "command_type": "set_mode", "params": {"mode": "LOITER"}})
    assert not hold.accepted and "sensor cannot move (hold rejected)" in hold.reason


def test_motor_failure_refuses_everything_but_land(rig):
    d = rig("multirotor", alt_agl_m=30.0).dev
    d.motor_failed = True
    assert not d.handle_command({"command_id": "a", "command_type": "rtl"}).accepted
    assert not d.handle_command({"command_id": "b", "command_type": "arm"}).accepted
    assert d.handle_command({"command_id": "c", "command_type": "land"}).accepted


def test_every_mode_the_simulator_flies_is_an_arducopter_mode_mapped_to_a_lab_action():
    from overwatch_lab.protocol.mavlink import MODE_NUMBERS

    assert set(MODE_ACTIONS) <= set(MODE_NUMBERS)
    assert set(MODE_ACTIONS.values()) <= set(Action)
