"""The data directory lock on real files, with a real second process holding it where needed."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from overwatch_lab.datadir_lock import LOCK_NAME, DataDirLock, process_start, read_owner
from overwatch_lab.errors import ConfigError, DataDirInUse
from tests.integration.conftest import wait_for

# A child that holds the lock the way an orphaned broker does (an inherited lock, no record of
# its own), until its stdin closes.
HOLD = r"""
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A process holding ``tmp_path/lab.lock``; it lets go when the test closes its stdin."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / LOCK_NAME)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        if proc.stdin is not None and not proc.stdin.closed:
            proc.stdin.close()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)


def record(tmp_path: Path, pid: int, proc_start: int | None) -> None:
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": pid, "proc_start": proc_start}))


async def test_the_owner_is_recorded_and_a_second_owner_refused_with_its_pid(tmp_path):
    first = DataDirLock(tmp_path)
    await first.acquire(wait_s=1.0)
    try:
        owner = read_owner(tmp_path / LOCK_NAME)
        assert owner is not None and owner.pid == os.getpid() and owner.alive()
        assert owner.proc_start == process_start(os.getpid())
        with pytest.raises(DataDirInUse, match=rf"in use by the lab with pid {os.getpid()} \(this process\)"):
            await DataDirLock(tmp_path).acquire(wait_s=1.0)
    finally:
        first.release()
    second = DataDirLock(tmp_path)
    await second.acquire(wait_s=0.0)  # free again once released
    assert second.held
    second.release()
    second.release()  # idempotent
    assert not second.held


async def test_a_live_owner_is_refused_at_once(tmp_path, holder):
    record(tmp_path, holder.pid, process_start(holder.pid))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DataDirInUse, match=f"pid {holder.pid};"):
        await DataDirLock(tmp_path).acquire(wait_s=5.0)
    assert loop.time() - started < 1.0


async def test_leftovers_of_a_dead_owner_are_waited_for(tmp_path, holder, caplog):
    """The recorded lab is dead but its broker (here: the holder) still has the lock."""
    gone = dead_pid()
    record(tmp_path, gone, None)
    lock = DataDirLock(tmp_path)
    with caplog.at_level(logging.WARNING, logger="overwatch_lab.datadir_lock"):
        acquiring = asyncio.create_task(lock.acquire(wait_s=10.0))
        await wait_for(lambda: "waiting up to 10.0 s" in caplog.text, what="the waiting warning")
        assert f"its lab (pid {gone}) is gone" in caplog.text
        assert not acquiring.done()
        holder.stdin.close()  # the leftover exits
        async with asyncio.timeout(10):
            await acquiring
    try:
        assert lock.held
        assert read_owner(tmp_path / LOCK_NAME).pid == os.getpid()
        assert "acquired after waiting" in caplog.text
    finally:
        lock.release()


async def test_a_reused_pid_is_not_taken_for_the_owner(tmp_path, holder):
    """The recorded pid runs, but it is another process (a different start time): wait, not refuse."""
    record(tmp_path, os.getpid(), process_start(os.getpid()) + 1)
    with pytest.raises(
        DataDirInUse, match=rf"still locked 0\.2 s after its lab \(pid {os.getpid()}\) is gone"
    ):
        await DataDirLock(tmp_path).acquire(wait_s=0.2)


async def test_a_lock_held_with_no_record_is_waited_for_then_refused(tmp_path, holder):
    with pytest.raises(DataDirInUse, match="no owner is recorded"):
        await DataDirLock(tmp_path).acquire(wait_s=0.2)
    assert holder.poll() is None  # refusing does not disturb the holder


async def test_an_unopenable_lock_file_is_a_config_error(tmp_path):
    (tmp_path / LOCK_NAME).mkdir()  # a directory where the lock file should be
    with pytest.raises(ConfigError, match="cannot open the data directory's lock"):
        await DataDirLock(tmp_path).acquire(wait_s=0.1)
