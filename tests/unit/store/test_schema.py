"""Schema, migrations and pragmas, on a real SQLite file in tmp_path."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from overwatch_lab.errors import DatabaseError
from overwatch_lab.protocol import entities as proto_entities
from overwatch_lab.protocol import mavlink
from overwatch_lab.store import schema
from overwatch_lab.store.connection import connect

NOW = "2026-11-27T08:00:00.000000Z"


@pytest.fixture
def conn(tmp_path: Path):
    c = connect(str(tmp_path / "schema.db"))
    schema.apply_pragmas(c, remote=False)
    yield c
    c.close()


@pytest.fixture
def migrated(conn):
    schema.migrate(conn)
    conn.execute(
        "INSERT INTO organizations (org_id, name, org_type, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
        ("org-a", "Org A", "military", NOW, NOW),
    )
    return conn


def _tables(conn) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")}


def _insert_entity(conn, **overrides) -> None:
    row = {
        "entity_id": "e1",
        "org_id": "org-a",
        "name": "E1",
        "entity_type": "aircraft_multirotor",
        "created_at": NOW,
        "updated_at": NOW,
        **overrides,
    }
    columns = ", ".join(row)
    conn.execute(
        f"INSERT INTO entities ({columns}) VALUES ({', '.join('?' * len(row))})", tuple(row.values())
    )


def test_constants_agree_with_the_protocol_layer():
    assert schema.ENTITY_TYPES == proto_entities.ENTITY_TYPES
    assert schema.STATUSES == proto_entities.STATUSES
    assert schema.PRIORITIES == proto_entities.PRIORITIES
    assert schema.ORG_TYPES == proto_entities.ORG_TYPES
    assert schema.ENTITY_RECORD_COLUMNS == proto_entities.ENTITY_COLUMNS
    assert schema.TELEMETRY_PROJECTED_COLUMNS == mavlink.HISTORY_COLUMNS
    assert schema.SCHEMA_VERSION == schema.MIGRATIONS[-1].version
    assert [m.version for m in schema.MIGRATIONS] == list(range(1, len(schema.MIGRATIONS) + 1))


def test_migrate_from_empty_creates_every_table(conn):
    assert schema.current_version(conn) == 0
    assert schema.migrate(conn) == schema.SCHEMA_VERSION
    assert schema.current_version(conn) == schema.SCHEMA_VERSION
    names = _tables(conn)
    for expected in (
        "schema_version",
        "organizations",
        "entities",
        "telemetry",
        "device_events",
        "idx_entities_org",
        "idx_telemetry_entity_ts",
        "idx_telemetry_ts",
        "idx_device_events_entity_ts",
        "detections",
        "idx_detections_entity_ts",
        "idx_detections_ts",
    ):
        assert expected in names
    columns = [r[1] for r in conn.execute("PRAGMA table_info(telemetry)")]
    assert columns == ["id", *schema.TELEMETRY_INSERT_COLUMNS]
    entity_columns = [r[1] for r in conn.execute("PRAGMA table_info(entities)")]
    assert entity_columns == [*schema.ENTITY_RECORD_COLUMNS, "last_seen", "created_at", "updated_at"]
    assert not conn.in_transaction


def test_migrate_is_idempotent(conn):
    schema.migrate(conn)
    before = sorted(conn.execute("SELECT type, name, sql FROM sqlite_master"))
    assert schema.migrate(conn) == schema.SCHEMA_VERSION
    assert schema.migrate(conn) == schema.SCHEMA_VERSION
    assert sorted(conn.execute("SELECT type, name, sql FROM sqlite_master")) == before
    assert conn.execute("SELECT count(*) FROM schema_version").fetchone()[0] == 1


def test_migrate_refuses_a_newer_database(conn):
    schema.migrate(conn)
    conn.execute("UPDATE schema_version SET version = ?", (schema.SCHEMA_VERSION + 1,))
    with pytest.raises(DatabaseError, match=r"newer than this code knows"):
        schema.migrate(conn)


def test_a_later_migration_is_applied_once(conn):
    schema.migrate(conn)
    extra = schema.Migration(schema.SCHEMA_VERSION + 1, "test table", ("CREATE TABLE extra (x INTEGER)",))
    more = (*schema.MIGRATIONS, extra)
    assert schema.migrate(conn, more) == extra.version
    assert schema.migrate(conn, more) == extra.version  # would fail ("table extra already exists") if rerun
    assert "extra" in _tables(conn)


def test_a_failing_migration_rolls_back_and_keeps_the_version(conn):
    schema.migrate(conn)
    broken = schema.Migration(
        schema.SCHEMA_VERSION + 1, "broken", ("CREATE TABLE half (x INTEGER)", "CREATE TABLE oops (")
    )
    with pytest.raises(DatabaseError, match="schema migration failed") as info:
        schema.migrate(conn, (*schema.MIGRATIONS, broken))
    assert isinstance(info.value.__cause__, sqlite3.Error)
    assert "half" not in _tables(conn)
    assert schema.current_version(conn) == schema.SCHEMA_VERSION
    assert not conn.in_transaction


def test_version_3_adds_late_to_existing_history_as_not_late(conn):
    v2 = tuple(m for m in schema.MIGRATIONS if m.version <= 2)
    assert schema.migrate(conn, v2) == 2
    old_columns = [c for c in schema.TELEMETRY_INSERT_COLUMNS if c != "late"]
    conn.execute(
        f"INSERT INTO telemetry ({', '.join(old_columns)}) VALUES ({', '.join('?' * len(old_columns))})",
        ("u-old", "org-a", "e1", "HEARTBEAT", NOW, 1.0, 2.0, 1, 1, *([None] * 19), "{}"),
    )
    assert schema.migrate(conn, tuple(m for m in schema.MIGRATIONS if m.version <= 3)) == 3
    assert conn.execute("SELECT message_uid, late FROM telemetry").fetchall() == [("u-old", 0)]
    late = next(r for r in conn.execute("PRAGMA table_info(telemetry)") if r[1] == "late")
    assert late[3] == 1 and late[4] == "0"  # NOT NULL DEFAULT 0


def test_version_4_adds_detections_to_a_version_3_database_and_keeps_its_history(conn):
    v3 = tuple(m for m in schema.MIGRATIONS if m.version <= 3)
    assert schema.migrate(conn, v3) == 3
    conn.execute(
        f"INSERT INTO telemetry ({', '.join(schema.TELEMETRY_INSERT_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(schema.TELEMETRY_INSERT_COLUMNS))})",
        ("u-old", "org-a", "e1", "HEARTBEAT", NOW, 1.0, 2.0, 1, 1, *([None] * 19), "{}", 1),
    )
    assert "detections" not in _tables(conn)
    assert schema.migrate(conn) == schema.SCHEMA_VERSION
    assert conn.execute("SELECT message_uid, late FROM telemetry").fetchall() == [("u-old", 1)]
    columns = [r[1] for r in conn.execute("PRAGMA table_info(detections)")]
    assert columns == ["id", *schema.DETECTION_INSERT_COLUMNS]
    row = ("d1", "org-a", "e1", "trk-1", "car", 0.9, 0.1, 0.2, 0.3, 0.4, NOW, 1.0, 2.0)
    sql = (
        f"INSERT OR IGNORE INTO detections ({', '.join(schema.DETECTION_INSERT_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(row))})"
    )
    assert conn.execute(sql, row).rowcount == 1
    assert conn.execute(sql, row).rowcount == 0  # unique on event_uid


def test_local_pragmas(conn):
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == schema.BUSY_TIMEOUT_MS


def test_every_allowed_value_is_accepted(migrated):
    for i, entity_type in enumerate(schema.ENTITY_TYPES):
        _insert_entity(migrated, entity_id=f"t{i}", entity_type=entity_type)
    for i, status in enumerate(schema.STATUSES):
        _insert_entity(migrated, entity_id=f"s{i}", status=status)
    for i, priority in enumerate(schema.PRIORITIES):
        _insert_entity(migrated, entity_id=f"p{i}", priority=priority)
    for org_type in schema.ORG_TYPES:
        migrated.execute(
            "INSERT INTO organizations (org_id, name, org_type, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            (f"o-{org_type}", org_type, org_type, NOW, NOW),
        )
    _insert_entity(migrated, entity_id="edge", latitude=-90.0, longitude=180.0, heading=0.0)
    expected = len(schema.ENTITY_TYPES) + len(schema.STATUSES) + len(schema.PRIORITIES) + 1
    assert migrated.execute("SELECT count(*) FROM entities").fetchone()[0] == expected


@pytest.mark.parametrize(
    "overrides",
    [
        {"entity_type": "submarine"},
        {"entity_type": None},
        {"status": "flying"},
        {"priority": "urgent"},
        {"is_live": 2},
        {"latitude": 90.5},
        {"longitude": -180.01},
        {"heading": 360.5},
        {"heading": -1.0},
        {"name": None},
        {"org_id": "no-such-org"},
    ],
    ids=lambda o: f"{next(iter(o))}={next(iter(o.values()))}",
)
def test_constraints_reject_bad_entities(migrated, overrides):
    with pytest.raises(sqlite3.IntegrityError):
        _insert_entity(migrated, **overrides)
    assert migrated.execute("SELECT count(*) FROM entities").fetchone()[0] == 0


def test_constraints_reject_a_bad_org_type(migrated):
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        migrated.execute(
            "INSERT INTO organizations (org_id, name, org_type, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            ("org-b", "B", "pirate", NOW, NOW),
        )


def test_deleting_an_org_cascades_to_its_entities_only(migrated):
    migrated.execute(
        "INSERT INTO organizations (org_id, name, org_type, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
        ("org-b", "Org B", "ngo", NOW, NOW),
    )
    _insert_entity(migrated, entity_id="a1")
    _insert_entity(migrated, entity_id="b1", org_id="org-b")
    migrated.execute("DELETE FROM organizations WHERE org_id = 'org-a'")
    assert [r[0] for r in migrated.execute("SELECT entity_id FROM entities")] == ["b1"]


def test_telemetry_message_uid_is_unique_and_device_event_uid_nullable(migrated):
    row = ("u1", "org-a", "e1", "HEARTBEAT", NOW, 1.0, 2.0, 1, 1, *([None] * 19), "{}", 0)
    sql = (
        f"INSERT OR IGNORE INTO telemetry ({', '.join(schema.TELEMETRY_INSERT_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(row))})"
    )
    assert migrated.execute(sql, row).rowcount == 1
    assert migrated.execute(sql, row).rowcount == 0
    ev = (None, "org-a", "e1", "bootsequence", NOW, 1.0, "{}")
    ev_sql = (
        f"INSERT OR IGNORE INTO device_events ({', '.join(schema.DEVICE_EVENT_INSERT_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(ev))})"
    )
    assert migrated.execute(ev_sql, ev).rowcount == 1
    assert migrated.execute(ev_sql, ev).rowcount == 1  # no uid: nothing to dedup on
    assert migrated.execute(ev_sql, ("ev-1", *ev[1:])).rowcount == 1
    assert migrated.execute(ev_sql, ("ev-1", *ev[1:])).rowcount == 0


def test_history_tables_have_no_check_constraints(conn):
    """INSERT OR IGNORE would silently skip a row failing a CHECK; the Store checks NOT NULL itself."""
    schema.migrate(conn)
    for table in ("telemetry", "device_events", "detections"):
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
        assert "CHECK" not in sql.upper()


def test_version_5_indexes_telemetry_by_entity_type_and_time(conn):
    assert schema.migrate(conn) >= 4
    plan = conn.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM telemetry WHERE entity_id = 'e' AND message_type = 'M' "
        "AND ts <= 1 ORDER BY ts DESC LIMIT 1"
    ).fetchall()
    assert any("idx_telemetry_entity_type_ts" in str(row[-1]) for row in plan), plan
