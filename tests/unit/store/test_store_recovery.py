"""The Store under real file-system faults (a tmpfs under the database): it raises
DatabaseUnavailable, keeps what was committed, and works again once the fault clears."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from overwatch_lab.errors import DatabaseError, DatabaseUnavailable
from overwatch_lab.store.database import Store
from overwatch_lab.store.schema import TELEMETRY_INSERT_COLUMNS


def rows(start: int, n: int) -> list[tuple[Any, ...]]:
    out = []
    for i in range(start, start + n):
        row = dict.fromkeys(TELEMETRY_INSERT_COLUMNS)
        row.update(
            message_uid=f"uid-{i}",
            org_id="org-a",
            entity_id="e1",
            message_type="ATTITUDE",
            timestamp=f"2027-01-01T00:00:{i % 60:02d}Z",
            ts=1_798_761_600.0 + i,
            ingested_at=1_798_761_600.0 + i,
            system_id=1,
            component_id=1,
            late=0,
            data='{"roll": 0.0, "pad": "' + "x" * 400 + '"}',
        )
        out.append(tuple(row.values()))
    return out


def uids(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT message_uid FROM telemetry ORDER BY message_uid")]
    finally:
        conn.close()


async def fill_until_unavailable(store: Store, start: int) -> tuple[int, DatabaseUnavailable]:
    """Insert batches of 100 until the store says it is unavailable; return rows stored and the error."""
    n = start
    while True:
        try:
            await store.insert_telemetry(rows(n, 100))
        except DatabaseUnavailable as exc:
            return n, exc
        n += 100


async def test_disk_full_is_unavailable_and_the_store_recovers_when_space_is_freed(tmpfs):
    path = tmpfs.path / "overwatch.db"
    store = Store(str(path))
    await store.open()
    try:
        await store.insert_telemetry(rows(0, 100))
        tmpfs.fill()
        stored, exc = await fill_until_unavailable(store, 100)
        assert "database or disk is full" in str(exc)
        assert isinstance(exc.__cause__, sqlite3.OperationalError)
        with pytest.raises(DatabaseUnavailable):  # still full: still unavailable, nothing half-written
            await store.insert_telemetry(rows(stored, 100))
        tmpfs.free_filler()
        assert await store.insert_telemetry(rows(stored, 100)) == 100
        assert store.faults >= 2
    finally:
        await store.close()
    assert uids(path) == sorted(f"uid-{i}" for i in range(stored + 100))


async def test_a_data_error_stays_a_plain_database_error(tmpfs):
    store = Store(str(tmpfs.path / "overwatch.db"))
    await store.open()
    try:
        with pytest.raises(DatabaseError) as info:
            await store.upsert_organization("org-a", "A", "not-a-type", None, "2027-01-01T00:00:00Z")
        assert not isinstance(info.value, DatabaseUnavailable)
        await store.upsert_organization("org-a", "A", "civilian", None, "2027-01-01T00:00:00Z")
    finally:
        await store.close()


async def test_read_only_file_system_is_unavailable_and_the_store_recovers(tmpfs):
    """After a fault the store holds no file open, so the file system can even be remounted
    read-only under it; once it is writable again the store reconnects by itself."""
    path = tmpfs.path / "overwatch.db"
    store = Store(str(path))
    await store.open()
    try:
        assert not tmpfs.try_read_only()  # the open connection keeps the files busy
        tmpfs.fill()
        stored, _ = await fill_until_unavailable(store, 0)
        assert tmpfs.try_read_only()  # the faulty connection was dropped
        with pytest.raises(DatabaseUnavailable) as info:
            await store.insert_telemetry(rows(stored, 100))
        assert "readonly" in str(info.value)
        assert await store.counts()  # reads work on a read-only file system
        tmpfs.read_write()
        tmpfs.free_filler()
        # The read above may have opened a read-only connection: the first write drops it.
        with contextlib.suppress(DatabaseUnavailable):
            await store.insert_telemetry(rows(stored, 100))
        await store.insert_telemetry(rows(stored, 100))
    finally:
        await store.close()
    assert uids(path) == sorted(f"uid-{i}" for i in range(stored + 100))


@pytest.mark.slow
async def test_a_lock_held_past_the_busy_timeout_is_unavailable_then_clears(tmp_path):
    path = tmp_path / "overwatch.db"
    store = Store(str(path))
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(DatabaseUnavailable) as info:  # after the 5 s busy timeout
            await store.insert_telemetry(rows(0, 10))
        assert "database is locked" in str(info.value)
        other.execute("ROLLBACK")
        assert await store.insert_telemetry(rows(0, 10)) == 10
    finally:
        other.close()
        await store.close()


async def test_a_writer_gets_the_lock_soon_after_another_process_releases_it(tmp_path):
    # SQLite's own busy handler would sleep in growing steps (up to 100 ms) behind a holder;
    # the writer asks again every few ms, so it starts within a few ms of the release.
    import asyncio
    import threading
    import time

    path = tmp_path / "overwatch.db"
    store = Store(str(path))
    await store.open()
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    released_at: list[float] = []
    try:
        other.execute("BEGIN IMMEDIATE")

        def release_later() -> None:
            time.sleep(0.335)  # the lock held this long: SQLite's busy handler is in its 328 → 428 ms sleep
            released_at.append(time.monotonic())
            other.execute("ROLLBACK")

        holder = threading.Thread(target=release_later)
        holder.start()
        assert await store.insert_telemetry(rows(0, 10)) == 10  # waited, not failed
        done_at = time.monotonic()
        await asyncio.to_thread(holder.join)
        assert released_at and done_at >= released_at[0]
        assert done_at - released_at[0] < 0.06  # the busy handler: ~93 ms after the release
    finally:
        other.close()
        await store.close()
    assert uids(path) == sorted(f"uid-{i}" for i in range(10))
