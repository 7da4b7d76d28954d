"""Small pieces every worker shares: the unknown-entity rule and building a missing document."""

from __future__ import annotations

import logging
from collections.abc import Awaitable

from overwatch_lab.kvstate import Doc
from overwatch_lab.protocol import state
from overwatch_lab.protocol.envelopes import now_timestamp
from overwatch_lab.registry import Registry
from overwatch_lab.store.database import Store
from overwatch_lab.workers.base import Result, poison, retry

log = logging.getLogger(__name__)


async def guarded(step: Awaitable[Result]) -> Result:
    """Await one message's step; an unexpected failure retries that message only."""
    try:
        return await step
    except Exception as exc:  # DB or KV outage, a conflict storm, a bug: retried, then quarantined
        log.warning("step failed: %r", exc)
        return retry(f"{type(exc).__name__}: {exc}")


def unknown_entity(registry: Registry, entity_id: str) -> Result:
    """The result for a message naming an unregistered entity.

    Final (poison) once the lifecycle consumers are caught up; before that the entity may be
    registered a moment later (its ``created`` event is still queued), so it is transient.
    """
    reason = f"unknown entity {entity_id!r}: register it with a constellation.entities.{{org}}.created event"
    return poison(reason) if registry.settled else retry(reason)


async def fresh_doc(store: Store, entity_id: str) -> Doc:
    """Build a new KV document for an entity from its libSQL row.

    Raises:
        LookupError: the entity has no row (deleted meanwhile): the caller retries.
    """
    row = await store.entity(entity_id)
    if row is None:
        raise LookupError(f"entity {entity_id!r} has no row in the entities table")
    return state.new_entity_doc(row, row.get("org_name"), now_timestamp())
