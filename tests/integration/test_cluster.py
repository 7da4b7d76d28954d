"""A lab on a real three-node NATS cluster (``tests/cluster.py``): R3 streams and buckets, and a
node SIGKILLed mid-ingest loses no acknowledged message while the workers carry on.

The cluster's nodes run with nats-server's default ``sync_interval`` (2 min): a clustered
stream's durability against one dead node is its quorum (2 of 3 hold every PubAck'd message),
not the fsync.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS

from overwatch_lab import Lab, LabConfig, LabState
from overwatch_lab.broker.process import NatsServer
from overwatch_lab.broker.provision import KV_STREAM, consumers, provision, provision_commands
from overwatch_lab.core.stats import STATS_BUCKET
from overwatch_lab.errors import ProvisionError
from overwatch_lab.nats_auth import NatsAuth
from overwatch_lab.protocol import commands as cmds
from overwatch_lab.protocol import envelopes
from overwatch_lab.protocol import subjects as s
from overwatch_lab.runtime import LoopThread
from overwatch_lab.store import queries
from tests.cluster import NatsCluster
from tests.polling import wait_for

log = logging.getLogger(__name__)

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


@pytest.mark.slow
async def test_replicas_on_a_single_server_are_refused_saying_it_is_not_a_cluster(
    nats_server: NatsServer, nc: NATS, tmp_path: Path
):
    cfg = LabConfig(data_dir=tmp_path / "lab", nats_url=nats_server.url, replicas=3)
    with pytest.raises(ProvisionError) as info:
        await provision(nc.jetstream(), cfg)
    text = str(info.value)
    assert "stream CONSTELLATION_ENTITIES" in text and "not part of one" in text and "--replicas" in text, text
    # One replica is what a single server has: scaled to explicitly, nothing changes.
    report = await provision(nc.jetstream(), cfg.replace(replicas=1))
    assert report.created and not report.updated
    assert (await provision(nc.jetstream(), cfg.replace(replicas=1))).changed is False


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
        out: set[int] = set()
        for name in [*cfg.streams, cmds.STREAM_COMMAND_ACKS, KV_STREAM, f"KV_{cmds.KV_COMMAND_STATE}"]:
            info = await js.stream_info(name)
            out.add(info.config.num_replicas or 0)
        return out
    finally:
        await nc.close()


class ClusterPublisher:
    """An outside device fleet on its own connection (every node's URL): each lane publishes one
    entity's telemetry in order, one message in flight, resending a message (same Nats-Msg-Id:
    the stream drops a copy it already has) until it is PubAck'd, and keeps every PubAck."""

    def __init__(self, urls: list[str], auth: NatsAuth, entities: list[str]) -> None:
        self.urls, self.auth, self.entities = urls, auth, entities
        self.acked: list[tuple[float, str]] = []  # (monotonic time, message_uid)
        self.retries = 0

    async def run(self) -> None:
        nc = await nats.connect(
            self.urls, **self.auth.kwargs(), name="cluster-publisher", max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
        )  # fmt: skip
        try:
            js = nc.jetstream()
            await asyncio.gather(*(self._lane(js, eid) for eid in self.entities))
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
                    except (nats.errors.Error, TimeoutError):  # no leader yet, or our node died
                        self.retries += 1
                        await asyncio.sleep(0.05)  # a device's resend pause, not synchronisation
            self.acked.append((time.monotonic(), uid))

    def longest_gap_s(self) -> float:
        """The longest time without a PubAck (the failover as a device saw it)."""
        times = [t for t, _ in self.acked]
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)


def connected_port(lab: Lab) -> int | None:
    url = lab._core.nc.connected_url
    return url.port if url is not None else None


def worker_pids(lab: Lab) -> list[int]:
    return [p["pid"] for p in lab.stats()["processes"] if p["role"] == "telemetry-worker"]


def stored_uids(lab: Lab) -> set[str]:
    return set(queries.read_frame(lab.db_url, "SELECT message_uid FROM telemetry")["message_uid"])


async def _move_leader(cluster: NatsCluster, stream: str, to: str) -> str:
    """Make ``to`` the leader of ``stream`` (stepdown with a preferred peer); return the leader."""
    nc = await nats.connect(cluster.urls, **cluster.auth.kwargs())
    js = nc.jetstream()

    async def leader() -> str | None:
        try:
            info = await js.stream_info(stream)
        except nats.errors.Error:
            return None
        return info.cluster.leader if info.cluster else None

    try:
        if await wait_for(leader, 10, what=f"a leader of {stream}") != to:
            body = json.dumps({"placement": {"preferred": to}}).encode()
            await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", body, timeout=5)
        led: str = await wait_for(lambda: _is(leader(), to), 15, interval=0.05, what=f"{to} leading {stream}")
        return led
    finally:
        await nc.close()


