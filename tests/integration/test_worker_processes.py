"""Telemetry in worker processes the lab owns: partitions, late registration, a killed worker."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from overwatch_lab import Lab, LabConfig

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
        assert sorted(d for k in kids for d in k["durables"]) == [f"telemetry-processor-p{i}" for i in range(4)]
        lab.register_org(ORG, "workers")
        # registered after the children started: they learn it from libSQL, not from the lab's memory
        entities = [f"d{i}" for i in range(12)]
        for eid in entities:
            lab.register_entity(ORG, eid, "aircraft_multirotor")
        uids: list[str] = []
        for n in range(10):
            for eid in entities:
                uids.append(lab.publish_telemetry(ORG, eid, "VFR_HUD", {"groundspeed": float(n), "heading": 1}))
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
    finally:
        lab.down()
    assert not any(psutil.pid_exists(k["pid"]) and psutil.Process(k["pid"]).status() != "zombie" for k in kids[1:])
