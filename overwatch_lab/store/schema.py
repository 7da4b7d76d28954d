"""The libSQL schema: tables, forward migrations and connection pragmas.

The schema is a list of numbered forward migrations. ``schema_version`` (one row) records the
last one applied; :func:`migrate` applies the pending ones, each in its own ``BEGIN IMMEDIATE``
transaction (so two processes opening the same new file cannot both apply it), and refuses a
database written by newer code. A migration is never edited once released: a change is a new
migration appended to :data:`MIGRATIONS`.

Tables (version 1), with Overwatch's columns and allowed values (docs/wire.md, OVERWATCH-NOTES §8):

- ``organizations``: one row per organisation.
- ``entities``: one row per registered entity; deleted with its organisation (cascade).
  JSON columns (``components``, ``aliases``, ``tags``, ``metadata``, ``video_config``) hold
  JSON text. The live columns (position, heading, velocity, ``is_live``, ``last_seen``) are
  written back from the KV state by the synchronizer.
- ``telemetry``: history, one row per distinct telemetry message, unique on ``message_uid`` so
  a redelivery never duplicates a row. ``ingested_at`` is when the lab stored it (epoch s).
  No foreign key: history outlives a deleted entity.
- ``device_events``: one row per device event (bootsequence, shutdown, ...).

Version 2 (commands, issue 4):

- ``commands``: one row per command and target entity (a broadcast has one row per entity of
  the org, ``broadcast = 1``, ``fanout`` = how many), its current ``status`` and ``reason``, the
  normalised ``envelope`` (JSON), delivery ``attempts`` and the epoch time of each stage
  (``queued_ts`` … ``done_ts``). Written with ``ON CONFLICT DO NOTHING``, so the CHECK on
  ``status`` is enforced (OR IGNORE would skip a bad row silently).
- ``command_events``: every status change (and every ignored late or duplicate ack, with
  ``applied = 0``), time-stamped by whoever caused it (``source``: lab, device, operator).

Version 3 (issue 12, "lose nothing"):

- ``telemetry.late``: 1 when the message was not newer than the live state of its entity and
  message_type when it was stored (a late, reordered or resent message: kept in history, not
  applied to KV), else 0. Rows written before version 3 were all applied, so they get 0.
  No CHECK (see the history-table rule below): the worker only writes 0 or 1.

Version 4 (issue 8, analysts' frames):

- ``detections``: history of ISR detections (until then they lived only in the KV document),
  one row per distinct ``event_uid`` whatever its order (a detection the KV merge ignores as not
  newer than its track's ``last_seen`` still gets its row), with the bbox in normalised image
  coordinates, ``ts`` (epoch s of ``timestamp``) and ``ingested_at`` (when the lab stored it).
  No foreign key, like the other history tables.

Version 5 (issue 8, analysts' frames):

- ``idx_telemetry_entity_type_ts`` on ``telemetry(entity_id, message_type, ts)``: the newest
  message of each type of each entity at or before an instant in a few index seeks (the
  as-of picture, ``Frames.as_of``), without scanning the history before it.

The CHECK constraints are literal SQL: a migration must not change when a Python constant does.
``tests/unit/store/test_schema.py`` checks they agree with :mod:`overwatch_lab.protocol.entities`.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from typing import Any

from overwatch_lab.errors import DatabaseError

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
"""How long a local connection waits for another writer's lock before failing (ms)."""

ENTITY_TYPES: tuple[str, ...] = (
    "aircraft_fixed_wing",
    "aircraft_multirotor",
    "aircraft_vtol",
    "aircraft_helicopter",
    "ground_vehicle_wheeled",
    "ground_vehicle_tracked",
    "surface_vessel_usv",
    "underwater_vehicle",
    "sensor_platform",
    "payload_system",
    "operator_station",
    "waypoint",
    "no_fly_zone",
    "geofence",
)
STATUSES: tuple[str, ...] = ("active", "inactive", "pending", "error", "maintenance", "unknown")
PRIORITIES: tuple[str, ...] = ("critical", "high", "normal", "low")
ORG_TYPES: tuple[str, ...] = ("military", "civilian", "commercial", "ngo")

