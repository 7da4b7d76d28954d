"""The sync loop's failure policy (overwatch_lab/sync.py): every failed pass counted, one log line
per outage, a traceback only for an unexpected error.

Pure loop logic: the store and the KV are fakes that fail on demand (a real database and KV
outage are in ``tests/integration/test_sync.py``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from overwatch_lab.config import LabConfig
from overwatch_lab.errors import DatabaseUnavailable
from overwatch_lab.sync import Synchronizer
from tests.polling import wait_for


class FlakyStore:
    """A store with no entities whose reads raise ``fault`` while it is set."""

    def __init__(self) -> None:
        self.fault: Exception | None = None

    async def entities(self) -> list[dict[str, Any]]:
        if self.fault is not None:
            raise self.fault
        return []


class EmptyKV:
    async def all(self) -> dict[str, Any]:
        return {}


def sync_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "overwatch_lab.sync" and r.levelno >= logging.INFO]


async def run_passes(sync: Synchronizer, n: int, counter: str) -> None:
    """Kick ``n`` passes one after another, each waited for on ``sync.stats.<counter>``."""
    for _ in range(n):
        before = getattr(sync.stats, counter)

        def moved(before: int = before) -> bool:
            return bool(getattr(sync.stats, counter) > before)

        sync.kick()
        await wait_for(moved, what=f"one more {counter}")


async def test_a_database_outage_is_one_warning_line_however_many_passes_fail(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="overwatch_lab.sync")
    store = FlakyStore()
    config = LabConfig(data_dir=tmp_path / "lab", sync_period_s=3600)  # only kicks start a pass
    sync = Synchronizer(store, EmptyKV(), config, lambda eid: None)  # type: ignore[arg-type]
    failures: list[BaseException] = []
    sync.on_failure = failures.append
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(sync.run(ready), name="sync-under-test")
        await ready.wait()
        store.fault = DatabaseUnavailable("database is locked (busy timeout 5.0 s)")
        await run_passes(sync, 4, "failed_passes")
        (warning,) = sync_records(caplog)
        assert warning.levelno == logging.WARNING and warning.exc_info is None
        assert "DatabaseUnavailable: database is locked" in warning.getMessage()
        assert (sync.stats.failed_passes, sync.stats.outages, len(failures)) == (4, 1, 4)

        store.fault = None  # the database is back: said once
        await run_passes(sync, 2, "passes")
        assert [r.getMessage().split(" after")[0] for r in sync_records(caplog)[1:]] == ["sync recovered"]
        assert sync.stats.failing_since is None and sync.stats.failed_passes == 4

        store.fault = RuntimeError("a bug in the pass")  # a new outage, unexpected: one traceback
        await run_passes(sync, 3, "failed_passes")
        bug = sync_records(caplog)[2:]
        assert len(bug) == 1 and bug[0].levelno == logging.ERROR and bug[0].exc_info is not None
        assert sync.stats.outages == 2 and sync.stats.last_error == "RuntimeError: a bug in the pass"
        sync.request_stop()
    assert task.done() and task.exception() is None
