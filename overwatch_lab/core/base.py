"""The one interface a lab's core offers, and what every core shares (the NATS connection).

:class:`LabCore` is what the :class:`~overwatch_lab.lab.Lab` facade and its parts (commands,
frames, fleet) stand on. Its two implementations differ in what they own, never through an
``if``: :class:`~overwatch_lab.core.owner.OwnerCore` boots and owns the whole fabric;
:class:`~overwatch_lab.core.attached.AttachedCore` connects to one that another process owns.

Every coroutine here runs on the lab's own event loop (``runtime.LoopThread``); the Lab and its
parts bring them there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from overwatch_lab.broker.connect import connect
from overwatch_lab.broker.credentials import CredentialStore
from overwatch_lab.broker.monitor import server_monitor
from overwatch_lab.broker.provision import open_command_kv, open_kv
from overwatch_lab.broker.reload import apply_credentials
from overwatch_lab.config import LabConfig
from overwatch_lab.core.stats import Stats
from overwatch_lab.errors import LabStateError, OverwatchError
from overwatch_lab.kvcache import Changes, KVCache
from overwatch_lab.kvstate import Doc, EntityKV
from overwatch_lab.nats_auth import NatsAuth
from overwatch_lab.protocol import subjects as s

LAB_JSON = "lab.json"
"""The connection file an owner lab writes into its data directory (see ``Lab.attach``)."""
BROKER_DIR = "broker"
"""The embedded broker's store dir under the data directory."""
CREDENTIALS_DIR = "credentials"
"""The scoped identities under the data directory (``broker/credentials.py``)."""

log = logging.getLogger(__name__)

Outgoing = tuple[str, bytes, "str | None"]
"""One message to publish: (subject, payload, Nats-Msg-Id or None)."""


@dataclass(frozen=True, slots=True)
class Run:
    """What a core's tasks get from the lab that runs them.

    Attributes:
        stop: set when the lab should stop (by ``stop()``, or by a part that gave up).
        fail: a part calls it when the broker or its objects are gone for good (or a worker
            process keeps dying): the lab records
            the error as its ``failure`` and stops itself.
    """

    stop: asyncio.Event
    fail: Callable[[OverwatchError], None]


