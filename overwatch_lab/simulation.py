"""A simulated fleet flying against a running lab, owned by that lab (through ``lab.fleet``).

``lab.fleet.simulate(scenario)`` starts it on the lab's own event loop with a NATS connection of its
own (the fleet behaves like outside devices, and its outgoing buffer does not compete with the
workers'), or in worker processes for large fleets. The lab stops every simulation it started
before it stops its workers, so a fleet never outlives its lab.

The simulators package is imported only when a fleet starts (``import overwatch_lab`` stays
free of it).

In a notebook a Simulation shows itself as a card (scenario, state, speed, counts, faults), and
``sim.controls()`` returns ipywidgets to play, pause, set the speed and inject a fault.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, TypeAlias

import pandas as pd

from overwatch_lab.broker.connect import connect
from overwatch_lab.nats_auth import NatsAuth
from overwatch_lab.notebook.cards import simulation_card
from overwatch_lab.notebook.html import guarded, safe_text
from overwatch_lab.runtime import Runner

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

    from overwatch_lab.notebook.sim_controls import SimulationControls
    from simulators import ProcessRunHandle, RunHandle, Scenario
    from simulators.command_link import CommandLink

ScenarioLike: TypeAlias = "Scenario | str"
"""A Scenario, a named fleet (``small-isr-patrol``, ``area-search``, ``load-1000``) or a YAML/TOML file."""


class Simulation:
    """Control and observe a running fleet: play, pause, speed, faults, counts, the fault timeline.

    The control methods are plain calls, safe from a notebook's thread.
    """

    def __init__(
        self,
        runner: Runner,
        handle: RunHandle | ProcessRunHandle,
        nc: NATS | None,
        links: list[CommandLink] | None = None,
    ) -> None:
        self._runner = runner
        self.handle = handle
        self._nc = nc
        self.links = links or []

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
            if self._nc is not None and not self._nc.is_closed:
                await self._nc.close()


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
) -> Simulation:
    """Start ``scenario`` against the lab at ``nats_url``, on its loop (see ``Fleet.simulate``)."""
    from simulators import load_scenario, run_scenario, run_scenario_processes
    from simulators.command_link import CommandLink

    sc = load_scenario(scenario)
    if seed is not None:
        sc = sc.replace(seed=seed)
    if processes > 0:
        handle = await run_scenario_processes(
            sc, nats_url, auth=nats_auth, processes=processes, speed=speed, duration_s=duration_s
        )
        return Simulation(runner, handle, None)
    nc = await connect(nats_url, auth=nats_auth, name=f"overwatch-lab-sim:{sc.name}")
    links: list[CommandLink] = []
    try:
        run = await run_scenario(sc, nc, speed=speed, duration_s=duration_s)
        # Each device takes commands from the lab on the wire (issue 4's device side).
        for eid, _fleet, org, _kind in sc.devices():
            link = CommandLink(nc, org, eid, partial(run.command, eid))
            await link.start()
            links.append(link)
    except BaseException:
        for link in links:
            await link.stop()
        await nc.close()
        raise
    return Simulation(runner, run, nc, links)