async def _is(value, want: str) -> str | None:
    got = await value
    return got if got == want else None


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "worker-process"])
def test_a_node_sigkilled_mid_ingest_loses_no_acknowledged_message_and_the_workers_carry_on(
    nats_cluster: NatsCluster, tmp_path: Path, workers: int
):
    # ack_wait short: a delivery whose ack died with the node comes back in seconds, not 30.
    cfg = cluster_config(
        nats_cluster, tmp_path / "lab", replicas=3, ack_wait_s=3.0, stale_after_s=60.0, workers=workers
    )
    lab = Lab.up(cfg)
    thread = LoopThread("cluster-publisher")
    try:
        lab.register_org(ORG)
        entities = [f"c-{i}" for i in range(LANES)]
        for eid in entities:
            lab.register_entity(ORG, eid, "sensor_platform")
        lab.wait_for(lambda: all(lab.state_of(e) for e in entities), what="entities in KV")
        # The worst node to lose: the one the lab is connected to, leading the telemetry stream.
        port = connected_port(lab)
        victim = next(n.cluster.server_name for n in nats_cluster.nodes if n.cluster and n.url.endswith(f":{port}"))
        assert thread.call(_move_leader(nats_cluster, s.STREAM_TELEMETRY, victim), timeout=30) == victim

        procs = worker_pids(lab)
        assert len(procs) == workers
        publisher = ClusterPublisher(nats_cluster.urls, nats_cluster.auth, entities)
        done = thread.submit(publisher.run())
        lab.wait_for(lambda: len(publisher.acked) >= KILL_AFTER or done.done(), timeout=30, what="acks")
        nats_cluster.kill(victim)
        killed_at = time.monotonic()
        acked_at_kill = len(publisher.acked)

        done.result(timeout=60)  # every message PubAck'd in the end, by the two nodes left
        uids = {uid for _, uid in publisher.acked}
        assert len(uids) == LANES * PER_LANE and acked_at_kill < LANES * PER_LANE
        after = [uid for t, uid in publisher.acked if t > killed_at]
        assert after, "nothing was acknowledged after the kill"
        # 0 acknowledged messages lost: every PubAck'd message_uid has its history row.
        lab.wait_for(lambda: not (uids - stored_uids(lab)), timeout=30, what="every acked uid stored")
        # The workers carried on: the lab reconnected to a node left and kept its state live.
        assert lab.state is LabState.RUNNING
        assert lab._core.nc.is_connected and connected_port(lab) != port
        newest = float(PER_LANE - 1)
        lab.wait_for(
            lambda: all((d := lab.state_of(e)) and d["vfr"]["groundspeed"] == newest for e in entities),
            timeout=10,
            what="every entity's newest message in its live state",
        )
        assert lab.stats()["telemetry-worker"]["quarantined"] == 0
        assert worker_pids(lab) == procs  # a worker process reconnected by itself, not restarted
        new_leader = thread.call(_leader_of(nats_cluster, s.STREAM_TELEMETRY), timeout=20)
        assert new_leader != victim
        # The killed node comes back on its ports and catches up: the stream is whole on 3 again.
        nats_cluster.restart_now(victim)
        thread.call(_caught_up(nats_cluster, s.STREAM_TELEMETRY, LANES * PER_LANE), timeout=40)
        log.warning(  # the failover as measured (shown with -o log_cli=true)
            f"cluster kill (workers={workers}): {len(uids)} acked, {acked_at_kill} before the kill of {victim}, "
            f"{len(after)} after; longest PubAck gap {publisher.longest_gap_s():.2f} s, "
            f"{publisher.retries} resends; new telemetry leader {new_leader}"
        )
    finally:
        lab.down()
        thread.close()


async def _caught_up(cluster: NatsCluster, stream: str, messages: int) -> None:
    nc = await nats.connect(cluster.urls, **cluster.auth.kwargs())
    js = nc.jetstream()

    async def whole() -> bool:
        try:
            info = await js.stream_info(stream)
        except nats.errors.Error:
            return False
        peers = info.cluster.replicas or [] if info.cluster else []
        return info.state.messages == messages and len(peers) == 2 and all(p.current for p in peers)

    try:
        await wait_for(whole, 30, interval=0.1, what=f"{stream} with {messages} messages on 3 current peers")
    finally:
        await nc.close()


async def _leader_of(cluster: NatsCluster, stream: str) -> str:
    nc = await nats.connect([u for u, n in zip(cluster.urls, cluster.nodes, strict=True) if n.is_running()],
                            **cluster.auth.kwargs())  # fmt: skip
    try:
        info = await nc.jetstream().stream_info(stream)
        assert info.cluster is not None and info.cluster.leader
        return info.cluster.leader
    finally:
        await nc.close()
