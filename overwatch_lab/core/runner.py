"""Running one core on a loop thread of its own: the lab's lifecycle, state and failure.

:class:`CoreRunner` starts once and stops once (:class:`LabState`), on one ``AsyncExitStack``
and one ``TaskGroup``: the core boots (``boot``), starts its tasks (``start_tasks``), runs, and
on stop the ``on_stopping`` hooks run first (the fleets: devices stop before the workers
drain), then the core's tasks are asked to finish and awaited (``stop_timeout_s``), then the
exit stack closes the parts in reverse. A part that gives up (``Run.fail``) becomes the
runner's ``failure`` and stops it; every later :meth:`CoreRunner.call` raises that failure.

The Lab facade and its parts reach the running core only through :meth:`CoreRunner.require`
(the core, or the reason there is none) and :meth:`call` / :meth:`submit` (its loop).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import enum
import logging
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pandas as pd

from overwatch_lab.core.base import LabCore, Run
from overwatch_lab.errors import BrokerError, LabStateError, OverwatchError
from overwatch_lab.kvcache import Changes
from overwatch_lab.kvstate import Doc
from overwatch_lab.replay import Progress, read_window
from overwatch_lab.runtime import LoopThread
from overwatch_lab.store.window import TimeLike

log = logging.getLogger(__name__)
T = TypeVar("T")
Hook = Callable[[], Coroutine[Any, Any, None]]

_running: weakref.WeakSet[CoreRunner] = weakref.WeakSet()


@atexit.register
def _stop_forgotten_labs() -> None:
    for runner in list(_running):
        with contextlib.suppress(Exception):
            runner.down(timeout=runner.core.config.stop_timeout_s)


class LabState(enum.Enum):
    """Lifecycle of a Lab: it starts once and stops once."""

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class CoreRunner:
    """Runs ``core`` on a loop thread of its own, from NEW to STOPPED or FAILED (see the module docstring)."""

    def __init__(self, core: LabCore) -> None:
        self.core = core
        self.state = LabState.NEW
        self.failure: BaseException | None = None
        self._hooks: list[Hook] = []
        self._thread: LoopThread | None = None
        self._main: concurrent.futures.Future[None] | None = None
        self._stop_requested: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"<CoreRunner {self.state.value} {self.core!r}>"

    def on_stopping(self, hook: Hook) -> None:
        """Run ``hook()`` on the loop when the lab begins to stop, before the core's tasks finish."""
        self._hooks.append(hook)

    # ------------------------------------------------------------------ lifecycle
    def begin(self) -> concurrent.futures.Future[None]:
        """Start the loop thread and the boot; the future resolves once the lab runs."""
        if self.state is not LabState.NEW:
            raise LabStateError(f"a Lab starts once; this one is {self.state.value}. Build a new Lab.")
        self.state = LabState.STARTING
        self._thread = LoopThread(f"overwatch-lab:{self.core.config.data_dir.name}")
        running: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._main = self._thread.submit(self._run(running))
        return running

    def started(self, running: concurrent.futures.Future[None], timeout: float | None = None) -> None:
        """Block until ``running`` resolves; on a failed start, release the loop thread and re-raise."""
        try:
            running.result(timeout)
        except BaseException:
            self.down()
            raise

    def down(self, timeout: float | None = None) -> None:
        """Stop, blocking until everything started has stopped (idempotent)."""
        fut = self._end()
        if fut is not None:
            with contextlib.suppress(BaseException):
                fut.result(timeout)
        if self._thread is not None:
            self._thread.close()

    def ended(self) -> concurrent.futures.Future[LabState]:
        """A future of the final state (see ``Lab.ended``)."""
        if self._main is None:
            raise LabStateError(f"the lab is {self.state.value}; it was never started")
        ended: concurrent.futures.Future[LabState] = concurrent.futures.Future()

        def resolve(_main: concurrent.futures.Future[None]) -> None:
            with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled by its holder
                ended.set_result(self.state)

        self._main.add_done_callback(resolve)
        return ended

    def _end(self) -> concurrent.futures.Future[None] | None:
        if self.state in (LabState.NEW, LabState.STOPPED, LabState.FAILED) or self._main is None:
            if self.state is LabState.NEW:
                self.state = LabState.STOPPED
            return None
        assert self._thread is not None and self._stop_requested is not None
        if self._thread.alive:
            self._thread.loop.call_soon_threadsafe(self._stop_requested.set)
        return self._main

    def _fail(self, exc: OverwatchError) -> None:
        """A part gave up (on the lab's loop): record why and stop."""
        if self.failure is None:
            self.failure = exc
        assert self._stop_requested is not None
        self._stop_requested.set()

    async def _run(self, running: concurrent.futures.Future[None]) -> None:
        stop = self._stop_requested = asyncio.Event()
        core = self.core
        timeout = core.config.stop_timeout_s
        try:
            async with contextlib.AsyncExitStack() as stack:
                await core.boot(stack)
                async with asyncio.TaskGroup() as tg:
                    tasks = await core.start_tasks(tg, Run(stop=stop, fail=self._fail))
                    core.running(stack)
                    self.state = LabState.RUNNING
                    _running.add(self)
                    running.set_result(None)
                    log.info("lab running: nats %s, db %s", core.nats_url, core.db_url)
                    await stop.wait()
                    self.state = LabState.STOPPING
                    for hook in self._hooks:  # devices first: nothing new arrives while draining
                        await hook()
                    core.request_stop()
                    late: set[asyncio.Task[None]] = set()
                    if tasks:
                        _, late = await asyncio.wait(tasks, timeout=timeout)
                    for task in late:
                        log.warning("task %s did not stop in %.1f s; cancelling", task.get_name(), timeout)
                        task.cancel()
        except BaseException as exc:
            if self.failure is None and not isinstance(exc, asyncio.CancelledError):
                self.failure = exc  # a part's own failure (see _fail) stays the cause
            self.state = LabState.FAILED
            if not running.done():  # failed while starting: the starter gets the error
                running.set_exception(exc if isinstance(exc, Exception) else LabStateError(repr(exc)))
                log.info("lab failed to start: %r", exc)
            else:  # failed while running: nobody else hears of it
                log.error("lab failed: %r", exc)
            raise
        finally:
            _running.discard(self)
            if self.state is not LabState.FAILED:
                self.state = LabState.FAILED if self.failure is not None else LabState.STOPPED
                if self.failure is not None:  # a part gave up (see _fail); the lab stopped itself
                    log.error("lab failed: %s", self.failure)

    # ------------------------------------------------------------------ reaching the core
    def booted(self) -> LabCore:
        """The core once connected (also while starting and after stopping)."""
        if not self.core.booted:
            raise LabStateError(f"the lab is {self.state.value}; it has no broker connection yet")
        return self.core

    def require(self) -> LabCore:
        """The core of a running lab; else the failure (BrokerExited …) or LabStateError."""
        if self.failure is not None:
            if isinstance(self.failure, BrokerError):  # BrokerExited, ProvisionError, BrokerStartError
                raise type(self.failure)(f"the lab failed: {self.failure}") from self.failure
            raise LabStateError(f"the lab failed: {self.failure!r}") from self.failure
        if self.state is not LabState.RUNNING or not self.core.booted:
            raise LabStateError(f"the lab is {self.state.value}, not running")
        return self.core

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        """Run a coroutine on the lab's loop and return its result (blocking)."""
        return self._loop(coro).call(coro, timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule a coroutine on the lab's loop; await it with ``asyncio.wrap_future``."""
        return self._loop(coro).submit(coro)

    def _loop(self, coro: Coroutine[Any, Any, Any]) -> LoopThread:
        try:
            self.require()
        except BaseException:
            coro.close()
            raise
        assert self._thread is not None
        return self._thread


class LiveReads:
    """A running lab's KV and quarantine stream as blocking reads (the LiveSource of ``lab.frames``)."""

    def __init__(self, runner: CoreRunner) -> None:
        self._runner = runner

    def entity_docs(self) -> dict[str, Doc]:
        """Every live entity document, by entity_id."""
        return self._runner.call(self._runner.require().entity_docs())

    def entity_changes(self, since: int) -> Changes:
        """What changed in the bucket since version ``since`` of the lab's KV cache."""
        return self._runner.call(self._runner.require().entity_changes(since))

    def quarantine_records(self) -> list[dict[str, Any]]:
        """Every quarantine record, oldest first."""
        return self._runner.call(self._runner.require().quarantine_records())

    def replay_frame(
        self,
        since: TimeLike | None,
        until: TimeLike | None = None,
        *,
        org_id: str | None = None,
        entity_id: str | list[str] | None = None,
        progress: Progress | None = None,
    ) -> pd.DataFrame:
        """A window of telemetry re-read from the lab's JetStream (:func:`~overwatch_lab.replay.read_window`)."""
        read = read_window(
            self._runner.require().nc, since, until, org_id=org_id, entity_id=entity_id, progress=progress
        )
        return self._runner.call(read, timeout=None)
