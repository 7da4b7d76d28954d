"""The dashboard app (overwatch_lab/dashboard/app.py): lazy import, one layout over one DataStore."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

import panel as pn

from overwatch_lab.dashboard import Dashboard, build_app
from tests.builders import FLEET, entity_ids


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


def test_build_app_is_a_layout_over_one_data_store(source):
    source.fly(steps=1)
    app = build_app(source, start=False)
    assert isinstance(app, pn.viewable.Viewable)
    dashboard = app.dashboard
    assert isinstance(dashboard, Dashboard)
    store = dashboard.data_store
    for view in (dashboard.fleet_table, dashboard.fleet_map, dashboard.telemetry, dashboard.worker_stats):
        assert view.data_store is store
    assert store.refresh()
    assert dashboard.fleet_table.table.value["entity_id"].tolist() == entity_ids()
    assert f">{len(FLEET)}<" in dashboard.overview.cards.object
    assert "updated" in dashboard.overview.status.object
    assert isinstance(dashboard.template(), pn.template.BootstrapTemplate)


def test_overview_says_when_the_lab_is_unreachable(source):
    app = build_app(source, start=False)
    store = app.dashboard.data_store
    store.refresh()
    source.stop()
    store.refresh()
    status = app.dashboard.overview.status.object
    assert "lab unreachable" in status and "LabStateError" in status
