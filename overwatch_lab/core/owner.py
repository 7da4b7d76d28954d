"""The core of a lab that owns its fabric: it boots every part in order and stops them in reverse.

Boot order (:meth:`OwnerCore.boot`): the data directory's lock (``lab.lock``, see
``datadir_lock.py``) → libSQL store → broker (embedded nats-server, supervised; or a URL) →
connection → streams, consumers and KV (idempotent) → registry. Then (:meth:`start_tasks`) the
command ledger, workers, synchronizer (first pass), stream watch, stats publisher, reprovisioner
and command deliverer, each ready before the lab runs; finally ``lab.json``.

While it runs, the embedded broker is supervised (``broker/supervisor.py``: restarted on the same
ports and token when it dies) and the lab's streams, consumers and buckets are kept in place
(``broker/repair.py``); if either gives up, it calls ``run.fail`` and the lab stops FAILED.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Coroutine
from functools import partial
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS

from overwatch_lab.broker.connect import connect, redact_url
from overwatch_lab.broker.process import NatsServer
from overwatch_lab.broker.provision import foreign_conflicts, provision, provision_commands, retire_partitions
from overwatch_lab.broker.repair import Reprovisioner
from overwatch_lab.broker.supervisor import BrokerSupervisor
from overwatch_lab.commands.delivery import Deliverer
from overwatch_lab.commands.ledger import CommandLedger
from overwatch_lab.commands.worker import CommandAckWorker, CommandWorker
from overwatch_lab.config import LabConfig
from overwatch_lab.core.base import LAB_JSON, LabCore, Run
from overwatch_lab.core.stats import Stats, publish_stats
from overwatch_lab.datadir_lock import DataDirLock
from overwatch_lab.errors import BrokerError, LabStateError, ProvisionError, WorkerProcessError
from overwatch_lab.nats_auth import NatsAuth
from overwatch_lab.protocol import envelopes
from overwatch_lab.protocol import subjects as s
from overwatch_lab.registry import Registry
from overwatch_lab.store.checkpoint import Checkpointer
from overwatch_lab.store.database import Store
from overwatch_lab.streamwatch import StreamWatch
from overwatch_lab.sync import Synchronizer
from overwatch_lab.version import __version__
from overwatch_lab.workers.base import ConsumerLoop, Worker
from overwatch_lab.workers.entity import EntityWorker, OrganizationWorker
from overwatch_lab.workers.event import EventWorker
from overwatch_lab.workers.partitioned import AGGREGATE, aggregate, deal, partition_worker, stats_key
from overwatch_lab.workers.processes import WorkerProcesses
from overwatch_lab.workers.progress import consumer_progress
from overwatch_lab.workers.telemetry import TelemetryWorker

log = logging.getLogger(__name__)


class OwnerCore(LabCore):
    """Owns the fabric: lock, store, broker, provisioning, workers, sync (see the module docstring)."""

    owner = True

    def __init__(self, config: LabConfig) -> None:
        super().__init__(config)
        self.registry = Registry(grace_s=config.registration_grace_s)
        self.started_at = envelopes.now_timestamp()
        self._store: Store | None = None
        self.broker: BrokerSupervisor | None = None
        self._lock: DataDirLock | None = None  # held from the start of the boot
        self._server: NatsServer | None = None  # the current broker child, for abort()
        self.loops: list[ConsumerLoop] = []
        self.sync: Synchronizer | None = None
        self.streams: StreamWatch | None = None
        self.commands: CommandLedger | None = None
        self.deliverer: Deliverer | None = None
        self.repair: Reprovisioner | None = None
        self.telemetry_durables: list[
            str
        ] = []  # partition durables (LabConfig.telemetry_partitions + undrained)
        self.procs: WorkerProcesses | None = None  # the telemetry worker processes (LabConfig.workers)
        self.checkpointer: Checkpointer | None = None  # the WAL's (LabConfig.checkpoint_period_s)
        self._system: NATS | None = None  # the embedded broker's system account (monitoring, reloads)

    @property
    def store(self) -> Store:
        """The libSQL store (open once booted)."""
        if self._store is None:
            raise LabStateError("the lab has no store yet")
        return self._store

    @property
    def server(self) -> NatsServer | None:
        """The embedded nats-server running now (a new object after each restart), if any."""
        return self.broker.server if self.broker is not None else None

    # ------------------------------------------------------------------ lifecycle
    async def boot(self, stack: contextlib.AsyncExitStack) -> None:
        """Lock, store, broker, connection, provisioning, registry (see the module docstring)."""
        cfg = self.config
        cfg.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(cfg.data_dir, 0o700)  # it holds the lab's secrets and every device's credentials
        # First, before anything touches the directory; released last (after the broker).
        lock = self._lock = DataDirLock(cfg.data_dir)
        await lock.acquire(wait_s=cfg.stop_timeout_s)
        stack.callback(lock.release)
        store = self._store = Store(cfg.db_path, autocheckpoint=cfg.checkpoint_period_s == 0)
        if not store.is_remote:
            _private_file(Path(cfg.db_path))  # SQLite gives its -wal and -shm files the same mode
        await store.open()
        stack.push_async_callback(store.close)
        if cfg.embedded:
            for role in ("observer", "operator"):  # for attached notebooks, dashboards, the CLI;
                self.credentials.issue(role, role)  # issued before the broker reads its users
            broker = self.broker = BrokerSupervisor(self._new_broker, cfg)
            stack.push_async_callback(broker.stop)
            await broker.start()
        await self._connect(stack, self.nats_url, self.nats_auth, "overwatch-lab")
        if not cfg.embedded:  # someone else's server: never rewrite what the lab did not make
            await self._refuse_foreign()
        if self.broker is not None:
            self._system = await connect(self.nats_url, auth=self.broker.server.system_auth, name="overwatch-lab-sys")
            stack.push_async_callback(self._system.close)
        log.info("provisioned: %s", await provision(self.js, cfg))
        log.info("provisioned commands: %s", await provision_commands(self.js, cfg))
        kept, _ = await retire_partitions(self.js, cfg)
        self.telemetry_durables = [s.telemetry_partition_durable(k) for k in range(cfg.telemetry_partitions)]
        self.telemetry_durables += kept
        await self._open_state()
        orgs = {o["org_id"]: o["name"] for o in await store.organizations()}
        self.registry.load(orgs, await store.entity_ids())

    async def _refuse_foreign(self) -> None:
        """Raise ProvisionError naming every object of the server that provisioning would change
        but the lab did not create (an Overwatch deployment's own streams and consumers)."""
        conflicts = await foreign_conflicts(self.js, self.config)
        if conflicts:
            raise ProvisionError(
                f"the NATS server at {redact_url(self.nats_url)} already has streams, consumers or buckets "
                f"that overwatch-lab did not create and would have to change ({'; '.join(conflicts)}). "
                "The lab never updates or takes over another system's objects: to watch this deployment "
                "use Lab.observe(url, ...) or `overwatch-lab dashboard --nats-url URL`; to run a lab, give "
                "it a server (or JetStream account) of its own"
            )

    def _new_broker(self) -> NatsServer:
        """Build the embedded nats-server (the supervisor calls it for every start and restart).

        It inherits the data-dir lock, so the lock lasts until the broker too has exited, and
        it becomes the broker that :meth:`abort` kills.
        """
        cfg = self.config
        assert self._lock is not None
        self._server = NatsServer(
            cfg.data_dir / "broker",
            sync_interval=cfg.sync_interval,
            ready_timeout_s=cfg.ready_timeout_s,
            stop_timeout_s=cfg.stop_timeout_s,
            binary=cfg.nats_server_path,
            pass_fds=(self._lock.fd,),
            credentials=self.credentials,
        )
        return self._server

    async def start_tasks(self, tg: asyncio.TaskGroup, run: Run) -> list[asyncio.Task[None]]:
        """KV cache, workers, synchronizer, stream watch, stats, reprovisioner, deliverer; each ready first."""
        cfg, store, nc, js, ekv = self.config, self.store, self.nc, self.js, self.ekv
        tasks: list[asyncio.Task[None]] = []
        if self.broker is not None:
            tasks.append(
                tg.create_task(self._fail_on(self.broker.run(run.stop), run), name="broker-supervisor")
            )
        # telemetry-processor (unpartitioned shapes) stays here; the partitions run here (workers=0)
        # or in worker processes, dealt round-robin.
        local = self.telemetry_durables if cfg.workers == 0 else []
        hands = deal(self.telemetry_durables, cfg.workers) if cfg.workers else []
        tels = [TelemetryWorker(store, ekv, self.registry)]
        tels += [partition_worker(store, ekv, self.registry, d) for d in local]

        def forget(entity_id: str) -> None:
            for t in tels:
                t.forget(entity_id)

        ledger = self.commands = CommandLedger(store, nc, cfg)
        await ledger.load()  # open commands of an earlier run: delivery resumes where it stopped
        ack_worker = CommandAckWorker(ledger)
        workers: list[Worker] = [
            OrganizationWorker(store, ekv, self.registry, forget),
            EntityWorker(store, ekv, self.registry, forget),
            *tels,
            EventWorker(store, ekv, self.registry),
            CommandWorker(ledger, self.registry, nc, cfg),
            ack_worker,
        ]
        consumed = [(w.stream, w.durable) for w in workers]
        consumed += [(s.STREAM_TELEMETRY, d) for hand in hands for d in hand]
        watch = self.streams = StreamWatch(nc, js, cfg, consumed, unconsumed=(s.STREAM_QUARANTINE,))
        self.loops = [ConsumerLoop(w, nc, js, cfg, watch.observer(w.stream, w.durable)) for w in workers]
        tasks.append(await self._start_cache(tg))  # the synchronizer's boot pass reads it
        sync = self.sync = Synchronizer(store, ekv, cfg, forget, docs=self.kv_cache)
        repair = self.repair = Reprovisioner(nc, js, cfg, on_repaired=lambda _: sync.kick())
        for loop in self.loops:  # symptoms of a missing consumer or bucket: check at once
            loop.on_consumer_gone = lambda st, dur, status: repair.kick(f"a pull on {st}/{dur}: {status}")
        sync.on_failure = lambda exc: repair.kick(f"sync pass failed: {exc}")
        for stream, durable in (
            (s.STREAM_ORGANIZATIONS, s.CONSUMER_ORGANIZATION),
            (s.STREAM_ENTITIES, s.CONSUMER_ENTITY),
        ):
            self.registry.add_progress_source(stream, partial(consumer_progress, js, stream, durable))
        deliverer = self.deliverer = Deliverer(ledger, nc, cfg, acks_pending=ack_worker.busy)
        await sync.run_pass()  # boot pass: every entity row gets a document before workers run
        await watch.check()  # boot pass: counts what the streams discarded while the lab was down
        readies: list[asyncio.Event] = []

        def start(part: Coroutine[Any, Any, None], name: str) -> None:
            tasks.append(tg.create_task(part, name=name))

        for loop in self.loops:
            readies.append(asyncio.Event())
            start(loop.run(readies[-1]), f"worker:{loop.worker.name}")
        readies.append(asyncio.Event())
        start(sync.run(readies[-1]), "synchronizer")
        readies.append(asyncio.Event())
        start(watch.run(readies[-1]), "stream-watch")
        tasks.append(
            tg.create_task(
                publish_stats(js, self.snapshot, cfg.stats_period_s, run.stop, cfg.replicas or 1),
                name="stats-publisher",
            )
        )
        readies.append(asyncio.Event())
        start(self._fail_on(repair.run(readies[-1]), run), "reprovisioner")
        readies.append(asyncio.Event())
        start(deliverer.run(readies[-1]), f"worker:{deliverer.name}")
        if cfg.checkpoint_period_s > 0 and not store.is_remote and store.location != ":memory:":
            ckpt = self.checkpointer = Checkpointer(store.location, cfg.checkpoint_period_s)
            readies.append(asyncio.Event())
            start(ckpt.run(readies[-1]), "wal-checkpointer")
        async with asyncio.timeout(cfg.ready_timeout_s):
            for ready in readies:
                await ready.wait()
        if hands:
            procs = self.procs = WorkerProcesses(
                cfg,
                hands,
                lambda: (self.nats_url, self.nats_auth),
                on_fetched=lambda durable, flat: watch.fetched(s.STREAM_TELEMETRY, durable, flat),
            )
            await procs.start()
            tasks.append(tg.create_task(self._fail_on_procs(procs, run), name="worker-processes"))
        return tasks

    @staticmethod
    async def _fail_on_procs(procs: WorkerProcesses, run: Run) -> None:
        """Supervise the worker processes; one that keeps dying ends the lab."""
        try:
            await procs.run()
        except WorkerProcessError as exc:
            log.error("%s; stopping the lab", exc)
            run.fail(exc)

    @staticmethod
    async def _fail_on(part: Coroutine[Any, Any, None], run: Run) -> None:
        """Run a part that ends the lab when it raises a BrokerError (the broker or its objects are gone)."""
        try:
            await part
        except BrokerError as exc:
            log.error("%s; stopping the lab", exc)
            run.fail(exc)

    def running(self, stack: contextlib.AsyncExitStack) -> None:
        """Write ``lab.json`` (removed again when the lab stops)."""
        path = self.config.data_dir / LAB_JSON
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(self.connection_info(), fh, indent=2)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        stack.callback(self._remove_lab_json)

    def _remove_lab_json(self) -> None:
        path = self.config.data_dir / LAB_JSON
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()

    def request_stop(self) -> None:
        """Ask the workers, synchronizer, stream watch, deliverer and reprovisioner to finish."""
        for loop in self.loops:
            loop.request_stop()
        for part in (self.sync, self.streams, self.deliverer, self.repair, self._cache, self.procs, self.checkpointer):
            if part is not None:
                part.request_stop()

    def abort(self) -> None:
        """Kill the worker processes and the embedded broker child now (SIGKILL), without draining."""
        if self.procs is not None:
            self.procs.kill_now()
        server = self._server
        pid = server.pid if server is not None else None
        if server is not None and pid is not None and server.is_running():
            log.warning("aborting: killing the embedded nats-server (pid %s)", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # ------------------------------------------------------------------ connection
    @property
    def nats_url(self) -> str:
        """The embedded broker's URL (kept across restarts), else the configured one."""
        return self.broker.url if self.broker is not None else str(self.config.nats_url)

    @property
    def nats_auth(self) -> NatsAuth:
        """The embedded broker's internal user (password in ``broker/identity.json``), else the configured credentials."""
        return self.broker.server.auth if self.broker is not None else self.config.nats_auth

    async def system_nc(self) -> NATS:
        """The lab's connection of the embedded broker's system account."""
        if self._system is None:
            raise LabStateError("only a lab with an embedded broker has its system account")
        return self._system

    def connection_info(self) -> dict[str, Any]:
        """This lab's connection, pid and start time (what ``lab.json`` holds, mode 0600).

        ``nats_auth`` is the lab's internal identity and ``system_auth`` its system account's
        (the owner's secrets: the file is the owner's); ``identities`` names the connection
        files of the lab-wide observer and operator that attached labs use by default.
        """
        identities = {c.grant.name: str(c.file) for c in self.credentials.credentials() if c.grant.name in ("observer", "operator")}
        return {
            "nats_url": self.nats_url,
            "nats_auth": self.nats_auth.to_dict(),
            "system_auth": self.broker.server.system_auth.to_dict() if self.broker is not None else None,
            "identities": identities,
            "db_url": self.db_url,
            "monitor_url": self.monitor_url,
            "pid": os.getpid(),
            "data_dir": str(self.config.data_dir),
            "embedded": self.config.embedded,
            "version": __version__,
            "started_at": self.started_at,
            "stale_after_s": self.config.stale_after_s,  # readers that mirror liveness (cot) use the owner's
        }

    # ------------------------------------------------------------------ counters
    def snapshot(self) -> Stats:
        """The counters now (also while starting: the stats publisher runs from boot)."""
        out: Stats = {}
        telemetry: dict[str, dict[str, Any]] = {}  # by durable, wherever it runs
        for loop in self.loops:
            w = loop.worker
            if isinstance(w, TelemetryWorker):
                telemetry[w.durable] = w.stats.snapshot()
            else:
                out[w.name] = w.stats.snapshot()
        if self.procs is not None:
            telemetry.update(self.procs.snapshot())
        if telemetry:
            out[AGGREGATE] = aggregate(telemetry.values())
            out.update({stats_key(d): st for d, st in sorted(telemetry.items())})  # p0, p1, … in order
        out["processes"] = self.processes()
        if self.sync is not None:
            out["synchronizer"] = self.sync.stats.snapshot()
        if self.commands is not None:
            out["commands"] = self.commands.stats.snapshot()
        if self.streams is not None:
            out["streams"] = self.streams.snapshot()
        if self._ekv is not None:
            out["kv"] = {"cas_conflicts": self._ekv.conflicts}
        if self._cache is not None:
            out["kv_cache"] = self._cache.snapshot()
        if self.broker is not None:
            out["broker"] = self.broker.stats.snapshot()
        if self.repair is not None:
            out["provision"] = self.repair.stats.snapshot()
        if self.checkpointer is not None:
            out["checkpoints"] = self.checkpointer.stats.snapshot()
        return out

    def processes(self) -> list[dict[str, Any]]:
        """``{"role", "name", "pid"}`` of the lab, its embedded broker and its worker processes."""
        out: list[dict[str, Any]] = [{"role": "lab", "name": "lab", "pid": os.getpid()}]
        server = self._server
        if server is not None and server.pid is not None and server.is_running():
            out.append({"role": "broker", "name": "nats-server", "pid": server.pid})
        if self.procs is not None:
            out.extend(self.procs.processes())
        return out

    async def stats(self) -> Stats:
        """See :meth:`snapshot`."""
        return self.snapshot()

    async def sync_now(self) -> dict[str, Any]:
        """Run one synchronizer pass now and return its cumulative counters."""
        if self.sync is None:
            raise LabStateError("the synchronizer has not started yet")
        return (await self.sync.run_pass()).snapshot()

    # ------------------------------------------------------------------ who is known
    async def org_known(self, org_id: str) -> bool:
        """From the registry the workers keep."""
        return org_id in self.registry.orgs

    async def org_of(self, entity_id: str) -> str | None:
        """From the registry the workers keep."""
        return self.registry.org_of(entity_id)


def _private_file(path: Path) -> None:
    """Create ``path`` owner-only (0600) if absent, and make an existing one owner-only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for one in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(one, 0o600)
