"""The lab's own event loop, on a thread of its own.

A notebook cell that computes for seconds freezes the kernel's event loop; the fabric must keep
ingesting meanwhile, so the lab never runs on the caller's loop. Everything asynchronous the lab
owns (NATS connection, workers, synchronizer, the broker child's log pump) lives on this loop;
callers reach it through :meth:`LoopThread.submit` (a concurrent future, awaitable with
``asyncio.wrap_future``) or :meth:`LoopThread.call` (blocking).

The thread is a daemon so a forgotten lab never blocks interpreter exit; ``Lab`` registers an
``atexit`` hook that stops it properly first. The embedded nats-server is started from this thread
with PR_SET_PDEATHSIG, so it also dies if the whole process is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

from overwatch_lab.errors import LabStateError

T = TypeVar("T")


class Runner(Protocol):
    """A way onto a running lab's loop: what the Lab's parts hold (``Lab`` is one).

    Both raise the lab's failure (e.g. BrokerExited) or LabStateError when the lab is not running.
    """

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        """Run ``coro`` on the lab's loop and return its result (blocking)."""
        ...

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the lab's loop; a concurrent future of its result."""
        ...


class LoopThread:
    """One asyncio loop running forever on one daemon thread, until :meth:`close`."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    @property
    def alive(self) -> bool:
        """True while the thread runs."""
        return self._thread.is_alive()

    def in_loop_thread(self) -> bool:
        """True when called from the loop's own thread (where blocking calls would deadlock)."""
        return threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop and return a concurrent future of its result."""
        if not self.alive:
            coro.close()
            raise LabStateError("the lab's event loop is not running")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and block until it returns (not from the loop thread)."""
        if self.in_loop_thread():
            coro.close()
            raise LabStateError("blocking lab call made from the lab's own event loop; await it instead")
        return self.submit(coro).result(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the loop (cancelling what is left on it) and join the thread."""
        if self.alive:
            self.loop.call_soon_threadsafe(self.loop.stop)
            if not self.in_loop_thread():
                self._thread.join(timeout)
