"""The command ledger: every open command in memory, libSQL as the record, KV as the live mirror.

One :class:`CommandLedger` per lab, shared by the ingress worker, the ack worker and the
deliverer (all on the lab's event loop). Each change goes to libSQL first, in one transaction
per batch, and the *store* decides whether a transition is allowed (its UPDATE carries the
lifecycle's ``allowed_from``), because writes are serialised there: two coroutines racing on
one command can never move it backwards. Memory then follows what the store applied (only
forward) and marks the record dirty; :meth:`CommandLedger.flush_kv` then publishes the current
document of every dirty record (key ``{command_id}.{entity_id}``), built at publish time, so the
last put always carries the newest state. Callers flush *after* their latency-critical step (the
deliverer publishes deliveries first): the KV mirror may trail libSQL by one batch, never the
other way round.

At boot :meth:`CommandLedger.load` reads every open command back from libSQL: a restart resumes
delivery where it stopped (devices dedupe a repeated ``command_id``). A redelivered message for
a command already finished re-mirrors its stored state (:meth:`CommandLedger._refresh`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from nats.aio.client import Client as NATS

from overwatch_lab.broker import jetstream
from overwatch_lab.config import LabConfig
from overwatch_lab.errors import BrokerError
from overwatch_lab.protocol.commands import (
    ALLOWED_FROM,
    BROADCAST,
    KV_COMMAND_STATE,
    LAB_CANCELLABLE,
    PROGRESS,
    STAGE_OF,
    STAGES,
    TERMINAL,
    Command,
    CommandStatus,
    state_key,
)
from overwatch_lab.protocol.envelopes import format_timestamp
from overwatch_lab.store.commands_sql import CommandChange, CommandSend
from overwatch_lab.store.database import Store

log = logging.getLogger(__name__)
S = CommandStatus
Key = tuple[str, str]
HISTORY_IN_KV = 16
_iso = functools.lru_cache(maxsize=1 << 16)(format_timestamp)  # a document is re-put at every transition
KV_PUT_TIMEOUT_S = 5.0


def _rank(status: CommandStatus) -> int:
    return len(PROGRESS) if status in TERMINAL else PROGRESS.index(status)


@dataclass(slots=True)
class Tracked:
    """One command for one entity, as the lab knows it now."""

    command_id: str
    entity_id: str
    org_id: str
    envelope: dict[str, Any]
    status: CommandStatus
    reason: str | None = None
    attempts: int = 0
    next_attempt_ts: float = 0.0
    last_sent_ts: float = 0.0  # 0 after a restart: resend at once
    expires_ts: float = 0.0
    last_change_ts: float = 0.0
    broadcast: bool = False
    fanout: int = 1
    times: dict[str, float] = field(default_factory=dict)
    history: list[tuple[str, float, str | None]] = field(default_factory=list)

    @property
    def key(self) -> Key:
        """(command_id, entity_id)."""
        return self.command_id, self.entity_id

    def doc(self) -> dict[str, Any]:
        """The KV document: current status, stage times and the transitions so far."""
        return {
            "command_id": self.command_id,
            "entity_id": self.entity_id,
            "org_id": self.org_id,
            "action": self.envelope.get("action"),
            "command_type": self.envelope.get("command_type"),
            "status": str(self.status),
            "reason": self.reason,
            "attempts": self.attempts,
            "broadcast": self.broadcast,
            "fanout": self.fanout,
            "issued_at": self.envelope.get("issued_at"),
            "expires_at": _iso(self.expires_ts) if self.expires_ts else None,
            "times": {k: _iso(v) for k, v in self.times.items()},
            "history": [
                {"status": st, "at": _iso(ts), "reason": reason}
                for st, ts, reason in self.history[-HISTORY_IN_KV:]
            ],
            "updated_at": _iso(self.last_change_ts),
        }

    def record_change(self, status: CommandStatus, reason: str | None, ts: float, now: float) -> None:
        """Follow a transition the store applied (memory only moves forward)."""
        self.history.append((str(status), ts, reason))
        self.history.sort(key=lambda h: h[1])
        stage = STAGE_OF[status]
        self.times.setdefault(stage, ts)
        if _rank(status) > _rank(self.status):
            self.status = status
            if reason is not None:
                self.reason = reason
        self.last_change_ts = now


@dataclass(slots=True)
class CommandStats:
    """Counters of the command fabric (``lab.stats()["commands"]``)."""

    queued: int = 0
    rejected_by_lab: int = 0
    duplicates: int = 0
    deliveries: int = 0  # delivery messages published (first sends and resends)
    resends: int = 0
    resends_deferred: int = 0  # held back while device acks waited in their stream
    acks_applied: int = 0
    acks_ignored: int = 0  # late, duplicate or out-of-order acks (never move a command backwards)
    expired: int = 0
    timed_out: int = 0
    cancelled_by_lab: int = 0
    kv_errors: int = 0
    open: int = 0  # gauge: commands not yet in a terminal status

    def snapshot(self) -> dict[str, Any]:
        """Return a plain dict copy."""
        return asdict(self)


class RetryTimer:
    """How long to wait for a RECEIVED before resending: TCP's retransmission timer (RFC 6298).

    Each first ack of a command sent once (Karn's rule: a resent command's ack is ambiguous)
    gives a round-trip sample (lab send → ack applied); the timeout is ``srtt + 4·rttvar``,
    kept within [``command_retry_initial_s``, ``command_retry_max_s``], and attempt n waits
    ``timeout · factor^(n-1)`` (capped). So resends space out by themselves when a burst or a
    slow link makes acks come late, instead of adding load.
    """

    def __init__(self, config: LabConfig) -> None:
        self.initial = config.command_retry_initial_s
        self.factor = config.command_retry_factor
        self.cap = config.command_retry_max_s
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.samples = 0

    def sample(self, rtt_s: float) -> None:
        """Feed one round trip (seconds)."""
        rtt_s = max(rtt_s, 0.0)
        if self.srtt is None:
            self.srtt, self.rttvar = rtt_s, rtt_s / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt_s)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt_s
        self.samples += 1

    @property
    def timeout_s(self) -> float:
        """The current retransmission timeout (before backoff)."""
        if self.srtt is None:
            return self.initial
        return min(max(self.srtt + 4 * self.rttvar, self.initial), self.cap)

    def delay(self, attempt: int) -> float:
        """Seconds after delivery attempt ``attempt`` (1-based) before the next one."""
        return min(self.timeout_s * self.factor ** max(attempt - 1, 0), self.cap)


@dataclass(frozen=True, slots=True)
class Change:
    """A requested transition (the store decides whether it applies)."""

    command_id: str
    entity_id: str
    status: CommandStatus
    reason: str | None
    ts: float
    source: str  # lab | device | operator
    allowed_from: frozenset[CommandStatus] | None = None  # None: the lifecycle's rule

    def allowed(self) -> tuple[str, ...]:
        """The statuses this change may follow, sorted (the store caches one statement per set)."""
        base = ALLOWED_FROM[self.status] if self.allowed_from is None else self.allowed_from
        if self.source == "device":
            base = base - {S.QUEUED}  # a device can only answer a command that was sent
        return tuple(sorted(str(s) for s in base))


class CommandLedger:
    """Open commands in memory, recorded in libSQL and mirrored into KV (see module docstring)."""

    def __init__(self, store: Store, nc: NATS, config: LabConfig) -> None:
        self.store = store
        self.nc = nc
        self.config = config
        self.open: dict[Key, Tracked] = {}
        self.stats = CommandStats()
        self.retry = RetryTimer(config)
        self.wake = asyncio.Event()  # set when something may be due for delivery
        self._dirty: dict[Key, Tracked] = {}

    # ------------------------------------------------------------------ boot
    async def load(self) -> int:
        """Read every open command back from libSQL (after a restart) and return how many."""
        now = time.time()
        for row in await self.store.open_commands():
            rec = _from_row(row, now)
            self.open[rec.key] = rec
        self.stats.open = len(self.open)
        self._dirty.update(self.open)
        await self.flush_kv()
        if self.open:
            log.info("resuming %d open commands from libSQL", len(self.open))
            self.wake.set()
        return len(self.open)

    # ------------------------------------------------------------------ new commands
    def queued(self, cmd: Command, now: float, *, fanout: int = 1, broadcast: bool = False) -> Tracked:
        """A new QUEUED record for one entity's delivery of ``cmd``."""
        assert cmd.entity_id is not None
        return Tracked(
            command_id=cmd.command_id,
            entity_id=cmd.entity_id,
            org_id=cmd.org_id,
            envelope=cmd.envelope(),
            status=S.QUEUED,
            next_attempt_ts=now,
            expires_ts=cmd.expires_ts,
            last_change_ts=now,
            broadcast=broadcast,
            fanout=fanout,
            times={"queued": now},
            history=[(str(S.QUEUED), now, None)],
        )

    def rejected(
        self,
        command_id: str,
        org_id: str,
        entity_id: str | None,
        reason: str,
        body: dict[str, Any],
        now: float,
    ) -> Tracked:
        """A new record rejected by the lab on arrival (QUEUED then REJECTED, with the reason)."""
        return Tracked(
            command_id=command_id,
            entity_id=entity_id or BROADCAST,
            org_id=org_id,
            envelope=body,
            status=S.REJECTED,
            reason=reason,
            last_change_ts=now,
            broadcast=entity_id is None,
            times={"queued": now, "done": now},
            history=[(str(S.QUEUED), now, None), (str(S.REJECTED), now, reason)],
        )

    async def add(self, records: Sequence[Tracked]) -> list[bool]:
        """Record new commands (idempotent: a known key is left alone); returns which were new.

        Wakes the deliverer; the caller flushes the KV mirror (:meth:`flush_kv`)."""
        if not records:
            return []
        rows = [_row(r) for r in records]
        new = await self.store.insert_commands(rows)
        fresh = [r for r, n in zip(records, new, strict=True) if n]
        for rec in fresh:
            if rec.status in TERMINAL:
                self.stats.rejected_by_lab += 1
            else:
                self.open[rec.key] = rec
                self.stats.queued += 1
        self.stats.duplicates += len(records) - len(fresh)
        self.stats.open = len(self.open)
        self._dirty.update((r.key, r) for r in fresh)
        await self._refresh({r.key for r, n in zip(records, new, strict=True) if not n})
        if any(r.status is S.QUEUED for r in fresh):
            self.wake.set()
        return new

    # ------------------------------------------------------------------ transitions
    async def change(
        self, changes: Sequence[Change], sends: Sequence[tuple[Tracked, float]] = ()
    ) -> tuple[list[bool], list[int | None]]:
        """Apply transitions and record delivery attempts (one transaction); memory follows, and
        the changed records are marked for the next :meth:`flush_kv`.

        Args:
            changes: requested transitions; refused ones are recorded as not applied.
            sends: (record, next attempt time) for each delivery about to be published.

        Returns:
            (applied per change, attempt number per send or None when the command moved on).
        """
        now = time.time()
        db_changes = [
            CommandChange(c.command_id, c.entity_id, str(c.status), c.reason, c.ts, now, c.source,
                          STAGE_OF[c.status], c.allowed())
            for c in changes
        ]  # fmt: skip
        db_sends = [CommandSend(r.command_id, r.entity_id, now, nxt) for r, nxt in sends]
        applied, attempts = await self.store.update_commands(db_changes, db_sends)
        touched: dict[Key, Tracked] = {}
        for c, ok in zip(changes, applied, strict=True):
            key = (c.command_id, c.entity_id)
            rec = self.open.get(key)
            if not ok or rec is None:
                continue
            if c.source == "device" and rec.status is S.SENT and rec.attempts == 1 and rec.last_sent_ts:
                self.retry.sample(now - rec.last_sent_ts)
            rec.record_change(c.status, c.reason, c.ts, now)
            touched[key] = rec
        for (rec, nxt), n in zip(sends, attempts, strict=True):
            if n is None:
                continue
            if rec.status is S.QUEUED:
                rec.record_change(S.SENT, None, now, now)
            rec.attempts, rec.next_attempt_ts, rec.last_sent_ts = n, nxt, now
            touched[rec.key] = rec
        for key, rec in touched.items():
            if rec.status in TERMINAL:
                self.open.pop(key, None)
        self.stats.open = len(self.open)
        self._dirty.update(touched)
        await self._refresh(
            {(c.command_id, c.entity_id) for c, ok in zip(changes, applied, strict=True) if not ok}
        )
        return applied, attempts

    async def _refresh(self, keys: set[Key]) -> None:
        """Re-mirror finished commands that a redelivered message or a late ack names.

        A lab killed between a libSQL commit and the KV put gets the message again after the
        restart; the store then refuses it (already applied), so nothing is "touched" — this
        re-puts the stored state so the KV mirror cannot stay behind for good. Rare: only for
        duplicates and late acks of commands no longer open.
        """
        keys = {k for k in keys if k not in self.open and k not in self._dirty}
        if not keys:
            return
        now = time.time()
        for command_id in sorted({cid for cid, _ in keys}):
            for row in await self.store.command_rows(command_id):
                rec = _from_row(row, now)
                if rec.key in keys:
                    rec.last_change_ts = row["updated_ts"]
                    self._dirty[rec.key] = rec

    async def cancel(self, command_id: str, entity_id: str | None, source: str, now: float) -> list[Tracked]:
        """Cancel an operator's command: QUEUED/SENT deliveries become CANCELLED at once; later ones
        are left to their device. Returns every open delivery of the command (to notify devices)."""
        targets = [
            r for r in self.open.values() if r.command_id == command_id and entity_id in (None, r.entity_id)
        ]
        reason = f"cancelled by {source}"
        changes = [
            Change(r.command_id, r.entity_id, S.CANCELLED, reason, now, "operator", LAB_CANCELLABLE)
            for r in targets
        ]
        applied, _ = await self.change(changes)
        self.stats.cancelled_by_lab += sum(applied)
        return targets

    # ------------------------------------------------------------------ KV mirror
    async def flush_kv(self) -> None:
        """Put the current document of every dirty record; on failure they stay dirty.

        Core publishes to ``$KV.CONSTELLATION_COMMAND_STATE.<key>`` (a valid KV write: the
        bucket's stream captures the subject) followed by one flush (a PING/PONG round trip: the
        server has taken every put before it answers). About 10x cheaper than a JetStream
        request per put, which matters at thousands of transitions per second; libSQL, not KV,
        is the record, and a lost put is healed by the next change of that command.
        """
        if not self._dirty:
            return
        batch, self._dirty = self._dirty, {}
        try:
            for rec in batch.values():
                data = json.dumps(rec.doc(), separators=(",", ":")).encode()
                await jetstream.publish(
                    self.nc, f"$KV.{KV_COMMAND_STATE}.{state_key(rec.command_id, rec.entity_id)}", data
                )
            await jetstream.flush(self.nc, KV_PUT_TIMEOUT_S)
        except (BrokerError, TimeoutError) as exc:
            self.stats.kv_errors += 1
            for key, rec in batch.items():
                self._dirty.setdefault(key, rec)  # retried with the next flush
            log.warning("%d command states not mirrored to KV (retried): %r", len(batch), exc)

    @property
    def kv_backlog(self) -> int:
        """Documents waiting to be mirrored to KV."""
        return len(self._dirty)


