"""Entity and organisation lifecycle events of docs/wire.md: strict decoders and builders.

- Entity events (``constellation.entities.{org}.{kind}``): :func:`decode_entity_event`,
  :func:`make_entity_event`.
- Organisation events (``constellation.organizations.{kind}``): :func:`decode_org_event`,
  :func:`make_org_event`.

JSON, times and the shared field checks come from :mod:`overwatch_lab.protocol.envelopes`;
entity records are validated by :mod:`overwatch_lab.protocol.entities`.

Pure: no I/O.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from overwatch_lab.errors import EnvelopeError
from overwatch_lab.protocol import entities
from overwatch_lab.protocol.envelopes import (
    _fields,
    _mismatch,
    _token,
    loads_strict,
    now_timestamp,
    parse_timestamp,
)
from overwatch_lab.protocol.subjects import (
    ENTITY_EVENT_KINDS,
    ORG_EVENT_KINDS,
    EntitySubject,
    entity_subject,
    organization_subject,
)

ORG_NAME_MAX = 256

KIND_TO_TYPE: dict[str, str] = {
    "created": "created",
    "updated": "updated",
    "deleted": "deleted",
    "status": "status_changed",
}
"""Subject kind (last token) → event ``type``."""

_EVENT_REQUIRED = frozenset({"id", "type", "subject", "data", "timestamp", "source"})
_EVENT_ALLOWED = _EVENT_REQUIRED | {"metadata"}


@dataclass(frozen=True, slots=True)
class EntityEvent:
    """One decoded entity lifecycle event.

    Attributes:
        id: the event id.
        type: created | updated | deleted | status_changed.
        kind: the subject's last token: created | updated | deleted | status.
        org_id: organisation token (equals the subject's).
        entity_id: entity token.
        entity: the validated, normalised entity record (created/updated; else None unless sent).
        status: the entity status (always set for ``status`` events).
        priority: the entity priority, if known.
        entity_type: the entity type, if known.
        timestamp: canonical timestamp string.
        source: who sent the event.
        metadata: the optional event metadata object.
    """

    id: str
    type: str
    kind: str
    org_id: str
    entity_id: str
    entity: dict[str, Any] | None
    status: str | None
    priority: str | None
    entity_type: str | None
    timestamp: str
    source: str
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class OrgEvent:
    """One decoded organisation lifecycle event.

    Attributes:
        id: the event id.
        type: created | updated | deleted.
        kind: the subject's last token (same as type).
        org_id: organisation token.
        name: organisation name (always set for created/updated).
        org_type: military | civilian | commercial | ngo (always set for created/updated).
        metadata: ``data.metadata`` object, if sent.
        timestamp: canonical timestamp string.
        source: who sent the event.
    """

    id: str
    type: str
    kind: str
    org_id: str
    name: str | None
    org_type: str | None
    metadata: dict[str, Any] | None
    timestamp: str
    source: str


def _event_head(
    body: bytes | str, what: str, kind: str
) -> tuple[dict[str, Any], str, str, dict[str, Any], str]:
    """Validate the shared event envelope; return (obj, id, type, data, canonical timestamp)."""
    obj = _fields(loads_strict(body, what), what, _EVENT_ALLOWED, _EVENT_REQUIRED)
    event_id = obj["id"]
    if type(event_id) is not str or not event_id:
        raise EnvelopeError(f"{what}: field 'id' must be a non-empty string")
    event_type = obj["type"]
    expected = KIND_TO_TYPE[kind]
    if event_type != expected:
        raise EnvelopeError(
            f"{what}: subject/body mismatch: type {event_type!r:.40} on a .{kind} subject (expected {expected!r})"
        )
    if type(obj["subject"]) is not str:
        raise EnvelopeError(f"{what}: field 'subject' must be a string")
    if type(obj["source"]) is not str:
        raise EnvelopeError(f"{what}: field 'source' must be a string")
    metadata = obj.get("metadata")
    if metadata is not None and type(metadata) is not dict:
        raise EnvelopeError(f"{what}: field 'metadata' must be a JSON object or null")
    data = obj["data"]
    if type(data) is not dict:
        raise EnvelopeError(f"{what}: field 'data' must be a JSON object, got {type(data).__name__}")
    return obj, event_id, event_type, data, parse_timestamp(obj["timestamp"])[0]


def _opt_choice(data: dict[str, Any], key: str, allowed: tuple[str, ...], what: str) -> str | None:
    v = data.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or v not in allowed:
        raise EnvelopeError(f"{what}: data.{key} {v!r:.40} is not one of {', '.join(allowed)}")
    return v


def decode_entity_event(body: bytes | str, subject: EntitySubject) -> EntityEvent:
    """Decode an entity lifecycle event published on ``constellation.entities.{org}.{kind}``.

    Rules: ``type`` matches the subject kind (status ↔ status_changed); data.org_id equals the
    subject org; data.entity_id is a token; created/updated carry data.entity, a valid entity
    record with the same entity_id/org_id; status events carry a valid data.status.

    Raises:
        EnvelopeError: any rule broken (the message names the field).
        SubjectError: a bad token.
    """
    what = f"entity event ({subject.kind})"
    obj, event_id, event_type, data, timestamp = _event_head(body, what, subject.kind)
    org_id = _token(data.get("org_id"), "data.org_id")
    if org_id != subject.org_id:
        raise _mismatch(what, "org_id", org_id, subject.org_id)
    entity_id = _token(data.get("entity_id"), "data.entity_id")
    status = _opt_choice(data, "status", entities.STATUSES, what)
    priority = _opt_choice(data, "priority", entities.PRIORITIES, what)
    entity_type = _opt_choice(data, "entity_type", entities.ENTITY_TYPES, what)
    raw = data.get("entity")
    if raw is None and subject.kind in ("created", "updated"):
        raise EnvelopeError(f"{what}: data.entity (the entity record) is required")
    record = None
    if raw is not None:
        record = entities.validate_entity_record(raw)
        if record["entity_id"] != entity_id:
            raise EnvelopeError(
                f"{what}: data.entity.entity_id {record['entity_id']!r} != data.entity_id {entity_id!r}"
            )
        if record["org_id"] != org_id:
            raise EnvelopeError(f"{what}: data.entity.org_id {record['org_id']!r} != data.org_id {org_id!r}")
        if subject.kind in ("created", "updated"):
            status, priority, entity_type = record["status"], record["priority"], record["entity_type"]
    if subject.kind == "status" and status is None:
        raise EnvelopeError(f"{what}: data.status is required")
    return EntityEvent(
        event_id,
        event_type,
        subject.kind,
        org_id,
        entity_id,
        record,
        status,
        priority,
        entity_type,
        timestamp,
        obj["source"],
        obj.get("metadata"),
    )


def decode_org_event(body: bytes | str, kind: str) -> OrgEvent:
    """Decode an organisation lifecycle event published on ``constellation.organizations.{kind}``.

    Rules: ``type`` equals kind; data.org_id is a token; created/updated need data.name (1..256
    characters) and data.org_type (an allowed value); data.metadata, if sent, is an object.

    Raises:
        EnvelopeError: any rule broken (the message names the field).
        SubjectError: a bad token.
    """
    if kind not in ORG_EVENT_KINDS:
        raise EnvelopeError(f"organization event kind {kind!r} is not one of {ORG_EVENT_KINDS}")
    what = f"organization event ({kind})"
    obj, event_id, event_type, data, timestamp = _event_head(body, what, kind)
    org_id = _token(data.get("org_id"), "data.org_id")
    name = data.get("name")
    org_type = _opt_choice(data, "org_type", entities.ORG_TYPES, what)
    if name is not None and (type(name) is not str or not 1 <= len(name) <= ORG_NAME_MAX):
        raise EnvelopeError(f"{what}: data.name must be a string of 1..{ORG_NAME_MAX} characters")
    if kind != "deleted":
        if name is None:
            raise EnvelopeError(f"{what}: data.name is required")
        if org_type is None:
            raise EnvelopeError(f"{what}: data.org_type is required ({', '.join(entities.ORG_TYPES)})")
    metadata = data.get("metadata")
    if metadata is not None and type(metadata) is not dict:
        raise EnvelopeError(f"{what}: data.metadata must be a JSON object or null")
    return OrgEvent(event_id, event_type, kind, org_id, name, org_type, metadata, timestamp, obj["source"])


def make_entity_event(kind: str, record: dict[str, Any], *, source: str = "overwatch-lab") -> dict[str, Any]:
    """Build an entity lifecycle event (publish on ``subjects.entity_subject(org_id, kind)``).

    Args:
        kind: created | updated | deleted | status.
        record: for created/updated a full entity record (validated and normalised); for
            deleted at least entity_id and org_id; for status entity_id, org_id and status.
        source: the event's ``source``.

    Raises:
        EnvelopeError: unknown kind or an invalid record.
        SubjectError: a bad token.
    """
    if kind not in ENTITY_EVENT_KINDS:
        raise EnvelopeError(f"entity event kind {kind!r} is not one of {ENTITY_EVENT_KINDS}")
    if not isinstance(record, dict):
        raise EnvelopeError(f"record must be a dict, got {type(record).__name__}")
    data: dict[str, Any]
    if kind in ("created", "updated"):
        rec = entities.validate_entity_record(record)
        data = {
            "entity_id": rec["entity_id"],
            "org_id": rec["org_id"],
            "entity_type": rec["entity_type"],
            "status": rec["status"],
            "priority": rec["priority"],
            "entity": rec,
        }
    else:
        data = {
            "entity_id": _token(record.get("entity_id"), "entity_id"),
            "org_id": _token(record.get("org_id"), "org_id"),
        }
        what = f"entity event ({kind})"
        for key, allowed in (
            ("entity_type", entities.ENTITY_TYPES),
            ("status", entities.STATUSES),
            ("priority", entities.PRIORITIES),
        ):
            value = _opt_choice(record, key, allowed, what)
            if value is not None:
                data[key] = value
        if kind == "status" and "status" not in data:
            raise EnvelopeError(f"{what}: record needs a status")
    return {
        "id": uuid.uuid4().hex,
        "type": KIND_TO_TYPE[kind],
        "subject": entity_subject(data["org_id"], kind),
        "data": data,
        "timestamp": now_timestamp(),
        "source": source,
    }


def make_org_event(
    kind: str,
    org_id: str,
    name: str | None = None,
    org_type: str = "civilian",
    metadata: dict[str, Any] | None = None,
    *,
    source: str = "overwatch-lab",
) -> dict[str, Any]:
    """Build an organisation lifecycle event (publish on ``subjects.organization_subject(kind)``).

    Args:
        kind: created | updated | deleted.
        org_id: organisation token.
        name: organisation name (default org_id for created/updated).
        org_type: military | civilian | commercial | ngo.
        metadata: optional object.
        source: the event's ``source``.

    Raises:
        EnvelopeError: unknown kind, org_type or a bad name.
        SubjectError: a bad token.
    """
    if kind not in ORG_EVENT_KINDS:
        raise EnvelopeError(f"organization event kind {kind!r} is not one of {ORG_EVENT_KINDS}")
    if org_type not in entities.ORG_TYPES:
        raise EnvelopeError(f"org_type {org_type!r} is not one of {', '.join(entities.ORG_TYPES)}")
    data: dict[str, Any] = {"org_id": _token(org_id, "org_id")}
    if kind != "deleted" or name is not None:
        data["name"] = org_id if name is None else name
        if not isinstance(data["name"], str) or not 1 <= len(data["name"]) <= ORG_NAME_MAX:
            raise EnvelopeError(f"name must be a string of 1..{ORG_NAME_MAX} characters")
    data["org_type"] = org_type
    if metadata is not None:
        data["metadata"] = metadata
    return {
        "id": uuid.uuid4().hex,
        "type": kind,
        "subject": organization_subject(kind),
        "data": data,
        "timestamp": now_timestamp(),
        "source": source,
    }


__all__ = [
    "KIND_TO_TYPE",
    "EntityEvent",
    "OrgEvent",
    "decode_entity_event",
    "decode_org_event",
    "make_entity_event",
    "make_org_event",
]
