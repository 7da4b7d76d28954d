"""The dashboard app: layout, lazy import, the in-process server, and attaching to a lab by folder."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
import urllib.request

import panel as pn
import pytest

from overwatch_lab.dashboard import AttachedLab, Dashboard, build_app, serve
from overwatch_lab.errors import ConfigError
from tests.unit.dashboard.helpers import FLEET, fly, register_fleet, wait_until


def _get_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status


def test_the_fabric_never_imports_panel():
    code = (
        "import sys, overwatch_lab, overwatch_lab.lab, overwatch_lab.dashboard\n"
        "bad = sorted(m for m in ('panel', 'bokeh') if m in sys.modules)\n"
        "assert not bad, bad\n"
        "assert 'build_app' in dir(overwatch_lab.dashboard)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_build_app_is_a_layout_over_one_data_store(lab):
    register_fleet(lab)
    fly(lab, steps=1)
    app = build_app(lab, start=False)
    assert isinstance(app, pn.viewable.Viewable)
    dashboard = app.dashboard
    assert isinstance(dashboard, Dashboard)
    store = dashboard.data_store
    for view in (dashboard.fleet_table, dashboard.fleet_map, dashboard.telemetry, dashboard.worker_stats):
        assert view.data_store is store
    assert store.refresh()
    assert dashboard.fleet_table.table.value["entity_id"].tolist() == sorted(e for _, e, _, _ in FLEET)
    assert f">{len(FLEET)}<" in dashboard.overview.cards.object
    assert "updated" in dashboard.overview.status.object
    assert isinstance(dashboard.template(), pn.template.BootstrapTemplate)


def test_overview_says_when_the_lab_is_unreachable(lab):
    app = build_app(lab, start=False)
    store = app.dashboard.data_store
    store.refresh()
    lab.down()
    store.refresh()
    status = app.dashboard.overview.status.object
    assert "lab unreachable" in status and "LabStateError" in status


def test_serve_runs_a_local_page_and_stops(lab):
    server = serve(lab, period_s=0.5)
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
    finally:
        server.stop()
    assert not server.running
    assert dashboard.session_closed  # stopping the server destroyed its sessions
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=1):
        pass
    server.stop()  # idempotent


def test_attached_lab_follows_restarts(lab_factory, tmp_path):
    data_dir = tmp_path / "shared"
    source = AttachedLab(data_dir)
    with pytest.raises(ConfigError, match="no running lab"):
        source.states()
    first = lab_factory(data_dir=data_dir)
    register_fleet(first)
    assert sorted(source.states()["entity_id"]) == sorted(e for _, e, _, _ in FLEET)
    attached = source.lab()
    assert attached is source.lab() and not attached.owner
    first.down()
    with pytest.raises(ConfigError):
        source.stats()
    second = lab_factory(data_dir=data_dir)  # same folder, new broker port and token
    # an attached lab shows the owner's counters, which the new owner publishes from its boot
    wait_until(lambda: "telemetry-worker" in source.stats(), what="the new owner's published counters")
    assert source.lab() is not attached and sorted(source.states()["entity_id"]) == sorted(
        e for _, e, _, _ in FLEET
    )
    source.close()
    second.down()


@pytest.mark.slow
def test_build_app_in_a_notebook_renders_inline_and_refreshes(tmp_path):
    """A kernel displays the dashboard with every script inline and keeps refreshing between cells."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    cells = [
        "import panel as pn\npn.extension('tabulator', inline=True)",
        "from overwatch_lab import Lab\nfrom overwatch_lab.dashboard import build_app\n"
        f"lab = Lab.up(data_dir={str(tmp_path / 'lab')!r})\n"
        "lab.register_org('org-a')\nlab.register_entity('org-a', 'uav-1', 'aircraft_multirotor')\n"
        "app = build_app(lab, period_s=0.2)\napp",
        "import asyncio\nstore = app.dashboard.data_store\nfor _ in range(200):\n"
        "    if store.refreshes >= 3:\n        break\n    await asyncio.sleep(0.05)\n"
        "print('refreshes', store.refreshes, app.dashboard.fleet_table.table.value['entity_id'].tolist())",
        "app.dashboard.stop()\nlab.down()\nprint(lab.state.value)",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbclient.NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    loader = next(o for o in outputs if "application/javascript" in o.get("data", {}))["data"][
        "application/javascript"
    ]
    assert re.search(r"const js_urls = \[\];", loader)  # nothing fetched: all of it is inline
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "['uav-1']" in text and "stopped" in text
    refreshes = int(re.search(r"refreshes (\d+)", text).group(1))
    assert refreshes >= 3
    displayed = [str(o.get("data", {})) for o in nb.cells[1].outputs]
    assert any("uav-1" in d for d in displayed)  # the first read happened before the display


async def test_a_stopped_server_leaves_nothing_behind_for_other_refreshes(lab):
    """After serve()/stop(), a notebook's own periodic refresh in the same process keeps running."""
    server = serve(lab)
    assert await asyncio.to_thread(_get_status, server.url) == 200  # a session and its page template exist
    server.stop()
    from overwatch_lab.dashboard import DataStore

    store = DataStore(source=lab, period_s=0.1).start()
    try:
        deadline = time.monotonic() + 10
        while store.refreshes < 3:
            assert time.monotonic() < deadline, (store.refreshes, store.errors, store.last_error)
            await asyncio.sleep(0.02)
    finally:
        store.stop()
