"""What the load test watches while a step runs: latency samples, a write-lock probe, CPU and RSS.

- :class:`KvLatency`: publish → KV visible. A core subscription on
  ``$KV.CONSTELLATION_GLOBAL_STATE.<entity>`` for each *sampled* entity (the same message a KV
  watcher receives, filtered by the server so the load test does not decode every entity's
  writes). Each document's ``last_seen`` is the newest device timestamp applied; latency =
  arrival time − that timestamp.

Samples are ``(entity_id, device epoch s, latency ms)``; the runner corrects them by the
simulator's ``clock_offset_s`` (its device clock trails the wall clock by the registration time).
- :class:`HistoryLatency`: publish → history row committed. Polls libSQL every
  ``HISTORY_POLL_S`` for rows of the sampled entities with a higher ``id`` than seen; latency =
  the poll that first saw the row − its device ``ts``. An upper bound, by up to one poll interval.
- :class:`DbLockProbe`: four times a second ``BEGIN IMMEDIATE; ROLLBACK`` on the lab's database
  file; the time to get the write lock is what every libSQL writer waits for.
- :class:`ProcessSampler`: CPU % (of one core) and RSS of each process with psutil.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

import psutil
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from overwatch_lab.protocol.envelopes import parse_timestamp
from overwatch_lab.protocol.subjects import KV_GLOBAL_STATE

log = logging.getLogger(__name__)

HISTORY_POLL_S = 0.05  # s between history polls (the resolution of the history latency)
DB_PROBE_EVERY_S = 0.25  # s between write-lock probes
DB_PROBE_TIMEOUT_S = 10.0  # s the probe waits for the lock at most


def _epoch(ts: str) -> float | None:
    try:
        return parse_timestamp(ts, "last_seen")[1]
    except Exception:  # a document without a usable last_seen is not a sample
        return None


class KvLatency:
    """Collects publish → KV visible latencies (ms) of the sampled entities."""

    def __init__(self, nc: NATS, entities: list[str]) -> None:
        self.nc = nc
        self.entities = entities
        self.samples: list[tuple[str, float, float]] = []  # (entity, device epoch s, latency ms)
        self._subs: list[Subscription] = []
        self._last: dict[str, str] = {}

    async def start(self) -> None:
        """Subscribe to the sampled entities' KV subjects."""
        for eid in self.entities:
            self._subs.append(await self.nc.subscribe(f"$KV.{KV_GLOBAL_STATE}.{eid}", cb=self._on_msg))

    async def _on_msg(self, msg: Msg) -> None:
        now = time.time()
        try:
            doc = json.loads(msg.data)
        except ValueError:
            return
        seen = doc.get("last_seen") if isinstance(doc, dict) else None
        if not isinstance(seen, str) or self._last.get(msg.subject) == seen:
            return  # not a telemetry write (or nothing new for telemetry)
        self._last[msg.subject] = seen
        t = _epoch(seen)
        if t is not None:
            self.samples.append((msg.subject.rsplit(".", 1)[-1], t, (now - t) * 1000.0))

    def take(self) -> list[tuple[str, float, float]]:
        """Return the samples so far and start a new list."""
        out, self.samples = self.samples, []
        return out

    async def stop(self) -> None:
        """Unsubscribe."""
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs.clear()