def _from_row(row: dict[str, Any], now: float) -> Tracked:
    """A record rebuilt from its ``commands`` row (history from the stage times)."""
    status = S(row["status"])
    rec = Tracked(
        command_id=row["command_id"],
        entity_id=row["entity_id"],
        org_id=row["org_id"],
        envelope=row["envelope"] if isinstance(row["envelope"], dict) else {},
        status=status,
        reason=row["reason"],
        attempts=row["attempts"],
        next_attempt_ts=min(row["next_attempt_ts"] or now, now),  # resend at once after a restart
        expires_ts=row["expires_ts"] or now,
        last_change_ts=max(row["updated_ts"], now),
        broadcast=bool(row["broadcast"]),
        fanout=row["fanout"],
        times={s: row[f"{s}_ts"] for s in STAGES if row.get(f"{s}_ts") is not None},
    )
    names = {"queued": "QUEUED", "sent": "SENT", "received": "RECEIVED", "accepted": "ACCEPTED",
             "executing": "EXECUTING", "done": str(status)}  # fmt: skip
    rec.history = sorted(
        ((names[k], v, row["reason"] if k == "done" else None) for k, v in rec.times.items()),
        key=lambda h: h[1],
    )
    return rec


def _row(rec: Tracked) -> dict[str, Any]:
    queued = rec.times["queued"]
    env = rec.envelope
    events: list[tuple[str, str | None, float, str]] = [(str(S.QUEUED), None, queued, "lab")]
    if rec.status is S.REJECTED:
        events.append((str(S.REJECTED), rec.reason, queued, "lab"))
    ttl = env.get("ttl_s")
    return {
        "command_id": rec.command_id,
        "entity_id": rec.entity_id,
        "org_id": rec.org_id,
        "broadcast": int(rec.broadcast),
        "fanout": rec.fanout,
        "action": env.get("action") if isinstance(env.get("action"), str) else None,
        "command_type": env.get("command_type") if isinstance(env.get("command_type"), str) else None,
        "status": str(rec.status),
        "reason": rec.reason,
        "envelope": env,
        "source": env.get("source") if isinstance(env.get("source"), str) else None,
        "issued_at": env.get("issued_at") if isinstance(env.get("issued_at"), str) else None,
        "ttl_s": ttl if isinstance(ttl, int | float) and not isinstance(ttl, bool) else None,
        "expires_ts": rec.expires_ts or None,
        "next_attempt_ts": rec.next_attempt_ts or None,
        "queued_ts": queued,
        "done_ts": rec.times.get("done"),
        "updated_ts": rec.last_change_ts,
        "events": events,
    }
