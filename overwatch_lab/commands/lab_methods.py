"""The Lab's command methods: send, broadcast, look up, list (issue 4).

Mixed into :class:`overwatch_lab.lab.Lab`; blocking calls, safe from any thread but the lab's own.
"""

from __future__ import annotations

import time
from typing import Any

import nats.errors
import pandas as pd
from nats.js.kv import KeyValue

from overwatch_lab.broker.provision import open_command_kv
from overwatch_lab.commands.api import CommandHandle, command_history_frame, commands_frame
from overwatch_lab.errors import CommandError, CommandRejected
from overwatch_lab.protocol import commands as cmds
from overwatch_lab.protocol import envelopes
from overwatch_lab.protocol import subjects as s
from overwatch_lab.store import queries


class CommandHelpers:
    """Commands through the wire (see the module docstring)."""

    def send_command(
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
        org = org_id or self._org_of(entity_id)
        if org is None:
            raise CommandRejected(
                f"unknown entity {entity_id!r}: register it, or pass org_id= to record the rejection"
            )
        return self._issue(org, entity_id, action, params, command_id=command_id, ttl_s=ttl_s, source=source)

    def broadcast_command(
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
        self._publish_command(s.command_subject(org_id, entity_id), env)
        return CommandHandle(self, env["command_id"], org_id, entity_id)

    def command(self, command_id: str) -> CommandHandle:
        """The handle of a command already recorded by the lab.

        Raises:
            CommandError: no command with that id is recorded.
        """
        rows = queries.read_frame(
            self.db_url,
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

    def commands_frame(self, **filters: Any) -> pd.DataFrame:
        """Commands as a DataFrame: one row per command and entity, stage times, per-stage latencies (ms)."""
        return commands_frame(self.db_url, **filters)

    def command_history_frame(self, command_id: str) -> pd.DataFrame:
        """Every recorded transition and ack of one command."""
        return command_history_frame(self.db_url, command_id)

    def _org_of(self, entity_id: str) -> str | None:
        f = self._require()
        if self._owner:
            return f.registry.org_of(entity_id)
        rows = queries.read_frame(
            self.db_url, "SELECT org_id FROM entities WHERE entity_id = ?", (entity_id,)
        )
        return None if rows.empty else str(rows.iloc[0]["org_id"])

    def _publish_command(self, subject: str, env: dict[str, Any], msg_id: str | None = None) -> None:
        f = self._require()
        headers = {"Nats-Msg-Id": msg_id or env["command_id"]}

        async def go() -> None:
            try:
                await f.js.publish(subject, envelopes.encode(env), headers=headers)
            except (nats.errors.Error, TimeoutError) as exc:
                raise CommandError(
                    f"command {env['command_id']} was not queued on {subject}: {exc!r}"
                ) from exc

        self.call(go())

    def _publish_cancel(self, org_id: str, entity_id: str | None, command_id: str) -> None:
        env = cmds.make_cancel(org_id, entity_id, command_id, source="operator")
        self._publish_command(s.command_subject(org_id, entity_id), env, msg_id=f"cancel-{command_id}")

    async def _command_kv(self) -> KeyValue:
        f = self._require()
        if f.command_kv is None:
            f.command_kv = await open_command_kv(f.js)
        return f.command_kv
