"""The libSQL store: the lab's database, driven from asyncio through one dedicated thread.

:class:`Store` is what the workers, the synchronizer and the command ledger call. Its parts:
where the database is and how to reach it (:mod:`.connection`), the writer thread that owns
the one connection, serialises every call and translates every error into
:class:`~overwatch_lab.errors.DatabaseError` (:mod:`.writer`), the tables' SQL
(:mod:`.entities_sql`, :mod:`.bulk` for the history tables, :mod:`.commands_sql`) and the
schema with its migrations (:mod:`.schema`). Readers in other threads use :mod:`.queries`.

History inserts are idempotent (``INSERT OR IGNORE`` on the message id), so a retried batch is
harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from overwatch_lab.store.bulk import BulkInsert
from overwatch_lab.store.commands_sql import (
    OPEN_COMMANDS,
    CommandChange,
    CommandSend,
    decode_envelopes,
    insert_commands,
    update_commands,
)
from overwatch_lab.store.connection import encode_json, normalise_location, redact, rows_as_dicts
from overwatch_lab.store.entities_sql import (
    ENTITY_SELECT,
    ENTITY_UPSERT,
    ORG_UPSERT,
    WRITE_BACK,
    entity_out,
    entity_params,
    live_params,
    org_out,
)
from overwatch_lab.store.schema import (
    DETECTION_INSERT_COLUMNS,
    DEVICE_EVENT_INSERT_COLUMNS,
    TELEMETRY_INSERT_COLUMNS,
    migrate,
)
from overwatch_lab.store.writer import Writer

__all__ = ["Store"]

log = logging.getLogger(__name__)

_PRUNE_TELEMETRY = (
    "DELETE FROM telemetry WHERE id IN (SELECT id FROM telemetry WHERE ts < ? ORDER BY ts LIMIT ?)"
)
_COUNTED_TABLES = ("organizations", "entities", "telemetry", "device_events")
_COUNTS = "SELECT " + ", ".join(f"(SELECT count(*) FROM {t}) AS {t}" for t in _COUNTED_TABLES)
_HISTORY_COLUMNS = {
    "telemetry": TELEMETRY_INSERT_COLUMNS,
    "device_events": DEVICE_EVENT_INSERT_COLUMNS,
    "detections": DETECTION_INSERT_COLUMNS,
}


class Store:
    """The lab's libSQL database, driven from asyncio through one dedicated thread.

    Lifecycle: ``Store(location)`` → ``await open()`` → calls → ``await close()``. A store
    opens once; build a new one to reopen. Every method raises :class:`DatabaseError` on a
    database failure, naming the operation, and its subclass :class:`DatabaseUnavailable` on
    an infrastructure fault (the store reconnects by itself on its next call; see
    :mod:`.writer`).

    Args:
        location: a file path (``file:`` prefix allowed) or a libSQL server URL.
        autocheckpoint: False: this store's commits never checkpoint the WAL; the lab's
            :class:`~.checkpoint.Checkpointer` does (a lab's writers all run so).

    Attributes:
        schema_version: the database's schema version once open (None before).

    Raises:
        DatabaseError: the location is empty or an unsupported URL scheme (e.g. ``http://``).
    """

    def __init__(self, location: str, *, autocheckpoint: bool = True) -> None:
        self._db = Writer(normalise_location(location), autocheckpoint=autocheckpoint)
        self._inserts: dict[str, BulkInsert] = {}  # history table → its bulk insert, once open
        self.schema_version: int | None = None

    def __repr__(self) -> str:
        return f"<Store {self._db.state} {redact(self._db.location)}>"

    @property
    def location(self) -> str:
        """The file path or server URL this store writes to."""
        return self._db.location

    @property
    def is_remote(self) -> bool:
        """True for a libSQL server URL, False for a local file."""
        return self._db.remote

    @property
    def is_open(self) -> bool:
        """True between a successful :meth:`open` and :meth:`close`."""
        return self._db.state == "open"

    @property
    def faults(self) -> int:
        """Infrastructure faults seen (each raised as :class:`DatabaseUnavailable`)."""
        return self._db.faults

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        """Connect, set the pragmas and apply pending migrations.

        Raises:
            DatabaseError: already opened, the file or server cannot be opened, or the schema
                is newer than this code knows. The store is closed again on failure.
        """
        self.schema_version = await self._db.open(self._setup)
        log.info(
            "store open: %s (schema version %s, %s)",
            redact(self.location),
            self.schema_version,
            "remote" if self.is_remote else "local file",
        )

    async def close(self) -> None:
        """Close the connection and stop the worker thread. Calling it again does nothing."""
        await self._db.close()

    def _setup(self, conn: Any) -> int:
        """Migrate and build the history inserts (on the writer thread); return the schema version."""
        version = migrate(conn)
        self._inserts = {t: BulkInsert.for_table(conn, t, cols) for t, cols in _HISTORY_COLUMNS.items()}
        return version

    def _insert_groups(self, conn: Any, table: str, groups: Sequence[Sequence[Sequence[Any]]]) -> list[int]:
        return self._inserts[table].run_groups(conn, groups)

    # ------------------------------------------------------------------ organizations
    async def upsert_organization(
        self, org_id: str, name: str, org_type: str, metadata: dict[str, Any] | None, now: str
    ) -> None:
        """Insert or update an organisation; ``created_at`` is kept on update.

        Raises:
            DatabaseError: e.g. ``org_type`` is not an allowed value (CHECK constraint).
        """
        params = (org_id, name, org_type, encode_json(metadata), now, now)
        await self._db.write(f"upsert organization {org_id!r}", ORG_UPSERT, params)

    async def delete_organization(self, org_id: str) -> bool:
        """Delete an organisation and (cascade) its entities; True if it existed."""
        n = await self._db.write(
            f"delete organization {org_id!r}", "DELETE FROM organizations WHERE org_id = ?", (org_id,)
        )
        return n > 0

    async def organizations(self) -> list[dict[str, Any]]:
        """Return every organisation (``metadata`` decoded), ordered by org_id."""
        rows = await self._db.query("read organizations", "SELECT * FROM organizations ORDER BY org_id")
        return [org_out(r) for r in rows]

    async def organization(self, org_id: str) -> dict[str, Any] | None:
        """Return one organisation, or None."""
        rows = await self._db.query(
            f"read organization {org_id!r}", "SELECT * FROM organizations WHERE org_id = ?", (org_id,)
        )
        return org_out(rows[0]) if rows else None

    # ------------------------------------------------------------------ entities
    async def upsert_entity(self, record: Mapping[str, Any], now: str) -> dict[str, Any]:
        """Insert or update an entity from a validated record and return the stored row.

        ``record`` holds the columns of :data:`ENTITY_RECORD_COLUMNS` (other keys are ignored;
        a missing one is NULL). JSON columns may be dicts/lists. On update ``created_at`` and
        ``last_seen`` are kept, ``is_live`` is kept (the synchronizer owns it), and a None
        position column (latitude, longitude, altitude, heading, velocity,
        position_timestamp) keeps the stored value, so a metadata update never erases the live
        position written back from KV.

        Returns:
            The row as stored, JSON decoded, ``is_live`` a bool, with ``org_name``.

        Raises:
            DatabaseError: unknown org (foreign key) or a value outside a CHECK constraint.
        """
        params = entity_params(record, now)
        entity_id = record.get("entity_id")

        def upsert(conn: Any) -> list[dict[str, Any]]:
            conn.execute(ENTITY_UPSERT, params)
            return rows_as_dicts(conn.execute(f"{ENTITY_SELECT} WHERE e.entity_id = ?", (entity_id,)))

        return entity_out((await self._db.transaction(f"upsert entity {entity_id!r}", upsert))[0])

    async def set_entity_status(self, entity_id: str, status: str, now: str) -> bool:
        """Set an entity's status; True if the entity exists.

        Raises:
            DatabaseError: ``status`` is not an allowed value.
        """
        n = await self._db.write(
            f"set status of entity {entity_id!r}",
            "UPDATE entities SET status = ?, updated_at = ? WHERE entity_id = ?",
            (status, now, entity_id),
        )
        return n > 0

    async def delete_entity(self, entity_id: str) -> bool:
        """Delete an entity (its telemetry history stays); True if it existed."""
        n = await self._db.write(
            f"delete entity {entity_id!r}", "DELETE FROM entities WHERE entity_id = ?", (entity_id,)
        )
        return n > 0

    async def entity(self, entity_id: str) -> dict[str, Any] | None:
        """Return one entity row (JSON decoded, with ``org_name``), or None."""
        rows = await self._db.query(
            f"read entity {entity_id!r}", f"{ENTITY_SELECT} WHERE e.entity_id = ?", (entity_id,)
        )
        return entity_out(rows[0]) if rows else None

    async def entities(self) -> list[dict[str, Any]]:
        """Return every entity row (JSON decoded, with ``org_name``), ordered by entity_id."""
        rows = await self._db.query("read entities", f"{ENTITY_SELECT} ORDER BY e.entity_id")
        return [entity_out(r) for r in rows]

    async def entity_ids(self) -> dict[str, str]:
        """Return entity_id → org_id for every entity."""
        rows = await self._db.query("read entity ids", "SELECT entity_id, org_id FROM entities")
        return {r["entity_id"]: r["org_id"] for r in rows}

    # ------------------------------------------------------------------ history
    async def insert_telemetry(self, rows: Sequence[Sequence[Any]]) -> int:
        """Insert telemetry history rows in one transaction; return how many were new.

        Each row is a tuple in :data:`TELEMETRY_INSERT_COLUMNS` order. A row whose
        ``message_uid`` is already stored is ignored, so a redelivered batch never duplicates.
        """
        if not rows:
            return 0
        op = f"insert {len(rows)} telemetry rows"
        return (await self._db.transaction(op, self._insert_groups, "telemetry", (rows,)))[0]

    async def insert_telemetry_groups(self, *groups: Sequence[Sequence[Any]]) -> list[int]:
        """Insert several groups of telemetry rows in one transaction; return how many of each were new.

        Same rows and dedup as :meth:`insert_telemetry`; the groups are inserted in order, so a
        ``message_uid`` in two groups is stored (and counted) once, in the first. The telemetry
        worker passes the applied and the late rows of a batch, to count the late ones stored.
        """
        n = sum(map(len, groups))
        if not n:
            return [0] * len(groups)
        return await self._db.transaction(
            f"insert {n} telemetry rows", self._insert_groups, "telemetry", groups
        )

    async def insert_device_events(self, rows: Sequence[Sequence[Any]]) -> int:
        """Insert device events in one transaction; return how many were new.

        Each row is a tuple in :data:`DEVICE_EVENT_INSERT_COLUMNS` order. A row whose non-null
        ``event_uid`` is already stored is ignored; rows without an ``event_uid`` are always
        inserted.
        """
        if not rows:
            return 0
        op = f"insert {len(rows)} device events"
        return (await self._db.transaction(op, self._insert_groups, "device_events", (rows,)))[0]

    async def insert_event_history(
        self, device_events: Sequence[Sequence[Any]], detections: Sequence[Sequence[Any]]
    ) -> tuple[int, int]:
        """Insert device events and detections in one transaction; return how many of each were new.

        ``device_events`` as for :meth:`insert_device_events`; ``detections`` are tuples in
        :data:`DETECTION_INSERT_COLUMNS` order, unique on ``event_uid`` (a redelivered detection
        is stored once). Both or neither are stored, so the event worker settles a batch's
        history in one step.
        """
        if not device_events and not detections:
            return 0, 0

        def both(conn: Any) -> tuple[int, int]:
            events = self._insert_groups(conn, "device_events", (device_events,))[0]
            return events, self._insert_groups(conn, "detections", (detections,))[0]

        op = f"insert {len(device_events)} device events and {len(detections)} detections"
        return await self._db.transaction(op, both)

    # ------------------------------------------------------------------ live write-back
    async def write_back_live(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Write live KV fields back to ``entities`` in one transaction; return rows changed.

        Each dict has ``entity_id`` and any of latitude, longitude, altitude, heading,
        velocity, position_timestamp, is_live, last_seen. A missing or None value keeps the
        stored one; ``last_seen`` only moves forward. Values are made safe for the CHECK
        constraints: non-finite numbers are dropped, heading is wrapped into [0, 360), and an
        out-of-range latitude or longitude drops both. Unknown entity ids change nothing.
        """
        if not rows:
            return 0
        params = [live_params(r) for r in rows]
        return await self._db.write_many(f"write back {len(rows)} live rows", WRITE_BACK, params)

    async def prune_telemetry(self, before_ts: float, *, limit: int = 50_000) -> int:
        """Delete up to ``limit`` history rows older than ``before_ts`` (epoch s); return how many.

        Bounded per call so one pass never holds the single writer for long; the synchronizer
        calls it every pass until the backlog is gone.
        """
        return await self._db.write("prune telemetry", _PRUNE_TELEMETRY, (before_ts, limit))

    # ------------------------------------------------------------------ reads
    async def counts(self) -> dict[str, int]:
        """Return the row count of each table."""
        rows = await self._db.query("count rows", _COUNTS)
        return {t: int(rows[0][t]) for t in _COUNTED_TABLES}

    async def execute_read(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[dict[str, Any]]:
        """Run an ad-hoc query on the store's thread and return its rows as dicts.

        Meant for reads; it queues behind pending writes (use :mod:`.queries` from other
        threads to read without queuing).
        """
        return await self._db.query("read query", sql, params)

    # ------------------------------------------------------------------ commands (schema v2)
    async def insert_commands(self, rows: Sequence[Mapping[str, Any]]) -> list[bool]:
        """Insert new commands with their first events, in one transaction; return which were new.

        Each row holds the ``commands`` columns (``envelope`` may be a dict) plus ``events``: a
        list of (status, reason, ts, source) written to ``command_events`` only when the row is
        new. A (command_id, entity_id) already stored is left alone (a redelivered or resent
        command), so the call is idempotent.

        Raises:
            DatabaseError: e.g. a status outside the CHECK constraint.
        """
        if not rows:
            return []
        return await self._db.transaction(f"insert {len(rows)} commands", insert_commands, rows)

    async def update_commands(
        self, transitions: Sequence[CommandChange] = (), sends: Sequence[CommandSend] = ()
    ) -> tuple[list[bool], list[int | None]]:
        """Apply status transitions and record delivery attempts in one transaction.

        A transition is applied only if the row's status is in its ``allowed_from`` (the
        lifecycle is enforced here, where writes are serialised, so two workers racing on one
        command cannot move it backwards). Every transition is recorded in ``command_events``,
        with ``applied = 0`` when it was refused (if the command exists at all).

        A send moves QUEUED → SENT (first attempt) or counts another attempt of a SENT command
        and sets its next attempt time; it is refused (None) once the command has moved on.

        Returns:
            (applied flag per transition, attempt number per send or None when refused).
        """
        if not transitions and not sends:
            return [], []
        op = f"update commands ({len(transitions)} transitions, {len(sends)} sends)"
        return await self._db.transaction(op, update_commands, transitions, sends)

    async def open_commands(self) -> list[dict[str, Any]]:
        """Return every command not in a terminal status (``envelope`` decoded), oldest first."""
        return decode_envelopes(await self._db.query("read open commands", OPEN_COMMANDS))

    async def command_rows(self, command_id: str) -> list[dict[str, Any]]:
        """Return the rows of one command (one per target entity), ``envelope`` decoded."""
        rows = await self._db.query(
            f"read command {command_id!r}",
            "SELECT * FROM commands WHERE command_id = ? ORDER BY entity_id",
            (command_id,),
        )
        return decode_envelopes(rows)