ENTITY_RECORD_COLUMNS: tuple[str, ...] = (
    "entity_id",
    "org_id",
    "name",
    "entity_type",
    "status",
    "priority",
    "is_live",
    "expiry_time",
    "latitude",
    "longitude",
    "altitude",
    "heading",
    "velocity",
    "accuracy",
    "position_timestamp",
    "components",
    "aliases",
    "tags",
    "source",
    "created_by",
    "classification",
    "metadata",
    "video_config",
)
"""Columns of ``entities`` that an entity record carries (the store sets the three time columns)."""

ENTITY_JSON_COLUMNS: frozenset[str] = frozenset({"components", "aliases", "tags", "metadata", "video_config"})
"""Columns of ``entities`` holding JSON text (dicts/lists in Python)."""

ENTITY_LIVE_COLUMNS: tuple[str, ...] = (
    "latitude",
    "longitude",
    "altitude",
    "heading",
    "velocity",
    "position_timestamp",
)
"""Position columns the synchronizer writes back; an entity update never clears them."""

TELEMETRY_PROJECTED_COLUMNS: tuple[str, ...] = (
    "latitude",
    "longitude",
    "altitude_msl",
    "altitude_relative",
    "vx",
    "vy",
    "vz",
    "roll",
    "pitch",
    "yaw",
    "heading",
    "groundspeed",
    "airspeed",
    "climb_rate",
    "battery_remaining",
    "voltage",
    "current",
    "armed",
    "mode",
)
"""The projected columns of ``telemetry`` (same order as ``protocol.mavlink.HISTORY_COLUMNS``)."""

TELEMETRY_INSERT_COLUMNS: tuple[str, ...] = (
    "message_uid",
    "org_id",
    "entity_id",
    "message_type",
    "timestamp",
    "ts",
    "ingested_at",
    "system_id",
    "component_id",
    *TELEMETRY_PROJECTED_COLUMNS,
    "data",
    "late",
)
"""Column order of one row tuple handed to ``Store.insert_telemetry`` (``late`` added by version 3)."""

DEVICE_EVENT_INSERT_COLUMNS: tuple[str, ...] = (
    "event_uid",
    "org_id",
    "entity_id",
    "event_type",
    "timestamp",
    "ts",
    "data",
)
"""Column order of one row tuple handed to ``Store.insert_device_events``."""

DETECTION_INSERT_COLUMNS: tuple[str, ...] = (
    "event_uid",
    "org_id",
    "entity_id",
    "track_id",
    "label",
    "confidence",
    "x1",
    "y1",
    "x2",
    "y2",
    "timestamp",
    "ts",
    "ingested_at",
)
"""Column order of one row tuple handed to ``Store.insert_event_history`` (``detections``, version 4)."""


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


@dataclass(frozen=True, slots=True)
class Migration:
    """One forward migration.

    Attributes:
        version: the schema version the database has after this migration.
        description: one line saying what it does.
        statements: SQL statements run in order, in one transaction.
    """

    version: int
    description: str
    statements: tuple[str, ...]


