"""Scenario loading (YAML, TOML, Python, named) and validation errors that name the field."""

from __future__ import annotations

import copy

import pandas as pd
import pytest

from overwatch_lab.errors import ScenarioError
from simulators.catalog import load_scenario
from simulators.dry_run import telemetry_hash
from simulators.fleets import NAMED
from simulators.scenario import Scenario

YAML = """
name: harbour-watch
seed: 5
start: 2026-03-01T08:00:00Z
duration_s: 120
area: {box: [47.60, -122.35, 47.62, -122.32], ground_alt_m: 20}
orgs:
  - {org_id: harbour, name: Harbour Police, org_type: civilian}
routes:
  pier: {waypoints: [[47.605, -122.34, 30], [47.61, -122.33]], loop: true}
fleets:
  - name: quad
    org: harbour
    kind: multirotor
    count: 3
    formation: line
    spacing_m: 15
    battery_pct: [80, 95]
    rates: {ATTITUDE: 5}
    device_rates: {quad-001: {GPS_RAW_INT: 2}}
    behaviour: {type: route, route: pier, stagger: true}
  - name: boat
    org: harbour
    kind: usv
    count: 1
    at: [47.601, -122.34]
    behaviour: {type: patrol, spacing_m: 200}
timeline:
  - {at_s: 30, fault: link_loss, duration_s: 10, targets: [quad-001]}
  - {at_s: 60, command: rtl, targets: [quad]}
"""

TOML = """
name = "harbour-watch"
seed = 5
start = 2026-03-01T08:00:00Z
duration_s = 120

[area]
box = [47.60, -122.35, 47.62, -122.32]
ground_alt_m = 20

[[orgs]]
org_id = "harbour"
name = "Harbour Police"
org_type = "civilian"

[routes.pier]
waypoints = [[47.605, -122.34, 30], [47.61, -122.33]]
loop = true

[[fleets]]
name = "quad"
org = "harbour"
kind = "multirotor"
count = 3
formation = "line"
spacing_m = 15
battery_pct = [80, 95]
rates = {ATTITUDE = 5}
device_rates = {quad-001 = {GPS_RAW_INT = 2}}
behaviour = {type = "route", route = "pier", stagger = true}

[[fleets]]
name = "boat"
org = "harbour"
kind = "usv"
count = 1
at = [47.601, -122.34]
behaviour = {type = "patrol", spacing_m = 200}

[[timeline]]
at_s = 30
fault = "link_loss"
duration_s = 10
targets = ["quad-001"]

[[timeline]]
at_s = 60
command = "rtl"
targets = ["quad"]
"""


def test_yaml_and_toml_files_load_to_the_same_scenario(tmp_path):
    (tmp_path / "s.yaml").write_text(YAML)
    (tmp_path / "s.toml").write_text(TOML)
    a = load_scenario(tmp_path / "s.yaml")
    b = load_scenario(str(tmp_path / "s.toml"))
    assert a == b
    assert a.device_count == 4
    assert [d[0] for d in a.devices()] == ["quad-000", "quad-001", "quad-002", "boat-000"]
    assert a.start_epoch_s == 1_772_352_000.0
    assert a.fleets[0].device_rates["quad-001"]["GPS_RAW_INT"] == 2
    assert a.faults[0].kind.value == "link_loss" and a.faults[0].end_s == 40
    assert a.timeline[1].command["command_type"] == "rtl"


def test_round_trips_through_plain_data_and_yaml():
    sc = Scenario.from_yaml(YAML)
    assert Scenario.from_dict(sc.to_dict()) == sc
    assert Scenario.from_yaml(sc.to_yaml()) == sc


def test_orgs_default_to_the_fleets_orgs():
    sc = Scenario.from_dict(
        {
            "name": "x",
            "area": {"center": [1, 2], "size_m": 500},
            "fleets": [{"name": "a", "org": "o1", "kind": "ground"}],
        }
    )
    assert [o.org_id for o in sc.orgs] == ["o1"]
    assert sc.area.center == pytest.approx((1.0, 2.0))


