"""WAL checkpoints off the commit path: a Store without autocheckpoint leaves the WAL to the
Checkpointer, which copies it back into the database file and survives a failed round."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from overwatch_lab.store.checkpoint import Checkpointer
from overwatch_lab.store.database import Store
from tests.polling import wait_for
from tests.unit.store.test_store_recovery import rows


def wal_pages(path: Path) -> int:
    """Frames in the WAL (a WAL frame is a page plus a 24-byte header; the file has a 32-byte header)."""
    wal = path.with_name(path.name + "-wal")
    size = wal.stat().st_size if wal.exists() else 0
    return max(size - 32, 0) // (4096 + 24)


async def insert(store: Store, n: int, first: int = 0, batch: int = 200) -> None:
    for start in range(first, first + n, batch):
        await store.insert_telemetry_groups(rows(start, batch), [])


@pytest.mark.parametrize("autocheckpoint", [True, False])
async def test_commits_checkpoint_only_with_autocheckpoint(tmp_path, autocheckpoint):
    path = tmp_path / "lab.db"
    store = Store(str(path), autocheckpoint=autocheckpoint)
    await store.open()
    try:
        await insert(store, 12_000, batch=1_000)  # ~2,800 pages of rows and indexes: past SQLite's 1,000
        pages = wal_pages(path)
        if autocheckpoint:
            assert pages < 1_300  # the WAL was reset by a commit's checkpoint and reused
        else:
            assert pages > 2_000  # no commit checkpointed: every page is still in the WAL
    finally:
        await store.close()


async def test_the_checkpointer_copies_the_wal_back_and_the_next_write_reuses_it(tmp_path):
    path = tmp_path / "lab.db"
    store = Store(str(path), autocheckpoint=False)
    await store.open()
    ckpt = Checkpointer(str(path), period_s=0.05)
    ready = asyncio.Event()
    task = asyncio.create_task(ckpt.run(ready))
    try:
        await ready.wait()
        await insert(store, 6_000)
        rounds = ckpt.stats.rounds
        await wait_for(
            lambda: ckpt.stats.rounds > rounds and 0 < ckpt.stats.copied == ckpt.stats.wal_frames,
            timeout=10.0, what="a checkpoint that copied the whole WAL",
        )  # fmt: skip
        ckpt.request_stop()
        async with asyncio.timeout(5):  # returns at once, not after its period (the lab's stop waits)
            await task
        assert ckpt.stats.failed == 0 and ckpt.stats.last_error is None
        ckpt.checkpoint()  # nothing written since: the whole WAL is copied
        assert 0 < ckpt.stats.copied == ckpt.stats.wal_frames
        size = path.with_name(path.name + "-wal").stat().st_size
        await insert(store, 200, first=6_000)  # starts again at the WAL's beginning: the file does not grow
        assert path.with_name(path.name + "-wal").stat().st_size <= size
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT count(*) FROM telemetry").fetchone()[0] == 6_200
    finally:
        conn.close()


def test_a_failed_round_is_counted_and_the_next_one_recovers(tmp_path, caplog):
    path = tmp_path / "later" / "lab.db"  # its folder does not exist yet: connect fails
    ckpt = Checkpointer(str(path), period_s=1.0)
    ckpt.checkpoint()
    ckpt.checkpoint()
    assert ckpt.stats.failed == 2 and ckpt.stats.rounds == 2 and ckpt.stats.last_error
    assert sum("WAL checkpoint" in r.getMessage() for r in caplog.records) == 1  # once per episode
    path.parent.mkdir()
    sqlite3.connect(path).close()
    ckpt.checkpoint()
    assert ckpt.stats.last_error is None and ckpt.stats.failed == 2 and ckpt.stats.rounds == 3


def test_the_period_must_be_positive():
    with pytest.raises(ValueError, match="period_s"):
        Checkpointer("x.db", period_s=0)


async def test_a_stop_request_ends_run_without_waiting_for_the_period(tmp_path):
    ckpt = Checkpointer(str(tmp_path / "lab.db"), period_s=60.0)
    ready = asyncio.Event()
    task = asyncio.create_task(ckpt.run(ready))
    await ready.wait()
    ckpt.request_stop()
    async with asyncio.timeout(5):  # the lab's stop waits for it: it must not wait out its period
        await task
    assert ckpt.stats.rounds == 0
