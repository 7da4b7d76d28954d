"""Integration fixtures: a real nats-server per test and a client to it.

Every test under ``tests/integration`` is marked ``integration`` and skipped (with the reason)
when no nats-server binary is installed.

The polling helpers live in :mod:`tests.polling` (``wait_for``, ``wait_until``); import them
from there. ``wait_for`` is also importable from here, for tests written before it moved.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from overwatch_lab.broker.connect import connect
from overwatch_lab.broker.process import NatsServer, find_nats_server
from overwatch_lab.errors import BrokerStartError
from tests.polling import wait_for

__all__ = ["wait_for"]  # re-exported: the one async polling helper lives in tests.polling

_HERE = Path(__file__).parent


def _missing_binary_reason() -> str | None:
    try:
        find_nats_server()
    except BrokerStartError as exc:
        return f"nats-server binary not available: {exc}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test of this folder ``integration``; skip them all if nats-server is absent."""
    reason = _missing_binary_reason()
    for item in items:
        if _HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)
            if reason is not None:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    """A started nats-server (JetStream on ``tmp_path/nats``), stopped after the test."""
    server = NatsServer(tmp_path / "nats", ready_timeout_s=10.0, stop_timeout_s=5.0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    """A client connected to ``nats_server`` with its token, closed after the test."""
    client = await connect(nats_server.url, auth=nats_server.auth, name="pytest")
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def js(nc: NATS) -> JetStreamContext:
    """The JetStream context of ``nc``."""
    return nc.jetstream()
