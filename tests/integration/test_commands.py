"""Commands end to end: a real lab (nats-server + libSQL), devices on the wire via CommandLink.

The devices run on a loop thread of their own (like a separate process would), so the blocking
lab API (``handle.wait``) can be used from the test while devices answer.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from overwatch_lab import Lab
from overwatch_lab.errors import CommandError, CommandRejected, CommandTimeout
from overwatch_lab.protocol import commands as c
from overwatch_lab.protocol.commands import CommandStatus as S
from overwatch_lab.protocol.envelopes import encode
from simulators.command_link import CommandLink
from tests.integration.command_devices import FAST, ORG, Devices, FakeDevice


@pytest.fixture
def cmd_lab(lab_factory) -> Lab:
    lab = lab_factory(**FAST)
    lab.register_org(ORG)
    for n in range(3):
        lab.register_entity(ORG, f"uav-{n}", "aircraft_multirotor")
    return lab


@pytest.fixture
def devices(cmd_lab: Lab) -> Iterator[Devices]:
    d = Devices(cmd_lab.nats_url, cmd_lab.nats_auth)
    yield d
    d.close()


def row(lab: Lab, command_id: str, entity_id: str | None = None) -> dict[Any, Any]:
    filters = {"command_id": command_id} | ({"entity_id": entity_id} if entity_id else {})
    frame = lab.frames.commands(**filters)
    assert len(frame) == 1, frame
    return frame.iloc[0].to_dict()


def test_goto_runs_the_whole_lifecycle(cmd_lab, devices):
    devices.add("uav-0")
    h = cmd_lab.commands.send("uav-0", "goto", lat=32.9, lon=-96.8, alt_m=40, speed_mps=8)
    assert h.wait("SUCCEEDED", timeout=10) is S.SUCCEEDED
    assert h.status is S.SUCCEEDED and devices.executed("uav-0") == [h.command_id]
    hist = h.history
    assert list(hist["status"]) == ["QUEUED", "SENT", "RECEIVED", "ACCEPTED", "EXECUTING", "SUCCEEDED"]
    assert hist["applied"].all() and hist["at"].is_monotonic_increasing
    assert list(hist["source"]) == ["lab", "lab", "device", "device", "device", "device"]
    r = row(cmd_lab, h.command_id)
    assert r["action"] == "goto" and r["command_type"] == "command_int" and r["attempts"] == 1
    for a, b in (("queued", "sent"), ("sent", "received"), ("received", "accepted"), ("executing", "done")):
        assert r[f"{a}_to_{b}_ms"] >= 0, (a, b, r)
    assert r["total_ms"] < 5000
    doc = h.docs()["uav-0"]
    assert [x["status"] for x in doc["history"]][-1] == "SUCCEEDED" and doc["fanout"] == 1
    assert cmd_lab.commands.get(h.command_id).status is S.SUCCEEDED
    assert cmd_lab.stats()["commands"]["open"] == 0


async def test_the_handle_is_awaitable_from_another_loop(cmd_lab, devices):
    devices.add("uav-1")
    h = await asyncio.to_thread(cmd_lab.commands.send, "uav-1", "rtl")
    assert await h.wait_async("ACCEPTED", timeout=10) is S.ACCEPTED
    assert await h is S.SUCCEEDED


def test_offline_device_gets_the_command_when_it_returns_within_the_ttl(cmd_lab, devices):
    link = devices.add("uav-0", online=False)
    h = cmd_lab.commands.send("uav-0", "land", ttl_s=30)
    # the lab keeps resending while the device is silent
    attempts = lambda: cmd_lab.frames.commands(command_id=h.command_id)["attempts"].sum()  # noqa: E731
    cmd_lab.wait_for(lambda: attempts() >= 3, timeout=10, what="resends")
    assert h.status is S.SENT and devices.executed("uav-0") == []
    devices.online("uav-0")
    assert h.wait("SUCCEEDED", timeout=10) is S.SUCCEEDED
    assert devices.executed("uav-0") == [h.command_id] and link.stats.executed == 1
    sent = h.history.query("status == 'SENT'")
    assert len(sent) >= 3 and sent["reason"].str.startswith("delivery attempt").all()


def test_offline_device_past_the_ttl_gets_expired_and_never_executes(cmd_lab, devices):
    devices.add("uav-0", online=False)
    h = cmd_lab.commands.send("uav-0", "hold", ttl_s=0.5)
    with pytest.raises(CommandError, match="EXPIRED") as info:
        h.wait("SUCCEEDED", timeout=10)
    assert not isinstance(info.value, CommandRejected) and info.value.status is S.EXPIRED
    assert "not received within ttl_s 0.5" in h.reasons["uav-0"]
    devices.online("uav-0")
    later = cmd_lab.commands.send("uav-0", "rtl")
    later.wait(timeout=10)  # the device is reachable now: the expired command was never re-sent
    assert devices.executed("uav-0") == [later.command_id]
    assert row(cmd_lab, h.command_id)["status"] == "EXPIRED"


def test_bad_commands_are_rejected_with_the_reason_recorded(cmd_lab, devices):
    devices.add("uav-0")
    bad = {
        "unknown entity": cmd_lab.commands.send("ghost", "rtl", org_id=ORG),
        "unknown action": cmd_lab.commands.send("uav-0", "teleport"),
        "invalid params": cmd_lab.commands.send("uav-0", "goto", lat=91.0, lon=0.0),
        "lat and lon": cmd_lab.commands.send("uav-0", "land", lat=1.0),
    }
    expired = c.make_command(ORG, "uav-0", "rtl", command_id="old-1", issued_at=1_000_000.0, ttl_s=5)
    cmd_lab.publish(f"constellation.commands.{ORG}.uav-0", expired, msg_id="old-1")
    oversize = c.make_command(ORG, "uav-0", "rtl", command_id="big-1") | {"metadata": {"blob": "x" * 20_000}}
    cmd_lab.publish(f"constellation.commands.{ORG}.uav-0", oversize, msg_id="big-1")
    reasons = {}
    for what, h in bad.items():
        with pytest.raises(CommandRejected) as info:
            h.wait(timeout=10)
        reasons[what] = info.value.reason
    assert "unknown entity 'ghost'" in reasons["unknown entity"]
    assert "unknown action 'teleport'" in reasons["unknown action"]
    assert "'lat' = 91.0 is outside" in reasons["invalid params"]
    assert "lat and lon go together" in reasons["lat and lon"]
    cmd_lab.wait_for(lambda: len(cmd_lab.frames.commands(status="REJECTED")) == 6, what="6 rejections")
    assert "expired on arrival" in row(cmd_lab, "old-1")["reason"]
    assert row(cmd_lab, "big-1")["reason"].startswith("oversize")
    for h in bad.values():
        assert list(h.history["status"]) == ["QUEUED", "REJECTED"]
    assert devices.executed("uav-0") == []  # nothing bad reached the device
    # a body that is not even a command is quarantined, not dropped
    cmd_lab.publish(f"constellation.commands.{ORG}.uav-0", b"\x00not json", msg_id="junk-1")
    q = cmd_lab.wait_for(
        lambda: (f := cmd_lab.frames.quarantine()).query("worker == 'command-worker'").shape[0] == 1 and f,
        what="quarantine record",
    )
    assert "malformed JSON" in q.query("worker == 'command-worker'").iloc[0]["error"]


def test_device_rejection_and_failure_carry_the_device_reason(cmd_lab, devices):
    devices.add("uav-0", FakeDevice(reject="battery at 12 %: cannot arm"))

    async def motor_failure(command: dict, result: Any) -> str | None:
        return "motor 3 failed at 40 m" if command["command_type"] == "goto" else None

    devices.add("uav-1", execute=motor_failure)
    rejected = cmd_lab.commands.send("uav-0", "arm")
    with pytest.raises(CommandRejected, match="battery at 12 %"):
        rejected.wait(timeout=10)
    assert list(rejected.history["status"]) == ["QUEUED", "SENT", "RECEIVED", "REJECTED"]
    failed = cmd_lab.commands.send("uav-1", "goto", lat=1.0, lon=2.0)
    with pytest.raises(CommandError, match="motor 3 failed") as info:
        failed.wait(timeout=10)
    assert info.value.status is S.FAILED
    assert list(failed.history["status"])[-2:] == ["EXECUTING", "FAILED"]
    assert row(cmd_lab, failed.command_id)["reason"] == "motor 3 failed at 40 m"
    assert failed.wait(None, timeout=5) is S.FAILED  # waiting for "any final status" does not raise


def test_duplicate_delivery_and_late_acks_never_move_a_command_backwards(cmd_lab, devices):
    link = devices.add("uav-0")
    h = cmd_lab.commands.send("uav-0", "set_speed", speed_mps=6.0)
    h.wait(timeout=10)
    # the same delivery again (as after a lab restart): re-acked, not executed again
    delivery = c.make_delivery({"command_id": h.command_id, "action": "set_speed"}, expires_ts=9e9, attempt=9)
    devices.call(devices.nc.publish(c.delivery_subject(ORG, "uav-0"), encode(delivery)))
    cmd_lab.wait_for(lambda: link.stats.duplicates == 1, what="duplicate seen")
    # a late RECEIVED and a stray FAILED arrive after SUCCEEDED
    for status, reason in ((S.RECEIVED, None), (S.FAILED, "late")):
        ack = c.make_ack(ORG, "uav-0", h.command_id, status, reason, ts=1.0)
        cmd_lab.publish(c.ack_subject(ORG, "uav-0"), ack)
    hist = cmd_lab.wait_for(lambda: (f := h.history)[~f["applied"]].shape[0] >= 2 and f, what="ignored acks")
    assert h.status is S.SUCCEEDED and devices.executed("uav-0") == [h.command_id]
    assert list(hist[~hist["applied"]]["status"]) == ["RECEIVED", "FAILED"]
    assert list(hist[hist["applied"]]["status"])[-1] == "SUCCEEDED"
    # the counter moves once the ack worker's DB call returns, just after the rows are visible
    cmd_lab.wait_for(lambda: cmd_lab.stats()["commands"]["acks_ignored"] == 2, what="2 acks ignored")
    # the device's re-ack of SUCCEEDED carried the original Nats-Msg-Id: the server dropped it
    assert link.stats.acks_sent == 5


def test_broadcast_fans_out_and_is_tracked_per_entity(cmd_lab, devices):
    devices.add("uav-0")
    devices.add("uav-1")
    devices.add("uav-2", online=False)
    h = cmd_lab.commands.broadcast(ORG, "set_mode", mode="RTL", ttl_s=1.0)
    assert h.broadcast
    with pytest.raises(CommandError, match="uav-2 ended EXPIRED"):
        h.wait("SUCCEEDED", timeout=10)
    assert h.statuses == {"uav-0": S.SUCCEEDED, "uav-1": S.SUCCEEDED, "uav-2": S.EXPIRED}
    assert h.status is S.EXPIRED
    frame = cmd_lab.frames.commands(command_id=h.command_id)
    assert len(frame) == 3 and frame["broadcast"].all()
    assert set(frame["entity_id"]) == {"uav-0", "uav-1", "uav-2"}
    assert devices.executed("uav-0") == devices.executed("uav-1") == [h.command_id]
    empty = cmd_lab.commands.broadcast("org-nobody", "rtl")
    with pytest.raises(CommandRejected, match="unknown organization 'org-nobody'"):
        empty.wait(timeout=10)


def test_cancel_before_delivery_is_final_and_the_device_never_executes_it(cmd_lab, devices):
    devices.add("uav-0", online=False)
    h = cmd_lab.commands.send("uav-0", "orbit", radius_m=80, ttl_s=30)
    h.wait("SENT", timeout=10)
    assert h.cancel(timeout=10) is True
    assert h.status is S.CANCELLED and h.reasons["uav-0"] == "cancelled by operator"
    devices.online("uav-0")
    later = cmd_lab.commands.send("uav-0", "rtl")
    later.wait(timeout=10)
    assert devices.executed("uav-0") == [later.command_id]
    assert later.cancel(timeout=2) is False  # too late: it already succeeded


def test_cancel_during_execution_is_confirmed_by_the_device(cmd_lab, devices):
    started = asyncio.Event()

    async def long_flight(command: dict, result: Any) -> str | None:
        started.set()
        await asyncio.Event().wait()  # until cancelled
        return None

    devices.add("uav-0", execute=long_flight)
    h = cmd_lab.commands.send("uav-0", "follow_route", waypoints=[[1, 2, 30], [1.001, 2.001, 30]], loop=True)
    h.wait("EXECUTING", timeout=10)
    assert h.cancel(timeout=10) is True
    hist = h.history
    assert list(hist[hist["applied"]]["status"])[-2:] == ["EXECUTING", "CANCELLED"]
    assert hist.iloc[-1]["source"] == "device"


def test_wait_times_out_with_the_statuses_seen(cmd_lab, devices):
    devices.add("uav-0", online=False)
    h = cmd_lab.commands.send("uav-0", "rtl", ttl_s=30)
    with pytest.raises(CommandTimeout, match="SENT"):
        h.wait("SUCCEEDED", timeout=0.5)
    assert Counter(h.statuses.values()) == {S.SENT: 1}


def test_a_device_that_goes_silent_mid_execution_ends_failed(lab_factory):
    lab = lab_factory(**FAST, command_result_timeout_s=0.5)
    lab.register_org(ORG)
    lab.register_entity(ORG, "uav-0", "aircraft_multirotor")
    devices = Devices(lab.nats_url, lab.nats_auth)
    try:

        async def hang(command: dict, result: Any) -> str | None:
            await asyncio.Event().wait()
            return None

        devices.add("uav-0", execute=hang)
        h = lab.commands.send("uav-0", "goto", lat=1.0, lon=2.0)
        with pytest.raises(CommandError, match="no result from the device within 0.5 s of EXECUTING"):
            h.wait(timeout=10)
        assert h.history.iloc[-1]["source"] == "lab" and lab.stats()["commands"]["timed_out"] == 1
    finally:
        devices.close()


def test_cli_command_prints_each_transition(cmd_lab, devices):
    devices.add("uav-2")
    base = [sys.executable, "-m", "overwatch_lab.cli", "command", "--data-dir", str(cmd_lab.config.data_dir)]
    ok = subprocess.run(
        [*base, "uav-2", "goto", "lat=32.9", "lon=-96.8", "alt_m=40", "--ttl", "30"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[0].startswith("command cmd-") and "goto → uav-2" in lines[0]
    shown = [line.split()[2] for line in lines[1:-1]]
    assert shown == ["QUEUED", "SENT", "RECEIVED", "ACCEPTED", "EXECUTING", "SUCCEEDED"]
    assert lines[-1] == "final: SUCCEEDED"
    bad = subprocess.run(
        [*base, "uav-2", "set_mode", "mode=WARP"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 1 and "REJECTED" in bad.stdout and "unknown mode 'WARP'" in bad.stdout
    assert bad.stdout.splitlines()[-1] == "final: REJECTED"


def test_real_simulated_devices_execute_every_action(cmd_lab, devices):
    """The simulators' own devices behind CommandLink: each action maps onto a behaviour."""
    import numpy as np

    from simulators.clock import SimClock
    from simulators.devices import make_device

    clock = SimClock(1_767_268_800.0, rate=0.0)

    def build(kind: str, entity_id: str) -> Any:
        return make_device(kind, entity_id=entity_id, org_id=ORG, clock=clock, rng=np.random.default_rng(1),
                           lat=47.6, lon=-122.33, ground_alt_msl_m=100.0)  # fmt: skip

    copter, sensor = build("multirotor", "uav-0"), build("sensor", "uav-1")
    for dev in (copter, sensor):
        link = CommandLink(devices.nc, ORG, dev.entity_id, dev.handle_command)
        devices.links[dev.entity_id] = link
        devices.call(link.start())
    actions = [
        ("arm", {}, "idle"),
        ("goto", {"lat": 47.601, "lon": -122.33, "alt_m": 40, "speed_mps": 8}, "goto"),
        ("set_speed", {"speed_mps": 6.0}, "goto"),
        ("orbit", {"lat": 47.601, "lon": -122.33, "radius_m": 80, "clockwise": False}, "orbit"),
        ("follow_route", {"waypoints": [[47.6, -122.33, 30], [47.61, -122.33]], "loop": True}, "route"),
        ("hold", {}, "hold"),
        ("set_mode", {"mode": "LOITER"}, "hold"),
        ("rtl", {}, "rtl"),
    ]
    for action, params, behaviour in actions:
        h = cmd_lab.commands.send("uav-0", action, **params)
        assert h.wait(timeout=10) is S.SUCCEEDED, action
        assert copter.behaviour.name == behaviour, (action, copter.behaviour)
    assert list(copter.executed) == cmd_lab.frames.commands(entity_id="uav-0")["command_id"].tolist()
    refused = cmd_lab.commands.send("uav-1", "goto", lat=47.7, lon=-122.3)
    with pytest.raises(CommandRejected, match="sensor cannot move"):
        refused.wait(timeout=10)


