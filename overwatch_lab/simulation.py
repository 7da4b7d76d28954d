"""A simulated fleet flying against a running lab, owned by that lab (through ``lab.fleet``).

``lab.fleet.simulate(scenario)`` starts it on the lab's own event loop with NATS connections of its
own (the fleet behaves like outside devices, and its outgoing buffer does not compete with the
workers'), or in worker processes for large fleets. On the embedded broker the fleet is held to
the device rights (:func:`fleet_credentials`): one relay per organisation, one connection per
organisation (per worker process), revoked when the simulation ends. The lab stops every simulation it started
before it stops its workers, so a fleet never outlives its lab.

The simulators package is imported only when a fleet starts (``import overwatch_lab`` stays
free of it).

In a notebook a Simulation shows itself as a card (scenario, state, speed, counts, faults), and
``sim.controls()`` returns ipywidgets to play, pause, set the speed and inject a fault.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import pandas as pd

from overwatch_lab.broker.connect import connect
from overwatch_lab.broker.credentials import Credential
from overwatch_lab.errors import LabStateError
from overwatch_lab.nats_auth import NatsAuth
from overwatch_lab.notebook.cards import simulation_card
from overwatch_lab.notebook.html import guarded, safe_text
from overwatch_lab.runtime import Runner

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

    from overwatch_lab.notebook.sim_controls import SimulationControls
    from simulators import ProcessRunHandle, RunHandle, Scenario
    from simulators.command_link import CommandLink
    from simulators.uplink import Uplink

log = logging.getLogger(__name__)

ScenarioLike: TypeAlias = "Scenario | str"
"""A Scenario, a named fleet (``small-isr-patrol``, ``area-search``, ``load-1000``) or a YAML/TOML file."""

REGISTER_TIMEOUT_S = 30.0
"""How long the lab may take to register a fleet's organisations and entities before its relays are issued."""
RELAY_PREFIX = "sim-"
"""The names of the relays the lab issues to its simulated fleets start with it (``sim-{run}-{org}``)."""


class RelayIssuer(Protocol):
    """What a simulation needs to hold its fleet to the device rights: ``lab.devices`` (on the lab's loop)."""

    async def issue_relays(self, relays: Mapping[str, tuple[str, Sequence[str]]]) -> dict[str, Credential]:
        """Issue ``name: (org_id, entities)`` relays, one broker reload."""
        ...

    async def revoke_many(self, names: Sequence[str]) -> list[Credential]:
        """Withdraw these identities, one broker reload."""
        ...


@dataclass(frozen=True, slots=True)
class FleetCredentials:
    """The relay identities a simulated fleet connects with: one per organisation of its scenario.

    Attributes:
        by_org: How each organisation's devices connect (its relay's seed file and inbox prefix).
        names: The relays' names (``lab.devices.list()``), to revoke when the fleet ends.
    """

    by_org: dict[str, NatsAuth]
    names: tuple[str, ...]


async def fleet_credentials(
    nats_url: str,
    nats_auth: NatsAuth,
    issuer: RelayIssuer,
    scenario: ScenarioLike,
    *,
    timeout_s: float = REGISTER_TIMEOUT_S,
) -> FleetCredentials:
    """Register a scenario's organisations and entities, then issue one relay per organisation.

    The registration goes out with ``nats_auth`` (the lab's own identity: a device may not create
    an organisation nor read the lab's KV), as the very ``created`` events the simulated devices
    would send; once the lab shows every entity, ``issuer`` (``lab.devices``) issues the relays
    through the path ``lab.devices.relay`` takes, with one broker reload. Each relay may do, for
    its organisation's simulated entities, what a real device may do for itself, and nothing else.

    Raises:
        BrokerError: the lab did not register the fleet in time.
        ConfigError: a relay could not be issued.
        LabStateError: ``nats_auth`` is a scoped identity (a lab attached as observer or operator).
    """
    from simulators import load_scenario
    from simulators.registration import register_fleet

    if nats_auth.inbox_prefix is not None:  # a scoped identity (an attached observer): it may not register
        raise LabStateError(
            "a simulated fleet is registered with the lab's own identity; this lab is attached as "
            f"{nats_auth.inbox_prefix.split('.')[1]!r}: Lab.attach(data_dir, identity='internal')"
        )
    sc = load_scenario(scenario)
    nc = await connect(nats_url, auth=nats_auth, name=f"overwatch-lab-sim-register:{sc.name}")
    try:
        async with asyncio.timeout(timeout_s + 5):
            await register_fleet(nc, sc, timeout_s=timeout_s)
    finally:
        await nc.close()
    run = secrets.token_hex(4)
    entities: dict[str, list[str]] = {}
    for eid, _fleet, org, _kind in sc.devices():
        entities.setdefault(org, []).append(eid)
    names: dict[str, str] = {}
    for i, org in enumerate(entities):
        name = f"{RELAY_PREFIX}{run}-{org}"
        names[org] = name if len(name) <= 128 else f"{RELAY_PREFIX}{run}-{i}"  # the token rule's length
    async with asyncio.timeout(timeout_s):
        creds = await issuer.issue_relays({names[org]: (org, tuple(eids)) for org, eids in entities.items()})
    return FleetCredentials({org: creds[name].auth for org, name in names.items()}, tuple(names.values()))


