"""One long-lived, watcher-backed picture of the entity state bucket, shared by every reader.

:class:`KVCache` holds ``entity_id -> (revision, document)`` for the whole
``CONSTELLATION_GLOBAL_STATE`` bucket, fed by one nats-py KV watch (``kv.watchall()``: last value
per key, then every put, delete and purge as it happens; deletes are applied, not ignored). The
synchronizer, ``lab.frames.states()`` and the dashboard read it instead of replaying the bucket.

- **Ready** once the initial replay ended (nats-py ends it with a ``None`` entry).
- **Versions**: every change applied gets the next ``version``; :meth:`KVCache.changes_since`
  answers "what changed or went away since version v" (the dashboard patches only those rows).
- **Read your writes**: :meth:`KVCache.caught_up` waits until every write the broker had
  acknowledged when it was called is in the picture (one stream-info request).
- **Reconnects**: a health check every ``check_period_s`` re-watches and replays again when the
  client reconnected (a broker restart), the bucket was recreated, or the watch stalled behind the
  bucket. The new replay builds a picture of its own and replaces the old one in one step (keys
  that changed or vanished get a new version), so a reader never sees an empty or half-filled
  picture; while the bucket is gone the last picture stays and :attr:`KVCache.healthy` is False.

Documents are decoded lazily, once per revision, and shared between readers: **never mutate a
document from the cache** (copy it first, as the synchronizer does before a compare-and-set).
Every method but :meth:`KVCache.run` is meant for the lab's event loop; nats-py's errors leave
this module as :class:`~overwatch_lab.errors.KvError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from overwatch_lab.errors import KvError
from overwatch_lab.kvstate import Doc
from overwatch_lab.protocol.subjects import KV_GLOBAL_STATE

log = logging.getLogger(__name__)

CHECK_PERIOD_S = 1.0
"""Seconds between two health checks of the watch (reconnected? bucket recreated? stalled?)."""
MAX_TOMBSTONES = 10_000
"""Deleted keys remembered for :meth:`KVCache.changes_since`; older ones raise its floor."""
_DELETE_OPS = ("DEL", "PURGE")


@contextlib.contextmanager
def _kv_errors(what: str) -> Iterator[None]:
    try:
        yield
    except nats.errors.Error as exc:  # nats.js.errors.* and nats-py's timeouts are subclasses
        raise KvError(f"KV cache: {what} failed: {type(exc).__name__}: {exc}".rstrip(": ")) from exc


@dataclass(slots=True)
class _Slot:
    """One key as the cache holds it: the raw value, decoded on first read."""

    revision: int
    raw: bytes
    version: int
    doc: Doc | None = None
    bad: bool = False  # not a JSON object: counted, left out of every read


@dataclass(frozen=True, slots=True)
class Changes:
    """What :meth:`KVCache.changes_since` returns.

    Attributes:
        version: the cache's version now; pass it to the next call.
        changed: entity_id -> (revision, document) of every key written since the asked version
            (every key when ``full``).
        deleted: entity_ids deleted since the asked version (empty when ``full``).
        full: True when the asked version is older than the cache remembers (or 0): ``changed``
            is then the whole picture and the reader replaces, rather than patches, what it holds.
    """

    version: int
    changed: dict[str, tuple[int, Doc]]
    deleted: frozenset[str]
    full: bool


@dataclass(frozen=True, slots=True)
class RawChanges:
    """What :meth:`KVCache.raw_since` returns: :class:`Changes` with each value as held.

    Attributes:
        version: the cache's version now; pass it to the next call.
        changed: entity_id -> (revision, raw JSON, the decoded document if some reader already
            decoded it, else None) of every key written since the asked version (every key when
            ``full``); values known not to be a JSON object are left out.
        deleted: entity_ids deleted since the asked version (empty when ``full``).
        full: as in :class:`Changes`.
    """

    version: int
    changed: dict[str, tuple[int, bytes, Doc | None]]
    deleted: frozenset[str]
    full: bool


@dataclass(slots=True)
class CacheStats:
    """What the cache did, cumulative."""

    updates: int = 0  # puts applied after a replay
    deletes: int = 0  # deletes and purges applied after a replay
    replays: int = 0  # initial replays completed (1 + re-watches)
    rewatches: int = 0  # replays after the first (reconnect, recreated bucket, stall)
    last_rewatch_reason: str | None = None
    undecodable: int = 0  # values that were not a JSON object
    decoded: int = 0  # documents decoded (once per revision read)
    keys: int = 0
    version: int = 0
    last_replay_s: float = 0.0
    healthy: bool = False
    failures: int = 0  # watches that could not start or broke
    last_error: str | None = None

    def snapshot(self) -> dict[str, Any]:
        """Return a plain dict copy."""
        return asdict(self)


@dataclass(slots=True)
class _Watch:
    """What one watch (one replay, then live updates) knows about the bucket."""

    created: object  # the bucket stream's creation time when the watch began
    generation: int  # 1 for the first watch, +1 for each re-watch
    staging: dict[str, _Slot] | None = field(default_factory=dict)  # None once replayed
    seen_seq: int = 0  # highest stream sequence this watch delivered


class KVCache:
    """The entity state bucket, watched and held in memory (see the module docstring).

    Args:
        kv: the bucket (``CONSTELLATION_GLOBAL_STATE``).
        js: JetStream, for the bucket's stream info.
        nc: the lab's connection; its reconnect count triggers a re-watch.
        stream: the bucket's stream (``KV_<bucket>``).
        check_period_s: seconds between health checks.
        replay_timeout_s: a replay not ended after this long is started again.
    """

    def __init__(
        self,
        kv: KeyValue,
        js: JetStreamContext,
        nc: NATS,
        *,
        stream: str = f"KV_{KV_GLOBAL_STATE}",
        check_period_s: float = CHECK_PERIOD_S,
        replay_timeout_s: float = 30.0,
    ) -> None:
        self.kv = kv
        self.js = js
        self.nc = nc
        self.stream = stream
        self.check_period_s = check_period_s
        self.replay_timeout_s = replay_timeout_s
        self.stats = CacheStats()
        self._slots: dict[str, _Slot] = {}
        self._tombstones: dict[str, int] = {}  # entity_id -> version of its delete
        self._floor = 0  # changes_since(v < floor) is answered in full
        self._version = 0
        self._watch: _Watch | None = None
        self._ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self._restart = asyncio.Event()
        self._restart_reason = ""
        self._generation = 0  # of the latest watch
        # (sequence, first watch generation allowed to answer, future) of each caught_up() call
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []

    # ------------------------------------------------------------------ lifecycle
    @property
    def ready(self) -> bool:
        """True once the first replay ended (the picture is complete)."""
        return self._ready.is_set()

    @property
    def healthy(self) -> bool:
        """True while a replayed watch is running (False while the bucket is gone or re-watching)."""
        return self._watch is not None and self._watch.staging is None

    @property
    def version(self) -> int:
        """The version of the latest change applied (0 before the first replay)."""
        return self._version

    def request_stop(self) -> None:
        """Ask :meth:`run` to stop its watch and return."""
        self._stopping.set()
        self.rewatch("stopping")

    def rewatch(self, reason: str) -> None:
        """Start a new watch and replay (the current picture stays until the replay ends)."""
        self._restart_reason = self._restart_reason or reason
        self._restart.set()

    async def run(self, ready: asyncio.Event) -> None:
        """Watch the bucket until :meth:`request_stop`; ``ready`` is set after the first replay.

        A watch that cannot start or breaks is retried every ``check_period_s`` (the failure is
        counted and logged once per outage); the last picture stays meanwhile.
        """
        failing = False
        while not self._stopping.is_set():
            try:
                await self._watch_once(ready)
                failing = False
            except KvError as exc:
                self.stats.failures += 1
                self.stats.last_error = str(exc)
                if not failing:
                    log.warning("KV cache: %s; retrying every %g s", exc, self.check_period_s)
                failing = True
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.check_period_s):
                        await self._stopping.wait()
            finally:
                self._watch = None
                self.stats.healthy = False
        self._fail_waiters(KvError("KV cache stopped"))

    async def _watch_once(self, ready: asyncio.Event) -> None:
        """One watch: replay, then live updates, until a restart is asked for or needed."""
        self._restart.clear()
        reason, self._restart_reason = self._restart_reason, ""
        with _kv_errors("reading the bucket's stream info"):
            info = await self.js.stream_info(self.stream)
        self._generation += 1
        watch = self._watch = _Watch(created=info.created, generation=self._generation)
        reconnects = self.nc.stats["reconnects"]
        started = time.perf_counter()
        if self.stats.replays:
            self.stats.rewatches += 1
            self.stats.last_rewatch_reason = reason
            log.info("KV cache: watching the bucket again (%s)", reason)
        with _kv_errors("starting the watch"):
            watcher = await self.kv.watchall()  # last value per key, deletes included
        try:
            async with asyncio.TaskGroup() as tg:
                consume = tg.create_task(self._consume(watcher, watch, ready, started), name="kv-cache:watch")
                await self._check_until_restart(watch, reconnects, started)
                consume.cancel()
        except* KvError as group:  # the health check's: the bucket is gone or unreachable
            raise group.exceptions[0] from group.exceptions[0].__cause__
        finally:
            with contextlib.suppress(nats.errors.Error, TimeoutError):  # the connection may be gone
                async with asyncio.timeout(1.0):
                    await watcher.stop()

    async def _consume(self, watcher: KeyValue.KeyWatcher, watch: _Watch, ready: asyncio.Event, started: float) -> None:
        async for entry in watcher:
            if entry is None:  # nats-py's marker: the initial replay ended
                if watch.staging is not None:
                    self._swap(watch.staging)
                    watch.staging = None
                    self.stats.replays += 1
                    self.stats.last_replay_s = time.perf_counter() - started
                    self.stats.healthy = True
                    self._ready.set()
                    ready.set()
                    self._wake(watch.seen_seq)
                continue
            seq = entry.revision or 0
            if seq > watch.seen_seq:
                watch.seen_seq = seq
            gone = entry.operation in _DELETE_OPS or not entry.value
            if watch.staging is not None:
                if gone:
                    watch.staging.pop(entry.key, None)
                else:
                    watch.staging[entry.key] = _Slot(seq, entry.value, 0)
                continue
            self._version += 1
            if gone:
                if self._slots.pop(entry.key, None) is not None:
                    self._tombstone(entry.key)
                self.stats.deletes += 1
            else:
                self._slots[entry.key] = _Slot(seq, entry.value, self._version)
                self._tombstones.pop(entry.key, None)
                self.stats.updates += 1
            if self._waiters:
                self._wake(seq)

    async def _check_until_restart(self, watch: _Watch, reconnects: int, started: float) -> None:
        """Return when a re-watch is asked for or needed (see the module docstring)."""
        stalled_at = -1
        while True:
            try:
                async with asyncio.timeout(self.check_period_s):
                    await self._restart.wait()
                return
            except TimeoutError:
                pass
            if self.nc.stats["reconnects"] != reconnects:
                self.rewatch("the connection to the broker was re-established")
                return
            if watch.staging is not None and time.perf_counter() - started > self.replay_timeout_s:
                self.rewatch(f"the replay did not end within {self.replay_timeout_s:g} s")
                return
            seen = watch.seen_seq  # before the request: later deliveries may pass its answer
            with _kv_errors("reading the bucket's stream info"):
                info = await self.js.stream_info(self.stream)
            if info.created != watch.created or info.state.last_seq < seen:
                self.rewatch("the bucket was recreated")
                return
            behind = watch.staging is None and info.state.last_seq > watch.seen_seq
            if behind and watch.seen_seq == stalled_at:  # no progress over a whole period
                self.rewatch(f"the watch stalled at sequence {watch.seen_seq} of {info.state.last_seq}")
                return
            stalled_at = watch.seen_seq if behind else -1

    # ------------------------------------------------------------------ applying
    def _swap(self, fresh: dict[str, _Slot]) -> None:
        """Replace the picture by a replayed one in one step; what differs gets a new version."""
        self._version += 1
        v = self._version
        old = self._slots
        for key, slot in fresh.items():
            prev = old.get(key)
            if prev is not None and prev.revision == slot.revision and prev.raw == slot.raw:
                fresh[key] = prev  # unchanged: keeps its version and its decoded document
            else:
                slot.version = v
                self._tombstones.pop(key, None)
        for key in old.keys() - fresh.keys():
            self._tombstone(key)
        self._slots = fresh

    def _tombstone(self, key: str) -> None:
        self._tombstones[key] = self._version
        if len(self._tombstones) > MAX_TOMBSTONES:  # forget the older half; they read in full
            ordered = sorted(self._tombstones.items(), key=lambda kv: kv[1])
            cut = ordered[len(ordered) // 2][1]
            self._tombstones = {k: v for k, v in ordered if v > cut}
            self._floor = cut

    def _decoded(self, slot: _Slot) -> Doc | None:
        if slot.doc is None and not slot.bad:
            try:
                doc = json.loads(slot.raw)
            except ValueError:
                doc = None
            if isinstance(doc, dict):
                slot.doc = doc
                self.stats.decoded += 1
            else:
                slot.bad = True
                self.stats.undecodable += 1
                log.warning("KV cache: the value at revision %d is not a JSON object; left out", slot.revision)
        return slot.doc

    # ------------------------------------------------------------------ reading
    def get(self, entity_id: str) -> tuple[int, Doc] | None:
        """(revision, document) of one entity, or None (shared document: do not mutate)."""
        slot = self._slots.get(entity_id)
        if slot is None:
            return None
        doc = self._decoded(slot)
        return None if doc is None else (slot.revision, doc)

    def entries(self) -> dict[str, tuple[int, Doc]]:
        """Every entity's (revision, document) now, in a new dict (shared documents: do not mutate)."""
        out: dict[str, tuple[int, Doc]] = {}
        for key, slot in self._slots.items():
            doc = self._decoded(slot)
            if doc is not None:
                out[key] = (slot.revision, doc)
        return out

    async def all(self) -> dict[str, tuple[int, Doc]]:
        """Every entity's (revision, document) once :meth:`caught_up` (the synchronizer's read).

        Raises:
            KvError: see :meth:`caught_up`.
        """
        await self.caught_up()
        return self.entries()

    def docs(self) -> dict[str, Doc]:
        """Every entity's document now, by entity_id (shared documents: do not mutate)."""
        return {key: doc for key, (_, doc) in self.entries().items()}

    def changes_since(self, version: int) -> Changes:
        """What changed since ``version`` (see :class:`Changes`); ``version=0`` gives everything."""
        if version <= 0 or version < self._floor or version > self._version:
            return Changes(self._version, self.entries(), frozenset(), True)
        changed: dict[str, tuple[int, Doc]] = {}
        for key, slot in self._slots.items():
            if slot.version > version:
                doc = self._decoded(slot)
                if doc is not None:
                    changed[key] = (slot.revision, doc)
        deleted = frozenset(k for k, v in self._tombstones.items() if v > version)
        return Changes(self._version, changed, deleted, False)

    def raw_since(self, version: int) -> RawChanges:
        """:meth:`changes_since` without decoding anything (see :class:`RawChanges`).

        For a reader that needs a few fields of each changed document (the synchronizer).
        """
        full = version <= 0 or version < self._floor or version > self._version
        changed = {
            key: (slot.revision, slot.raw, slot.doc)
            for key, slot in self._slots.items()
            if not slot.bad and (full or slot.version > version)
        }
        deleted = frozenset() if full else frozenset(k for k, v in self._tombstones.items() if v > version)
        return RawChanges(self._version, changed, deleted, full)

    async def caught_up(self, timeout_s: float = 10.0) -> None:
        """Wait until every write acknowledged before this call is in the picture.

        Raises:
            KvError: the bucket cannot be read (gone, broker unreachable), or the cache did not
                catch up within ``timeout_s`` (the message says how far it got).
        """
        watch = self._watch
        seen = watch.seen_seq if watch is not None else 0  # before the request (see above)
        with _kv_errors("reading the bucket's stream info"):
            info = await self.js.stream_info(self.stream)
        if watch is not self._watch:  # a re-watch began meanwhile: compare with it from scratch
            watch, seen = self._watch, 0
        generation = watch.generation if watch is not None else self._generation + 1
        if watch is not None and (info.created != watch.created or info.state.last_seq < seen):
            self.rewatch("the bucket was recreated")
            generation = watch.generation + 1  # only the next watch's picture will do
        target = info.state.last_seq
        if self.healthy and watch is not None and watch.generation >= generation and watch.seen_seq >= target:
            return
        waiter = (target, generation, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        fut = waiter[2]
        try:
            async with asyncio.timeout(timeout_s):
                await fut
        except TimeoutError:
            w = self._watch
            raise KvError(
                f"KV cache did not catch up with the bucket within {timeout_s:g} s "
                f"(at sequence {w.seen_seq if w else 0} of {target}; "
                f"{'replaying' if w is not None and w.staging is not None else 'watching' if w else 'no watch'})"
            ) from None
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def _wake(self, seq: int) -> None:
        watch = self._watch
        if watch is None or watch.staging is not None:
            return
        for target, generation, fut in self._waiters:
            if target <= seq and generation <= watch.generation and not fut.done():
                fut.set_result(None)

    def _fail_waiters(self, exc: KvError) -> None:
        for _, _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(exc)

    def snapshot(self) -> dict[str, Any]:
        """The counters now (``lab.stats()["kv_cache"]``)."""
        self.stats.keys = len(self._slots)
        self.stats.version = self._version
        return self.stats.snapshot()
