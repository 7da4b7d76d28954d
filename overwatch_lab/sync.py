"""The synchronizer: keeps the KV entity documents and the libSQL ``entities`` rows consistent.

One pass (at boot, then every ``sync_period_s``):

- every entity row gets a KV document if it has none (existing live state is kept);
- a document whose static fields drifted from its row is repaired (static fields only);
- a document whose entity has no row any more is removed;
- a live entity silent for longer than ``stale_after_s`` is marked ``is_live: false``;
- the live fields (position, heading, velocity, last_seen, is_live) are written back to the
  ``entities`` row so SQL readers see them;
- with ``history_max_age_s`` set, telemetry history older than that is pruned (bounded per pass).

In a lab a pass reads its watcher-backed :class:`~overwatch_lab.kvcache.KVCache` (caught up with
the bucket first) as a :class:`DeltaSource`: only the documents with a new revision since the
last completed pass, and of those only the fields it uses (:mod:`~overwatch_lab.protocol.docview`).
What it keeps of each (its static and live fields, when the entity was last heard from) answers
the rest: static drift is looked for in changed documents and changed rows, live fields are
written back from changed documents, silence is checked on every live entity from the kept
time. Another :class:`DocSource` (a replay of the bucket) is read in full every pass. Each action is counted in :class:`SyncStats`. Every KV write is a compare-and-set, so a pass
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
from typing import Any, Protocol, runtime_checkable

from overwatch_lab.config import LabConfig
from overwatch_lab.errors import DatabaseUnavailable, KvError, SyncError
from overwatch_lab.kvcache import RawChanges
from overwatch_lab.kvstate import Doc, EntityKV
from overwatch_lab.protocol import docview, envelopes, state
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


@runtime_checkable
class DeltaSource(Protocol):
    """A source that says what changed since a version: the lab's
    :class:`~overwatch_lab.kvcache.KVCache`. A pass then reads only the documents with a new
    revision (a few fields of each), not every document."""

    async def caught_up(self, timeout_s: float = ...) -> None:
        """Wait until every acknowledged write is in the picture.

        Raises:
            KvError: the read failed.
        """
        ...

    def raw_since(self, version: int) -> RawChanges:
        """What changed since ``version`` (0: everything), undecoded."""
        ...

    def get(self, entity_id: str) -> tuple[int, Doc] | None:
        """(revision, whole document) of one entity, or None; shared: not mutated."""
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
        docs: DocSource | DeltaSource | None = None,
    ) -> None:
        self.store = store
        self.ekv = ekv
        self.docs = docs  # the lab passes its KV cache; None: replay the bucket through self.ekv
        self.config = config
        self.forget = forget
        self.stats = SyncStats()
        self.on_failure: Callable[[BaseException], None] | None = None  # hears each failed pass
        self._written: dict[str, dict[str, Any]] = {}
        self._seen: dict[str, _Seen] = {}  # entity_id -> its document as of the last pass's read
        # entity_id -> the static fields its row implied at the last completed pass (the live
        # columns a pass writes back would make every row look changed the pass after)
        self._rows: dict[str, dict[str, Any]] = {}
        self._version = 0  # the DeltaSource's version the last completed pass read up to
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
        version, check = await self._refresh()
        statics = {eid: state.static_values(row, row.get("org_name")) for eid, row in rows.items()}
        check.update(eid for eid, values in statics.items() if self._rows.get(eid) != values)
        now = now_timestamp()
        now_ts = time.time()
        stale_after = self.config.stale_after_s
        seen = self._seen

        for eid, row in rows.items():
            org_name = row.get("org_name")
            known = seen.get(eid)
            if known is None:
                doc = state.new_entity_doc(row, org_name, now)

                def create(d: Doc | None, doc: Doc = doc) -> Doc | None:
                    return doc if d is None else None

                self._step = f"creating the KV document of {eid!r}"
                rev, written = await self.ekv.mutate(eid, create)
                if written is doc:
                    st.created += 1
                if written is not None:
                    seen[eid] = _Seen.of(rev, written)
                    check.add(eid)
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

            # Static fields can only drift with a new revision or a changed row; silence with time.
            drifted = eid in check and bool(state.static_drift(known.view, row, org_name))
            if drifted or known.silent(now_ts, stale_after):
                self._step = f"repairing the KV document of {eid!r}"
                current = self._whole(eid, known)
                # A copy: `fix` edits the document it gets, and the cache's are shared.
                mine = None if current is None else (current[0], copy.deepcopy(current[1]))
                rev, written = await self.ekv.mutate(eid, fix, current=mine)
                st.repaired += counts["repaired"]
                st.marked_stale += counts["stale"]
                if written is not None:
                    seen[eid] = _Seen.of(rev, written)
                    check.add(eid)

        for eid in set(seen) - set(rows):
            self.forget(eid)
            self._step = f"removing the KV document of {eid!r} (no entity row)"
            if await self.ekv.delete(eid):
                st.removed += 1
            self._written.pop(eid, None)
            seen.pop(eid, None)

        # Live fields change only with a new revision: look at the documents that have one.
        updates = []
        for eid in check:
            known = seen.get(eid)
            if known is None or eid not in rows:
                continue
            live = state.live_fields(known.view)
            if self._written.get(eid) != live:
                updates.append({"entity_id": eid, **live})
        if updates:
            st.written_back += await self.store.write_back_live(updates)
            for u in updates:
                self._written[u["entity_id"]] = {k: v for k, v in u.items() if k != "entity_id"}

        if self.config.history_max_age_s is not None:
            st.history_pruned += await self.store.prune_telemetry(now_ts - self.config.history_max_age_s)

        # Only a completed pass moves on: a failed one leaves the next to look at the same changes.
        self._rows, self._version = statics, version
        st.passes += 1
        st.last_pass_at = time.time()
        st.last_pass_s = time.perf_counter() - started
        return st

    async def _refresh(self) -> tuple[int, set[str]]:
        """Bring :attr:`_seen` up to date with the source; return (its version, entity_ids changed).

        A :class:`DeltaSource` is asked for what changed since the last completed pass, and each
        changed document is read through :func:`~overwatch_lab.protocol.docview.view` (its
        decoded document if a reader decoded it already); another source is read in full.
        """
        src = self.docs
        if not isinstance(src, DeltaSource):
            docs = await (self.ekv if src is None else src).all()
            self._seen = {eid: _Seen.of(rev, doc) for eid, (rev, doc) in docs.items()}
            return 0, set(docs)
        await src.caught_up()
        changes = src.raw_since(self._version)
        if changes.full:
            self._seen = {}
        for eid in changes.deleted:
            self._seen.pop(eid, None)
        for eid, (rev, raw, doc) in changes.changed.items():
            v = doc if doc is not None else docview.view(raw)
            if v is None:  # an unexpected shape: the whole document says what it holds
                got = src.get(eid)
                if got is None:  # not a JSON object: left out, as the cache leaves it out
                    self._seen.pop(eid, None)
                    continue
                rev, v = got
            self._seen[eid] = _Seen.of(rev, v)
        return changes.version, set(changes.changed) | set(changes.deleted)

    def _whole(self, eid: str, known: _Seen) -> tuple[int, Doc] | None:
        """The whole current document of ``eid`` (shared: copy before mutating); None: read it."""
        if isinstance(self.docs, DeltaSource):
            return self.docs.get(eid)
        return known.revision, known.view  # a full source's views are its documents


@dataclass(slots=True)
class _Seen:
    """What the synchronizer keeps of one document between passes."""

    revision: int
    view: Doc  # the fields a pass reads (docview.view) or the whole document; never mutated
    heard_at: float | None  # epoch s of received_at (else last_seen) when live; None: unknown

    @classmethod
    def of(cls, revision: int, view: Doc) -> _Seen:
        heard_at = None
        stamp = view.get("received_at") or view.get("last_seen")
        if view.get("is_live") is True and stamp is not None:
            try:
                heard_at = envelopes.parse_timestamp(stamp, "received_at")[1]
            except ValueError:
                heard_at = None
        return cls(revision, view, heard_at)

    def silent(self, now_ts: float, stale_after_s: float) -> bool:
        """True when :func:`~overwatch_lab.protocol.state.mark_stale` would turn is_live off."""
        if self.view.get("is_live") is not True:
            return False
        return self.heard_at is None or now_ts - self.heard_at > stale_after_s
