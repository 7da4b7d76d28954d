"""Entity records: the columns of the ``entities`` table and their validation (docs/wire.md).

An entity record is what ``constellation.entities.{org}.created|updated`` events carry in
``data.entity`` and what the store keeps in one row. :func:`validate_entity_record` is the one
place that says what a valid record is; it returns a normalised copy with every column present.

Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from overwatch_lab.errors import EnvelopeError
from overwatch_lab.protocol import envelopes
from overwatch_lab.protocol.printable import printable_names
from overwatch_lab.protocol.subjects import check_token

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

ENTITY_COLUMNS: tuple[str, ...] = (
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
"""The columns of the ``entities`` table that an entity record may carry."""

IGNORED_KEYS: frozenset[str] = frozenset({"created_at", "updated_at", "org_name", "last_seen"})
"""Keys a record read back from the store carries that are accepted and dropped: the store sets
``created_at``/``updated_at``/``last_seen`` itself and ``org_name`` comes from the org table."""

NAME_MAX = 256

_COLUMN_SET = frozenset(ENTITY_COLUMNS)


def _fail(field: str, problem: str) -> EnvelopeError:
    return EnvelopeError(f"entity record: field {field!r} {problem}")


def _is_number(value: object) -> bool:
    if type(value) is float:
        return math.isfinite(value)
    return type(value) is int and abs(value) < 2**1023  # float() of a larger int overflows


def _number(lo: float | None = None, hi: float | None = None) -> Callable[[str, object], float | None]:
    def check(field: str, value: object) -> float | None:
        if value is None:
            return None
        if not _is_number(value):
            raise _fail(field, f"must be a finite number or null, got {value!r}")
        assert isinstance(value, int | float)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise _fail(field, f"must lie in [{lo}, {hi}], got {value!r}")
        return float(value)

    return check


def _opt_str(field: str, value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise _fail(field, f"must be a string or null, got {type(value).__name__}")


def _opt_object(field: str, value: object) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    raise _fail(field, f"must be a JSON object or null, got {type(value).__name__}")


def _opt_str_list(field: str, value: object) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(field, "must be a list of strings or null")
    return list(value)


def _opt_time(field: str, value: object) -> str | None:
    if value is None:
        return None
    try:
        return envelopes.parse_timestamp(value, field)[0]
    except EnvelopeError as exc:
        raise _fail(field, f"is not a valid RFC 3339 time ({exc})") from None


def _choice(allowed: tuple[str, ...], default: str | None) -> Callable[[str, object], str]:
    def check(field: str, value: object) -> str:
        if value is None and default is not None:
            return default
        if not isinstance(value, str) or value not in allowed:
            raise _fail(field, f"must be one of {', '.join(allowed)}; got {value!r}")
        return value

    return check


def _bool(field: str, value: object) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if type(value) is int and value in (0, 1):  # SQLite stores booleans as 0/1
        return bool(value)
    raise _fail(field, f"must be a boolean, got {value!r}")


_CHECKS: dict[str, Callable[[str, object], Any]] = {
    "status": _choice(STATUSES, "active"),
    "priority": _choice(PRIORITIES, "normal"),
    "is_live": _bool,
    "expiry_time": _opt_time,
    "latitude": _number(-90.0, 90.0),
    "longitude": _number(-180.0, 180.0),
    "altitude": _number(),
    "heading": _number(0.0, 360.0),
    "velocity": _number(),
    "accuracy": _number(0.0, None),
    "position_timestamp": _opt_time,
    "components": _opt_object,
    "aliases": _opt_str_list,
    "tags": _opt_str_list,
    "source": _opt_str,
    "created_by": _opt_str,
    "classification": _opt_str,
    "metadata": _opt_object,
    "video_config": _opt_object,
}


def validate_entity_record(record: object) -> dict[str, Any]:
    """Validate an entity record and return a normalised copy.

    The copy has every column of :data:`ENTITY_COLUMNS` (in that order), defaults filled in
    (``name`` = entity_id, ``status`` = active, ``priority`` = normal, ``is_live`` = False, the
    rest None) and timestamps in canonical form. Keys in :data:`IGNORED_KEYS` are dropped.

    Args:
        record: the decoded JSON object (``data.entity`` of an entity event, or a store row
            whose JSON columns are already decoded).

    Returns:
        A new dict; the argument is not modified.

    Raises:
        EnvelopeError: not an object, unknown keys, a missing required field, or a bad value
            (the message names the field).
        SubjectError: entity_id or org_id breaks the token rule.
    """
    if not isinstance(record, dict):
        raise EnvelopeError(f"entity record must be a JSON object, got {type(record).__name__}")
    unknown = record.keys() - _COLUMN_SET - IGNORED_KEYS
    if unknown:
        raise EnvelopeError(f"entity record: unknown field(s) {printable_names(unknown)}")
    for required in ("entity_id", "org_id", "entity_type"):
        if record.get(required) is None:
            raise EnvelopeError(f"entity record: field {required!r} is required")
    entity_id = check_token(record["entity_id"], "entity_id")
    out: dict[str, Any] = {
        "entity_id": entity_id,
        "org_id": check_token(record["org_id"], "org_id"),
    }
    name = record.get("name")
    if name is None:
        name = entity_id
    elif not isinstance(name, str) or not 1 <= len(name) <= NAME_MAX:
        raise _fail("name", f"must be a string of 1..{NAME_MAX} characters, got {name!r:.80}")
    out["name"] = name
    out["entity_type"] = _choice(ENTITY_TYPES, None)("entity_type", record["entity_type"])
    for column in ENTITY_COLUMNS[4:]:
        out[column] = _CHECKS[column](column, record.get(column))
    return out
