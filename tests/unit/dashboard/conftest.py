"""Fixtures for the dashboard's unit tests: views over a FakeSource, never a lab.

The views are tested against :class:`tests.fake_source.FakeSource` (pure data, synchronous);
``tests/integration/test_dashboard_lab.py`` drives them from a real lab.
"""

from __future__ import annotations

import pytest

from tests.fake_source import FakeSource


@pytest.fixture
def source() -> FakeSource:
    """A FakeSource with the fleet of :mod:`tests.builders` registered (not flown yet)."""
    fake = FakeSource()
    fake.register_fleet()
    return fake