class LabCore(ABC):
    """The parts of one lab, as the facade and its parts see them (see the module docstring).

    Lifecycle (called by the Lab, in this order, on its loop): :meth:`boot`, :meth:`start_tasks`,
    :meth:`running`, then :meth:`request_stop` when the lab stops.
    """

    owner: ClassVar[bool]
    """True for the core that owns its fabric."""

    def __init__(self, config: LabConfig) -> None:
        self.config = config
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._ekv: EntityKV | None = None
        self._cache: KVCache | None = None
        self._command_kv: KeyValue | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} data_dir={str(self.config.data_dir)!r}>"

    # ------------------------------------------------------------------ lifecycle
    @abstractmethod
    async def boot(self, stack: contextlib.AsyncExitStack) -> None:
        """Bring the parts up in order, pushing each one's stop onto ``stack`` (stopped in reverse)."""

    @abstractmethod
    async def start_tasks(self, tg: asyncio.TaskGroup, run: Run) -> list[asyncio.Task[None]]:
        """Start the long-running tasks in ``tg`` and return once each is ready."""

    @abstractmethod
    def running(self, stack: contextlib.AsyncExitStack) -> None:
        """Called once the lab runs (every part ready); undo anything it does on ``stack``."""

    @abstractmethod
    def request_stop(self) -> None:
        """Ask every task started by :meth:`start_tasks` to finish (they are awaited by the lab)."""

    @abstractmethod
    def abort(self) -> None:
        """Kill what this core owns now, from any thread, without draining (a forced exit)."""

    async def _connect(self, stack: contextlib.AsyncExitStack, url: str, auth: NatsAuth, name: str) -> None:
        nc = await connect(url, auth=auth, name=name)
        stack.push_async_callback(_close, nc)
        self._nc, self._js = nc, nc.jetstream()

    async def _open_state(self) -> None:
        kv = await open_kv(self.js)
        self._ekv = EntityKV(kv, attempts=self.config.kv_cas_attempts)
        self._cache = KVCache(kv, self.js, self.nc, replay_timeout_s=self.config.ready_timeout_s)

    async def _start_cache(self, tg: asyncio.TaskGroup) -> asyncio.Task[None]:
        """Start the KV cache's watch in ``tg`` and return once its first replay ended.

        Stopped by :meth:`request_stop` (through ``self.kv_cache.request_stop()``).
        """
        cache = self.kv_cache
        ready = asyncio.Event()
        task = tg.create_task(cache.run(ready), name="kv-cache")
        async with asyncio.timeout(self.config.ready_timeout_s):
            await ready.wait()
        return task

    # ------------------------------------------------------------------ connection
    @property
    def booted(self) -> bool:
        """True once the connection and the state bucket are open."""
        return self._ekv is not None

    @property
    def nc(self) -> NATS:
        """The lab's NATS connection."""
        if self._nc is None:
            raise LabStateError("the lab has no broker connection yet")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        """JetStream on :attr:`nc`."""
        if self._js is None:
            raise LabStateError("the lab has no broker connection yet")
        return self._js

    @property
    def ekv(self) -> EntityKV:
        """The entity state bucket (``CONSTELLATION_GLOBAL_STATE``)."""
        if self._ekv is None:
            raise LabStateError("the lab has no entity state bucket yet")
        return self._ekv

    @property
    def kv_cache(self) -> KVCache:
        """The watcher-backed picture of the entity state bucket, shared by every reader."""
        if self._cache is None:
            raise LabStateError("the lab has no entity state bucket yet")
        return self._cache

    @property
    @abstractmethod
    def nats_url(self) -> str:
        """URL of the broker."""

    @property
    @abstractmethod
    def nats_auth(self) -> NatsAuth:
        """How this lab connects to the broker (the owner: its internal identity)."""

    @property
    def nats_token(self) -> str | None:
        """The token of :attr:`nats_auth` (None for the embedded broker, which has users)."""
        return self.nats_auth.token

    @property
    def monitor_url(self) -> str | None:
        """None: the embedded broker has no HTTP monitoring port (see :meth:`broker_monitor`)."""
        return None

    @property
    def credentials(self) -> CredentialStore:
        """The embedded broker's scoped identities (``<data_dir>/credentials``)."""
        return CredentialStore(self.config.data_dir / CREDENTIALS_DIR)

    @abstractmethod
    async def system_nc(self) -> NATS:
        """A connection of the broker's system account (monitoring, reloads).

        Raises:
            LabStateError: this lab does not hold the system account's credentials.
        """

    async def broker_monitor(self, endpoint: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """One of the embedded broker's monitoring endpoints (``varz``, ``connz``, ``jsz``, ...)."""
        return await server_monitor(await self.system_nc(), endpoint, options)

    async def apply_credentials(self) -> bool:
        """Rewrite the broker's users from :attr:`credentials` and reload it (see ``broker/reload.py``)."""
        if not self.connection_info().get("embedded"):
            raise LabStateError("credentials are issued by the embedded broker only; this lab uses an external one")
        return await apply_credentials(
            self.config.data_dir / BROKER_DIR, self.credentials, await self.system_nc(),
            timeout_s=self.config.ready_timeout_s,
        )  # fmt: skip

    @property
    def db_url(self) -> str:
        """Where the libSQL database is (file path or server URL)."""
        return self.config.db_path

    @abstractmethod
    def connection_info(self) -> dict[str, Any]:
        """What the owner's ``lab.json`` holds: enough for another process to attach."""

    # ------------------------------------------------------------------ counters
    @abstractmethod
    async def stats(self) -> Stats:
        """Counters per worker, the synchronizer's, streams, KV, broker and provisioning."""

    @abstractmethod
    async def sync_now(self) -> dict[str, Any]:
        """Run one synchronizer pass and return its cumulative counters."""

    # ------------------------------------------------------------------ who is known
    @abstractmethod
    async def org_known(self, org_id: str) -> bool:
        """True once the lab has the organisation."""

    @abstractmethod
    async def org_of(self, entity_id: str) -> str | None:
        """The organisation of a registered entity, or None."""

    # ------------------------------------------------------------------ the wire
    async def publish(self, subject: str, data: bytes, msg_id: str | None = None) -> int:
        """Publish one message to JetStream; return its stream sequence."""
        ack = await self.js.publish(subject, data, headers={"Nats-Msg-Id": msg_id} if msg_id else None)
        return ack.seq

    async def publish_many(self, items: list[Outgoing]) -> int:
        """Publish many messages with pipelined acks; return the count."""
        for subject, data, msg_id in items:
            await self.js.publish_async(subject, data, headers={"Nats-Msg-Id": msg_id} if msg_id else None)
        await self.js.publish_async_completed()
        return len(items)

    async def command_kv(self) -> KeyValue:
        """The command status bucket (``CONSTELLATION_COMMAND_STATE``)."""
        if self._command_kv is None:
            self._command_kv = await open_command_kv(self.js)
        return self._command_kv

    async def entity_doc(self, entity_id: str) -> Doc | None:
        """The entity's live KV document, or None."""
        return (await self.ekv.read(entity_id))[1]

    async def entity_docs(self) -> dict[str, Doc]:
        """Every live entity document, by entity_id, from the KV cache once it caught up with the
        bucket (shared documents: do not mutate)."""
        cache = self.kv_cache
        await cache.caught_up()
        return cache.docs()

    async def entity_changes(self, since: int) -> Changes:
        """What changed in the bucket since version ``since`` of the KV cache (0: everything),
        once the cache caught up with the bucket (shared documents: do not mutate)."""
        cache = self.kv_cache
        await cache.caught_up()
        return cache.changes_since(since)

    async def quarantine_records(self) -> list[dict[str, Any]]:
        """Every quarantine record in CONSTELLATION_QUARANTINE, oldest first."""
        records: list[dict[str, Any]] = []
        psub = await self.js.pull_subscribe(s.QUARANTINE_ALL, stream=s.STREAM_QUARANTINE)
        try:
            while True:
                try:
                    msgs = await psub.fetch(500, timeout=0.3)
                except TimeoutError:
                    break
                for m in msgs:
                    records.append(json.loads(m.data))
                    await m.ack()
                if msgs[-1].metadata.num_pending == 0:
                    break
        finally:
            await psub.unsubscribe()
        return records


async def _close(nc: NATS) -> None:
    """Close the lab's connection; a broker already gone makes the flush fail, which is no error."""
    try:
        await nc.close()
    except (ConnectionError, nats.errors.Error) as exc:
        log.debug("closing the NATS connection: %r (the broker is gone)", exc)