def test_named_scenarios_load_and_accept_overrides():
    for name in NAMED:
        sc = load_scenario(name.replace("_", "-"))
        assert sc.device_count >= 1
        assert sc.name
    assert load_scenario("load_1000").device_count == 1000
    assert load_scenario("small_isr_patrol").replace(seed=99).seed == 99


def _base() -> dict:
    return Scenario.from_yaml(YAML).to_dict()


def _set(d: dict, path: list, value) -> dict:
    d = copy.deepcopy(d)
    obj = d
    for key in path[:-1]:
        obj = obj[key]
    if value is KeyError:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value
    return d


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["fleets", 1, "kind"], "tank", "fleets[1].kind: 'tank' is not one of multirotor, fixed_wing"),
        (["fleets", 0, "count"], 0, "fleets[0].count: must be >= 1"),
        (["fleets", 0, "count"], 2.5, "fleets[0].count: must be an integer"),
        (["fleets", 0, "org"], "red", "fleets[0].org: 'red' is not one of the orgs"),
        (["fleets", 0, "formation"], "vee", "fleets[0].formation: 'vee' is not one of"),
        (["fleets", 0, "colour"], "red", "fleets[0].colour: unknown field"),
        (["fleets", 0, "name"], "has space", "fleets[0].name"),
        (["fleets", 0, "behaviour", "type"], "dance", "fleets[0].behaviour.type: 'dance' is not one of"),
        (
            ["fleets", 0, "behaviour", "route"],
            "nowhere",
            "fleets[0].behaviour.route: 'nowhere' is not one of the routes",
        ),
        (
            ["fleets", 0, "rates", "ATTITUDE"],
            50,
            "fleets[0].rates.ATTITUDE: 50.0 Hz is above the scenario tick rate",
        ),
        (["fleets", 0, "rates", "NOT_A_MESSAGE"], 1, "fleets[0].rates.NOT_A_MESSAGE: is not a message"),
        (["fleets", 0, "speed_mps"], 99, "fleets[0].speed_mps: must be <= 16.0"),
        (["fleets", 1, "at"], [95, 0], "fleets[1].at[0]: must be <= 90.0"),
        (["fleets", 0, "battery_pct"], [90, 80], "fleets[0].battery_pct[1]: must be >= 90.0"),
        (["area", "box"], [1, 2, 0, 3], "area.box: needs south < north"),
        (["area"], {"size_m": 100}, "area: needs box"),
        (["orgs", 0, "org_type"], "pirate", "orgs[0].org_type: 'pirate' is not one of"),
        (["timeline", 0, "fault"], "gremlins", "timeline[0].fault: 'gremlins' is not one of link_loss"),
        (["timeline", 0, "duration_s"], -5, "timeline[0].duration_s: must be > 0"),
        (
            ["timeline", 0, "params"],
            {"probability": 2},
            "timeline[0].params.probability: is not a parameter of link_loss",
        ),
        (["timeline", 0, "targets"], ["quad-009"], "timeline[0].targets[0]: 'quad-009' matches no fleet"),
        (["timeline", 1, "command"], "self_destruct", "timeline[1].command: 'self_destruct' is not one of"),
        (["timeline", 0, "at_s"], KeyError, "timeline[0].at_s: is required"),
        (["tick_hz"], 0, "tick_hz: must be > 0"),
        (["name"], KeyError, "name: is required"),
        (["start"], "yesterday", "start: "),
        (["surprise"], 1, "surprise: unknown field"),
    ],
)
def test_validation_errors_name_the_field(path, value, message):
    with pytest.raises(ScenarioError) as err:
        Scenario.from_dict(_set(_base(), path, value))
    assert message in str(err.value)


