"""The load-test harness on a small, short run against a real lab (timings are never asserted)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from overwatch_lab.loadtest import LoadPlan, run_loadtest, summary, write_report
from overwatch_lab.loadtest.verdict import LIBSQL_WRITES
from tests.polling import wait_until

pytestmark = pytest.mark.slow

DEVICES = 40  # the smallest load-fleet mix: ~820 telemetry msg/s


def small_plan(**kw):
    kw.setdefault("sample_entities", 10)
    kw.setdefault("drain_timeout_s", 20.0)
    return LoadPlan.ramp([DEVICES], step_s=kw.pop("step_s", 3.0), **kw)


async def test_a_short_run_reports_rates_latency_processes_and_nothing_lost(lab, tmp_path):
    lines: list[str] = []
    result = await run_loadtest(small_plan(), lab=lab, progress=lines.append)
    (step,) = result["steps"]
    assert step["devices"] == DEVICES
    assert step["offered_rate"] > 0 and step["stored_rate"] > 0 and step["achieved_rate"] > 0
    for key in ("kv_latency_ms", "history_latency_ms"):
        assert set(step[key]) >= {"p50", "p95", "p99", "max"}, key
        assert step[key]["n"] > 0
    roles = {p["role"] for p in step["processes"]}
    assert {"lab", "broker", "simulator"} <= roles
    assert step["host_cpu_pct"] is not None
    assert all(p["rss_mb_max"] for p in step["processes"] if p["role"] in ("lab", "broker"))
    check = result["check"]
    assert check["checked"] == check["stored"] == step["stored"] > 0
    assert check["lost"] == 0 and check["duplicated"] == 0
    assert step["verdict"]["bottleneck"]
    assert any("offered" in line for line in lines)  # the live progress display
    check_report(result, tmp_path / "out")


def check_report(result, out: Path) -> None:
    paths = write_report(result, out)
    assert Path(paths["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = Path(paths["html"]).read_text()
    assert "Bokeh" in html and "<script src=" not in html  # BokehJS inline: opens offline
    assert "knee" in summary(result)


async def test_rows_deleted_behind_the_labs_back_are_reported_lost(lab):
    deleted: list[str] = []

    def delete_rows() -> None:  # after the load, before the final check
        conn = sqlite3.connect(lab.db_url, timeout=10.0, isolation_level=None)
        try:
            rows = conn.execute("SELECT message_uid FROM telemetry ORDER BY id DESC LIMIT 5").fetchall()
            deleted.extend(u for (u,) in rows)
            conn.executemany("DELETE FROM telemetry WHERE message_uid = ?", rows)
        finally:
            conn.close()

    result = await run_loadtest(small_plan(), lab=lab, before_check=delete_rows)
    assert len(deleted) == 5
    assert result["check"]["lost"] == 5
    assert sorted(result["check"]["lost_uids"]) == sorted(deleted)
    assert result["steps"][0]["lost"] == 5 and not result["steps"][0]["held"]


class WriteLockHog:
    """Another writer on the lab's database that holds the write lock for long stretches."""

    HOLD_S = 0.8
    GAP_S = 0.2

    def __init__(self, path: str) -> None:
        self.path = path
        self.stop = threading.Event()
        self.holds = 0
        self.thread = threading.Thread(target=self._run, name="write-lock-hog", daemon=True)

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            while not self.stop.is_set():
                conn.execute("BEGIN IMMEDIATE")
                self.holds += 1
                self.stop.wait(self.HOLD_S)  # every libSQL writer of the lab waits meanwhile
                conn.execute("COMMIT")
                self.stop.wait(self.GAP_S)
        finally:
            conn.close()

    def __enter__(self) -> WriteLockHog:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10.0)


async def test_a_slowed_libsql_writer_is_named_the_bottleneck(lab):
    with WriteLockHog(lab.db_url) as hog:
        result = await run_loadtest(
            small_plan(step_s=4.0, max_p99_ms=300.0, drain_timeout_s=10.0), lab=lab, before_check=hog.stop.set
        )
    assert hog.holds >= 2
    (step,) = result["steps"]
    assert not step["held"], step["problems"]
    assert step["verdict"]["bottleneck"] == LIBSQL_WRITES, step["verdict"]
    assert result["bottleneck"]["bottleneck"] == LIBSQL_WRITES
    assert result["check"]["lost"] == 0  # slow, not lossy


def test_the_cli_loads_a_lab_running_in_another_process(tmp_path):
    data_dir, out = tmp_path / "lab", tmp_path / "out"
    err = (tmp_path / "up.err").open("w")
    up = subprocess.Popen(
        [sys.executable, "-m", "overwatch_lab.cli", "up", "--data-dir", str(data_dir), "--fleet", "none",
         "--no-dashboard"],
        stdout=subprocess.DEVNULL, stderr=err,
    )  # fmt: skip
    try:
        wait_until(lambda: _lab_json_pid(data_dir) == up.pid, timeout=60, what="the lab's lab.json")
        run = subprocess.run(
            [sys.executable, "-m", "overwatch_lab.cli", "loadtest", "--data-dir", str(data_dir), "--ramp",
             str(DEVICES), "--step", "3", "--sample", "10", "--out", str(out)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        up.terminate()
        up.wait(30)
        err.close()
    assert run.returncode == 0, run.stderr[-2000:]
    assert "knee:" in run.stdout and "offered" in run.stderr  # summary on stdout, progress on stderr
    (path,) = out.glob("loadtest-*.json")
    result = json.loads(path.read_text())
    procs = {p["role"]: p["pid"] for p in result["steps"][0]["processes"]}
    assert procs["lab"] == up.pid  # the lab's own process, not this one's
    assert "broker" in procs and "simulator" in procs
    assert result["check"]["checked"] > 0 and result["check"]["lost"] == 0
    assert len(list(out.glob("loadtest-*.png"))) == len(list(out.glob("loadtest-*.html"))) == 1


def _lab_json_pid(data_dir: Path) -> int | None:
    try:
        return int(json.loads((data_dir / "lab.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None
