"""Unit tests run without a lab: no broker, no lab database, only pure logic and its fakes.

A unit test that asks for a lab fixture is refused at collection: it belongs in
``tests/integration`` (where a real nats-server and libSQL file are the point).
"""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent
LAB_FIXTURES = frozenset({"lab", "lab_factory"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse unit tests that boot a lab (they are integration tests under another name)."""
    offenders = [
        f"{item.nodeid} (uses {', '.join(sorted(LAB_FIXTURES & set(getattr(item, 'fixturenames', ()))))})"
        for item in items
        if _HERE in Path(item.path).parents and LAB_FIXTURES & set(getattr(item, "fixturenames", ()))
    ]
    if offenders:
        raise pytest.UsageError(
            "unit tests must not boot a lab; move these to tests/integration:\n  " + "\n  ".join(offenders)
        )
