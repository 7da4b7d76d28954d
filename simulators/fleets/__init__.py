"""Named scenarios, one module each: ``scenario(**overrides) -> Scenario``.

Load one by name with :func:`simulators.catalog.load_scenario` (``"small_isr_patrol"`` or
``"small-isr-patrol"``). Each module opens with a docstring and its constants (with units), so
it doubles as an example of writing a scenario in Python.
"""

from __future__ import annotations

NAMED: tuple[str, ...] = ("small_isr_patrol", "area_search", "load_1000")  # module names
"""The named scenarios, by module name (list them with :func:`simulators.catalog.list_scenarios`)."""

DEFAULT = "small_isr_patrol"  # module name
"""The scenario a lab flies when none is named (the README's main command)."""
