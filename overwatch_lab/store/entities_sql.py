"""The SQL of the ``organizations`` and ``entities`` tables, and their rows in and out.

Statements and pure conversions only: the :class:`~overwatch_lab.store.database.Store` runs
them on its writer thread. Rows come back with their JSON columns decoded and ``is_live`` a
bool; values written back from the live KV state are made safe for the CHECK constraints first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from overwatch_lab.store.connection import decode_json, encode_json
from overwatch_lab.store.schema import ENTITY_JSON_COLUMNS, ENTITY_LIVE_COLUMNS, ENTITY_RECORD_COLUMNS

__all__ = [
    "ENTITY_SELECT",
    "ENTITY_UPSERT",
    "ORG_UPSERT",
    "WRITE_BACK",
    "entity_out",
    "entity_params",
    "live_params",
    "org_out",
]

ENTITY_SELECT = (
    "SELECT e.*, o.name AS org_name FROM entities AS e LEFT JOIN organizations AS o ON o.org_id = e.org_id"
)
"""Entity rows with their organisation's name; add a ``WHERE`` or ``ORDER BY``."""

_ENTITY_UPDATE_SET = ", ".join(
    f"{c} = COALESCE(excluded.{c}, entities.{c})" if c in ENTITY_LIVE_COLUMNS else f"{c} = excluded.{c}"
    for c in ENTITY_RECORD_COLUMNS
    if c not in ("entity_id", "is_live")
)
ENTITY_UPSERT = (
    f"INSERT INTO entities ({', '.join(ENTITY_RECORD_COLUMNS)}, created_at, updated_at) "
    f"VALUES ({', '.join('?' * (len(ENTITY_RECORD_COLUMNS) + 2))}) "
    f"ON CONFLICT(entity_id) DO UPDATE SET {_ENTITY_UPDATE_SET}, updated_at = excluded.updated_at"
)
"""Insert or update an entity (parameters from :func:`entity_params`)."""

ORG_UPSERT = (
    "INSERT INTO organizations (org_id, name, org_type, metadata, created_at, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(org_id) DO UPDATE SET name = excluded.name, "
    "org_type = excluded.org_type, metadata = excluded.metadata, updated_at = excluded.updated_at"
)
"""Insert or update an organisation, keeping ``created_at``."""

# None keeps the column; last_seen only moves forward (canonical timestamps sort as time).
WRITE_BACK = """
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
"""Write live KV fields back to one entity (parameters from :func:`live_params`)."""


def entity_params(record: Mapping[str, Any], now: str) -> list[Any]:
    """Return the :data:`ENTITY_UPSERT` parameters of a validated record (JSON columns encoded)."""
    params = [
        encode_json(record.get(c)) if c in ENTITY_JSON_COLUMNS else record.get(c)
        for c in ENTITY_RECORD_COLUMNS
    ]
    params[ENTITY_RECORD_COLUMNS.index("is_live")] = int(bool(record.get("is_live")))
    params += [now, now]
    return params


def entity_out(row: dict[str, Any]) -> dict[str, Any]:
    """Decode an entity row in place (JSON columns, ``is_live`` a bool); return it."""
    for column in ENTITY_JSON_COLUMNS:
        row[column] = decode_json(row.get(column))
    if row.get("is_live") is not None:
        row["is_live"] = bool(row["is_live"])
    return row


def org_out(row: dict[str, Any]) -> dict[str, Any]:
    """Decode an organisation row in place (``metadata``); return it."""
    row["metadata"] = decode_json(row.get("metadata"))
    return row


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def live_params(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """Return the :data:`WRITE_BACK` parameters of one live row, made safe for the CHECK constraints."""
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
