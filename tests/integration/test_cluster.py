"""A lab on a real three-node NATS cluster (``tests/cluster.py``): R3 streams and buckets, and a
node SIGKILLed mid-ingest loses no acknowledged message while the workers carry on.

The cluster's nodes run with nats-server's default ``sync_interval`` (2 min): a clustered
stream's durability against one dead node is its quorum (2 of 3 hold every PubAck'd message),
not the fsync.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import nats
import nats.errors
import pytest

from overwatch_lab import Lab, LabConfig, LabState
from overwatch_lab.broker.provision import KV_STREAM, consumers, provision, provision_commands
from overwatch_lab.core.stats import STATS_BUCKET
from overwatch_lab.errors import ProvisionError
from overwatch_lab.nats_auth import NatsAuth
from overwatch_lab.protocol import envelopes
from overwatch_lab.protocol import commands as cmds
from overwatch_lab.protocol import subjects as s
from overwatch_lab.runtime import LoopThread
from overwatch_lab.store import queries
from tests.cluster import NatsCluster
from tests.polling import wait_for

pytestmark = pytest.mark.slow

ORG = "org-cluster"
LANES = 8  # entities published concurrently, each in order (one message in flight per lane)
PER_LANE = 250
KILL_AFTER = 600  # PubAck'd messages before a node is SIGKILLed


def cluster_config(cluster: NatsCluster, data_dir: Path, **changes) -> LabConfig:
    changes.setdefault("workers", 0)
    return LabConfig(
        data_dir=data_dir,
        nats_url=cluster.url,
        nats_user=cluster.auth.user,
        nats_password=cluster.auth.password,
        sync_period_s=0.5,
        fetch_timeout_s=0.2,
        **changes,
    )


def lab_streams(cfg: LabConfig) -> list[str]:
    """Every stream the lab provisions: its own, the command acks, the three KV buckets'."""
    return [
        *cfg.streams,
        cmds.STREAM_COMMAND_ACKS,
        KV_STREAM,
        f"KV_{cmds.KV_COMMAND_STATE}",
        f"KV_{STATS_BUCKET}",
    ]


async def _replicas(cluster: NatsCluster, cfg: LabConfig) -> dict[str, tuple[int, int, str | None]]:
    """(num_replicas, peers besides the leader, leader) by stream and by ``STREAM/durable``, once
    every one of them exists and has a leader (the stats bucket is made by the lab's first stats
    pass, a new raft group elects its leader within seconds)."""
    nc = await nats.connect(cluster.urls, **cluster.auth.kwargs())
    js = nc.jetstream()

    async def led() -> dict[str, tuple[int, int, str | None]] | None:
        out: dict[str, tuple[int, int, str | None]] = {}
        try:
            infos = [(name, await js.stream_info(name)) for name in lab_streams(cfg)]
            infos += [(f"{st}/{d}", await js.consumer_info(st, d)) for st, d, _ in consumers(cfg)]
        except nats.errors.Error:
            return None
        for name, info in infos:
            if info.cluster is None or not info.cluster.leader:
                return None
            # A consumer's num_replicas 0 means "as its stream": the peers say how many it has.
            replicas = info.config.num_replicas or len(info.cluster.replicas or []) + 1
            out[name] = (replicas, len(info.cluster.replicas or []), info.cluster.leader)
        return out

    try:
        seen: dict[str, tuple[int, int, str | None]] = await wait_for(led, 15, interval=0.1, what="every leader")
        return seen
    finally:
        await nc.close()


def test_a_lab_on_a_cluster_provisions_r3_streams_and_buckets_and_refuses_more_replicas_than_servers(
    nats_cluster: NatsCluster, tmp_path: Path
):
    # Five replicas on three servers: refused with the count and the fix.
    with pytest.raises(ProvisionError) as info:
        Lab.up(cluster_config(nats_cluster, tmp_path / "r5", replicas=5))
    text = str(info.value)
    assert "5 replicas need 5 JetStream servers" in text and "--replicas" in text, text

    cfg = cluster_config(nats_cluster, tmp_path / "lab", replicas=3)
    lab = Lab.up(cfg)
    thread = LoopThread("cluster-check")
    try:
        seen = thread.call(_replicas(nats_cluster, cfg), timeout=30)
        names = {n.cluster.server_name for n in nats_cluster.nodes if n.cluster}
        assert len(seen) == len(lab_streams(cfg)) + len(consumers(cfg))
        for name, (replicas, peers, leader) in seen.items():
            assert (replicas, peers) == (3, 2) and leader in names, (name, replicas, peers, leader)
        # An R3 lab takes telemetry end to end.
        lab.register_org(ORG)
        lab.register_entity(ORG, "c-1", "aircraft_multirotor")
        uid = lab.publish_telemetry(ORG, "c-1", "VFR_HUD", {"groundspeed": 4.0}, wait=True)
        assert lab.frames.telemetry(entity_id="c-1")["message_uid"].tolist() == [uid]
        lab.down()
        # Scaled in place by the configured count; left alone when none is configured.
        down = thread.call(_provision(nats_cluster, cfg.replace(replicas=1)), timeout=30)
        assert down == {1}
        kept = thread.call(_provision(nats_cluster, cfg.replace(replicas=None)), timeout=30)
        assert kept == {1}
        up = thread.call(_provision(nats_cluster, cfg), timeout=30)
        assert up == {3}
        kept = thread.call(_provision(nats_cluster, cfg.replace(replicas=None)), timeout=30)
        assert kept == {3}
    finally:
        lab.down()
        thread.close()


async def _provision(cluster: NatsCluster, cfg: LabConfig) -> set[int]:
    """Provision ``cfg`` as a lab would at boot, then the num_replicas of its streams and KV
    buckets (the server's config: moving the peers follows within seconds)."""
    nc = await nats.connect(cluster.urls, **cluster.auth.kwargs())
    try:
        js = nc.jetstream()
        await provision(js, cfg)
        await provision_commands(js, cfg)
        out = set()
        for name in [*cfg.streams, cmds.STREAM_COMMAND_ACKS, KV_STREAM, f"KV_{cmds.KV_COMMAND_STATE}"]:
            info = await js.stream_info(name)
            out.add(info.config.num_replicas)
        return out
    finally:
        await nc.close()
