"""The Python face of commands: :class:`CommandHandle` and the command DataFrames.

A handle is returned by ``lab.commands.send(...)`` / ``lab.commands.broadcast(...)`` (or
``lab.commands.get(command_id)`` for an existing one). It reads the live status from the
CONSTELLATION_COMMAND_STATE KV bucket (so it works the same from a lab attached from another
process) and the history from libSQL::

    h = lab.commands.send("uav-1", "goto", lat=32.9, lon=-96.8, alt_m=40, ttl_s=30)
    h.wait("SUCCEEDED", timeout=10)      # blocking; raises CommandRejected / CommandTimeout
    await h.wait_async("ACCEPTED")       # the awaitable form (also ``await h``)
    h.status, h.history                  # CommandStatus, DataFrame of every transition
    h.cancel()                           # True if it was cancelled before reaching its device
    h.watch(print)                       # follow without blocking (a concurrent future)

In a notebook a handle shows its ladder: per delivery, the time of each stage after QUEUED. That
repr reads the status once, bounded by ``REPR_BUDGET_S``, and otherwise shows the last status the
handle saw (it never raises).

A broadcast is one delivery per entity of the organisation; its ``status`` is the least advanced
one (see :func:`~overwatch_lab.protocol.commands.aggregate_status`), ``statuses`` has them all.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Protocol, TypeVar

import pandas as pd
from nats.js.kv import KeyValue

from overwatch_lab.errors import CommandError, CommandRejected, CommandTimeout
from overwatch_lab.notebook.cards import ladder_card
from overwatch_lab.notebook.html import guarded, safe_text
from overwatch_lab.protocol.commands import (
    TERMINAL,
    CommandStatus,
    aggregate_status,
    reached,
    status_of,
)
from overwatch_lab.store.queries import read_frame

S = CommandStatus
Docs = dict[str, dict[str, Any]]
_T = TypeVar("_T")
Transition = Callable[[str, str, str, "str | None"], None]
REPR_BUDGET_S = 1.0
"""Seconds a repr may wait to read the command's status before it shows the last one seen."""
STAGE_PAIRS: tuple[tuple[str, str], ...] = (
    ("queued", "sent"),
    ("sent", "received"),
    ("received", "accepted"),
    ("accepted", "executing"),
    ("executing", "done"),
)