_V1 = Migration(
    1,
    "organizations, entities, telemetry history, device events",
    (
        f"""
        CREATE TABLE organizations (
            org_id TEXT PRIMARY KEY NOT NULL,
            name TEXT NOT NULL,
            org_type TEXT NOT NULL CHECK ({_in("org_type", ORG_TYPES)}),
            classification_levels TEXT,
            metadata TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )
        """,
        f"""
        CREATE TABLE entities (
            entity_id TEXT PRIMARY KEY NOT NULL,
            org_id TEXT NOT NULL REFERENCES organizations(org_id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            entity_type TEXT NOT NULL CHECK ({_in("entity_type", ENTITY_TYPES)}),
            status TEXT NOT NULL DEFAULT 'active' CHECK ({_in("status", STATUSES)}),
            priority TEXT NOT NULL DEFAULT 'normal' CHECK ({_in("priority", PRIORITIES)}),
            is_live INTEGER NOT NULL DEFAULT 0 CHECK (is_live IN (0, 1)),
            expiry_time TEXT,
            latitude REAL CHECK (latitude IS NULL OR (latitude >= -90 AND latitude <= 90)),
            longitude REAL CHECK (longitude IS NULL OR (longitude >= -180 AND longitude <= 180)),
            altitude REAL,
            heading REAL CHECK (heading IS NULL OR (heading >= 0 AND heading <= 360)),
            velocity REAL,
            accuracy REAL,
            position_timestamp TEXT,
            components TEXT,
            aliases TEXT,
            tags TEXT,
            source TEXT,
            created_by TEXT,
            classification TEXT,
            metadata TEXT,
            video_config TEXT,
            last_seen TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )
        """,
        "CREATE INDEX idx_entities_org ON entities(org_id)",
        f"""
        CREATE TABLE telemetry (
            id INTEGER PRIMARY KEY,
            message_uid TEXT NOT NULL UNIQUE,
            org_id TEXT NOT NULL,
            entity_id TEXT NOT NULL,
            message_type TEXT NOT NULL,
            timestamp TEXT NOT NULL,
            ts REAL NOT NULL,
            ingested_at REAL NOT NULL,
            system_id INTEGER,
            component_id INTEGER,
            {", ".join(f"{c} {'TEXT' if c == 'mode' else 'INTEGER' if c == 'armed' else 'REAL'}" for c in TELEMETRY_PROJECTED_COLUMNS)},
            data TEXT NOT NULL
        )
        """,
        "CREATE INDEX idx_telemetry_entity_ts ON telemetry(entity_id, ts)",
        "CREATE INDEX idx_telemetry_ts ON telemetry(ts)",
        """
        CREATE TABLE device_events (
            id INTEGER PRIMARY KEY,
            event_uid TEXT UNIQUE,
            org_id TEXT NOT NULL,
            entity_id TEXT NOT NULL,
            event_type TEXT NOT NULL,
            timestamp TEXT NOT NULL,
            ts REAL NOT NULL,
            data TEXT
        )
        """,
        "CREATE INDEX idx_device_events_entity_ts ON device_events(entity_id, ts)",
    ),
)

_COMMAND_STATUSES: tuple[str, ...] = (
    "QUEUED", "SENT", "RECEIVED", "ACCEPTED", "REJECTED", "EXECUTING", "SUCCEEDED", "FAILED", "EXPIRED", "CANCELLED",
)  # fmt: skip
"""Literal copy of ``protocol.commands.CommandStatus`` (a migration must not follow a constant)."""

_V2 = Migration(
    2,
    "commands (one row per command and entity) and command_events (every status change)",
    (
        f"""
        CREATE TABLE commands (
            command_id TEXT NOT NULL,
            entity_id TEXT NOT NULL,
            org_id TEXT NOT NULL,
            broadcast INTEGER NOT NULL DEFAULT 0 CHECK (broadcast IN (0, 1)),
            fanout INTEGER NOT NULL DEFAULT 1,
            action TEXT,
            command_type TEXT,
            status TEXT NOT NULL CHECK ({_in("status", _COMMAND_STATUSES)}),
            reason TEXT,
            envelope TEXT NOT NULL,
            source TEXT,
            issued_at TEXT,
            ttl_s REAL,
            expires_ts REAL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_ts REAL,
            queued_ts REAL NOT NULL,
            sent_ts REAL,
            received_ts REAL,
            accepted_ts REAL,
            executing_ts REAL,
            done_ts REAL,
            updated_ts REAL NOT NULL,
            PRIMARY KEY (command_id, entity_id)
        )
        """,
        "CREATE INDEX idx_commands_status ON commands(status)",
        "CREATE INDEX idx_commands_entity ON commands(entity_id, queued_ts)",
        "CREATE INDEX idx_commands_queued ON commands(queued_ts)",
        """
        CREATE TABLE command_events (
            id INTEGER PRIMARY KEY,
            command_id TEXT NOT NULL,
            entity_id TEXT NOT NULL,
            status TEXT NOT NULL,
            reason TEXT,
            ts REAL NOT NULL,
            recorded_ts REAL NOT NULL,
            source TEXT NOT NULL,
            applied INTEGER NOT NULL DEFAULT 1
        )
        """,
        "CREATE INDEX idx_command_events_command ON command_events(command_id, entity_id, id)",
    ),
)

_V3 = Migration(
    3,
    "telemetry.late: history keeps late messages and marks them",
    ("ALTER TABLE telemetry ADD COLUMN late INTEGER NOT NULL DEFAULT 0",),
)

