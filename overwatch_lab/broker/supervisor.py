"""Supervision of the embedded broker: restart it when it dies, give up loudly when it cannot.

:class:`BrokerSupervisor` owns the lab's nats-server (a :class:`NatsServer` per run of the
process, all on the same store dir and so on the same port and credentials, see ``identity.py``).
:meth:`BrokerSupervisor.run` waits for the child to exit; an exit the lab did not ask for is
followed by restarts with exponential backoff, at most ``broker_restart_attempts`` within
``broker_restart_window_s``. Every transition is logged. Clients reconnect by themselves: the
URL and token do not change, and nats-py buffers publishes while it reconnects.

A broker whose store hit a write error (disk full) keeps refusing writes even after the disk has
room again (nats-server marks the file store failed until it restarts): once it has logged a
"Critical write error" and the store's file system has room again (:func:`room_again`),
the supervisor restarts it the same way, so the lab resumes by itself.

When the broker cannot be brought back (attempts exhausted, binary gone, a port taken by another
process) :meth:`run` raises :class:`~overwatch_lab.errors.BrokerExited`; the lab then fails.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from overwatch_lab.broker.process import NatsServer
from overwatch_lab.config import LabConfig
from overwatch_lab.errors import BrokerExited, BrokerStartError

log = logging.getLogger(__name__)

RESTART_FREE_BYTES = 64 * 1024 * 1024  # free space after a store write error that warrants a restart
# (or a quarter of a smaller file system)
WRITE_ERROR_POLL_S = 1.0  # s between checks of a failed store's free space
_STORE_FAILED = object()  # what _watch returns for "restart it: its store failed and has room again"


def room_again(path: Path) -> bool:
    """True when the file system holding ``path`` has room again for a failed store to restart:
    :data:`RESTART_FREE_BYTES` free, or a quarter of a smaller file system."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize >= min(RESTART_FREE_BYTES, st.f_blocks * st.f_frsize // 4)


@dataclass(slots=True)
class BrokerStats:
    """What the supervisor saw, for ``lab.stats()["broker"]``."""

    state: str = "new"  # new | running | restarting | failed | stopped
    pid: int | None = None
    restarts: int = 0  # successful restarts after an unexpected exit
    failed_attempts: int = 0  # restart attempts that did not bring the broker up
    last_exit_code: int | None = None
    last_exit_at: float | None = None
    last_error: str | None = None

    def snapshot(self) -> dict[str, Any]:
        """Return a plain dict copy."""
        return asdict(self)


