"""``lab.fleet``: simulated fleets flying against the lab, each a :class:`~overwatch_lab.simulation.Simulation`.

    sim = lab.fleet.simulate("small-isr-patrol", speed=5)
    lab.fleet.running        # the simulations not finished yet
    lab.fleet.stop()         # stop them all (the lab also does when it stops)

The devices talk to the lab only over NATS, like real ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from overwatch_lab.errors import BrokerError
from overwatch_lab.nats_auth import NatsAuth
from overwatch_lab.runtime import Runner
from overwatch_lab.simulation import Simulation, start_simulation

if TYPE_CHECKING:
    from overwatch_lab.simulation import ScenarioLike

log = logging.getLogger(__name__)


class FleetCore(Protocol):
    """What the fleet part needs of a lab's core: where its broker is."""

    @property
    def nats_url(self) -> str:
        """URL of the broker."""
        ...

    @property
    def nats_auth(self) -> NatsAuth:
        """How the lab connects to the broker."""
        ...


class Fleet:
    """The simulations a lab runs (see the module docstring).

    Args:
        runner: the lab's loop.
        core: returns the running lab's core.
    """

    def __init__(self, runner: Runner, core: Callable[[], FleetCore]) -> None:
        self._runner = runner
        self._core = core
        self._simulations: list[Simulation] = []

    def __repr__(self) -> str:
        return f"<Fleet {len(self.running)} running>"

    def simulate(
        self,
        scenario: ScenarioLike = "small-isr-patrol",
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

        The lab stops the fleet when it stops.
        """
        core = self._core()

        async def go() -> Simulation:
            sim = await start_simulation(
                self._runner,
                core.nats_url,
                core.nats_auth,
                scenario,
                speed=speed,
                duration_s=duration_s,
                seed=seed,
                processes=processes,
            )
            self._simulations.append(sim)
            return sim

        return self._runner.call(go(), timeout=60)

    @property
    def running(self) -> list[Simulation]:
        """The simulations started by this lab and not finished yet."""
        return [sim for sim in self._simulations if not sim.done]

    def stop(self) -> list[dict[str, Any]]:
        """Stop every simulation of this lab; return their final counts."""
        return [sim.stop() for sim in self._simulations]

    async def close(self) -> None:
        """Stop every simulation, on the lab's loop (the lab calls it first when it stops)."""
        for sim in self._simulations:
            try:
                await sim.close()
            except BrokerError as exc:  # the broker is gone (the lab is failing): one line, no traceback
                log.warning("stopping simulation %r: its broker is gone (%s)", sim, exc)
            except OSError as exc:  # its connection was reset under it: the same, said plainly
                log.warning("stopping simulation %r: connection lost (%r)", sim, exc)
            except Exception:  # a failing fleet must not keep the lab from stopping
                log.exception("stopping simulation %r failed", sim)
