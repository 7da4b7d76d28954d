"""Whether a load step was held, which part of the system held it back, and the knee (pure).

Everything here works on plain figures measured by :mod:`overwatch_lab.loadtest.runner`, so the
rules are tested on made-up numbers (``tests/unit/loadtest/test_verdict.py``).

A step is **held in real time** when the simulators offered the nominal rate, the lab kept up
(its consumer lag did not grow to more than ``LAG_BEHIND_S`` of traffic, every stored message
was committed during the step), its publish → KV p99 stayed
under the threshold, and nothing was lost or discarded.

The **bottleneck** rule, first match wins (the evidence each verdict uses is in its reason):

1. ``simulator``: the simulators offered < ``OFFERED_MIN`` of the nominal rate and one of their
   processes ran at ≥ ``CPU_SATURATED_PCT`` of a core (or fell behind its clock).
2. ``client publish``: the simulators offered too little with CPU to spare, or the broker
   stored fewer messages than they published.
3. ``broker``: the nats-server process ran at ≥ ``CPU_SATURATED_PCT`` of a core.
4. with the telemetry worker's stage seconds (``decode_s``, ``db_s``, ``kv_s``): the stage with
   the largest share of the step's wall time: ``libSQL writes`` (db), ``KV writes`` (kv) or
   ``consumer`` (decode), when that share is ≥ ``STAGE_DOMINANT``;
5. ``libSQL writes``: the database write lock was busy (a probe waited more than
   ``DB_LOCK_WAIT_MS`` for it) in at least ``DB_LOCK_BUSY_SHARE`` of the probes: libSQL writers
   (the lab's, or any other) hold it most of the time; or the telemetry worker held for a
   database fault;
6. ``consumer``: a telemetry worker (or the lab process that runs it) at ≥ ``CPU_SATURATED_PCT``;
7. ``KV writes``: KV state became visible at least ``KV_GAP_MS``, and at least the history
   latency itself, later than the history row (p50s; history is written first, then KV), with
   the consumer not saturated;
8. ``consumer``: otherwise: "starved of CPU" when the whole machine was ≥ ``HOST_BUSY_PCT``
   busy (other processes took the cores), else "waiting" (lag grew, nothing saturated).

A held step gets the verdict ``none`` with the busiest resource named, for the record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

OFFERED_MIN = 0.95  # share of the nominal rate the simulators must offer
ACHIEVED_MIN = 0.95  # share of the stored messages the lab must commit (with lag drained at the end)
CPU_SATURATED_PCT = 85.0  # % of one core: a single-threaded Python or a busy broker is saturated
STAGE_DOMINANT = 0.5  # share of wall time in one stage that names it
DB_LOCK_WAIT_MS = 5.0  # ms: a probe that waited longer found the write lock busy
DB_LOCK_BUSY_SHARE = 0.5  # share of probes that found it busy: the write lock is the constraint
KV_GAP_MS = 100.0  # ms between history committed (p50) and KV visible (p50)
LAG_GROWTH_MIN = 0.05  # lag growing faster than this share of the offered rate (msgs/s) ...
LAG_BEHIND_S = 1.0  # ... and ending more than this many seconds of offered traffic behind = not keeping up
HOST_BUSY_PCT = 90.0  # % of all cores: the machine itself is full (other processes compete)
SIM_LAG_MAX_S = 1.0  # s a simulator may fall behind its clock and still offer "real time"

SIMULATOR = "simulator"
CLIENT_PUBLISH = "client publish"
BROKER = "broker"
CONSUMER = "consumer"
KV_WRITES = "KV writes"
LIBSQL_WRITES = "libSQL writes"
NONE = "none"


@dataclass(frozen=True)
class StepFigures:
    """What one step measured, as the rules read it (rates in msg/s, CPU in % of one core)."""

    devices: int
    nominal_rate: float  # what the devices should send at their configured rates
    offered_rate: float  # what the simulators published
    stored_rate: float  # what the telemetry stream accepted (the PubAck equivalent)
    achieved_rate: float  # what the telemetry worker committed and acked
    lag_slope_per_s: float  # d(consumer lag)/dt over the step (msgs/s; > 0 = falling behind)
    lag_end: int  # consumer lag at the end of the step
    kv_p99_ms: float | None
    kv_p50_ms: float | None
    history_p50_ms: float | None
    lost: int = 0  # stored but without a history row (known only after the final check)
    discarded: int = 0  # removed by the stream before the lab saw them
    sim_cpu_pct: Sequence[float] = ()
    sim_lag_s: float = 0.0
    broker_cpu_pct: float = 0.0
    worker_cpu_pct: Sequence[float] = ()  # telemetry worker processes, or the lab process running it
    stage_s: Mapping[str, float] = field(default_factory=dict)  # decode/db/kv seconds in this step
    wall_s: float = 1.0
    db_lock_p95_ms: float | None = None
    db_lock_busy_share: float | None = None  # share of write-lock probes that had to wait
    hold_reason: str | None = None
    host_cpu_pct: float | None = None  # the whole machine, % of all cores


@dataclass(frozen=True)
class Verdict:
    """The bottleneck named for a step, and why."""

    bottleneck: str
    reason: str
    evidence: dict[str, Any]


def step_problems(f: StepFigures, *, max_p99_ms: float) -> list[str]:
    """Why the step was not held in real time ([] = held)."""
    out = []
    if f.nominal_rate > 0 and f.offered_rate < OFFERED_MIN * f.nominal_rate:
        out.append(f"offered {f.offered_rate:.0f}/s < {OFFERED_MIN:.0%} of nominal {f.nominal_rate:.0f}/s")
    if f.sim_lag_s > SIM_LAG_MAX_S:
        out.append(f"simulators fell {f.sim_lag_s:.1f} s behind their clock")
    # the lag is a sawtooth of batches in flight: it counts as growing only when it also ends
    # more than LAG_BEHIND_S of traffic behind
    if (
        f.offered_rate > 0
        and f.lag_slope_per_s > LAG_GROWTH_MIN * f.offered_rate
        and f.lag_end > LAG_BEHIND_S * f.offered_rate
    ):
        out.append(f"consumer lag grew {f.lag_slope_per_s:.0f} msgs/s to {f.lag_end}")
    behind = (f.stored_rate - f.achieved_rate) * f.wall_s  # messages stored, not committed in the step
    if (
        f.stored_rate > 0
        and f.achieved_rate < ACHIEVED_MIN * f.stored_rate
        and behind > LAG_BEHIND_S * f.stored_rate
    ):
        out.append(f"committed {f.achieved_rate:.0f}/s < {ACHIEVED_MIN:.0%} of stored {f.stored_rate:.0f}/s")
    if f.kv_p99_ms is None:
        out.append("no KV latency sample")
    elif f.kv_p99_ms > max_p99_ms:
        out.append(f"publish → KV p99 {f.kv_p99_ms:.0f} ms > {max_p99_ms:.0f} ms")
    if f.lost:
        out.append(f"{f.lost} lost")
    if f.discarded:
        out.append(f"{f.discarded} discarded by the stream")
    return out


def _max(xs: Sequence[float]) -> float:
    return max(xs, default=0.0)


def bottleneck(f: StepFigures, *, held: bool) -> Verdict:
    """Name what limited the step (see the module docstring for the rule)."""
    sim_cpu, worker_cpu = _max(f.sim_cpu_pct), _max(f.worker_cpu_pct)
    shares = {k: v / f.wall_s for k, v in f.stage_s.items() if f.wall_s > 0}
    ev: dict[str, Any] = {
        "offered_rate": round(f.offered_rate, 1),
        "nominal_rate": round(f.nominal_rate, 1),
        "stored_rate": round(f.stored_rate, 1),
        "achieved_rate": round(f.achieved_rate, 1),
        "lag_slope_per_s": round(f.lag_slope_per_s, 1),
        "sim_cpu_pct_max": round(sim_cpu, 1),
        "broker_cpu_pct": round(f.broker_cpu_pct, 1),
        "worker_cpu_pct_max": round(worker_cpu, 1),
        "stage_share": {k: round(v, 3) for k, v in shares.items()},
        "db_lock_p95_ms": f.db_lock_p95_ms,
        "db_lock_busy_share": f.db_lock_busy_share,
        "kv_p50_ms": f.kv_p50_ms,
        "history_p50_ms": f.history_p50_ms,
        "hold_reason": f.hold_reason,
        "host_cpu_pct": f.host_cpu_pct,
    }
    busiest = max(
        [("simulator", sim_cpu), ("broker", f.broker_cpu_pct), ("consumer", worker_cpu)], key=lambda kv: kv[1]
    )
    if held:
        return Verdict(NONE, f"held; busiest process: {busiest[0]} at {busiest[1]:.0f}% of a core", ev)
    short = f.nominal_rate > 0 and f.offered_rate < OFFERED_MIN * f.nominal_rate
    if (short or f.sim_lag_s > SIM_LAG_MAX_S) and (
        sim_cpu >= CPU_SATURATED_PCT or f.sim_lag_s > SIM_LAG_MAX_S
    ):
        return Verdict(
            SIMULATOR,
            f"simulators offered {f.offered_rate:.0f}/s of {f.nominal_rate:.0f}/s with a process at "
            f"{sim_cpu:.0f}% of a core (behind {f.sim_lag_s:.1f} s)",
            ev,
        )
    if short:
        return Verdict(
            CLIENT_PUBLISH,
            f"simulators offered {f.offered_rate:.0f}/s of {f.nominal_rate:.0f}/s with CPU to spare "
            f"(max {sim_cpu:.0f}%)",
            ev,
        )
    if f.offered_rate > 0 and f.stored_rate < OFFERED_MIN * f.offered_rate:
        return Verdict(
            CLIENT_PUBLISH, f"the stream stored {f.stored_rate:.0f}/s of {f.offered_rate:.0f}/s published", ev
        )
    if f.broker_cpu_pct >= CPU_SATURATED_PCT:
        return Verdict(BROKER, f"nats-server at {f.broker_cpu_pct:.0f}% of a core", ev)
    if shares:
        stage, share = max(shares.items(), key=lambda kv: kv[1])
        if share >= STAGE_DOMINANT:
            name = {"db_s": LIBSQL_WRITES, "kv_s": KV_WRITES}.get(stage, CONSUMER)
            return Verdict(name, f"telemetry worker spent {share:.0%} of the step in {stage}", ev)
    if f.db_lock_busy_share is not None and f.db_lock_busy_share >= DB_LOCK_BUSY_SHARE:
        return Verdict(
            LIBSQL_WRITES,
            f"the database write lock was busy in {f.db_lock_busy_share:.0%} of the probes "
            f"(p95 wait {f.db_lock_p95_ms or 0:.0f} ms)",
            ev,
        )
    if f.hold_reason and any(w in f.hold_reason.lower() for w in ("database", "locked", "disk", "sql")):
        return Verdict(LIBSQL_WRITES, f"the telemetry worker held: {f.hold_reason}", ev)
    if worker_cpu >= CPU_SATURATED_PCT:
        return Verdict(CONSUMER, f"telemetry worker at {worker_cpu:.0f}% of a core", ev)
    gap = (
        (f.kv_p50_ms - f.history_p50_ms) if f.kv_p50_ms is not None and f.history_p50_ms is not None else None
    )
    if gap is not None and f.history_p50_ms is not None and gap >= max(KV_GAP_MS, f.history_p50_ms):
        return Verdict(
            KV_WRITES,
            f"KV visible {gap:.0f} ms after history (p50) with the consumer at {worker_cpu:.0f}%",
            ev,
        )
    if f.host_cpu_pct is not None and f.host_cpu_pct >= HOST_BUSY_PCT:
        return Verdict(
            CONSUMER,
            f"consumer starved of CPU: the machine was {f.host_cpu_pct:.0f}% busy while the telemetry "
            f"worker got {worker_cpu:.0f}% of a core (other processes compete for the cores)",
            ev,
        )
    return Verdict(
        CONSUMER, f"consumer waiting: lag grew with no resource saturated (busiest {busiest[0]})", ev
    )


def knee(steps: Sequence[tuple[int, bool]]) -> int | None:
    """The highest device count held in real time, among (devices, held) steps; None if none was."""
    held = [d for d, ok in steps if ok]
    return max(held) if held else None


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope dy/dx of (x, y) points (0 with fewer than two distinct x)."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    if sxx == 0:
        return 0.0
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx


def busy_share(waits_ms: Sequence[float]) -> float | None:
    """Share of write-lock probes that waited more than ``DB_LOCK_WAIT_MS`` (None without probes)."""
    if not waits_ms:
        return None
    return sum(1 for w in waits_ms if w > DB_LOCK_WAIT_MS) / len(waits_ms)


def percentiles(values: Sequence[float]) -> dict[str, float] | None:
    """p50/p95/p99/max (nearest rank) of ``values`` rounded to 0.1, or None when empty."""
    if not values:
        return None
    xs = sorted(values)

    def at(q: float) -> float:
        return round(xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))], 1)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(xs[-1], 1), "n": len(xs)}
