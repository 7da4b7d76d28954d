"""The libSQL store: one connection on one dedicated thread, an async API for the event loop.

Every call runs on a single worker thread (``ThreadPoolExecutor(max_workers=1)``, threads named
``overwatch-db-*``) that owns the one persistent connection. So a large batched write never
blocks the event loop that consumes NATS, calls are serialised (SQLite's single-writer rule
holds inside the process), and each write is one explicit ``BEGIN IMMEDIATE`` … ``COMMIT``.
Readers in other threads or processes use their own connections (see :mod:`.queries`); WAL
mode lets them read while this thread writes.

The location is a local file path (the default; created with its parent folder) or a libSQL
server URL (``libsql://``, ``ws://``, ``wss://``; an auth token goes in the URL as
``?authToken=...``). Both go through ``libsql_client.dbapi2.connect``: a path gives a stdlib
``sqlite3.Connection``, a URL a Hrana connection with the same DB-API, so there is one code
path. **The URL path is not exercised by the test suite**: no libSQL server (sqld) can be
installed on the development machine. Differences that matter there: the Hrana connection has
no ``total_changes`` (row counts come from ``cursor.rowcount``, which both implement) and the
local-only pragmas (WAL, synchronous, busy_timeout) are skipped.

Errors from sqlite3 / libsql / the file system are translated to :class:`DatabaseError` naming
the operation; an infrastructure fault (disk full, read-only, locked, I/O error, unreachable
server: see :mod:`.faults`) to its subclass :class:`DatabaseUnavailable`. After such a fault the
store closes its connection (rolling back any open transaction) and opens a fresh one on its
next call, so it recovers by itself once the fault clears: a file system remounted, a lock
released, a server back, a Hrana connection that died. Measured: a local connection survives
SQLITE_FULL by itself, but holding it open keeps the files busy (a read-only remount is refused
while a file is open for writing) and a dead Hrana connection never comes back. A caller cancelled while its call runs gets ``CancelledError`` at once, but the
call itself still completes (or rolls back) on the worker thread: a thread cannot be
interrupted. History inserts are idempotent (``INSERT OR IGNORE`` on the message id), so a
retried batch is harmless.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import math
import operator
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from libsql_client import LibsqlError, dbapi2

from overwatch_lab.errors import DatabaseError, DatabaseUnavailable
from overwatch_lab.store.faults import is_unavailable
from overwatch_lab.store.schema import (
    BUSY_TIMEOUT_MS,
    DEVICE_EVENT_INSERT_COLUMNS,
    ENTITY_JSON_COLUMNS,
    ENTITY_LIVE_COLUMNS,
    ENTITY_RECORD_COLUMNS,
    TELEMETRY_INSERT_COLUMNS,
    apply_pragmas,
    migrate,
    rollback_quietly,
)

__all__ = [
    "COMMAND_COLUMNS",
    "CommandChange",
    "CommandSend",
    "DB_ERRORS",
    "DEVICE_EVENT_INSERT_COLUMNS",
    "REMOTE_SCHEMES",
    "TELEMETRY_INSERT_COLUMNS",
    "Store",
    "connect",
    "decode_json",
    "is_remote",
    "normalise_location",
    "redact",
    "rows_as_dicts",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

REMOTE_SCHEMES: tuple[str, ...] = ("libsql://", "ws://", "wss://")
"""URL prefixes that name a libSQL server (``libsql://`` means ``wss://``)."""

_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_TOKEN_RE = re.compile(r"(authToken=)[^&]*")

# Errors a DB call can raise that we translate (Hrana's errors subclass sqlite3.Error; OSError
# covers the parent folder, and TimeoutError from a Hrana call that took longer than `timeout`).
DB_ERRORS = (sqlite3.Error, OSError, LibsqlError)


def is_remote(location: str) -> bool:
    """Return True if ``location`` is a libSQL server URL rather than a local file."""
    return location.startswith(REMOTE_SCHEMES)


def redact(location: str) -> str:
    """Return ``location`` with any ``authToken`` value hidden, for messages and logs."""
    return _TOKEN_RE.sub(r"\1***", location)


def normalise_location(location: str) -> str:
    """Return the location to connect to (``file:`` prefix removed, ``~`` expanded).

    Raises:
        DatabaseError: empty, or a URL scheme other than a file or a libSQL server.
    """
    if not isinstance(location, str) or not location:
        raise DatabaseError(f"database location must be a non-empty string, got {location!r}")
    if location.startswith("file:"):
        location = location.removeprefix("file:").removeprefix("//")
    if _SCHEME_RE.match(location) and not is_remote(location):
        raise DatabaseError(
            f"unsupported database URL {redact(location)!r}: use a file path or a libSQL server URL "
            f"({', '.join(REMOTE_SCHEMES)}); http(s):// has no interactive transactions"
        )
    if not is_remote(location) and location.startswith("~"):
        location = str(Path(location).expanduser())
    return location


def connect(location: str, *, read_only: bool = False) -> Any:
    """Open a DB-API connection with explicit transactions (``isolation_level=None``).

    Args:
        location: a file path or a libSQL server URL.
        read_only: for a local file, open it read-only (``mode=ro``): a missing file is an
            error instead of being created. Ignored for a URL.

    Returns:
        A ``sqlite3.Connection`` (file) or a Hrana connection (URL) bound to the calling thread.

    Raises:
        sqlite3.Error, OSError, LibsqlError: the caller translates them.
    """
    timeout = BUSY_TIMEOUT_MS / 1000
    if is_remote(location):
        return dbapi2.connect(location, timeout=timeout, isolation_level=None)
    if read_only and location != ":memory:":
        uri = Path(location).expanduser().resolve().as_uri() + "?mode=ro"
        return dbapi2.connect(uri, timeout=timeout, isolation_level=None, uri=True)
    return dbapi2.connect(location, timeout=timeout, isolation_level=None)


def rows_as_dicts(cursor: Any) -> list[dict[str, Any]]:
    """Return a cursor's remaining rows as dicts keyed by column name."""
    if cursor.description is None:
        return []
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def decode_json(value: Any) -> Any:
    """Decode a JSON text column; None and non-JSON text come back unchanged."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:  # written by another tool as plain text: hand it back unchanged
        return value


def _encode_json(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def _entity_out(row: dict[str, Any]) -> dict[str, Any]:
    for column in ENTITY_JSON_COLUMNS:
        row[column] = decode_json(row.get(column))
    if row.get("is_live") is not None:
        row["is_live"] = bool(row["is_live"])
    return row


def _org_out(row: dict[str, Any]) -> dict[str, Any]:
    row["metadata"] = decode_json(row.get("metadata"))
    return row


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _live_params(row: Mapping[str, Any]) -> tuple[Any, ...]:
    lat, lon = _finite(row.get("latitude")), _finite(row.get("longitude"))
    if (lat is not None and not -90.0 <= lat <= 90.0) or (lon is not None and not -180.0 <= lon <= 180.0):
        lat = lon = None  # a position is a pair: drop both rather than store half of a bad fix
    heading = _finite(row.get("heading"))
    if heading is not None:
        heading %= 360.0
        if heading >= 360.0:  # -1e-20 % 360.0 == 360.0
            heading = 0.0
    is_live = row.get("is_live")
    position_ts = row.get("position_timestamp")
    last_seen = row.get("last_seen")
    return (
        lat,
        lon,
        _finite(row.get("altitude")),
        heading,
        _finite(row.get("velocity")),
        position_ts if isinstance(position_ts, str) else None,
        None if is_live is None else int(bool(is_live)),
        last_seen if isinstance(last_seen, str) else None,
        row["entity_id"],
    )


_ENTITY_SELECT = (
    "SELECT e.*, o.name AS org_name FROM entities AS e LEFT JOIN organizations AS o ON o.org_id = e.org_id"
)

_ENTITY_UPDATE_SET = ", ".join(
    f"{c} = COALESCE(excluded.{c}, entities.{c})" if c in ENTITY_LIVE_COLUMNS else f"{c} = excluded.{c}"
    for c in ENTITY_RECORD_COLUMNS
    if c not in ("entity_id", "is_live")
)
_ENTITY_UPSERT = (
    f"INSERT INTO entities ({', '.join(ENTITY_RECORD_COLUMNS)}, created_at, updated_at) "
    f"VALUES ({', '.join('?' * (len(ENTITY_RECORD_COLUMNS) + 2))}) "
    f"ON CONFLICT(entity_id) DO UPDATE SET {_ENTITY_UPDATE_SET}, updated_at = excluded.updated_at"
)

_ORG_UPSERT = (
    "INSERT INTO organizations (org_id, name, org_type, metadata, created_at, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(org_id) DO UPDATE SET name = excluded.name, "
    "org_type = excluded.org_type, metadata = excluded.metadata, updated_at = excluded.updated_at"
)

MAX_PARAMS_PER_STATEMENT = 999
"""Bound parameters per statement: SQLite's historic limit, safe on every build and on sqld."""


class _BulkInsert:
    """``INSERT OR IGNORE`` of many rows (a duplicate id is skipped), several rows per statement.

    Binding dominates the cost of a wide row in ``executemany``; a multi-row ``VALUES`` of
    ``per`` rows cuts the per-statement overhead (measured +15-25 % for telemetry's 29
    columns) and releases the GIL for longer stretches of SQLite work.

    OR IGNORE also skips a row that breaks NOT NULL, silently. So the NOT NULL columns (read
    from the live schema) are checked here first, at C speed (about 2 % of the insert); a
    ``None`` there fails the whole batch. ``ON CONFLICT(id) DO NOTHING`` would need no check
    but measured 15 % slower. The history tables have no CHECK constraints (a schema test
    guards this), so nothing else can be ignored.
    """

    def __init__(self, table: str, columns: tuple[str, ...], not_null: Sequence[str]) -> None:
        self.table = table
        self.columns = columns
        self.width = len(columns)
        self.per = max(1, MAX_PARAMS_PER_STATEMENT // self.width)
        self._required = [i for i, c in enumerate(columns) if c in not_null]
        one = f"({', '.join('?' * self.width)})"
        head = f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES "
        self.sql_one = head + one
        self.sql_full = head + ", ".join([one] * self.per)

    @classmethod
    def for_table(cls, conn: Any, table: str, columns: tuple[str, ...]) -> _BulkInsert:
        """Build the insert, reading the table's NOT NULL columns from the database."""
        info = rows_as_dicts(conn.execute(f"PRAGMA table_info({table})"))
        return cls(table, columns, [r["name"] for r in info if r["notnull"]])

    def check(self, rows: Sequence[Sequence[Any]]) -> None:
        """Raise DatabaseError if a row has the wrong width or a None in a NOT NULL column."""
        widths = set(map(len, rows))
        if widths != {self.width}:
            raise DatabaseError(
                f"{self.table} rows must have {self.width} values in the order {self.columns}; "
                f"got rows of {sorted(widths)} values"
            )
        required = self._required
        if len(required) > 1:
            has_null = any(
                map(operator.contains, map(operator.itemgetter(*required), rows), itertools.repeat(None))
            )
        else:
            has_null = bool(required) and any(row[required[0]] is None for row in rows)
        if not has_null:
            return
        for n, row in enumerate(rows):
            for i in required:
                if row[i] is None:
                    raise DatabaseError(
                        f"{self.table} row {n}: {self.columns[i]} is None but the column is NOT NULL"
                    )

    def run(self, conn: Any, rows: Sequence[Sequence[Any]]) -> int:
        """Insert ``rows`` on ``conn`` (inside the caller's transaction); return rows inserted.

        Raises:
            DatabaseError: a bad row (see :meth:`check`); packing rows would otherwise shift
                values of a short row silently into the wrong columns.
        """
        self.check(rows)
        per = self.per
        full = len(rows) - len(rows) % per
        inserted = 0
        if full:
            chain = itertools.chain.from_iterable
            packed = (tuple(chain(rows[i : i + per])) for i in range(0, full, per))
            inserted += conn.executemany(self.sql_full, packed).rowcount
        if full < len(rows):
            inserted += conn.executemany(self.sql_one, rows[full:]).rowcount
        return int(inserted)


# None keeps the column; last_seen only moves forward (canonical timestamps sort as time).
_PRUNE_TELEMETRY = (
    "DELETE FROM telemetry WHERE id IN (SELECT id FROM telemetry WHERE ts < ? ORDER BY ts LIMIT ?)"
)
_WRITE_BACK = """
UPDATE entities SET
    latitude = COALESCE(?1, latitude),
    longitude = COALESCE(?2, longitude),
    altitude = COALESCE(?3, altitude),
    heading = COALESCE(?4, heading),
    velocity = COALESCE(?5, velocity),
    position_timestamp = COALESCE(?6, position_timestamp),
    is_live = COALESCE(?7, is_live),
    last_seen = CASE WHEN ?8 IS NULL OR (last_seen IS NOT NULL AND last_seen >= ?8)
                     THEN last_seen ELSE ?8 END
WHERE entity_id = ?9
"""

_COUNTED_TABLES = ("organizations", "entities", "telemetry", "device_events")
_COUNTS = "SELECT " + ", ".join(f"(SELECT count(*) FROM {t}) AS {t}" for t in _COUNTED_TABLES)


class Store:
    """The lab's libSQL database, driven from asyncio through one dedicated thread.

    Lifecycle: ``Store(location)`` → ``await open()`` → calls → ``await close()``. A store
    opens once; build a new one to reopen. Every method raises :class:`DatabaseError` on a
    database failure, naming the operation.

    Args:
        location: a file path (``file:`` prefix allowed) or a libSQL server URL.

    Attributes:
        schema_version: the database's schema version once open (None before).

    Raises:
        DatabaseError: the location is empty or an unsupported URL scheme (e.g. ``http://``).
    """

    def __init__(self, location: str) -> None:
        self._location = normalise_location(location)
        self._remote = is_remote(self._location)
        self._executor: ThreadPoolExecutor | None = None
        self._conn: Any = None
        self._telemetry_insert: _BulkInsert | None = None
        self._device_event_insert: _BulkInsert | None = None
        self._state = "new"
        self._dropped_at: float | None = None  # monotonic time the connection was dropped after a fault
        self.schema_version: int | None = None
        self.faults = 0
        """Infrastructure faults seen (each raised as :class:`DatabaseUnavailable`)."""

    def __repr__(self) -> str:
        return f"<Store {self._state} {redact(self._location)}>"

    @property
    def location(self) -> str:
        """The file path or server URL this store writes to."""
        return self._location

    @property
    def is_remote(self) -> bool:
        """True for a libSQL server URL, False for a local file."""
        return self._remote

    @property
    def is_open(self) -> bool:
        """True between a successful :meth:`open` and :meth:`close`."""
        return self._state == "open"

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        """Connect, set the pragmas and apply pending migrations.

        Raises:
            DatabaseError: already opened, the file or server cannot be opened, or the schema
                is newer than this code knows. The store is closed again on failure.
        """
        if self._state != "new":
            raise DatabaseError(f"store {redact(self._location)} was already opened (state {self._state})")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="overwatch-db")
        self._state = "opening"
        try:
            self.schema_version = await self._submit("open", self._open_sync)
        except BaseException:
            await self.close()
            raise
        self._state = "open"
        log.info(
            "store open: %s (schema version %s, %s)",
            redact(self._location),
            self.schema_version,
            "remote" if self._remote else "local file",
        )

    async def close(self) -> None:
        """Close the connection and stop the worker thread. Calling it again does nothing."""
        executor, self._executor = self._executor, None
        self._state = "closed"
        if executor is None:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(executor, self._close_sync)
        finally:
            # The close job is the last one queued; wait only when it ran (a cancelled close
            # lets the thread finish its queue in the background).
            executor.shutdown(wait=self._conn is None)

    def _open_sync(self) -> int:
        if not self._remote and self._location != ":memory:":
            Path(self._location).parent.mkdir(parents=True, exist_ok=True)
        self._conn = connect(self._location)
        apply_pragmas(self._conn, remote=self._remote)
        version = migrate(self._conn)
        self._telemetry_insert = _BulkInsert.for_table(self._conn, "telemetry", TELEMETRY_INSERT_COLUMNS)
        self._device_event_insert = _BulkInsert.for_table(
            self._conn, "device_events", DEVICE_EVENT_INSERT_COLUMNS
        )
        return version

    def _close_sync(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if not self._remote:
                conn.execute("PRAGMA optimize")
            conn.close()
        except DB_ERRORS as exc:
            log.warning("closing store %s: %s", redact(self._location), exc)

    # ------------------------------------------------------------------ plumbing
    async def _submit(self, op: str, fn: Callable[..., T], *args: Any) -> T:
        executor = self._executor
        if executor is None or self._state not in ("open", "opening"):
            raise DatabaseError(f"{op}: store {redact(self._location)} is not open (state {self._state})")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, self._guarded, op, fn, args)

    def _guarded(self, op: str, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            if op != "open" and self._conn is None:
                if self._dropped_at is None or self._state != "open":
                    raise DatabaseError(f"{op}: store {redact(self._location)} is closed")
                self._reconnect()
            result = fn(*args)
        except DatabaseError:
            raise
        except DB_ERRORS as exc:
            if not is_unavailable(exc):
                raise DatabaseError(f"{op} failed on {redact(self._location)}: {exc}") from exc
            self.faults += 1
            if op != "open":
                self._drop_connection()
            raise DatabaseUnavailable(f"{op} failed on {redact(self._location)}: {exc}") from exc
        if self._dropped_at is not None:  # debug: a read may work while writes still fail
            log.debug(
                "store %s answered again %.1f s after a fault (%s)",
                redact(self._location),
                time.monotonic() - self._dropped_at,
                op,
            )
            self._dropped_at = None
        return result

    def _drop_connection(self) -> None:
        """Close the connection after an infrastructure fault; the next call opens a new one."""
        conn, self._conn = self._conn, None
        if self._dropped_at is None:
            self._dropped_at = time.monotonic()
        if conn is None:
            return
        try:
            conn.close()  # rolls back a transaction still open
        except DB_ERRORS as exc:
            log.debug("closing faulty connection to %s: %s", redact(self._location), exc)

    def _reconnect(self) -> None:
        conn = connect(self._location)
        try:
            apply_pragmas(conn, remote=self._remote)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            rollback_quietly(conn)
            raise

    def _query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[dict[str, Any]]:
        return rows_as_dicts(self._conn.execute(sql, params))

    def _write(self, sql: str, params: Sequence[Any]) -> int:
        with self._transaction() as conn:
            return int(conn.execute(sql, params).rowcount)

    def _insert(self, bulk: _BulkInsert, rows: Sequence[Sequence[Any]]) -> int:
        with self._transaction() as conn:
            return bulk.run(conn, rows)

    def _insert_groups(self, bulk: _BulkInsert, groups: Sequence[Sequence[Sequence[Any]]]) -> list[int]:
        with self._transaction() as conn:
            return [bulk.run(conn, rows) if rows else 0 for rows in groups]

    def _write_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        with self._transaction() as conn:
            return int(conn.executemany(sql, rows).rowcount)

    # ------------------------------------------------------------------ organizations
    async def upsert_organization(
        self, org_id: str, name: str, org_type: str, metadata: dict[str, Any] | None, now: str
    ) -> None:
        """Insert or update an organisation; ``created_at`` is kept on update.

        Raises:
            DatabaseError: e.g. ``org_type`` is not an allowed value (CHECK constraint).
        """
        params = (org_id, name, org_type, _encode_json(metadata), now, now)
        await self._submit(f"upsert organization {org_id!r}", self._write, _ORG_UPSERT, params)

    async def delete_organization(self, org_id: str) -> bool:
        """Delete an organisation and (cascade) its entities; True if it existed."""
        n = await self._submit(
            f"delete organization {org_id!r}",
            self._write,
            "DELETE FROM organizations WHERE org_id = ?",
            (org_id,),
        )
        return n > 0

    async def organizations(self) -> list[dict[str, Any]]:
        """Return every organisation (``metadata`` decoded), ordered by org_id."""
        rows = await self._submit(
            "read organizations", self._query, "SELECT * FROM organizations ORDER BY org_id"
        )
        return [_org_out(r) for r in rows]

    async def organization(self, org_id: str) -> dict[str, Any] | None:
        """Return one organisation, or None."""
        rows = await self._submit(
            f"read organization {org_id!r}",
            self._query,
            "SELECT * FROM organizations WHERE org_id = ?",
            (org_id,),
        )
        return _org_out(rows[0]) if rows else None

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
        params = [
            _encode_json(record.get(c)) if c in ENTITY_JSON_COLUMNS else record.get(c)
            for c in ENTITY_RECORD_COLUMNS
        ]
        params[ENTITY_RECORD_COLUMNS.index("is_live")] = int(bool(record.get("is_live")))
        params += [now, now]
        entity_id = record.get("entity_id")

        def upsert() -> dict[str, Any]:
            with self._transaction() as conn:
                conn.execute(_ENTITY_UPSERT, params)
                rows = rows_as_dicts(conn.execute(f"{_ENTITY_SELECT} WHERE e.entity_id = ?", (entity_id,)))
            return _entity_out(rows[0])

        return await self._submit(f"upsert entity {entity_id!r}", upsert)

    async def set_entity_status(self, entity_id: str, status: str, now: str) -> bool:
        """Set an entity's status; True if the entity exists.

        Raises:
            DatabaseError: ``status`` is not an allowed value.
        """
        n = await self._submit(
            f"set status of entity {entity_id!r}",
            self._write,
            "UPDATE entities SET status = ?, updated_at = ? WHERE entity_id = ?",
            (status, now, entity_id),
        )
        return n > 0

    async def delete_entity(self, entity_id: str) -> bool:
        """Delete an entity (its telemetry history stays); True if it existed."""
        n = await self._submit(
            f"delete entity {entity_id!r}",
            self._write,
            "DELETE FROM entities WHERE entity_id = ?",
            (entity_id,),
        )
        return n > 0

    async def entity(self, entity_id: str) -> dict[str, Any] | None:
        """Return one entity row (JSON decoded, with ``org_name``), or None."""
        rows = await self._submit(
            f"read entity {entity_id!r}", self._query, f"{_ENTITY_SELECT} WHERE e.entity_id = ?", (entity_id,)
        )
        return _entity_out(rows[0]) if rows else None

    async def entities(self) -> list[dict[str, Any]]:
        """Return every entity row (JSON decoded, with ``org_name``), ordered by entity_id."""
        rows = await self._submit("read entities", self._query, f"{_ENTITY_SELECT} ORDER BY e.entity_id")
        return [_entity_out(r) for r in rows]

    async def entity_ids(self) -> dict[str, str]:
        """Return entity_id → org_id for every entity."""
        rows = await self._submit("read entity ids", self._query, "SELECT entity_id, org_id FROM entities")
        return {r["entity_id"]: r["org_id"] for r in rows}

    # ------------------------------------------------------------------ history
    async def insert_telemetry(self, rows: Sequence[Sequence[Any]]) -> int:
        """Insert telemetry history rows in one transaction; return how many were new.

        Each row is a tuple in :data:`TELEMETRY_INSERT_COLUMNS` order. A row whose
        ``message_uid`` is already stored is ignored, so a redelivered batch never duplicates.
        """
        if not rows:
            return 0
        return await self._submit(
            f"insert {len(rows)} telemetry rows", self._insert, self._telemetry_insert, rows
        )

    async def insert_telemetry_groups(self, *groups: Sequence[Sequence[Any]]) -> list[int]:
        """Insert several groups of telemetry rows in one transaction; return how many of each were new.

        Same rows and dedup as :meth:`insert_telemetry`; the groups are inserted in order, so a
        ``message_uid`` in two groups is stored (and counted) once, in the first. The telemetry
        worker passes the applied and the late rows of a batch, to count the late ones stored.
        """
        n = sum(map(len, groups))
        if not n:
            return [0] * len(groups)
        return await self._submit(
            f"insert {n} telemetry rows", self._insert_groups, self._telemetry_insert, groups
        )

    async def insert_device_events(self, rows: Sequence[Sequence[Any]]) -> int:
        """Insert device events in one transaction; return how many were new.

        Each row is a tuple in :data:`DEVICE_EVENT_INSERT_COLUMNS` order. A row whose non-null
        ``event_uid`` is already stored is ignored; rows without an ``event_uid`` are always
        inserted.
        """
        if not rows:
            return 0
        return await self._submit(
            f"insert {len(rows)} device events", self._insert, self._device_event_insert, rows
        )

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
        params = [_live_params(r) for r in rows]
        return await self._submit(f"write back {len(rows)} live rows", self._write_many, _WRITE_BACK, params)

    async def prune_telemetry(self, before_ts: float, *, limit: int = 50_000) -> int:
        """Delete up to ``limit`` history rows older than ``before_ts`` (epoch s); return how many.

        Bounded per call so one pass never holds the single writer for long; the synchronizer
        calls it every pass until the backlog is gone.
        """
        return await self._submit("prune telemetry", self._write, _PRUNE_TELEMETRY, (before_ts, limit))

    # ------------------------------------------------------------------ reads
    async def counts(self) -> dict[str, int]:
        """Return the row count of each table."""
        rows = await self._submit("count rows", self._query, _COUNTS)
        return {t: int(rows[0][t]) for t in _COUNTED_TABLES}

    async def execute_read(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[dict[str, Any]]:
        """Run an ad-hoc query on the store's thread and return its rows as dicts.

        Meant for reads; it queues behind pending writes (use :mod:`.queries` from other
        threads to read without queuing).
        """
        return await self._submit("read query", self._query, sql, params)

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

        def insert() -> list[bool]:
            out = []
            with self._transaction() as conn:
                for row in rows:
                    values = [
                        _encode_json(row.get(c)) if c == "envelope" else row.get(c) for c in COMMAND_COLUMNS
                    ]
                    new = conn.execute(_COMMAND_INSERT, values).rowcount == 1
                    if new:
                        conn.executemany(
                            _COMMAND_EVENT_INSERT,
                            [
                                (
                                    row["command_id"],
                                    row["entity_id"],
                                    st,
                                    reason,
                                    ts,
                                    row["updated_ts"],
                                    source,
                                    1,
                                )
                                for st, reason, ts, source in row.get("events", ())
                            ],
                        )
                    out.append(new)
            return out

        return await self._submit(f"insert {len(rows)} commands", insert)

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

        def update() -> tuple[list[bool], list[int | None]]:
            applied: list[bool] = []
            attempts: list[int | None] = []
            with self._transaction() as conn:
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

        return await self._submit(
            f"update commands ({len(transitions)} transitions, {len(sends)} sends)", update
        )

    async def open_commands(self) -> list[dict[str, Any]]:
        """Return every command not in a terminal status (``envelope`` decoded), oldest first."""
        rows = await self._submit(
            "read open commands",
            self._query,
            f"SELECT * FROM commands WHERE status IN ({', '.join(repr(s) for s in _OPEN_STATUSES)}) "
            "ORDER BY queued_ts",
        )
        for r in rows:
            r["envelope"] = decode_json(r["envelope"])
        return rows

    async def command_rows(self, command_id: str) -> list[dict[str, Any]]:
        """Return the rows of one command (one per target entity), ``envelope`` decoded."""
        rows = await self._submit(
            f"read command {command_id!r}",
            self._query,
            "SELECT * FROM commands WHERE command_id = ? ORDER BY entity_id",
            (command_id,),
        )
        for r in rows:
            r["envelope"] = decode_json(r["envelope"])
        return rows


COMMAND_COLUMNS: tuple[str, ...] = (
    "command_id", "entity_id", "org_id", "broadcast", "fanout", "action", "command_type", "status",
    "reason", "envelope", "source", "issued_at", "ttl_s", "expires_ts", "next_attempt_ts", "queued_ts",
    "done_ts", "updated_ts",
)  # fmt: skip
"""Columns :meth:`Store.insert_commands` writes (the other stages and attempts start empty)."""

_OPEN_STATUSES = ("QUEUED", "SENT", "RECEIVED", "ACCEPTED", "EXECUTING")
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


@functools.lru_cache(maxsize=64)
def _transition_sql(stage: str, allowed_from: tuple[str, ...]) -> str:
    if stage not in _STAGES or not allowed_from:
        raise DatabaseError(f"bad command transition: stage {stage!r}, allowed from {allowed_from!r}")
    allowed = ", ".join(f"'{s}'" for s in allowed_from if s.isalpha())
    return (
        f"UPDATE commands SET status = ?1, reason = COALESCE(?2, reason), {stage}_ts = COALESCE({stage}_ts, ?3), "
        f"updated_ts = ?4 WHERE command_id = ?5 AND entity_id = ?6 AND status IN ({allowed})"
    )


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
