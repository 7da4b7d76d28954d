"""Small pieces every worker shares: the unknown-entity rule and building a missing document."""

from __future__ import annotations

import logging
from collections.abc import Awaitable

from overwatch_lab.errors import DatabaseUnavailable
from overwatch_lab.kvstate import Doc
from overwatch_lab.protocol import state
from overwatch_lab.protocol.envelopes import now_timestamp
from overwatch_lab.registry import Registry
from overwatch_lab.store.database import Store
from overwatch_lab.workers.base import Result, hold, poison, retry

log = logging.getLogger(__name__)


async def guarded(step: Awaitable[Result]) -> Result:
    """Await one message's step: an infrastructure fault of the database holds that message, any
    other unexpected failure retries it only."""
    try:
        return await step
    except DatabaseUnavailable as exc:  # disk full, read-only, locked, unreachable: not its fault
        return hold(f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # a KV outage, a conflict storm, a bug: retried, then quarantined
        log.warning("step failed: %r", exc)
        return retry(f"{type(exc).__name__}: {exc}")


def _unknown_reason(entity_id: str) -> str:
    return f"unknown entity {entity_id!r}: register it with a constellation.entities.{{org}}.created event"


class MissCheck:
    """Settles messages naming an unregistered entity, asking the server at most once per batch.

    Final (poison) once the lifecycle consumers are idle; before that the entity may be
    registered a moment later (its ``created`` event is still queued), so it is transient.
    Build one per batch, after the batch was fetched.
    """

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._settled: bool | None = None

    async def unknown_entity(self, entity_id: str) -> Result:
        """The result for a message naming ``entity_id``, which the registry does not know."""
        if self._settled is None:
            self._settled = await self._registry.settled()
        reason = _unknown_reason(entity_id)
        return poison(reason) if self._settled else retry(reason)


async def fresh_doc(store: Store, entity_id: str) -> Doc:
    """Build a new KV document for an entity from its libSQL row.

    Raises:
        LookupError: the entity has no row (deleted meanwhile): the caller retries.
    """
    row = await store.entity(entity_id)
    if row is None:
        raise LookupError(f"entity {entity_id!r} has no row in the entities table")
    return state.new_entity_doc(row, row.get("org_name"), now_timestamp())
