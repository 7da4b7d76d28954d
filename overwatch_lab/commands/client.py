"""``lab.commands``: send, broadcast, look up and trace commands through the wire (issue 4).

Blocking calls, safe from any thread but the lab's own::

    h = lab.commands.send("uav-1", "goto", lat=32.9, lon=-96.8, alt_m=40, ttl_s=30)
    h.wait("SUCCEEDED", timeout=10)
    lab.commands.broadcast("org-1", "rtl")
    lab.commands.get(h.command_id).status, lab.commands.history(h.command_id)
    lab.commands.widget()                # a notebook panel: entity, action, params, Send, ladder

The same part serves an owner lab and an attached one: it reads the live status from the
CONSTELLATION_COMMAND_STATE bucket and the history from libSQL, and asks its core (see
:class:`CommandCore`) for the entity's organisation.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import nats.errors
import pandas as pd
from nats.js.kv import KeyValue

from overwatch_lab.commands.api import CommandHandle, command_history_frame
from overwatch_lab.errors import CommandError, CommandRejected
from overwatch_lab.protocol import commands as cmds
from overwatch_lab.protocol import envelopes
from overwatch_lab.protocol import subjects as s
from overwatch_lab.runtime import Runner
from overwatch_lab.store import queries

if TYPE_CHECKING:
    from overwatch_lab.notebook.command_panel import CommandPanel

T = TypeVar("T")


class CommandCore(Protocol):
    """What the commands part needs of a lab's core (``core.base.LabCore`` is one)."""

    @property
    def db_url(self) -> str:
        """Where the libSQL database is."""
        ...

    async def org_of(self, entity_id: str) -> str | None:
        """The organisation of a registered entity, or None."""
        ...

    async def publish(self, subject: str, data: bytes, msg_id: str | None = None) -> int:
        """Publish one message to JetStream; its stream sequence."""
        ...

    async def command_kv(self) -> KeyValue:
        """The command status bucket."""
        ...

    async def entity_docs(self) -> dict[str, dict[str, Any]]:
        """Every live entity document, by entity_id (shared: read only)."""
        ...


class Commands:
    """Commands through the wire (see the module docstring).

    Args:
        runner: the lab's loop (calls raise the lab's failure when it is not running).
        core: returns the running lab's core (raising the same way).
    """

    def __init__(self, runner: Runner, core: Callable[[], CommandCore]) -> None:
        self._runner = runner
        self._core = core

    def __repr__(self) -> str:
        return f"<Commands of {self._runner!r}>"

    # ------------------------------------------------------------------ sending
    def send(
        self,
        entity_id: str,
        action: str,
        *,
        org_id: str | None = None,
        ttl_s: float | None = None,
        command_id: str | None = None,
        source: str = "overwatch-lab",
        **params: Any,
    ) -> CommandHandle:
        """Send a command to one entity through the wire and return its :class:`CommandHandle`.

        ``action`` is one of goto, rtl, land, hold, set_mode, arm, disarm, set_speed,
        follow_route, orbit; ``params`` are its parameters (e.g. ``lat=…, lon=…, alt_m=40``).
        The lab validates it: a bad command comes back REJECTED with the reason (``handle.wait``
        raises CommandRejected). ``org_id`` defaults to the entity's organisation.

        Raises:
            CommandRejected: the entity is unknown and no ``org_id`` was given.
            CommandError: the commands stream refused the message (e.g. full).
        """
        s.check_token(entity_id, "entity_id")
        org = org_id or self._runner.call(self._core().org_of(entity_id))
        if org is None:
            raise CommandRejected(
                f"unknown entity {entity_id!r}: register it, or pass org_id= to record the rejection"
            )
        return self._issue(org, entity_id, action, params, command_id=command_id, ttl_s=ttl_s, source=source)

    def broadcast(
        self,
        org_id: str,
        action: str,
        *,
        ttl_s: float | None = None,
        command_id: str | None = None,
        source: str = "overwatch-lab",
        **params: Any,
    ) -> CommandHandle:
        """Send a command to every entity of an organisation (one tracked delivery per entity)."""
        return self._issue(org_id, None, action, params, command_id=command_id, ttl_s=ttl_s, source=source)

    def _issue(
        self,
        org_id: str,
        entity_id: str | None,
        action: str,
        params: dict[str, Any],
        *,
        command_id: str | None,
        ttl_s: float | None,
        source: str,
    ) -> CommandHandle:
        env = cmds.make_command(
            org_id,
            entity_id,
            action,
            params,
            command_id=command_id,
            ttl_s=ttl_s,
            issued_at=time.time(),
            source=source,
        )
        self._publish(s.command_subject(org_id, entity_id), env, env["command_id"])
        return CommandHandle(self, env["command_id"], org_id, entity_id)

    def widget(self, entity_ids: list[str] | None = None, *, follow_s: float = 120.0) -> CommandPanel:
        """A notebook panel (ipywidgets) to send a command and watch its ladder live.

        Args:
            entity_ids: the entities to offer (default: every entity the lab has now, by name).
            follow_s: how long the ladder of each command sent is redrawn.

        Parameters are checked with the wire contract's rules before anything is sent; the
        panel shows what was sent, or why not. Displaying the returned object shows it.
        """
        from overwatch_lab.notebook.command_panel import CommandPanel

        if entity_ids is None:
            docs = self._runner.call(self._core().entity_docs())
            named = sorted((str(d.get("name") or e), e) for e, d in docs.items())
            choices = [(e if name == e else f"{name} ({e})", e) for name, e in named]
        else:
            choices = [(e, e) for e in entity_ids]
        return CommandPanel(self.send, choices, follow_s=follow_s)

    # ------------------------------------------------------------------ looking up
    def get(self, command_id: str) -> CommandHandle:
        """The handle of a command already recorded by the lab.

        Raises:
            CommandError: no command with that id is recorded.
        """
        rows = queries.read_frame(
            self._core().db_url,
            "SELECT org_id, entity_id, broadcast FROM commands WHERE command_id = ?",
            (command_id,),
        )
        if rows.empty:
            raise CommandError(f"no command {command_id!r} is recorded")
        first = rows.iloc[0]
        broadcast = bool(first["broadcast"]) or first["entity_id"] == cmds.BROADCAST
        return CommandHandle(
            self, command_id, str(first["org_id"]), None if broadcast else str(first["entity_id"])
        )

    def history(self, command_id: str) -> pd.DataFrame:
        """Every recorded transition and ack of one command (all its entities), oldest first."""
        return command_history_frame(self._core().db_url, command_id)

    # ------------------------------------------------------------------ what a CommandHandle uses
    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        """Run ``coro`` on the lab's loop (blocking)."""
        return self._runner.call(coro, timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the lab's loop."""
        return self._runner.submit(coro)

    async def command_kv(self) -> KeyValue:
        """The command status bucket (on the lab's loop)."""
        return await self._core().command_kv()

    def cancel(self, org_id: str, entity_id: str | None, command_id: str) -> None:
        """Publish the cancel request of a command (see :meth:`CommandHandle.cancel`)."""
        env = cmds.make_cancel(org_id, entity_id, command_id, source="operator")
        self._publish(s.command_subject(org_id, entity_id), env, f"cancel-{command_id}")

    def _publish(self, subject: str, env: dict[str, Any], msg_id: str) -> None:
        core = self._core()

        async def go() -> None:
            try:
                await core.publish(subject, envelopes.encode(env), msg_id)
            except (nats.errors.Error, TimeoutError) as exc:
                raise CommandError(
                    f"command {env['command_id']} was not queued on {subject}: {exc!r}"
                ) from exc

        self._runner.call(go())
