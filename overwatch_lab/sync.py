"""The synchronizer: keeps the KV entity documents and the libSQL ``entities`` rows consistent.

One pass (at boot, then every ``sync_period_s``):

- every entity row gets a KV document if it has none (existing live state is kept);
- a document whose static fields drifted from its row is repaired (static fields only);
- a document whose entity has no row any more is removed;
- a live entity silent for longer than ``stale_after_s`` is marked ``is_live: false``;
- the live fields (position, heading, velocity, last_seen, is_live) are written back to the
  ``entities`` row so SQL readers see them;
- with ``history_max_age_s`` set, telemetry history older than that is pruned (bounded per pass).

A pass reads every document from a :class:`DocSource`: in a lab, its watcher-backed
:class:`~overwatch_lab.kvcache.KVCache` (caught up with the bucket first), not a replay of the
bucket. Each action is counted in :class:`SyncStats`. Every KV write is a compare-and-set, so a pass
racing with the workers never drops their fields.

A pass that cannot complete raises: :class:`~overwatch_lab.errors.SyncError` when a KV step failed
(the message names the step; the KV error is chained), the store's
:class:`~overwatch_lab.errors.DatabaseUnavailable` as it is. The loop (:meth:`Synchronizer.run`)
counts every failed pass but logs an outage once: one warning line when it starts (a traceback
only for an unexpected error, a bug), then quiet until a pass succeeds again, which is logged too.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from overwatch_lab.config import LabConfig
from overwatch_lab.errors import DatabaseUnavailable, KvError, SyncError
from overwatch_lab.kvstate import Doc, EntityKV
from overwatch_lab.protocol import state
from overwatch_lab.protocol.envelopes import now_timestamp
from overwatch_lab.store.database import Store

log = logging.getLogger(__name__)


class DocSource(Protocol):
    """Where a pass reads every document from: the lab's :class:`~overwatch_lab.kvcache.KVCache`
    (or, by default, a replay of the bucket through :class:`~overwatch_lab.kvstate.EntityKV`)."""

    async def all(self) -> dict[str, tuple[int, Doc]]:
        """Every live document, by entity_id, with its revision; shared documents are not mutated.

        Raises:
            KvError: the read failed.
        """
        ...


@dataclass(slots=True)
class SyncStats:
    """What the synchronizer did, cumulative."""

    passes: int = 0
    created: int = 0
    repaired: int = 0
    removed: int = 0
    marked_stale: int = 0
    written_back: int = 0
    history_pruned: int = 0
    failed_passes: int = 0
    outages: int = 0  # runs of consecutive failed passes
    failing_since: float | None = None  # epoch s of the first failed pass of the current outage
    last_pass_at: float | None = None
    last_pass_s: float = 0.0
    last_error: str | None = None

    def snapshot(self) -> dict[str, Any]:
        """Return a plain dict copy."""
        return asdict(self)


class Synchronizer:
    """Reconciles KV and libSQL both ways; see the module docstring."""

    def __init__(
        self,
        store: Store,
        ekv: EntityKV,
        config: LabConfig,
        forget: Callable[[str], None],
        docs: DocSource | None = None,
    ) -> None:
        self.store = store
        self.ekv = ekv
        self.docs = docs  # the lab passes its KV cache; None: replay the bucket through self.ekv
        self.config = config
        self.forget = forget
        self.stats = SyncStats()
        self.on_failure: Callable[[BaseException], None] | None = None  # hears each failed pass
        self._written: dict[str, dict[str, Any]] = {}
        self._stopping = asyncio.Event()
        self._kick = asyncio.Event()
        self._step = ""  # what the pass is doing, for a SyncError's message

    def request_stop(self) -> None:
        """Ask :meth:`run` to return after the current pass."""
        self._stopping.set()
        self._kick.set()

    def kick(self) -> None:
        """Run a pass now instead of waiting for the period to elapse."""
        self._kick.set()

    async def run(self, ready: asyncio.Event) -> None:
        """Run passes every ``sync_period_s`` until :meth:`request_stop`."""
        ready.set()
        while not self._stopping.is_set():
            try:
                async with asyncio.timeout(self.config.sync_period_s):
                    await self._kick.wait()
            except TimeoutError:
                pass
            self._kick.clear()
            if self._stopping.is_set():
                break
            try:
                await self.run_pass()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next pass tries again; the failure is on the record
                self._failed(exc)
                if self.on_failure is not None:
                    self.on_failure(exc)
            else:
                self._recovered()

    def _failed(self, exc: Exception) -> None:
        """Count a failed pass; log it only when it starts an outage (once, not every period)."""
        st = self.stats
        st.failed_passes += 1
        st.last_error = f"{type(exc).__name__}: {exc}"
        if st.failing_since is not None:
            log.debug("sync pass failed again: %s", st.last_error)
            return
        st.outages += 1
        st.failing_since = time.time()
        if isinstance(exc, SyncError | DatabaseUnavailable):  # infrastructure: one line says it all
            log.warning("sync pass failed (retried every %g s): %s", self.config.sync_period_s, st.last_error)
        else:  # not expected: a bug, worth its traceback (once)
            log.exception("sync pass failed (retried every %g s)", self.config.sync_period_s)

    def _recovered(self) -> None:
        st = self.stats
        if st.failing_since is not None:
            log.info(
                "sync recovered after %.1f s (%d failed passes in all)",
                time.time() - st.failing_since,
                st.failed_passes,
            )
            st.failing_since = None  # last_error stays on the record

    async def run_pass(self) -> SyncStats:
        """Run one reconciliation pass and return the cumulative stats.

        Raises:
            SyncError: a KV read, write or delete of the pass failed (names the step).
            DatabaseUnavailable: the store is down (full, read-only, locked, unreachable).
        """
        self._step = "starting"
        try:
            return await self._pass()
        except KvError as exc:
            raise SyncError(f"sync pass failed while {self._step}: {exc}") from exc

    async def _pass(self) -> SyncStats:
        started = time.perf_counter()
        st = self.stats
        rows = {r["entity_id"]: r for r in await self.store.entities()}
        self._step = "reading the KV documents"
        docs = await (self.ekv if self.docs is None else self.docs).all()
        now = now_timestamp()
        now_ts = time.time()
        stale_after = self.config.stale_after_s

        for eid, row in rows.items():
            org_name = row.get("org_name")
            current = docs.get(eid)
            if current is None:
                doc = state.new_entity_doc(row, org_name, now)

                def create(d: Doc | None, doc: Doc = doc) -> Doc | None:
                    return doc if d is None else None

                self._step = f"creating the KV document of {eid!r}"
                rev, written = await self.ekv.mutate(eid, create)
                if written is doc:
                    st.created += 1
                if written is not None:
                    docs[eid] = (rev, written)
                continue
            counts = {"repaired": False, "stale": False}

            def fix(
                d: Doc | None,
                row: dict[str, Any] = row,
                org_name: str | None = org_name,
                counts: dict[str, bool] = counts,
            ) -> Doc | None:
                if d is None:
                    return None
                repaired = bool(state.static_drift(d, row, org_name))
                if repaired:
                    state.apply_static(d, row, org_name, now)
                stale = state.mark_stale(d, now_ts, stale_after)
                counts["repaired"], counts["stale"] = repaired, stale
                return d if (repaired or stale) else None

            if state.static_drift(current[1], row, org_name) or (
                current[1].get("is_live") and _silent(current[1], now_ts, stale_after)
            ):
                self._step = f"repairing the KV document of {eid!r}"
                # A copy: `fix` edits the document it gets, and the cache's are shared.
                mine = (current[0], copy.deepcopy(current[1]))
                rev, written = await self.ekv.mutate(eid, fix, current=mine)
                st.repaired += counts["repaired"]
                st.marked_stale += counts["stale"]
                if written is not None:
                    docs[eid] = (rev, written)

        for eid in set(docs) - set(rows):
            self.forget(eid)
            self._step = f"removing the KV document of {eid!r} (no entity row)"
            if await self.ekv.delete(eid):
                st.removed += 1
            self._written.pop(eid, None)

        updates = []
        for eid, (_, doc) in docs.items():
            if eid not in rows:
                continue
            live = state.live_fields(doc)
            if self._written.get(eid) != live:
                updates.append({"entity_id": eid, **live})
        if updates:
            st.written_back += await self.store.write_back_live(updates)
            for u in updates:
                self._written[u["entity_id"]] = {k: v for k, v in u.items() if k != "entity_id"}

        if self.config.history_max_age_s is not None:
            st.history_pruned += await self.store.prune_telemetry(now_ts - self.config.history_max_age_s)

        st.passes += 1
        st.last_pass_at = time.time()
        st.last_pass_s = time.perf_counter() - started
        return st


def _silent(doc: Doc, now_ts: float, stale_after_s: float) -> bool:
    probe = dict(doc)
    return state.mark_stale(probe, now_ts, stale_after_s)
