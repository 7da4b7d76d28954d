"""Telemetry of Overwatch's edge agents, beside v1: the Pulsar agent's and the aero-arc relay's envelope.

Both agents publish one JSON object per MAVLink message with the same field names (Pulsar's
``TelemetryEnvelope`` says so: "Field names match the aero-arc-relay2constellation reference"):

- **Pulsar** (``Constellation-Overwatch/pulsar`` ``pkg/services/relay/relay.go``): ``drone_id,
  source, timestamp_relay, msg_id, msg_name, system_id, component_id, fields`` on
  ``constellation.telemetry.{drone_id}.{msg_name lower-cased}``;
- **aero-arc relay** (``Constellation-Overwatch/aero-arc-relay2constellation``
  ``pkg/telemetry/envelope.go``, ``internal/sinks/nats.go``): the same plus ``timestamp_device,
  sequence, raw``, on ``constellation.telemetry.{entity_id}.{message_type}`` (its example
  config) or ``constellation.telemetry.{entity_id}`` (its README's 1:1 mode).

``msg_name`` is gomavlib's Go name (``GlobalPositionInt``, ``SystemStatus``, ``VFR_HUD``) and
``fields`` use friendly names (``latitude``, ``ground_speed``, ``roll_speed``) in raw MAVLink
units. :func:`decode_edge_telemetry` maps them onto the v1 vocabulary (:data:`MESSAGE_NAMES`,
:data:`FIELD_NAMES`) and yields the same :class:`~overwatch_lab.protocol.envelopes.Telemetry`
a v1 envelope would, so history and state cannot tell them apart. Neither agent names an
organisation: the envelope's ``org_id`` is :data:`ORG_FROM_REGISTRY` (empty), which the telemetry
worker replaces with the registered entity's organisation. The ``message_uid`` (neither agent
sends one) is derived from the body's bytes (:func:`derived_uid`), so a redelivery or resend of
the same message is one history row.

:func:`decode_any_telemetry` is what the telemetry worker calls: v1 first (its fast path is
unchanged), then the edge envelope; a message that fits neither fails with an error that names
every format tried and why each refused it.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from overwatch_lab.errors import EnvelopeError, ProtocolError, SubjectError
from overwatch_lab.protocol.envelopes import (
    UINT32_MAX,
    Telemetry,
    _fields,
    _int_in,
    _token,
    decode_telemetry,
    encode,
    format_timestamp,
    loads_strict,
    parse_timestamp,
)
from overwatch_lab.protocol.subjects import TOKEN_RE, parse_telemetry_subject, published_subject

FORMAT_V1 = "v1"
FORMAT_PULSAR = "pulsar"
FORMAT_RELAY = "aero-arc-relay"
TELEMETRY_FORMATS = (FORMAT_V1, FORMAT_PULSAR, FORMAT_RELAY)
"""Every telemetry format the lab accepts, in the order they are tried."""

ORG_FROM_REGISTRY = ""
"""The ``org_id`` of an edge envelope: resolved from the registry by entity id (no org on the wire)."""

MESSAGE_NAMES: dict[str, str] = {
    "Heartbeat": "HEARTBEAT",
    "SystemStatus": "SYS_STATUS",
    "SysStatus": "SYS_STATUS",
    "GlobalPositionInt": "GLOBAL_POSITION_INT",
    "GpsRawInt": "GPS_RAW_INT",
    "Attitude": "ATTITUDE",
    "AttitudeQuaternion": "ATTITUDE_QUATERNION",
    "LocalPositionNed": "LOCAL_POSITION_NED",
    "Altitude": "ALTITUDE",
    "VfrHud": "VFR_HUD",
    "VFR_HUD": "VFR_HUD",
    "MissionCurrent": "MISSION_CURRENT",
    "BatteryStatus": "BATTERY_STATUS",
    "ServoOutputRaw": "SERVO_OUTPUT_RAW",
    "ScaledPressure": "SCALED_PRESSURE",
    "ExtendedSysState": "EXTENDED_SYS_STATE",
}
"""gomavlib message name (``msg_name``) → MAVLink name. Any other CamelCase name is converted
(``GpsRawInt`` → ``GPS_RAW_INT``); an upper-case name is taken as it is."""

FIELD_NAMES: dict[str, dict[str, str]] = {
    "GLOBAL_POSITION_INT": {
        "latitude": "lat",
        "longitude": "lon",
        "altitude": "alt",
        "heading": "hdg",
    },
    "ATTITUDE": {"roll_speed": "rollspeed", "pitch_speed": "pitchspeed", "yaw_speed": "yawspeed"},
    "VFR_HUD": {"ground_speed": "groundspeed", "altitude": "alt", "climb_rate": "climb"},
    "SYS_STATUS": {
        "sensors_present_extended": "onboard_control_sensors_present_extended",
        "sensors_enabled_extended": "onboard_control_sensors_enabled_extended",
        "sensors_health_extended": "onboard_control_sensors_health_extended",
    },
}
"""Per MAVLink message: the agents' friendly field name → the MAVLink field name. A field not
listed keeps its name (most are already MAVLink's: ``vx``, ``relative_alt``, ``load``)."""

MAV_TYPES: dict[str, int] = {
    f"MAV_TYPE_{name}": n
    for n, name in enumerate(
        (
            "GENERIC FIXED_WING QUADROTOR COAXIAL HELICOPTER ANTENNA_TRACKER GCS AIRSHIP FREE_BALLOON "
            "ROCKET GROUND_ROVER SURFACE_BOAT SUBMARINE HEXAROTOR OCTOROTOR TRICOPTER FLAPPING_WING "
            "KITE ONBOARD_CONTROLLER VTOL_DUOROTOR VTOL_QUADROTOR VTOL_TILTROTOR VTOL_RESERVED2 "
            "VTOL_RESERVED3 VTOL_RESERVED4 VTOL_RESERVED5 GIMBAL ADSB PARAFOIL DODECAROTOR CAMERA "
            "CHARGING_STATION FLARM SERVO ODID DECAROTOR BATTERY PARACHUTE LOG OSD IMU GPS WINCH "
            "GENERIC_MULTIROTOR"
        ).split()
    )
} | {  # the names newer MAVLink dialects give 19..24
    "MAV_TYPE_VTOL_TAILSITTER_DUOROTOR": 19,
    "MAV_TYPE_VTOL_TAILSITTER_QUADROTOR": 20,
    "MAV_TYPE_VTOL_FIXEDROTOR": 22,
    "MAV_TYPE_VTOL_TAILSITTER": 23,
    "MAV_TYPE_VTOL_TILTWING": 24,
}
"""MAV_TYPE enum name → number: the relay sends HEARTBEAT ``type`` as gomavlib's enum string."""

_REQUIRED = frozenset(
    {"drone_id", "source", "timestamp_relay", "msg_id", "msg_name", "system_id", "component_id", "fields"}
)
_RELAY_ONLY = frozenset({"timestamp_device", "sequence", "raw"})
_ALLOWED = _REQUIRED | _RELAY_ONLY
_GO_ZERO_TIME = "0001-01-01T00:00:00Z"
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_UPPER_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_MARKER = b'"msg_name"'


def derived_uid(prefix: str, body: bytes | str) -> str:
    """A message id for a format that has none: ``{prefix}-`` + 32 hex digits of the body's SHA-256.

    Deterministic, so a redelivered or resent message keeps its id (one history row); 128 bits,
    so two different messages do not share one.
    """
    raw = body.encode() if isinstance(body, str) else bytes(body)
    return f"{prefix}-{hashlib.sha256(raw).hexdigest()[:32]}"


def message_type_of(msg_name: str) -> str:
    """The MAVLink name of a gomavlib ``msg_name`` (see :data:`MESSAGE_NAMES`).

    Raises:
        EnvelopeError: not a name (empty, or characters a MAVLink name cannot have).
    """
    known = MESSAGE_NAMES.get(msg_name)
    if known is not None:
        return known
    if _UPPER_NAME.fullmatch(msg_name):
        return msg_name
    converted = _CAMEL.sub("_", msg_name).upper()
    if not _UPPER_NAME.fullmatch(converted):
        raise EnvelopeError(f"edge telemetry: msg_name {msg_name!r:.60} is not a MAVLink message name")
    return converted


def mavlink_fields(message_type: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The agents' ``fields`` renamed to MAVLink's (see :data:`FIELD_NAMES`), values as sent.

    HEARTBEAT ``type`` sent as an enum name (``MAV_TYPE_QUADROTOR``) becomes its number; any
    other value is kept (a projection skips a non-number, as for v1).
    """
    names = FIELD_NAMES.get(message_type, {})
    out = {names.get(k, k): v for k, v in fields.items()}
    if message_type == "HEARTBEAT" and isinstance(out.get("type"), str):
        number = MAV_TYPES.get(out["type"])
        if number is not None:
            out["type"] = number
    return out


def _edge_subject(subject: str) -> tuple[str, str | None]:
    """(entity token, message token or None) of ``constellation.telemetry.{entity}[.{message}]``."""
    parts = published_subject(subject).split(".")
    if parts[:2] != ["constellation", "telemetry"] or len(parts) not in (3, 4):
        raise SubjectError(
            f"edge telemetry subject {subject!r} must be constellation.telemetry.{{entity_id}} or "
            "constellation.telemetry.{entity_id}.{message name lower-cased}"
        )
    for token in parts[2:]:
        if not TOKEN_RE.fullmatch(token):
            raise SubjectError(
                f"edge telemetry subject {subject!r}: token {token!r:.60} breaks the token rule"
            )
    return parts[2], (parts[3] if len(parts) == 4 else None)


def _when(obj: dict[str, Any], what: str) -> tuple[str, float]:
    """The message time: ``timestamp_relay``, else (Go's zero time) ``timestamp_device`` (epoch s)."""
    relay = obj["timestamp_relay"]
    if relay != _GO_ZERO_TIME:
        return parse_timestamp(relay, "timestamp_relay")
    device = obj.get("timestamp_device")
    if (type(device) is float or type(device) is int) and device > 0:
        text = format_timestamp(float(device))
        return parse_timestamp(text, "timestamp_device")
    raise EnvelopeError(f"{what}: timestamp_relay is Go's zero time and timestamp_device is not a time")


def decode_edge_telemetry(body: bytes | str, subject: str) -> Telemetry:
    """Decode a Pulsar or aero-arc relay telemetry envelope into the v1 :class:`Telemetry`.

    Args:
        body: the raw message body.
        subject: the subject it was delivered on (published or stored form).

    Returns:
        The envelope in v1 terms: MAVLink ``message_type`` and field names, ``org_id``
        :data:`ORG_FROM_REGISTRY`, a derived ``message_uid``.

    Raises:
        EnvelopeError: malformed JSON, unknown/missing fields, a bad integer, ``fields`` not an
            object, no valid time, or a subject that does not match ``drone_id``/``msg_name``.
        SubjectError: a subject of another shape, or a ``drone_id`` that breaks the token rule.
    """
    obj = loads_strict(body, "edge telemetry")
    fmt = FORMAT_RELAY if type(obj) is dict and obj.keys() & _RELAY_ONLY else FORMAT_PULSAR
    what = f"{fmt} telemetry"
    obj = _fields(obj, what, _ALLOWED, _REQUIRED)
    entity, message_token = _edge_subject(subject)
    drone_id = _token(obj["drone_id"], "drone_id")
    if drone_id != entity:
        raise EnvelopeError(
            f"{what}: subject/body mismatch: body drone_id {drone_id!r} != subject entity {entity!r}"
        )
    msg_name = obj["msg_name"]
    if type(msg_name) is not str:
        raise EnvelopeError(f"{what}: field 'msg_name' must be a string, got {type(msg_name).__name__}")
    if message_token is not None and message_token != msg_name.lower():
        raise EnvelopeError(
            f"{what}: subject/body mismatch: subject message {message_token!r} != msg_name {msg_name!r} lower-cased"
        )
    message_type = message_type_of(msg_name)
    fields = obj["fields"]
    if type(fields) is not dict:
        raise EnvelopeError(f"{what}: field 'fields' must be a JSON object, got {type(fields).__name__}")
    source = obj["source"]
    if type(source) is not str:
        raise EnvelopeError(f"{what}: field 'source' must be a string, got {type(source).__name__}")
    message_id = _int_in(obj, "msg_id", UINT32_MAX, what)
    system_id = _int_in(obj, "system_id", 255, what)
    component_id = _int_in(obj, "component_id", 255, what)
    timestamp, ts = _when(obj, what)
    data = mavlink_fields(message_type, fields)
    return Telemetry(
        derived_uid(fmt, body),
        ORG_FROM_REGISTRY,
        drone_id,
        source,
        message_id,
        message_type,
        system_id,
        component_id,
        data,
        timestamp,
        ts,
        encode(data).decode(),
    )


def looks_like_edge(body: bytes | str) -> bool:
    """A cheap test before any parse: does the body have a ``msg_name`` key at all?"""
    return (_MARKER in body) if isinstance(body, bytes) else ('"msg_name"' in body)


def decode_any_telemetry(body: bytes | str, subject: str) -> Telemetry:
    """Decode telemetry in any accepted format (:data:`TELEMETRY_FORMATS`), v1 first.

    Raises:
        ProtocolError: it fits none; the message names each format tried and why it refused.
            A v1 envelope's own error stays first (``str`` starts with it), so a device that
            meant v1 reads what to fix at once.
    """
    try:
        return decode_telemetry(body, parse_telemetry_subject(subject))
    except ProtocolError as exc:
        v1_error = exc
    if looks_like_edge(body):
        try:
            return decode_edge_telemetry(body, subject)
        except ProtocolError as exc:
            edge_error = str(exc)
    else:
        edge_error = "no msg_name field"
    raise type(v1_error)(
        f"{v1_error} (fits no accepted telemetry format; tried {', '.join(TELEMETRY_FORMATS)}; "
        f"as {FORMAT_PULSAR}/{FORMAT_RELAY}: {edge_error})"
    ) from None


__all__ = [
    "FIELD_NAMES",
    "FORMAT_PULSAR",
    "FORMAT_RELAY",
    "FORMAT_V1",
    "MAV_TYPES",
    "MESSAGE_NAMES",
    "ORG_FROM_REGISTRY",
    "TELEMETRY_FORMATS",
    "decode_any_telemetry",
    "decode_edge_telemetry",
    "derived_uid",
    "mavlink_fields",
    "message_type_of",
]
