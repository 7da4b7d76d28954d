"""Entity and organisation workers: lifecycle events → libSQL rows → the entity's KV document.

Order per event: commit the row, update the registry (so telemetry for a new entity is accepted
at once), then merge the static fields into the KV document with compare-and-set, never touching
telemetry-owned fields; the event is acknowledged after that, so an acknowledged event is always
in the registry (the unknown-id rule of ``workers.common`` relies on it). Events are applied one
at a time, in stream order, because a created and an updated event for one entity must not be
reordered: once an event of an entity (or org) is not applied, the later ones of the same id in
the batch are held behind it.

An entity event naming an organisation not registered yet is held while the organisation
consumer has not caught up past it (the org and entity streams store independently, so an org
event published just before its entity event can be stored just after it), and quarantined as
"unknown organization" once it has. A status event for an entity not created yet is final once
every earlier entity event is acknowledged.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nats.aio.msg import Msg

from overwatch_lab.errors import ProtocolError
from overwatch_lab.kvstate import Doc, EntityKV
from overwatch_lab.protocol import state
from overwatch_lab.protocol.envelopes import now_timestamp
from overwatch_lab.protocol.lifecycle import EntityEvent, OrgEvent, decode_entity_event, decode_org_event
from overwatch_lab.protocol.subjects import (
    CONSUMER_ENTITY,
    CONSUMER_ORGANIZATION,
    STREAM_ENTITIES,
    STREAM_ORGANIZATIONS,
    parse_entity_subject,
    parse_organization_subject,
)
from overwatch_lab.registry import Registry
from overwatch_lab.store.database import Store
from overwatch_lab.workers.base import ACK, Outcome, Result, Worker, defer, poison, retry
from overwatch_lab.workers.common import MissCheck, guarded

log = logging.getLogger(__name__)

Forget = Callable[[str], None]


async def sync_static(ekv: EntityKV, row: dict[str, Any], org_name: str | None) -> None:
    """Create the entity's KV document, or merge its static fields into the existing one."""
    now = now_timestamp()
    eid = row["entity_id"]

    def merge(doc: Doc | None) -> Doc | None:
        if doc is None:
            return state.new_entity_doc(row, org_name, now)
        return doc if state.apply_static(doc, row, org_name, now) else None

    await ekv.mutate(eid, merge)


@dataclass(slots=True)
class _Batch:
    """What an in-order worker knows about the batch it is applying."""

    miss: MissCheck
    acked: list[int] = field(default_factory=list)  # stream sequences applied so far (ACK)
    blocked: set[str] = field(default_factory=set)  # ids with an earlier event not applied


class _InOrderWorker(Worker):
    """Applies lifecycle events one at a time, in stream order (a created must precede its updated)."""

    registry: Registry

    @abstractmethod
    def decode(self, msg: Msg) -> Any:
        """Decode and validate one message (raises ProtocolError)."""

    @abstractmethod
    def key(self, ev: Any) -> str:
        """The id whose events must stay in order (entity_id, org_id)."""

    @abstractmethod
    async def _apply(self, ev: Any, msg: Msg, batch: _Batch) -> Result:
        """Apply one decoded event; returns its settlement."""

    async def handle_batch(self, msgs: list[Msg]) -> list[Result]:
        results: list[Result] = []
        batch = _Batch(MissCheck(self.registry))
        held: Result | None = None
        for msg in msgs:
            try:
                ev = self.decode(msg)
            except ProtocolError as exc:
                results.append(poison(str(exc)))
                continue
            if held is not None:  # the database is down: nothing after a held event is tried
                results.append(held)
                continue
            key = self.key(ev)
            if key in batch.blocked:
                result = defer(f"an earlier event of {key!r} in this batch is not applied yet")
            else:
                result = await guarded(self._apply(ev, msg, batch))
            if result.outcome is Outcome.ACK:
                batch.acked.append(msg.metadata.sequence.stream)
            elif result.outcome is Outcome.HOLD and result.blocking:
                held = Result(Outcome.HOLD, f"behind a held event: {result.reason}", True)
            elif result.outcome is not Outcome.POISON:
                batch.blocked.add(key)
            results.append(result)
        return results


