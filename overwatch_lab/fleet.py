"""``lab.fleet``: simulated fleets flying against the lab, each a :class:`~overwatch_lab.simulation.Simulation`.

    sim = lab.fleet.simulate("small-isr-patrol", speed=5)
    lab.fleet.running        # the simulations not finished yet
    lab.fleet.stop()         # stop them all (the lab also does when it stops)

The devices talk to the lab only over NATS, like real ones, and are held to what real ones may
do: on the embedded broker the lab registers the scenario's organisations and entities with its
own identity, issues one relay identity per organisation (``lab.devices``, the path
``lab.devices.relay`` takes) and the fleet connects with those (one connection per organisation,
per worker process); the relays are revoked when the simulation ends (or the lab stops; a
process killed outright leaves its ``sim-…`` relays for ``lab.devices.revoke``). Simulator processes
started elsewhere (the load test, ``overwatch-lab sim``) get theirs from :meth:`Fleet.relays`.
On an external broker the lab cannot issue identities and the fleet uses the lab's own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from overwatch_lab.errors import BrokerError
from overwatch_lab.nats_auth import NatsAuth
from overwatch_lab.runtime import Runner
from overwatch_lab.simulation import (
    REGISTER_TIMEOUT_S,
    FleetCredentials,
    RelayIssuer,
    Simulation,
    fleet_credentials,
    start_simulation,
)

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

    def connection_info(self) -> dict[str, Any]:
        """What the lab's ``lab.json`` holds (``embedded``: the lab runs its broker)."""
        ...


class Fleet:
    """The simulations a lab runs (see the module docstring).

    Args:
        runner: the lab's loop.
        core: returns the running lab's core.
        issuer: issues and revokes relay identities (``lab.devices``); None: fleets use the
            lab's own identity.
    """

    def __init__(self, runner: Runner, core: Callable[[], FleetCore], issuer: RelayIssuer | None = None) -> None:
        self._runner = runner
        self._core = core
        self._issuer = issuer
        self._simulations: list[Simulation] = []

    def _relay_issuer(self, core: FleetCore) -> RelayIssuer | None:
        """The issuer when the lab runs its broker (an external one issues no identities)."""
        return self._issuer if core.connection_info().get("embedded") else None

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
                issuer=self._relay_issuer(core),
            )
            self._simulations.append(sim)
            return sim

        return self._runner.call(go(), timeout=60 + REGISTER_TIMEOUT_S)

    def relays(self, scenario: ScenarioLike) -> FleetCredentials | None:
        """Register ``scenario``'s fleet and issue one relay per organisation, for simulator
        processes started elsewhere (``run_scenario_processes(..., auth=creds.by_org,
        registered=True)``); :meth:`release` them when the run ends.

        Returns None when the lab uses an external broker (no identities to issue: use the
        lab's own).

        Raises:
            BrokerError: the lab did not register the fleet in time.
            ConfigError: a relay could not be issued.
        """
        core = self._core()
        issuer = self._relay_issuer(core)
        if issuer is None:
            return None
        coro = fleet_credentials(core.nats_url, core.nats_auth, issuer, scenario)
        return self._runner.call(coro, timeout=2 * REGISTER_TIMEOUT_S + 10)

    def release(self, creds: FleetCredentials | None) -> None:
        """Revoke the relays of :meth:`relays` (the broker reloads; their connections close)."""
        if creds is None or self._issuer is None:
            return
        issuer, names = self._issuer, creds.names

        async def go() -> None:
            await issuer.revoke_many(names)

        self._runner.call(go(), timeout=REGISTER_TIMEOUT_S)

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
