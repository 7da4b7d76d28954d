"""Small pieces every worker shares: the unknown-id rule, KV failures, building a missing document.

The unknown-id rule (docs/wire.md): a message naming an entity or organisation the registry does not
know is POISON (quarantined, "unknown entity ...") only when its registration can no longer be in
flight, i.e. when the lifecycle consumers have acknowledged every event stored before the message
plus the registry's grace (:func:`miss_is_final`). Until then it is DEFER: kept unacknowledged and
handled again with the next batch, never counted toward quarantine and never stopping the
consumer, so a registration that is merely behind (the lab under load) loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Iterable, Sequence

from nats.aio.msg import Msg

from overwatch_lab.errors import BrokerError, DatabaseUnavailable
from overwatch_lab.kvstate import Doc
from overwatch_lab.protocol import state
from overwatch_lab.protocol.envelopes import now_timestamp
from overwatch_lab.protocol.subjects import STREAM_ENTITIES, STREAM_ORGANIZATIONS
from overwatch_lab.registry import ConsumerProgress, Registry
from overwatch_lab.store.database import Store
from overwatch_lab.workers.base import Result, defer, hold, poison, retry

log = logging.getLogger(__name__)

INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    BrokerError,  # KvError and the broker seam's translations of nats-py's errors included
    DatabaseUnavailable,
    OSError,  # TimeoutError, ConnectionError
)
"""Failures of the KV, broker or database rather than of the message: held, never quarantined."""


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


def kv_failure(entity_id: str, exc: BaseException) -> Result:
    """The result for a message whose entity's KV write failed with ``exc``.

    The KV is infrastructure (timeout, lost connection, a conflict storm; the database when the
    document is rebuilt from its row): HOLD. Anything else (the entity's row vanished, a bug)
    is RETRY, so it is quarantined if it keeps failing.
    """
    reason = f"KV write of {entity_id!r} failed: {exc!r}"
    return hold(reason) if isinstance(exc, INFRASTRUCTURE_ERRORS) else retry(reason)


def stored_at(msg: Msg) -> float:
    """When JetStream stored ``msg`` (epoch seconds, server clock)."""
    return msg.metadata.timestamp.timestamp()


def miss_is_final(stored: float, horizon: float, grace_s: float) -> bool:
    """True when a message stored at ``stored`` can no longer be waiting for a registration.

    ``horizon`` is the time before which every lifecycle event is acknowledged (see
    :class:`~overwatch_lab.registry.ConsumerProgress`); ``grace_s`` covers an event
    published before the message but stored after it.
    """
    return stored + grace_s <= horizon


def earlier_events_done(seq: int, ack_floor: int, acked_in_batch: Iterable[int]) -> bool:
    """True when every stream message before ``seq`` is acknowledged or was applied in this batch.

    For a worker that applies its own stream in order (the entity worker): ``ack_floor`` is its
    consumer's, ``acked_in_batch`` the sequences this batch applied before ``seq`` (not yet
    acknowledged on the server, the batch is settled afterwards).
    """
    missing = seq - 1 - ack_floor
    if missing <= 0:
        return True
    done = {s for s in acked_in_batch if ack_floor < s < seq}
    return len(done) >= missing


def _unknown_reason(entity_id: str) -> str:
    return f"unknown entity {entity_id!r}: register it with a constellation.entities.{{org}}.created event"


def _unknown_org_reason(org_id: str) -> str:
    return f"unknown organization {org_id!r}: publish constellation.organizations.created first"


class MissCheck:
    """Settles messages naming an unregistered id, asking the server at most once per batch.

    Build one per batch, after the batch was fetched: it reads each lifecycle consumer's
    progress on the first miss that needs it and reuses that answer for the rest of the batch.
    Reuse is safe: an event acknowledged before the read was in the registry before the read,
    so a later miss in the same batch is no less final. The registry is checked once more after
    a read (the id may have been registered while the server answered): then HOLD, and the
    redelivery is applied normally.
    """

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._progress: dict[str, ConsumerProgress | None] = {}

    async def _read(self, streams: Sequence[str]) -> list[ConsumerProgress | None]:
        todo = [s for s in streams if s not in self._progress]
        if todo:
            answers = await asyncio.gather(*(self._registry.progress(s) for s in todo))
            self._progress.update(zip(todo, answers, strict=True))
        return [self._progress[s] for s in streams]

    async def _horizon(self, streams: Sequence[str]) -> float:
        progress = await self._read(streams)
        return min((p.horizon for p in progress if p is not None), default=math.inf)

    async def unknown_entity(self, entity_id: str, msg: Msg) -> Result:
        """The result for ``msg`` (telemetry, events) naming ``entity_id``, which the registry does not know.

        Final once the entity and organisation consumers have acknowledged everything stored
        before ``msg`` (plus the grace).
        """
        reason = _unknown_reason(entity_id)
        try:
            horizon = await self._horizon((STREAM_ENTITIES, STREAM_ORGANIZATIONS))
        except BrokerError as exc:
            return hold(f"{reason}; cannot tell whether it is final: {exc}")
        if self._registry.org_of(entity_id) is not None:
            return defer(f"entity {entity_id!r} was registered while this batch was handled")
        if miss_is_final(stored_at(msg), horizon, self._registry.grace_s):
            return poison(reason)
        return defer(
            f"{reason}; its registration may still be in flight (entity consumer behind this message)"
        )

    async def unknown_org(self, org_id: str, msg: Msg) -> Result:
        """The result for an entity event ``msg`` naming ``org_id``, which the registry does not know.

        Final once the organisation consumer has acknowledged everything stored before ``msg``
        (plus the grace).
        """
        reason = _unknown_org_reason(org_id)
        try:
            horizon = await self._horizon((STREAM_ORGANIZATIONS,))
        except BrokerError as exc:
            return hold(f"{reason}; cannot tell whether it is final: {exc}")
        if org_id in self._registry.orgs:
            return defer(f"organization {org_id!r} was registered while this batch was handled")
        if miss_is_final(stored_at(msg), horizon, self._registry.grace_s):
            return poison(reason)
        return defer(f"{reason}; it may still be in flight (organization consumer behind this event)")

    async def unknown_entity_in_stream(
        self, entity_id: str, msg: Msg, acked_in_batch: Iterable[int]
    ) -> Result:
        """The result for an entity event ``msg`` (status) naming an entity not created yet.

        The entity worker applies its own stream in order, so the ``created`` can only be an
        earlier event of that stream: final once every earlier one is acknowledged or was
        applied in this batch.
        """
        reason = _unknown_reason(entity_id)
        try:
            (progress,) = await self._read((STREAM_ENTITIES,))
        except BrokerError as exc:
            return hold(f"{reason}; cannot tell whether it is final: {exc}")
        if self._registry.org_of(entity_id) is not None:
            return defer(f"entity {entity_id!r} was registered while this batch was handled")
        seq = msg.metadata.sequence.stream
        if progress is None or earlier_events_done(seq, progress.ack_floor, acked_in_batch):
            return poison(reason)
        return defer(f"{reason}; an earlier entity event is still unacknowledged")


async def fresh_doc(store: Store, entity_id: str) -> Doc:
    """Build a new KV document for an entity from its libSQL row.

    Raises:
        LookupError: the entity has no row (deleted meanwhile): the caller retries.
    """
    row = await store.entity(entity_id)
    if row is None:
        raise LookupError(f"entity {entity_id!r} has no row in the entities table")
    return state.new_entity_doc(row, row.get("org_name"), now_timestamp())
