"""A real lab database file (the store's schema, rows written directly) for the frames tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from overwatch_lab.bench.frames import build
from overwatch_lab.store.schema import TELEMETRY_INSERT_COLUMNS, apply_pragmas, migrate

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
NOW = "2027-01-15T08:00:00Z"


def row(
    uid: str, eid: str, ts: float, mt: str = "GLOBAL_POSITION_INT", org: str = "org-a", **values: Any
) -> tuple[Any, ...]:
    """One telemetry row in TELEMETRY_INSERT_COLUMNS order (unnamed columns NULL, late 0)."""
    cols = dict.fromkeys(TELEMETRY_INSERT_COLUMNS)
    cols.update(message_uid=uid, org_id=org, entity_id=eid, message_type=mt, timestamp=NOW, ts=ts,
                ingested_at=ts + 0.01, system_id=1, component_id=1, data="{}", late=0)  # fmt: skip
    cols.update(values)
    return tuple(cols.values())


def make_db(
    path: Path, rows: list[tuple[Any, ...]], entities: dict[str, tuple[str, str]] | None = None
) -> str:
    """Create a lab database at ``path`` holding ``rows``; ``entities``: id -> (org, type) registered."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    apply_pragmas(conn, remote=False)
    migrate(conn)
    entities = entities or {}
    for org in sorted({o for o, _ in entities.values()}):
        conn.execute(
            "INSERT INTO organizations VALUES (?, ?, 'civilian', NULL, NULL, ?, ?)",
            (org, org.upper(), NOW, NOW),
        )
    for eid, (org, kind) in entities.items():
        conn.execute(
            "INSERT INTO entities (entity_id, org_id, name, entity_type, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            (eid, org, eid, kind, NOW, NOW),
        )
    sql = f"INSERT INTO telemetry ({', '.join(TELEMETRY_INSERT_COLUMNS)}) VALUES ({', '.join('?' * len(TELEMETRY_INSERT_COLUMNS))})"
    conn.executemany(sql, rows)
    conn.close()
    return str(path)


@pytest.fixture
def small_db(tmp_path) -> str:
    """Two drones of org-a and a sensor of org-b, known positions and batteries."""
    rows = []
    for k in range(10):
        rows.append(row(f"a-{k}", "uav-a", T0 + k, latitude=0.0, longitude=k * 0.001, altitude_msl=100.0 + k))
        rows.append(row(f"b-{k}", "uav-b", T0 + k + 0.5, latitude=1.0, longitude=0.0, altitude_msl=50.0))
    rows.append(
        row("a-sys", "uav-a", T0 + 3.2, "SYS_STATUS", battery_remaining=90, voltage=15800, current=1250)
    )
    rows.append(
        row("a-sys2", "uav-a", T0 + 7.2, "SYS_STATUS", battery_remaining=-1, voltage=15700, current=-1)
    )
    rows.append(row("a-hb", "uav-a", T0 + 2.0, "HEARTBEAT", armed=1, mode="GUIDED"))
    rows.append(row("s-0", "sensor-1", T0 + 30, "SYS_STATUS", org="org-b", battery_remaining=50))
    ents = {"uav-a": ("org-a", "aircraft_multirotor"), "uav-b": ("org-a", "aircraft_multirotor"),
            "sensor-1": ("org-b", "sensor_platform"), "idle-1": ("org-b", "sensor_platform")}  # fmt: skip
    return make_db(tmp_path / "overwatch.db", rows, ents)


@pytest.fixture(scope="module")
def built_db(tmp_path_factory) -> str:
    """20,000 rows of 40 entities over two hours, five message types (the benchmark's builder)."""
    path = tmp_path_factory.mktemp("frames") / "overwatch.db"
    build(path, rows=20_000, entities=40)
    return str(path)
