"""The store's writer thread: one connection on one dedicated thread, errors translated at this seam.

Every call runs on a single worker thread (``ThreadPoolExecutor(max_workers=1)``, threads named
``overwatch-db-*``) that owns the one persistent connection. So a large batched write never
blocks the event loop that consumes NATS, calls are serialised (SQLite's single-writer rule
holds inside the process), and each write is one explicit ``BEGIN IMMEDIATE`` … ``COMMIT``.
Readers in other threads or processes use their own connections (see :mod:`.queries`); WAL
mode lets them read while this thread writes.

Errors from sqlite3 / libsql / the file system are translated to :class:`DatabaseError` naming
the operation; an infrastructure fault (disk full, read-only, locked, I/O error, unreachable
server: see :mod:`.faults`) to its subclass :class:`DatabaseUnavailable`. After such a fault the
writer closes its connection (rolling back any open transaction) and opens a fresh one on its
next call, so it recovers by itself once the fault clears: a file system remounted, a lock
released, a server back, a Hrana connection that died. Measured: a local connection survives
SQLITE_FULL by itself, but holding it open keeps the files busy (a read-only remount is refused
while a file is open for writing) and a dead Hrana connection never comes back. A caller
cancelled while its call runs gets ``CancelledError`` at once, but the call itself still
completes (or rolls back) on the worker thread: a thread cannot be interrupted.

The thread and the GIL: sqlite3 releases the GIL around every SQLite call that does work (each
statement's step, reset, prepare) and must take it back afterwards. While the event loop runs
Python (decoding the next batch, KV writes), taking it back waits for the loop thread to drop it:
up to the interpreter's switch interval, 5 ms by default, per statement. So :meth:`Writer.open`
lowers the process's switch interval to :data:`SWITCH_INTERVAL_S` (never raises it): the loop
thread is asked to drop the GIL only when another thread waits for it, so the cost is a few more
GIL hand-offs while the writer works. Measured (``Store.insert_telemetry_groups`` of the lab's
telemetry rows while a loop task runs Python in 5 ms slices): 71 → 16 µs per row in batches of
5,000, 188 → 80 in batches of 200; 16 µs/row is the writer's own CPU time.

The write lock between processes (worker processes share one SQLite file): SQLite's own busy
handler sleeps in growing steps (1, 2, 5, 10 … 100 ms) while another process holds the lock, so a
waiter oversleeps a short transaction by up to 100 ms (measured: a 464 ms wait behind a 90 ms
transaction; 30–35 % of a writer's time waiting with two processes). A local writer therefore
asks for the lock itself (:meth:`Writer._begin`): ``BEGIN IMMEDIATE`` with ``busy_timeout=0``,
again after a short sleep (``LOCK_POLL_S``, growing to ``LOCK_POLL_MAX_S``) until
``BUSY_TIMEOUT_MS`` has passed, then the busy error as before (a hold). In WAL mode the write
lock is the only thing a writer waits for; reads and the commit take no lock another process holds.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from overwatch_lab.errors import DatabaseError, DatabaseUnavailable
from overwatch_lab.store.connection import DB_ERRORS, connect, is_remote, redact, rows_as_dicts
from overwatch_lab.store.faults import is_unavailable
from overwatch_lab.store.schema import BUSY_TIMEOUT_MS, apply_pragmas, rollback_quietly

__all__ = ["Writer"]

log = logging.getLogger(__name__)

T = TypeVar("T")

SWITCH_INTERVAL_S = 0.0005
"""The interpreter's switch interval once a store is open (s): how long the writer thread waits
at most for the GIL after a SQLite call while the event loop runs Python (see the module doc)."""
LOCK_POLL_S = 0.00025  # first wait before asking again for the write lock another process holds
LOCK_POLL_MAX_S = 0.002  # the longest wait between two asks


class Writer:
    """One connection to ``location`` on one dedicated thread, driven from asyncio.

    Lifecycle: ``Writer(location)`` → ``await open(setup)`` → calls → ``await close()``; it
    opens once. Every call raises :class:`DatabaseError` on a database failure, naming the
    operation, and :class:`DatabaseUnavailable` on an infrastructure fault.

    Args:
        location: a normalised location (see :func:`.connection.normalise_location`).
        autocheckpoint: False turns SQLite's WAL autocheckpoint off on a local connection:
            its commits never checkpoint; a :class:`~.checkpoint.Checkpointer` must (see there).

    Attributes:
        location: the file path or server URL.
        remote: True for a libSQL server URL.
        state: ``new``, ``opening``, ``open`` or ``closed``.
        faults: infrastructure faults seen (each raised as :class:`DatabaseUnavailable`).
    """

    def __init__(self, location: str, *, autocheckpoint: bool = True) -> None:
        self.location = location
        self.remote = is_remote(location)
        self.autocheckpoint = autocheckpoint
        self.state = "new"
        self.faults = 0
        self._executor: ThreadPoolExecutor | None = None
        self._conn: Any = None
        self._dropped_at: float | None = None  # monotonic time the connection was dropped after a fault

    # ------------------------------------------------------------------ lifecycle
    async def open(self, setup: Callable[[Any], T]) -> T:
        """Start the thread, connect, set the pragmas and run ``setup(conn)`` on the thread.

        Returns:
            What ``setup`` returned.

        Raises:
            DatabaseError: already opened, or the file or server cannot be opened, or
                ``setup`` failed. The writer is closed again on failure.
        """
        if self.state != "new":
            raise DatabaseError(f"store {redact(self.location)} was already opened (state {self.state})")
        if sys.getswitchinterval() > SWITCH_INTERVAL_S:  # process-wide; see the module docstring
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="overwatch-db")
        self.state = "opening"
        try:
            result: T = await self._submit("open", self._open_sync, setup)
        except BaseException:
            await self.close()
            raise
        self.state = "open"
        return result

    async def close(self) -> None:
        """Close the connection and stop the thread. Calling it again does nothing."""
        executor, self._executor = self._executor, None
        self.state = "closed"
        if executor is None:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(executor, self._close_sync)
        finally:
            # The close job is the last one queued; wait only when it ran (a cancelled close
            # lets the thread finish its queue in the background).
            executor.shutdown(wait=self._conn is None)

    def _open_sync(self, setup: Callable[[Any], T]) -> T:
        if not self.remote and self.location != ":memory:":
            Path(self.location).parent.mkdir(parents=True, exist_ok=True)
        self._conn = connect(self.location)
        apply_pragmas(self._conn, remote=self.remote)
        result = setup(self._conn)  # migrations wait for the lock the usual way
        self._writer_pragmas(self._conn)
        return result

    def _writer_pragmas(self, conn: Any) -> None:
        if self.remote:
            return
        conn.execute("PRAGMA busy_timeout=0")  # _begin waits for the write lock instead
        if not self.autocheckpoint:
            conn.execute("PRAGMA wal_autocheckpoint=0")

    def _close_sync(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if not self.remote:
                conn.execute("PRAGMA optimize")
            conn.close()
        except DB_ERRORS as exc:
            log.warning("closing store %s: %s", redact(self.location), exc)

    # ------------------------------------------------------------------ calls
    async def _submit(self, op: str, fn: Callable[..., T], *args: Any) -> T:
        executor = self._executor
        if executor is None or self.state not in ("open", "opening"):
            raise DatabaseError(f"{op}: store {redact(self.location)} is not open (state {self.state})")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, self._guarded, op, fn, args)

    async def transaction(self, op: str, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on the thread inside one ``BEGIN IMMEDIATE`` … ``COMMIT``.

        Args:
            op: what the call does, for error messages (e.g. ``"upsert entity 'e1'"``).
            fn: runs on the thread with the connection; an exception from it rolls the
                transaction back and is raised (translated).
            args: its further arguments.

        Raises:
            DatabaseError: not open, or the database refused; :class:`DatabaseUnavailable`
                for an infrastructure fault.
        """
        return await self._submit(op, self._in_transaction, fn, args)

    async def query(
        self, op: str, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[dict[str, Any]]:
        """Run one query (no transaction) and return its rows as dicts."""
        return await self._submit(op, self._query_sync, sql, params)

    async def write(self, op: str, sql: str, params: Sequence[Any]) -> int:
        """Run one statement in its own transaction; return the rows it changed."""
        return await self.transaction(op, _execute, sql, params)

    async def write_many(self, op: str, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run one statement for each of ``rows`` in one transaction; return the rows changed."""
        return await self.transaction(op, _execute_many, sql, rows)

    # ------------------------------------------------------------------ on the thread
    def _guarded(self, op: str, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            if op != "open" and self._conn is None:
                if self._dropped_at is None or self.state != "open":
                    raise DatabaseError(f"{op}: store {redact(self.location)} is closed")
                self._reconnect()
            result = fn(*args)
        except DatabaseError:
            raise
        except DB_ERRORS as exc:
            if not is_unavailable(exc):
                raise DatabaseError(f"{op} failed on {redact(self.location)}: {exc}") from exc
            self.faults += 1
            if op != "open":
                self._drop_connection()
            raise DatabaseUnavailable(f"{op} failed on {redact(self.location)}: {exc}") from exc
        if self._dropped_at is not None:  # debug: a read may work while writes still fail
            log.debug(
                "store %s answered again %.1f s after a fault (%s)",
                redact(self.location),
                time.monotonic() - self._dropped_at,
                op,
            )
            self._dropped_at = None
        return result

    def _drop_connection(self) -> None:
        """Close the connection after an infrastructure fault; the next call opens a new one."""
        conn, self._conn = self._conn, None
        if self._dropped_at is None:
            self._dropped_at = time.monotonic()
        if conn is None:
            return
        try:
            conn.close()  # rolls back a transaction still open
        except DB_ERRORS as exc:
            log.debug("closing faulty connection to %s: %s", redact(self.location), exc)

    def _reconnect(self) -> None:
        conn = connect(self.location)
        try:
            apply_pragmas(conn, remote=self.remote)
            self._writer_pragmas(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _begin(self, conn: Any) -> None:
        """``BEGIN IMMEDIATE``; a local writer polls for the write lock (see the module docstring)."""
        if self.remote:
            conn.execute("BEGIN IMMEDIATE")
            return
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        delay = LOCK_POLL_S
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except DB_ERRORS as exc:
                if "locked" not in str(exc).lower() or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 1.5, LOCK_POLL_MAX_S)

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        conn = self._conn
        self._begin(conn)
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            rollback_quietly(conn)
            raise

    def _in_transaction(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        with self._transaction() as conn:
            return fn(conn, *args)

    def _query_sync(self, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> list[dict[str, Any]]:
        return rows_as_dicts(self._conn.execute(sql, params))


def _execute(conn: Any, sql: str, params: Sequence[Any]) -> int:
    return int(conn.execute(sql, params).rowcount)


def _execute_many(conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> int:
    return int(conn.executemany(sql, rows).rowcount)
