"""Simulated fleets against a real nats-server with the lab's streams provisioned.

These tests need no Lab: the simulator talks only to NATS. What the lab then makes of the
messages (entities going stale on link loss and recovering, quarantined malformed messages ...)
is tested with a Lab by the lab's own tests.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import sys
import time

import pytest

from overwatch_lab.config import LabConfig
from overwatch_lab.protocol.envelopes import decode_telemetry, parse_timestamp
from overwatch_lab.protocol.subjects import parse_telemetry_subject, published_subject
from simulators.catalog import load_scenario
from simulators.dry_run import telemetry_hash
from simulators.model import FleetModel
from simulators.runner import run_scenario
from simulators.scenario import Scenario
from tests.polling import wait_for

START = 1_790_000_000.0
FLEET = {
    "name": "it-fleet",
    "seed": 12,
    "area": {"center": [47.6, -122.33], "size_m": 1000, "ground_alt_m": 30},
    "orgs": [{"org_id": "it-org", "name": "Integration", "org_type": "civilian"}],
    "fleets": [
        {"name": "quad", "org": "it-org", "kind": "multirotor", "count": 3, "behaviour": "patrol"},
        {"name": "plane", "org": "it-org", "kind": "fixed_wing", "count": 1, "behaviour": "orbit"},
        {"name": "boat", "org": "it-org", "kind": "usv", "count": 1, "behaviour": "patrol"},
    ],
}


def fleet(**changes) -> Scenario:
    return Scenario.from_dict({**FLEET, **changes})


class Broker:
    def __init__(self, server, nc, js) -> None:
        self.server, self.nc, self.js = server, nc, js

    async def stored(self, stream: str) -> int:
        return (await self.js.stream_info(stream)).state.messages

    async def per_subject(self, stream: str) -> dict[str, int]:
        return (await self.js.stream_info(stream, subjects_filter=">")).state.subjects or {}


@pytest.fixture
async def broker(nats_server, nc, js, tmp_path) -> Broker:
    """The shared nats-server/client fixtures, with the lab's streams and KV bucket provisioned."""
    from overwatch_lab.broker.provision import provision

    await provision(js, LabConfig(data_dir=tmp_path))
    return Broker(nats_server, nc, js)


class Capture:
    """A core subscription on every constellation subject, in arrival order."""

    def __init__(self) -> None:
        self.msgs: list[tuple[str, str | None, bytes]] = []

    async def cb(self, msg) -> None:
        self.msgs.append((msg.subject, (msg.headers or {}).get("Nats-Msg-Id"), msg.data))

    def digest(self) -> str:
        h = hashlib.sha256()
        for subject, msg_id, data in self.msgs:
            h.update(subject.encode() + b"\x00" + (msg_id or "").encode() + b"\x00")
            h.update(len(data).to_bytes(4, "big") + data)
        return h.hexdigest()


async def test_a_small_fleet_registers_and_streams_into_jetstream(broker):
    sc = fleet()
    handle = await run_scenario(sc, broker.nc, speed=20.0, duration_s=10.0, register_timeout_s=None)
    async with asyncio.timeout(30):
        stats = await handle.wait()
    assert stats["state"] == "finished" and stats["sim_time_s"] == 10.0
    expected = 5 * 10 * 20.5
    telemetry = sum(v for k, v in stats["by_type"].items() if k.isupper())
    assert telemetry == expected
    await broker.nc.flush()  # the server has every core publish; JetStream stores them a moment later
    async def all_stored() -> bool:
        return await broker.stored("CONSTELLATION_TELEMETRY") == expected

    await wait_for(all_stored, timeout=10, what=f"{expected:.0f} telemetry messages stored")
    assert await broker.stored("CONSTELLATION_TELEMETRY") == expected
    assert await broker.stored("CONSTELLATION_ENTITIES") == 5
    assert await broker.stored("CONSTELLATION_ORGANIZATIONS") == 1
    assert await broker.stored("CONSTELLATION_EVENTS") == 5  # one bootsequence per device
    stored = await broker.per_subject("CONSTELLATION_TELEMETRY")  # the partitioned form
    subjects = {published_subject(k): v for k, v in stored.items()}
    assert set(subjects) == {f"constellation.telemetry.it-org.{e}" for e, *_ in sc.devices()}
    assert set(subjects.values()) == {205}
    (quad0,) = [k for k in stored if published_subject(k) == "constellation.telemetry.it-org.quad-000"]
    msg = await broker.js.get_last_msg("CONSTELLATION_TELEMETRY", quad0)
    t = decode_telemetry(msg.data, parse_telemetry_subject(msg.subject))
    assert msg.headers["Nats-Msg-Id"] == t.message_uid
    assert stats["start"] <= t.ts <= stats["start"] + 10.0


