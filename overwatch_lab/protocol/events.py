"""ISR detections and device events of docs/wire.md: strict decoders and builders.

- Detection v1 (``constellation.events.isr.{org}.{entity}.detection.{track}``):
  :func:`decode_detection`, :func:`make_detection`.
- Device events (``bootsequence``, ``shutdown``, …): :func:`decode_device_event`,
  :func:`make_device_event`.

JSON, times and the shared field checks come from :mod:`overwatch_lab.protocol.envelopes`.

Pure: no I/O.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from overwatch_lab.errors import EnvelopeError
from overwatch_lab.protocol.envelopes import (
    SCHEMA_VERSION,
    _fields,
    _mismatch,
    _to_timestamp,
    _token,
    _unit,
    format_timestamp,
    loads_strict,
    now_timestamp,
    parse_timestamp,
)
from overwatch_lab.protocol.subjects import EventSubject

LABEL_MAX = 128

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
    "Detection",
    "DeviceEvent",
    "decode_detection",
    "decode_device_event",
    "make_detection",
    "make_device_event",
]
