"""One owner per data directory: a second owner is refused, attaching stays possible, and a new
owner after a SIGKILLed one waits for the old broker instead of running a second one on the store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from overwatch_lab import DataDirInUse, Lab, LabState
from tests.integration.test_lab_lifecycle import nats_server_pids
from tests.polling import wait_until

ORG = "org-own"


def _up(data_dir: Path, stderr_file: Path) -> subprocess.Popen[str]:
    with stderr_file.open("w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "overwatch_lab.cli", "up", "--data-dir", str(data_dir),
             "--fleet", "none", "--no-dashboard"],
            stdout=subprocess.PIPE, stderr=err, text=True,
        )  # fmt: skip


def _lab_json_pid(data_dir: Path) -> int | None:
    try:
        return json.loads((data_dir / "lab.json").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


async def test_a_second_owner_is_refused_with_the_owners_pid(lab):
    data_dir = lab.config.data_dir
    before = (data_dir / "lab.json").read_text()
    with pytest.raises(DataDirInUse, match=rf"in use by the lab with pid {os.getpid()}\b"):
        await Lab(data_dir=data_dir).start()
    with pytest.raises(DataDirInUse, match=f"pid {os.getpid()}"):
        Lab.up(data_dir=data_dir)
    # the refused labs touched nothing: one broker on the store, lab.json as the owner wrote it
    assert len(nats_server_pids(str(data_dir))) == 1
    assert (data_dir / "lab.json").read_text() == before
    assert lab.state is LabState.RUNNING
    attached = Lab.attach(data_dir, identity="internal")  # attaching stays possible
    try:
        attached.register_org(ORG)
        attached.register_entity(ORG, "o1", "sensor_platform")
        assert lab.state_of("o1")["entity_type"] == "sensor_platform"
    finally:
        attached.down()


def test_cli_up_on_an_owned_data_dir_exits_with_one_line(lab):
    data_dir = lab.config.data_dir
    proc = subprocess.run(
        [sys.executable, "-m", "overwatch_lab.cli", "up", "--data-dir", str(data_dir), "--fleet", "none",
         "--no-dashboard"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: data directory") and f"pid {os.getpid()};" in lines[0]
    assert len(nats_server_pids(str(data_dir))) == 1
    assert _lab_json_pid(data_dir) == os.getpid()
    status = subprocess.run(
        [sys.executable, "-m", "overwatch_lab.cli", "status", "--data-dir", str(data_dir), "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    printed = json.loads(status.stdout)
    # the lab's own connection info (its pid, its start), not the status process's
    assert printed["lab"]["nats_url"] == lab.nats_url and printed["lab"]["pid"] == os.getpid()
    assert printed["lab"]["started_at"] == json.loads((data_dir / "lab.json").read_text())["started_at"]
    assert printed["lab"]["embedded"] is True
    assert not {"nats_token", "nats_auth", "system_auth"} & set(printed["lab"])  # no secret printed
    assert printed["lab"]["state"] in ("running", "starting (no counters published yet)")
    assert "telemetry-worker" in printed["workers"] or printed["lab"]["state"].startswith("starting")


@pytest.mark.slow
def test_after_a_sigkill_a_new_owner_waits_for_the_orphaned_broker(tmp_path):
    """The killed lab's broker keeps the lock through its shutdown; the new lab waits for it.

    The orphan is held stopped (SIGSTOP before the SIGKILL of its lab, so PDEATHSIG's SIGTERM
    stays pending) to make "the new lab arrives while the old broker still runs" certain.
    """
    data_dir = tmp_path / "d"
    first = _up(data_dir, tmp_path / "first.err")
    second = None
    try:
        assert first.stdout is not None
        wait_until(
            lambda: _lab_json_pid(data_dir) == first.pid or first.poll() is not None, 30, what="first up"
        )
        [orphan] = nats_server_pids(str(data_dir))
        os.kill(orphan, signal.SIGSTOP)
        os.kill(first.pid, signal.SIGKILL)
        first.communicate(timeout=10)

        second = _up(data_dir, tmp_path / "second.err")
        wait_until(
            lambda: "waiting up to" in (tmp_path / "second.err").read_text() or second.poll() is not None,
            30,
            what="the new lab waiting for the lock",
        )
        log = (tmp_path / "second.err").read_text()
        assert f"its lab (pid {first.pid}) is gone" in log, log
        assert nats_server_pids(str(data_dir)) == [orphan]  # no second broker on the store
        assert second.poll() is None

        os.kill(orphan, signal.SIGCONT)  # the orphan now handles its SIGTERM and exits
        seen: set[int] = set()

        def second_is_up() -> bool:
            pids = nats_server_pids(str(data_dir))
            assert len(pids) <= 1, f"two nats-servers on one store: {pids}"
            seen.update(pids)
            return _lab_json_pid(data_dir) == second.pid or second.poll() is not None

        wait_until(second_is_up, 30, what="the new lab up")
        assert second.poll() is None, (tmp_path / "second.err").read_text()
        [broker] = nats_server_pids(str(data_dir))
        assert broker != orphan and seen <= {orphan, broker}
        assert "acquired after waiting" in (tmp_path / "second.err").read_text()

        second.send_signal(signal.SIGINT)
        out, _ = second.communicate(timeout=30)
        assert second.returncode == 0 and "stopped cleanly" in out
        assert nats_server_pids(str(data_dir)) == []
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
        for pid in nats_server_pids(str(data_dir)):  # only this test's brokers (its own tmp dir)
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)


def test_the_lock_is_released_when_the_lab_stops(tmp_path):
    data_dir = tmp_path / "seq"
    for _ in range(2):  # the second would be refused if the first had kept the lock
        with Lab(data_dir=data_dir, fetch_timeout_s=0.2) as lab:
            assert json.loads((data_dir / "lab.lock").read_text())["pid"] == os.getpid()
        assert lab.state is LabState.STOPPED
