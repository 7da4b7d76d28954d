"""Fixtures that boot a real Lab (embedded nats-server + libSQL file) per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from overwatch_lab import Lab, LabConfig


@pytest.fixture
def lab_factory(tmp_path) -> Iterator[Callable[..., Lab]]:
    """Build and start labs on tmp_path (fast sync period); every one is stopped after the test."""
    labs: list[Lab] = []

    def make(**overrides: Any) -> Lab:
        overrides.setdefault("data_dir", tmp_path / f"lab{len(labs)}")
        overrides.setdefault("sync_period_s", 0.5)
        overrides.setdefault("fetch_timeout_s", 0.2)
        # Telemetry in the lab's own process: a worker process costs a Python start per lab;
        # tests/integration/test_worker_processes.py runs the default (processes) path.
        overrides.setdefault("workers", 0)
        lab = Lab.up(LabConfig(**overrides))
        labs.append(lab)
        return lab

    yield make
    for lab in labs:
        lab.down()


@pytest.fixture
def lab(lab_factory) -> Lab:
    """One running lab."""
    return lab_factory()