async def test_the_wire_bytes_equal_the_dry_run_hash_at_any_speed(broker):
    sc = fleet(timeline=[{"at_s": 2, "fault": "malformed", "duration_s": 2, "targets": ["quad-001"]}])
    expected = telemetry_hash(sc, 4.0, start_epoch_s=START)
    digests = []
    for speed in (8.0, 40.0, 0.0):
        cap = Capture()
        sub = await broker.nc.subscribe("constellation.>", cb=cap.cb)
        handle = await run_scenario(
            sc, broker.nc, speed=speed, duration_s=4.0, start_epoch_s=START, register_timeout_s=None
        )
        if speed == 0.0:  # manual: stepped by the caller
            await handle.advance(4.0)
            await handle.stop()
        else:
            async with asyncio.timeout(30):
                await handle.wait()
        await broker.nc.flush()
        n = handle.published
        await wait_for(lambda cap=cap, n=n: len(cap.msgs) >= n, timeout=10, what="every message delivered")
        await sub.unsubscribe()
        digests.append(cap.digest())
    assert digests == [expected] * 3


async def test_pause_play_speed_live_faults_and_stop(broker):
    sc = fleet()
    cap = Capture()
    await broker.nc.subscribe("constellation.telemetry.>", cb=cap.cb)
    handle = await run_scenario(sc, broker.nc, speed=10.0, register_timeout_s=None)
    await wait_for(lambda: handle.model.elapsed_s >= 2.0, timeout=10, what="2 s simulated")
    await asyncio.to_thread(handle.pause)  # from another thread, as a lab's caller would
    assert handle.state == "paused"
    paused_at = handle.model.elapsed_s
    await asyncio.sleep(0.3)  # nothing may happen while paused: give it the chance to misbehave
    assert handle.model.elapsed_s == paused_at
    fault = await asyncio.to_thread(handle.inject, "link_loss", 3.0, "quad-002", start_in_s=1.0)
    handle.play()
    handle.set_speed(40.0)
    wall0, sim0 = time.monotonic(), handle.model.elapsed_s
    await wait_for(lambda: handle.model.elapsed_s >= fault.end_s + 2.0, timeout=10, what="past the link loss")
    rate = (handle.model.elapsed_s - sim0) / (time.monotonic() - wall0)
    assert rate > 15.0  # well above the first speed of 10
    stats = await handle.stop()
    assert handle.state == "stopped" and handle.done
    assert stats["link"]["dropped"] > 0
    await broker.nc.flush()
    start = handle.model.clock.start_epoch_s

    def quad2() -> list[float]:
        return [
            parse_timestamp(json.loads(data)["timestamp"])[1] - start
            for subject, _, data in list(cap.msgs)
            if subject.endswith(".quad-002")
        ]

    # it came back (delivery to our own subscription may trail the publishes under load)
    await wait_for(
        lambda: [t for t in quad2() if t >= fault.end_s], timeout=10, what="quad-002 back after the link loss"
    )
    eps = 1e-3  # timestamps go through epoch floats and microsecond text: allow rounding at the edges
    assert not [t for t in quad2() if fault.start_s + eps <= t < fault.end_s - eps]
    timeline = handle.fault_timeline()
    assert list(timeline["entity_id"]) == ["quad-002"] and list(timeline["source"]) == ["live"]


