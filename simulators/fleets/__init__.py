"""Named scenarios, one module each: ``scenario(**overrides) -> Scenario``.

Load one by name with :func:`simulators.catalog.load_scenario` (``"small_isr_patrol"`` or
``"small-isr-patrol"``). Each module opens with a docstring and its constants (with units), so
it doubles as an example of writing a scenario in Python.
"""

from __future__ import annotations

NAMED: tuple[str, ...] = ("small_isr_patrol", "area_search", "load_1000")
"""The named scenarios, by module name."""

DEFAULT = "small_isr_patrol"
"""The scenario a lab flies when none is named (the README's main command)."""
