"""Stopping ``overwatch-lab up`` always stops: signals at any moment, a second signal, a failing lab.

Exit statuses (see ``cli.cmd_up``): 0 after a clean stop on a signal, also one that came during
boot; 2 when the lab fails; 128 + n when a second signal forces the exit.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from overwatch_lab import Lab, LabConfig
from tests.integration.test_lab_lifecycle import nats_server_pids
from tests.polling import wait_until
from tests.unit.test_datadir_lock import HOLD, dead_pid

STOP_TIMEOUT_S = LabConfig().stop_timeout_s
EXIT_MARGIN_S = 5.0
STARTING = "overwatch-lab: starting"
RUNNING = "Ctrl-C to stop."


def _up(data_dir: Path, stderr_file: Path | None = None) -> subprocess.Popen[str]:
    err = stderr_file.open("w") if stderr_file is not None else None
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "overwatch_lab.cli", "up", "--data-dir", str(data_dir),
             "--fleet", "none", "--no-dashboard"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE if err is None else err, text=True,
            env=os.environ | {"PYTHONFAULTHANDLER": "1"},  # SIGABRT dumps every thread's stack
        )  # fmt: skip
    finally:
        if err is not None:
            err.close()


def _read_until(proc: subprocess.Popen[str], marker: str) -> str:
    """Read stdout lines until one contains ``marker`` (or EOF); return what was read."""
    assert proc.stdout is not None
    seen = []
    while line := proc.stdout.readline():
        seen.append(line)
        if marker in line:
            break
    return "".join(seen)


def _kill(proc: subprocess.Popen[str] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.communicate()


@dataclass
class Run:
    """One ``up`` process that got one SIGINT."""

    anchor: str  # what the delay counts from: "starting" (boot) or "running"
    delay_s: float
    returncode: int
    exit_s: float  # from the signal to the exit
    out: str
    err: str
    leftovers: list[int]
    lab_json_left: bool


def _one_sigint(data_dir: Path, anchor: str, delay_s: float) -> Run:
    proc = _up(data_dir)
    early = ""
    try:
        if anchor == "starting":
            early = _read_until(proc, STARTING)
        elif anchor == "running":
            early = _read_until(proc, RUNNING)
        time.sleep(delay_s)  # the random moment is the point of this test, not a synchronisation
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        try:
            out, err = proc.communicate(timeout=STOP_TIMEOUT_S + EXIT_MARGIN_S)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            out, err = proc.communicate(timeout=10)
            err = f"HUNG; its threads:\n{err}"
        exit_s = time.monotonic() - sent
    finally:
        _kill(proc)
    return Run(
        anchor, delay_s, proc.returncode, exit_s, early + out, err,
        nats_server_pids(str(data_dir)), (data_dir / "lab.json").exists(),
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(300)  # ~35 s on two idle cores (each run imports pandas and nats: ~1.3 CPU-s)
def test_fifty_sigints_at_random_moments_all_stop_cleanly(tmp_path):
    """From the moment ``up`` says "starting" (its handlers armed) through boot and run.

    Earlier, during interpreter start-up and imports, Python's default handling applies (and
    a third-party import can even swallow the KeyboardInterrupt: numpy.random's Cython module
    init, once in ~100 tries under load), so those moments are not part of the contract.
    """
    rng = random.Random(20240612)
    plan = [("starting", rng.uniform(0.0, 0.4)) for _ in range(25)]  # boot: ~0.2 s idle, more loaded
    plan += [("running", rng.uniform(0.0, 2.0)) for _ in range(25)]
    rng.shuffle(plan)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=6) as pool:  # most of a run waits
        runs = list(pool.map(lambda ip: _one_sigint(tmp_path / f"run{ip[0]}", *ip[1]), enumerate(plan)))
    wall_s = time.monotonic() - started

    for i, run in enumerate(runs):
        where = f"run {i} ({run.anchor} + {run.delay_s:.3f} s): rc {run.returncode}\n{run.out}\n{run.err}"
        assert run.exit_s < STOP_TIMEOUT_S + EXIT_MARGIN_S, where
        assert run.leftovers == [], where
        assert not run.lab_json_left, where
        assert run.returncode == 0, where
        assert "received SIGINT; stopping" in run.out and "stopped cleanly" in run.out, where
        assert "Traceback" not in run.err, where
    during_boot = sum(RUNNING not in r.out for r in runs)  # a signal in boot skips the running part
    while_running = sum(RUNNING in r.out for r in runs)
    print(
        f"\n50 SIGINTs in {wall_s:.1f} s: {during_boot} during boot, {while_running} while running; "
        f"slowest exit {max(r.exit_s for r in runs):.2f} s"
    )
    assert during_boot >= 3 and while_running >= 10


@pytest.mark.slow
def test_a_second_sigint_forces_exit_through_a_hanging_stop(tmp_path):
    """The broker is frozen so the clean stop hangs; the second Ctrl-C ends it and kills the broker."""
    data_dir = tmp_path / "force"
    proc = _up(data_dir)
    try:
        _read_until(proc, RUNNING)
        [broker] = nats_server_pids(str(data_dir))
        os.kill(broker, signal.SIGSTOP)  # SIGTERM from a clean stop now waits stop_timeout_s
        proc.send_signal(signal.SIGINT)
        assert "received SIGINT; stopping" in _read_until(proc, "stopping")
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        out, err = proc.communicate(timeout=STOP_TIMEOUT_S)
        assert proc.returncode == 128 + signal.SIGINT, err
        assert time.monotonic() - sent < 3.0
        assert "received SIGINT again; forcing exit" in err
        assert "stopped cleanly" not in out
        wait_until(
            lambda: nats_server_pids(str(data_dir)) == [], 5, what="the broker killed by the forced exit"
        )
    finally:
        _kill(proc)
        for pid in nats_server_pids(str(data_dir)):  # this test's own broker, by its data dir
            os.kill(pid, signal.SIGKILL)
    with Lab(data_dir=data_dir, fetch_timeout_s=0.2) as lab:  # the store and the lock are free again
        assert lab.owner


@pytest.fixture
def held_data_dir(tmp_path):
    """A data dir whose lock a leftover process holds (its lab dead): ``up`` waits at boot."""
    data_dir = tmp_path / "held"
    data_dir.mkdir()
    (data_dir / "lab.lock").write_text(json.dumps({"pid": dead_pid(), "proc_start": None}))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(data_dir / "lab.lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "locked"
    try:
        yield data_dir, holder
    finally:
        if not holder.stdin.closed:
            holder.stdin.close()
        holder.wait(10)
        holder.stdout.close()


def test_a_second_sigint_forces_exit_during_a_hanging_boot(held_data_dir, tmp_path):
    data_dir, _holder = held_data_dir
    proc = _up(data_dir, tmp_path / "err")
    try:
        _read_until(proc, STARTING)
        wait_until(
            lambda: "waiting up to" in (tmp_path / "err").read_text(), 20, what="up waiting for the lock"
        )
        proc.send_signal(signal.SIGINT)
        assert "received SIGINT; stopping" in _read_until(proc, "stopping")
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=5)
        assert proc.returncode == 128 + signal.SIGINT
        assert "forcing exit" in (tmp_path / "err").read_text()
        assert nats_server_pids(str(data_dir)) == []
    finally:
        _kill(proc)


def test_sigterm_during_boot_ends_in_a_clean_stop(held_data_dir, tmp_path):
    data_dir, holder = held_data_dir
    proc = _up(data_dir, tmp_path / "err")
    try:
        _read_until(proc, STARTING)
        wait_until(
            lambda: "waiting up to" in (tmp_path / "err").read_text(), 20, what="up waiting for the lock"
        )
        proc.send_signal(signal.SIGTERM)
        assert "received SIGTERM; stopping" in _read_until(proc, "stopping")
        holder.stdin.close()  # the boot goes on: it gets the lock, starts, then stops cleanly
        out, _ = proc.communicate(timeout=STOP_TIMEOUT_S + EXIT_MARGIN_S)
        assert proc.returncode == 0, (tmp_path / "err").read_text()
        assert "stopped cleanly" in out and RUNNING not in out  # it never went on to run
        assert nats_server_pids(str(data_dir)) == []
        assert not (data_dir / "lab.json").exists()
    finally:
        _kill(proc)


def test_up_exits_nonzero_when_the_lab_fails_on_its_own(tmp_path):
    """Its broker killed (each time it comes back), the lab ends by itself: ``up`` says so, exits 2."""
    data_dir = tmp_path / "fail"
    proc = _up(data_dir)
    try:
        _read_until(proc, RUNNING)
        assert len(nats_server_pids(str(data_dir))) == 1

        def broker_killed_and_up_gone() -> bool:
            for pid in nats_server_pids(str(data_dir)):  # this test's brokers, by their data dir
                os.kill(pid, signal.SIGKILL)
            return proc.poll() is not None

        wait_until(broker_killed_and_up_gone, 60, what="up exiting without its broker")
        out, err = proc.communicate(timeout=5)
        assert proc.returncode == 2, err
        assert "error:" in err and "nats-server" in err, err
        assert "stopped cleanly" not in out
        assert nats_server_pids(str(data_dir)) == []
    finally:
        _kill(proc)
