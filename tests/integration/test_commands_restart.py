"""Restart safety: a lab restarted (gracefully or killed) mid-delivery loses no command and executes
none twice. The broker is a separate nats-server here, so devices stay connected across lab runs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from overwatch_lab import Lab, LabConfig
from overwatch_lab.broker.process import NatsServer
from overwatch_lab.protocol import commands as c
from overwatch_lab.protocol.commands import CommandStatus as S
from overwatch_lab.protocol.envelopes import encode
from tests.integration.command_devices import FAST, ORG, Devices, FakeDevice
from tests.polling import wait_for

ENTITIES = ("uav-0", "uav-1", "uav-2")


@pytest.fixture
def broker(tmp_path) -> Iterator[tuple[Devices, NatsServer]]:
    """An external nats-server (started on the devices' loop thread) and the devices' connection."""
    from overwatch_lab.runtime import LoopThread

    starter = LoopThread("test-broker")
    server = NatsServer(tmp_path / "nats", ready_timeout_s=10.0, stop_timeout_s=5.0)
    starter.call(server.start(), 15)
    devices = Devices(server.url, server.auth)
    yield devices, server
    devices.close()
    starter.call(server.stop(), 15)
    starter.close()


def config(tmp_path: Path, server: NatsServer) -> LabConfig:
    return LabConfig(
        data_dir=tmp_path / "lab", nats_url=server.url, nats_user=server.user, nats_password=server.password, fetch_timeout_s=0.2, **FAST
    )


def publish_while_down(devices: Devices, entity_id: str, n: int) -> list[str]:
    """Commands published by an operator while no lab runs: they wait in the work queue."""
    ids = []
    for k in range(n):
        env = c.make_command(ORG, entity_id, "rtl", command_id=f"down-{entity_id}-{k}", ttl_s=120)
        devices.call(devices.nc.jetstream().publish(f"constellation.commands.{ORG}.{entity_id}", encode(env)))
        ids.append(env["command_id"])
    return ids


def assert_all_succeeded_once(lab: Lab, devices: Devices, expected: dict[str, list[str]]) -> None:
    for entity_id, ids in expected.items():
        for cid in ids:
            assert lab.commands.get(cid).wait("SUCCEEDED", timeout=20) is S.SUCCEEDED, (entity_id, cid)
        counts = Counter(devices.executed(entity_id))
        assert set(counts) == set(ids), entity_id
        assert max(counts.values()) == 1, f"{entity_id} executed a command twice: {counts}"
    frame = lab.frames.commands()
    assert len(frame) == sum(map(len, expected.values())) and (frame["status"] == "SUCCEEDED").all()


def test_graceful_restart_mid_delivery(tmp_path, broker):
    devices, server = broker
    release = asyncio.Event()

    async def slow(command: dict, result: Any) -> str | None:
        await release.wait()
        return None

    devices.add("uav-0", execute=slow)  # will be EXECUTING when the lab stops
    devices.add("uav-1", online=False)  # SENT, resending, when the lab stops
    devices.add("uav-2")  # answers at once
    lab = Lab.up(config(tmp_path, server))
    lab.register_org(ORG)
    for e in ENTITIES:
        lab.register_entity(ORG, e, "aircraft_multirotor")
    sent = {e: [lab.commands.send(e, "hold", ttl_s=120).command_id for _ in range(5)] for e in ENTITIES}
    for cid in sent["uav-0"]:
        lab.commands.get(cid).wait("EXECUTING", timeout=10)
    for cid in sent["uav-1"]:
        lab.commands.get(cid).wait("SENT", timeout=10)
    lab.down()

    # while no lab runs: executions finish (acks wait in their stream), uav-1 comes back, and
    # an operator queues more commands
    devices.call(_set(release))
    devices.online("uav-1")
    sent["uav-2"] += publish_while_down(devices, "uav-2", 5)
    devices.call(
        wait_for(lambda: devices.links["uav-0"].stats.acks_sent == 4 * 5, 10.0)
    )  # RECEIVED…SUCCEEDED

    lab2 = Lab.up(config(tmp_path, server))
    try:
        assert_all_succeeded_once(lab2, devices, sent)
        hist = lab2.commands.get(sent["uav-0"][0]).history
        assert list(hist["status"])[-1] == "SUCCEEDED" and hist.iloc[-1]["source"] == "device"
    finally:
        lab2.down()


def test_killed_lab_mid_delivery(tmp_path, broker):
    """The lab process is SIGKILLed while commands are in flight; a new lab finishes them all."""
    devices, server = broker
    devices.add("uav-0", online=False)
    devices.add("uav-1")
    lab = Lab.up(config(tmp_path, server))  # provision and register, then hand over to a child process
    lab.register_org(ORG)
    for e in ENTITIES:
        lab.register_entity(ORG, e, "aircraft_multirotor")
    lab.down()
    child = subprocess.Popen(
        [sys.executable, "-m", "overwatch_lab.cli", "up", "--data-dir", str(tmp_path / "lab"),
         "--nats-url", server.url, "--nats-user", server.user, "--nats-password", server.password, "--fleet", "none", "--no-dashboard"],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline().startswith("overwatch-lab: starting")
        assert child.stdout.readline().startswith("overwatch-lab is up")
        attached = Lab.attach(tmp_path / "lab", identity="operator")
        try:
            sent = {
                e: [attached.commands.send(e, "rtl", ttl_s=120).command_id for _ in range(10)]
                for e in ENTITIES[:2]
            }
            for cid in sent["uav-0"]:
                attached.commands.get(cid).wait("SENT", timeout=10)
            attached.commands.get(sent["uav-1"][-1]).wait("SUCCEEDED", timeout=10)
        finally:
            attached.down()
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(10)
        child.stdout.close()
    devices.online("uav-0")
    (tmp_path / "lab" / "lab.json").unlink(missing_ok=True)
    lab2 = Lab.up(config(tmp_path, server))
    try:
        assert_all_succeeded_once(lab2, devices, sent)
        counts = lab2.frames.commands(entity_id="uav-0")["attempts"]
        assert (counts >= 1).all()
    finally:
        lab2.down()


def test_a_device_reconnecting_after_the_lab_restarts_gets_pending_commands(tmp_path, broker):
    devices, server = broker
    device = FakeDevice()
    devices.add("uav-0", device, online=False)
    lab = Lab.up(config(tmp_path, server))
    lab.register_org(ORG)
    lab.register_entity(ORG, "uav-0", "aircraft_multirotor")
    h = lab.commands.send("uav-0", "land", ttl_s=120)
    h.wait("SENT", timeout=10)
    lab.down()
    lab2 = Lab.up(config(tmp_path, server))
    try:
        assert lab2.stats()["commands"]["open"] == 1  # resumed from libSQL
        devices.online("uav-0")
        assert lab2.commands.get(h.command_id).wait(timeout=10) is S.SUCCEEDED
        assert device.executed == [h.command_id]
        # The KV mirror follows the ledger: wait for it rather than read it at once.
        docs = lab2.wait_for(
            lambda: (
                (d := lab2.commands.get(h.command_id).docs()).get("uav-0", {}).get("status") == "SUCCEEDED"
                and d
            ),
            what="SUCCEEDED mirrored to KV",
        )
        doc = docs["uav-0"]
        assert json.dumps(doc) and doc["attempts"] >= 2
    finally:
        lab2.down()


async def _set(event: asyncio.Event) -> None:
    event.set()