def test_fault_parameter_values_are_checked():
    d = _set(
        _base(),
        ["timeline", 0],
        {"at_s": 1, "fault": "duplicate", "duration_s": 5, "params": {"probability": 1.5}},
    )
    with pytest.raises(ScenarioError, match=r"timeline\[0\].params.probability: must be in \[0, 1\]"):
        Scenario.from_dict(d)
    d = _set(
        _base(),
        ["timeline", 0],
        {"at_s": 1, "fault": "malformed", "duration_s": 5, "params": {"variant": "x"}},
    )
    with pytest.raises(ScenarioError, match=r"timeline\[0\].params.variant: 'x' is not one of truncated"):
        Scenario.from_dict(d)


def test_timeline_commands_speak_the_labs_vocabulary():
    route = {"waypoints": [[47.605, -122.34, 30], [47.61, -122.33]], "loop": True, "speed_mps": 6}
    entry = {"at_s": 90, "command": "follow_route", "targets": ["quad-000"], "params": route}
    sc = Scenario.from_dict(_set(_base(), ["timeline", 1], entry))
    command = sc.timeline[1].command
    assert command["command_type"] == "follow_route" and command["params"] == route
    assert Scenario.from_dict(sc.to_dict()).timeline == sc.timeline
    for name in ("route", "patrol"):  # the simulator's old words are not the lab's
        with pytest.raises(ScenarioError, match=rf"timeline\[1\].command: '{name}' is not one of goto, rtl"):
            Scenario.from_dict(_set(_base(), ["timeline", 1], entry | {"command": name}))
    bad = entry | {"command": "goto", "params": {"lat": 47.6, "lon": -122.3, "alt": 40}}
    with pytest.raises(ScenarioError, match=r"timeline\[1\].params: goto does not take alt"):
        Scenario.from_dict(_set(_base(), ["timeline", 1], bad))


def test_duplicate_entity_ids_across_fleets_are_rejected():
    d = _set(_base(), ["fleets", 1, "id_prefix"], "quad")
    d["fleets"][1]["count"] = 3
    with pytest.raises(ScenarioError, match=r"fleets\[1\].id_prefix: entity id 'quad-000' is also made"):
        Scenario.from_dict(d)


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ScenarioError, match="bad.yaml: not valid YAML: .* at line 2, column 1") as err:
        load_scenario(bad)
    assert "\n" not in str(err.value)  # `up --fleet bad.yaml` prints one line
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(TOML.replace('kind = "usv"', 'kind = "tank"'))
    with pytest.raises(ScenarioError, match=r"wrong.toml: fleets\[1\].kind: 'tank'"):
        load_scenario(wrong)
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.yaml")
    with pytest.raises(ScenarioError, match="unknown scenario 'nope'.*small-isr-patrol, area-search"):
        load_scenario("nope")  # the names as --list spells them


def test_frames_list_devices_and_faults():
    sc = Scenario.from_yaml(YAML)
    devices = sc.frame()
    assert list(devices["entity_id"]) == ["quad-000", "quad-001", "quad-002", "boat-000"]
    assert set(devices["entity_type"]) == {"aircraft_multirotor", "surface_vessel_usv"}
    faults = sc.fault_timeline()
    assert list(faults["entity_id"]) == ["quad-001"]
    assert faults.loc[0, "end"] - faults.loc[0, "start"] == pd.Timedelta(seconds=10)


def test_a_scenario_can_be_written_in_python():
    from simulators.scenario_specs import Area, BehaviourSpec, FleetSpec, OrgSpec

    sc = Scenario(
        name="py",
        seed=1,
        area=Area(47.60, -122.35, 47.62, -122.32),
        orgs=(OrgSpec("blue", "Blue"),),
        fleets=(
            FleetSpec(
                "uav", "blue", "multirotor", count=2, behaviour=BehaviourSpec("orbit", {"radius_m": 80.0})
            ),
        ),
    )
    assert [d[0] for d in sc.devices()] == ["uav-000", "uav-001"]
    assert telemetry_hash(sc, 2.0) == telemetry_hash(Scenario.from_dict(sc.to_dict()), 2.0)
    with pytest.raises(ScenarioError, match=r"fleets\[0\].org: 'red' is not one of the orgs"):
        sc.replace(fleets=(FleetSpec("uav", "red", "multirotor"),))