async def test_process_mode_splits_the_fleet_over_workers(broker):
    from simulators.multiproc import run_scenario_processes

    sc = fleet()
    handle = await run_scenario_processes(
        sc,
        broker.server.url,
        auth=broker.server.auth,
        processes=2,
        speed=10.0,
        duration_s=5.0,
        register_timeout_s=None,
    )
    try:
        result = await handle.command("plane-000", {"command_id": "c-1", "command_type": "rtl"})
        assert result.accepted and result.behaviour == "rtl"
        again = await handle.command("plane-000", {"command_id": "c-1", "command_type": "rtl"})
        assert again.duplicate
        async with asyncio.timeout(60):
            stats = await handle.wait()
    finally:
        await handle.stop()
    assert stats["state"] == "finished" and stats["devices"] == 5
    assert [w["devices"] for w in stats["workers"]] == [3, 2]
    dry = collections.Counter(em.entity_id for em in FleetModel(sc).run_dry(5.0) if em.kind == "telemetry")
    expected = sum(dry.values())
    assert sum(v for k, v in stats["by_type"].items() if k.isupper()) == expected
    await wait_for(
        lambda: _at_least(broker, "CONSTELLATION_TELEMETRY", expected), timeout=10, what="telemetry stored"
    )
    assert await broker.stored("CONSTELLATION_TELEMETRY") == expected
    assert await broker.stored("CONSTELLATION_ENTITIES") == 5
    # both workers announced the org under the same Nats-Msg-Id: the server kept one
    assert stats["by_type"]["org"] == 2 and await broker.stored("CONSTELLATION_ORGANIZATIONS") == 1
    stored = await broker.per_subject("CONSTELLATION_TELEMETRY")  # one partition per entity: no merging
    per_subject = {published_subject(k): v for k, v in stored.items()}
    assert per_subject == {f"constellation.telemetry.it-org.{e}": n for e, n in dry.items()}


async def _at_least(broker: Broker, stream: str, n: float) -> bool:
    return await broker.stored(stream) >= n


async def test_the_sim_command_flies_a_scenario_against_a_broker(broker, tmp_path):
    (tmp_path / "lab.json").write_text(
        json.dumps({"nats_url": broker.server.url, "nats_auth": broker.server.auth.to_dict()})
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulators.cli",
        "small-isr-patrol",
        "--data-dir",
        str(tmp_path),
        "--speed",
        "20",
        "--duration",
        "4",
        "--register-timeout",
        "0",  # no lab here: nobody will register the fleet
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert "[finished]" in err.decode()  # the progress display's last line
    sc = load_scenario("small-isr-patrol")
    await wait_for(
        lambda: _at_least(broker, "CONSTELLATION_ENTITIES", sc.device_count),
        timeout=10,
        what="entities stored",
    )
    assert await broker.stored("CONSTELLATION_ORGANIZATIONS") == 1
    assert await broker.stored("CONSTELLATION_TELEMETRY") > sc.device_count * 4 * 20


async def test_registration_waits_for_the_lab_and_resends_what_it_missed(broker):
    """A stand-in for the lab's entity worker drops quad-000's first created event (as the lab
    does when the entity arrives before its organisation); the fleet must notice through the KV
    bucket and send it again under a new id before any bootsequence or telemetry."""
    kv = await broker.js.key_value("CONSTELLATION_GLOBAL_STATE")
    created: list[str] = []
    order: list[str] = []

    async def stand_in_lab(msg) -> None:
        body = json.loads(msg.data)
        created.append(body["id"])
        if body["data"]["entity_id"] == "quad-000" and not body["id"].endswith("-r1"):
            return
        await kv.put(body["data"]["entity_id"], b"{}")

    async def watch(msg) -> None:
        order.append(msg.subject.rsplit(".", 1)[-1] if "events" in msg.subject else msg.subject.split(".")[1])

    await broker.nc.subscribe("constellation.entities.*.created", cb=stand_in_lab)
    await broker.nc.subscribe("constellation.>", cb=watch)
    handle = await run_scenario(fleet(), broker.nc, speed=20.0, duration_s=1.0, register_timeout_s=15.0)
    async with asyncio.timeout(30):
        await handle.wait()
    resent = [c for c in created if c.endswith("-r1")]
    assert len(resent) == 1 and resent[0].startswith("quad-000-created-")
    assert len(created) == 6
    first_boot = order.index("bootsequence")
    assert order[:first_boot].count("entities") == 6  # every created (and the resend) went first
    assert "telemetry" not in order[:first_boot]
