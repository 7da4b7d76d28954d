"""The dashboard driven by a real lab: the fake its unit tests use keeps the lab's frames, the
views follow a lab, an attached source follows restarts, and the alarms show real faults.

The views themselves are unit-tested against :class:`tests.fake_source.FakeSource`
(``tests/unit/dashboard``); the first test here holds that fake to the real lab's frames.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pandas as pd
import pytest

from overwatch_lab import LabConfig
from overwatch_lab.dashboard import AttachedLab, DataStore, FleetSource, build_app
from overwatch_lab.dashboard.app import Overview
from overwatch_lab.dashboard.frames import fleet_frame
from overwatch_lab.dashboard.stats import WorkerStats
from overwatch_lab.errors import ConfigError
from overwatch_lab.protocol import envelopes
from overwatch_lab.protocol import subjects as s
from tests.builders import FLEET, entity_ids, fly, register_fleet
from tests.fake_source import FakeSource
from tests.polling import wait_until

REPO = Path(__file__).resolve().parents[2]
SERVER_SIDE = ["id", "message_uid", "ingested_at"]  # differ by nature between two stores


def test_the_fake_source_keeps_the_real_labs_frames(lab):
    """Same fleet, same flight, same ghost: the fake's frames have the lab's columns and values."""
    fake = FakeSource()
    assert isinstance(lab, FleetSource) and isinstance(fake, FleetSource)
    t0 = time.time() - 10
    for target in (lab, fake):
        register_fleet(target)
    fly(lab, steps=3, t0=t0)
    fake.fly(steps=3, t0=t0)
    lab.publish_telemetry("org-a", "ghost", "VFR_HUD", {"groundspeed": 1.0})
    fake.publish_telemetry("org-a", "ghost", "VFR_HUD", {"groundspeed": 1.0})
    lab.wait_for(lambda: lab.stats()["telemetry-worker"]["quarantined"] == 1, what="the ghost quarantined")

    real_states, fake_states = lab.frames.states(), fake.frames.states()
    assert sorted(fake_states.columns) == sorted(real_states.columns)
    now = time.time()
    assert_same(
        fleet_frame(fake_states, now).drop(columns="age_s"),
        fleet_frame(real_states, now).drop(columns="age_s"),
    )

    real_rows, fake_rows = lab.frames.telemetry(), fake.frames.telemetry()
    assert list(fake_rows.columns) == list(real_rows.columns)
    assert fake_rows.dtypes.to_dict() == real_rows.dtypes.to_dict()
    key = ["entity_id", "ts", "message_type"]
    assert_same(
        fake_rows.drop(columns=SERVER_SIDE).sort_values(key, ignore_index=True),
        real_rows.drop(columns=SERVER_SIDE).sort_values(key, ignore_index=True),
    )
    limited = lab.frames.telemetry(entity_id="uav-2", since=t0 + 1, limit=2)
    assert_same(
        fake.frames.telemetry(entity_id="uav-2", since=t0 + 1, limit=2).drop(columns=SERVER_SIDE),
        limited.drop(columns=SERVER_SIDE),
    )

    real_q, fake_q = lab.frames.quarantine(), fake.frames.quarantine()
    assert list(fake_q.columns) == list(real_q.columns)
    same = ["worker", "error", "original_subject", "source_stream"]
    assert fake_q[same].to_dict("records") == real_q[same].to_dict("records")
    # the real one names the partition durable that consumed it (telemetry-processor-p{k})
    assert all(
        c.startswith(fc) for c, fc in zip(real_q["source_consumer"], fake_q["source_consumer"], strict=True)
    )

    real_stats, fake_stats = lab.stats(), fake.stats()
    for name, counters in fake_stats.items():  # the fake invents no counter the lab does not have
        assert set(counters) <= set(real_stats[name]), (name, set(counters) - set(real_stats[name]))


def assert_same(left: pd.DataFrame, right: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(
        left.reset_index(drop=True), right.reset_index(drop=True), check_exact=False
    )


def test_the_dashboard_follows_a_real_lab(lab):
    register_fleet(lab)
    fly(lab, steps=1)
    app = build_app(lab, start=False)
    dashboard = app.dashboard
    store = dashboard.data_store
    store.quarantine_period_s = 0.5
    assert store.refresh() and store.source is lab
    assert dashboard.fleet_table.table.value["entity_id"].tolist() == entity_ids()
    assert f">{len(FLEET)}<" in dashboard.overview.cards.object
    assert store.stats["telemetry-worker"]["handled"] == len(FLEET) * 4
    lab.publish_telemetry("org-a", "ghost", "VFR_HUD", {"groundspeed": 1.0})
    wait_until(
        lambda: store.refresh() and not dashboard.worker_stats.quarantine.value.empty,
        what="the quarantine record on the page",
    )
    assert "unknown entity 'ghost'" in dashboard.worker_stats.quarantine.value["error"].iloc[0]
    lab.down()
    assert store.refresh() is False
    status = dashboard.overview.status.object
    assert "lab unreachable" in status and "LabStateError" in status


def test_attached_lab_follows_restarts(lab_factory, tmp_path):
    data_dir = tmp_path / "shared"
    source = AttachedLab(data_dir)
    with pytest.raises(ConfigError, match="no running lab"):
        source.frames.states()
    first = lab_factory(data_dir=data_dir)
    register_fleet(first)
    assert sorted(source.frames.states()["entity_id"]) == entity_ids()
    attached = source.lab()
    assert attached is source.lab() and not attached.owner
    first.down()
    with pytest.raises(ConfigError):
        source.stats()
    second = lab_factory(data_dir=data_dir)  # same folder, new broker port and token
    # an attached lab shows the owner's counters, which the new owner publishes from its boot
    wait_until(lambda: "telemetry-worker" in source.stats(), what="the new owner's published counters")
    assert source.lab() is not attached and sorted(source.frames.states()["entity_id"]) == entity_ids()
    source.close()
    second.down()


def test_fabric_health_shows_quarantine_drops(lab_factory):
    Q = s.STREAM_QUARANTINE
    lab = lab_factory(streams=LabConfig().with_stream_limits(Q, max_msgs=1).streams)
    store = DataStore(source=lab)
    view, overview = WorkerStats(data_store=store), Overview(data_store=store)
    store.refresh()
    assert view.loss.object == "" and Q in view.streams.value["stream"].tolist()
    for i in range(3):
        lab.publish(s.telemetry_subject("org-a", f"e{i}"), b"{")  # poison: quarantined at once
    wait_until(lambda: store.refresh() and "2 records dropped" in view.loss.object, what="drop banner")
    assert view.streams.value.set_index("stream").loc[Q, "lost"] == 2
    assert ">Lost</div>" in overview.cards.object
    assert overview.cards.object.split(">Lost</div>")[1].startswith(
        '<div style="font-size:22px;font-weight:600;color:#cf222e;line-height:1.3">2<'
    )


@pytest.mark.slow
def test_worker_stats_view_raises_the_alarm_while_the_database_is_full(tmpfs, lab_factory):
    lab = lab_factory(db_url=str(tmpfs.path / "overwatch.db"))
    register_fleet(lab)
    store = DataStore(source=lab)
    view = WorkerStats(data_store=store)
    store.refresh()
    assert not view.alarm.visible
    tmpfs.fill()
    items = []
    for i in range(500):
        env = envelopes.make_telemetry(
            "org-a", "uav-1", "ATTITUDE", {"roll": 0.0, "pitch": 0.0, "yaw": i / 1e3}
        )
        items.append((s.telemetry_subject("org-a", "uav-1"), envelopes.encode(env), env["message_uid"]))
    lab.publish_many(items)
    wait_until(lambda: store.refresh() and view.alarm.visible, timeout=10, what="the alarm")
    assert "telemetry-worker" in view.alarm.object and "database or disk is full" in view.alarm.object
    assert view.workers.value.set_index("worker").loc["telemetry-worker", "held"] > 0
    tmpfs.free_filler()
    wait_until(lambda: store.refresh() and not view.alarm.visible, timeout=15, what="the alarm to clear")
    assert view.workers.value.set_index("worker").loc["telemetry-worker", "held"] == 0


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
        # the kernel's loop stays free while the test's one polling helper waits on it
        f"import sys\nsys.path.insert(0, {str(REPO)!r})\nfrom tests.polling import wait_for\n"
        "store = app.dashboard.data_store\n"
        "await wait_for(lambda: store.refreshes >= 3, timeout=10, what='3 refreshes')\n"
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
