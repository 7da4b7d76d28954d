"""Run a load test: steps of simulated devices in separate processes against a lab, then the check.

:func:`run_loadtest` takes a :class:`~overwatch_lab.loadtest.plan.LoadPlan` and a lab: one it is
given (a notebook's), one it attaches to (``data_dir`` of a running lab), or one it boots in a
temporary folder (the default, with a telemetry stream large enough for the plan). Per step it
starts a new set of simulator processes (:func:`simulators.multiproc.run_scenario_processes`)
flying the load fleet scaled to the step's device count (held to the device rights: the lab
registers the step's fleet and issues one relay per organisation, ``lab.fleet.relays``, revoked
after the step; an attached lab is attached with its internal identity for that), samples once a second, waits for the
consumer lag to drain, and judges the step (:mod:`overwatch_lab.loadtest.verdict`). At the end
every telemetry message the stream stored (JetStream's acknowledgement; the simulators publish
with core NATS and ``Nats-Msg-Id``) is read back by sequence and looked up in libSQL by
``message_uid``: lost (no row, not quarantined), duplicated (more than one row).
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS

from overwatch_lab.broker.connect import connect
from overwatch_lab.config import LabConfig, MiB
from overwatch_lab.errors import ConfigError
from overwatch_lab.lab import Lab
from overwatch_lab.loadtest import verdict as V
from overwatch_lab.loadtest.losscheck import check_stored
from overwatch_lab.loadtest.plan import MESSAGES_PER_DEVICE_S, LoadPlan
from overwatch_lab.loadtest.probes import (
    DbLockProbe,
    HistoryLatency,
    KvLatency,
    ProcessSampler,
    lab_processes,
)
from overwatch_lab.protocol.subjects import STREAM_TELEMETRY
from overwatch_lab.simulation import FleetCredentials

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
STAGES = ("decode_s", "db_s", "kv_s")
BYTES_PER_MESSAGE = 640  # stored size of one load-fleet telemetry message, with margin


def _lag(stats: dict[str, Any]) -> int:
    stream = stats.get("streams", {}).get(STREAM_TELEMETRY, {})
    if stream.get("lag") is not None:
        return int(stream["lag"])
    return int(stats.get("telemetry-worker", {}).get("lag", 0))


def _telemetry_published(sim: dict[str, Any]) -> int:
    return sum(v for k, v in sim.get("by_type", {}).items() if k.isupper())


def _scenario(devices: int, factor: float) -> Any:
    from simulators.fleets.load_1000 import scaled
    from simulators.telemetry import DEFAULT_RATES_HZ

    if factor == 1.0:
        return scaled(devices)
    rates = {k: v * factor for k, v in DEFAULT_RATES_HZ.items()}
    return scaled(devices, rates=rates, tick_hz=max(10.0, max(rates.values())))


class _Step:
    """Everything one step measures while it runs."""

    def __init__(self, index: int, devices: int, factor: float, processes: int) -> None:
        self.index, self.devices, self.factor, self.processes = index, devices, factor, processes
        self.lag: list[tuple[float, int]] = []
        self.lag_rate: float | None = None
        self.sim: dict[str, Any] = {}
        self.sim_procs: ProcessSampler | None = None
        self.lab_procs: ProcessSampler | None = None
        self.kv: list[tuple[str, float, float]] = []  # (entity, device epoch s, latency ms)
        self.history: list[tuple[str, float, float]] = []
        self.offsets: dict[str, float] = {}  # entity -> its simulator's clock offset (s)
        self.go_epoch = 0.0
        self.db_lock: list[float] = []
        self.seq: tuple[int, int] = (0, 0)
        self.before: dict[str, Any] = {}
        self.after: dict[str, Any] = {}
        self.wall_s = 0.0
        self.drain_s: float | None = None
        self.hold_reason: str | None = None


class LoadTest:
    """One load test against one lab (see :func:`run_loadtest`)."""

    def __init__(self, plan: LoadPlan, lab: Lab, progress: Progress | None) -> None:
        self.plan = plan
        self.lab = lab
        self.progress = progress or (lambda line: None)
        self.nc: NATS | None = None
        self.steps: list[_Step] = []
        self.start_seq = 0

    def _say(self, line: str) -> None:
        self.progress(line)

    async def _stats(self) -> dict[str, Any]:
        return dict(await asyncio.to_thread(self.lab.stats))

    async def _last_seq(self) -> int:
        assert self.nc is not None
        info = await self.nc.jetstream().stream_info(STREAM_TELEMETRY)
        return int(info.state.last_seq)

    async def run(self, before_check: Callable[[], Awaitable[None] | None] | None = None) -> dict[str, Any]:
        """Run every step, then the final check; return the result (plain data)."""
        lab = self.lab
        self.nc = await connect(lab.nats_url, auth=lab.nats_auth, name="overwatch-lab-loadtest")
        try:
            self.start_seq = await self._last_seq()
            plan_steps = self.plan.steps()
            for i, (devices, factor) in enumerate(plan_steps):
                step = await self._run_step(i, len(plan_steps), devices, factor)
                self.steps.append(step)
                problems = V.step_problems(self._figures(step, {}), max_p99_ms=self.plan.max_p99_ms)
                self._say(
                    f"step {i + 1}/{len(plan_steps)} {devices} devices x{factor:g}: "
                    + ("held" if not problems else "NOT held: " + "; ".join(problems))
                )
                if problems and self.plan.mode == "ramp" and self.plan.stop_on_failure:
                    break
            if before_check is not None:
                maybe = before_check()
                if maybe is not None:
                    await maybe
            check = await self._check()
        finally:
            await self.nc.drain()
        return self._result(check)

    # ------------------------------------------------------------------ one step
    async def _run_step(self, i: int, n: int, devices: int, factor: float) -> _Step:
        from simulators.multiproc import run_scenario_processes

        assert self.nc is not None
        plan = self.plan
        step = _Step(i, devices, factor, plan.processes_for(devices))
        sc = _scenario(devices, factor)
        ids = [d[0] for d in sc.devices()]
        k = min(plan.sample_entities, len(ids))
        sampled = [ids[round(j * len(ids) / k)] for j in range(k)]
        kv = KvLatency(self.nc, sampled)
        await kv.start()
        stop = asyncio.Event()
        hist = HistoryLatency(self.lab.db_url, sampled)
        lock = DbLockProbe(self.lab.db_url)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(hist.run(stop), name="loadtest:history")
            tg.create_task(lock.run(stop), name="loadtest:db-lock")
            try:
                await self._drive(step, sc, run_scenario_processes, n)
            finally:
                await kv.stop()
                stop.set()
        step.kv, step.history, step.db_lock = kv.take(), hist.take(), lock.take()
        return step

    async def _drive(self, step: _Step, sc: Any, start: Any, n: int) -> None:
        # the simulated devices are held to the device rights: one relay per organisation
        creds = await asyncio.to_thread(self.lab.fleet.relays, sc)
        try:
            await self._drive_with(step, sc, start, n, creds)
        finally:
            await asyncio.to_thread(self.lab.fleet.release, creds)

    async def _drive_with(self, step: _Step, sc: Any, start: Any, n: int, creds: FleetCredentials | None) -> None:
        plan = self.plan
        step.before = await self._stats()
        seq0 = await self._last_seq()
        handle = await start(
            sc,
            self.lab.nats_url,
            auth=creds.by_org if creds is not None else self.lab.nats_auth,
            processes=step.processes,
            speed=1.0,
            duration_s=plan.step_s,
            register_timeout_s=plan.register_timeout_s,
            registered=creds is not None,
        )
        t0 = time.monotonic()
        step.go_epoch = float(handle.start_epoch_s or time.time())
        waiter = asyncio.ensure_future(handle.wait())
        try:
            own = int(self.lab.connection_info().get("pid") or os.getpid())
            step.lab_procs = ProcessSampler(lab_processes(step.before, own, set(handle.pids)), host=True)
            step.sim_procs = ProcessSampler(
                [("simulator", f"sim-{j}", pid) for j, pid in enumerate(handle.pids)]
            )
            while not waiter.done():
                await asyncio.wait({waiter}, timeout=1.0)
                stats = await self._stats()
                t = time.monotonic() - t0
                step.lag.append((t, _lag(stats)))
                step.sim_procs.sample()
                step.lab_procs.sample()
                tw = stats.get("telemetry-worker", {})
                if tw.get("holding"):
                    step.hold_reason = str(tw.get("hold_reason"))
                self._say(self._line(step, n, t, handle.stats(), stats))
            step.sim = waiter.result()
            workers = step.sim.get("workers", [])
            for m, eid in enumerate(d[0] for d in sc.devices()):  # device m runs in worker m % processes
                if workers:
                    step.offsets[eid] = float(workers[m % len(workers)].get("clock_offset_s") or 0.0)
        finally:
            if not waiter.done():
                waiter.cancel()
                await handle.stop()
        step.seq = (seq0, 0)
        step.wall_s = max((w.get("run_wall_s") or 0.0 for w in step.sim.get("workers", [])), default=0.0) or (
            time.monotonic() - t0
        )
        step.after = await self._stats()
        step.seq = (step.seq[0], await self._last_seq())
        step.lag_rate = step.after.get("streams", {}).get(STREAM_TELEMETRY, {}).get("lag_rate_per_s")
        t_drain = time.monotonic()
        deadline = t_drain + plan.drain_timeout_s
        while time.monotonic() < deadline:
            stats = await self._stats()
            if _lag(stats) == 0 and stats["telemetry-worker"]["acked"] + stats["telemetry-worker"][
                "quarantined"
            ] - step.before["telemetry-worker"]["acked"] - step.before["telemetry-worker"]["quarantined"] >= (
                step.seq[1] - step.seq[0]
            ):
                step.drain_s = round(time.monotonic() - t_drain, 2)
                break
            await asyncio.sleep(0.2)

    def _line(self, step: _Step, n: int, t: float, sim: dict[str, Any], stats: dict[str, Any]) -> str:
        tw, tw0 = stats.get("telemetry-worker", {}), step.before.get("telemetry-worker", {})
        acked = tw.get("acked", 0) - tw0.get("acked", 0)
        lag = _lag(stats)
        rate = stats.get("streams", {}).get(STREAM_TELEMETRY, {}).get("lag_rate_per_s")
        cpu = {
            s.role: s.cpu_pct[-1]
            for s in (step.lab_procs.series if step.lab_procs else [])
            if s.cpu_pct and s.role in ("broker", "lab")
        }
        sim_cpu = (
            max((s.cpu_pct[-1] for s in step.sim_procs.series if s.cpu_pct), default=0.0)
            if step.sim_procs
            else 0.0
        )
        return (
            f"[{step.index + 1}/{n}] {step.devices} dev x{step.factor:g} t={t:5.1f}s "
            f"offered {_telemetry_published(sim) / max(t, 1e-9):7,.0f}/s achieved {acked / max(t, 1e-9):7,.0f}/s "
            f"lag {lag:,} ({'?' if rate is None else f'{rate:+,.0f}'}/s) "
            f"cpu broker {cpu.get('broker', 0):.0f}% lab {cpu.get('lab', 0):.0f}% sim {sim_cpu:.0f}%"
        )

    # ------------------------------------------------------------------ figures
    def _steady(
        self, step: _Step, samples: list[tuple[str, float, float]], warmup: bool = True
    ) -> list[float]:
        """Latencies (ms, corrected by the simulator's clock offset) of messages sent after the warm-up."""
        cut = step.go_epoch + (self.plan.effective_warmup_s if warmup else 0.0)
        out = []
        for eid, ts, ms in samples:
            off = step.offsets.get(eid, 0.0)
            if ts + off >= cut:
                out.append(ms - off * 1000.0)
        return out

    def _figures(self, step: _Step, lost: dict[int, int]) -> V.StepFigures:
        b, a = step.before.get("telemetry-worker", {}), step.after.get("telemetry-worker", {})
        wall = max(step.wall_s, 1e-9)
        published = _telemetry_published(step.sim)
        stored = step.seq[1] - step.seq[0]
        # achieved: what the lab committed of this step's messages per second of the step
        # (messages committed while draining after the step count, but not the drain time)
        achieved = (a.get("acked", 0) - b.get("acked", 0)) / wall
        lag_slope = V.slope([(t, float(x)) for t, x in step.lag[len(step.lag) // 2 :]])
        kv = V.percentiles(self._steady(step, step.kv))
        hist = V.percentiles(self._steady(step, step.history))
        lock = V.percentiles(step.db_lock)
        sim_lag = max((w.get("max_lag_s") or 0.0 for w in step.sim.get("workers", [])), default=0.0)
        lab_series = step.lab_procs.series if step.lab_procs else []
        cpu = {s.pid: (sum(s.cpu_pct) / len(s.cpu_pct) if s.cpu_pct else 0.0) for s in lab_series}
        workers = [cpu[s.pid] for s in lab_series if s.role == "telemetry-worker"] or [
            cpu[s.pid] for s in lab_series if s.role == "lab"
        ]
        tw_after, tw_before = step.after.get("telemetry-worker", {}), step.before.get("telemetry-worker", {})
        stages = {
            k: float(tw_after.get(k, 0.0) or 0.0) - float(tw_before.get(k, 0.0) or 0.0)
            for k in STAGES
            if k in tw_after
        }
        return V.StepFigures(
            devices=step.devices,
            nominal_rate=step.devices * step.factor * MESSAGES_PER_DEVICE_S,
            offered_rate=published / wall,
            stored_rate=stored / wall,
            achieved_rate=achieved if step.drain_s is not None else min(achieved, stored / wall),
            lag_slope_per_s=lag_slope,
            lag_end=step.lag[-1][1] if step.lag else 0,
            kv_p99_ms=kv["p99"] if kv else None,
            kv_p50_ms=kv["p50"] if kv else None,
            history_p50_ms=hist["p50"] if hist else None,
            lost=lost.get(step.index, 0),
            discarded=self._delta(step, "discarded"),
            sim_cpu_pct=[
                sum(s.cpu_pct) / len(s.cpu_pct)
                for s in (step.sim_procs.series if step.sim_procs else [])
                if s.cpu_pct
            ],
            sim_lag_s=sim_lag,
            broker_cpu_pct=max((cpu[s.pid] for s in lab_series if s.role == "broker"), default=0.0),
            worker_cpu_pct=workers,
            stage_s=stages,
            wall_s=wall,
            db_lock_p95_ms=lock["p95"] if lock else None,
            db_lock_busy_share=V.busy_share(step.db_lock),
            hold_reason=step.hold_reason,
            host_cpu_pct=(sum(h) / len(h))
            if (h := step.lab_procs.host_cpu_pct if step.lab_procs else [])
            else None,
        )

    @staticmethod
    def _delta(step: _Step, key: str) -> int:
        a = step.after.get("streams", {}).get(STREAM_TELEMETRY, {}).get(key, 0) or 0
        b = step.before.get("streams", {}).get(STREAM_TELEMETRY, {}).get(key, 0) or 0
        return int(a) - int(b)

    # ------------------------------------------------------------------ the final check
    async def _check(self) -> dict[str, Any]:
        """Wait for the lab to drain, then check every stored message against libSQL."""
        assert self.nc is not None
        end_seq = await self._last_seq()
        deadline = time.monotonic() + self.plan.drain_timeout_s
        while time.monotonic() < deadline:
            if _lag(await self._stats()) == 0:
                break
            await asyncio.sleep(0.2)
        steps = {st.index: st.seq for st in self.steps}
        return await check_stored(self.nc, self.lab, self.start_seq + 1, end_seq, steps)

    # ------------------------------------------------------------------ the result
    def _result(self, check: dict[str, Any]) -> dict[str, Any]:
        steps = []
        first_failed: dict[str, Any] | None = None
        for st in self.steps:
            f = self._figures(st, check["per_step_lost"])
            problems = V.step_problems(f, max_p99_ms=self.plan.max_p99_ms)
            v = V.bottleneck(f, held=not problems)
            procs = (st.lab_procs.summaries() if st.lab_procs else []) + (
                st.sim_procs.summaries() if st.sim_procs else []
            )
            row: dict[str, Any] = {
                "devices": st.devices,
                "rate_factor": st.factor,
                "sim_processes": st.processes,
                "wall_s": round(st.wall_s, 2),
                "nominal_rate": round(f.nominal_rate, 1),
                "offered_rate": round(f.offered_rate, 1),
                "stored_rate": round(f.stored_rate, 1),
                "achieved_rate": round(f.achieved_rate, 1),
                "published": _telemetry_published(st.sim),
                "stored": st.seq[1] - st.seq[0],
                "lag_end": f.lag_end,
                "lag_slope_per_s": round(f.lag_slope_per_s, 1),
                "lag_rate_per_s": st.lag_rate,
                "lag_series": st.lag,
                "drain_s": st.drain_s,
                "kv_latency_ms": V.percentiles(self._steady(st, st.kv)),
                "history_latency_ms": V.percentiles(self._steady(st, st.history)),
                "kv_latency_all_ms": V.percentiles(self._steady(st, st.kv, warmup=False)),
                "history_latency_all_ms": V.percentiles(self._steady(st, st.history, warmup=False)),
                "sim_clock_offset_s": sorted({round(o, 4) for o in st.offsets.values()}),
                "db_write_lock_ms": V.percentiles(st.db_lock),
                "db_write_lock_busy_share": V.busy_share(st.db_lock),
                "stage_s": dict(f.stage_s),
                "lost": f.lost,
                "discarded": f.discarded,
                "quarantined": int(st.after.get("telemetry-worker", {}).get("quarantined", 0))
                - int(st.before.get("telemetry-worker", {}).get("quarantined", 0)),
                "sim_max_lag_s": f.sim_lag_s,
                "host_cpu_pct": None if f.host_cpu_pct is None else round(f.host_cpu_pct, 1),
                "processes": procs,
                "held": not problems,
                "problems": problems,
                "verdict": {"bottleneck": v.bottleneck, "reason": v.reason, "evidence": v.evidence},
            }
            steps.append(row)
            if problems and first_failed is None:
                first_failed = row
        knee = V.knee([(s["devices"], s["held"]) for s in steps])
        final = first_failed or (steps[-1] if steps else None)
        return {
            "loadtest": 1,
            "mode": self.plan.mode,
            "plan": self.plan.to_dict(),
            "lab": {"embedded_here": self.lab.owner, "data_dir": str(self.lab.config.data_dir)},
            "cpu_count": os.cpu_count(),
            "loadavg": list(os.getloadavg()),
            "steps": steps,
            "knee_devices": knee,
            "knee_rate": max((s["offered_rate"] for s in steps if s["held"]), default=None),
            "bottleneck": final["verdict"] if final else None,
            "check": check,
            "sampling": {
                "kv": "core subscription on $KV.CONSTELLATION_GLOBAL_STATE.<entity> for the sampled "
                "entities; latency = arrival − the document's last_seen (newest device timestamp applied): "
                "how old the newest state is when it becomes visible, one sample per KV write",
                "history": "poll of libSQL every 50 ms for new rows of the sampled entities (primary-key "
                "range); latency = poll time − row ts (upper bound by one poll)",
                "db_write_lock": "BEGIN IMMEDIATE; ROLLBACK on the lab database every 0.25 s; busy = waited > 5 ms",
                "processes": "psutil cpu_percent (of one core) and RSS once a second",
                "loss": "every message the telemetry stream stored since the start, read back by sequence "
                "(headers only, Nats-Msg-Id = message_uid), looked up in libSQL; quarantined uids excluded",
            },
        }


def _embedded_config(plan: LoadPlan, data_dir: Path) -> LabConfig:
    cfg = LabConfig(data_dir=data_dir)
    if plan.workers is not None:
        cfg = cfg.replace(workers=plan.workers)
    limits = cfg.streams[STREAM_TELEMETRY]
    want = round(plan.expected_messages() * 1.5)
    if want > limits.max_msgs or want * BYTES_PER_MESSAGE > limits.max_bytes:
        cfg = cfg.with_stream_limits(
            STREAM_TELEMETRY,
            max_msgs=max(want, limits.max_msgs),
            max_bytes=max(want * BYTES_PER_MESSAGE, limits.max_bytes, 256 * MiB),
        )
    return cfg


async def run_loadtest(
    plan: LoadPlan,
    *,
    lab: Lab | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    before_check: Callable[[], Awaitable[None] | None] | None = None,
) -> dict[str, Any]:
    """Run ``plan`` against a lab and return the result (plain data; see :mod:`.report` to write it).

    Args:
        plan: the steps and thresholds.
        lab: a running lab to load (a notebook's); it is left running.
        data_dir: else, the data dir of a lab running in another process (attached, left running).
        progress: called with one line about once a second (e.g. ``print`` to stderr).
        before_check: called after the last step, before the loss check (tests use it).

    Raises:
        ConfigError: both ``lab`` and ``data_dir``, or no lab runs in ``data_dir``.
    """
    if lab is not None and data_dir is not None:
        raise ConfigError("give a lab or a data_dir, not both")
    if lab is not None:
        return await LoadTest(plan, lab, progress).run(before_check)
    if data_dir is not None:
        # internal: the load test registers each step's fleet, issues its relays and reads the
        # streams' state ($JS.API), which an observer may not; it reads lab.json (0600)
        attached = await asyncio.to_thread(partial(Lab.attach, data_dir, identity="internal"))
        try:
            return await LoadTest(plan, attached, progress).run(before_check)
        finally:
            await asyncio.to_thread(attached.down)
    with tempfile.TemporaryDirectory(prefix="overwatch-loadtest-") as tmp:
        own = Lab(_embedded_config(plan, Path(tmp)))
        await own.start()
        try:
            return await LoadTest(plan, own, progress).run(before_check)
        finally:
            await own.stop()
