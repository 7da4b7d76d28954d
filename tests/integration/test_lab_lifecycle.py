"""Lifecycle: async/sync use, a blocked caller loop, restart on the same data dir, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from overwatch_lab import Lab, LabConfig, LabState, LabStateError
from overwatch_lab.broker.process import NatsServer
from tests.polling import wait_until

ORG = "org-l"


def nats_server_pids(marker: str) -> list[int]:
    """Pids of nats-server processes whose command line mentions ``marker`` (a data dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            status = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if "nats-server" in cmd and marker in cmd and status != "Z":
            pids.append(int(entry.name))
    return pids


async def test_async_context_manager_and_blocked_caller_loop(tmp_path):
    """The fabric keeps ingesting while the caller's event loop is blocked (a computing cell)."""
    async with Lab(LabConfig(data_dir=tmp_path / "d", fetch_timeout_s=0.2)) as lab:
        assert lab.state is LabState.RUNNING
        lab.register_org(ORG)
        lab.register_entity(ORG, "busy-1", "aircraft_multirotor")
        device = lab.devices.add(ORG, "busy-1")  # the publisher is a device, held to a device's rights
        publisher = subprocess.Popen(  # noqa: ASYNC220 - a separate publishing process is the point
            [sys.executable, "-c", PUBLISH_SLOWLY, lab.nats_url, str(device.file), ORG, "busy-1"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert publisher.stdout.readline().strip() == "publishing"
            blocked_from = time.time()
            time.sleep(2.0)  # noqa: ASYNC251 - this blocks the test's own event loop, like a long notebook cell
            x = sum(i * i for i in range(2_000_000))  # and some CPU work holding the GIL
            blocked_to = time.time()
            assert x > 0
        finally:
            publisher.wait(30)
            publisher.stdout.close()
        frame = lab.wait_for(lambda: (f := lab.frames.telemetry(entity_id="busy-1")).shape[0] >= 100 and f,
                             what="all rows")  # fmt: skip
        during = frame[(frame["ingested_at"] > blocked_from) & (frame["ingested_at"] < blocked_to)]
        assert len(during) >= 20, f"only {len(during)} messages ingested while the caller loop was blocked"
    assert lab.state is LabState.STOPPED


PUBLISH_SLOWLY = r"""
import asyncio, sys, time, nats
from overwatch_lab.nats_auth import NatsAuth
from overwatch_lab.protocol.envelopes import encode, make_telemetry
url, creds, org, eid = sys.argv[1:5]
async def main():
    nc = await nats.connect(url, **NatsAuth.load(creds).kwargs())
    js = nc.jetstream()
    print("publishing", flush=True)
    t0 = time.time()
    for i in range(100):
        env = make_telemetry(org, eid, "ATTITUDE", {"roll": 0.0, "pitch": 0.0, "yaw": i / 100}, timestamp=t0 + i / 100)
        await js.publish(f"constellation.telemetry.{org}.{eid}", encode(env))
        await asyncio.sleep(0.025)
    await nc.close()
asyncio.run(main())
"""


def test_restart_on_same_data_dir_keeps_entities_state_and_history(tmp_path):
    cfg = LabConfig(data_dir=tmp_path / "keep", fetch_timeout_s=0.2)
    with Lab(cfg) as lab:
        lab.register_org(ORG, "Keep")
        lab.register_entity(ORG, "k1", "surface_vessel_usv")
        lab.publish_telemetry(ORG, "k1", "VFR_HUD", {"groundspeed": 6.5, "heading": 180})
        lab.wait_for(lambda: lab.frames.telemetry(entity_id="k1").shape[0] == 1, what="row")
        first = lab.connection_info()
    with Lab(cfg) as lab2:
        # Devices keep what they were given: same broker URL and token (broker/identity.json).
        assert {k: lab2.connection_info()[k] for k in ("nats_url", "nats_auth", "system_auth")} == {
            k: first[k] for k in ("nats_url", "nats_auth", "system_auth")
        }
        doc = lab2.state_of("k1")
        assert doc is not None and doc["vfr"]["groundspeed"] == 6.5 and doc["org_name"] == "Keep"
        assert lab2.frames.telemetry(entity_id="k1").shape[0] == 1
        # the registry was reloaded: telemetry is accepted without registering again
        lab2.publish_telemetry(ORG, "k1", "VFR_HUD", {"groundspeed": 7.0, "heading": 181})
        lab2.wait_for(lambda: lab2.state_of("k1")["vfr"]["groundspeed"] == 7.0, what="new telemetry")
        assert lab2.stats()["telemetry-worker"]["quarantined"] == 0


def test_attach_from_another_lab_object(lab):
    observer = Lab.attach(lab.config.data_dir)  # the default identity reads only
    try:
        with pytest.raises(LabStateError, match="attached as an observer"):
            observer.register_org(ORG)
    finally:
        observer.down()
    attached = Lab.attach(lab.config.data_dir, identity="internal")
    try:
        assert not attached.owner
        attached.register_org(ORG)
        attached.register_entity(ORG, "a1", "sensor_platform")
        assert lab.state_of("a1")["entity_type"] == "sensor_platform"
    finally:
        attached.down()
    assert lab.state is LabState.RUNNING  # detaching does not stop the owner


def test_an_attached_lab_reports_the_owners_connection(lab):
    """Its pid and start time are the owner's (what lab.json says), not those of the attaching call."""
    on_disk = json.loads((lab.config.data_dir / "lab.json").read_text())
    attached = Lab.attach(lab.config.data_dir)
    try:
        assert attached.connection_info() == on_disk == lab.connection_info()
        assert attached.monitor_url is None and lab.monitor_url is None  # no HTTP monitoring port
        assert lab.broker_monitor("healthz")["status"] == "ok"  # the system account's view instead
        with pytest.raises(LabStateError, match="no system account"):
            attached.broker_monitor("varz")  # an observer does not hold it
        with pytest.raises(LabStateError, match="no synchronizer"):
            attached.sync_now()
    finally:
        attached.down()


def test_external_nats_url(tmp_path):
    import asyncio

    server = NatsServer(tmp_path / "ext-js")

    async def start():
        await server.start()

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(start())
        cfg = LabConfig(
            data_dir=tmp_path / "ext", nats_url=server.url, nats_user=server.user, nats_password=server.password, fetch_timeout_s=0.2
        )
        with Lab(cfg) as lab:
            assert lab.monitor_url is None and lab.nats_url == server.url
            lab.register_org(ORG)
            lab.register_entity(ORG, "x1", "sensor_platform")
            assert lab.state_of("x1") is not None
    finally:
        loop.run_until_complete(server.stop())
        loop.close()


def _start_cli(data_dir: Path, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "overwatch_lab.cli", "up", "--data-dir", str(data_dir), "--stale-after", "3",
         "--dashboard-port", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_until(lambda: (data_dir / "lab.json").exists() or proc.poll() is not None, 20, what="lab.json")
    assert proc.poll() is None, proc.stderr and proc.stderr.read()
    return proc


@pytest.mark.slow
def test_cli_up_sigterm_exits_zero_and_restart_keeps_data(tmp_path):
    data_dir = tmp_path / "cli"
    proc = _start_cli(data_dir, "--fleet", "none", "--no-dashboard")
    try:
        info = json.loads((data_dir / "lab.json").read_text())
        assert info["pid"] == proc.pid
        assert len(nats_server_pids(str(data_dir))) == 1
        attached = Lab.attach(data_dir, identity="internal")  # it registers
        attached.register_org(ORG)
        attached.register_entity(ORG, "c1", "aircraft_vtol")
        attached.down()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert "stopped cleanly" in out
        assert nats_server_pids(str(data_dir)) == []
        assert not (data_dir / "lab.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    proc = _start_cli(data_dir)  # the default: a lab with the small default fleet
    try:
        attached = Lab.attach(data_dir)
        assert attached.state_of("c1")["entity_type"] == "aircraft_vtol"
        # the default fleet flies: its devices register and stream through the wire
        attached.wait_for(
            lambda: (d := attached.state_of("drone-000")) and d["is_live"], timeout=20, what="fleet"
        )
        attached.down()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.slow
def test_sigkilled_cli_leaves_no_nats_server(tmp_path):
    data_dir = tmp_path / "killed"
    proc = _start_cli(data_dir, "--no-dashboard")
    assert len(nats_server_pids(str(data_dir))) == 1
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)
    wait_until(
        lambda: nats_server_pids(str(data_dir)) == [], 10, what="nats-server gone after SIGKILL of its parent"
    )
    with pytest.raises(Exception, match="not running"):
        Lab.attach(data_dir)


def test_an_attached_lab_sees_the_owners_counters(lab_factory):
    lab = lab_factory(stats_period_s=0.1)
    lab.register_org(ORG)
    lab.register_entity(ORG, "s1", "sensor_platform")
    lab.publish_telemetry(ORG, "s1", "HEARTBEAT", {"type": 2, "base_mode": 0, "custom_mode": 0})
    lab.wait_for(lambda: lab.stats()["telemetry-worker"]["acked"] == 1, what="owner counted it")
    attached = Lab.attach(lab.config.data_dir)
    try:
        stats = attached.wait_for(
            lambda: (st := attached.stats()).get("telemetry-worker", {}).get("acked") == 1 and st,
            what="published counters",
        )
        assert stats["entity-worker"]["acked"] >= 1 and "synchronizer" in stats
    finally:
        attached.down()


@pytest.mark.slow
def test_a_sigkilled_kernel_leaves_no_nats_server(tmp_path):
    """A notebook kernel holding a Lab is SIGKILLed (kernel restart): its broker dies with it."""
    data_dir = tmp_path / "kernel"
    code = (
        "import sys, time\n"
        "from overwatch_lab import Lab\n"
        f"lab = Lab.up(data_dir={str(data_dir)!r})\n"
        "print('up', flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"
        assert len(nats_server_pids(str(data_dir))) == 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
        wait_until(
            lambda: nats_server_pids(str(data_dir)) == [], 10, what="nats-server gone after the kernel died"
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
