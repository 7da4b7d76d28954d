"""Fixtures for the simulator unit tests (the rig itself lives in :mod:`tests.unit.simulators.rig`)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.unit.simulators.rig import Rig


@pytest.fixture
def rig() -> Callable[..., Rig]:
    """The :class:`Rig` class: ``rig("multirotor", seed=3)`` builds one device on a manual clock."""
    return Rig
