"""Drive a scenario against NATS in real time (or faster), in this process.

:func:`run_scenario` registers the fleet (org, entity and ``bootsequence`` events), then steps
the :class:`~simulators.model.FleetModel` as the wall clock allows (``speed`` simulated seconds
per wall second) and publishes every emission with core ``nc.publish`` and a ``Nats-Msg-Id``
header (:mod:`simulators.registration`: publishing and registration). It returns a :class:`RunHandle` with
play/pause/set_speed/stop, live counts, live fault injection, commands and the fault timeline.

The runner talks to the lab only over NATS, exactly as real devices would: all it needs is a
connected client (a lab's ``lab.json`` holds ``nats_url`` and ``nats_auth``).

Messages go out in tick order. The pacing never changes *what* is sent, only *when*: the
stream of messages is the same at any speed (:func:`simulators.dry_run.telemetry_hash`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import nats.errors

from overwatch_lab.errors import BrokerError, LabStateError, ScenarioError
from simulators.devices.command_handler import CommandResult
from simulators.faults import Fault
from simulators.model import FleetModel
from simulators.registration import FLUSH_TIMEOUT_S, REGISTER_TIMEOUT_S, now_epoch_ms, publish_all, register
from simulators.scenario import Scenario
from simulators.uplink import Uplink

if TYPE_CHECKING:
    import pandas as pd
    from nats.aio.client import Client

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 1.0  # wall seconds between flushes (a PING/PONG round trip: back-pressure + liveness)
YIELD_EVERY_TICKS = 5  # when catching up, give the event loop a turn every this many ticks
PROGRESS_EVERY_S = 1.0

CALL_TIMEOUT_S = 10.0  # s a call from another thread waits for the run's event loop
Progress = Callable[[dict[str, Any]], None]
T = TypeVar("T")


class RunHandle:
    """A running scenario: control it, watch it, inject faults and send commands.

    Built by :func:`run_scenario`; the handle owns the task that drives the model. Use
    ``await handle.stop()`` (or ``await handle.wait()`` for a run with a duration).

    The plain (non-async) methods may be called from any thread: from another thread than the
    event loop that runs the scenario (a lab's background loop, say) they are handed to that
    loop and waited for.
    """

    def __init__(
        self,
        model: FleetModel,
        nc: Client | Uplink,
        *,
        speed: float,
        duration_s: float | None,
        progress: Progress | None,
    ) -> None:
        self.model = model
        self.uplink = nc if isinstance(nc, Uplink) else Uplink.single(nc)
        """The fleet's connections (one, or one per organisation: see :mod:`simulators.uplink`)."""
        self.duration_s = duration_s
        self.state = "new"  # new | running | paused | finished | stopped | failed
        self.error: BaseException | None = None
        self.published = 0
        self.clock_offset_s = 0.0  # wall epoch - device clock when pacing started (registration time)
        self._speed = speed
        self._progress = progress
        self._wake = asyncio.Event()
        self._stop = False
        self._task: asyncio.Task[None] | None = None
        self._wall_start = time.monotonic()
        self._cpu_start = time.process_time()
        self._last_flush = self._wall_start
        self._ended_at: float | None = None
        self.ended = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def __repr__(self) -> str:
        return (
            f"<RunHandle {self.model.scenario.name!r} {self.state} t={self.model.elapsed_s:.1f}s "
            f"speed={self._speed} devices={len(self.model.devices)} sent={self.published}>"
        )

    # ------------------------------------------------------------------ control
    @property
    def speed(self) -> float:
        """Simulated seconds per wall second (0 = stepped manually with :meth:`advance`)."""
        return self._speed

    @property
    def done(self) -> bool:
        """True once the run has finished, stopped or failed."""
        return self.state in ("finished", "stopped", "failed")

    def _on_loop(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the loop that drives the run and return its result (directly when already there)."""
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is self._loop:
            return fn()
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def call() -> None:
            try:
                fut.set_result(fn())
            except Exception as exc:  # handed to the calling thread, which raises it
                fut.set_exception(exc)

        self._loop.call_soon_threadsafe(call)
        return fut.result(timeout=CALL_TIMEOUT_S)

    def play(self) -> None:
        """Resume after :meth:`pause`."""

        def go() -> None:
            if self.state == "paused":
                self.model.clock.resume()
                self.state = "running"
                self._wake.set()

        self._on_loop(go)

    def pause(self) -> None:
        """Freeze the scenario clock: devices stop sending until :meth:`play`."""

        def go() -> None:
            if self.state == "running":
                self.model.clock.pause()
                self.state = "paused"
                self._wake.set()

        self._on_loop(go)

    def set_speed(self, speed: float) -> None:
        """Change the speed factor from now on (1 = real time, 10 = ten times faster, 0 = manual).

        Raises:
            ScenarioError: a negative speed.
        """

        def go() -> None:
            self.model.clock.set_rate(speed)
            self._speed = speed
            self._wake.set()

        self._on_loop(go)

    async def advance(self, seconds: float) -> int:
        """Step a manual (speed 0) or paused run by ``seconds`` now and publish; return messages sent.

        Raises:
            LabStateError: the run is over, or it is running at a speed (pause it first).
        """
        if self.done:
            raise LabStateError(f"the run is {self.state}; start a new one")
        if self.state == "running" and self._speed > 0:
            raise LabStateError("advance() steps a manual (speed 0) or paused run; pause() first")
        n = 0
        for _ in range(round(seconds * self.model.scenario.tick_hz)):
            n += await publish_all(self.uplink, self.model.step())
        self.published += n
        self.model.clock.sync_to_now()
        return n

    async def stop(self) -> dict[str, Any]:
        """Stop the run (devices simply go silent), flush what was published; return the final stats."""
        self._stop = True
        self._wake.set()
        if self._task is not None:
            await asyncio.wait([self._task])
        if self.state not in ("finished", "failed"):
            self.state = "stopped"
        await self._flush()
        return self.stats()

    async def wait(self) -> dict[str, Any]:
        """Wait until the run ends (its duration elapsed, or stopped); return the final stats.

        Bound it with ``async with asyncio.timeout(...)``: a cancelled wait leaves the run going.

        Raises:
            BrokerError: publishing failed.
            ScenarioError: a strict clock fell behind.
        """
        if self._task is not None:
            await asyncio.wait([self._task])
        if self.error is not None:
            raise self.error
        return self.stats()

    # ------------------------------------------------------------------ faults and commands
    def inject(
        self,
        fault: Fault | str,
        duration_s: float | None = None,
        targets: str | Sequence[str] = "*",
        *,
        start_in_s: float = 0.0,
        **params: Any,
    ) -> Fault:
        """Inject a fault live: ``handle.inject("link_loss", 20, "isr-001")``.

        Args:
            fault: a :class:`Fault` (its times are scenario seconds), or a fault kind name.
            duration_s: how long it lasts (required with a kind name).
            targets: entity ids, fleet names, org ids or ``"*"``.
            start_in_s: start this many simulated seconds from now.
            **params: the kind's parameters (see ``simulators.faults.DEFAULT_PARAMS``).

        Returns:
            The fault, as recorded in the timeline.

        Raises:
            ScenarioError: an invalid fault.
        """

        def go() -> Fault:
            f = fault
            if not isinstance(f, Fault):
                if duration_s is None:
                    raise ScenarioError("inject: duration_s is required")
                n = sum(1 for x in self.model.faults if x.source == "live")
                f = Fault.make(
                    f,
                    self.model.elapsed_s + start_in_s,
                    duration_s,
                    targets,
                    params=params,
                    fault_id=f"live-{n + 1}-{f}",
                    source="live",
                    path="inject",
                )
            if not self.model.matches_any(f):
                raise ScenarioError(f"inject: targets {list(f.targets)} match no device of this run")
            self.model.add_fault(f)
            log.info("injected %s on %s for %.1f s", f.kind.value, list(f.targets), f.duration_s)
            return f

        return self._on_loop(go)

    def command(self, entity_id: str, command: dict[str, Any]) -> CommandResult:
        """Hand a command to a device (the device side of the command seam; no NATS involved).

        Raises:
            KeyError: unknown entity.
        """
        return self._on_loop(lambda: self.model.command(entity_id, command))

    # ------------------------------------------------------------------ watching
    def stats(self) -> dict[str, Any]:
        """Return live counts: messages per type, devices, simulated time, lag behind real time."""
        m = self.model
        clock = m.clock
        now = time.monotonic()
        wall = now - self._wall_start
        run_wall = (self._ended_at or now) - self._wall_start
        return {
            "scenario": m.scenario.name,
            "seed": m.scenario.seed,
            "start": clock.start_epoch_s,
            "state": self.state,
            "speed": self._speed,
            "devices": len(m.devices),
            "sim_time_s": round(m.elapsed_s, 3),
            "wall_s": round(wall, 3),
            "run_wall_s": round(run_wall, 3),
            "cpu_s": round(time.process_time() - self._cpu_start, 3),
            "messages": self.published,
            "msgs_per_s": round(self.published / wall, 1) if wall > 0 else 0.0,
            "bytes": m.bytes_sent,
            "by_type": dict(m.counts),
            "lag_s": round(clock.lag_s(), 3) if self.state == "running" else 0.0,
            "max_lag_s": round(clock.max_lag_s, 3),
            "behind_count": clock.behind_count,
            "forgiven_s": round(clock.forgiven_s, 3),
            "link": m.link_stats(),
            "faults": len(m.faults),
            "clock_offset_s": round(self.clock_offset_s, 6),
        }

    def fault_timeline(self) -> pd.DataFrame:
        """Return the fault timeline (scenario and live faults) as a DataFrame."""
        return self.model.fault_timeline()

    def devices_frame(self) -> pd.DataFrame:
        """Return the simulated truth of every device now (position, battery, mode ...)."""
        return self.model.devices_frame()

    # ------------------------------------------------------------------ the loop
    async def _flush(self) -> None:
        if self.uplink.is_closed:
            return
        try:
            await self.uplink.flush(FLUSH_TIMEOUT_S)
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("flush failed: %r", exc)
        self._last_flush = time.monotonic()

    async def _run(self) -> None:
        model = self.model
        clock = model.clock
        tick_hz = model.scenario.tick_hz
        end_tick = math.inf if self.duration_s is None else round(self.duration_s * tick_hz)
        last_progress = 0.0
        try:
            while not self._stop:
                if model.tick >= end_tick:
                    self.state = "finished"
                    break
                self._wake.clear()
                target = min(end_tick, math.floor(clock.due_s() * tick_hz + 1e-6))
                stepped = 0
                while model.tick < target and not self._stop and self.state == "running":
                    self.published += await publish_all(self.uplink, model.step())
                    stepped += 1
                    if stepped % YIELD_EVERY_TICKS == 0:
                        await asyncio.sleep(0)
                if stepped:
                    clock.note_lag()
                wall = time.monotonic()
                if wall - self._last_flush >= FLUSH_EVERY_S:
                    await self._flush()
                if self._progress is not None and wall - last_progress >= PROGRESS_EVERY_S:
                    last_progress = wall
                    self._progress(self.stats())
                if model.tick >= end_tick:
                    continue
                delay = clock.wall_delay_until((model.tick + 1) / tick_hz)
                if delay is None:  # paused or manual: wait for play/set_speed/stop
                    await self._wake.wait()
                elif delay > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
        except (BrokerError, ScenarioError) as exc:  # publishing failed, or a strict clock fell behind
            self.state = "failed"
            self.error = exc
            log.error("simulation run failed: %s", exc)
        except Exception as exc:  # a bug: keep it for wait() to raise instead of losing it in the task
            self.state = "failed"
            self.error = exc
            log.exception("simulation run crashed")
        finally:
            self._ended_at = time.monotonic()
            self.ended.set()
            if self._progress is not None:
                self._progress(self.stats())


async def run_scenario(
    scenario: Scenario,
    nc: Client | Uplink,
    *,
    speed: float = 1.0,
    duration_s: float | None = None,
    start_epoch_s: float | None = None,
    progress: Progress | None = None,
    members: Sequence[int] | None = None,
    register_timeout_s: float | None = REGISTER_TIMEOUT_S,
    strict: bool = False,
    registered: bool = False,
) -> RunHandle:
    """Register the fleet and start driving it in the background; return the control handle.

    Args:
        scenario: the scenario (see :func:`simulators.catalog.load_scenario`).
        nc: a connected NATS client, or an :class:`~simulators.uplink.Uplink` with one connection
            per organisation (relay identities); the caller owns them and closes them after the run.
        speed: simulated seconds per wall second; 0 = manual (:meth:`RunHandle.advance`).
        duration_s: stop after this many simulated seconds (default the scenario's; None = run
            until :meth:`RunHandle.stop`).
        start_epoch_s: Unix time of t = 0 (default: the scenario's, else now). Telemetry is
            stamped from it, so a fixed value reproduces a run byte for byte.
        progress: called with :meth:`RunHandle.stats` about once a wall second.
        members: drive only these devices (indices in ``scenario.devices()`` order).
        register_timeout_s: wait up to this long for the lab to register every device (see
            :func:`register`); None publishes the registration and starts at once.
        registered: the lab registered the organisations and entities already (``lab.fleet``
            does before it issues the relays): only the ``bootsequence`` events are sent.
        strict: fail the run (``wait`` raises ScenarioError) if it falls more than a second
            behind real time, instead of logging and counting it.

    Raises:
        ScenarioError: a negative or non-finite speed.
        BrokerError: registration could not be published.
    """
    if not 0 <= speed < math.inf:  # also refuses nan
        raise ScenarioError(f"speed must be >= 0 and finite, got {speed}")
    start = start_epoch_s if start_epoch_s is not None else (scenario.start_epoch_s or now_epoch_ms())
    model = FleetModel(scenario, start_epoch_s=start, members=members)
    model.clock.strict = strict
    duration = duration_s if duration_s is not None else scenario.duration_s
    handle = RunHandle(model, nc, speed=speed, duration_s=duration, progress=progress)
    handle.uplink.bind((d.entity_id, d.org_id) for d in model.devices)
    handle.published += await register(handle.uplink, model, timeout_s=register_timeout_s, registered=registered)
    model.clock.set_rate(speed)
    model.clock.sync_to_now()
    # devices stamp start + simulated time, and pacing starts only now, after registration: their
    # clock trails the wall clock by this much (a load test corrects latencies with it)
    handle.clock_offset_s = time.time() - model.clock.now()
    handle.state = "running"
    handle._wall_start = time.monotonic()
    handle._cpu_start = time.process_time()
    handle._task = asyncio.get_running_loop().create_task(handle._run(), name=f"sim:{scenario.name}")
    log.info(
        "simulating %r: %d devices, seed %d, speed %.2f, start %.3f",
        scenario.name,
        len(model.devices),
        scenario.seed,
        speed,
        start,
    )
    return handle