class OrganizationWorker(_InOrderWorker):
    """Consumes ``organization-processor`` on CONSTELLATION_ORGANIZATIONS."""

    name = "organization-worker"
    stream = STREAM_ORGANIZATIONS
    durable = CONSUMER_ORGANIZATION

    def __init__(self, store: Store, ekv: EntityKV, registry: Registry, forget: Forget) -> None:
        super().__init__()
        self.store, self.ekv, self.registry, self.forget = store, ekv, registry, forget

    def decode(self, msg: Msg) -> OrgEvent:
        return decode_org_event(msg.data, parse_organization_subject(msg.subject))

    def key(self, ev: OrgEvent) -> str:
        return ev.org_id

    async def _apply(self, ev: OrgEvent, msg: Msg, batch: _Batch) -> Result:
        now = now_timestamp()
        if ev.kind == "deleted":
            await self.store.delete_organization(ev.org_id)
            self.registry.orgs.pop(ev.org_id, None)
            gone = [e for e, o in self.registry.entities.items() if o == ev.org_id]
            for eid in gone:
                self.registry.entities.pop(eid, None)
                self.forget(eid)
                await self.ekv.delete(eid)
            return ACK
        if ev.name is None or ev.org_type is None:  # decode_org_event requires both unless deleted
            return poison(f"organization event {ev.kind!r} of {ev.org_id!r} without name or org_type")
        previous = self.registry.orgs.get(ev.org_id)
        await self.store.upsert_organization(ev.org_id, ev.name, ev.org_type, ev.metadata, now)
        self.registry.orgs[ev.org_id] = ev.name
        if previous is not None and previous != ev.name:
            # An org rename reaches every entity document of the org (Overwatch does the same).
            for row in await self.store.entities():
                if row["org_id"] == ev.org_id:
                    await sync_static(self.ekv, row, ev.name)
        return ACK


class EntityWorker(_InOrderWorker):
    """Consumes ``entity-processor`` on CONSTELLATION_ENTITIES."""

    name = "entity-worker"
    stream = STREAM_ENTITIES
    durable = CONSUMER_ENTITY

    def __init__(
        self,
        store: Store,
        ekv: EntityKV,
        registry: Registry,
        forget: Forget,
    ) -> None:
        super().__init__()
        self.store, self.ekv, self.registry, self.forget = store, ekv, registry, forget

    def decode(self, msg: Msg) -> EntityEvent:
        return decode_entity_event(msg.data, parse_entity_subject(msg.subject))

    def key(self, ev: EntityEvent) -> str:
        return ev.entity_id

    async def _apply(self, ev: EntityEvent, msg: Msg, batch: _Batch) -> Result:
        reg = self.registry
        if ev.org_id not in reg.orgs:
            return await batch.miss.unknown_org(ev.org_id, msg)
        owner = reg.org_of(ev.entity_id)
        if owner is not None and owner != ev.org_id:
            return poison(f"entity {ev.entity_id!r} already belongs to org {owner!r}, not {ev.org_id!r}")
        now = now_timestamp()
        if ev.kind == "deleted":
            if owner is None:
                return ACK  # already gone: deleting twice is not an error
            await self.store.delete_entity(ev.entity_id)
            reg.entities.pop(ev.entity_id, None)
            self.forget(ev.entity_id)
            await self.ekv.delete(ev.entity_id)
            return ACK
        if ev.kind == "status":
            if owner is None:
                return await batch.miss.unknown_entity_in_stream(ev.entity_id, msg, batch.acked)
            assert ev.status is not None
            await self.store.set_entity_status(ev.entity_id, ev.status, now)
        else:
            assert ev.entity is not None
            await self.store.upsert_entity(ev.entity, now)
            reg.entities[ev.entity_id] = ev.org_id
        row = await self.store.entity(ev.entity_id)
        if row is None:
            return retry(f"entity {ev.entity_id!r} vanished while being written")
        await sync_static(self.ekv, row, row.get("org_name"))
        return ACK
