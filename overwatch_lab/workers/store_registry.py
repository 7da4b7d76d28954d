"""The registry of a process that applies no lifecycle events: what libSQL says, kept fresh.

A telemetry worker process does not run the entity and organisation workers (the lab does), so
no event updates its :class:`~overwatch_lab.registry.Registry` in memory. :class:`StoreRegistry`
asks libSQL instead:

- at start (every entity and organisation);
- on a miss, *after* reading the lifecycle consumers' progress: the unknown-id rule
  (``workers.common.MissCheck``) reads the progress, then checks the registry again. An event
  acknowledged before that read has its row committed (the entity worker commits, then acks),
  so reloading after the read makes the registry know every entity whose registration the
  progress counts as done: a miss is final exactly as in the lab's own process;
- after a lifecycle event (a core-NATS subscription to the entity and organisation subjects),
  once the lifecycle consumers have applied it: deleted entities disappear (their cached KV
  documents are forgotten) and new ones appear without waiting for a miss.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from overwatch_lab.errors import BrokerError, DatabaseError
from overwatch_lab.protocol import subjects as s
from overwatch_lab.registry import ConsumerProgress, ProgressSource, Registry
from overwatch_lab.store.database import Store

log = logging.getLogger(__name__)

SETTLE_WAIT_S = 2.0  # after a lifecycle event: how long to wait for its consumer before reloading anyway
SETTLE_POLL_S = 0.05


class StoreRegistry(Registry):
    """A :class:`Registry` loaded from libSQL and refreshed on misses and lifecycle events.

    Args:
        store: the shared libSQL store.
        grace_s: as :class:`Registry`.
        forget: called with each entity id that vanished or moved (drop cached documents).
    """

    def __init__(
        self, store: Store, *, grace_s: float = 0.0, forget: Callable[[str], None] | None = None
    ) -> None:
        super().__init__(grace_s=grace_s)
        self._store = store
        self._forget = forget or (lambda _eid: None)
        self._reloaded_at = 0.0  # monotonic start of the last completed reload
        self._lock = asyncio.Lock()
        self._events = asyncio.Event()
        self._raw: dict[str, ProgressSource] = {}  # the sources without the reload (for settled())
        self.reloads = 0

    async def reload(self, *, unless_since: float | None = None) -> None:
        """Read every organisation and entity from libSQL (skipped when a reload that started
        after ``unless_since``, monotonic, has completed meanwhile).

        Raises:
            DatabaseError: libSQL could not be read.
        """
        async with self._lock:
            if unless_since is not None and self._reloaded_at >= unless_since:
                return
            started = time.monotonic()
            orgs = {o["org_id"]: o["name"] for o in await self._store.organizations()}
            entities = await self._store.entity_ids()
            gone = [eid for eid, org in self.entities.items() if entities.get(eid) != org]
            self.load(orgs, entities)
            for eid in gone:
                self._forget(eid)
            self._reloaded_at = started
            self.reloads += 1

    def add_progress_source(self, stream: str, source: ProgressSource) -> None:
        """Register ``source``; every progress read through it is followed by a reload."""
        self._raw[stream] = source

        async def then_reload() -> ConsumerProgress:
            asked = time.monotonic()
            progress = await source()
            try:
                await self.reload(unless_since=asked)
            except DatabaseError as exc:  # cannot tell: the miss check holds the message
                raise BrokerError(f"registry reload from libSQL failed: {exc}") from exc
            return progress

        super().add_progress_source(stream, then_reload)

    async def settled(self) -> bool:
        """True when every lifecycle consumer is idle now (no reload).

        Raises:
            BrokerError: the server did not answer.
        """
        for source in self._raw.values():
            if not (await source()).idle:
                return False
        return True

    async def watch(self, nc: NATS, ready: asyncio.Event, stop: asyncio.Event) -> None:
        """Reload after every burst of lifecycle events until ``stop`` is set."""
        subs: list[Subscription] = []

        async def heard(_msg: Msg) -> None:
            self._events.set()

        for subject in (s.ENTITIES_ALL, s.ORGANIZATIONS_ALL):
            subs.append(await nc.subscribe(subject, cb=heard))
        ready.set()
        try:
            while not stop.is_set():
                waiter = asyncio.create_task(self._events.wait())
                stopper = asyncio.create_task(stop.wait())
                try:
                    await asyncio.wait((waiter, stopper), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for t in (waiter, stopper):
                        t.cancel()
                    await asyncio.gather(waiter, stopper, return_exceptions=True)
                if stop.is_set():
                    break
                self._events.clear()
                await self._until_settled()
                try:
                    await self.reload()
                except DatabaseError as exc:  # the next event or miss tries again
                    log.warning("registry reload after a lifecycle event failed: %s", exc)
        finally:
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def _until_settled(self) -> None:
        """Wait (bounded) until the lifecycle consumers have nothing pending: the event is applied."""
        for _ in range(round(SETTLE_WAIT_S / SETTLE_POLL_S)):  # bounded: reload anyway after it
            try:
                if await self.settled():
                    return
            except BrokerError:
                return  # a miss reloads again when it matters
            await asyncio.sleep(SETTLE_POLL_S)
