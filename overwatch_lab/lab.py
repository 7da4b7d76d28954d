"""The Lab: the one object a user holds. Boots the fabric in order and stops it in reverse.

Boot order: the data directory's lock (``lab.lock``, see ``datadir_lock.py``) → libSQL store →
broker (embedded nats-server, or a URL) → connection → streams, consumers and KV (idempotent) →
registry → workers → synchronizer (first pass) → ``lab.json``.
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
import signal
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from overwatch_lab import __version__
from overwatch_lab.broker.connect import connect
from overwatch_lab.broker.process import NatsServer
from overwatch_lab.broker.provision import open_command_kv, open_kv, provision, provision_commands
from overwatch_lab.commands.delivery import Deliverer
from overwatch_lab.commands.lab_methods import CommandHelpers
from overwatch_lab.commands.ledger import CommandLedger
from overwatch_lab.commands.worker import CommandAckWorker, CommandWorker
from overwatch_lab.config import LabConfig
from overwatch_lab.datadir_lock import DataDirLock
from overwatch_lab.errors import BrokerExited, ConfigError, LabStateError
from overwatch_lab.kvstate import EntityKV
from overwatch_lab.lab_observe import STATS_KEY, ObserveHelpers, stats_kv
from overwatch_lab.lab_wire import WireHelpers
from overwatch_lab.protocol import envelopes
from overwatch_lab.protocol import subjects as s
from overwatch_lab.registry import Registry
from overwatch_lab.runtime import LoopThread
from overwatch_lab.simulation import Simulation, start_simulation
from overwatch_lab.store.database import Store
from overwatch_lab.streamwatch import StreamWatch
from overwatch_lab.sync import Synchronizer
from overwatch_lab.workers.base import ConsumerLoop, Worker
from overwatch_lab.workers.entity import EntityWorker, OrganizationWorker
from overwatch_lab.workers.event import EventWorker
from overwatch_lab.workers.progress import consumer_progress
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
    streams: StreamWatch | None = None
    telemetry: TelemetryWorker | None = None
    commands: CommandLedger | None = None
    deliverer: Deliverer | None = None
    simulations: list[Simulation] = field(default_factory=list)
    command_kv: KeyValue | None = None


class Lab(WireHelpers, ObserveHelpers, CommandHelpers):
    """An overwatch-lab fabric: broker, workers, store and synchronizer, owned by this object.

    Args:
        config: the configuration; ``LabConfig()`` defaults when None.
        **overrides: LabConfig fields to change, e.g. ``Lab(data_dir="run1", stale_after_s=2)``.
    """

    def __init__(self, config: LabConfig | None = None, **overrides: Any) -> None:
        if config is None:
            self.config = LabConfig(**overrides)
        else:
            self.config = config.replace(**overrides) if overrides else config
        self.state = LabState.NEW
        self.failure: BaseException | None = None
        self._owner = True
        self._attach_info: dict[str, Any] = {}
        self._thread: LoopThread | None = None
        self._fabric: _Fabric | None = None
        self._main: concurrent.futures.Future[None] | None = None
        self._stop_requested: asyncio.Event | None = None
        self._dir_lock: DataDirLock | None = None  # held by an owner from the start of its boot
        self._broker: NatsServer | None = None  # as soon as it exists, for abort()

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

    def ended(self) -> concurrent.futures.Future[LabState]:
        """A future that resolves to the final state once the lab has stopped or failed.

        It resolves whatever ended the lab (``stop()``, or a failure of its own: then
        ``failure`` says what), never raises, and cancelling it does not touch the lab. Await
        it with ``asyncio.wrap_future``, or block on ``.result(timeout)``.

        Raises:
            LabStateError: the lab was never started.
        """
        if self._main is None:
            raise LabStateError(f"the lab is {self.state.value}; it was never started")
        ended: concurrent.futures.Future[LabState] = concurrent.futures.Future()

        def resolve(_main: concurrent.futures.Future[None]) -> None:
            with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled by its holder
                ended.set_result(self.state)

        self._main.add_done_callback(resolve)
        return ended

    def abort(self) -> None:
        """Kill the embedded broker child now (SIGKILL), from any thread, without draining.

        For a forced exit (a second Ctrl-C) only: the lab is unusable afterwards, and messages
        not yet acknowledged are redelivered to the next lab on this data directory. Without
        it the broker would still die with this process (PDEATHSIG), but only after a graceful
        shutdown of its own; a broker still being forked dies that way.
        """
        server = self._broker
        pid = server.pid if server is not None else None
        if server is not None and pid is not None and server.is_running():
            log.warning("aborting: killing the embedded nats-server (pid %s)", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

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
                    if fabric.streams is not None:
                        fabric.streams.request_stop()
                    if fabric.deliverer is not None:
                        fabric.deliverer.request_stop()
                    late: set[asyncio.Task[None]] = set()
                    if tasks:  # an attached lab runs no tasks
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
            if not running.done():  # failed while starting: the starter gets the error
                running.set_exception(exc if isinstance(exc, Exception) else LabStateError(repr(exc)))
                log.info("lab failed to start: %r", exc)
            else:  # failed while running: nobody else hears of it
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
            # First, before anything touches the directory; released last (after the broker).
            lock = self._dir_lock = DataDirLock(cfg.data_dir)
            await lock.acquire(wait_s=cfg.stop_timeout_s)
            stack.callback(lock.release)
            store = Store(cfg.db_path)
            await store.open()
            stack.push_async_callback(store.close)
            if cfg.embedded:
                server = self._new_broker()
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
            nc=nc,
            js=js,
            ekv=EntityKV(kv, attempts=cfg.kv_cas_attempts),
            store=store,
            server=server,
            registry=Registry(grace_s=cfg.registration_grace_s),
        )
        if store is not None:
            orgs = {o["org_id"]: o["name"] for o in await store.organizations()}
            fabric.registry.load(orgs, await store.entity_ids())
        return fabric

    def _new_broker(self) -> NatsServer:
        """Build the embedded nats-server (every start and restart of it goes through here).

        It inherits the data-dir lock, so the lock lasts until the broker too has exited, and
        it becomes the broker that :meth:`abort` kills.
        """
        cfg = self.config
        assert self._dir_lock is not None
        self._broker = NatsServer(
            cfg.data_dir / "broker",
            sync_interval=cfg.sync_interval,
            ready_timeout_s=cfg.ready_timeout_s,
            stop_timeout_s=cfg.stop_timeout_s,
            pass_fds=(self._dir_lock.fd,),
        )
        return self._broker

    async def _start_tasks(self, tg: asyncio.TaskGroup, f: _Fabric) -> list[asyncio.Task[None]]:
        tasks: list[asyncio.Task[None]] = []
        if not self._owner:
            return tasks
        assert f.store is not None
        tel = TelemetryWorker(f.store, f.ekv, f.registry)
        f.telemetry = tel
        f.command_kv = await open_command_kv(f.js)
        f.commands = CommandLedger(f.store, f.nc, self.config)
        await f.commands.load()  # open commands of an earlier run: delivery resumes where it stopped
        ack_worker = CommandAckWorker(f.commands)
        workers: list[Worker] = [
            OrganizationWorker(f.store, f.ekv, f.registry, tel.forget),
            EntityWorker(f.store, f.ekv, f.registry, tel.forget),
            tel,
            EventWorker(f.store, f.ekv, f.registry),
            CommandWorker(f.commands, f.registry, f.nc, self.config),
            ack_worker,
        ]
        consumed = [(w.stream, w.durable) for w in workers]
        watch = StreamWatch(f.nc, f.js, self.config, consumed, unconsumed=(s.STREAM_QUARANTINE,))
        f.streams = watch
        f.loops = [ConsumerLoop(w, f.nc, f.js, self.config, watch.observer(w.stream)) for w in workers]
        for stream, durable in (
            (s.STREAM_ORGANIZATIONS, s.CONSUMER_ORGANIZATION),
            (s.STREAM_ENTITIES, s.CONSUMER_ENTITY),
        ):
            f.registry.add_progress_source(stream, partial(consumer_progress, f.js, stream, durable))
        f.deliverer = Deliverer(f.commands, f.nc, self.config, acks_pending=ack_worker.busy)
        f.sync = Synchronizer(f.store, f.ekv, self.config, tel.forget)
        await f.sync.run_pass()  # boot pass: every entity row gets a document before workers run
        await watch.check()  # boot pass: counts what the streams discarded while the lab was down
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
        tasks.append(tg.create_task(watch.run(ready), name="stream-watch"))
        tasks.append(tg.create_task(self._publish_stats(await stats_kv(f.js)), name="stats-publisher"))
        ready = asyncio.Event()
        readies.append(ready)
        tasks.append(tg.create_task(f.deliverer.run(ready), name=f"worker:{f.deliverer.name}"))
        async with asyncio.timeout(self.config.ready_timeout_s):
            for r in readies:
                await r.wait()
        return tasks

    async def _publish_stats(self, kv: KeyValue) -> None:
        """Publish the counters for attached labs and dashboards until the lab stops."""
        assert self._stop_requested is not None
        while not self._stop_requested.is_set():
            try:
                await kv.put(STATS_KEY, json.dumps(self._local_stats(), default=str).encode())
            except (nats.errors.Error, TimeoutError) as exc:  # best effort: counters are not data
                log.debug("stats publish failed: %r", exc)
            try:
                async with asyncio.timeout(self.config.stats_period_s):
                    await self._stop_requested.wait()
            except TimeoutError:
                pass

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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