class CommandChannel(Protocol):
    """What a :class:`CommandHandle` needs of its lab (``lab.commands``, see ``commands/client.py``)."""

    def call(self, coro: Coroutine[Any, Any, _T], timeout: float | None = 30.0) -> _T:
        """Run ``coro`` on the lab's loop (blocking)."""
        ...

    def submit(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        """Schedule ``coro`` on the lab's loop."""
        ...

    async def command_kv(self) -> KeyValue:
        """The command status bucket (on the lab's loop)."""
        ...

    def cancel(self, org_id: str, entity_id: str | None, command_id: str) -> None:
        """Publish a command's cancel request."""
        ...

    def history(self, command_id: str) -> pd.DataFrame:
        """Every recorded transition and ack of a command."""
        ...


class CommandHandle:
    """A command sent through the lab (one entity, or an org broadcast); see the module docstring."""

    def __init__(self, channel: CommandChannel, command_id: str, org_id: str, entity_id: str | None) -> None:
        self._channel = channel
        self.command_id = command_id
        self.org_id = org_id
        self.entity_id = entity_id  # None for a broadcast
        self._seen: Docs | None = None  # the documents last read (what a repr falls back on)

    def __repr__(self) -> str:
        return safe_text(lambda: self._plain(self._fresh()[0]))

    def _plain(self, docs: Docs | None) -> str:
        status = None if docs is None else aggregate_status(S(d["status"]) for d in docs.values())
        return f"<CommandHandle {self.command_id} → {self._target()}: {status}>"

    def _repr_html_(self) -> str:
        def render() -> str:
            docs, stale = self._fresh()
            action = next((d.get("action") for d in (docs or {}).values() if d.get("action")), None)
            return ladder_card(self.command_id, self._target(), docs or {}, action=action, stale=stale)

        return guarded(render, lambda: self._plain(self._seen))

    def _target(self) -> str:
        return self.entity_id or f"{self.org_id} (broadcast)"

    def _fresh(self) -> tuple[Docs | None, str | None]:
        """The documents now (one bounded read), or the last ones seen and why they are not fresh."""

        async def read() -> Docs:
            async with asyncio.timeout(REPR_BUDGET_S):
                return await self._docs()

        try:
            return self._channel.call(read(), timeout=REPR_BUDGET_S + 1.0), None
        except Exception as exc:  # a repr shows the last status it saw, and says why
            return self._seen, f"status as last seen: reading it failed ({type(exc).__name__}: {exc})"

    @property
    def broadcast(self) -> bool:
        """True for an org broadcast."""
        return self.entity_id is None

    # ------------------------------------------------------------------ reading
    def docs(self) -> Docs:
        """The live KV documents, by entity_id (empty until the command worker has taken it)."""
        return self._channel.call(self._docs())

    @property
    def statuses(self) -> dict[str, CommandStatus]:
        """entity_id → current status."""
        return {e: S(d["status"]) for e, d in self.docs().items()}

    @property
    def status(self) -> CommandStatus | None:
        """The current status (a broadcast: the least advanced delivery); None until recorded."""
        return aggregate_status(self.statuses.values())

    @property
    def reasons(self) -> dict[str, str]:
        """entity_id → reason, for deliveries that have one (rejected, failed, expired, cancelled)."""
        return {e: d["reason"] for e, d in self.docs().items() if d.get("reason")}

    @property
    def history(self) -> pd.DataFrame:
        """Every recorded transition and ack (``applied`` False: ignored), oldest first."""
        return self._channel.history(self.command_id)

    # ------------------------------------------------------------------ waiting
    def wait(self, status: str | CommandStatus | None = S.SUCCEEDED, timeout: float = 30.0) -> CommandStatus:
        """Block until every delivery reached ``status`` (None: any final status) and return it.

        Raises:
            CommandRejected: a delivery was REJECTED (the reason is in the message).
            CommandError: a delivery ended FAILED, EXPIRED or CANCELLED instead.
            CommandTimeout: not reached within ``timeout`` seconds.
        """
        return self._channel.call(self._wait(status, timeout), timeout=timeout + 10.0)

    async def wait_async(
        self,
        status: str | CommandStatus | None = S.SUCCEEDED,
        timeout: float = 30.0,  # noqa: ASYNC109 - the deadline runs on the lab's loop, not the caller's
    ) -> CommandStatus:
        """The awaitable form of :meth:`wait` (runs on the lab's loop, awaitable from any loop)."""
        return await asyncio.wrap_future(self._channel.submit(self._wait(status, timeout)))

    def __await__(self) -> Generator[Any, None, CommandStatus]:
        return self.wait_async().__await__()

    def follow(self, on_transition: Transition, timeout: float = 60.0) -> CommandStatus | None:
        """Call ``on_transition(entity_id, status, at, reason)`` for each transition as it happens
        (from the start), until every delivery is final or ``timeout``; return the final status."""
        return self._channel.call(self._follow(on_transition, timeout), timeout=timeout + 10.0)

    def watch(
        self, on_transition: Transition, timeout: float = 60.0
    ) -> concurrent.futures.Future[CommandStatus | None]:
        """:meth:`follow` without blocking: a future of the final status (None after ``timeout``).

        ``on_transition`` runs on the lab's loop thread: keep it short, and never make a
        blocking lab call from it. Cancel the future to stop watching.
        """
        return self._channel.submit(self._follow(on_transition, timeout))

    def cancel(self, timeout: float = 10.0) -> bool:
        """Cancel the command; True if every delivery ended CANCELLED.

        A delivery not yet received by its device is cancelled by the lab; one already received
        is forwarded to the device, which may still finish it.
        """
        self._channel.cancel(self.org_id, self.entity_id, self.command_id)
        try:
            final = self.wait(None, timeout)
        except CommandTimeout:
            return False
        return final is S.CANCELLED and set(self.statuses.values()) == {S.CANCELLED}

    # ------------------------------------------------------------------ on the lab's loop
    async def _kv(self) -> KeyValue:
        return await self._channel.command_kv()

    def _pattern(self) -> str:
        return f"{self.command_id}.{self.entity_id}" if self.entity_id else f"{self.command_id}.>"

    async def _docs(self) -> Docs:
        kv = await self._kv()
        watcher = await kv.watch(self._pattern())
        docs: Docs = {}
        try:
            async for entry in watcher:
                if entry is None:
                    break
                _take(docs, entry)
        finally:
            await watcher.stop()
        self._seen = docs
        return docs

    async def _watch(self, step: Callable[[Docs], _T | None], timeout: float) -> _T:  # noqa: ASYNC109
        """Feed every change of this command's documents to ``step`` until it returns non-None."""
        kv = await self._kv()
        watcher = await kv.watch(self._pattern())
        docs: Docs = {}
        try:
            async with asyncio.timeout(timeout):
                async for entry in watcher:
                    if entry is not None:
                        _take(docs, entry)
                    out = step(docs)
                    if out is not None:
                        return out
        except TimeoutError:
            seen = {e: d["status"] for e, d in docs.items()} or "nothing recorded yet"
            raise CommandTimeout(
                f"command {self.command_id} not done within {timeout:.1f} s; statuses: {seen}"
            ) from None
        finally:
            self._seen = docs
            await watcher.stop()
        raise CommandError(f"the status watch of {self.command_id} ended unexpectedly")

    async def _wait(self, status: str | CommandStatus | None, timeout: float) -> CommandStatus:  # noqa: ASYNC109
        target = None if status is None else status_of(status)

        def step(docs: Docs) -> CommandStatus | None:
            if not _complete(docs):
                return None
            states = {e: S(d["status"]) for e, d in docs.items()}
            if target is None:
                done = all(s in TERMINAL for s in states.values())
                return aggregate_status(states.values()) if done else None
            for e, s in states.items():
                if s in TERMINAL and not reached(s, target):
                    raise _outcome_error(self.command_id, e, s, docs[e].get("reason"), target)
            if all(reached(s, target) for s in states.values()):
                return target
            return None

        return await self._watch(step, timeout)

    async def _follow(self, on_transition: Transition, timeout: float) -> CommandStatus | None:  # noqa: ASYNC109
        shown: dict[str, int] = {}

        def step(docs: Docs) -> CommandStatus | None:
            for e, d in sorted(docs.items()):
                hist = d.get("history") or []
                for h in hist[shown.get(e, 0) :]:
                    on_transition(e, h["status"], h["at"], h.get("reason"))
                shown[e] = len(hist)
            states = [S(d["status"]) for d in docs.values()]
            if _complete(docs) and all(s in TERMINAL for s in states):
                return aggregate_status(states)
            return None

        try:
            return await self._watch(step, timeout)
        except CommandTimeout:
            return None


def _take(docs: Docs, entry: Any) -> None:
    if entry.operation is None and entry.value:
        doc = json.loads(entry.value)
        docs[doc["entity_id"]] = doc
    else:
        docs.pop(entry.key.split(".", 1)[-1], None)


def _complete(docs: Docs) -> bool:
    """True once every delivery of the command is recorded (a broadcast knows its fan-out)."""
    return bool(docs) and len(docs) >= max(int(d.get("fanout") or 1) for d in docs.values())


def _outcome_error(
    command_id: str, entity_id: str, status: CommandStatus, reason: str | None, target: CommandStatus
) -> CommandError:
    msg = f"command {command_id} to {entity_id} ended {status} (waiting for {target}): {reason or 'no reason given'}"
    exc: CommandError = CommandRejected(msg) if status is S.REJECTED else CommandError(msg)
    exc.status = status
    exc.reason = reason
    exc.entity_id = entity_id
    return exc


# ---------------------------------------------------------------------------------------------
# Frames


def _times(frame: pd.DataFrame, columns: list[str]) -> None:
    for c in columns:
        if c in frame:
            frame[c] = pd.to_datetime(frame[c], unit="s", utc=True)


def command_history_frame(location: str, command_id: str) -> pd.DataFrame:
    """Every event of one command (all its entities), oldest first; ``at`` is when it happened."""
    frame = read_frame(
        location,
        "SELECT entity_id, status, reason, source, applied, ts AS at, recorded_ts AS recorded_at "
        "FROM command_events WHERE command_id = ? ORDER BY ts, id",
        (command_id,),
    )
    frame["applied"] = frame["applied"].astype(bool)
    _times(frame, ["at", "recorded_at"])
    return frame
