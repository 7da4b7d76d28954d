"""ISR events of Overwatch's edge agents, beside v1: Pulsar's detections and the vision service's events.

- **Pulsar** (``Constellation-Overwatch/pulsar`` ``pkg/services/detector/detector.go``,
  ``DetectionEvent``; published by ``pkg/services/publisher/publisher.go`` ``PublishDetection``):
  the v1 detection without ``schema_version`` and ``event_uid`` (``entity_id, org_id, track_id,
  label, confidence, x1, y1, x2, y2, timestamp``) on the v1 subject
  ``constellation.events.isr.{org}.{entity}.detection.{track_id}``. Its boxes are the model's,
  divided by the input size and not clipped: a box that overhangs the frame edge is clipped to
  [0, 1] here.
- **vision2constellation** (``src/services/communication/publisher.py`` ``build_detection``,
  ``service.py``; ``docs/DETECTION_PAYLOAD_STANDARD.md``): every event on the 5-token subject
  ``constellation.events.isr.{org}.{entity}``, the kind in the body's ``event_type``; a detection
  nests ``detection{track_id, label, confidence, bbox{x_min, y_min, x_max, y_max}, timestamp,
  model_type, metadata}``. ``bootsequence`` and ``shutdown`` (and any other kind) become the same
  :class:`~overwatch_lab.protocol.events.DeviceEvent` a v1 device event would.

Detections become the v1 :class:`~overwatch_lab.protocol.events.Detection`, so they are merged
into ``detections.tracked_objects`` exactly as a v1 one; their ``event_uid`` is derived from the
body's bytes (:func:`~overwatch_lab.protocol.edge_telemetry.derived_uid`).

:func:`decode_any_event` is what the event worker calls: v1 first, then these; an event that
fits none fails with an error naming each format tried.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from overwatch_lab.errors import EnvelopeError, ProtocolError, SubjectError
from overwatch_lab.protocol.edge_telemetry import derived_uid
from overwatch_lab.protocol.envelopes import (
    _fields,
    _mismatch,
    _token,
    _unit,
    loads_strict,
    parse_timestamp,
)
from overwatch_lab.protocol.events import (
    LABEL_MAX,
    Detection,
    DeviceEvent,
    decode_detection,
    decode_device_event,
)
from overwatch_lab.protocol.subjects import EventSubject, parse_event_subject

FORMAT_V1 = "v1"
FORMAT_PULSAR = "pulsar"
FORMAT_VISION = "vision2constellation"
EVENT_FORMATS = (FORMAT_V1, FORMAT_PULSAR, FORMAT_VISION)
"""Every ISR event format the lab accepts, in the order they are tried."""

_PULSAR_FIELDS = frozenset(
    {"entity_id", "org_id", "track_id", "label", "confidence", "x1", "y1", "x2", "y2", "timestamp"}
)
_VISION_REQUIRED = frozenset({"event_type", "org_id", "entity_id"})
_VISION_DETECTION_REQUIRED = frozenset({"track_id", "label", "confidence", "bbox"})
_BBOX_KEYS = ("x_min", "y_min", "x_max", "y_max")


def _number(obj: dict[str, Any], key: str, what: str) -> float:
    v = obj[key]
    if (type(v) is float or type(v) is int) and v == v and abs(v) != float("inf"):
        return float(v)
    raise EnvelopeError(f"{what}: field {key!r} must be a number, got {v!r:.40}")


def _detection(
    what: str,
    uid: str,
    subject: EventSubject,
    track_id: str,
    label: object,
    confidence: float,
    box: tuple[float, float, float, float],
    when: object,
) -> Detection:
    if type(label) is not str or not 1 <= len(label) <= LABEL_MAX:
        raise EnvelopeError(f"{what}: field 'label' must be a string of 1..{LABEL_MAX} characters")
    x1, y1, x2, y2 = box
    if x2 < x1:
        raise EnvelopeError(f"{what}: box right edge ({x2}) must be >= its left edge ({x1})")
    if y2 < y1:
        raise EnvelopeError(f"{what}: box bottom edge ({y2}) must be >= its top edge ({y1})")
    timestamp, ts = parse_timestamp(when)
    return Detection(
        uid, subject.org_id, subject.entity_id, track_id, label, confidence, x1, y1, x2, y2, timestamp, ts
    )


def _clip(v: float) -> float:
    return 0.0 if v < 0.0 else 1.0 if v > 1.0 else v


def decode_pulsar_detection(body: bytes | str, subject: EventSubject) -> Detection:
    """Decode a Pulsar ``DetectionEvent`` on the v1 detection subject (box clipped to [0, 1]).

    Raises:
        EnvelopeError: malformed JSON, unknown/missing fields, a bad label/number/timestamp, a
            box whose edges are reversed, or a subject/body mismatch.
        SubjectError: a bad token.
    """
    what = "pulsar detection"
    if subject.track_id is None:
        raise EnvelopeError(f"{what}: subject has no track_id (event_type {subject.event_type!r})")
    obj = _fields(loads_strict(body, what), what, _PULSAR_FIELDS, _PULSAR_FIELDS)
    for key in ("org_id", "entity_id", "track_id"):
        value = _token(obj[key], key)
        if value != getattr(subject, key):
            raise _mismatch(what, key, value, getattr(subject, key))
    x1, y1, x2, y2 = (_clip(_number(obj, k, what)) for k in ("x1", "y1", "x2", "y2"))
    return _detection(
        what,
        derived_uid(FORMAT_PULSAR, body),
        subject,
        subject.track_id,
        obj["label"],
        _unit(obj, "confidence", what),
        (x1, y1, x2, y2),
        obj["timestamp"],
    )


def _vision_subject(subject: str) -> EventSubject:
    parts = subject.split(".")
    if len(parts) != 5 or parts[:3] != ["constellation", "events", "isr"]:
        raise SubjectError(
            f"vision event subject {subject!r} must be constellation.events.isr.{{org_id}}.{{entity_id}}"
        )
    return EventSubject(_token(parts[3], "org_id"), _token(parts[4], "entity_id"), "")


def decode_vision_event(body: bytes | str, subject: str) -> Detection | DeviceEvent:
    """Decode a vision2constellation event on ``constellation.events.isr.{org}.{entity}``.

    A ``detection`` becomes a :class:`Detection` (fields of the nested payload other than the
    core ones, such as ``model_type`` and ``metadata``, are not kept); any other ``event_type``
    a :class:`DeviceEvent` of that type, with the whole body as its data.

    Raises:
        EnvelopeError: malformed JSON, a missing ``event_type``/``org_id``/``entity_id``, a
            detection without its core fields, a bad label/number/box/timestamp, or a
            subject/body mismatch.
        SubjectError: a subject of another shape, or a bad token.
    """
    what = "vision event"
    subj = _vision_subject(subject)
    obj = loads_strict(body, what)
    if type(obj) is not dict:
        raise EnvelopeError(f"{what}: body must be a JSON object, got {type(obj).__name__}")
    if not obj.keys() >= _VISION_REQUIRED:
        raise EnvelopeError(
            f"{what}: missing required field(s) {', '.join(sorted(_VISION_REQUIRED - obj.keys()))}"
        )
    for key in ("org_id", "entity_id"):
        if obj[key] != getattr(subj, key):
            raise _mismatch(what, key, obj[key], getattr(subj, key))
    event_type = _token(obj["event_type"], "event_type")
    if event_type != "detection":
        return decode_device_event(body, EventSubject(subj.org_id, subj.entity_id, event_type))
    what = "vision detection"
    det = obj.get("detection")
    if type(det) is not dict:
        raise EnvelopeError(f"{what}: field 'detection' must be a JSON object, got {type(det).__name__}")
    if not det.keys() >= _VISION_DETECTION_REQUIRED:
        missing = ", ".join(sorted(_VISION_DETECTION_REQUIRED - det.keys()))
        raise EnvelopeError(f"{what}: detection is missing required field(s) {missing}")
    track_id = _token(det["track_id"], "track_id")
    bbox = det["bbox"]
    if type(bbox) is not dict or not bbox.keys() >= set(_BBOX_KEYS):
        raise EnvelopeError(f"{what}: detection.bbox must be an object with {', '.join(_BBOX_KEYS)}")
    x1, y1, x2, y2 = (_unit(bbox, k, f"{what} bbox") for k in _BBOX_KEYS)
    when = det.get("timestamp", obj.get("timestamp"))
    return _detection(
        what,
        derived_uid("vision", body),
        EventSubject(subj.org_id, subj.entity_id, "detection", track_id),
        track_id,
        det["label"],
        _unit(det, "confidence", what),
        (x1, y1, x2, y2),
        when,
    )


def decode_any_event(body: bytes | str, subject: str) -> Detection | DeviceEvent:
    """Decode an ISR event in any accepted format (:data:`EVENT_FORMATS`), v1 first.

    On a v1 detection subject a v1 detection, else a Pulsar one; on a v1 device-event subject
    (6 tokens) a device event, as before; on the 5-token subject a vision2constellation event.

    Raises:
        ProtocolError: it fits none; the message starts with the v1 error and names each
            format tried and why it refused.
    """
    try:
        subj = parse_event_subject(subject)
    except SubjectError as exc:
        if len(subject.split(".")) != 5:
            raise _none_fits(exc, f"as {FORMAT_VISION}: not its 5-token subject") from None
        try:
            return decode_vision_event(body, subject)
        except ProtocolError as vision_exc:
            raise _none_fits(exc, f"as {FORMAT_VISION}: {vision_exc}") from None
    if subj.track_id is None:
        return decode_device_event(body, subj)
    try:
        return decode_detection(body, subj)
    except ProtocolError as exc:
        v1_error = exc
    try:
        return decode_pulsar_detection(body, subj)
    except ProtocolError as exc:
        raise _none_fits(v1_error, f"as {FORMAT_PULSAR}: {exc}") from None


def _none_fits(v1_error: ProtocolError, others: str) -> ProtocolError:
    return type(v1_error)(
        f"{v1_error} (fits no accepted event format; tried {', '.join(EVENT_FORMATS)}; {others})"
    )


__all__ = [
    "EVENT_FORMATS",
    "FORMAT_PULSAR",
    "FORMAT_V1",
    "FORMAT_VISION",
    "decode_any_event",
    "decode_pulsar_detection",
    "decode_vision_event",
]
