"""Event worker: ISR detections merged into the entity document; device events recorded.

v1 first; Pulsar's detections and the vision service's events (``protocol/edge_events.py``)
become the same detections and device events.

Detections go into ``detections.tracked_objects`` (one compare-and-set write per entity per
batch); a detection not newer than its track's ``last_seen`` (late, reordered, resent) leaves
the track as it is and is counted ``ignored``. Every detection, whatever its order, is also kept
as one row in the ``detections`` history table, unique on its ``event_uid``. ``bootsequence``
marks the entity live, ``shutdown`` marks it not live; every device event (these and any other
``event_type``), whatever its order, is kept as one row in ``device_events``, unique on its
``event_uid`` (so a resent event is stored once).

The history rows of a batch (device events and detections) are inserted in one transaction,
before any KV write; a failed insert holds every message that had a row (an infrastructure fault:
never quarantined; any other database error: retried); a failed KV read or write holds that
entity's messages (infrastructure, never quarantined). A message naming an unregistered entity is
settled by :class:`~overwatch_lab.workers.common.MissCheck`.
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
from overwatch_lab.protocol.edge_events import decode_any_event
from overwatch_lab.protocol.envelopes import now_timestamp, parse_timestamp
from overwatch_lab.protocol.events import Detection, DeviceEvent
from overwatch_lab.protocol.subjects import CONSUMER_EVENT, STREAM_EVENTS
from overwatch_lab.registry import Registry
from overwatch_lab.store.database import Store
from overwatch_lab.workers.base import ACK, Result, Worker, hold, poison, retry
from overwatch_lab.workers.common import MissCheck, fresh_doc, kv_failure

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _EntityEvents:
    indices: list[int] = field(default_factory=list)
    items: list[Detection | DeviceEvent] = field(default_factory=list)


def _apply_device_event(doc: Doc, ev: DeviceEvent, when: str) -> bool:
    if ev.event_type == "bootsequence":
        doc["is_live"] = True
        state.mark_received(doc, now_timestamp())
        if doc.get("first_seen") is None:
            doc["first_seen"] = when
        if (doc.get("last_seen") or "") < when:
            doc["last_seen"] = when
        return True
    if ev.event_type == "shutdown":
        doc["is_live"] = False
        return True
    return False


def _detection_row(det: Detection, ingested_at: float) -> tuple[Any, ...]:
    """The ``detections`` history row of one detection, in ``DETECTION_INSERT_COLUMNS`` order."""
    return (
        det.event_uid,
        det.org_id,
        det.entity_id,
        det.track_id,
        det.label,
        det.confidence,
        det.x1,
        det.y1,
        det.x2,
        det.y2,
        det.timestamp,
        det.ts,
        ingested_at,
    )


def _event_uid(ev: DeviceEvent, msg: Msg) -> str:
    """The device's own event_uid, else one derived from the stream sequence (so a redelivered
    event is not recorded twice)."""
    uid = ev.data.get("event_uid")
    return uid if isinstance(uid, str) and uid else f"events-{msg.metadata.sequence.stream}"


class EventWorker(Worker):
    """Consumes ``event-processor`` on CONSTELLATION_EVENTS."""

    name = "event-worker"
    stream = STREAM_EVENTS
    durable = CONSUMER_EVENT

    def __init__(self, store: Store, ekv: EntityKV, registry: Registry) -> None:
        super().__init__()
        self.store, self.ekv, self.registry = store, ekv, registry

    async def handle_batch(self, msgs: list[Msg]) -> list[Result]:
        results: list[Result] = [ACK] * len(msgs)
        miss = MissCheck(self.registry)
        per_entity: dict[str, _EntityEvents] = {}
        rows: list[tuple[Any, ...]] = []
        detection_rows: list[tuple[Any, ...]] = []
        row_index: list[int] = []
        ingested_at = time.time()
        for i, msg in enumerate(msgs):
            try:  # v1, or an edge agent's format (Pulsar detections, vision2constellation events)
                item = decode_any_event(msg.data, msg.subject)
            except ProtocolError as exc:
                results[i] = poison(str(exc))
                continue
            org = self.registry.org_of(item.entity_id)
            if org is None:
                results[i] = await miss.unknown_entity(item.entity_id, msg)
                continue
            if org != item.org_id:
                results[i] = poison(f"entity {item.entity_id!r} belongs to org {org!r}, not {item.org_id!r}")
                continue
            group = per_entity.setdefault(item.entity_id, _EntityEvents())
            group.indices.append(i)
            group.items.append(item)
            if isinstance(item, Detection):
                detection_rows.append(_detection_row(item, ingested_at))
                row_index.append(i)
            else:
                when = item.timestamp or now_timestamp()
                _, ts = parse_timestamp(when)
                rows.append(
                    (
                        _event_uid(item, msg),
                        item.org_id,
                        item.entity_id,
                        item.event_type,
                        when,
                        ts,
                        json.dumps(item.data, separators=(",", ":"), allow_nan=False),  # decoded finite
                    )
                )
                row_index.append(i)

        if row_index:  # rows first, then KV (same order as the telemetry worker)
            try:
                await self.store.insert_event_history(rows, detection_rows)
            except DatabaseError as exc:
                settle = hold if isinstance(exc, DatabaseUnavailable) else retry
                for i in row_index:
                    results[i] = settle(f"event history insert failed: {exc}")
                failed = set(row_index)
                for group in per_entity.values():
                    keep = [
                        (i, it) for i, it in zip(group.indices, group.items, strict=True) if i not in failed
                    ]
                    group.indices = [i for i, _ in keep]
                    group.items = [it for _, it in keep]
        eids = [eid for eid, group in per_entity.items() if group.items]
        outcomes = await asyncio.gather(
            *(self._write(eid, per_entity[eid]) for eid in eids), return_exceptions=True
        )
        for eid, res in zip(eids, outcomes, strict=True):
            if isinstance(res, asyncio.CancelledError):
                raise res
            if isinstance(res, BaseException):
                kv_failed = kv_failure(eid, res)
                for i in per_entity[eid].indices:
                    results[i] = kv_failed
            else:
                self.ignored(res)
        return results

    async def _write(self, eid: str, group: _EntityEvents) -> int:
        """Merge the group into the entity's document; return how many detections were not newer."""
        current = await self.ekv.read(eid)
        fresh = await fresh_doc(self.store, eid) if current[1] is None else None
        stale = 0

        def merge(doc: Doc | None) -> Doc | None:
            nonlocal stale
            if doc is None:
                if fresh is None:
                    raise LookupError(f"document of {eid!r} was deleted while being written")
                doc = fresh
            changed = fresh is not None and doc is fresh
            stale = 0  # a CAS conflict re-runs the merge on the re-read document
            for item in group.items:
                if isinstance(item, Detection):
                    if state.merge_detection(doc, item):
                        changed = True
                    else:
                        stale += 1
                elif _apply_device_event(doc, item, item.timestamp or now_timestamp()):
                    changed = True
            return doc if changed else None

        await self.ekv.mutate(eid, merge, current=current)
        return stale
