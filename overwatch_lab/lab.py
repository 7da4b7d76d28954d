"""The Lab: the one object a user holds, a small facade over one core and its parts.

- the core (``core/``): :class:`~overwatch_lab.core.owner.OwnerCore` boots and owns the fabric
  (lock, store, supervised broker, provisioning, workers, sync, ``lab.json``);
  :class:`~overwatch_lab.core.attached.AttachedCore` connects to a lab another process owns.
- the parts, reached as properties: ``lab.commands`` (:class:`~overwatch_lab.commands.client.Commands`),
  ``lab.frames`` (:class:`~overwatch_lab.frames.Frames`), ``lab.fleet`` (:class:`~overwatch_lab.fleet.Fleet`),
  ``lab.devices`` (:class:`~overwatch_lab.devices.Devices`: the broker's device credentials).
- the Lab itself: lifecycle, connection info, counters, and the device-side verbs notebooks use
  most (register, publish, read state).
- ``lab.replay(since, until, speed=...)``: re-publish a window of this lab's telemetry (re-read
  from JetStream) into this lab or another, so a mission re-runs through the workers
  (:mod:`overwatch_lab.replay`; read a window without re-publishing it with
  ``lab.frames.replay_frame``).

In a notebook a Lab shows itself as a card (state, broker, data dir, counts, workers, the
dashboard link when ``dashboard_url`` is set); ``lab.entity(entity_id)`` is an entity's live
state as a card, ``lab.commands.widget()`` sends a command and shows its ladder, and a
simulation's ``sim.controls()`` plays, pauses, sets the speed and injects faults (see
``overwatch_lab/notebook/``). A repr never raises and waits at most ``REPR_BUDGET_S``.

If the broker cannot be kept running the lab stops itself and ends FAILED with ``lab.failure``
a :class:`~overwatch_lab.errors.BrokerExited`; every later call raises it, and
:meth:`Lab.ended` completes.

Three ways to hold one::

    lab = Lab.up()                       # blocking: scripts, notebooks
    lab = await Lab(cfg).start()         # awaitable: notebooks, async code
    async with Lab(cfg) as lab: ...      # tests, scripts (also plain ``with``)

The fabric runs on its own event loop on a background thread (see ``runtime.py``), so it keeps
ingesting while a notebook cell computes. The helpers below are plain blocking calls that are
safe from any thread but the lab's own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pandas as pd

from overwatch_lab.commands.client import Commands
from overwatch_lab.config import LabConfig
from overwatch_lab.core.attached import AttachedCore
from overwatch_lab.core.base import LAB_JSON, LabCore
from overwatch_lab.core.observer import ObserverCore
from overwatch_lab.core.owner import OwnerCore
from overwatch_lab.core.runner import CoreRunner, LabState, LiveReads
from overwatch_lab.core.stats import Stats
from overwatch_lab.devices import Devices
from overwatch_lab.errors import FrameError
from overwatch_lab.fleet import Fleet
from overwatch_lab.frames import Frames
from overwatch_lab.kvcache import Changes
from overwatch_lab.kvstate import Doc
from overwatch_lab.nats_auth import NatsAuth
from overwatch_lab.notebook.cards import lab_card
from overwatch_lab.notebook.entity import EntityState
from overwatch_lab.notebook.html import guarded, redact_url, safe_text
from overwatch_lab.protocol import envelopes, lifecycle
from overwatch_lab.protocol import subjects as s
from overwatch_lab.protocol.state import cursor_of
from overwatch_lab.replay import Progress, ReplayResult, check_speed, republish
from overwatch_lab.store import queries
from overwatch_lab.store.window import TimeLike

__all__ = ["LAB_JSON", "Lab", "LabState"]

T = TypeVar("T")
REPR_BUDGET_S = 1.0
"""Seconds a repr may wait for the lab's counters before it shows what it has."""


