"""The catalog: named scenarios listed with a line each, and command actions described from protocol."""

from __future__ import annotations

import ast
import importlib
import io
import tokenize
from pathlib import Path

import pytest

from overwatch_lab.errors import EnvelopeError
from overwatch_lab.protocol.command_actions import Action, action_params, relay_messages, validate_params
from simulators.catalog import describe_action, list_scenarios, load_scenario
from simulators.fleets import NAMED


def test_list_scenarios_names_every_named_scenario_with_its_first_docstring_line():
    listed = list_scenarios()
    assert list(listed) == [importlib.import_module(f"simulators.fleets.{m}").NAME for m in NAMED]
    for name, description in listed.items():
        assert description and "\n" not in description
        assert load_scenario(name).description == description


@pytest.mark.parametrize("action", list(Action))
def test_describe_action_lists_every_param_and_the_relay_from_protocol(action):
    text = describe_action(str(action))
    allowed, required = action_params(action)
    lines = text.splitlines()
    assert lines[0].startswith(f"{action}: MAVLink relay ")
    for name in allowed:
        (line,) = [ln for ln in lines[1:] if ln.split()[0] == name]
        assert ("required" if name in required else "optional") in line
    sample = {"lat": 1.0, "lon": 2.0, "speed_mps": 3.0, "waypoints": [[1.0, 2.0]], "mode": "RTL"}
    params = {k: v for k, v in sample.items() if k in required or (k == "mode" and k in allowed)}
    for msg in relay_messages(action, validate_params(action, params)):  # as protocol maps it
        assert msg["type"] in lines[0]
        if "command" in msg:
            assert f"({msg['command']})" in lines[0]
    assert describe_action(action) == text


def test_describe_action_refuses_an_unknown_action_listing_the_known_ones():
    with pytest.raises(EnvelopeError, match="unknown action 'patrol'; one of goto, rtl"):
        describe_action("patrol")


def _constants_without_a_comment(path: Path) -> list[str]:
    source = path.read_text()
    commented = {tok.start[0] for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                 if tok.type == tokenize.COMMENT}  # fmt: skip
    missing = []
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        for target in targets:
            if isinstance(target, ast.Name) and target.id.isupper():
                if not {node.lineno, node.end_lineno} & commented:
                    missing.append(f"{path.name}:{node.lineno} {target.id}")
    return missing


def test_every_fleet_constant_carries_a_comment_with_its_unit():
    fleets = Path(importlib.import_module("simulators.fleets").__file__).parent
    files = sorted(fleets.glob("*.py"))
    assert len(files) == len(NAMED) + 1
    assert [m for f in files for m in _constants_without_a_comment(f)] == []
