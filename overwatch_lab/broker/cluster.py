"""One node's place in a nats-server cluster on 127.0.0.1: the ``server_name`` and ``cluster``
config of :class:`~overwatch_lab.broker.process.NatsServer` (``NatsServer(cluster=...)``).

JetStream in a cluster needs a unique ``server_name`` per node, one cluster ``name`` shared by all
and at least one configured route; a fresh cluster elects its meta leader once a quorum of the
configured routes is up (measured with 3 nodes: about 5 s after the third node started, none
while only 2 of 3 ran). Routes are plain (no TLS, no route authorization): every node listens
on 127.0.0.1 only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """The ``server_name`` and ``cluster`` block of one node.

    Attributes:
        name: The cluster's name (the same on every node).
        server_name: This node's name, unique in the cluster (JetStream's peer name).
        port: This node's route port on 127.0.0.1.
        routes: The route ports of the cluster's nodes (this node's own may be among them: a
            server ignores a route to itself). At least one: JetStream requires it.
    """

    name: str
    server_name: str
    port: int
    routes: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.routes:
            raise ValueError("a JetStream cluster node needs at least one route")

    def config_lines(self) -> list[str]:
        """The nats-server config lines of this node."""
        routes = ", ".join(json.dumps(f"nats-route://127.0.0.1:{p}") for p in self.routes)
        return [
            f"server_name: {json.dumps(self.server_name)}",
            "cluster {",
            f"  name: {json.dumps(self.name)}",
            f"  listen: {json.dumps(f'127.0.0.1:{self.port}')}",
            f"  routes: [{routes}]",
            "}",
        ]
