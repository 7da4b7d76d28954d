"""Which organisations and entities exist: the in-memory view the workers check per message.

Loaded from libSQL at boot, updated by the entity worker as events are applied, so an entity
registered after boot can send telemetry at once (Overwatch only reloads it on restart).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConsumerProgress:
    """What one durable consumer has acknowledged of its stream, read at one moment.

    Attributes:
        stream: the stream name.
        ack_floor: every stream sequence up to this one is acknowledged.
        horizon: epoch seconds (server clock); every message stored in the stream before this
            time is acknowledged: the time of the read when nothing is pending, else the stored
            time of the first message after the ack floor.
        idle: nothing undelivered and nothing unacknowledged when read.
    """

    stream: str
    ack_floor: int
    horizon: float
    idle: bool


ProgressSource = Callable[[], Awaitable[ConsumerProgress]]
"""Reads the progress of one lifecycle consumer from the server (``workers.progress``)."""


class Registry:
    """Entity and organisation ids known to the lab, and how far their consumers have got.

    A miss (an id the registry does not know) is final only once the event that would register
    the id cannot still be in flight: every lifecycle event stored before the message, plus
    ``grace_s``, has been acknowledged. The grace covers events published just before the
    message but stored just after it (each stream stores on its own). :meth:`progress` asks the
    server, so it is only called on a miss; a worker reuses one answer within a batch (see
    ``workers.common.MissCheck``), never across batches: an answer computed before a batch was
    fetched could predate the registration its messages depend on.

    Args:
        grace_s: how much later than a message its registration may be stored (seconds; a
            lab passes ``LabConfig.registration_grace_s``).
    """

    def __init__(self, *, grace_s: float = 0.0) -> None:
        self.entities: dict[str, str] = {}  # entity_id -> org_id
        self.orgs: dict[str, str] = {}  # org_id -> name
        self.grace_s = grace_s
        self._sources: dict[str, ProgressSource] = {}

    def load(self, orgs: dict[str, str], entities: dict[str, str]) -> None:
        """Replace the contents (boot)."""
        self.orgs = dict(orgs)
        self.entities = dict(entities)

    def add_progress_source(self, stream: str, source: ProgressSource) -> None:
        """Register how to read the progress of the lifecycle consumer of ``stream``."""
        self._sources[stream] = source

    async def progress(self, stream: str) -> ConsumerProgress | None:
        """Read the progress of the consumer of ``stream``; None when none is registered.

        Raises:
            BrokerError: the server did not answer.
        """
        source = self._sources.get(stream)
        return None if source is None else await source()

    async def settled(self) -> bool:
        """True when every lifecycle consumer is idle now (nothing pending or unacknowledged).

        Raises:
            BrokerError: the server did not answer.
        """
        for source in self._sources.values():
            if not (await source()).idle:
                return False
        return True

    def org_of(self, entity_id: str) -> str | None:
        """Return the entity's org_id, or None if unknown."""
        return self.entities.get(entity_id)