_V4 = Migration(
    4,
    "detections: history of ISR detections, one row per event_uid",
    (
        """
        CREATE TABLE detections (
            id INTEGER PRIMARY KEY,
            event_uid TEXT NOT NULL UNIQUE,
            org_id TEXT NOT NULL,
            entity_id TEXT NOT NULL,
            track_id TEXT NOT NULL,
            label TEXT NOT NULL,
            confidence REAL NOT NULL,
            x1 REAL NOT NULL,
            y1 REAL NOT NULL,
            x2 REAL NOT NULL,
            y2 REAL NOT NULL,
            timestamp TEXT NOT NULL,
            ts REAL NOT NULL,
            ingested_at REAL NOT NULL
        )
        """,
        "CREATE INDEX idx_detections_entity_ts ON detections(entity_id, ts)",
        "CREATE INDEX idx_detections_ts ON detections(ts)",
    ),
)

_V5 = Migration(
    5,
    "telemetry index on (entity_id, message_type, ts): as-of pictures by index seeks",
    ("CREATE INDEX idx_telemetry_entity_type_ts ON telemetry(entity_id, message_type, ts)",),
)

MIGRATIONS: tuple[Migration, ...] = (_V1, _V2, _V3, _V4, _V5)
"""Every migration, in version order (1, 2, ...)."""

SCHEMA_VERSION: int = MIGRATIONS[-1].version
"""The schema version this code writes and understands."""

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
)
"""


def apply_pragmas(conn: Any, *, remote: bool) -> None:
    """Set the connection pragmas.

    A local file gets ``journal_mode=WAL`` (readers never block the writer),
    ``synchronous=NORMAL`` (durable across a process crash; a power cut may lose the last
    transactions), ``foreign_keys=ON`` (cascade deletes) and ``busy_timeout``. A libSQL server
    manages its own journal, so a remote connection only gets ``foreign_keys=ON``.

    Raises:
        sqlite3.Error: the connection refused a pragma (translated by the caller).
    """
    conn.execute("PRAGMA foreign_keys=ON")
    if remote:
        return
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()
    if mode is None or str(mode[0]).lower() != "wal":
        log.warning("journal_mode=WAL refused (got %r): concurrent readers will block the writer", mode)
    conn.execute("PRAGMA synchronous=NORMAL")


def rollback_quietly(conn: Any) -> None:
    """Roll back the open transaction, if any, without hiding the error that caused it."""
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error as exc:  # no transaction open (sqlite already rolled it back)
        log.debug("rollback: %s", exc)


def current_version(conn: Any) -> int:
    """Return the schema version recorded in the database (0 for a new database)."""
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if row is None:
        return 0
    row = conn.execute("SELECT version FROM schema_version WHERE id = 1").fetchone()
    return 0 if row is None else int(row[0])


def migrate(conn: Any, migrations: tuple[Migration, ...] = MIGRATIONS) -> int:
    """Bring the database up to the newest migration and return its version.

    Each pending migration runs in its own ``BEGIN IMMEDIATE`` transaction together with the
    version update; the version is read again inside it, so a migration another process applied
    meanwhile is skipped. Calling it on an up-to-date database changes nothing.

    Args:
        conn: a DB-API connection from ``libsql_client.dbapi2.connect`` opened with
            ``isolation_level=None`` (explicit transactions).
        migrations: the migrations to apply (tests pass a longer list).

    Returns:
        The schema version of the database afterwards.

    Raises:
        DatabaseError: the database is newer than ``migrations`` knows, or a statement failed
            (the migration is rolled back; earlier ones stay applied).
    """
    newest = migrations[-1].version if migrations else 0
    try:
        version = current_version(conn)
        if version > newest:
            raise DatabaseError(
                f"database schema version {version} is newer than this code knows ({newest}); "
                "upgrade overwatch-lab or use another database file"
            )
        for migration in migrations:
            if migration.version <= version:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(_VERSION_TABLE)
                version = current_version(conn)
                if migration.version > version:
                    for statement in migration.statements:
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO schema_version (id, version) VALUES (1, ?) "
                        "ON CONFLICT(id) DO UPDATE SET version = excluded.version",
                        (migration.version,),
                    )
                    version = migration.version
                    log.info("schema migrated to version %d: %s", version, migration.description)
                conn.execute("COMMIT")
            except BaseException:
                rollback_quietly(conn)
                raise
    except sqlite3.Error as exc:
        raise DatabaseError(f"schema migration failed: {exc}") from exc
    return version
