"""The supervised embedded broker: SIGKILLed during ingest it comes back on the same URL and token,
devices reconnect by themselves and no acknowledged message is lost; when it cannot come back the
lab fails loudly (FAILED, BrokerExited, ``overwatch-lab up`` exits non-zero)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time

import nats
import nats.errors
import pytest

from overwatch_lab import LabState
from overwatch_lab.errors import BrokerError, BrokerExited
from overwatch_lab.nats_auth import NatsAuth
from overwatch_lab.protocol import envelopes
from overwatch_lab.protocol import subjects as s
from overwatch_lab.runtime import LoopThread
from overwatch_lab.store import queries
from tests.integration.test_lab_lifecycle import _start_cli, nats_server_pids
from tests.integration.test_lab_simulate import ORG as SIM_ORG
from tests.integration.test_lab_simulate import tiny

ORG = "org-sup"
LANES = 8  # entities published concurrently; each lane publishes in order (see AckedPublisher)
PER_LANE = 500
KILL_AFTER = 1000  # PubAck'd messages before the broker is SIGKILLed


class AckedPublisher:
    """An outside publisher with its own nats-py connection that keeps every PubAck it got.

    Each lane publishes to one entity, one message at a time, retrying a message (same
    Nats-Msg-Id, so the server deduplicates) until it is acknowledged: per entity the stream
    order is the timestamp order, as a careful device's would be.
    """

    def __init__(self, url: str, auth: NatsAuth, entities: list[str]) -> None:
        self.url, self.auth, self.entities = url, auth, entities
        self.acked: set[str] = set()
        self.retries = 0
        self.reconnects = 0
        self.last_server: str | None = None  # host:port it was connected to at the end

    async def run(self) -> None:
        nc = await nats.connect(
            self.url,
            **self.auth.kwargs(),
            name="acked-publisher",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
        )
        try:
            js = nc.jetstream()
            await asyncio.gather(*(self._lane(js, eid) for eid in self.entities))
            assert nc.connected_url is not None
            self.reconnects, self.last_server = nc.stats["reconnects"], nc.connected_url.netloc
        finally:
            await nc.close()

    async def _lane(self, js, eid: str) -> None:
        t0 = time.time() - PER_LANE
        for k in range(PER_LANE):
            env = envelopes.make_telemetry(ORG, eid, "VFR_HUD", {"groundspeed": float(k)}, timestamp=t0 + k)
            data, uid = envelopes.encode(env), env["message_uid"]
            async with asyncio.timeout(60):
                while True:
                    try:
                        await js.publish(
                            s.telemetry_subject(ORG, eid), data, headers={"Nats-Msg-Id": uid}, timeout=2
                        )
                        break
                    except (nats.errors.Error, TimeoutError):  # broker down: same message again
                        self.retries += 1
                        await asyncio.sleep(0.1)
            self.acked.add(uid)


def connection_names(lab) -> set[str]:
    """Who is connected, from the broker's connz (asked as the system account: no HTTP port)."""
    try:
        return {c.get("name", "") for c in lab.broker_monitor("connz")["connections"]}
    except BrokerError:  # the broker is restarting
        return set()


def stored_uids(lab) -> set[str]:
    return set(queries.read_frame(lab.db_url, "SELECT message_uid FROM telemetry")["message_uid"])


