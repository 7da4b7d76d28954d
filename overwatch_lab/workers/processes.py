"""The telemetry worker processes a lab owns: start, watch, restart, report, stop.

Each :class:`WorkerProcess` is one child (``python -m overwatch_lab.workers.process``) that
consumes a hand of telemetry partition durables (:func:`~.partitioned.deal`). Ownership:

- the child asks the kernel for SIGTERM when the lab's loop thread dies (``PR_SET_PDEATHSIG``,
  as the broker does), so a SIGKILL of the lab leaves none behind; it runs in a session of its
  own, so a Ctrl-C meant for the lab does not cut its batch short;
- :meth:`WorkerProcesses.run` restarts a child that exits while the lab runs (what it had not
  acknowledged is redelivered by JetStream after ``ack_wait_s``); more than
  ``worker_restart_attempts`` exits within ``broker_restart_window_s`` raise
  :class:`~overwatch_lab.errors.WorkerProcessError`, which fails the lab;
- stop: SIGTERM (the child finishes its batch, NAKs what it holds, reports and exits), then
  SIGKILL after ``stop_timeout_s``.

A child reports its WorkerStats as JSON lines on stdout (every ``process.STATS_PERIOD_S``) and,
for every batch it fetched, the stream sequences as runs (``on_fetched``: the lab's stream watch
counts exactly what the stream discarded unseen); its log lines on stderr go to this module's logger.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from overwatch_lab.broker.process import die_with_parent
from overwatch_lab.config import LabConfig
from overwatch_lab.errors import WorkerProcessError
from overwatch_lab.nats_auth import NatsAuth
from overwatch_lab.workers.base import WorkerStats
from overwatch_lab.workers.partitioned import carry_over
from overwatch_lab.workers.process import child_spec

log = logging.getLogger(__name__)

ROLE = "telemetry-worker"
PIPE_LINE_LIMIT = 16 * 1024 * 1024  # a child's report line (a batch's fetched runs: ~100 KB at 5,000)
_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING,
           "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL}  # fmt: skip


class WorkerProcess:
    """One telemetry worker child (see the module docstring).

    Args:
        name: ``worker-{n}``, also in its NATS connection name.
        durables: the partition durables it consumes.
        spec: builds its stdin spec (the broker URL and credentials may change across broker restarts).
        config: ``ready_timeout_s``, ``stop_timeout_s``.
        on_fetched: called with (durable, flat runs of stream sequences) for every batch the
            child reports fetched (the lab's stream watch: exact discarded counts).
    """

    def __init__(
        self,
        name: str,
        durables: list[str],
        spec: Callable[[], dict[str, Any]],
        config: LabConfig,
        on_fetched: Callable[[str, list[int]], None] | None = None,
    ) -> None:
        self.name = name
        self.on_fetched = on_fetched
        self.durables = durables
        self._spec = spec
        self._config = config
        self._proc: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []
        self._ready: asyncio.Future[None] | None = None
        self._reported: dict[str, dict[str, Any]] = {}  # by durable, from the current child
        self._carried: dict[str, dict[str, Any]] = {}  # by durable, what earlier children counted
        self.last_stderr = ""
        self.starts = 0

    @property
    def stats(self) -> dict[str, dict[str, Any]]:
        """WorkerStats by durable, carried over the child's restarts (:func:`~.partitioned.carry_over`)."""
        zero = WorkerStats().snapshot()
        return {d: carry_over(self._carried.get(d, {}), self._reported.get(d, zero)) for d in self.durables}

    @property
    def pid(self) -> int | None:
        """The child's pid (None before the first start)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        """The exit code once it exited, else None."""
        return self._proc.returncode if self._proc is not None else None

    async def start(self) -> None:
        """Spawn the child and wait for its ready line.

        Raises:
            WorkerProcessError: it exited or said nothing within ``ready_timeout_s`` (then killed).
        """
        self._ready = asyncio.get_running_loop().create_future()
        if self._reported:  # a restart: what the earlier child counted is kept
            self._carried, self._reported = self.stats, {}
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "overwatch_lab.workers.process",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            preexec_fn=functools.partial(die_with_parent, os.getpid()),
            start_new_session=True,
            limit=PIPE_LINE_LIMIT,
        )  # fmt: skip
        self.starts += 1
        proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self._readers = [
            asyncio.create_task(self._read_stdout(proc.stdout), name=f"{self.name}:stdout"),
            asyncio.create_task(self._read_stderr(proc.stderr), name=f"{self.name}:stderr"),
        ]
        proc.stdin.write(json.dumps(self._spec()).encode() + b"\n")
        try:
            await proc.stdin.drain()
            proc.stdin.close()
            async with asyncio.timeout(self._config.ready_timeout_s):
                await self._ready
        except (TimeoutError, ConnectionError, WorkerProcessError) as exc:
            await self.kill()
            raise WorkerProcessError(
                f"telemetry worker process {self.name} (pid {proc.pid}) did not become ready "
                f"within {self._config.ready_timeout_s} s (exit code {proc.returncode}); "
                f"last stderr line: {self.last_stderr!r}"
            ) from exc
        log.info(
            "telemetry worker process %s (pid %s) consuming %s", self.name, proc.pid, ", ".join(self.durables)
        )

    async def wait(self) -> int:
        """Wait for the child to exit (and its output to be read); return its exit code."""
        assert self._proc is not None
        code = await self._proc.wait()
        await asyncio.wait(self._readers)
        return code

    async def stop(self) -> None:
        """SIGTERM, wait up to ``stop_timeout_s`` for a clean exit, then SIGKILL."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            await self._join_readers()
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(self._config.stop_timeout_s):
                await proc.wait()
        except TimeoutError:
            log.warning("telemetry worker process %s did not stop in %.1f s; killing it",
                        self.name, self._config.stop_timeout_s)  # fmt: skip
            await self.kill()
        await self._join_readers()

    async def kill(self) -> None:
        """SIGKILL now and reap."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        await self._join_readers()

    def kill_now(self) -> None:
        """SIGKILL without waiting (any thread: ``Lab.abort``)."""
        pid = self.pid
        if pid is not None and self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    async def _join_readers(self) -> None:
        if self._readers:
            try:
                async with asyncio.timeout(1.0):
                    await asyncio.wait(self._readers)
            except TimeoutError:
                for t in self._readers:
                    t.cancel()
                await asyncio.wait(self._readers)

    async def _read_stdout(self, stream: asyncio.StreamReader) -> None:
        try:
            await self._read_reports(stream)
        except ValueError as exc:  # a line over PIPE_LINE_LIMIT: unreadable, and the pipe would fill
            log.error("%s: unreadable report (%s); killing it so that it restarts", self.name, exc)
            if self._proc is not None and self._proc.returncode is None:
                self._proc.kill()

    async def _read_reports(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            try:
                msg = json.loads(line)
            except ValueError:
                log.warning("%s: unexpected output %r", self.name, line[:200])
                continue
            if "fetched" in msg and self.on_fetched is not None:
                for durable, flat in msg["fetched"].items():
                    self.on_fetched(durable, flat)
            if "stats" in msg:
                self._reported.update(msg["stats"])
            if "ready" in msg and self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(
                WorkerProcessError(f"{self.name} closed its output before it was ready")
            )

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        while raw := await stream.readline():
            line = raw.decode(errors="replace").rstrip()
            if not line:
                continue
            self.last_stderr = line
            level = _LEVELS.get(line.split(" ", 1)[0], logging.WARNING)
            log.log(level, "[%s pid %s] %s", self.name, self.pid, line)


class WorkerProcesses:
    """Every telemetry worker process of one lab (see the module docstring).

    Args:
        config: ``worker_restart_attempts``, ``broker_restart_window_s`` and backoffs, timeouts.
        hands: the durables of each process.
        connection: returns the broker URL and the lab's credentials now (read at every start).
        on_fetched: see :class:`WorkerProcess`.
    """

    def __init__(
        self,
        config: LabConfig,
        hands: list[list[str]],
        connection: Callable[[], tuple[str, NatsAuth]],
        on_fetched: Callable[[str, list[int]], None] | None = None,
    ) -> None:
        self.config = config
        self._stopping = asyncio.Event()
        self.children = [
            WorkerProcess(
                f"worker-{i}", hand, functools.partial(self._spec, f"worker-{i}", hand), config, on_fetched
            )
            for i, hand in enumerate(hands)
        ]
        self._connection = connection
        self.restarts = 0
        self._exits: collections.deque[float] = collections.deque()

    def _spec(self, name: str, durables: list[str]) -> dict[str, Any]:
        url, auth = self._connection()
        return child_spec(self.config, name=name, nats_url=url, nats_auth=auth, durables=durables)

    async def start(self) -> None:
        """Start every child and wait until each is ready; on a failure stop the started ones.

        Raises:
            WorkerProcessError: a child did not become ready.
        """
        results = await asyncio.gather(*(c.start() for c in self.children), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.stop()
            raise errors[0]

    def request_stop(self) -> None:
        """Ask :meth:`run` to stop the children and return."""
        self._stopping.set()

    async def run(self) -> None:
        """Restart children that exit until :meth:`request_stop`; then stop them all.

        Raises:
            WorkerProcessError: a child kept dying (more than ``worker_restart_attempts`` exits
                within ``broker_restart_window_s``) or could not be restarted.
        """
        try:
            watchers = {asyncio.create_task(c.wait(), name=f"wait:{c.name}"): c for c in self.children}
            stopping = asyncio.create_task(self._stopping.wait(), name="worker-processes:stop")
            try:
                while True:
                    done, _ = await asyncio.wait([*watchers, stopping], return_when=asyncio.FIRST_COMPLETED)
                    if stopping in done:
                        return
                    for task in done:
                        child = watchers.pop(task)
                        await self._restart(child, task.result())
                        watchers[asyncio.create_task(child.wait(), name=f"wait:{child.name}")] = child
            finally:
                stopping.cancel()
                for task in [*watchers, stopping]:
                    task.cancel()
                await asyncio.gather(*watchers, stopping, return_exceptions=True)
        finally:
            await self.stop()

    async def _restart(self, child: WorkerProcess, code: int) -> None:
        cfg = self.config
        now = time.monotonic()
        self._exits.append(now)
        while self._exits and self._exits[0] < now - cfg.broker_restart_window_s:
            self._exits.popleft()
        if len(self._exits) > cfg.worker_restart_attempts:
            raise WorkerProcessError(
                f"telemetry worker process {child.name} exited with code {code}; "
                f"{len(self._exits)} exits within {cfg.broker_restart_window_s:.0f} s "
                f"(worker_restart_attempts {cfg.worker_restart_attempts}); last stderr line: {child.last_stderr!r}"
            )
        delay = min(
            cfg.broker_restart_backoff_s * 2 ** (len(self._exits) - 1), cfg.broker_restart_backoff_max_s
        )
        log.error(
            "telemetry worker process %s (pid %s) exited with code %s; restarting it in %.1f s "
            "(its unacknowledged messages are redelivered after ack_wait %.0f s); last stderr line: %r",
            child.name, child.pid, code, delay, cfg.ack_wait_s, child.last_stderr,
        )  # fmt: skip
        try:
            async with asyncio.timeout(delay):
                await self._stopping.wait()
            return  # stopping: no restart
        except TimeoutError:
            pass
        await child.start()
        self.restarts += 1

    async def stop(self) -> None:
        """Stop every child (SIGTERM, then SIGKILL after ``stop_timeout_s``)."""
        await asyncio.gather(*(c.stop() for c in self.children))

    def kill_now(self) -> None:
        """SIGKILL every child now (any thread)."""
        for c in self.children:
            c.kill_now()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """The last WorkerStats each child reported, by durable."""
        out: dict[str, dict[str, Any]] = {}
        for c in self.children:
            out.update(c.stats)
        return out

    def processes(self) -> list[dict[str, Any]]:
        """``{"role", "name", "pid"}`` of each running child."""
        return [
            {"role": ROLE, "name": c.name, "pid": c.pid, "durables": list(c.durables), "starts": c.starts}
            for c in self.children
            if c.pid is not None and c.returncode is None
        ]
