"""The core of a lab that only watches a deployment it does not own (a real Overwatch hub).

``Lab.observe(url, token=... | user=, password=... | creds=... | nkey_seed=...)`` needs no
``lab.json``: it connects with the deployment's own credentials and **changes nothing there**.
It never creates, updates or deletes a stream, durable consumer or bucket of the deployment and
never acknowledges a message on its behalf. What it reads it reads through objects of its own
that the server drops when the observer goes away:

- entity state (``frames.states()``): the KV cache's watch of ``CONSTELLATION_GLOBAL_STATE``
  (nats-py's ordered, ephemeral consumer on the bucket's stream);
- telemetry history (``frames.telemetry()``): :class:`~overwatch_lab.core.recorder.HistoryRecorder`,
  an ordered ephemeral consumer on ``CONSTELLATION_TELEMETRY`` from its first stored message,
  decoded in any accepted format (v1 or an edge agent's) into a libSQL file of the observer's own
  (in ``data_dir``; a temporary folder, removed at ``down()``, by default);
- quarantine (``frames.quarantine()``): an ephemeral pull consumer on ``CONSTELLATION_QUARANTINE``
  when the deployment has that stream (a limits stream: reading it removes nothing), else empty;
- counters (``stats()``): stream and consumer info (JetStream's read-only ``INFO`` requests) and
  the recorder's.

It publishes nothing: ``publish`` and the device-side verbs raise LabStateError.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS

from overwatch_lab.broker.connect import connect, redact_url
from overwatch_lab.config import LabConfig
from overwatch_lab.core.base import LabCore, Outgoing, Run, _close
from overwatch_lab.core.recorder import HistoryRecorder
from overwatch_lab.core.stats import Stats
from overwatch_lab.errors import LabStateError
from overwatch_lab.nats_auth import NatsAuth
from overwatch_lab.protocol import subjects as s
from overwatch_lab.store.database import Store

log = logging.getLogger(__name__)

OBSERVED_STREAMS = (
    s.STREAM_ENTITIES,
    s.STREAM_ORGANIZATIONS,
    s.STREAM_EVENTS,
    s.STREAM_TELEMETRY,
    s.STREAM_COMMANDS,
    s.STREAM_QUARANTINE,
)
"""The deployment's streams whose counters ``stats()["streams"]`` shows (the ones it has)."""


