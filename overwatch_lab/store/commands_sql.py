"""The command ledger's SQL (schema v2): insert, status transitions, delivery attempts.

The functions here run on the store's writer thread inside one transaction (see
:meth:`Store.insert_commands <overwatch_lab.store.database.Store.insert_commands>` and
:meth:`Store.update_commands <overwatch_lab.store.database.Store.update_commands>`); the
dataclasses are what the ledger hands the store.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from overwatch_lab.errors import DatabaseError
from overwatch_lab.store.connection import decode_json, encode_json

__all__ = [
    "COMMAND_COLUMNS",
    "OPEN_COMMANDS",
    "CommandChange",
    "CommandSend",
    "decode_envelopes",
    "insert_commands",
    "update_commands",
]

COMMAND_COLUMNS: tuple[str, ...] = (
    "command_id", "entity_id", "org_id", "broadcast", "fanout", "action", "command_type", "status",
    "reason", "envelope", "source", "issued_at", "ttl_s", "expires_ts", "next_attempt_ts", "queued_ts",
    "done_ts", "updated_ts",
)  # fmt: skip
"""Columns :meth:`Store.insert_commands` writes (the other stages and attempts start empty)."""

_OPEN_STATUSES = ("QUEUED", "SENT", "RECEIVED", "ACCEPTED", "EXECUTING")
OPEN_COMMANDS = f"SELECT * FROM commands WHERE status IN ({', '.join(repr(s) for s in _OPEN_STATUSES)}) ORDER BY queued_ts"
"""Every command not in a terminal status, oldest first."""

_COMMAND_INSERT = (
    f"INSERT INTO commands ({', '.join(COMMAND_COLUMNS)}) VALUES ({', '.join('?' * len(COMMAND_COLUMNS))}) "
    "ON CONFLICT(command_id, entity_id) DO NOTHING"
)
_EVENT_COLUMNS = "command_id, entity_id, status, reason, ts, recorded_ts, source, applied"
_COMMAND_EVENT_INSERT = f"INSERT INTO command_events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_COMMAND_EVENT_INSERT_IF_KNOWN = (
    f"INSERT INTO command_events ({_EVENT_COLUMNS}) SELECT ?, ?, ?, ?, ?, ?, ?, ? "
    "WHERE EXISTS (SELECT 1 FROM commands WHERE command_id = ? AND entity_id = ?)"
)
_COMMAND_SEND = (
    "UPDATE commands SET status = 'SENT', sent_ts = COALESCE(sent_ts, ?1), attempts = attempts + 1, "
    "next_attempt_ts = ?2, updated_ts = ?1 WHERE command_id = ?3 AND entity_id = ?4 "
    "AND status IN ('QUEUED', 'SENT') RETURNING attempts"
)
_STAGES = frozenset({"sent", "received", "accepted", "executing", "done"})


@dataclass(frozen=True, slots=True)
class CommandChange:
    """One status transition for :meth:`Store.update_commands`.

    Attributes:
        stage: the time column it sets (``sent``, ``received``, ``accepted``, ``executing``, ``done``).
        allowed_from: the statuses it may follow (the lifecycle's rule for ``status``).
        ts: when it happened (device time for device acks); recorded_ts: when the lab recorded it.
        source: ``lab``, ``device`` or ``operator``.
    """

    command_id: str
    entity_id: str
    status: str
    reason: str | None
    ts: float
    recorded_ts: float
    source: str
    stage: str
    allowed_from: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CommandSend:
    """One delivery attempt for :meth:`Store.update_commands` (``ts`` = now, next attempt due at ``next_attempt_ts``)."""

    command_id: str
    entity_id: str
    ts: float
    next_attempt_ts: float


@functools.lru_cache(maxsize=64)
def _transition_sql(stage: str, allowed_from: tuple[str, ...]) -> str:
    if stage not in _STAGES or not allowed_from:
        raise DatabaseError(f"bad command transition: stage {stage!r}, allowed from {allowed_from!r}")
    allowed = ", ".join(f"'{s}'" for s in allowed_from if s.isalpha())
    return (
        f"UPDATE commands SET status = ?1, reason = COALESCE(?2, reason), {stage}_ts = COALESCE({stage}_ts, ?3), "
        f"updated_ts = ?4 WHERE command_id = ?5 AND entity_id = ?6 AND status IN ({allowed})"
    )


def insert_commands(conn: Any, rows: Sequence[Mapping[str, Any]]) -> list[bool]:
    """Insert new commands with their first events (inside the caller's transaction).

    Args:
        conn: the writer thread's connection.
        rows: the ``commands`` columns (``envelope`` may be a dict) plus ``events``, a list of
            (status, reason, ts, source) written to ``command_events`` only when the row is new.

    Returns:
        Which rows were new (a known (command_id, entity_id) is left alone).
    """
    out = []
    for row in rows:
        values = [encode_json(row.get(c)) if c == "envelope" else row.get(c) for c in COMMAND_COLUMNS]
        new = conn.execute(_COMMAND_INSERT, values).rowcount == 1
        if new:
            conn.executemany(
                _COMMAND_EVENT_INSERT,
                [
                    (row["command_id"], row["entity_id"], st, reason, ts, row["updated_ts"], source, 1)
                    for st, reason, ts, source in row.get("events", ())
                ],
            )
        out.append(new)
    return out


def update_commands(
    conn: Any, transitions: Sequence[CommandChange], sends: Sequence[CommandSend]
) -> tuple[list[bool], list[int | None]]:
    """Apply transitions and record delivery attempts (inside the caller's transaction).

    A transition is applied only if the row's status is in its ``allowed_from``; each one is
    recorded in ``command_events``, with ``applied = 0`` when refused (if the command exists).
    A send moves QUEUED → SENT or counts another attempt of a SENT command.

    Returns:
        (applied flag per transition, attempt number per send or None when refused).
    """
    applied: list[bool] = []
    attempts: list[int | None] = []
    for t in transitions:
        sql = _transition_sql(t.stage, t.allowed_from)
        key = (t.command_id, t.entity_id)
        ok = conn.execute(sql, (t.status, t.reason, t.ts, t.recorded_ts, *key)).rowcount == 1
        event = (*key, t.status, t.reason, t.ts, t.recorded_ts, t.source, int(ok))
        if ok:
            conn.execute(_COMMAND_EVENT_INSERT, event)
        else:
            conn.execute(_COMMAND_EVENT_INSERT_IF_KNOWN, (*event, *key))
        applied.append(ok)
    for snd in sends:
        key = (snd.command_id, snd.entity_id)
        row = conn.execute(_COMMAND_SEND, (snd.ts, snd.next_attempt_ts, *key)).fetchone()
        n = None if row is None else int(row[0])
        if n is not None:
            reason = f"delivery attempt {n}"
            conn.execute(_COMMAND_EVENT_INSERT, (*key, "SENT", reason, snd.ts, snd.ts, "lab", 1))
        attempts.append(n)
    return applied, attempts


def decode_envelopes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Decode the ``envelope`` JSON of ``commands`` rows in place; return the rows."""
    for r in rows:
        r["envelope"] = decode_json(r["envelope"])
    return rows
