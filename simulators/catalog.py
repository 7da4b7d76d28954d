"""What the simulator offers: the named scenarios, and the command actions its devices obey.

:func:`load_scenario` finds a scenario by name (``simulators/fleets/<name>.py``) or path;
:func:`list_scenarios` lists the named ones with a line each (``overwatch-lab sim --list``);
:func:`describe_action` explains one command action's params from the lab's own action table
(:mod:`overwatch_lab.protocol.command_actions`), for ``overwatch-lab command --help-action``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from overwatch_lab.errors import EnvelopeError, ScenarioError
from overwatch_lab.protocol.command_actions import (
    MAV_CMD,
    PARAM_DOCS,
    Action,
    action_params,
    relay_messages,
    validate_params,
)
from simulators.fleets import NAMED
from simulators.scenario import Scenario

_MAV_CMD_NAMES = {number: name for name, number in MAV_CMD.items()}
_SAMPLE_PARAMS = {"lat": 0.0, "lon": 0.0, "speed_mps": 1.0, "waypoints": [[0.0, 0.0]], "mode": "LOITER"}


def load_scenario(ref: str | Path | Scenario) -> Scenario:
    """Return a scenario from a named fleet module, a YAML/TOML file, or a Scenario (as is).

    Args:
        ref: a name in ``simulators.fleets`` (e.g. ``small_isr_patrol``; dashes allowed), a
            ``.yaml``/``.yml``/``.toml`` path, or a :class:`~simulators.scenario.Scenario`.

    Raises:
        ScenarioError: unknown name, unreadable file, or an invalid scenario.
    """
    if isinstance(ref, Scenario):
        return ref
    path = Path(ref)
    if path.suffix.lower() in (".yaml", ".yml", ".toml"):
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ScenarioError(f"{path}: cannot read the scenario file ({exc.strerror})") from None
        if path.suffix.lower() == ".toml":
            return Scenario.from_toml(text, source=str(path))
        return Scenario.from_yaml(text, source=str(path))
    name = str(ref).replace("-", "_")
    if name not in NAMED:
        raise ScenarioError(
            f"unknown scenario {str(ref)!r}: not a .yaml/.toml file nor one of "
            f"{', '.join(n.replace('_', '-') for n in NAMED)}"  # the names --list and `up` show
        )
    scenario: Scenario = importlib.import_module(f"simulators.fleets.{name}").scenario()
    return scenario


def list_scenarios() -> dict[str, str]:
    """Return the named scenarios, name → one-line description (the first line of its docstring)."""
    out: dict[str, str] = {}
    for module_name in NAMED:
        module = importlib.import_module(f"simulators.fleets.{module_name}")
        out[module.NAME] = (module.__doc__ or "").strip().splitlines()[0]
    return out


def describe_action(action: str | Action) -> str:
    """Return a few lines on one command action: its params (unit, range, required) and its MAVLink relay.

    Raises:
        EnvelopeError: not one of the lab's actions (the message lists them).
    """
    try:
        act = Action(action)
    except ValueError:
        raise EnvelopeError(f"unknown action {action!r}; one of {', '.join(Action)}") from None
    allowed, required = action_params(act)
    sample = {k: v for k, v in _SAMPLE_PARAMS.items() if k in allowed and (k in required or k == "mode")}
    relay = []
    for msg in relay_messages(act, validate_params(act, sample)):
        cmd = msg.get("command")
        step = msg["type"] + ("" if cmd is None else f" {_MAV_CMD_NAMES[cmd]} ({cmd})")
        relay.append(step + (" per waypoint" if msg["type"] == "mission_item_int" else ""))
    lines = [f"{act}: MAVLink relay {', '.join(relay)}"]
    width = max((len(p) for p in allowed), default=0)
    for name in sorted(allowed, key=lambda p: (p not in required, p)):
        need = "required" if name in required else "optional"
        lines.append(f"  {name:<{width}}  {need}: {PARAM_DOCS[name]}")
    if act is Action.SET_MODE:
        lines.append("  (give mode or custom_mode)")
    if not allowed:
        lines.append("  no params")
    return "\n".join(lines)