class Lab:
    """An overwatch-lab fabric: broker, workers, store and synchronizer, owned by this object.

    Args:
        config: the configuration; ``LabConfig()`` defaults when None.
        **overrides: LabConfig fields to change, e.g. ``Lab(data_dir="run1", stale_after_s=2)``.
    """

    def __init__(self, config: LabConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = LabConfig(**overrides)
        elif overrides:
            config = config.replace(**overrides)
        self._setup(OwnerCore(config))

    def _setup(self, core: LabCore) -> None:
        self._core = core
        self.config = core.config
        runner = self._runner = CoreRunner(core)
        self._commands = Commands(runner, runner.require)
        self._frames = Frames(core.db_url, LiveReads(runner), stale_after_s=core.config.stale_after_s)
        self._devices = Devices(runner, runner.require, runner.booted)
        self._fleet = Fleet(runner, runner.require, self._devices)  # fleets connect as relays it issues
        runner.on_stopping(self._fleet.close)
        self.dashboard_url: str | None = None
        """Where a dashboard of this lab is served (set by whatever serves it; the repr links it)."""

    def __repr__(self) -> str:
        return safe_text(self._plain)

    def _plain(self) -> str:
        where = f" {redact_url(self._booted().nats_url)}" if self.state is LabState.RUNNING else ""
        role = "" if self.owner else " attached"
        return f"<Lab {self.state.value}{role}{where} data_dir={str(self.config.data_dir)!r}>"

    def _repr_html_(self) -> str:
        return guarded(lambda: lab_card(self._overview()), self._plain)

    def _overview(self) -> dict[str, Any]:
        """What the notebook card shows, each part read on its own and bounded (see ``lab_card``)."""
        failure = self.failure
        info: dict[str, Any] = {
            "state": self.state.value,
            "owner": self.owner,
            "data_dir": str(self.config.data_dir),
            "failure": None if failure is None else f"{type(failure).__name__}: {failure}",
            "dashboard_url": self.dashboard_url,
            "simulations": len(self._fleet.running),
        }
        unavailable: list[str] = []
        info["unavailable"] = unavailable
        if self.state is not LabState.RUNNING:
            return info
        core = self._require()
        info.update(nats_url=core.nats_url, monitor_url=core.monitor_url, db_url=core.db_url)

        async def counters() -> tuple[Stats, int, int]:
            async with asyncio.timeout(REPR_BUDGET_S):
                stats = await core.stats()
                docs = await core.entity_docs()
            return stats, len(docs), sum(1 for d in docs.values() if d.get("is_live") is True)

        try:
            stats, info["entities"], info["live"] = self.call(counters(), timeout=REPR_BUDGET_S + 1.0)
        except Exception as exc:  # a repr shows what it has, and says what it has not
            unavailable.append(f"counters ({type(exc).__name__}: {exc})")
        else:
            info["workers"] = [
                (name, v) for name, v in stats.items() if isinstance(v, dict) and "handled" in v and "." not in name
            ]
            info.update({k: stats.get(k) for k in ("synchronizer", "broker", "commands")})
        try:
            orgs = queries.read_frame(self.db_url, "SELECT count(*) AS n FROM organizations")
            info["orgs"] = int(orgs.iloc[0]["n"])
        except Exception as exc:  # idem
            unavailable.append(f"organisations ({type(exc).__name__}: {exc})")
        return info

    @property
    def state(self) -> LabState:
        """Where the lab is in its lifecycle (NEW → STARTING → RUNNING → STOPPING → STOPPED | FAILED)."""
        return self._runner.state

    @property
    def failure(self) -> BaseException | None:
        """Why the lab ended FAILED (e.g. BrokerExited), else None."""
        return self._runner.failure

    # ------------------------------------------------------------------ parts
    @property
    def commands(self) -> Commands:
        """Send, broadcast, look up and trace commands (:class:`~overwatch_lab.commands.client.Commands`)."""
        return self._commands

    @property
    def frames(self) -> Frames:
        """The lab's data as DataFrames (:class:`~overwatch_lab.frames.Frames`)."""
        return self._frames

    @property
    def fleet(self) -> Fleet:
        """Simulated fleets flying against this lab (:class:`~overwatch_lab.fleet.Fleet`)."""
        return self._fleet

    @property
    def devices(self) -> Devices:
        """Device, relay, observer and operator credentials of the embedded broker (:class:`~overwatch_lab.devices.Devices`)."""
        return self._devices

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def up(cls, config: LabConfig | None = None, **overrides: Any) -> Lab:
        """Build and start a lab, blocking until it runs. Works inside a running event loop."""
        lab = cls(config, **overrides)
        lab._runner.started(lab._runner.begin())
        return lab

    async def start(self) -> Lab:
        """Start the lab and return it once every part is ready."""
        running = self._runner.begin()
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
        self._runner.down(timeout)

    def ended(self) -> concurrent.futures.Future[LabState]:
        """A future that resolves to the final state once the lab has stopped or failed.

        It resolves whatever ended the lab (``stop()``, or a failure of its own: then
        ``failure`` says what), never raises, and cancelling it does not touch the lab. Await
        it with ``asyncio.wrap_future``, or block on ``.result(timeout)``.

        Raises:
            LabStateError: the lab was never started.
        """
        return self._runner.ended()

    def abort(self) -> None:
        """Kill the embedded broker child now (SIGKILL), from any thread, without draining.

        For a forced exit (a second Ctrl-C) only: the lab is unusable afterwards, and messages
        not yet acknowledged are redelivered to the next lab on this data directory. Without
        it the broker would still die with this process (PDEATHSIG), but only after a graceful
        shutdown of its own; a broker still being forked dies that way.
        """
        self._core.abort()

    async def __aenter__(self) -> Lab:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __enter__(self) -> Lab:
        self._runner.started(self._runner.begin())
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    @classmethod
    def attach(
        cls, data_dir: str | os.PathLike[str], *, identity: str = "observer", timeout: float = 10.0
    ) -> Lab:
        """Attach to a lab running in another process, from its ``<data_dir>/lab.json``.

        The attached Lab reads state and builds frames like the owner, but owns no broker,
        worker or synchronizer: ``down()`` only closes its connection.

        Args:
            data_dir: the running lab's data directory.
            identity: ``"observer"`` (default: reads only, publishes nothing), ``"operator"``
                (an observer that may send commands) or ``"internal"`` (the owner's own
                identity: full rights, e.g. to register devices).
            timeout: how long attaching may take.

        Raises:
            ConfigError: no lab runs there (no ``lab.json``, or its process is gone), or an
                unknown identity.
        """
        lab = cls.__new__(cls)
        lab._setup(AttachedCore.from_data_dir(data_dir, identity))
        lab._runner.started(lab._runner.begin(), timeout)
        return lab

    @classmethod
    def observe(
        cls,
        nats_url: str,
        *,
        token: str | None = None,
        user: str | None = None,
        password: str | None = None,
        creds: str | os.PathLike[str] | None = None,
        nkey_seed: str | os.PathLike[str] | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        record_history: bool = True,
        timeout: float = 10.0,
    ) -> Lab:
        """Watch a deployment this lab does not own (a real Overwatch hub), read-only, without ``lab.json``.

        ``frames.states()``, ``frames.telemetry()``, ``frames.quarantine()`` and ``stats()``
        work, and the dashboard serves it (``overwatch-lab dashboard --nats-url URL``); it
        never creates, updates or deletes the deployment's streams, consumers or buckets,
        acknowledges none of its messages and publishes nothing (see ``core/observer.py``).

        Args:
            nats_url: the deployment's URL (or comma-separated URLs).
            token / user / password / creds: its credentials (``creds``: a ``.creds`` file).
            nkey_seed: an NKey user seed (``SU…``), or the path of a file holding one.
            data_dir: where the observer keeps its own history file; default a temporary folder,
                removed at ``down()``.
            record_history: copy the deployment's stored telemetry into that history
                (``frames.telemetry()``); False: live state only.
            timeout: seconds to connect and catch up with the state bucket.

        Raises:
            BrokerError: the server cannot be reached or refused the credentials.
            ProvisionError: it has no ``CONSTELLATION_GLOBAL_STATE`` bucket (not an Overwatch deployment).
        """
        seed = os.fspath(nkey_seed) if nkey_seed is not None else None
        is_seed = seed is not None and seed.startswith("SU") and not os.path.exists(seed)
        lab = cls.__new__(cls)
        lab._setup(
            ObserverCore(
                nats_url,
                token=token,
                user=user,
                password=password,
                creds=os.fspath(creds) if creds is not None else None,
                nkey_seed=seed if is_seed else None,
                nkey_seed_file=None if is_seed else seed,
                data_dir=os.fspath(data_dir) if data_dir is not None else None,
                record_history=record_history,
            )
        )
        lab._runner.started(lab._runner.begin(), timeout)
        return lab

    @property
    def owner(self) -> bool:
        """False for a lab attached to another process's fabric."""
        return self._core.owner

    @property
    def nats_url(self) -> str:
        """URL of the broker (embedded or external); the embedded one keeps it across restarts."""
        return self._booted().nats_url

    @property
    def nats_auth(self) -> NatsAuth:
        """How this lab connects to the broker: the owner's internal identity (never hand it to a
        device: issue one with ``lab.devices.add``), or the identity an attached lab chose."""
        return self._booted().nats_auth

    @property
    def nats_token(self) -> str | None:
        """The token of :attr:`nats_auth` (None for the embedded broker, which has users)."""
        return self._booted().nats_token

    @property
    def monitor_url(self) -> str | None:
        """None: the embedded broker opens no HTTP monitoring port; use :meth:`broker_monitor`."""
        return self._booted().monitor_url

    def broker_monitor(self, endpoint: str = "varz", **options: Any) -> dict[str, Any]:
        """One monitoring endpoint of the embedded broker (``varz``, ``connz``, ``jsz``,
        ``healthz``, ...), asked as its system account; e.g. ``broker_monitor("connz", subscriptions=True)``.

        Raises:
            LabStateError: this lab holds no system-account credentials (an observer, or an
                external broker).
            BrokerError: unknown endpoint, or no answer.
        """
        return self.call(self._require().broker_monitor(endpoint, options))

    @property
    def db_url(self) -> str:
        """Where the libSQL database is (file path or server URL)."""
        return self._core.db_url

    def connection_info(self) -> dict[str, Any]:
        """What ``lab.json`` holds: enough for another process to attach (an attached lab: the owner's)."""
        return self._booted().connection_info()

    # ------------------------------------------------------------------ counters
    def stats(self) -> Stats:
        """Counters per worker (handled, acked, ignored, retried, quarantined, lag…) and the synchronizer's;
        ``broker`` (restarts of the embedded broker) and ``provision`` (objects recreated).

        A worker that holds messages for an infrastructure fault (database full, read-only,
        locked, unreachable) says so: ``holding`` (the alarm), ``hold_reason``, ``hold_since``,
        ``held`` (messages kept unacked now), ``hold_attempts``, ``holds`` (episodes so far) and
        ``last_hold_s`` (how long the last one lasted).

        ``stats()["streams"][stream]`` holds each stream's counters (see
        :class:`~overwatch_lab.streamwatch.StreamCounters`): ``discarded`` messages the stream
        removed before a worker saw them, ``dropped`` quarantine records removed by its limits,
        consumer ``lag`` and its trend ``lag_rate_per_s``.

        An attached lab reads the owner's counters, which the owner publishes every
        ``stats_period_s`` to the ``OVERWATCH_LAB_STATS`` KV bucket (empty until the first).
        """
        return self.call(self._require().stats())

    def sync_now(self) -> dict[str, Any]:
        """Run one synchronizer pass now and return its cumulative counters (the owner only)."""
        return self.call(self._require().sync_now())

    # ------------------------------------------------------------------ device-side verbs
    def publish(self, subject: str, payload: bytes | dict[str, Any], *, msg_id: str | None = None) -> int:
        """Publish one message to JetStream and return its stream sequence (raw bytes are sent as-is)."""
        data = payload if isinstance(payload, bytes) else envelopes.encode(payload)
        return self.call(self._require().publish(subject, data, msg_id))

    def publish_many(self, items: list[tuple[str, bytes, str | None]]) -> int:
        """Publish many (subject, payload, msg_id) to JetStream with pipelined acks; returns the count."""
        return self.call(self._require().publish_many(items), timeout=None)

    def register_org(
        self, org_id: str, name: str | None = None, org_type: str = "civilian", *, timeout: float = 10.0
    ) -> None:
        """Register (or update) an organisation through the wire and wait until the lab has it."""
        event = lifecycle.make_org_event("created", org_id, name or org_id, org_type)
        self.publish(s.organization_subject("created"), event, msg_id=event["id"])
        self.wait_for(
            lambda: self.call(self._require().org_known(org_id)),
            timeout=timeout,
            what=f"organization {org_id!r}",
        )

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
        event = lifecycle.make_entity_event("created", record)
        self.publish(s.entity_subject(org_id, "created"), event, msg_id=event["id"])
        return self.wait_for(
            lambda: self.state_of(entity_id), timeout=timeout, what=f"entity {entity_id!r} in KV"
        )

    def register_entities(self, records: list[dict[str, Any]], *, timeout: float = 60.0) -> int:
        """Register many entities at once (records as for ``register_entity``, each with ``org_id``).

        Publishes every ``created`` event with pipelined acks, then waits until every entity has
        its KV document. Returns the number registered.
        """
        items: list[tuple[str, bytes, str | None]] = []
        for rec in records:
            record = {"name": rec["entity_id"], "status": "active", "priority": "normal", **rec}
            event = lifecycle.make_entity_event("created", record)
            items.append(
                (s.entity_subject(record["org_id"], "created"), envelopes.encode(event), event["id"])
            )
        self.publish_many(items)
        wanted = {r["entity_id"] for r in records}

        def all_there() -> bool:
            return wanted <= self.call(self._require().entity_docs()).keys()

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
        wait: bool = False,
        timeout: float = 10.0,
    ) -> str:
        """Publish one telemetry v1 envelope (as a device would) and return its message_uid.

        Ingest is asynchronous: without ``wait`` the message is in the stream, not yet applied.
        With ``wait=True`` this returns once its effect is visible: its history row is stored
        and the entity's KV state reflects it (or, for a late message, its row marked late).

        Raises:
            TimeoutError: ``wait`` and not applied within ``timeout`` s (a message for an
                unregistered entity is quarantined instead: see ``lab.frames.quarantine()``).
        """
        env = envelopes.make_telemetry(
            org_id, entity_id, message_type, data, timestamp=timestamp, message_uid=message_uid
        )
        subject = s.telemetry_subject(org_id, entity_id)
        body = envelopes.encode(env)
        uid = str(env["message_uid"])
        self.publish(subject, body, msg_id=uid)
        if wait:
            ts = envelopes.decode_telemetry(body, s.parse_telemetry_subject(subject)).timestamp
            self.wait_for(
                lambda: self._applied(entity_id, message_type, uid, ts),
                timeout=timeout,
                what=f"telemetry {uid} ({message_type} of {entity_id!r}) applied to history and KV state "
                "(if it never is, look for it in lab.frames.quarantine())",
            )
        return uid

    def _applied(self, entity_id: str, message_type: str, uid: str, ts: str) -> bool:
        """True once telemetry ``uid`` has its history row and the KV state is at least as new."""
        rows = queries.read_frame(self.db_url, "SELECT late FROM telemetry WHERE message_uid = ?", (uid,))
        if rows.empty:
            return False  # history is written first, then KV
        if bool(rows.iloc[0]["late"]):
            return True  # a late message changes history only
        cursor = cursor_of(self.state_of(entity_id) or {}, message_type)
        return cursor is not None and cursor >= ts

    def entity_changes(self, since: int = 0) -> Changes:
        """What changed in the live entity state since version ``since`` of the lab's KV cache
        (0: everything), once the cache caught up with the bucket (shared documents: do not mutate).

        For readers that follow the fleet incrementally (``overwatch_lab.cot.CotSender``): pass
        the returned ``version`` to the next call.
        """
        return self.call(self._require().entity_changes(since))

    def state_of(self, entity_id: str) -> Doc | None:
        """Return the entity's live KV document, or None."""
        s.check_token(entity_id, "entity_id")
        return self.call(self._require().entity_doc(entity_id))

    def entity(self, entity_id: str) -> EntityState | None:
        """The entity's live state as a read-only snapshot that shows itself as a card in a
        notebook (:class:`~overwatch_lab.notebook.entity.EntityState`), or None if unknown."""
        doc = self.state_of(entity_id)
        return None if doc is None else EntityState(doc)

    def wait_for(
        self,
        predicate: Callable[[], T | None],
        *,
        timeout: float = 10.0,
        interval: float = 0.02,
        what: str = "condition",
    ) -> T:
        """Poll ``predicate`` until it returns something truthy, and return that; TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value is not None and _truthy(value):
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not reached within {timeout:.1f} s")
            time.sleep(interval)

    # ------------------------------------------------------------------ replay
    def replay(
        self,
        since: TimeLike | None,
        until: TimeLike | None = None,
        *,
        speed: float | None = None,
        fresh_uids: bool = True,
        keep_timestamps: bool = False,
        org_id: str | None = None,
        entity_id: str | list[str] | None = None,
        into: Lab | None = None,
        progress: Progress | None = None,
    ) -> ReplayResult:
        """Re-publish the telemetry this lab's stream stored in ``since <= t < until`` so it re-runs.

        The window is re-read from JetStream (``lab.frames.replay_frame``), then published again
        with JetStream acks at ``speed`` (1 = the original pace, N = N times faster, None = as
        fast as possible), paced by the original stored times, envelope time stamps shifted so
        the mission starts now (``keep_timestamps`` keeps them); see
        :mod:`overwatch_lab.replay.publisher` for every choice.

        Into this lab (``into`` None) the messages need ``fresh_uids`` (the default): unchanged
        ids would be dropped by the stream's dedup and by history's one row per message_uid.
        Into another lab (``into=other``, e.g. a fresh data directory) the ids may be kept; the
        organisations and entities the window names are registered there first (from this
        lab's database) when that lab does not know them, so nothing is quarantined as unknown.

        Returns:
            What was sent (:class:`~overwatch_lab.replay.ReplayResult`); the workers ingest
            it asynchronously, as any telemetry.

        Raises:
            FrameError: start after end, a bad speed, or unchanged ids into the same lab.
            BrokerError: reading or publishing failed (see ``replay.read_window``, ``replay.republish``).
        """
        check_speed(speed)
        target = self if into is None else into
        same = target is self or target.nats_url == self.nats_url
        if same and not fresh_uids:
            raise FrameError(
                "re-publishing into the lab the window came from needs fresh_uids=True: unchanged "
                "message_uids are dropped by the stream's dedup and stored once by history"
            )
        frame = self.frames.replay_frame(since, until, org=org_id, entity=entity_id, progress=progress)
        if not same and not frame.empty:
            self._register_in(target, sorted(frame["entity_id"].unique()))
        send = republish(
            target._require().nc, frame, speed=speed, fresh_uids=fresh_uids,
            keep_timestamps=keep_timestamps, progress=progress,
        )  # fmt: skip
        return target.call(send, timeout=None)

    def _register_in(self, target: Lab, entity_ids: list[str]) -> None:
        """Register in ``target`` the entities (and their organisations) it does not know, as this lab has them."""
        known = target.call(target._require().entity_docs()).keys()
        wanted = [e for e in entity_ids if e not in known]
        if not wanted:
            return
        entities = self.frames.entities().set_index("entity_id")
        orgs = self.frames.organizations().set_index("org_id")
        records = []
        for eid in wanted:
            if eid not in entities.index:
                continue  # not registered here either: the target quarantines it, as this lab did
            row = entities.loc[eid]
            org = str(row["org_id"])
            if not target.call(target._require().org_known(org)):
                mine = org in orgs.index
                target.register_org(
                    org,
                    str(orgs.loc[org, "name"]) if mine else org,
                    str(orgs.loc[org, "org_type"]) if mine else "civilian",
                )
            records.append(
                {k: row[k] for k in ("org_id", "name", "entity_type", "status", "priority")}
                | {"entity_id": eid}
            )
        if records:
            target.register_entities(records)

    # ------------------------------------------------------------------ the lab's loop
    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        """Run a coroutine on the lab's event loop and return its result (blocking)."""
        return self._runner.call(coro, timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule a coroutine on the lab's event loop; await it with ``asyncio.wrap_future``."""
        return self._runner.submit(coro)

    def _booted(self) -> LabCore:
        return self._runner.booted()

    def _require(self) -> LabCore:
        return self._runner.require()


def _truthy(value: object) -> bool:
    if isinstance(value, pd.DataFrame | pd.Series):
        return not value.empty
    return bool(value)
