"""Envelopes of docs/wire.md: strict decoders into frozen dataclasses, and builders for publishers.

- Telemetry v1 (``constellation.telemetry.{org}.{entity}``): :func:`decode_telemetry`,
  :func:`make_telemetry`.
- Times: :func:`parse_timestamp` (RFC 3339 → canonical UTC string + epoch seconds),
  :func:`format_timestamp`, :func:`now_timestamp`. The canonical form
  ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` sorts as text in time order, which the stale filters rely on.

Decoders run once per message on the hot path, so checks are hand-written and each envelope is
validated in one pass over a plain dict. Telemetry, the hottest, has a msgspec fast path first
(:func:`decode_telemetry`): it only *accepts*; anything it does not accept goes through the
hand-written path, which decides and names the error, so both paths accept exactly the same
envelopes with the same errors. Every rejection is a
:class:`~overwatch_lab.errors.ProtocolError` whose message names the envelope and the field.

The other envelopes build on the primitives here (JSON, times, the shared field checks):
detections and device events live in :mod:`overwatch_lab.protocol.events`, entity and
organisation lifecycle events in :mod:`overwatch_lab.protocol.lifecycle`.

Pure: no I/O.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal, NoReturn

import msgspec

from overwatch_lab.errors import EnvelopeError, SubjectError
from overwatch_lab.protocol.mavlink import MESSAGE_IDS
from overwatch_lab.protocol.printable import printable_names
from overwatch_lab.protocol.subjects import MESSAGE_TYPE_RE, TOKEN_RE, TelemetrySubject, check_token

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

# ---------------------------------------------------------------------------------------------
# JSON


def _reject_constant(name: str) -> Any:
    raise EnvelopeError(f"{name} is not valid JSON (non-finite numbers are rejected)")


def _finite_float(text: str) -> float:
    value = float(text)
    if value - value != 0.0:  # 1e400 and -1e400 overflow to ±inf
        raise EnvelopeError(f"number {text:.40} is too large for a float (non-finite numbers are rejected)")
    return value


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_decode_json = _DECODER.decode
_FINITE_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_decode_json_finite = _FINITE_DECODER.decode


def loads_strict(body: bytes | bytearray | memoryview | str, what: str, *, finite: bool = True) -> Any:
    """Parse one JSON value, strictly.

    Rejects invalid UTF-8, ``NaN``/``Infinity``/``-Infinity``, a number that overflows a float
    (``1e400``: it would be stored as ``Infinity``, which is not JSON), trailing data (a second
    value) and anything else ``json`` rejects.

    Args:
        body: the raw message body.
        what: the envelope name, used as the error prefix (e.g. "telemetry").
        finite: False lets an overflowing number through as ``inf`` (telemetry only: its
            projection skips the field and its history row keeps the message's own text).

    Raises:
        EnvelopeError: "{what}: ..." with the reason.
    """
    try:
        text = body if isinstance(body, str) else str(body, "utf-8")
    except UnicodeDecodeError as exc:
        raise EnvelopeError(f"{what}: body is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        return _decode_json_finite(text) if finite else _decode_json(text)
    except EnvelopeError as exc:  # NaN, Infinity, -Infinity, 1e400
        raise EnvelopeError(f"{what}: {exc}") from None
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
# Shared field checks (also used by the sibling envelope modules events.py and lifecycle.py)


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
        raise EnvelopeError(f"{what}: unknown field(s) {printable_names(keys - allowed)}")
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
        data_json: ``data`` as JSON text, for the history ``data`` column: the message's own
            bytes of ``data`` when the decoder had them (no re-encoding), else ``data`` encoded;
            always valid JSON (never ``NaN``/``Infinity``). Not part of equality.
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
    data_json: str = field(default="", compare=False, repr=False)


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


# The msgspec fast path: it decodes the envelope's shape, types and integer ranges in C and
# keeps ``data`` as its raw bytes (decoded separately into a dict, so the history row can store
# the message's own text). It never rejects: whatever it cannot take goes to the slow path.
_U8 = Annotated[int, msgspec.Meta(ge=0, le=255)]
_U32 = Annotated[int, msgspec.Meta(ge=0, le=UINT32_MAX)]


class _TelemetryV1(msgspec.Struct, forbid_unknown_fields=True):
    schema_version: Literal["1.0.0"]
    message_uid: str
    org_id: str
    entity_id: str
    message_id: _U32
    message_type: str
    system_id: _U8
    component_id: _U8
    data: msgspec.Raw
    timestamp: str
    source: str | None = None


class _DataOnly(msgspec.Struct):
    data: msgspec.Raw


_decode_v1 = msgspec.json.Decoder(_TelemetryV1).decode
_decode_data = msgspec.json.Decoder(dict[str, Any]).decode
_decode_data_only = msgspec.json.Decoder(_DataOnly).decode
# ValidationError is a DecodeError; absurd nesting raises RecursionError.
_MSGSPEC_ERRORS = (msgspec.DecodeError, RecursionError)


def decode_telemetry(body: bytes | str, subject: TelemetrySubject | None = None) -> Telemetry:
    """Decode and validate a telemetry v1 envelope (docs/wire.md table, strictly).

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
    try:
        env = _decode_v1(body)
        data = _decode_data(env.data)
    except _MSGSPEC_ERRORS:  # e.g. 1e400 (a float overflow), a lone surrogate, any invalid envelope
        return _decode_telemetry_slow(body, subject)
    uid = env.message_uid
    org_id = env.org_id
    entity_id = env.entity_id
    message_type = env.message_type
    if (
        _token_ok(uid)
        and _token_ok(org_id)
        and _token_ok(entity_id)
        and (subject is None or (org_id == subject.org_id and entity_id == subject.entity_id))
        and _message_type_ok(message_type)
    ):
        timestamp, ts = parse_timestamp(env.timestamp)
        return Telemetry(
            uid,
            org_id,
            entity_id,
            env.source,
            env.message_id,
            message_type,
            env.system_id,
            env.component_id,
            data,
            timestamp,
            ts,
            str(env.data, "utf-8"),  # valid UTF-8: _decode_data checked every string in it
        )
    return _decode_telemetry_slow(body, subject)


def _data_text(body: bytes | str, data: dict[str, Any]) -> str:
    """The JSON text of an accepted envelope's ``data`` when the fast path did not take it."""
    try:
        return str(_decode_data_only(body).data, "utf-8")  # the message's own text (e.g. 1e400)
    except _MSGSPEC_ERRORS:  # e.g. a lone surrogate somewhere: re-encode
        pass
    try:
        return json.dumps(data, separators=(",", ":"), allow_nan=False)
    except ValueError:  # an overflowed float (1e400 parsed as inf) in a body msgspec cannot read
        raise EnvelopeError(
            "telemetry: field 'data' holds a number too large for a float and cannot be stored as JSON"
        ) from None


def _decode_telemetry_slow(body: bytes | str, subject: TelemetrySubject | None) -> Telemetry:
    """The hand-written decoder: the reference for what is accepted, and every error message."""
    obj = loads_strict(body, "telemetry", finite=False)  # docs/wire.md: an overflowing number is skipped
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
                    _data_text(body, data),
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


__all__ = [
    "SCHEMA_VERSION",
    "Telemetry",
    "decode_telemetry",
    "encode",
    "format_timestamp",
    "loads_strict",
    "make_telemetry",
    "now_timestamp",
    "parse_timestamp",
]
