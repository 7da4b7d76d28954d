"""Telemetry in worker processes the lab owns: partitions, late registration, a killed worker."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from overwatch_lab import Lab, LabConfig
from overwatch_lab.broker.connect import connect
from overwatch_lab.broker.process import NatsServer
from overwatch_lab.broker.provision import consumer_config, stream_config
from overwatch_lab.protocol import envelopes
from overwatch_lab.protocol import subjects as s
from overwatch_lab.workers.partitioned import stats_key
from tests.polling import wait_until

pytestmark = pytest.mark.slow

ORG = "org-w"


def _lab(tmp_path, **overrides) -> Lab:
    cfg = dict(data_dir=tmp_path / "lab", sync_period_s=0.5, fetch_timeout_s=0.2, workers=2, ack_wait_s=2.0)
    cfg.update(overrides)
    return Lab.up(LabConfig(**cfg))


def _children(lab: Lab) -> list[dict]:
    return [p for p in lab.stats()["processes"] if p["role"] == "telemetry-worker"]


def test_worker_processes_keep_order_accept_late_entities_and_survive_a_kill(tmp_path):
    lab = _lab(tmp_path)
    try:
        kids = _children(lab)
        assert len(kids) == 2 and all(psutil.pid_exists(k["pid"]) for k in kids)
        assert sorted(d for k in kids for d in k["durables"]) == [
            f"telemetry-processor-p{i}" for i in range(4)
        ]
        lab.register_org(ORG, "workers")
        # registered after the children started: they learn it from libSQL, not from the lab's memory
        entities = [f"d{i}" for i in range(12)]
        for eid in entities:
            lab.register_entity(ORG, eid, "aircraft_multirotor")
        uids: list[str] = []
        for n in range(10):
            for eid in entities:
                uids.append(
                    lab.publish_telemetry(ORG, eid, "VFR_HUD", {"groundspeed": float(n), "heading": 1})
                )
            if n == 4:  # mid-ingest: SIGKILL one worker process
                victim = kids[0]["pid"]
                os.kill(victim, signal.SIGKILL)
        lab.wait_for(
            lambda: (p := _children(lab)) and len(p) == 2 and victim not in {k["pid"] for k in p},
            timeout=15, what="the killed worker process restarted",
        )  # fmt: skip
        lab.wait_for(
            lambda: set(uids) <= set(lab.frames.telemetry(org_id=ORG)["message_uid"]),
            timeout=20, what="every PubAck'd message in history",
        )  # fmt: skip
        for eid in entities:  # per-entity order: the newest message is the live state
            lab.wait_for(lambda e=eid: (d := lab.state_of(e)) and d["vfr"]["groundspeed"] == 9.0, what=eid)
        st = lab.stats()
        assert st["telemetry-worker"]["quarantined"] == 0
        assert {f"telemetry-worker.p{k}" for k in range(4)} <= set(st)
        parts = sum(st[f"telemetry-worker.p{k}"]["acked"] for k in range(4))
        assert st["telemetry-worker"]["acked"] == parts + st["telemetry-worker.unpartitioned"]["acked"]
        assert lab.frames.telemetry(org_id=ORG)["message_uid"].is_unique
        # the worker processes' commits never checkpoint the WAL: the lab's checkpointer does
        lab.wait_for(lambda: lab.stats()["checkpoints"]["copied"] > 0, timeout=10, what="a WAL checkpoint")
    finally:
        lab.down()
    assert not any(
        psutil.pid_exists(k["pid"]) and psutil.Process(k["pid"]).status() != "zombie" for k in kids[1:]
    )


def test_a_restarted_worker_process_carries_its_counters_on(tmp_path):
    """lab.stats()["telemetry-worker"] never goes backwards when a worker process restarts."""
    lab = _lab(tmp_path)
    try:
        lab.register_org(ORG, "workers")
        entities = [f"c{i}" for i in range(12)]
        lab.register_entities(
            [{"org_id": ORG, "entity_id": e, "entity_type": "aircraft_multirotor"} for e in entities]
        )

        def publish_round(n: int) -> None:
            for eid in entities:
                lab.publish_telemetry(ORG, eid, "VFR_HUD", {"groundspeed": float(n), "heading": 1})

        acked: list[int] = []

        def aggregate_acked(want: int) -> bool:
            acked.append(lab.stats()["telemetry-worker"]["acked"])
            return acked[-1] == want

        publish_round(0)
        lab.wait_for(lambda: aggregate_acked(12), what="12 acked and reported")
        victim = _children(lab)[0]
        os.kill(victim["pid"], signal.SIGKILL)  # every ack it made was reported: nothing to redeliver
        lab.wait_for(
            lambda: (p := _children(lab)) and len(p) == 2 and victim["pid"] not in {k["pid"] for k in p},
            timeout=15, what="the killed worker process restarted",
        )  # fmt: skip
        publish_round(1)
        lab.wait_for(lambda: aggregate_acked(24), timeout=15, what="24 acked: the killed child's 12 kept")
        assert acked == sorted(acked)
        st = lab.stats()
        assert sum(st[stats_key(d)]["acked"] for d in victim["durables"]) > 0
        assert st["telemetry-worker"]["quarantined"] == 0
    finally:
        lab.down()


def _worker_pids(parent: int) -> list[int]:
    try:
        kids = psutil.Process(parent).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for kid in kids:
        with contextlib.suppress(psutil.Error):
            if "overwatch_lab.workers.process" in " ".join(kid.cmdline()):
                out.append(kid.pid)
    return out


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


_KERNEL = (
    "import sys, time\n"
    "from overwatch_lab import Lab, LabConfig\n"
    "lab = Lab.up(LabConfig(data_dir=sys.argv[1], workers=2))\n"
    "print('up', flush=True)\n"
    "time.sleep(120)\n"
)


@pytest.mark.parametrize("holder", ["cli", "kernel"])
def test_sigkill_of_the_lab_leaves_no_worker_process_behind(tmp_path, holder):
    data_dir = tmp_path / holder
    if holder == "cli":
        cmd = [sys.executable, "-m", "overwatch_lab.cli", "up", "--data-dir", str(data_dir), "--fleet", "none",
               "--no-dashboard", "--workers", "2"]  # fmt: skip
    else:  # a notebook kernel holding a Lab
        cmd = [sys.executable, "-c", _KERNEL, str(data_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        pids = wait_until(lambda: len(p := _worker_pids(proc.pid)) == 2 and p, 30, interval=0.05,
                          what="2 telemetry worker processes")  # fmt: skip
        assert proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        wait_until(lambda: not any(_alive(p) for p in pids), 10, interval=0.05,
                   what=f"worker processes {pids} gone after SIGKILL of their lab")  # fmt: skip
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        for pid in _worker_pids(proc.pid):  # never leave one behind, even on a failure
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def test_a_stream_from_before_the_partitions_is_still_consumed_by_telemetry_processor(tmp_path):
    """Messages stored on 4-token subjects before the upgrade (no subject transform) have no
    partition token: telemetry-processor, in the lab's own process, still stores them."""
    cfg = LabConfig(data_dir=tmp_path / "lab", workers=0)
    lab = Lab.up(cfg)
    try:
        lab.register_org(ORG, "upgrade")
        lab.register_entities(
            [{"org_id": ORG, "entity_id": e, "entity_type": "aircraft_multirotor"} for e in ("u0", "u1")]
        )
    finally:
        lab.down()
    server = NatsServer(cfg.data_dir / "broker", ready_timeout_s=10.0, stop_timeout_s=5.0)  # lab down
    await server.start()
    old_uids = []
    try:
        nc = await connect(server.url, auth=server.auth, name="pytest-old-lab")
        js = nc.jetstream()
        await js.delete_stream(s.STREAM_TELEMETRY)  # as an older lab provisioned it: no transform
        await js.add_stream(stream_config(s.STREAM_TELEMETRY, cfg.streams[s.STREAM_TELEMETRY]))
        await js.add_consumer(
            s.STREAM_TELEMETRY, consumer_config(s.CONSUMER_TELEMETRY, "constellation.telemetry.>", cfg)
        )
        for i in range(6):
            eid = f"u{i % 2}"
            env = envelopes.make_telemetry(ORG, eid, "VFR_HUD", {"groundspeed": float(i), "heading": 1},
                                           timestamp=time.time() - 60 + i)  # fmt: skip
            ack = await js.publish(s.telemetry_subject(ORG, eid), envelopes.encode(env))
            msg = await js.get_msg(s.STREAM_TELEMETRY, ack.seq)
            assert msg.subject == s.telemetry_subject(ORG, eid)  # stored without a partition token
            old_uids.append(env["message_uid"])
        await nc.close()
    finally:
        await server.stop()

    lab = Lab.up(LabConfig(data_dir=cfg.data_dir, sync_period_s=0.5, fetch_timeout_s=0.2, workers=2))
    try:
        new_uid = lab.publish_telemetry(ORG, "u0", "VFR_HUD", {"groundspeed": 9.0, "heading": 1})
        lab.wait_for(
            lambda: set(old_uids) | {new_uid} <= set(lab.frames.telemetry(org_id=ORG)["message_uid"]),
            timeout=20, what="the old 4-token messages and a new one in history",
        )  # fmt: skip
        st = lab.wait_for(
            lambda: (st := lab.stats())["telemetry-worker"]["acked"] == 7 and st, what="counters"
        )
        assert st["telemetry-worker.unpartitioned"]["acked"] == 6  # the old ones: telemetry-processor
        assert sum(st[f"telemetry-worker.p{k}"]["acked"] for k in range(4)) == 1  # the new one: a partition
        assert st["telemetry-worker"]["quarantined"] == 0
    finally:
        lab.down()
