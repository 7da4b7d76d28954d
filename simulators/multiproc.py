"""Process mode: split a large fleet over N worker processes, each with its own NATS connection.

Python runs one core per process, and a 1,000-device fleet sends ~20,000 messages a second, so
a big fleet should not share the lab's (or the notebook kernel's) core. :func:`run_scenario_processes`
starts N ``spawn``-ed workers; worker ``w`` drives devices ``w, w + N, w + 2N, ...`` (an
interleaved slice, so every fleet is spread evenly). Each worker builds the whole scenario
from the same seed and keeps its slice, so every device behaves exactly as in one process.

Workers are started with the ``spawn`` method, which re-imports the parent's main module: a
script that uses process mode needs the usual ``if __name__ == "__main__":`` guard (notebooks,
``python -m`` modules with the guard and console scripts are fine).

Lifetime: workers are daemonic (they end when the parent exits normally) and ask the kernel for
``PR_SET_PDEATHSIG = SIGTERM``, so they also die when the parent is killed. Linux sends that
signal when the *thread* that started them exits: start them from a thread that outlives the
run (the notebook's or the lab's event loop thread).

The worker side, and the pipe protocol between parent and workers, is
:mod:`simulators.process_worker`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import multiprocessing
import os
import time
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from overwatch_lab.errors import BrokerError, LabStateError, ScenarioError
from overwatch_lab.nats_auth import NatsAuth
from simulators.devices.command_handler import CommandResult
from simulators.faults import Fault, timeline_frame
from simulators.process_worker import worker_main
from simulators.registration import REGISTER_TIMEOUT_S, now_epoch_ms
from simulators.runner import Progress
from simulators.scenario import Scenario

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 60.0  # spawn + imports + connect, per worker, on a slow machine
STOP_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 30.0  # a worker may still be registering its devices (runner.REGISTER_TIMEOUT_S)
_WORKER_KEYS = (
    "devices",
    "sim_time_s",
    "messages",
    "cpu_s",
    "wall_s",
    "run_wall_s",
    "lag_s",
    "max_lag_s",
    "state",
    "clock_offset_s",
)


class ProcessRunHandle:
    """Control and watch a scenario running in worker processes (same surface as ``RunHandle``).

    Built by :func:`run_scenario_processes`. Counts are the workers' latest reports (every
    ``STATS_EVERY_S``), summed.
    """

    def __init__(self, scenario: Scenario, processes: int, speed: float, progress: Progress | None) -> None:
        self.scenario = scenario
        self.processes = processes
        self.state = "new"
        self.error: str | None = None
        self.start_epoch_s: float | None = None
        self.faults: list[Fault] = list(scenario.faults)
        self._speed = speed
        self._progress = progress
        self._procs: list[multiprocessing.process.BaseProcess] = []
        self._conns: list[Connection] = []
        self._members: list[list[int]] = []
        self._owner: dict[str, int] = {}
        self._stats: list[dict[str, Any]] = []
        self._ready: list[asyncio.Future[int]] = []
        self._done: list[asyncio.Future[dict[str, Any]]] = []
        self._results: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._req = 0
        self._last_progress = 0.0
        self._wall_start = time.monotonic()

    def __repr__(self) -> str:
        return f"<ProcessRunHandle {self.scenario.name!r} {self.state} processes={self.processes}>"

    # ------------------------------------------------------------------ pipes
    def _on_message(self, i: int) -> None:
        conn = self._conns[i]
        try:
            while conn.poll():
                msg = conn.recv()
                self._dispatch(i, msg)
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(conn.fileno())
            for fut in (self._ready[i], self._done[i]):
                if not fut.done():
                    fut.set_exception(BrokerError(f"simulator worker {i} exited unexpectedly"))
            if self.error is None and not self._done[i].done():
                self.error = f"worker {i} exited"

    def _dispatch(self, i: int, msg: tuple[Any, ...]) -> None:
        op = msg[0]
        if op == "ready":
            if not self._ready[i].done():
                self._ready[i].set_result(msg[1])
        elif op == "stats":
            self._stats[i] = msg[1]
            self._maybe_progress()
        elif op == "result":
            fut = self._results.pop(msg[1], None)
            if fut is not None and not fut.done():
                fut.set_result(msg[2])
        elif op == "done":
            self._stats[i] = msg[1]
            if not self._done[i].done():
                self._done[i].set_result(msg[1])
            if all(f.done() for f in self._done) and self.state in ("running", "paused"):
                self.state = "finished"
            self._maybe_progress(force=True)
        elif op == "error":
            self.error = f"worker {i}: {msg[1]}"
            log.error("simulator worker %d failed: %s", i, msg[1])
            for waiter in (self._ready[i], self._done[i]):
                if not waiter.done():
                    waiter.set_exception(BrokerError(self.error))

    def _maybe_progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._progress is not None and (force or now - self._last_progress >= 1.0):
            self._last_progress = now
            self._progress(self.stats())

    def _send(self, *msg: Any) -> None:
        for i, conn in enumerate(self._conns):
            if not self._done[i].done():
                with contextlib.suppress(OSError, ValueError):
                    conn.send(msg)

    # ------------------------------------------------------------------ control
    @property
    def pids(self) -> list[int]:
        """The worker processes' pids (for CPU and RSS sampling)."""
        return [p.pid for p in self._procs if p.pid is not None]

    @property
    def speed(self) -> float:
        """Simulated seconds per wall second."""
        return self._speed

    @property
    def done(self) -> bool:
        """True once every worker has finished (or the run stopped or failed)."""
        return self.state in ("finished", "stopped", "failed")

    def play(self) -> None:
        """Resume every worker."""
        if self.state == "paused":
            self._send("play")
            self.state = "running"

    def pause(self) -> None:
        """Pause every worker."""
        if self.state == "running":
            self._send("pause")
            self.state = "paused"

    def set_speed(self, speed: float) -> None:
        """Change the speed factor in every worker.

        Raises:
            ScenarioError: a negative speed.
        """
        if not 0 <= speed < math.inf:  # also refuses nan
            raise ScenarioError(f"speed must be >= 0 and finite, got {speed}")
        self._speed = speed
        self._send("speed", speed)

    def inject(
        self,
        fault: Fault | str,
        duration_s: float | None = None,
        targets: str | Sequence[str] = "*",
        *,
        start_in_s: float = 0.0,
        **params: Any,
    ) -> Fault:
        """Inject a fault live in every worker (see ``RunHandle.inject``).

        Raises:
            ScenarioError: an invalid fault.
        """
        if not isinstance(fault, Fault):
            if duration_s is None:
                raise ScenarioError("inject: duration_s is required")
            now = max((s.get("sim_time_s", 0.0) for s in self._stats), default=0.0)
            n = sum(1 for f in self.faults if f.source == "live")
            fault = Fault.make(
                fault,
                now + start_in_s,
                duration_s,
                targets,
                params=params,
                fault_id=f"live-{n + 1}-{fault}",
                source="live",
                path="inject",
            )
        self.faults.append(fault)
        self._send("inject", fault.describe())
        return fault

    async def command(self, entity_id: str, command: dict[str, Any]) -> CommandResult:
        """Hand a command to the device in whichever worker drives it.

        Raises:
            KeyError: unknown entity.
            LabStateError: the run is over.
        """
        i = self._owner[entity_id]
        if self._done[i].done():
            raise LabStateError(f"the worker driving {entity_id} has ended")
        self._req += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._results[self._req] = fut
        self._conns[i].send(("command", self._req, entity_id, command))
        async with asyncio.timeout(COMMAND_TIMEOUT_S):
            d = await fut
        return CommandResult(**d)

    async def stop(self) -> dict[str, Any]:
        """Stop every worker, wait for their final counts, reap the processes; return the totals."""
        if self.state in ("running", "paused"):
            self.state = "stopped"
        self._send("stop")
        with contextlib.suppress(TimeoutError, BrokerError):
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await asyncio.gather(*self._done, return_exceptions=True)
        await asyncio.to_thread(self._reap)
        return self.stats()

    def _reap(self) -> None:
        for p in self._procs:
            if p.pid is None:  # never started
                continue
            p.join(STOP_TIMEOUT_S)
            if p.is_alive():
                log.warning("simulator worker pid %s did not stop; terminating it", p.pid)
                p.terminate()
                p.join(STOP_TIMEOUT_S)
        loop_conns = list(self._conns)
        for conn in loop_conns:
            with contextlib.suppress(OSError):
                conn.close()

    async def wait(self) -> dict[str, Any]:
        """Wait until every worker has finished its duration; return the totals.

        Raises:
            BrokerError: a worker failed.
        """
        await asyncio.gather(*self._done)
        await asyncio.to_thread(self._reap)
        return self.stats()

    # ------------------------------------------------------------------ watching
    def stats(self) -> dict[str, Any]:
        """Return the summed counts of every worker (messages per type, lag = the worst worker's)."""
        by_type: collections.Counter[str] = collections.Counter()
        link: collections.Counter[str] = collections.Counter()
        for s in self._stats:
            by_type.update(s.get("by_type", {}))
            link.update(s.get("link", {}))
        wall = time.monotonic() - self._wall_start
        messages = sum(s.get("messages", 0) for s in self._stats)
        return {
            "scenario": self.scenario.name,
            "seed": self.scenario.seed,
            "start": self.start_epoch_s,
            "state": self.state,
            "speed": self._speed,
            "processes": self.processes,
            "devices": sum(len(m) for m in self._members),
            "sim_time_s": min((s.get("sim_time_s", 0.0) for s in self._stats), default=0.0),
            "wall_s": round(wall, 3),
            "messages": messages,
            "msgs_per_s": round(sum(s.get("msgs_per_s", 0.0) for s in self._stats), 1),
            "bytes": sum(s.get("bytes", 0) for s in self._stats),
            "by_type": dict(by_type),
            "lag_s": max((s.get("lag_s", 0.0) for s in self._stats), default=0.0),
            "max_lag_s": max((s.get("max_lag_s", 0.0) for s in self._stats), default=0.0),
            "behind_count": sum(s.get("behind_count", 0) for s in self._stats),
            "forgiven_s": max((s.get("forgiven_s", 0.0) for s in self._stats), default=0.0),
            "link": dict(link),
            "faults": len(self.faults),
            "workers": [{k: s.get(k) for k in _WORKER_KEYS} for s in self._stats],
        }

    def fault_timeline(self) -> pd.DataFrame:
        """Return the fault timeline (scenario and live faults) as a DataFrame."""
        devs = [(e, f, o) for e, f, o, _ in self.scenario.devices()]
        return timeline_frame(self.faults, devs, self.start_epoch_s or 0.0)


