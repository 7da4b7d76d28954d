"""The in-process dashboard server (overwatch_lab/dashboard/server.py), serving a FakeSource."""

from __future__ import annotations

import asyncio
import re
import socket
import urllib.request

import pytest

from overwatch_lab.dashboard import DataStore, serve
from overwatch_lab.dashboard.server import check_port
from overwatch_lab.errors import ConfigError
from tests.polling import wait_for


def _get_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status


def test_serve_runs_a_local_page_and_stops(source):
    server = serve(source, period_s=0.5)
    try:
        assert server.running and server.port > 0 and server.url == f"http://127.0.0.1:{server.port}/"
        with urllib.request.urlopen(server.url, timeout=10) as response:
            assert response.status == 200
            page = response.read().decode()
        assert "overwatch-lab" in page
        outside = {
            u for u in re.findall(r"""(?:src|href)=["'](https?://[^"']+)""", page) if "127.0.0.1" not in u
        }
        assert not outside, outside
        (dashboard,) = server.dashboards  # the GET built one session
        assert not dashboard.session_closed
        assert dashboard.data_store.source is source  # every session reads the one source served
    finally:
        server.stop()
    assert not server.running
    assert dashboard.session_closed  # stopping the server destroyed its sessions
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=1):
        pass
    server.stop()  # idempotent


async def test_a_stopped_server_leaves_nothing_behind_for_other_refreshes(source):
    """After serve()/stop(), a notebook's own periodic refresh in the same process keeps running."""
    server = serve(source)
    assert await asyncio.to_thread(_get_status, server.url) == 200  # a session and its page template exist
    server.stop()
    store = DataStore(source=source, period_s=0.1).start()
    try:
        await wait_for(lambda: store.refreshes >= 3, timeout=10, what="3 refreshes")
        assert store.errors == 0
    finally:
        store.stop()


def test_serving_on_a_taken_port_raises_one_config_error(source):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"^dashboard port {port} on 127.0.0.1 is in use$"):
            serve(source, port=port)
    check_port("127.0.0.1", 0)  # any free port