class BrokerSupervisor:
    """Start, watch and restart the embedded nats-server on one store dir; see the module docstring.

    Args:
        make_server: Builds a new, unstarted :class:`NatsServer` on the lab's store dir (a
            NatsServer starts once, so every restart builds a fresh one).
        config: Supplies ``broker_restart_attempts``, ``broker_restart_window_s``,
            ``broker_restart_backoff_s`` and ``broker_restart_backoff_max_s``.
    """

    def __init__(self, make_server: Callable[[], NatsServer], config: LabConfig) -> None:
        self._make = make_server
        self.config = config
        self._server: NatsServer | None = None
        self._attempts: collections.deque[float] = collections.deque()
        self.stats = BrokerStats()

    @classmethod
    def for_lab(cls, config: LabConfig) -> BrokerSupervisor:
        """The supervisor of a lab's embedded broker: its store is ``<data_dir>/broker``."""
        make = partial(
            NatsServer,
            config.data_dir / "broker",
            sync_interval=config.sync_interval,
            ready_timeout_s=config.ready_timeout_s,
            stop_timeout_s=config.stop_timeout_s,
            binary=config.nats_server_path,
        )
        return cls(make, config)

    def __repr__(self) -> str:
        return f"<BrokerSupervisor {self.stats.state} {self._server!r}>"

    @property
    def server(self) -> NatsServer:
        """The current nats-server (a new object after every restart)."""
        if self._server is None:
            raise BrokerStartError("the embedded broker has not been started")
        return self._server

    @property
    def url(self) -> str:
        """Client URL; the same across restarts."""
        return self.server.url


    async def start(self) -> None:
        """Start the first server. A failure here is a failed boot, not something to retry.

        Raises:
            BrokerStartError: as :meth:`NatsServer.start`.
        """
        self._server = self._make()
        await self._server.start()
        self._running()

    async def stop(self) -> None:
        """Stop the current server (graceful, then forced; idempotent)."""
        if self._server is not None:
            await self._server.stop()
        if self.stats.state != "failed":
            self.stats.state = "stopped"

    async def run(self, stopping: asyncio.Event) -> None:
        """Watch the broker until ``stopping`` is set, restarting it whenever it dies.

        Raises:
            BrokerExited: the broker died and could not be restarted within the configured
                attempts (the message says why: the exit code and the last start error).
        """
        while not stopping.is_set():
            server = self.server
            code = await _first(self._watch(server), stopping)
            if stopping.is_set():
                return
            if code is _STORE_FAILED:
                log.warning(
                    "embedded nats-server's store had a write error (%s) and its disk has room again: "
                    "restarting it to clear it",
                    server.store_write_error,
                )
                self.stats.state = "restarting"
                await server.stop()
                if not await self._restart(stopping, None):
                    return
                continue
            st = self.stats
            st.state, st.last_exit_code, st.last_exit_at = "restarting", code, time.time()
            log.error(
                "embedded nats-server (pid %s) exited unexpectedly with code %s; restarting it on %s",
                server.pid,
                code,
                server.url,
            )
            await server.stop()  # reap it and collect its last log lines
            if not await self._restart(stopping, code):
                return

    async def _watch(self, server: NatsServer) -> Any:
        """Wait until ``server`` exits (return its code) or its failed store can be cleared by a
        restart (return ``_STORE_FAILED``)."""
        exited = asyncio.ensure_future(server.wait_exited())
        try:
            while True:
                done, _ = await asyncio.wait({exited}, timeout=WRITE_ERROR_POLL_S)
                if done:
                    return exited.result()
                if server.store_write_error is not None:
                    with contextlib.suppress(OSError):
                        if room_again(server.store_dir):
                            return _STORE_FAILED
        finally:
            if not exited.done():
                exited.cancel()
                await asyncio.wait({exited})

    async def _restart(self, stopping: asyncio.Event, code: int | None) -> bool:
        """Bring a new server up; False if the lab began stopping meanwhile."""
        cfg = self.config
        delay = cfg.broker_restart_backoff_s
        last_error: BaseException | None = None
        while True:
            now = time.monotonic()
            while self._attempts and now - self._attempts[0] > cfg.broker_restart_window_s:
                self._attempts.popleft()
            if len(self._attempts) >= cfg.broker_restart_attempts:
                self.stats.state = "failed"
                why = f"; last start error: {last_error}" if last_error is not None else ""
                raise BrokerExited(
                    f"embedded nats-server exited with code {code} and could not be kept running: "
                    f"{len(self._attempts)} restart attempts within {cfg.broker_restart_window_s:g} s{why}"
                ) from last_error
            await _first(asyncio.sleep(delay), stopping)
            if stopping.is_set():
                return False
            self._attempts.append(time.monotonic())
            attempt = len(self._attempts)
            server = self._make()
            try:
                await server.start()
            except BrokerStartError as exc:
                last_error = exc
                self.stats.failed_attempts += 1
                self.stats.last_error = str(exc)
                log.error("restart attempt %d of the embedded nats-server failed: %s", attempt, exc)
                delay = min(delay * 2, cfg.broker_restart_backoff_max_s)
                continue
            self._server = server
            self.stats.restarts += 1
            self._running()
            log.warning(
                "embedded nats-server restarted (attempt %d): pid %s on %s, same token; clients reconnect",
                attempt,
                server.pid,
                server.url,
            )
            return True

    def _running(self) -> None:
        self.stats.state = "running"
        self.stats.pid = self.server.pid


async def _first(awaitable: Any, stopping: asyncio.Event) -> Any:
    """Await ``awaitable`` unless ``stopping`` is set first; return its result (None if stopped)."""
    main = asyncio.ensure_future(awaitable)
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({main, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for fut in (main, stop):
            if not fut.done():
                fut.cancel()
        await asyncio.wait({main, stop})
    return main.result() if main.done() and not main.cancelled() else None