@pytest.mark.slow
def test_broker_sigkill_during_ingest_comes_back_on_the_same_url_and_loses_nothing(lab_factory):
    # ack_wait short: a delivery whose ack died with the broker comes back in seconds, not 30.
    lab = lab_factory(ack_wait_s=3.0, stale_after_s=60.0)
    url, auth = lab.nats_url, lab.nats_auth
    lab_json = json.loads((lab.config.data_dir / "lab.json").read_text())
    lab.register_org(ORG)
    entities = [f"pub-{i}" for i in range(LANES)]
    for eid in entities:
        lab.register_entity(ORG, eid, "sensor_platform")
    sim = lab.fleet.simulate(tiny(), speed=1.0)  # a simulated device: core NATS, its own connection
    device = sim.scenario.devices()[0][0]
    lab.wait_for(lambda: (d := lab.state_of(device)) and d["is_live"], timeout=15, what="device live")

    publisher = AckedPublisher(url, auth, entities)
    thread = LoopThread("acked-publisher")
    try:
        done = thread.submit(publisher.run())
        lab.wait_for(lambda: len(publisher.acked) >= KILL_AFTER or done.done(), timeout=30, what="acks")
        old_pid = lab._core.server.pid
        os.kill(old_pid, signal.SIGKILL)
        killed_at = time.time()
        acked_at_kill = len(publisher.acked)

        lab.wait_for(lambda: lab.stats()["broker"]["restarts"] == 1, timeout=20, what="broker restarted")
        assert lab._core.server.pid != old_pid and lab.state is LabState.RUNNING
        assert (lab.nats_url, lab.nats_auth) == (url, auth)
        info = json.loads((lab.config.data_dir / "lab.json").read_text())
        assert (info["nats_url"], info["nats_auth"]) == (lab_json["nats_url"], lab_json["nats_auth"])
        assert lab.connection_info()["nats_url"] == url

        done.result(timeout=90)  # every message acknowledged in the end
        assert len(publisher.acked) == LANES * PER_LANE and acked_at_kill < LANES * PER_LANE
        # Every acknowledged message has its history row (some arrive after a redelivery).
        missing = lab.wait_for(
            lambda: not (publisher.acked - stored_uids(lab)), timeout=30, what="every acked uid stored"
        )
        assert missing
        # The outside publisher and the simulated device reconnected with what they were given ...
        assert publisher.reconnects >= 1 and f"nats://{publisher.last_server}" == url
        lab.wait_for(
            # the fleet speaks on its organisation's relay: one connection per organisation
            lambda: connection_names(lab) >= {"overwatch-lab", f"overwatch-lab-sim:tiny:{SIM_ORG}"},
            timeout=10,
            what="the lab and the device on the restarted broker",
        )
        # ... and the device's telemetry flows again.
        lab.wait_for(
            lambda: (
                (f := lab.frames.telemetry(entity_id=device)).shape[0]
                and f["ingested_at"].max() > killed_at + 1
            ),
            timeout=15,
            what="device telemetry after the restart",
        )
    finally:
        thread.close()
    assert lab.stats()["telemetry-worker"]["quarantined"] == 0


def bind_port(port: int) -> socket.socket | None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    sock.listen()
    return sock


@pytest.mark.slow
def test_a_broker_that_cannot_restart_fails_the_lab_loudly(lab_factory):
    lab = lab_factory(broker_restart_attempts=1, broker_restart_backoff_s=1.0, ready_timeout_s=2.0)
    data_dir = lab.config.data_dir
    port = int(lab.nats_url.rsplit(":", 1)[1])
    os.kill(lab._core.server.pid, signal.SIGKILL)
    squatter = lab.wait_for(lambda: bind_port(port), timeout=5, what="the broker's port taken over")
    try:
        assert lab.ended().result(timeout=20) is LabState.FAILED
        assert lab.state is LabState.FAILED
        assert isinstance(lab.failure, BrokerExited)
        assert f"port {port} " in str(lab.failure)
        with pytest.raises(BrokerExited, match="could not be kept running"):
            lab.register_org(ORG)  # not "the lab is stopped": the reason
        assert nats_server_pids(str(data_dir)) == []
        assert not (data_dir / "lab.json").exists()
    finally:
        squatter.close()


@pytest.mark.slow
def test_cli_up_exits_non_zero_when_its_broker_cannot_be_restarted(tmp_path, monkeypatch):
    """The nats-server binary disappears, then the broker dies: ``up`` must not linger as a zombie."""
    binary = tmp_path / "bin" / "nats-server"
    binary.parent.mkdir()
    from overwatch_lab.broker.process import find_nats_server

    binary.symlink_to(find_nats_server())
    monkeypatch.setenv("OVERWATCH_LAB_NATS_SERVER", str(binary))
    data_dir = tmp_path / "cli"
    proc = _start_cli(data_dir, "--fleet", "none", "--no-dashboard")
    try:
        broker_pid = json.loads((data_dir / "broker" / "identity.json").read_text())["pid"]
        assert nats_server_pids(str(data_dir)) == [broker_pid]
        binary.unlink()
        os.kill(broker_pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=45)
        assert proc.returncode == 2, err
        assert "error: " in err and "could not be kept running" in err
        assert "nats-server binary" in err and "missing" in err
        assert nats_server_pids(str(data_dir)) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
