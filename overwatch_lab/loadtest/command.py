"""``overwatch-lab loadtest``: the arguments and the command (hooked into ``overwatch_lab.cli``).

::

    overwatch-lab loadtest                                   # ramp 100..1000 devices on a lab booted here
    overwatch-lab loadtest --ramp 50 100 200 --step 10       # steps of device counts, 10 s each
    overwatch-lab loadtest --ramp 250 --rates 1 2 4          # one device count at growing rates
    overwatch-lab loadtest --hold 1000 --duration 600        # hold load-1000 for 10 minutes
    overwatch-lab loadtest --data-dir ./overwatch-data ...   # against a lab running elsewhere

Progress: one line a second on stderr. Result: a summary on stdout, and JSON, PNG and offline
HTML in ``--out``. Exit 0 when nothing was lost, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from overwatch_lab.loadtest.plan import LoadPlan
from overwatch_lab.loadtest.report import summary, write_report


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``loadtest`` arguments to ``p``."""
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--ramp", type=int, nargs="+", metavar="N",
        help="device counts, one step each, until a step is not held (default: 100 250 500 750 1000)",
    )  # fmt: skip
    mode.add_argument("--hold", type=int, metavar="N", help="hold N devices for --duration seconds")
    p.add_argument("--rates", type=float, nargs="+", default=[1.0], metavar="X",
                   help="rate factors (x the MAVLink rates); each device count runs at each (default: 1)")  # fmt: skip
    p.add_argument(
        "--step", type=float, default=20.0, metavar="S", help="seconds per ramp step (default: %(default)g)"
    )
    p.add_argument(
        "--duration", type=float, default=600.0, metavar="S", help="seconds of a hold (default: %(default)g)"
    )
    p.add_argument("--max-p99-ms", type=float, default=1000.0, metavar="MS",
                   help="publish -> KV p99 above this: the step is not held (default: %(default)g)")  # fmt: skip
    p.add_argument("--sample", type=int, default=50, metavar="N",
                   help="entities whose latency is sampled (default: %(default)s)")  # fmt: skip
    p.add_argument("--sim-processes", type=int, metavar="N",
                   help="simulator processes per step (default: one per 500 devices)")  # fmt: skip
    p.add_argument("--workers", type=int, metavar="N",
                   help="telemetry worker processes of the lab booted here (default: the lab's default "
                   "for this machine; 0 = in the lab's own process), as `up --workers`")  # fmt: skip
    p.add_argument("--no-stop", action="store_true", help="run every ramp step even after one is not held")
    p.add_argument("--data-dir", type=Path, metavar="DIR",
                   help="load the lab running on DIR (attach) instead of booting one here")  # fmt: skip
    p.add_argument(
        "--out", default="loadtest-results", help="folder for JSON, PNG and HTML (default: %(default)s)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def plan_of(a: argparse.Namespace) -> LoadPlan:
    """The plan the arguments describe.

    Raises:
        ConfigError: a bad value.
    """
    common = {
        "rate_factors": tuple(a.rates),
        "max_p99_ms": a.max_p99_ms,
        "sample_entities": a.sample,
        "sim_processes": a.sim_processes,
        "stop_on_failure": not a.no_stop,
        "workers": a.workers,
    }
    if a.hold is not None:
        return LoadPlan.hold(a.hold, a.duration, **common)
    return LoadPlan.ramp(tuple(a.ramp or LoadPlan().devices), a.step, **common)


def run(a: argparse.Namespace) -> int:
    """Run the load test the arguments describe; print the summary and where the files are."""
    from overwatch_lab.loadtest.runner import run_loadtest  # here: it imports the Lab

    plan = plan_of(a)

    def say(line: str) -> None:
        if not a.quiet:
            print(line, file=sys.stderr, flush=True)

    result = asyncio.run(run_loadtest(plan, data_dir=a.data_dir, progress=say))
    paths = write_report(result, a.out)
    print(summary(result))
    print("  " + "  ".join(f"{k}: {v}" for k, v in paths.items()))
    return 0 if result["check"]["lost"] == 0 else 1
