"""An observer's telemetry history: the deployment's telemetry stream, read without a durable of its own.

:class:`HistoryRecorder` reads ``CONSTELLATION_TELEMETRY`` through one nats-py *ordered*
consumer (ephemeral, no acknowledgements, dropped by the server when the connection goes), from
the stream's first stored message, and writes one row per distinct ``message_uid`` into the
observer's own libSQL file, exactly the row the telemetry worker would write (``late`` 0: an
observer keeps no live state to be late against). Any accepted format is read (v1, Pulsar, the
aero-arc relay); an edge envelope's organisation comes from the entity's KV document.

Rows are written in batches every :data:`FLUSH_PERIOD_S`; at most :data:`MAX_BUFFERED` wait at
once, beyond which messages are counted ``dropped`` (it is a view, not the deployment's record).
Messages that decode in no format, or whose organisation is unknown, are counted ``skipped``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from overwatch_lab.errors import DatabaseError, ProtocolError
from overwatch_lab.kvstate import Doc
from overwatch_lab.protocol import subjects as s
from overwatch_lab.protocol.edge_telemetry import ORG_FROM_REGISTRY, decode_any_telemetry
from overwatch_lab.protocol.mavlink import project
from overwatch_lab.store.database import Store
from overwatch_lab.workers.telemetry import history_row

log = logging.getLogger(__name__)

FLUSH_PERIOD_S = 0.2
MAX_BUFFERED = 50_000


@dataclass(slots=True)
class RecorderStats:
    """What the recorder did (``lab.stats()["history-recorder"]``)."""

    handled: int = 0  # messages received
    stored: int = 0  # new history rows
    skipped: int = 0  # fits no format, or no organisation known for the entity
    dropped: int = 0  # buffer full
    last_error: str | None = None


class HistoryRecorder:
    """Copies the telemetry a deployment stores into the observer's history (see the module docstring).

    Args:
        js: JetStream of the observer's connection.
        store: the observer's own store.
        docs: the KV cache's documents by entity_id (an edge envelope's organisation).
    """

    def __init__(self, js: JetStreamContext, store: Store, docs: Callable[[], dict[str, Doc]]) -> None:
        self._js, self._store, self._docs = js, store, docs
        self._rows: list[tuple[Any, ...]] = []
        self._stop = asyncio.Event()
        self.counters = RecorderStats()

    def stats(self) -> dict[str, Any]:
        """The counters as a dict (``handled`` makes the dashboard list it with the workers)."""
        return {**dataclasses.asdict(self.counters), "buffered": len(self._rows)}

    def request_stop(self) -> None:
        """Finish: flush what is buffered, then end :meth:`run`."""
        self._stop.set()

    async def run(self, ready: asyncio.Event) -> None:
        """Subscribe, set ``ready``, then flush rows every :data:`FLUSH_PERIOD_S` until stopped.

        A deployment without a telemetry stream is recorded as nothing (``ready`` is set).
        """
        try:
            sub = await self._js.subscribe(
                ">",
                stream=s.STREAM_TELEMETRY,
                cb=self._on_msg,
                ordered_consumer=True,
                manual_ack=True,  # an ordered consumer acknowledges nothing
                deliver_policy=api.DeliverPolicy.ALL,
            )
        except nats.errors.Error as exc:
            self.counters.last_error = f"cannot read {s.STREAM_TELEMETRY}: {exc!r}"
            log.warning("history recorder: %s", self.counters.last_error)
            ready.set()
            await self._stop.wait()
            return
        ready.set()
        try:
            while not self._stop.is_set():
                try:
                    async with asyncio.timeout(FLUSH_PERIOD_S):
                        await self._stop.wait()
                except TimeoutError:
                    pass
                await self._flush()
        finally:
            try:
                await sub.unsubscribe()
            except nats.errors.Error as exc:  # the connection is closing: the server drops it anyway
                log.debug("history recorder: unsubscribe: %r", exc)
            await self._flush()

    async def _on_msg(self, msg: Msg) -> None:
        c = self.counters
        c.handled += 1
        if len(self._rows) >= MAX_BUFFERED:
            c.dropped += 1
            return
        try:
            t = decode_any_telemetry(msg.data, msg.subject)
            if t.org_id == ORG_FROM_REGISTRY:
                doc = self._docs().get(t.entity_id)
                org = doc.get("org_id") if isinstance(doc, dict) else None
                if not isinstance(org, str) or not org:
                    raise LookupError(f"no organisation known for entity {t.entity_id!r}")
                t = dataclasses.replace(t, org_id=org)
            row = history_row(t, project(t.message_type, t.data, t.timestamp), time.time(), late=False)
        except (ProtocolError, LookupError) as exc:
            c.skipped += 1
            c.last_error = str(exc)[:300]
            return
        self._rows.append(row)

    async def _flush(self) -> None:
        rows, self._rows = self._rows, []
        if not rows:
            return
        try:
            (new,) = await self._store.insert_telemetry_groups(rows)
        except DatabaseError as exc:
            self.counters.dropped += len(rows)
            self.counters.last_error = f"history insert failed: {exc}"
            log.warning("history recorder: %s", self.counters.last_error)
            return
        self.counters.stored += new