def test_the_commands_benchmark_runs_small(tmp_path):
    from overwatch_lab.bench import commands as bench

    result = bench.run(devices=5, commands=40, sequential=3, out_dir=tmp_path / "out")
    assert result["succeeded"] == 40 and result["not_succeeded"] == 0
    assert result["devices_stats"]["executed"] == 43 and result["devices_stats"]["duplicates"] == 0
    for stage in ("issued_to_queued", "queued_to_sent", "sent_to_received", "executing_to_done"):
        assert result["stages"][stage]["n"] == 40
    assert result["throughput_cmd_s"] > 0 and result["ceiling"]["concurrent_rate"] > 0
    text = bench.report(result)
    assert "sent_to_received" in text and Path(result["json_path"]).is_file()


def test_a_redelivered_ack_heals_a_stale_kv_mirror(cmd_lab, devices):
    """As after a crash between the libSQL commit and the KV put: the redelivered message is
    refused by the store (already applied) but re-mirrors the stored state."""
    devices.add("uav-0")
    h = cmd_lab.commands.send("uav-0", "rtl")
    h.wait(timeout=10)

    async def forget() -> None:
        kv = await cmd_lab._core.command_kv()
        await kv.delete(c.state_key(h.command_id, "uav-0"))

    cmd_lab.call(forget())
    assert h.status is None  # the mirror lost it
    again = c.make_ack(ORG, "uav-0", h.command_id, S.SUCCEEDED, ts=2.0)
    cmd_lab.publish(c.ack_subject(ORG, "uav-0"), again)
    assert cmd_lab.wait_for(lambda: h.status, what="mirror healed") is S.SUCCEEDED
    assert h.docs()["uav-0"]["history"][-1]["status"] == "SUCCEEDED"