class HistoryLatency:
    """Polls the lab's database for the sampled entities' new history rows (ms latencies)."""

    def __init__(self, db_path: str, entities: list[str]) -> None:
        self.db_path = db_path
        self.entities = entities
        self.samples: list[tuple[str, float, float]] = []  # (entity, device epoch s, latency ms)
        self._last_id = 0
        self._conn: sqlite3.Connection | None = None

    def _poll(self) -> None:
        if self._conn is None:
            self._conn = sqlite3.connect(
                f"file:{self.db_path}?mode=ro", uri=True, timeout=5.0, check_same_thread=False
            )
            row = self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM telemetry").fetchone()
            self._last_id = int(row[0])
            return
        top = int(self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM telemetry").fetchone()[0])
        if top <= self._last_id:
            return
        marks = ",".join("?" * len(self.entities))
        # a range of the primary key, filtered: only the rows committed since the last poll are read
        rows = self._conn.execute(
            f"SELECT entity_id, ts FROM telemetry WHERE id > ? AND id <= ? AND entity_id IN ({marks})",
            (self._last_id, top, *self.entities),
        ).fetchall()
        now = time.time()
        self._last_id = top
        self.samples.extend((str(e), float(ts), (now - float(ts)) * 1000.0) for e, ts in rows)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set."""
        try:
            while not stop.is_set():
                await asyncio.to_thread(self._poll)
                try:
                    async with asyncio.timeout(HISTORY_POLL_S):
                        await stop.wait()
                except TimeoutError:
                    pass
        finally:
            if self._conn is not None:
                self._conn.close()

    def take(self) -> list[tuple[str, float, float]]:
        """Return the samples so far and start a new list."""
        out, self.samples = self.samples, []
        return out


class DbLockProbe:
    """Measures how long a writer waits for the lab database's write lock (ms), every ``DB_PROBE_EVERY_S``."""

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        self.samples: list[float] = []

    def _probe(self) -> None:
        conn = sqlite3.connect(self.db_path, timeout=DB_PROBE_TIMEOUT_S, isolation_level=None)
        try:
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            waited = (time.perf_counter() - t0) * 1000.0
            conn.execute("ROLLBACK")
            self.samples.append(waited)
        except sqlite3.OperationalError as exc:  # still locked after the timeout: that is a sample too
            log.info("write-lock probe: %s", exc)
            self.samples.append(DB_PROBE_TIMEOUT_S * 1000.0)
        finally:
            conn.close()

    async def run(self, stop: asyncio.Event) -> None:
        """Probe until ``stop`` is set."""
        while not stop.is_set():
            await asyncio.to_thread(self._probe)
            try:
                async with asyncio.timeout(DB_PROBE_EVERY_S):
                    await stop.wait()
            except TimeoutError:
                pass

    def take(self) -> list[float]:
        """Return the samples so far and start a new list."""
        out, self.samples = self.samples, []
        return out


@dataclass
class ProcSeries:
    """CPU and RSS samples of one process."""

    role: str
    name: str
    pid: int
    cpu_pct: list[float]
    rss_mb: list[float]

    def summary(self) -> dict[str, Any]:
        """Mean and max CPU (% of one core), max RSS (MB) and the RSS slope (MB/min)."""
        from overwatch_lab.loadtest.verdict import slope

        cpu = self.cpu_pct
        rss = self.rss_mb
        return {
            "role": self.role,
            "name": self.name,
            "pid": self.pid,
            "cpu_pct_mean": round(sum(cpu) / len(cpu), 1) if cpu else None,
            "cpu_pct_max": round(max(cpu), 1) if cpu else None,
            "rss_mb_max": round(max(rss), 1) if rss else None,
            "rss_mb_per_min": round(slope(list(enumerate(rss))) * 60, 2) if len(rss) > 2 else None,
        }


class ProcessSampler:
    """Samples CPU % and RSS of a set of processes (role, name, pid) with psutil."""

    def __init__(self, procs: list[tuple[str, str, int]], *, host: bool = False) -> None:
        self.host = host  # also sample the whole machine (one sampler per process should: psutil
        # measures the machine since its own previous call, whoever made it)
        self.host_cpu_pct: list[float] = []  # the whole machine, % of all cores
        if host:
            psutil.cpu_percent(None)
        self.series: list[ProcSeries] = []
        self._ps: list[psutil.Process | None] = []
        for role, name, pid in procs:
            try:
                p: psutil.Process | None = psutil.Process(pid)
                assert p is not None
                p.cpu_percent(None)  # the first call starts the interval
            except psutil.Error:
                p = None
            self.series.append(ProcSeries(role, name, pid, [], []))
            self._ps.append(p)

    def sample(self) -> None:
        """Take one sample of every process (a gone process is skipped) and of the machine."""
        if self.host:
            self.host_cpu_pct.append(psutil.cpu_percent(None))
        for s, p in zip(self.series, self._ps, strict=True):
            if p is None:
                continue
            try:
                s.cpu_pct.append(p.cpu_percent(None))
                s.rss_mb.append(p.memory_info().rss / 2**20)
            except psutil.Error:
                continue

    def summaries(self) -> list[dict[str, Any]]:
        """One summary per process."""
        return [s.summary() for s in self.series]


def lab_processes(stats: dict[str, Any], lab_pid: int, exclude: set[int]) -> list[tuple[str, str, int]]:
    """The lab's processes as (role, name, pid): ``stats["processes"]`` when the lab lists them.

    Otherwise the lab's own pid and its children: ``nats-server`` is the broker, other
    children not in ``exclude`` (the simulators, when the lab runs in this process) are
    listed as ``telemetry-worker`` if their command line says so, else ``other``.
    """
    listed = stats.get("processes")
    if isinstance(listed, list) and listed:
        return [(str(p["role"]), str(p.get("name", p["role"])), int(p["pid"])) for p in listed]
    out = [("lab", "lab", lab_pid)]
    try:
        children = psutil.Process(lab_pid).children(recursive=False)
    except psutil.Error:
        return out
    for c in children:
        if c.pid in exclude:
            continue
        try:
            name = c.name()
            cmd = " ".join(c.cmdline())
        except psutil.Error:
            continue
        if name.startswith("nats-server"):
            out.append(("broker", "nats-server", c.pid))
        elif "worker" in cmd:
            out.append(("telemetry-worker", name, c.pid))
        elif "multiprocessing" in cmd or "spawn" in cmd:
            continue  # e.g. a resource tracker
        else:
            out.append(("other", name, c.pid))
    return out
