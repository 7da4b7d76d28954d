"""Envelopes of WIRE.md: strict decoders into frozen dataclasses, and builders for publishers.

- Telemetry v1 (``constellation.telemetry.{org}.{entity}``): :func:`decode_telemetry`,
  :func:`make_telemetry`.
- Detection v1 (``constellation.events.isr.{org}.{entity}.detection.{track}``):
  :func:`decode_detection`, :func:`make_detection`.
- Entity and organisation lifecycle events: :func:`decode_entity_event`, :func:`decode_org_event`,
  :func:`make_entity_event`, :func:`make_org_event`.
- Device events (``bootsequence``, ``shutdown``, …): :func:`decode_device_event`,
  :func:`make_device_event`.
- Times: :func:`parse_timestamp` (RFC 3339 → canonical UTC string + epoch seconds),
  :func:`format_timestamp`, :func:`now_timestamp`. The canonical form
  ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` sorts as text in time order, which the stale filters rely on.

Decoders run once per message on the hot path, so checks are hand-written (no schema library)
and each envelope is validated in one pass over a plain dict. Every rejection is a
:class:`~overwatch_lab.errors.ProtocolError` whose message names the envelope and the field.

Pure: no I/O.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, NoReturn

from overwatch_lab.errors import EnvelopeError, SubjectError
from overwatch_lab.protocol import entities
from overwatch_lab.protocol.mavlink import MESSAGE_IDS
from overwatch_lab.protocol.subjects import (
    ENTITY_EVENT_KINDS,
    MESSAGE_TYPE_RE,
    ORG_EVENT_KINDS,
    TOKEN_RE,
    EntitySubject,
    EventSubject,
    TelemetrySubject,
    check_token,
    entity_subject,
    organization_subject,
)

SCHEMA_VERSION = "1.0.0"

# ``fullmatch`` (not ``^…$``): ``$`` also matches before a trailing newline.
_token_ok = TOKEN_RE.fullmatch
_message_type_ok = MESSAGE_TYPE_RE.fullmatch
_ts_ok = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
).fullmatch
_fromisoformat = datetime.fromisoformat
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_US_PER_DAY = 86_400_000_000

UINT32_MAX = 0xFFFFFFFF
LABEL_MAX = 128
ORG_NAME_MAX = 256

# ---------------------------------------------------------------------------------------------
# JSON


class _NonFinite(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NonFinite(name)


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_decode_json = _DECODER.decode


def loads_strict(body: bytes | bytearray | memoryview | str, what: str) -> Any:
    """Parse one JSON value, strictly.

    Rejects invalid UTF-8, ``NaN``/``Infinity``/``-Infinity``, trailing data (a second value)
    and anything else ``json`` rejects.

    Args:
        body: the raw message body.
        what: the envelope name, used as the error prefix (e.g. "telemetry").

    Raises:
        EnvelopeError: "{what}: ..." with the reason.
    """
    try:
        text = body if isinstance(body, str) else str(body, "utf-8")
    except UnicodeDecodeError as exc:
        raise EnvelopeError(f"{what}: body is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        return _decode_json(text)
    except _NonFinite as exc:
        raise EnvelopeError(f"{what}: {exc} is not valid JSON (non-finite numbers are rejected)") from None
    except json.JSONDecodeError as exc:
        reason = "trailing data after the JSON value" if exc.msg == "Extra data" else exc.msg
        raise EnvelopeError(f"{what}: malformed JSON: {reason} at char {exc.pos}") from None
    except (ValueError, RecursionError) as exc:  # e.g. a 5000-digit integer, absurd nesting
        raise EnvelopeError(f"{what}: malformed JSON: {exc}") from None


def encode(obj: Any) -> bytes:
    """Serialise ``obj`` as compact UTF-8 JSON (the wire form of every envelope).

    Raises:
        EnvelopeError: ``obj`` holds NaN/Infinity, an unencodable string or a non-JSON type.
    """
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (ValueError, TypeError) as exc:  # UnicodeEncodeError is a ValueError
        raise EnvelopeError(f"cannot encode envelope: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Time


def _format_us(us: int) -> str:
    days, rem = divmod(us, _US_PER_DAY)
    d = date.fromordinal(_EPOCH_ORDINAL + days)
    secs, frac = divmod(rem, 1_000_000)
    h, secs = divmod(secs, 3600)
    m, s = divmod(secs, 60)
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{h:02d}:{m:02d}:{s:02d}.{frac:06d}Z"


def parse_timestamp(value: object, field: str = "timestamp") -> tuple[str, float]:
    """Parse an RFC 3339 time into (canonical UTC string, epoch seconds).

    Accepts ``2026-11-27T10:00:00Z`` and ``2026-11-27T10:00:00.123456789+02:00``: 0 to 9
    fractional digits, ``Z`` or a ``±HH:MM`` offset (``T``/``Z`` in either case). The canonical
    string is UTC with exactly 6 fractional digits and a ``Z`` (digits past microseconds are
    truncated), e.g. ``2026-11-27T08:00:00.123456Z``; for canonical strings text order is time
    order. The epoch value is that of the canonical string.

    Raises:
        EnvelopeError: not a string, not RFC 3339, an impossible date/time (Feb 30, hour 24,
            leap second 60, offset beyond ±23:59) or the zero time (year 1).
    """
    if type(value) is not str or not _ts_ok(value):
        raise EnvelopeError(f"{field}: {value!r:.80} is not an RFC 3339 time (e.g. 2026-11-27T10:00:00Z)")
    try:
        # The regex pins the RFC 3339 shape; fromisoformat (C) does the calendar checks.
        dt = _fromisoformat(value if value[10] == "T" and value[-1] != "z" else value.upper())
        if len(value) == 27 and value[26] == "Z" and value[10] == "T":
            canonical = value  # already canonical: skip formatting (the common case)
        else:
            dt = dt.astimezone(UTC)
            canonical = (
                f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:"
                f"{dt.second:02d}.{dt.microsecond:06d}Z"
            )
    except (ValueError, OverflowError) as exc:
        raise EnvelopeError(f"{field}: {value!r} is not a valid time ({exc})") from None
    if dt.year == 1:
        raise EnvelopeError(f"{field}: {value!r} is the zero time (year 1); set a real time")
    return canonical, dt.timestamp()


def format_timestamp(epoch_s: float) -> str:
    """Return the canonical timestamp (UTC, 6 fractional digits, ``Z``) of epoch seconds."""
    if not math.isfinite(epoch_s):
        raise EnvelopeError(f"cannot format a non-finite time {epoch_s!r}")
    return _format_us(round(epoch_s * 1_000_000))


def now_timestamp() -> str:
    """Return the current wall-clock time as a canonical timestamp."""
    return _format_us(time.time_ns() // 1000)


def _to_timestamp(value: str | float | None) -> str:
    if value is None:
        return now_timestamp()
    if isinstance(value, str):
        return parse_timestamp(value)[0]
    return format_timestamp(value)


# ---------------------------------------------------------------------------------------------
# Shared field checks


def _token(value: object, what: str) -> str:
    if type(value) is str and _token_ok(value):
        return value
    check_token(value, what)  # raises with the standard message
    raise SubjectError(
        f"{what} {value!r:.60} breaks the token rule ^[A-Za-z0-9_-]{{1,128}}$ (control character)"
    )


def _fields(obj: object, what: str, allowed: frozenset[str], required: frozenset[str]) -> dict[str, Any]:
    if type(obj) is not dict:
        raise EnvelopeError(f"{what}: body must be a JSON object, got {type(obj).__name__}")
    keys = obj.keys()
    if not keys <= allowed:
        raise EnvelopeError(f"{what}: unknown field(s) {', '.join(sorted(keys - allowed))}")
    if not keys >= required:
        raise EnvelopeError(f"{what}: missing required field(s) {', '.join(sorted(required - keys))}")
    return obj


def _int_in(obj: dict[str, Any], key: str, hi: int, what: str) -> int:
    v = obj[key]
    if type(v) is int and 0 <= v <= hi:
        return v
    if type(v) is not int:
        raise EnvelopeError(f"{what}: field {key!r} must be an integer, got {v!r:.40}")
    raise EnvelopeError(f"{what}: field {key!r} = {v} is out of range 0..{hi}")


def _unit(obj: dict[str, Any], key: str, what: str) -> float:
    v = obj[key]
    if (type(v) is float or type(v) is int) and 0.0 <= v <= 1.0:
        return float(v)
    raise EnvelopeError(f"{what}: field {key!r} must be a number in [0, 1], got {v!r:.40}")


def _mismatch(what: str, field: str, body: object, subject: object) -> EnvelopeError:
    return EnvelopeError(
        f"{what}: subject/body mismatch: body {field} {body!r} != subject {field} {subject!r}"
    )


# ---------------------------------------------------------------------------------------------
# Telemetry v1


@dataclass(frozen=True, slots=True)
class Telemetry:
    """One decoded telemetry v1 envelope.

    Attributes:
        message_uid: unique per message (dedup id).
        org_id: organisation token (equals the subject's).
        entity_id: entity token (equals the subject's).
        source: free text, or None when absent.
        message_id: MAVLink message id.
        message_type: MAVLink message name (may be one the projections do not support).
        system_id: MAVLink system id.
        component_id: MAVLink component id.
        data: MAVLink fields in raw MAVLink units.
        timestamp: canonical timestamp string.
        ts: the same time in epoch seconds.
    """

    message_uid: str
    org_id: str
    entity_id: str
    source: str | None
    message_id: int
    message_type: str
    system_id: int
    component_id: int
    data: dict[str, Any]
    timestamp: str
    ts: float


_TELEMETRY_REQUIRED = frozenset(
    {
        "schema_version",
        "message_uid",
        "org_id",
        "entity_id",
        "message_id",
        "message_type",
        "system_id",
        "component_id",
        "data",
        "timestamp",
    }
)
_TELEMETRY_ALLOWED = _TELEMETRY_REQUIRED | {"source"}


def decode_telemetry(body: bytes | str, subject: TelemetrySubject | None = None) -> Telemetry:
    """Decode and validate a telemetry v1 envelope (WIRE.md table, strictly).

    Args:
        body: the raw message body.
        subject: the parsed subject; when given, org_id and entity_id must equal its tokens.

    Raises:
        EnvelopeError: malformed JSON, not an object, unknown/missing fields, wrong
            schema_version, an integer that is not an int or out of range, a bad message_type,
            data not an object, a bad or zero timestamp, source not a string, or a
            subject/body mismatch.
        SubjectError: message_uid, org_id or entity_id breaks the token rule.
    """
    obj = loads_strict(body, "telemetry")
    # Fast path: one combined test of every rule; on any failure _telemetry_error re-checks the
    # fields one by one to raise an error that names the first bad one.
    if type(obj) is dict:
        keys = obj.keys()
        if keys <= _TELEMETRY_ALLOWED and keys >= _TELEMETRY_REQUIRED:
            uid = obj["message_uid"]
            org_id = obj["org_id"]
            entity_id = obj["entity_id"]
            message_type = obj["message_type"]
            message_id = obj["message_id"]
            system_id = obj["system_id"]
            component_id = obj["component_id"]
            data = obj["data"]
            source = obj.get("source")
            if (
                obj["schema_version"] == SCHEMA_VERSION
                and type(uid) is str
                and _token_ok(uid)
                and type(org_id) is str
                and _token_ok(org_id)
                and type(entity_id) is str
                and _token_ok(entity_id)
                and (subject is None or (org_id == subject.org_id and entity_id == subject.entity_id))
                and type(message_type) is str
                and _message_type_ok(message_type)
                and type(message_id) is int
                and 0 <= message_id <= UINT32_MAX
                and type(system_id) is int
                and 0 <= system_id <= 255
                and type(component_id) is int
                and 0 <= component_id <= 255
                and type(data) is dict
                and (source is None or type(source) is str)
            ):
                timestamp, ts = parse_timestamp(obj["timestamp"])
                return Telemetry(
                    uid,
                    org_id,
                    entity_id,
                    source,
                    message_id,
                    message_type,
                    system_id,
                    component_id,
                    data,
                    timestamp,
                    ts,
                )
    _telemetry_error(obj, subject)


def _telemetry_error(obj: object, subject: TelemetrySubject | None) -> NoReturn:
    """Raise the error for the first rule a telemetry envelope breaks (the slow, explicit path)."""
    what = "telemetry"
    obj = _fields(obj, what, _TELEMETRY_ALLOWED, _TELEMETRY_REQUIRED)
    if obj["schema_version"] != SCHEMA_VERSION:
        raise EnvelopeError(
            f"{what}: unsupported schema_version {obj['schema_version']!r:.40}; expected {SCHEMA_VERSION!r}"
        )
    _token(obj["message_uid"], "message_uid")
    org_id = _token(obj["org_id"], "org_id")
    entity_id = _token(obj["entity_id"], "entity_id")
    if subject is not None:
        if org_id != subject.org_id:
            raise _mismatch(what, "org_id", org_id, subject.org_id)
        if entity_id != subject.entity_id:
            raise _mismatch(what, "entity_id", entity_id, subject.entity_id)
    source = obj.get("source")
    if source is not None and type(source) is not str:
        raise EnvelopeError(f"{what}: field 'source' must be a string, got {type(source).__name__}")
    message_type = obj["message_type"]
    if type(message_type) is not str or not _message_type_ok(message_type):
        raise EnvelopeError(
            f"{what}: field 'message_type' {message_type!r:.60} must match ^[A-Z][A-Z0-9_]*$ (MAVLink name)"
        )
    data = obj["data"]
    if type(data) is not dict:
        raise EnvelopeError(f"{what}: field 'data' must be a JSON object, got {type(data).__name__}")
    _int_in(obj, "message_id", UINT32_MAX, what)
    _int_in(obj, "system_id", 255, what)
    _int_in(obj, "component_id", 255, what)
    raise AssertionError(f"telemetry envelope failed the fast check but no rule names a field: {obj!r:.200}")


def make_telemetry(
    org_id: str,
    entity_id: str,
    message_type: str,
    data: dict[str, Any],
    *,
    message_uid: str | None = None,
    timestamp: str | float | None = None,
    system_id: int = 1,
    component_id: int = 1,
    source: str | None = None,
    message_id: int | None = None,
) -> dict[str, Any]:
    """Build a valid telemetry v1 envelope dict (pass it to :func:`encode`).

    Args:
        org_id: organisation token.
        entity_id: entity token.
        message_type: MAVLink message name.
        data: MAVLink fields in raw units (not copied).
        message_uid: dedup id; default a fresh uuid4 hex.
        timestamp: RFC 3339 string or epoch seconds; default now. Written in canonical form.
        system_id: MAVLink system id.
        component_id: MAVLink component id.
        source: optional free text.
        message_id: MAVLink id; default from :data:`~overwatch_lab.protocol.mavlink.MESSAGE_IDS`.

    Raises:
        EnvelopeError: a bad message_type, data not a dict, or no message_id for an unknown type.
        SubjectError: a bad token.
    """
    if not _message_type_ok(message_type):
        raise EnvelopeError(f"message_type {message_type!r} must match ^[A-Z][A-Z0-9_]*$")
    if not isinstance(data, dict):
        raise EnvelopeError(f"data must be a dict, got {type(data).__name__}")
    if message_id is None:
        message_id = MESSAGE_IDS.get(message_type)
        if message_id is None:
            raise EnvelopeError(f"message_type {message_type!r} has no known MAVLink id: pass message_id")
    env: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "message_uid": _token(message_uid if message_uid is not None else uuid.uuid4().hex, "message_uid"),
        "org_id": _token(org_id, "org_id"),
        "entity_id": _token(entity_id, "entity_id"),
        "message_id": message_id,
        "message_type": message_type,
        "system_id": system_id,
        "component_id": component_id,
        "data": data,
        "timestamp": _to_timestamp(timestamp),
    }
    if source is not None:
        env["source"] = source
    return env


# ---------------------------------------------------------------------------------------------
# Detection v1


@dataclass(frozen=True, slots=True)
class Detection:
    """One decoded ISR detection v1 envelope (bbox in normalised image coordinates [0, 1]).

    Attributes:
        event_uid: unique event id.
        org_id: organisation token.
        entity_id: the observing entity.
        track_id: the tracked object's id.
        label: class label, 1..128 characters.
        confidence: detector confidence in [0, 1].
        x1: left edge.
        y1: top edge.
        x2: right edge (>= x1).
        y2: bottom edge (>= y1).
        timestamp: canonical timestamp string.
        ts: the same time in epoch seconds.
    """

    event_uid: str
    org_id: str
    entity_id: str
    track_id: str
    label: str
    confidence: float
    x1: float
    y1: float
    x2: float
    y2: float
    timestamp: str
    ts: float


_DETECTION_FIELDS = frozenset(
    {
        "schema_version",
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
    }
)


def decode_detection(body: bytes | str, subject: EventSubject) -> Detection:
    """Decode and validate a detection v1 envelope against its 7-token subject.

    Raises:
        EnvelopeError: malformed JSON, unknown/missing fields, wrong schema_version, a bad
            label/number/bbox/timestamp, a non-detection subject or a subject/body mismatch.
        SubjectError: a bad token.
    """
    what = "detection"
    if subject.track_id is None:
        raise EnvelopeError(f"{what}: subject has no track_id (event_type {subject.event_type!r})")
    obj = _fields(loads_strict(body, what), what, _DETECTION_FIELDS, _DETECTION_FIELDS)
    if obj["schema_version"] != SCHEMA_VERSION:
        raise EnvelopeError(
            f"{what}: unsupported schema_version {obj['schema_version']!r:.40}; expected {SCHEMA_VERSION!r}"
        )
    event_uid = _token(obj["event_uid"], "event_uid")
    for key in ("org_id", "entity_id", "track_id"):
        value = _token(obj[key], key)
        if value != getattr(subject, key):
            raise _mismatch(what, key, value, getattr(subject, key))
    label = obj["label"]
    if type(label) is not str or not 1 <= len(label) <= LABEL_MAX:
        raise EnvelopeError(f"{what}: field 'label' must be a string of 1..{LABEL_MAX} characters")
    confidence = _unit(obj, "confidence", what)
    x1, y1, x2, y2 = (_unit(obj, k, what) for k in ("x1", "y1", "x2", "y2"))
    if x2 < x1:
        raise EnvelopeError(f"{what}: x2 ({x2}) must be >= x1 ({x1})")
    if y2 < y1:
        raise EnvelopeError(f"{what}: y2 ({y2}) must be >= y1 ({y1})")
    timestamp, ts = parse_timestamp(obj["timestamp"])
    return Detection(
        event_uid,
        subject.org_id,
        subject.entity_id,
        subject.track_id,
        label,
        confidence,
        x1,
        y1,
        x2,
        y2,
        timestamp,
        ts,
    )


def make_detection(
    org_id: str,
    entity_id: str,
    track_id: str,
    label: str,
    confidence: float,
    x1: float,
    y1: float,
    x2: float,
    y2: float,
    *,
    timestamp: str | float | None = None,
    event_uid: str | None = None,
) -> dict[str, Any]:
    """Build a detection v1 envelope dict (publish on ``subjects.detection_subject(...)``).

    Raises:
        SubjectError: a bad token. Values are not range-checked here (a fault injector may
            want an invalid one); :func:`decode_detection` checks them.
    """
    return {
        "schema_version": SCHEMA_VERSION,
        "event_uid": _token(event_uid if event_uid is not None else uuid.uuid4().hex, "event_uid"),
        "org_id": _token(org_id, "org_id"),
        "entity_id": _token(entity_id, "entity_id"),
        "track_id": _token(track_id, "track_id"),
        "label": label,
        "confidence": confidence,
        "x1": x1,
        "y1": y1,
        "x2": x2,
        "y2": y2,
        "timestamp": _to_timestamp(timestamp),
    }


# ---------------------------------------------------------------------------------------------
# Entity and organisation lifecycle events

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
    if v not in allowed:
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


# ---------------------------------------------------------------------------------------------
# Device events


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """A device event on ``constellation.events.isr.{org}.{entity}.{event_type}``.

    Attributes:
        event_type: the subject's last token (bootsequence, shutdown, …).
        org_id: organisation token (from the subject).
        entity_id: entity token (from the subject).
        timestamp: the body's ``timestamp`` in canonical form, or None when absent or invalid.
        data: the whole body.
    """

    event_type: str
    org_id: str
    entity_id: str
    timestamp: str | None
    data: dict[str, Any]


def decode_device_event(body: bytes | str, subject: EventSubject) -> DeviceEvent:
    """Decode a device event: any JSON object whose entity_id/org_id, if present, match the subject.

    Raises:
        EnvelopeError: malformed JSON, not an object, or a subject/body mismatch.
    """
    what = f"device event ({subject.event_type})"
    obj = loads_strict(body, what)
    if type(obj) is not dict:
        raise EnvelopeError(f"{what}: body must be a JSON object, got {type(obj).__name__}")
    for key in ("org_id", "entity_id"):
        if key in obj and obj[key] != getattr(subject, key):
            raise _mismatch(what, key, obj[key], getattr(subject, key))
    timestamp = None
    raw = obj.get("timestamp")
    if raw is not None:
        try:
            timestamp = parse_timestamp(raw)[0]
        except EnvelopeError:
            timestamp = None
    return DeviceEvent(subject.event_type, subject.org_id, subject.entity_id, timestamp, obj)


def make_device_event(org_id: str, entity_id: str, event_type: str, **fields: Any) -> dict[str, Any]:
    """Build a device event body (publish on ``subjects.device_event_subject(...)``).

    Adds ``event_uid`` (uuid4 hex) and ``timestamp`` (now) unless given in ``fields``; a float
    ``timestamp`` is taken as epoch seconds.

    Raises:
        SubjectError: a bad token.
    """
    body: dict[str, Any] = {
        "event_uid": uuid.uuid4().hex,
        "event_type": _token(event_type, "event_type"),
        "org_id": _token(org_id, "org_id"),
        "entity_id": _token(entity_id, "entity_id"),
        "timestamp": now_timestamp(),
    }
    body.update(fields)
    if isinstance(body["timestamp"], int | float) and not isinstance(body["timestamp"], bool):
        body["timestamp"] = format_timestamp(body["timestamp"])
    return body


__all__ = [
    "KIND_TO_TYPE",
    "SCHEMA_VERSION",
    "Detection",
    "DeviceEvent",
    "EntityEvent",
    "OrgEvent",
    "Telemetry",
    "decode_detection",
    "decode_device_event",
    "decode_entity_event",
    "decode_org_event",
    "decode_telemetry",
    "encode",
    "format_timestamp",
    "loads_strict",
    "make_detection",
    "make_device_event",
    "make_entity_event",
    "make_org_event",
    "make_telemetry",
    "now_timestamp",
    "parse_timestamp",
]
