"""What the simulator offers: the named scenarios.

:func:`load_scenario` finds a scenario by name (``simulators/fleets/<name>.py``) or path.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from overwatch_lab.errors import ScenarioError
from simulators.fleets import NAMED
from simulators.scenario import Scenario


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
            f"unknown scenario {str(ref)!r}: not a .yaml/.toml file nor one of {', '.join(NAMED)}"
        )
    scenario: Scenario = importlib.import_module(f"simulators.fleets.{name}").scenario()
    return scenario
