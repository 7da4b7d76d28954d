"""Replicas of the lab's streams and KV buckets on a NATS cluster (``LabConfig.replicas``).

``num_replicas`` is a field the lab manages only when a replica count is configured (see
:mod:`overwatch_lab.broker.provision`): then it is compared and scaled in place like a limit;
unset, a new object gets 1 and an existing one keeps what it has. JetStream refuses a count the
servers cannot hold with an error that names neither the count nor the fix: :func:`explain`
adds both.
"""

from __future__ import annotations

from typing import Any

import nats.js.errors
from nats.js import api

REPLICAS_FIELD = "num_replicas"
ERR_NO_PEERS = 10005
"""JSClusterNoPeersErr, "no suitable peers for placement": fewer servers (online) than replicas."""
ERR_INSUFFICIENT_RESOURCES = 10023
"""JSInsufficientResourcesErr: the same, or no room left on enough of them."""
ERR_REPLICAS_NOT_CLUSTERED = 10074
"""JSStreamReplicasNotSupportedErr, "replicas > 1 not supported in non-clustered mode"."""


def managed_fields(fields: tuple[str, ...], replicas: int | None) -> tuple[str, ...]:
    """``fields`` plus ``num_replicas`` when a replica count is configured."""
    return (*fields, REPLICAS_FIELD) if replicas is not None else fields


def kv_want(
    have: api.StreamConfig, replicas: int | None, *, file_storage: bool = True, **limits: Any
) -> tuple[api.StreamConfig, tuple[str, ...]]:
    """What a KV bucket's stream should be and which fields to compare.

    Args:
        have: The bucket's stream config as the server has it.
        replicas: The configured replica count (None: not managed).
        file_storage: Manage ``storage`` too (file).
        **limits: The stream fields the lab sets (``max_msgs_per_subject``, ``max_age``).

    Returns:
        (``have`` with the lab's values, the names of the fields the lab manages).
    """
    changes = dict(limits)
    if file_storage:
        changes["storage"] = api.StorageType.FILE
    if replicas is not None:
        changes[REPLICAS_FIELD] = replicas
    return have.evolve(**changes), tuple(changes)


def explain(exc: BaseException, replicas: int | None) -> str | None:
    """The reason and the fix when ``exc`` is JetStream refusing ``replicas``; None otherwise."""
    if not isinstance(exc, nats.js.errors.APIError):
        return None
    wanted = replicas or 1
    if exc.err_code == ERR_REPLICAS_NOT_CLUSTERED:
        return (
            f"{wanted} replicas need a NATS cluster, and this server is not part of one; set "
            "LabConfig.replicas (--replicas) to 1, or give nats_url the URLs of a cluster"
        )
    if exc.err_code in (ERR_NO_PEERS, ERR_INSUFFICIENT_RESOURCES) and wanted > 1:
        return (
            f"{wanted} replicas need {wanted} JetStream servers of the cluster online with room, and "
            "fewer are; lower LabConfig.replicas (--replicas) or add servers"
        )
    return None
