"""Telemetry worker: v1 envelopes → one history row per distinct message + projected state in KV.

The edge agents' envelopes (Pulsar, the aero-arc relay: ``protocol/edge_telemetry.py``) are
decoded into the same envelope, their organisation taken from the registry.

Per batch: decode and validate every message, then :func:`plan_batch` sorts each one by its
(entity, message_type) cursor: a message newer than the live state is applied to KV; one that
is not (late, reordered, resent: docs/wire.md "live state and history differ on order") is history
only, its row marked ``late``. Every decoded message gets its row, whatever its order; rows are
unique on ``message_uid``, so a duplicate is stored once. The rows of the whole batch are
inserted in one transaction, then what was applied is coalesced into one compare-and-set write
per entity (concurrently across entities). A message is acknowledged only after its row (and,
when applied, its KV write) is durable.

Failures hold (retry, never quarantine: the infrastructure failed, not the message): a failed
history insert holds every decoded message of the batch, so none is acknowledged because a
newer one of the same failed batch moved a cursor; a failed KV read or write holds that
entity's messages. A message naming an unregistered entity is settled by
:class:`~overwatch_lab.workers.common.MissCheck` (held while its registration may be in flight).

Counters (``WorkerStats``): ``ignored`` = acknowledged without changing live state (late or
duplicate), ``late`` = late rows stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nats.aio.msg import Msg

from overwatch_lab.errors import DatabaseError, DatabaseUnavailable, ProtocolError
from overwatch_lab.kvstate import Doc, EntityKV
from overwatch_lab.protocol import state
from overwatch_lab.protocol.edge_telemetry import ORG_FROM_REGISTRY, decode_any_telemetry
from overwatch_lab.protocol.envelopes import Telemetry, now_timestamp
from overwatch_lab.protocol.mavlink import Projection, history_row_values, project
from overwatch_lab.protocol.subjects import CONSUMER_TELEMETRY, STREAM_TELEMETRY
from overwatch_lab.registry import Registry
from overwatch_lab.store.database import Store
from overwatch_lab.workers.base import ACK, Outcome, Result, Worker, hold, poison, retry
from overwatch_lab.workers.common import MissCheck, fresh_doc, kv_failure, stored_at

log = logging.getLogger(__name__)

Decoded = tuple[int, Telemetry, Projection]
"""A decoded message: its index in the batch, its envelope and its projection."""

DecodeResult = tuple[Telemetry | None, Projection | None, ProtocolError | None]
"""What :func:`_decode` makes of a message: (envelope, projection, None), or the error that
stopped it: (None, None, error) for the envelope, (envelope, None, error) for the projection."""

_PREPARE_CHUNK = 500  # messages decoded early between two yields to the event loop
_PREPARED_MAX = 50_000  # early decodings kept at most (more: messages released unhandled)


def _decode(msg: Msg) -> DecodeResult:
    """Decode and project one message (v1, or an edge agent's envelope); pure (no registry, no state)."""
    try:
        t = decode_any_telemetry(msg.data, msg.subject)
    except ProtocolError as exc:
        return None, None, exc
    try:
        return t, project(t.message_type, t.data, t.timestamp), None
    except ProtocolError as exc:
        return t, None, exc


@dataclass(slots=True)
class EntityBatch:
    """What one batch changes in one entity's document.

    Attributes:
        indices: every message of the entity in the batch (held together if its write fails).
        sets / cursors / last_seen / system_id / component_id: the merge of the applied
            messages (see ``protocol.state.merge_telemetry``); no cursor = nothing to write.
    """

    indices: list[int] = field(default_factory=list)
    sets: dict[tuple[str, ...], Any] = field(default_factory=dict)
    cursors: dict[str, tuple[str, str]] = field(default_factory=dict)
    last_seen: str = ""
    system_id: int = 0
    component_id: int = 0


@dataclass(slots=True)
class Plan:
    """How one batch is stored and applied.

    Attributes:
        entities: entity_id → what the batch changes in its document.
        rows: history rows of the applied messages (``late`` = 0), in batch order.
        late_rows: history rows of the messages not newer than the live state (``late`` = 1).
        late: batch indices of those messages.
        fields_skipped: invalid fields skipped by the projections of the applied messages.
    """

    entities: dict[str, EntityBatch] = field(default_factory=dict)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    late_rows: list[tuple[Any, ...]] = field(default_factory=list)
    late: list[int] = field(default_factory=list)
    fields_skipped: int = 0


def history_row(t: Telemetry, proj: Projection, ingested_at: float, *, late: bool) -> tuple[Any, ...]:
    """The ``telemetry`` row of one message, in ``TELEMETRY_INSERT_COLUMNS`` order.

    ``data`` is the message's own JSON text of its ``data`` (``Telemetry.data_json``), not a
    re-encoding; a ``Telemetry`` built by hand without it gets ``data`` encoded.
    """
    return (
        t.message_uid,
        t.org_id,
        t.entity_id,
        t.message_type,
        t.timestamp,
        t.ts,
        ingested_at,
        t.system_id,
        t.component_id,
        *history_row_values(proj),
        t.data_json or json.dumps(t.data, separators=(",", ":"), allow_nan=False),
        1 if late else 0,
    )


def plan_batch(
    decoded: Sequence[Decoded], cursor_of: Callable[[str, str], str | None], ingested_at: float
) -> Plan:
    """Sort a batch's decoded messages into applied and late, and build their history rows.

    Pure. A message is applied when its timestamp is newer than the cursor of its (entity,
    message_type): the live state's (``cursor_of(entity_id, message_type)``), moved forward by
    the batch's earlier applied messages. Any other message is late: stored, not applied.

    Args:
        decoded: the batch's valid messages, in stream order.
        cursor_of: the live-state cursor (timestamp of the last applied message) or None.
        ingested_at: the ``ingested_at`` of every row (epoch seconds).
    """
    plan = Plan()
    for i, t, proj in decoded:
        eb = plan.entities.get(t.entity_id)
        if eb is None:
            eb = plan.entities[t.entity_id] = EntityBatch()
        eb.indices.append(i)
        cursor = eb.cursors.get(t.message_type)
        last = cursor[1] if cursor else cursor_of(t.entity_id, t.message_type)
        if last is not None and t.timestamp <= last:
            plan.late.append(i)
            plan.late_rows.append(history_row(t, proj, ingested_at, late=True))
            continue
        eb.sets.update(proj.sets)
        eb.cursors[t.message_type] = (t.message_uid, t.timestamp)
        if t.timestamp > eb.last_seen:
            eb.last_seen = t.timestamp
        eb.system_id, eb.component_id = t.system_id, t.component_id
        if proj.skipped:
            plan.fields_skipped += len(proj.skipped)
            log.debug("%s skipped %s", t.message_uid, proj.skipped)
        plan.rows.append(history_row(t, proj, ingested_at, late=False))
    return plan


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
        self._prepared: dict[int, tuple[Msg, DecodeResult]] = {}  # id(msg) -> early decoding
        self.fields_skipped = 0

    async def prepare(self, msgs: list[Msg]) -> None:
        """Decode and project a fetched batch early (while the previous batch's commit and KV
        writes are awaited), a chunk at a time so the previous batch's continuations interleave.
        The registry check, the cursors and the plan wait for :meth:`handle_batch`."""
        clock = time.perf_counter
        prepared = self._prepared
        for start in range(0, len(msgs), _PREPARE_CHUNK):
            started = clock()
            for msg in msgs[start : start + _PREPARE_CHUNK]:
                prepared[id(msg)] = (msg, _decode(msg))
            self.stats.decode_s += clock() - started
            await asyncio.sleep(0)

    async def handle_batch(self, msgs: list[Msg]) -> list[Result]:
        st = self.stats
        clock = time.perf_counter
        started = clock()
        results: list[Result] = [ACK] * len(msgs)
        miss = MissCheck(self.registry)
        decoded: list[Decoded] = []
        prepared = self._prepared
        org_of = self.registry.org_of
        deferred: dict[str, tuple[float, Result]] = {}  # entity -> (stored_at, its deferral)
        for i, msg in enumerate(msgs):
            early = prepared.pop(id(msg), None)
            d = early[1] if early is not None and early[0] is msg else _decode(msg)
            t, proj, bad = d
            if t is None:
                results[i] = poison(str(bad))
                continue
            org = org_of(t.entity_id)
            if org is None:
                eid = t.entity_id
                seen = deferred.get(eid)
                if seen is not None and stored_at(msg) >= seen[0]:
                    # stored no earlier than a message of the same entity whose miss was not final
                    # a moment ago: not final either, and the registry still does not know it.
                    missed = seen[1]
                else:
                    missed = await miss.unknown_entity(eid, msg)
                    if missed.outcome is Outcome.HOLD and not missed.blocking and org_of(eid) is None:
                        deferred[eid] = (stored_at(msg), missed)
                results[i] = missed
                if missed.outcome is Outcome.HOLD:  # handled again with the next batch: decoded already
                    prepared[id(msg)] = (msg, d)
                continue
            if t.org_id == ORG_FROM_REGISTRY:  # an edge agent's envelope names no organisation
                t = dataclasses.replace(t, org_id=org)
            elif org != t.org_id:
                results[i] = poison(f"entity {t.entity_id!r} belongs to org {org!r}, not {t.org_id!r}")
                continue
            if proj is None:
                results[i] = poison(str(bad))
                continue
            decoded.append((i, t, proj))
        if len(prepared) > _PREPARED_MAX:  # early decodings of messages never handled (released)
            prepared.clear()

        missing = {t.entity_id for _, t, _ in decoded if t.entity_id not in self._cache}
        if missing:
            st.decode_s += clock() - started
            kv_started = clock()
            unreadable = await self._load(missing)
            started = clock()
            st.kv_s += started - kv_started
            if unreadable:  # no cursor to compare with: hold the entity's messages, no row
                kept = []
                for item in decoded:
                    error = unreadable.get(item[1].entity_id)
                    if error is None:
                        kept.append(item)
                    else:
                        results[item[0]] = hold(f"KV read of {item[1].entity_id!r} failed: {error!r}")
                decoded = kept

        def cursor_of(entity_id: str, message_type: str) -> str | None:
            return state.cursor_of(self._cache[entity_id][1] or {}, message_type)

        plan = plan_batch(decoded, cursor_of, time.time())
        st.decode_s += clock() - started
        # History first, KV second: the KV cursor is what makes a message late, so it may only
        # move once the rows are committed. A KV failure after a commit is harmless: the retry
        # re-applies the state and the row insert is ignored (same uid).
        if decoded:
            db_started = clock()
            try:
                _, new_late = await self.store.insert_telemetry_groups(plan.rows, plan.late_rows)
            except DatabaseError as exc:
                st.db_s += clock() - db_started
                reason = f"history insert failed: {exc}"
                # The whole batch, late rows included: none may be acked for a newer one's sake.
                settle = hold if isinstance(exc, DatabaseUnavailable) else retry
                for i, _, _ in decoded:
                    results[i] = settle(reason)
                return results
            st.db_s += clock() - db_started
            st.late += new_late
        self.fields_skipped += plan.fields_skipped
        eids = [eid for eid, eb in plan.entities.items() if eb.cursors]
        kv_started = clock()
        kv_results = await self._write_all(eids, plan.entities)
        st.kv_s += clock() - kv_started
        for eid, res in zip(eids, kv_results, strict=True):
            if res is not None:
                self._cache.pop(eid, None)
                failed = kv_failure(eid, res)
                for i in plan.entities[eid].indices:
                    results[i] = failed
        self.ignored(sum(1 for i in plan.late if results[i].outcome is Outcome.ACK))
        return results

    async def _load(self, entity_ids: set[str]) -> dict[str, BaseException]:
        """Cache the documents of ``entity_ids``; return the ones whose read failed."""
        ids = list(entity_ids)
        loaded = await asyncio.gather(*(self.ekv.read(e) for e in ids), return_exceptions=True)
        failed: dict[str, BaseException] = {}
        for eid, cur in zip(ids, loaded, strict=True):
            if isinstance(cur, asyncio.CancelledError):
                raise cur
            if isinstance(cur, BaseException):
                failed[eid] = cur
            else:
                self._cache[eid] = cur
        return failed

    async def _write_all(self, eids: list[str], entities: dict[str, EntityBatch]) -> list[Exception | None]:
        """Write the batch's changes of ``eids``; per entity, the exception that failed it or None.

        Entities with a cached document are written together (:meth:`EntityKV.mutate_many`: one
        pipelined compare-and-set publish each); one without (registered a moment ago, or KV lost
        it) is built from its DB row first, on its own.
        """
        received = now_timestamp()
        cache = self._cache
        alone: list[int] = []
        together: list[int] = []
        for k, eid in enumerate(eids):
            current = cache.get(eid)
            (together if current is not None and current[1] is not None else alone).append(k)
        out: list[Exception | None] = [None] * len(eids)
        writes = [
            (eids[k], self._merge(eids[k], entities[eids[k]], None, received), cache[eids[k]])
            for k in together
        ]
        singles = asyncio.gather(
            *(self._write(eids[k], entities[eids[k]]) for k in alone), return_exceptions=True
        )
        try:
            results = await self.ekv.mutate_many(writes, adds_finite=True) if writes else []
        except BaseException:  # cancelled: the merges changed the cached documents in place
            for k in together:
                cache.pop(eids[k], None)
            raise
        finally:
            single_results = await singles  # also when cancelled: no write is left running
        for k, res in zip(together, results, strict=True):
            if isinstance(res, Exception):
                out[k] = res
            else:
                cache[eids[k]] = res
                self.stats.kv_writes += 1
        for k, single in zip(alone, single_results, strict=True):
            if isinstance(single, BaseException):
                if not isinstance(single, Exception):
                    raise single
                out[k] = single
        return out

    async def _write(self, eid: str, eb: EntityBatch) -> None:
        current = self._cache.get(eid)
        fresh: Doc | None = None
        if current is None or current[1] is None:
            # No document yet (registered a moment ago, or KV lost it): build it from the DB row.
            fresh = await fresh_doc(self.store, eid)
        try:
            self._cache[eid] = await self.ekv.mutate(
                eid, self._merge(eid, eb, fresh, now_timestamp()), current=current
            )
            self.stats.kv_writes += 1
        except BaseException:
            self._cache.pop(eid, None)
            raise

    @staticmethod
    def _merge(eid: str, eb: EntityBatch, fresh: Doc | None, received: str) -> Callable[[Doc | None], Doc]:
        """The mutation that applies ``eb`` to an entity document (``fresh`` when there is none)."""

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

        return merge

    def forget(self, entity_id: str) -> None:
        """Drop the cached document of an entity (deleted, or rewritten by another writer)."""
        self._cache.pop(entity_id, None)
