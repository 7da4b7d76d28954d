"""Which organisations and entities exist: the in-memory view the workers check per message.

Loaded from libSQL at boot, updated by the entity worker as events are applied, so an entity
registered after boot can send telemetry at once (Overwatch only reloads it on restart).
"""

from __future__ import annotations

from collections.abc import Callable


class Registry:
    """Entity and organisation ids known to the lab.

    ``settled`` tells whether a miss is final: while the entity or organisation consumer still
    has undelivered events, an unknown id may be registered a moment later, so a worker
    treats the miss as transient (retry) rather than poison.
    """

    def __init__(self) -> None:
        self.entities: dict[str, str] = {}  # entity_id -> org_id
        self.orgs: dict[str, str] = {}  # org_id -> name
        self._settled_checks: list[Callable[[], bool]] = []

    def load(self, orgs: dict[str, str], entities: dict[str, str]) -> None:
        """Replace the contents (boot)."""
        self.orgs = dict(orgs)
        self.entities = dict(entities)

    def add_settled_check(self, check: Callable[[], bool]) -> None:
        """Register a callable that returns True when a lifecycle consumer is caught up."""
        self._settled_checks.append(check)

    @property
    def settled(self) -> bool:
        """True when every lifecycle consumer is caught up, so a miss is final."""
        return all(check() for check in self._settled_checks)

    def org_of(self, entity_id: str) -> str | None:
        """Return the entity's org_id, or None if unknown."""
        return self.entities.get(entity_id)
