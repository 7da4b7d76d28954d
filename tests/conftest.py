"""Shared test fixtures."""

from __future__ import annotations

pytest_plugins = ["tests.lab_fixtures", "tests.fault_fixtures"]
