"""WAL checkpoints off the hot path: one owned task copies the WAL into the database file.

SQLite's default checkpoints in whichever connection's COMMIT makes the WAL pass 1,000 pages, so
a telemetry worker's commit now and then also copies the WAL back into the database and syncs
it. Measured on this machine (the lab's rows in batches of 130, two cores shared with other
work): such checkpoints take 160-420 ms, and commits with them p50/p95/p99 2.5-5.6 / 53-61 /
95-97 ms; with the writers' autocheckpoint off and a passive checkpoint on another connection
once a second, 1.2 / 17-25 / 27-39 ms. A publish → KV write waits for its batch's commit, so
those spikes were the latency's tail.

So in a lab every local writer (the lab's and its worker processes') runs with
``wal_autocheckpoint=0`` (``Store(..., autocheckpoint=False)``) and the lab process runs one
:class:`Checkpointer`: every ``period_s`` a ``PRAGMA wal_checkpoint(PASSIVE)`` on a connection
of its own, on a thread of its own. A passive checkpoint takes no lock a writer waits for: it
copies what no reader still needs and leaves the rest for the next round. The connection is
opened for each round and closed after it, so the checkpointer never keeps the file open (a
read-only remount needs it closed: see :mod:`.writer`). A failed round (disk full, read-only,
I/O error) is counted and logged once per episode; the next round tries again, and SQLite's
close-time checkpoint still runs when the lab's store closes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from overwatch_lab.store.connection import DB_ERRORS, connect, redact

log = logging.getLogger(__name__)


@dataclass(slots=True)
class CheckpointStats:
    """What the checkpointer did (``lab.stats()["checkpoints"]``).

    Attributes:
        rounds: checkpoints run; failed: of which raised.
        wal_frames: frames in the WAL after the last round; copied: of which were copied.
        last_s / max_s: the last and the longest round (s).
        last_error: why the last failed round failed (None once one succeeds again).
    """

    rounds: int = 0
    failed: int = 0
    wal_frames: int = 0
    copied: int = 0
    last_s: float = 0.0
    max_s: float = 0.0
    last_error: str | None = None

    def snapshot(self) -> dict[str, Any]:
        """The counters as a dict."""
        return asdict(self)


class Checkpointer:
    """Run ``PRAGMA wal_checkpoint(PASSIVE)`` on ``location`` every ``period_s`` (module docstring).

    Args:
        location: the local database file.
        period_s: seconds between two rounds (> 0).
    """

    def __init__(self, location: str, period_s: float) -> None:
        if period_s <= 0:
            raise ValueError(f"period_s must be > 0, got {period_s}")
        self.location = location
        self.period_s = period_s
        self.stats = CheckpointStats()
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        """Make :meth:`run` return (after the round running now, if any)."""
        self._stop.set()

    def checkpoint(self) -> None:
        """One round, on the calling thread (``run`` calls it on its own)."""
        st = self.stats
        started = time.perf_counter()
        try:
            conn = connect(self.location)
            try:
                row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            finally:
                conn.close()
        except DB_ERRORS as exc:
            st.failed += 1
            if st.last_error is None:
                log.warning("WAL checkpoint of %s failed (retried every %g s): %s",
                            redact(self.location), self.period_s, exc)  # fmt: skip
            st.last_error = str(exc)
            return
        finally:
            elapsed = time.perf_counter() - started
            st.rounds += 1
            st.last_s = elapsed
            st.max_s = max(st.max_s, elapsed)
        if st.last_error is not None:
            log.info("WAL checkpoints of %s work again", redact(self.location))
            st.last_error = None
        if row is not None:  # (busy, frames in the WAL, frames copied); -1 when not in WAL mode
            st.wal_frames, st.copied = max(int(row[1]), 0), max(int(row[2]), 0)

    async def run(self, ready: asyncio.Event) -> None:
        """Checkpoint every ``period_s`` until :meth:`request_stop` (or cancelled); sets ``ready`` at once."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="overwatch-checkpoint")
        loop = asyncio.get_running_loop()
        ready.set()
        try:
            while not self._stop.is_set():
                try:
                    async with asyncio.timeout(self.period_s):
                        await self._stop.wait()
                    break
                except TimeoutError:
                    pass
                await loop.run_in_executor(executor, self.checkpoint)
        finally:
            executor.shutdown(wait=False)  # a round still running ends by itself (a thread can't be stopped)