async def run_scenario_processes(
    scenario: Scenario,
    url: str,
    *,
    auth: NatsAuth | Mapping[str, NatsAuth] | None = None,
    processes: int = 2,
    speed: float = 1.0,
    duration_s: float | None = None,
    start_epoch_s: float | None = None,
    progress: Progress | None = None,
    register_timeout_s: float | None = REGISTER_TIMEOUT_S,
    registered: bool = False,
) -> ProcessRunHandle:
    """Start the scenario in ``processes`` worker processes; return once all are running.

    Args:
        scenario: the scenario.
        url: NATS URL the workers connect to (e.g. a lab's ``lab.json`` ``nats_url``).
        auth: NATS credentials: one identity for every organisation (a lab's ``nats_auth``, an
            outside server's), or one relay per organisation (``lab.fleet.relays``): each worker
            then opens one connection per organisation among its devices.
        processes: number of worker processes (1..device count).
        speed: simulated seconds per wall second (> 0).
        duration_s: run length in simulated seconds (default the scenario's; None = until stopped).
        start_epoch_s: Unix time of t = 0 (default: the scenario's, else now).
        progress: called with the summed stats about once a second.
        register_timeout_s: how long each worker waits for the lab to register its devices
            (see :func:`simulators.runner.register`); None = do not wait.
        registered: the lab registered the organisations and entities already: the workers
            send only the ``bootsequence`` events (see :func:`simulators.registration.register`).

    Raises:
        ScenarioError: bad ``processes`` or ``speed``.
        BrokerError: a worker failed to start or connect.
    """
    n_dev = scenario.device_count
    if not 1 <= processes <= n_dev:
        raise ScenarioError(f"processes must be in 1..{n_dev} (the device count), got {processes}")
    if not 0 < speed < math.inf:  # also refuses nan
        raise ScenarioError(f"speed must be > 0 and finite in process mode, got {speed}")
    ctx = multiprocessing.get_context("spawn")
    handle = ProcessRunHandle(scenario, processes, speed, progress)
    loop = asyncio.get_running_loop()
    data = scenario.to_dict()
    ids = [d[0] for d in scenario.devices()]
    duration = duration_s if duration_s is not None else scenario.duration_s
    try:
        for i in range(processes):
            members = list(range(i, n_dev, processes))
            parent_conn, child_conn = ctx.Pipe(duplex=True)
            proc = ctx.Process(
                target=worker_main,
                args=(
                    child_conn,
                    data,
                    members,
                    url,
                    auth,
                    speed,
                    duration,
                    i,
                    os.getpid(),
                    logging.WARNING,
                ),
                kwargs={"registered": registered},
                name=f"overwatch-lab-sim-{i}",
                daemon=True,
            )
            handle._procs.append(proc)
            handle._conns.append(parent_conn)
            handle._members.append(members)
            handle._stats.append({})
            handle._ready.append(loop.create_future())
            handle._done.append(loop.create_future())
            for m in members:
                handle._owner[ids[m]] = i
            proc.start()
            child_conn.close()
            loop.add_reader(parent_conn.fileno(), handle._on_message, i)
        async with asyncio.timeout(READY_TIMEOUT_S):
            await asyncio.gather(*handle._ready)
    except BaseException:
        for i, conn in enumerate(handle._conns):
            loop.remove_reader(conn.fileno())
            handle._done[i].cancel()
        for p in handle._procs:
            if p.pid is not None and p.is_alive():
                p.terminate()
        await asyncio.to_thread(handle._reap)
        raise
    start = start_epoch_s if start_epoch_s is not None else (scenario.start_epoch_s or now_epoch_ms())
    handle.start_epoch_s = start
    handle._wall_start = time.monotonic()
    handle._send("go", start)
    handle.state = "running"
    log.info("simulating %r in %d processes (%d devices)", scenario.name, processes, n_dev)
    return handle
