"""Telemetry worker: v1 envelopes → projected entity state in KV + one history row per message.

Per batch: decode and validate every message, drop stale/duplicate ones per (entity,
message_type), insert the history rows in one transaction, then coalesce what remains into one
compare-and-set write per entity (concurrently across entities). A message is acknowledged only
after both are durable.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from nats.aio.msg import Msg

from overwatch_lab.errors import DatabaseError, DatabaseUnavailable, ProtocolError
from overwatch_lab.kvstate import Doc, EntityKV
from overwatch_lab.protocol import state
from overwatch_lab.protocol.envelopes import decode_telemetry, now_timestamp
from overwatch_lab.protocol.mavlink import HISTORY_COLUMNS, history_values, project
from overwatch_lab.protocol.subjects import (
    CONSUMER_TELEMETRY,
    STREAM_TELEMETRY,
    parse_telemetry_subject,
)
from overwatch_lab.registry import Registry
from overwatch_lab.store.database import Store
from overwatch_lab.workers.base import ACK, Result, Worker, hold, poison, retry
from overwatch_lab.workers.common import MissCheck, fresh_doc

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _EntityBatch:
    """What one batch changes in one entity's document."""

    indices: list[int] = field(default_factory=list)
    sets: dict[tuple[str, ...], Any] = field(default_factory=dict)
    cursors: dict[str, tuple[str, str]] = field(default_factory=dict)
    last_seen: str = ""
    system_id: int = 0
    component_id: int = 0


class TelemetryWorker(Worker):
    """Consumes ``telemetry-processor`` on CONSTELLATION_TELEMETRY."""

    name = "telemetry-worker"
    stream = STREAM_TELEMETRY
    durable = CONSUMER_TELEMETRY

    def __init__(self, store: Store, ekv: EntityKV, registry: Registry) -> None:
        super().__init__()
        self.store = store
        self.ekv = ekv
        self.registry = registry
        self._cache: dict[str, tuple[int, Doc | None]] = {}
        self.fields_skipped = 0

    async def handle_batch(self, msgs: list[Msg]) -> list[Result]:
        results: list[Result] = [ACK] * len(msgs)
        miss = MissCheck(self.registry)
        decoded = []
        for i, msg in enumerate(msgs):
            try:
                t = decode_telemetry(msg.data, parse_telemetry_subject(msg.subject))
                org = self.registry.org_of(t.entity_id)
                if org is None:
                    results[i] = await miss.unknown_entity(t.entity_id)
                    continue
                if org != t.org_id:
                    results[i] = poison(f"entity {t.entity_id!r} belongs to org {org!r}, not {t.org_id!r}")
                    continue
                proj = project(t.message_type, t.data, t.timestamp)
            except ProtocolError as exc:
                results[i] = poison(str(exc))
                continue
            decoded.append((i, t, proj))

        missing = {t.entity_id for _, t, _ in decoded if t.entity_id not in self._cache}
        if missing:
            await self._load(missing)

        batches: dict[str, _EntityBatch] = {}
        rows: list[tuple[Any, ...]] = []
        now = time.time()
        for i, t, proj in decoded:
            eid = t.entity_id
            eb = batches.get(eid)
            if eb is None:
                eb = batches[eid] = _EntityBatch()
            cursor = eb.cursors.get(t.message_type)
            last = cursor[1] if cursor else state.cursor_of(self._cache[eid][1] or {}, t.message_type)
            if last is not None and t.timestamp <= last:
                self.ignored()
                continue
            eb.indices.append(i)
            eb.sets.update(proj.sets)
            eb.cursors[t.message_type] = (t.message_uid, t.timestamp)
            if t.timestamp > eb.last_seen:
                eb.last_seen = t.timestamp
            eb.system_id, eb.component_id = t.system_id, t.component_id
            if proj.skipped:
                self.fields_skipped += len(proj.skipped)
                log.debug("%s skipped %s", t.message_uid, proj.skipped)
            hv = history_values(proj)
            rows.append(
                (
                    t.message_uid,
                    t.org_id,
                    eid,
                    t.message_type,
                    t.timestamp,
                    t.ts,
                    now,
                    t.system_id,
                    t.component_id,
                    *[hv.get(c) for c in HISTORY_COLUMNS],
                    json.dumps(t.data, separators=(",", ":")),
                )
            )

        # History first, KV second: the KV cursor is what makes a redelivered message "stale",
        # so it may only move once the history row is committed. A KV failure after a commit is
        # harmless: the retry re-applies the state and the row insert is ignored (same uid).
        if rows:
            try:
                await self.store.insert_telemetry(rows)
            except DatabaseError as exc:
                reason = f"history insert failed: {exc}"
                settle = hold if isinstance(exc, DatabaseUnavailable) else retry
                for eb in batches.values():
                    for i in eb.indices:
                        results[i] = settle(reason)
                return results
        eids = list(batches)
        kv_results = await asyncio.gather(
            *(self._write(eid, batches[eid]) for eid in eids), return_exceptions=True
        )
        for eid, res in zip(eids, kv_results, strict=True):
            if isinstance(res, BaseException):
                if isinstance(res, asyncio.CancelledError):
                    raise res
                self._cache.pop(eid, None)
                for i in batches[eid].indices:
                    results[i] = retry(f"KV write of {eid!r} failed: {res!r}")
        return results

    async def _load(self, entity_ids: set[str]) -> None:
        loaded = await asyncio.gather(*(self.ekv.read(e) for e in entity_ids))
        for eid, cur in zip(entity_ids, loaded, strict=True):
            self._cache[eid] = cur

    async def _write(self, eid: str, eb: _EntityBatch) -> None:
        current = self._cache.get(eid)
        fresh: Doc | None = None
        if current is None or current[1] is None:
            # No document yet (registered a moment ago, or KV lost it): build it from the DB row.
            fresh = await fresh_doc(self.store, eid)

        received = now_timestamp()

        def merge(doc: Doc | None) -> Doc:
            if doc is None:
                if fresh is None:
                    raise LookupError(f"document of {eid!r} was deleted while being written")
                doc = fresh
            state.merge_telemetry(
                doc,
                sets=eb.sets,
                cursors=eb.cursors,
                last_seen=eb.last_seen,
                system_id=eb.system_id,
                component_id=eb.component_id,
            )
            state.mark_received(doc, received)
            return doc

        try:
            self._cache[eid] = await self.ekv.mutate(eid, merge, current=current)
            self.stats.kv_writes += 1
        except BaseException:
            self._cache.pop(eid, None)
            raise

    def forget(self, entity_id: str) -> None:
        """Drop the cached document of an entity (deleted, or rewritten by another writer)."""
        self._cache.pop(entity_id, None)
