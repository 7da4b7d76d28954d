"""The core of a lab attached to another process's fabric, from that lab's ``lab.json``.

It connects to the owner's broker and reads the same KV bucket and libSQL file, so it publishes,
reads state and builds frames like the owner; it owns no broker, worker or synchronizer, and its
counters are the ones the owner publishes (``core/stats.py``). Who is registered comes from the
owner's database.

It connects as one of the owner's identities (``lab.json``): the lab-wide ``observer`` by
default (reads state, history and counters; publishes nothing), the ``operator`` (an observer
that may send commands), or ``internal`` (the owner's own identity: full rights; what
``overwatch-lab device ...`` uses to register devices and reload the broker).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS

from overwatch_lab.broker.connect import connect
from overwatch_lab.config import LabConfig
from overwatch_lab.core.base import LAB_JSON, LabCore, Run
from overwatch_lab.core.stats import Stats, read_published_stats
from overwatch_lab.errors import ConfigError, LabStateError
from overwatch_lab.nats_auth import NatsAuth
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

    def __init__(
        self, info: dict[str, Any], data_dir: str | os.PathLike[str], identity: str = "observer"
    ) -> None:
        super().__init__(
            LabConfig(
                data_dir=Path(data_dir).expanduser().resolve(),
                nats_url=info["nats_url"],
                nats_token=info.get("nats_token"),
                db_url=info["db_url"],
            )
        )
        self.info = dict(info)
        self.identity = identity
        self._auth = _auth_of(self.info, identity, self.config.data_dir)
        self._system: NATS | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    @classmethod
    def from_data_dir(cls, data_dir: str | os.PathLike[str], identity: str = "observer") -> AttachedCore:
        """The core for the lab running in ``data_dir`` (see :func:`read_lab_json`)."""
        return cls(read_lab_json(data_dir), data_dir, identity)

    async def boot(self, stack: contextlib.AsyncExitStack) -> None:
        """Connect to the owner's broker and open the state bucket (nothing is provisioned)."""
        self._stack = stack
        await self._connect(stack, self.nats_url, self._auth, f"overwatch-lab-attached-{self.identity}")
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
    def nats_auth(self) -> NatsAuth:
        """The identity this lab attached with."""
        return self._auth

    async def system_nc(self) -> NATS:
        """A connection of the owner's system account (attached as ``internal`` only)."""
        if self._system is None:
            raw = self.info.get("system_auth")
            if self.identity != "internal" or not raw:
                raise LabStateError(
                    f"a lab attached as {self.identity!r} has no system account; attach with identity='internal'"
                )
            assert self._stack is not None
            self._system = await connect(
                self.nats_url, auth=NatsAuth.from_dict(raw, "lab.json system_auth"), name="overwatch-lab-attached-sys"
            )
            self._stack.push_async_callback(self._system.close)
        return self._system

    async def publish(self, subject: str, data: bytes, msg_id: str | None = None) -> int:
        """Publish one message (refused at once for an observer, which may publish nothing)."""
        self._check_may_publish(subject)
        return await super().publish(subject, data, msg_id)

    async def publish_many(self, items: list[tuple[str, bytes, str | None]]) -> int:
        """Publish many messages (refused at once for an observer)."""
        for subject, _, _ in items:
            self._check_may_publish(subject)
        return await super().publish_many(items)

    def _check_may_publish(self, subject: str) -> None:
        if self.identity == "observer":
            raise LabStateError(
                f"this lab is attached as an observer and may not publish ({subject}); "
                "attach with identity='operator' to send commands"
            )

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


IDENTITIES = ("observer", "operator", "internal")
"""Who an attached lab may connect as (see the module docstring)."""


def _auth_of(info: dict[str, Any], identity: str, data_dir: Path) -> NatsAuth:
    """The credentials of ``identity`` from the owner's ``lab.json``.

    Raises:
        ConfigError: an unknown identity, or the owner's lab.json does not name it.
    """
    if identity not in IDENTITIES:
        raise ConfigError(f"unknown identity {identity!r}; expected one of {', '.join(IDENTITIES)}")
    if identity == "internal" or not info.get("embedded", False) or "nats_auth" not in info:
        raw = info.get("nats_auth")  # an external broker: the owner's credentials are all there is
        if raw is None:  # a lab.json written before the broker had users
            return NatsAuth(token=info.get("nats_token"))
        return NatsAuth.from_dict(raw, f"{data_dir / LAB_JSON} nats_auth")
    path = (info.get("identities") or {}).get(identity)
    if not isinstance(path, str):
        raise ConfigError(f"the lab in {data_dir} issued no {identity!r} identity (see its {LAB_JSON})")
    return NatsAuth.load(path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