class ObserverCore(LabCore):
    """Watches a deployment read-only (see the module docstring)."""

    owner = False

    def __init__(
        self,
        nats_url: str,
        *,
        token: str | None = None,
        user: str | None = None,
        password: str | None = None,
        creds: str | Path | None = None,
        nkey_seed: str | None = None,
        nkey_seed_file: str | Path | None = None,
        data_dir: str | Path | None = None,
        record_history: bool = True,
    ) -> None:
        self._temp_dir = data_dir is None
        folder = Path(tempfile.mkdtemp(prefix="overwatch-observe-")) if data_dir is None else Path(data_dir)
        super().__init__(
            LabConfig(
                data_dir=folder.expanduser().resolve(),
                nats_url=nats_url,
                nats_token=token,
                nats_user=user,
                nats_password=password,
                nats_creds=Path(creds) if creds is not None else None,
            )
        )
        self._nkey_seed = nkey_seed
        self._nkey_seed_file = Path(nkey_seed_file).expanduser() if nkey_seed_file is not None else None
        self._record = record_history
        self._store: Store | None = None
        self.recorder: HistoryRecorder | None = None

    async def boot(self, stack: contextlib.AsyncExitStack) -> None:
        """Connect, open the state bucket (it must exist) and the observer's own history file."""
        cfg = self.config
        if self._temp_dir:
            stack.callback(shutil.rmtree, cfg.data_dir, ignore_errors=True)
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        store = self._store = Store(cfg.db_path)
        await store.open()
        stack.push_async_callback(store.close)
        nc = await connect(self.nats_url, auth=self.nats_auth, name="overwatch-lab-observer")
        stack.push_async_callback(_close, nc)
        self._nc, self._js = nc, nc.jetstream()
        await self._open_state()

    async def start_tasks(self, tg: asyncio.TaskGroup, run: Run) -> list[asyncio.Task[None]]:
        """The KV cache and (unless disabled) the history recorder, each ready first."""
        tasks = [await self._start_cache(tg)]
        if self._record:
            assert self._store is not None
            rec = self.recorder = HistoryRecorder(self.js, self._store, self.kv_cache.docs)
            ready = asyncio.Event()
            tasks.append(tg.create_task(rec.run(ready), name="history-recorder"))
            async with asyncio.timeout(self.config.ready_timeout_s):
                await ready.wait()
        return tasks

    def running(self, stack: contextlib.AsyncExitStack) -> None:
        """Nothing: an observer writes no ``lab.json``."""
        log.info("observing %s read-only", redact_url(self.nats_url))

    def request_stop(self) -> None:
        """Stop the KV cache and the recorder (their consumers go with the connection)."""
        if self._cache is not None:
            self._cache.request_stop()
        if self.recorder is not None:
            self.recorder.request_stop()

    def abort(self) -> None:
        """Nothing: the broker is the deployment's."""

    @property
    def nats_url(self) -> str:
        """The deployment's URL."""
        return str(self.config.nats_url)

    @property
    def nats_auth(self) -> NatsAuth:
        """The credentials given to connect (the deployment's, as the caller has them)."""
        cfg = self.config
        return NatsAuth(
            token=cfg.nats_token,
            user=cfg.nats_user,
            password=cfg.nats_password,
            creds=str(cfg.nats_creds) if cfg.nats_creds is not None else None,
            nkey_seed=self._nkey_seed,
            nkey_seed_file=str(self._nkey_seed_file) if self._nkey_seed_file is not None else None,
        )

    async def system_nc(self) -> NATS:
        """Never: a deployment's system account is its operators' business, not an observer's."""
        raise LabStateError("an observed deployment's system account is not the lab's to use")

    @property
    def monitor_url(self) -> str | None:
        """Unknown: the deployment's monitoring port is its own business."""
        return None

    def connection_info(self) -> dict[str, Any]:
        """Where the observer looks (no credentials) and where it keeps its history."""
        return {
            "observer": True,
            "nats_url": redact_url(self.nats_url),
            "db_url": self.db_url,
            "data_dir": str(self.config.data_dir),
        }

    async def stats(self) -> Stats:
        """Per stream the deployment has: messages, bytes and its durables' lag; the recorder's counters."""
        streams: dict[str, Any] = {}
        for name in OBSERVED_STREAMS:
            try:
                info = await self.js.stream_info(name)
                consumers = await self.js.consumers_info(name)
            except nats.js.errors.NotFoundError:
                continue
            except nats.errors.Error as exc:
                streams[name] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            lag = sum(
                (c.num_pending or 0) + (c.num_ack_pending or 0) for c in consumers if c.config.durable_name
            )
            durables = sorted(c.name for c in consumers if c.config.durable_name)
            streams[name] = {
                "consumer": ", ".join(durables),
                "messages": info.state.messages,
                "bytes": info.state.bytes,
                "consumers": info.state.consumer_count,
                "lag": lag if durables else None,
            }
        out: Stats = {"streams": streams, "kv": {"keys": len(self.kv_cache.docs())}}
        if self.recorder is not None:
            out["history-recorder"] = self.recorder.stats()
        return out

    async def sync_now(self) -> dict[str, Any]:
        """An observer has no synchronizer."""
        raise LabStateError("an observing lab has no synchronizer")

    async def org_known(self, org_id: str) -> bool:
        """True when an entity document of the bucket names the organisation."""
        return any(d.get("org_id") == org_id for d in self.kv_cache.docs().values() if isinstance(d, dict))

    async def org_of(self, entity_id: str) -> str | None:
        """The ``org_id`` of the entity's document in the bucket."""
        doc = self.kv_cache.docs().get(entity_id)
        org = doc.get("org_id") if isinstance(doc, dict) else None
        return org if isinstance(org, str) else None

    async def publish(self, subject: str, data: bytes, msg_id: str | None = None) -> int:
        """Refused: an observer changes nothing on the deployment."""
        raise LabStateError(
            f"this lab observes {redact_url(self.nats_url)} read-only and publishes nothing ({subject})"
        )

    async def publish_many(self, items: list[Outgoing]) -> int:
        """Refused: an observer changes nothing on the deployment."""
        raise LabStateError(f"this lab observes {redact_url(self.nats_url)} read-only and publishes nothing")

    async def quarantine_records(self) -> list[dict[str, Any]]:
        """The deployment's quarantine records (none when it has no quarantine stream)."""
        try:
            await self.js.stream_info(s.STREAM_QUARANTINE)
        except nats.js.errors.NotFoundError:
            return []
        return await super().quarantine_records()
