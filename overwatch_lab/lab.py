"""The Lab: the one object a user holds. Boots the fabric in order and stops it in reverse.

Boot order: libSQL store → broker (embedded nats-server, or a URL) → connection → streams,
consumers and KV (idempotent) → registry → workers → synchronizer (first pass) → ``lab.json``.
Stop is the reverse, graceful first (workers finish their batch) and forced after
``stop_timeout_s``.

Three ways to hold one::

    lab = Lab.up()                       # blocking: scripts, notebooks
    lab = await Lab(cfg).start()         # awaitable: notebooks, async code
    async with Lab(cfg) as lab: ...      # tests, scripts (also plain ``with``)

The fabric runs on its own event loop on a background thread (see ``runtime.py``), so it keeps
ingesting while a notebook cell computes. The helpers below (register, publish, state, frames)
are plain blocking calls that are safe from any thread but the lab's own.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import enum
import json
import logging
import os
import time
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import nats.errors
import pandas as pd
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from overwatch_lab import __version__
from overwatch_lab.broker.connect import connect
from overwatch_lab.broker.process import NatsServer
from overwatch_lab.broker.provision import open_command_kv, open_kv, provision, provision_commands
from overwatch_lab.commands.api import CommandHandle, command_history_frame, commands_frame
from overwatch_lab.commands.delivery import Deliverer
from overwatch_lab.commands.ledger import CommandLedger
from overwatch_lab.commands.worker import CommandAckWorker, CommandWorker
from overwatch_lab.config import LabConfig
from overwatch_lab.errors import BrokerExited, CommandError, CommandRejected, ConfigError, LabStateError
from overwatch_lab.kvstate import Doc, EntityKV
from overwatch_lab.protocol import commands as cmds
from overwatch_lab.protocol import envelopes
from overwatch_lab.protocol import subjects as s
from overwatch_lab.registry import Registry
from overwatch_lab.runtime import LoopThread
from overwatch_lab.simulation import Simulation, start_simulation
from overwatch_lab.store import queries
from overwatch_lab.store.database import Store
from overwatch_lab.sync import Synchronizer
from overwatch_lab.workers.base import ConsumerLoop, QuarantineLog, Worker
from overwatch_lab.workers.entity import EntityWorker, OrganizationWorker
from overwatch_lab.workers.event import EventWorker
from overwatch_lab.workers.telemetry import TelemetryWorker

if TYPE_CHECKING:
    from simulators import Scenario

log = logging.getLogger(__name__)
T = TypeVar("T")
LAB_JSON = "lab.json"

_running_labs: weakref.WeakSet[Lab] = weakref.WeakSet()


@atexit.register
def _stop_forgotten_labs() -> None:
    for lab in list(_running_labs):
        with contextlib.suppress(Exception):
            lab.down(timeout=lab.config.stop_timeout_s)


class LabState(enum.Enum):
    """Lifecycle of a Lab: it starts once and stops once."""

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(slots=True)
class _Fabric:
    """The parts of a running lab (owned by the lab's loop)."""

    nc: NATS
    js: JetStreamContext
    ekv: EntityKV
    store: Store | None = None
    server: NatsServer | None = None
    registry: Registry = field(default_factory=Registry)
    loops: list[ConsumerLoop] = field(default_factory=list)
    sync: Synchronizer | None = None
    quarantine_log: QuarantineLog = field(default_factory=QuarantineLog)
    telemetry: TelemetryWorker | None = None
    commands: CommandLedger | None = None
    deliverer: Deliverer | None = None
    simulations: list[Simulation] = field(default_factory=list)
    command_kv: KeyValue | None = None


class Lab:
    """An overwatch-lab fabric: broker, workers, store and synchronizer, owned by this object.

    Args:
        config: the configuration; ``LabConfig()`` defaults when None.
        **overrides: LabConfig fields to change, e.g. ``Lab(data_dir="run1", stale_after_s=2)``.
    """

    def __init__(self, config: LabConfig | None = None, **overrides: Any) -> None:
        base = config or LabConfig(**{k: overrides.pop(k) for k in list(overrides) if k == "data_dir"})
        self.config = base.replace(**overrides) if overrides else base
        self.state = LabState.NEW
        self.failure: BaseException | None = None
        self._owner = True
        self._attach_info: dict[str, Any] = {}
        self._thread: LoopThread | None = None
        self._fabric: _Fabric | None = None
        self._main: concurrent.futures.Future[None] | None = None
        self._stop_requested: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"<Lab {self.state.value} data_dir={str(self.config.data_dir)!r}>"

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def up(cls, config: LabConfig | None = None, **overrides: Any) -> Lab:
        """Build and start a lab, blocking until it runs. Works inside a running event loop."""
        lab = cls(config, **overrides)
        lab._started(lab._begin())
        return lab

    async def start(self) -> Lab:
        """Start the lab and return it once every part is ready."""
        running = self._begin()
        try:
            await asyncio.wrap_future(running)
        except BaseException:
            await asyncio.to_thread(self.down)
            raise
        return self

    async def stop(self) -> None:
        """Stop the lab gracefully (idempotent)."""
        await asyncio.to_thread(self.down)

    def down(self, timeout: float | None = None) -> None:
        """Stop the lab, blocking until everything it started has stopped (idempotent)."""
        fut = self._end()
        if fut is not None:
            with contextlib.suppress(BaseException):
                fut.result(timeout)
        if self._thread is not None:
            self._thread.close()

    async def __aenter__(self) -> Lab:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __enter__(self) -> Lab:
        self._started(self._begin())
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    @classmethod
    def attach(cls, data_dir: str | os.PathLike[str], *, timeout: float = 10.0) -> Lab:
        """Attach to a lab running in another process, from its ``<data_dir>/lab.json``.

        The attached Lab publishes, reads state and builds frames like the owner, but owns no
        broker, worker or synchronizer: ``down()`` only closes its connection.
        """
        path = Path(data_dir).expanduser().resolve() / LAB_JSON
        try:
            info = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"no running lab at {path.parent}: {LAB_JSON} not found") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        pid = info.get("pid")
        if not isinstance(pid, int) or not _pid_alive(pid):
            raise ConfigError(f"the lab in {path.parent} is not running (pid {pid} is gone); start it again")
        cfg = LabConfig(
            data_dir=path.parent,
            nats_url=info["nats_url"],
            nats_token=info.get("nats_token"),
            db_url=info["db_url"],
        )
        lab = cls(cfg)
        lab._owner = False
        lab._attach_info = info
        lab._started(lab._begin(), timeout)
        return lab

    @property
    def owner(self) -> bool:
        """False for a lab attached to another process's fabric."""
        return self._owner

    @property
    def nats_url(self) -> str:
        """URL of the broker (embedded or external)."""
        f = self._booted()
        return f.server.url if f.server is not None else str(self.config.nats_url)

    @property
    def nats_token(self) -> str | None:
        """Token to connect to the broker (the embedded one is random per boot)."""
        f = self._booted()
        return f.server.token if f.server is not None else self.config.nats_token

    @property
    def monitor_url(self) -> str | None:
        """nats-server monitoring URL (embedded broker only)."""
        f = self._booted()
        if f.server is not None:
            return f.server.monitor_url
        return self._attach_info.get("monitor_url")

    @property
    def db_url(self) -> str:
        """Where the libSQL database is (file path or server URL)."""
        return self.config.db_path

    def connection_info(self) -> dict[str, Any]:
        """What ``lab.json`` holds: enough for another process to attach."""
        return {
            "nats_url": self.nats_url,
            "nats_token": self.nats_token,
            "db_url": self.db_url,
            "monitor_url": self.monitor_url,
            "pid": os.getpid(),
            "data_dir": str(self.config.data_dir),
            "embedded": self.config.embedded,
            "version": __version__,
            "started_at": envelopes.now_timestamp(),
        }

    # ------------------------------------------------------------------ internals
    def _begin(self) -> concurrent.futures.Future[None]:
        if self.state is not LabState.NEW:
            raise LabStateError(f"a Lab starts once; this one is {self.state.value}. Build a new Lab.")
        self.state = LabState.STARTING
        self._thread = LoopThread(f"overwatch-lab:{self.config.data_dir.name}")
        running: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._main = self._thread.submit(self._run(running))
        return running

    def _started(self, running: concurrent.futures.Future[None], timeout: float | None = None) -> None:
        """Block until ``running`` resolves; on a failed start, release the loop thread and re-raise."""
        try:
            running.result(timeout)
        except BaseException:
            self.down()
            raise

    def _end(self) -> concurrent.futures.Future[None] | None:
        if self.state in (LabState.NEW, LabState.STOPPED, LabState.FAILED) or self._main is None:
            if self.state is LabState.NEW:
                self.state = LabState.STOPPED
            return None
        assert self._thread is not None and self._stop_requested is not None
        if self._thread.alive:
            self._thread.loop.call_soon_threadsafe(self._stop_requested.set)
        return self._main

    async def _run(self, running: concurrent.futures.Future[None]) -> None:
        self._stop_requested = asyncio.Event()
        try:
            async with contextlib.AsyncExitStack() as stack:
                fabric = await self._boot(stack)
                self._fabric = fabric
                async with asyncio.TaskGroup() as tg:
                    watch = None
                    if fabric.server is not None:
                        watch = tg.create_task(self._watch_broker(fabric.server), name="broker-watch")
                    tasks = await self._start_tasks(tg, fabric)
                    if self._owner:
                        self._write_lab_json()
                        stack.callback(self._remove_lab_json)
                    self.state = LabState.RUNNING
                    _running_labs.add(self)
                    running.set_result(None)
                    log.info("lab running: nats %s, db %s", self.nats_url, self.db_url)
                    await self._stop_requested.wait()
                    self.state = LabState.STOPPING
                    for sim in fabric.simulations:  # devices first: nothing new arrives while draining
                        try:
                            await sim._stop()
                        except Exception:  # a failing fleet must not keep the lab from stopping
                            log.exception("stopping simulation %r failed", sim)
                    for loop in fabric.loops:
                        loop.request_stop()
                    if fabric.sync is not None:
                        fabric.sync.request_stop()
                    if fabric.deliverer is not None:
                        fabric.deliverer.request_stop()
                    _, late = await asyncio.wait(tasks, timeout=self.config.stop_timeout_s)
                    for task in late:
                        log.warning(
                            "task %s did not stop in %.1f s; cancelling",
                            task.get_name(),
                            self.config.stop_timeout_s,
                        )
                        task.cancel()
                    if watch is not None:
                        watch.cancel()
        except BaseException as exc:
            self.failure = exc if not isinstance(exc, asyncio.CancelledError) else None
            self.state = LabState.FAILED
            if not running.done():
                running.set_exception(exc if isinstance(exc, Exception) else LabStateError(repr(exc)))
            log.error("lab failed: %r", exc)
            raise
        finally:
            _running_labs.discard(self)
            if self.state is not LabState.FAILED:
                self.state = LabState.STOPPED

    async def _boot(self, stack: contextlib.AsyncExitStack) -> _Fabric:
        cfg = self.config
        server: NatsServer | None = None
        store: Store | None = None
        if self._owner:
            cfg.data_dir.mkdir(parents=True, exist_ok=True)
            store = Store(cfg.db_path)
            await store.open()
            stack.push_async_callback(store.close)
            if cfg.embedded:
                server = NatsServer(
                    cfg.data_dir / "broker",
                    sync_interval=cfg.sync_interval,
                    ready_timeout_s=cfg.ready_timeout_s,
                    stop_timeout_s=cfg.stop_timeout_s,
                )
                await server.start()
                stack.push_async_callback(server.stop)
        url = server.url if server is not None else str(cfg.nats_url)
        token = server.token if server is not None else cfg.nats_token
        nc = await connect(
            url,
            token=token,
            user=cfg.nats_user,
            password=cfg.nats_password,
            creds=cfg.nats_creds,
            name="overwatch-lab" if self._owner else "overwatch-lab-attached",
        )
        stack.push_async_callback(nc.close)
        js = nc.jetstream()
        if self._owner:
            report = await provision(js, cfg)
            log.info("provisioned: %s", report)
            log.info("provisioned commands: %s", await provision_commands(js, cfg))
        kv = await open_kv(js)
        fabric = _Fabric(
            nc=nc, js=js, ekv=EntityKV(kv, attempts=cfg.kv_cas_attempts), store=store, server=server
        )
        if store is not None:
            orgs = {o["org_id"]: o["name"] for o in await store.organizations()}
            fabric.registry.load(orgs, await store.entity_ids())
        return fabric

    async def _start_tasks(self, tg: asyncio.TaskGroup, f: _Fabric) -> list[asyncio.Task[None]]:
        tasks: list[asyncio.Task[None]] = []
        if not self._owner:
            return tasks
        assert f.store is not None
        tel = TelemetryWorker(f.store, f.ekv, f.registry)
        org_worker = OrganizationWorker(f.store, f.ekv, f.registry, tel.forget)
        org_loop = ConsumerLoop(org_worker, f.nc, f.js, self.config, f.quarantine_log)
        orgs_settled = partial(_consumer_idle, f.js, s.STREAM_ORGANIZATIONS, s.CONSUMER_ORGANIZATION)
        ent_worker = EntityWorker(f.store, f.ekv, f.registry, tel.forget, orgs_settled)
        ent_loop = ConsumerLoop(ent_worker, f.nc, f.js, self.config, f.quarantine_log)
        workers: list[Worker] = [tel, EventWorker(f.store, f.ekv, f.registry)]
        f.loops = [org_loop, ent_loop] + [
            ConsumerLoop(w, f.nc, f.js, self.config, f.quarantine_log) for w in workers
        ]
        f.registry.add_settled_check(orgs_settled)
        f.registry.add_settled_check(partial(_consumer_idle, f.js, s.STREAM_ENTITIES, s.CONSUMER_ENTITY))
        f.telemetry = tel
        f.command_kv = await open_command_kv(f.js)
        f.commands = CommandLedger(f.store, f.nc, self.config)
        await f.commands.load()  # open commands of an earlier run: delivery resumes where it stopped
        cmd_loop = ConsumerLoop(
            CommandWorker(f.commands, f.registry, f.nc, self.config),
            f.nc,
            f.js,
            self.config,
            f.quarantine_log,
        )
        ack_worker = CommandAckWorker(f.commands)
        ack_loop = ConsumerLoop(ack_worker, f.nc, f.js, self.config, f.quarantine_log)
        f.deliverer = Deliverer(f.commands, f.nc, self.config, acks_pending=ack_worker.busy)
        f.loops += [cmd_loop, ack_loop]
        f.sync = Synchronizer(f.store, f.ekv, self.config, tel.forget)
        await f.sync.run_pass()  # boot pass: every entity row gets a document before workers run
        readies = []
        for loop in f.loops:
            ready = asyncio.Event()
            readies.append(ready)
            tasks.append(tg.create_task(loop.run(ready), name=f"worker:{loop.worker.name}"))
        ready = asyncio.Event()
        readies.append(ready)
        tasks.append(tg.create_task(f.sync.run(ready), name="synchronizer"))
        ready = asyncio.Event()
        readies.append(ready)
        tasks.append(tg.create_task(f.deliverer.run(ready), name=f"worker:{f.deliverer.name}"))
        async with asyncio.timeout(self.config.ready_timeout_s):
            for r in readies:
                await r.wait()
        return tasks

    async def _watch_broker(self, server: NatsServer) -> None:
        code = await server.wait_exited()
        if self.state in (LabState.STARTING, LabState.RUNNING):
            self.failure = BrokerExited(f"embedded nats-server exited unexpectedly with code {code}")
            log.error("%s; stopping the lab", self.failure)
            assert self._stop_requested is not None
            self._stop_requested.set()

    def _write_lab_json(self) -> None:
        path = self.config.data_dir / LAB_JSON
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(self.connection_info(), fh, indent=2)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)

    def _remove_lab_json(self) -> None:
        path = self.config.data_dir / LAB_JSON
        with contextlib.suppress(OSError):
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()

    def _booted(self) -> _Fabric:
        if self._fabric is None:
            raise LabStateError(f"the lab is {self.state.value}; it has no broker connection yet")
        return self._fabric

    def _require(self) -> _Fabric:
        if self.state is not LabState.RUNNING or self._fabric is None:
            raise LabStateError(f"the lab is {self.state.value}, not running")
        return self._fabric

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        """Run a coroutine on the lab's event loop and return its result (blocking)."""
        self._require()
        assert self._thread is not None
        return self._thread.call(coro, timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule a coroutine on the lab's event loop; await it with ``asyncio.wrap_future``."""
        self._require()
        assert self._thread is not None
        return self._thread.submit(coro)

    # ------------------------------------------------------------------ helpers (through the wire)
    def publish(self, subject: str, payload: bytes | dict[str, Any], *, msg_id: str | None = None) -> int:
        """Publish one message to JetStream and return its stream sequence (raw bytes are sent as-is)."""
        data = payload if isinstance(payload, bytes) else envelopes.encode(payload)
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        f = self._require()

        async def go() -> int:
            ack = await f.js.publish(subject, data, headers=headers)
            return ack.seq

        return self.call(go())

    def publish_many(self, items: list[tuple[str, bytes, str | None]]) -> int:
        """Publish many (subject, payload, msg_id) to JetStream with pipelined acks; returns the count."""
        f = self._require()

        async def go() -> int:
            for subject, data, msg_id in items:
                await f.js.publish_async(subject, data, headers={"Nats-Msg-Id": msg_id} if msg_id else None)
            await f.js.publish_async_completed()
            return len(items)

        return self.call(go(), timeout=None)

    def register_org(
        self, org_id: str, name: str | None = None, org_type: str = "civilian", *, timeout: float = 10.0
    ) -> None:
        """Register (or update) an organisation through the wire and wait until the lab has it."""
        event = envelopes.make_org_event("created", org_id, name or org_id, org_type)
        self.publish(s.organization_subject("created"), event, msg_id=event["id"])
        self.wait_for(lambda: self._org_known(org_id), timeout=timeout, what=f"organization {org_id!r}")

    def register_entity(
        self,
        org_id: str,
        entity_id: str,
        entity_type: str,
        *,
        name: str | None = None,
        status: str = "active",
        priority: str = "normal",
        timeout: float = 10.0,
        **fields: Any,
    ) -> Doc:
        """Register an entity through the wire (an entity ``created`` event) and return its KV document.

        The organisation must exist (``register_org``). Waits until the document is in KV, so
        telemetry can follow at once.
        """
        record = {
            "entity_id": entity_id,
            "org_id": org_id,
            "name": name or entity_id,
            "entity_type": entity_type,
            "status": status,
            "priority": priority,
            **fields,
        }
        event = envelopes.make_entity_event("created", record)
        self.publish(s.entity_subject(org_id, "created"), event, msg_id=event["id"])
        return self.wait_for(
            lambda: self.state_of(entity_id), timeout=timeout, what=f"entity {entity_id!r} in KV"
        )

    def register_entities(self, records: list[dict[str, Any]], *, timeout: float = 60.0) -> int:
        """Register many entities at once (records as for ``register_entity``, each with ``org_id``).

        Publishes every ``created`` event with pipelined acks, then waits until every entity has
        its KV document. Returns the number registered.
        """
        items = []
        for rec in records:
            record = {"name": rec["entity_id"], "status": "active", "priority": "normal", **rec}
            event = envelopes.make_entity_event("created", record)
            items.append(
                (s.entity_subject(record["org_id"], "created"), envelopes.encode(event), event["id"])
            )
        self.publish_many(items)
        wanted = {r["entity_id"] for r in records}
        f = self._require()

        def all_there() -> bool:
            docs = self.call(f.ekv.all())
            return wanted <= docs.keys()

        self.wait_for(all_there, timeout=timeout, interval=0.1, what=f"{len(wanted)} entities in KV")
        return len(wanted)

    def publish_telemetry(
        self,
        org_id: str,
        entity_id: str,
        message_type: str,
        data: dict[str, Any],
        *,
        timestamp: str | float | None = None,
        message_uid: str | None = None,
    ) -> str:
        """Publish one telemetry v1 envelope (as a device would) and return its message_uid."""
        env = envelopes.make_telemetry(
            org_id, entity_id, message_type, data, timestamp=timestamp, message_uid=message_uid
        )
        self.publish(s.telemetry_subject(org_id, entity_id), env, msg_id=env["message_uid"])
        return str(env["message_uid"])

    def state_of(self, entity_id: str) -> Doc | None:
        """Return the entity's live KV document, or None."""
        s.check_token(entity_id, "entity_id")
        f = self._require()
        return self.call(f.ekv.read(entity_id))[1]

    def states(self) -> pd.DataFrame:
        """Every entity document, flattened into one row per entity (columns like ``position.global.latitude``)."""
        f = self._require()
        docs = self.call(f.ekv.all())
        if not docs:
            return pd.DataFrame()
        frame = pd.json_normalize([d for _, d in docs.values()], max_level=3)
        return frame.set_index("entity_id", drop=False).sort_index()

    def wait_for(
        self,
        predicate: Callable[[], T],
        *,
        timeout: float = 10.0,
        interval: float = 0.02,
        what: str = "condition",
    ) -> T:
        """Poll ``predicate`` until it returns something truthy, and return that; TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if _truthy(value):
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not reached within {timeout:.1f} s")
            time.sleep(interval)

    def _org_known(self, org_id: str) -> bool:
        f = self._require()
        if self._owner:
            return org_id in f.registry.orgs
        return not queries.read_frame(
            self.db_url, "SELECT 1 FROM organizations WHERE org_id = ?", (org_id,)
        ).empty

    # ------------------------------------------------------------------ simulated fleets
    def simulate(
        self,
        scenario: Scenario | str = "small-isr-patrol",
        *,
        speed: float = 1.0,
        duration_s: float | None = None,
        seed: int | None = None,
        processes: int = 0,
    ) -> Simulation:
        """Fly a simulated fleet against this lab and return its control handle.

        Args:
            scenario: a Scenario, a named fleet (``small-isr-patrol``, ``area-search``,
                ``load-1000``) or a YAML/TOML file.
            speed: simulated seconds per wall second (1 = real time).
            duration_s: stop after this many simulated seconds (default: the scenario's).
            seed: override the scenario's seed (every random stream derives from it).
            processes: 0 runs the fleet on the lab's loop; N > 0 splits it over N processes.

        The devices talk to the lab only over NATS, like real ones. The lab stops the fleet
        when it stops.
        """
        f = self._require()

        async def go() -> Simulation:
            sim = await start_simulation(
                self, scenario, speed=speed, duration_s=duration_s, seed=seed, processes=processes
            )
            f.simulations.append(sim)
            return sim

        return self.call(go(), timeout=60)

    # ------------------------------------------------------------------ commands
    def send_command(
        self,
        entity_id: str,
        action: str,
        *,
        org_id: str | None = None,
        ttl_s: float | None = None,
        command_id: str | None = None,
        source: str = "overwatch-lab",
        **params: Any,
    ) -> CommandHandle:
        """Send a command to one entity through the wire and return its :class:`CommandHandle`.

        ``action`` is one of goto, rtl, land, hold, set_mode, arm, disarm, set_speed,
        follow_route, orbit; ``params`` are its parameters (e.g. ``lat=…, lon=…, alt_m=40``).
        The lab validates it: a bad command comes back REJECTED with the reason (``handle.wait``
        raises CommandRejected). ``org_id`` defaults to the entity's organisation.

        Raises:
            CommandRejected: the entity is unknown and no ``org_id`` was given.
            CommandError: the commands stream refused the message (e.g. full).
        """
        s.check_token(entity_id, "entity_id")
        org = org_id or self._org_of(entity_id)
        if org is None:
            raise CommandRejected(
                f"unknown entity {entity_id!r}: register it, or pass org_id= to record the rejection"
            )
        env = cmds.make_command(
            org,
            entity_id,
            action,
            params,
            command_id=command_id,
            ttl_s=ttl_s,
            issued_at=time.time(),
            source=source,
        )
        self._publish_command(s.command_subject(org, entity_id), env)
        return CommandHandle(self, env["command_id"], org, entity_id)

    def broadcast_command(
        self,
        org_id: str,
        action: str,
        *,
        ttl_s: float | None = None,
        command_id: str | None = None,
        source: str = "overwatch-lab",
        **params: Any,
    ) -> CommandHandle:
        """Send a command to every entity of an organisation (one tracked delivery per entity)."""
        env = cmds.make_command(
            org_id,
            None,
            action,
            params,
            command_id=command_id,
            ttl_s=ttl_s,
            issued_at=time.time(),
            source=source,
        )
        self._publish_command(s.command_subject(org_id), env)
        return CommandHandle(self, env["command_id"], org_id, None)

    def command(self, command_id: str) -> CommandHandle:
        """The handle of a command already recorded by the lab.

        Raises:
            CommandError: no command with that id is recorded.
        """
        rows = queries.read_frame(
            self.db_url,
            "SELECT org_id, entity_id, broadcast FROM commands WHERE command_id = ?",
            (command_id,),
        )
        if rows.empty:
            raise CommandError(f"no command {command_id!r} is recorded")
        first = rows.iloc[0]
        broadcast = bool(first["broadcast"]) or first["entity_id"] == cmds.BROADCAST
        return CommandHandle(
            self, command_id, str(first["org_id"]), None if broadcast else str(first["entity_id"])
        )

    def commands_frame(self, **filters: Any) -> pd.DataFrame:
        """Commands as a DataFrame: one row per command and entity, stage times, per-stage latencies (ms)."""
        return commands_frame(self.db_url, **filters)

    def command_history_frame(self, command_id: str) -> pd.DataFrame:
        """Every recorded transition and ack of one command."""
        return command_history_frame(self.db_url, command_id)

    def _org_of(self, entity_id: str) -> str | None:
        f = self._require()
        if self._owner:
            return f.registry.org_of(entity_id)
        rows = queries.read_frame(
            self.db_url, "SELECT org_id FROM entities WHERE entity_id = ?", (entity_id,)
        )
        return None if rows.empty else str(rows.iloc[0]["org_id"])

    def _publish_command(self, subject: str, env: dict[str, Any], msg_id: str | None = None) -> None:
        f = self._require()
        headers = {"Nats-Msg-Id": msg_id or env["command_id"]}

        async def go() -> None:
            try:
                await f.js.publish(subject, envelopes.encode(env), headers=headers)
            except (nats.errors.Error, TimeoutError) as exc:
                raise CommandError(
                    f"command {env['command_id']} was not queued on {subject}: {exc!r}"
                ) from exc

        self.call(go())

    def _publish_cancel(self, org_id: str, entity_id: str | None, command_id: str) -> None:
        env = cmds.make_cancel(org_id, entity_id, command_id, source="operator")
        self._publish_command(s.command_subject(org_id, entity_id), env, msg_id=f"cancel-{command_id}")

    async def _command_kv(self) -> KeyValue:
        f = self._require()
        if f.command_kv is None:
            f.command_kv = await open_command_kv(f.js)
        return f.command_kv

    # ------------------------------------------------------------------ observing
    def stats(self) -> dict[str, dict[str, Any]]:
        """Counters per worker (handled, acked, ignored, retried, quarantined, lag…) and the synchronizer's."""
        f = self._require()
        out: dict[str, dict[str, Any]] = {loop.worker.name: loop.worker.stats.snapshot() for loop in f.loops}
        if f.sync is not None:
            out["synchronizer"] = f.sync.stats.snapshot()
        if f.commands is not None:
            out["commands"] = f.commands.stats.snapshot()
        out["kv"] = {"cas_conflicts": f.ekv.conflicts}
        return out

    def sync_now(self) -> dict[str, Any]:
        """Run one synchronizer pass now and return its cumulative counters."""
        f = self._require()
        if f.sync is None:
            raise LabStateError("an attached lab has no synchronizer; call sync_now() on the owner")
        return self.call(f.sync.run_pass()).snapshot()

    def telemetry_frame(self, **filters: Any) -> pd.DataFrame:
        """Telemetry history as a DataFrame (see ``store.queries.telemetry_frame`` for filters)."""
        return queries.telemetry_frame(self.db_url, **filters)

    def entities_frame(self) -> pd.DataFrame:
        """The ``entities`` table as a DataFrame."""
        return queries.entities_frame(self.db_url)

    def device_events_frame(self, **filters: Any) -> pd.DataFrame:
        """Device events (bootsequence, shutdown, …) as a DataFrame."""
        return queries.device_events_frame(self.db_url, **filters)

    def quarantine_frame(self) -> pd.DataFrame:
        """Every quarantine record in CONSTELLATION_QUARANTINE, with the reason for each."""
        f = self._require()

        async def go() -> list[dict[str, Any]]:
            records: list[dict[str, Any]] = []
            psub = await f.js.pull_subscribe(s.QUARANTINE_ALL, stream=s.STREAM_QUARANTINE)
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

        records = self.call(go())
        columns = [
            "quarantined_at", "worker", "error", "original_subject", "num_delivered",
            "stream_sequence", "source_stream", "source_consumer", "original_data",
        ]  # fmt: skip
        return pd.DataFrame(records, columns=columns)


async def _consumer_idle(js: JetStreamContext, stream: str, durable: str) -> bool:
    """True when a durable consumer has nothing undelivered and nothing unacknowledged right now."""
    info = await js.consumer_info(stream, durable)
    return not info.num_pending and not info.num_ack_pending


def _truthy(value: object) -> bool:
    if isinstance(value, pd.DataFrame | pd.Series):
        return not value.empty
    return bool(value)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
