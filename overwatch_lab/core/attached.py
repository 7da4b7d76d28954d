"""The core of a lab attached to another process's fabric, from that lab's ``lab.json``.

It connects to the owner's broker and reads the same KV bucket and libSQL file, so it publishes,
reads state and builds frames like the owner; it owns no broker, worker or synchronizer, and its
counters are the ones the owner publishes (``core/stats.py``). Who is registered comes from the
owner's database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any

from overwatch_lab.config import LabConfig
from overwatch_lab.core.base import LAB_JSON, LabCore, Run
from overwatch_lab.core.stats import Stats, read_published_stats
from overwatch_lab.errors import ConfigError, LabStateError
from overwatch_lab.store import queries


def read_lab_json(data_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The connection file of the lab running in ``data_dir``.

    Raises:
        ConfigError: no ``lab.json`` there, it cannot be read, or its lab's process is gone.
    """
    path = Path(data_dir).expanduser().resolve() / LAB_JSON
    try:
        info: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no running lab at {path.parent}: {LAB_JSON} not found") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    pid = info.get("pid")
    if not isinstance(pid, int) or not _pid_alive(pid):
        raise ConfigError(f"the lab in {path.parent} is not running (pid {pid} is gone); start it again")
    for key in ("nats_url", "db_url"):
        if not isinstance(info.get(key), str):
            raise ConfigError(f"{path} has no {key}; is it a lab.json?")
    return info


class AttachedCore(LabCore):
    """A connection to a lab owned by another process (see the module docstring)."""

    owner = False

    def __init__(self, info: dict[str, Any], data_dir: str | os.PathLike[str]) -> None:
        super().__init__(
            LabConfig(
                data_dir=Path(data_dir).expanduser().resolve(),
                nats_url=info["nats_url"],
                nats_token=info.get("nats_token"),
                db_url=info["db_url"],
            )
        )
        self.info = dict(info)

    @classmethod
    def from_data_dir(cls, data_dir: str | os.PathLike[str]) -> AttachedCore:
        """The core for the lab running in ``data_dir`` (see :func:`read_lab_json`)."""
        return cls(read_lab_json(data_dir), data_dir)

    async def boot(self, stack: contextlib.AsyncExitStack) -> None:
        """Connect to the owner's broker and open the state bucket (nothing is provisioned)."""
        await self._connect(stack, self.nats_url, self.nats_token, "overwatch-lab-attached")
        await self._open_state()

    async def start_tasks(self, tg: asyncio.TaskGroup, run: Run) -> list[asyncio.Task[None]]:
        """The KV cache only (its own picture of the owner's bucket): the owner runs the workers."""
        return [await self._start_cache(tg)]

    def running(self, stack: contextlib.AsyncExitStack) -> None:
        """Nothing: the owner writes ``lab.json``."""

    def request_stop(self) -> None:
        """Stop the KV cache; the connection is closed by the lab's exit stack."""
        if self._cache is not None:
            self._cache.request_stop()

    def abort(self) -> None:
        """Nothing: the broker is the owner's."""

    @property
    def nats_url(self) -> str:
        """The owner's broker URL."""
        return str(self.config.nats_url)

    @property
    def nats_token(self) -> str | None:
        """The owner's broker token."""
        return self.config.nats_token

    @property
    def monitor_url(self) -> str | None:
        """The owner's monitoring URL (from its ``lab.json``)."""
        url = self.info.get("monitor_url")
        return url if isinstance(url, str) else None

    def connection_info(self) -> dict[str, Any]:
        """The owner's ``lab.json`` as it was read (its pid, start time, embedded broker)."""
        return dict(self.info)

    async def stats(self) -> Stats:
        """The counters the owner published last ({} before its first publication)."""
        return await read_published_stats(self.js)

    async def sync_now(self) -> dict[str, Any]:
        """An attached lab has no synchronizer."""
        raise LabStateError("an attached lab has no synchronizer; call sync_now() on the owner")

    async def org_known(self, org_id: str) -> bool:
        """From the owner's ``organizations`` table."""
        sql = "SELECT 1 FROM organizations WHERE org_id = ?"
        rows = await asyncio.to_thread(queries.read_frame, self.db_url, sql, (org_id,))
        return not rows.empty

    async def org_of(self, entity_id: str) -> str | None:
        """From the owner's ``entities`` table."""
        sql = "SELECT org_id FROM entities WHERE entity_id = ?"
        rows = await asyncio.to_thread(queries.read_frame, self.db_url, sql, (entity_id,))
        return None if rows.empty else str(rows.iloc[0]["org_id"])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
