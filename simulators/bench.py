"""Measure how many devices the simulator drives in real time: ``python -m simulators.bench``.

Three measurements, printed as they finish and written to a JSON file:

1. ``dry``: the model alone (no NATS) for the load fleet: messages built per CPU second, and
   the devices one core could drive if it did nothing else.
2. ``single``: the load-fleet mix at increasing sizes in ONE worker process, at speed 1,
   publishing to a real nats-server (started here, streams provisioned as a lab would). A size
   keeps real time when the worker ends on time (final lag < ``MAX_LAG_S``) and never fell more
   than a second behind. ``capacity_one_process`` is the largest size that kept it (the sweep
   stops after two sizes in a row that did not).
3. ``multi``: 1,000 devices (``--devices``) split over ``--processes`` worker processes.

The broker runs on the same machine, so it competes for the same cores: the figures are what
this machine can do with a lab-like broker beside the simulator, not a simulator-only limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from overwatch_lab.config import LabConfig
from overwatch_lab.nats_auth import NatsAuth
from overwatch_lab.protocol.subjects import STREAM_TELEMETRY
from simulators.fleets.load_1000 import MESSAGES_PER_DEVICE_S, scaled
from simulators.model import FleetModel

log = logging.getLogger("simulators.bench")

SIZES = (250, 500, 750, 1000, 1250, 1500)  # devices per process tried in the single-process sweep
TRIAL_S = 15.0  # s of simulated (= wall) time per trial
MAX_LAG_S = 0.5  # s: a run keeps real time if it ends less than this behind
SETTLE_TIMEOUT_S = 30.0  # s allowed for the broker to store its backlog after a trial
DRY_DEVICES = 1000
DRY_SECONDS = 5.0


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def measure_dry(devices: int = DRY_DEVICES, seconds: float = DRY_SECONDS) -> dict[str, Any]:
    """Step the load fleet without NATS; return build/step throughput."""
    sc = scaled(devices)
    t0 = time.process_time()
    model = FleetModel(sc)
    build_s = time.process_time() - t0
    model.start()
    n = 0
    t0 = time.process_time()
    for _ in range(round(seconds * sc.tick_hz)):
        n += len(model.step())
    cpu = time.process_time() - t0
    return {
        "devices": devices,
        "sim_s": seconds,
        "build_cpu_s": round(build_s, 3),
        "cpu_s": round(cpu, 3),
        "messages": n,
        "msgs_per_cpu_s": round(n / cpu),
        "realtime_factor": round(seconds / cpu, 2),
        "devices_per_core": round(devices * seconds / cpu),
    }


async def _trial(
    url: str, auth: NatsAuth, devices: int, processes: int, seconds: float, js: Any
) -> dict[str, Any]:
    from simulators.multiproc import run_scenario_processes

    before = (await js.stream_info(STREAM_TELEMETRY)).state.last_seq
    sc = scaled(devices)
    handle = await run_scenario_processes(
        sc, url, auth=auth, processes=processes, speed=1.0, duration_s=seconds
    )
    t0 = time.monotonic()
    async with asyncio.timeout(seconds * 4 + 60):
        stats = await handle.wait()
    wall = time.monotonic() - t0
    telemetry = sum(v for k, v in stats["by_type"].items() if k.isupper())
    # the broker may still be storing a backlog: wait (bounded) until it has everything
    settle_start = time.monotonic()
    after = before
    while time.monotonic() - settle_start < SETTLE_TIMEOUT_S:
        after = (await js.stream_info(STREAM_TELEMETRY)).state.last_seq
        if after - before >= telemetry:
            break
        await asyncio.sleep(0.2)
    settle_s = time.monotonic() - settle_start
    workers = stats["workers"]
    # a worker's own run time (start of stepping to the last tick) against the simulated time
    final_lag = max(0.0, max(w["run_wall_s"] for w in workers) - seconds)
    kept = final_lag < MAX_LAG_S and stats["behind_count"] == 0
    utils = [w["cpu_s"] / w["run_wall_s"] for w in workers if w.get("run_wall_s")]
    return {
        "devices": devices,
        "processes": processes,
        "seconds": seconds,
        "wall_s": round(wall, 2),  # including process start-up and shutdown
        "final_lag_s": round(final_lag, 3),
        "max_lag_s": stats["max_lag_s"],
        "behind_count": stats["behind_count"],
        "telemetry_published": telemetry,
        "telemetry_expected": round(devices * MESSAGES_PER_DEVICE_S * seconds),
        "telemetry_stored": after - before,
        "broker_settle_s": round(settle_s, 2),
        "msgs_per_s": round(telemetry / seconds),
        "cpu_util_per_worker": [
            round(w["cpu_s"] / w["run_wall_s"], 2) for w in workers if w.get("run_wall_s")
        ],
        "kept_real_time": kept,
        # the worker's own cost: how many devices a whole core would drive at this per-device cost
        "devices_per_core_estimate": round(devices / processes / max(utils)) if utils else None,
    }


async def measure_live(args: argparse.Namespace) -> dict[str, Any]:
    """Start a nats-server, provision the lab's streams, run the single and multi trials."""
    from overwatch_lab.broker.connect import connect
    from overwatch_lab.broker.process import NatsServer
    from overwatch_lab.broker.provision import provision

    results: dict[str, Any] = {"single": []}
    with tempfile.TemporaryDirectory(prefix="sim-bench-") as tmp:
        server = NatsServer(Path(tmp) / "nats")
        await server.start()
        try:
            nc = await connect(server.url, auth=server.auth, name="sim-bench")
            js = nc.jetstream()
            await provision(js, LabConfig(data_dir=Path(tmp)))
            capacity = 0
            misses = 0
            for n in args.sizes:
                r = await _trial(server.url, server.auth, n, 1, args.seconds, js)
                results["single"].append(r)
                _out(
                    f"single process {n:5d} devices: {r['msgs_per_s']:6d} msg/s, final lag {r['final_lag_s']:.2f} s, "
                    f"cpu {r['cpu_util_per_worker']}, stored {r['telemetry_stored']}/{r['telemetry_published']} "
                    f"(+{r['broker_settle_s']} s), ~{r['devices_per_core_estimate']} devices/core "
                    f"-> {'real time' if r['kept_real_time'] else 'BEHIND'}"
                )
                if r["kept_real_time"]:
                    capacity = max(capacity, n)
                    misses = 0
                else:
                    misses += 1
                    if misses == 2:  # two sizes in a row behind: larger ones will be too
                        break
            results["capacity_one_process"] = capacity
            r = await _trial(server.url, server.auth, args.devices, args.processes, args.seconds, js)
            results["multi"] = r
            _out(
                f"{args.processes} processes {args.devices} devices: {r['msgs_per_s']} msg/s, final lag "
                f"{r['final_lag_s']:.2f} s, cpu {r['cpu_util_per_worker']}, stored "
                f"{r['telemetry_stored']}/{r['telemetry_published']} -> "
                f"{'real time' if r['kept_real_time'] else 'BEHIND'}"
            )
            await nc.close()
        finally:
            await server.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print figures and write them as JSON."""
    p = argparse.ArgumentParser(prog="python -m simulators.bench", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="devices per process to try")
    p.add_argument("--seconds", type=float, default=TRIAL_S, help="length of each trial (s)")
    p.add_argument("--devices", type=int, default=1000, help="fleet size of the multi-process trial")
    p.add_argument("--processes", type=int, default=2, help="worker processes of the multi-process trial")
    p.add_argument("--out", type=Path, default=Path("simulator-bench.json"), help="JSON output file")
    p.add_argument("--dry-only", action="store_true", help="only the model-alone measurement")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    _out(
        f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (other work skews the figures)"
    )
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "messages_per_device_s": MESSAGES_PER_DEVICE_S,
        "max_lag_s": MAX_LAG_S,
    }
    dry = measure_dry()
    report["dry"] = dry
    _out(
        f"model alone: {dry['msgs_per_cpu_s']} msgs per CPU second, {dry['devices']} devices at "
        f"{dry['realtime_factor']}x real time -> ~{dry['devices_per_core']} devices per core"
    )
    if not args.dry_only:
        report.update(asyncio.run(measure_live(args)))
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    args.out.write_text(json.dumps(report, indent=2))
    _out(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
