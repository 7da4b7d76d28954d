"""Which organisations and entities exist: the in-memory view the workers check per message.

Loaded from libSQL at boot, updated by the entity worker as events are applied, so an entity
registered after boot can send telemetry at once (Overwatch only reloads it on restart).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable


class Registry:
    """Entity and organisation ids known to the lab.

    :meth:`settled` tells whether a miss is final: while the entity or organisation consumer
    still has undelivered or unacknowledged events, an unknown id may be registered a moment
    later, so a worker treats the miss as transient (retry) rather than poison. It asks the
    server (consumer info), so it is only called on a miss; a worker reuses one answer within
    a batch (see ``workers.common.MissCheck``), never across batches: an answer computed
    before a batch was fetched could predate the registration its messages depend on.
    """

    def __init__(self) -> None:
        self.entities: dict[str, str] = {}  # entity_id -> org_id
        self.orgs: dict[str, str] = {}  # org_id -> name
        self._settled_checks: list[Callable[[], Awaitable[bool]]] = []

    def load(self, orgs: dict[str, str], entities: dict[str, str]) -> None:
        """Replace the contents (boot)."""
        self.orgs = dict(orgs)
        self.entities = dict(entities)

    def add_settled_check(self, check: Callable[[], Awaitable[bool]]) -> None:
        """Register a coroutine function that returns True when a lifecycle consumer is caught up."""
        self._settled_checks.append(check)

    async def settled(self) -> bool:
        """True when every lifecycle consumer is caught up now, so a miss is final."""
        for check in self._settled_checks:
            if not await check():
                return False
        return True

    def org_of(self, entity_id: str) -> str | None:
        """Return the entity's org_id, or None if unknown."""
        return self.entities.get(entity_id)
