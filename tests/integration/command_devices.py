"""Devices on the wire for the command tests: command links on a loop thread of their own.

The devices are the edge, not the thing under test: each is a real
:class:`~simulators.command_link.CommandLink` on a real NATS connection, with a recording
device hook (:class:`FakeDevice`) behind it. Shared by ``test_commands.py`` and
``test_commands_restart.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from overwatch_lab.broker.connect import connect
from overwatch_lab.nats_auth import NatsAuth
from overwatch_lab.runtime import LoopThread
from simulators import CommandResult
from simulators.command_link import CommandLink

ORG = "org-c"
"""The organisation the command tests register their devices in."""
FAST: dict[str, Any] = {
    "command_retry_initial_s": 0.1,
    "command_retry_max_s": 0.3,
    "command_expiry_grace_s": 0.1,
}
"""LabConfig overrides that make resends and expiry happen within a test's seconds."""


class FakeDevice:
    """A device hook: records every command it executes; rejects or fails on request."""

    def __init__(self, reject: str | None = None) -> None:
        self.reject = reject
        self.executed: list[str] = []

    def handle_command(self, command: dict[str, Any]) -> CommandResult:
        self.executed.append(command["command_id"])
        if self.reject:
            return CommandResult(command["command_id"], False, self.reject)
        return CommandResult(command["command_id"], True, behaviour=command["command_type"])


class Devices:
    """Command links on their own loop thread, connected to one NATS server."""

    def __init__(self, url: str, auth: NatsAuth | None) -> None:
        self.thread = LoopThread("test-devices")
        self.nc = self.call(connect(url, auth=auth, name="test-devices"))
        self.links: dict[str, CommandLink] = {}

    def call(self, coro: Awaitable[Any], timeout: float = 10.0) -> Any:
        return self.thread.call(coro, timeout)  # type: ignore[arg-type]

    def add(
        self,
        entity_id: str,
        device: FakeDevice | None = None,
        *,
        online: bool = True,
        execute: Callable[[dict, Any], Coroutine[Any, Any, str | None]] | None = None,
    ) -> CommandLink:
        device = device or FakeDevice()
        link = CommandLink(self.nc, ORG, entity_id, device.handle_command, execute=execute)
        link.device = device  # type: ignore[attr-defined]
        self.links[entity_id] = link
        if online:
            self.call(link.start())
        return link

    def online(self, entity_id: str) -> None:
        self.call(self.links[entity_id].start())

    def offline(self, entity_id: str) -> None:
        self.call(self.links[entity_id].stop())

    def executed(self, entity_id: str) -> list[str]:
        return self.links[entity_id].device.executed  # type: ignore[attr-defined]

    def close(self) -> None:
        for link in self.links.values():
            self.call(link.stop())
        self.call(self.nc.close())
        self.thread.close()