class Simulation:
    """Control and observe a running fleet: play, pause, speed, faults, counts, the fault timeline.

    The control methods are plain calls, safe from a notebook's thread.
    """

    def __init__(
        self,
        runner: Runner,
        handle: RunHandle | ProcessRunHandle,
        nc: Uplink | None,
        links: list[CommandLink] | None = None,
        release: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._runner = runner
        self.handle = handle
        self._nc = nc
        self.links = links or []
        self._release = release

    def __repr__(self) -> str:
        return safe_text(lambda: f"<Simulation {self.handle!r}>")

    def _repr_html_(self) -> str:
        return guarded(lambda: simulation_card(self.stats(), self.faults()), self.__repr__)

    @property
    def state(self) -> str:
        """new, running, paused, finished, stopped or failed."""
        return str(self.handle.state)

    @property
    def speed(self) -> float:
        """Simulated seconds per wall second now."""
        return float(self.handle.speed)

    @property
    def entity_ids(self) -> list[str]:
        """The simulated devices' entity ids, in scenario order."""
        return [eid for eid, _fleet, _org, _kind in self.scenario.devices()]

    @property
    def fault_kinds(self) -> list[str]:
        """The kinds of fault :meth:`inject` takes (``link_loss``, ``gps_dropout``, …)."""
        from simulators.faults import FaultKind

        return [str(k) for k in FaultKind]

    def faults(self) -> list[dict[str, Any]]:
        """Every fault applied so far (scenario and live), one dict each: ``fault_id``, ``kind``,
        ``targets``, ``start_s``, ``end_s`` (simulated seconds) and ``source``; cheaper than
        :meth:`fault_timeline`, which has a row per fault and device."""
        applied = self.handle.faults if hasattr(self.handle, "faults") else self.handle.model.faults
        return [
            {
                "fault_id": f.fault_id,
                "kind": str(f.kind),
                "targets": list(f.targets),
                "start_s": f.start_s,
                "end_s": f.end_s,
                "source": f.source,
            }
            for f in list(applied)
        ]

    def controls(self) -> SimulationControls:
        """Notebook controls: play/pause, a speed slider, and a fault to inject on a chosen target
        (ipywidgets; displaying the returned object shows them, ``.widget`` is the box).

        Each control calls this object's methods; what they did (or the error) shows under them.
        """
        from overwatch_lab.notebook.sim_controls import SimulationControls

        return SimulationControls(self)

    @property
    def scenario(self) -> Scenario:
        """The scenario being flown."""
        return self.handle.model.scenario if hasattr(self.handle, "model") else self.handle.scenario

    @property
    def done(self) -> bool:
        """True once the run finished or was stopped."""
        return bool(self.handle.done)

    def play(self) -> None:
        """Resume a paused run."""
        self.handle.play()

    def pause(self) -> None:
        """Pause the fleet (simulated time stops)."""
        self.handle.pause()

    def set_speed(self, speed: float) -> None:
        """Simulated seconds per wall second (1 = real time)."""
        self.handle.set_speed(speed)

    def inject(self, kind: Any, duration_s: float, targets: Any = "*", **params: Any) -> Any:
        """Inject a fault now (e.g. ``inject("link_loss", 20, "drone-001")``); returns the Fault."""
        return self.handle.inject(kind, duration_s, targets, **params)

    def stats(self) -> dict[str, Any]:
        """Live counts: messages per type, devices, lag behind real time, link stats, seed."""
        return dict(self.handle.stats())

    def fault_timeline(self) -> pd.DataFrame:
        """Every fault (scenario and live) with start, end, kind and targets, to overlay on plots."""
        return self.handle.fault_timeline()

    def stop(self) -> dict[str, Any]:
        """Stop the fleet and return its final counts (idempotent)."""
        return self._runner.call(self.close(), timeout=60)

    async def close(self) -> dict[str, Any]:
        """Stop the fleet on the lab's loop and return its final counts (``lab.fleet`` calls it)."""
        try:
            for link in self.links:
                await link.stop()
            return dict(await self.handle.stop())
        finally:
            try:
                if self._nc is not None and not self._nc.is_closed:
                    await self._nc.close()
            finally:
                release, self._release = self._release, None
                if release is not None:  # the fleet's relays: revoked once its connections are gone
                    await release()


async def start_simulation(
    runner: Runner,
    nats_url: str,
    nats_auth: NatsAuth,
    scenario: ScenarioLike,
    *,
    speed: float = 1.0,
    duration_s: float | None = None,
    seed: int | None = None,
    processes: int = 0,
    issuer: RelayIssuer | None = None,
) -> Simulation:
    """Start ``scenario`` against the lab at ``nats_url``, on its loop (see ``Fleet.simulate``).

    With ``issuer`` (the embedded broker's ``lab.devices``) the fleet is held to the device
    rights: :func:`fleet_credentials` registers it with ``nats_auth`` (the lab's identity) and
    issues one relay per organisation; the devices of each organisation then speak on a
    connection of its relay (one per organisation, per worker process), and the relays are
    revoked when the simulation ends. Without it the fleet connects with ``nats_auth``.
    """
    from simulators import load_scenario, run_scenario, run_scenario_processes
    from simulators.command_link import CommandLink

    sc = load_scenario(scenario)
    if seed is not None:
        sc = sc.replace(seed=seed)
    creds: FleetCredentials | None = None
    release: Callable[[], Awaitable[None]] | None = None
    if issuer is not None:
        creds = await fleet_credentials(nats_url, nats_auth, issuer, sc)
        names = creds.names

        async def release() -> None:
            async with asyncio.timeout(REGISTER_TIMEOUT_S):
                await issuer.revoke_many(names)

    try:
        if processes > 0:
            handle = await run_scenario_processes(
                sc, nats_url, auth=creds.by_org if creds else nats_auth, processes=processes,
                speed=speed, duration_s=duration_s, registered=creds is not None,
            )  # fmt: skip
            return Simulation(runner, handle, None, release=release)
        uplink = await _connect_fleet(nats_url, nats_auth, creds, sc.name)
    except BaseException:
        if release is not None:
            await release()
        raise
    links: list[CommandLink] = []
    try:
        run = await run_scenario(sc, uplink, speed=speed, duration_s=duration_s, registered=creds is not None)
        # Each device takes commands from the lab on the wire (issue 4's device side).
        for eid, _fleet, org, _kind in sc.devices():
            link = CommandLink(uplink.for_org(org), org, eid, partial(run.command, eid))
            await link.start()
            links.append(link)
    except BaseException:
        try:
            for link in links:
                await link.stop()
            await uplink.close()
        finally:
            if release is not None:
                await release()
        raise
    return Simulation(runner, run, uplink, links, release)


async def _connect_fleet(nats_url: str, nats_auth: NatsAuth, creds: FleetCredentials | None, name: str) -> Uplink:
    """One connection per organisation (its relay), or one with ``nats_auth``."""
    from simulators.uplink import Uplink

    if creds is None:
        return Uplink.single(await connect(nats_url, auth=nats_auth, name=f"overwatch-lab-sim:{name}"))
    by_org: dict[str, NATS] = {}
    try:
        for org, auth in creds.by_org.items():
            by_org[org] = await connect(nats_url, auth=auth, name=f"overwatch-lab-sim:{name}:{org}")
    except BaseException:
        if by_org:
            await Uplink(by_org=by_org).close()
        raise
    return Uplink(by_org=by_org)
