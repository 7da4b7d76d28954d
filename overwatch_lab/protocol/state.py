"""The entity document kept in the ``CONSTELLATION_GLOBAL_STATE`` KV bucket (docs/wire.md).

One JSON document per entity, key = the bare entity_id. Writers own disjoint parts:

- the entity worker and the synchronizer own :data:`STATIC_FIELDS` (:func:`apply_static`);
- the telemetry worker owns the telemetry subtrees, ``telemetry_cursors``, ``system_id``,
  ``component_id``, ``first_seen``/``last_seen`` and ``is_live`` (:func:`merge_telemetry`);
- the event worker owns ``detections`` (:func:`merge_detection`);
- the synchronizer turns ``is_live`` off for silent entities (:func:`mark_stale`).

Every function here mutates the document it is given in place (the CAS loop in
``kvstate.EntityKV`` hands it a fresh copy per attempt). ``last_seen`` and ``updated_at`` only
move forward: canonical timestamps compare correctly as strings.

Beyond docs/wire.md the document carries ``telemetry_cursors`` (message_type → {message_uid,
timestamp} of the last applied message, as Overwatch's line A does) and a ``timestamp`` leaf in
``mission``, ``actuators`` and ``environment`` too, so every subtree says when it last changed.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from overwatch_lab.protocol import envelopes
from overwatch_lab.protocol.events import Detection

Doc = dict[str, Any]

STATIC_FIELDS: tuple[str, ...] = (
    "entity_id",
    "org_id",
    "org_name",
    "name",
    "entity_type",
    "status",
    "priority",
    "metadata",
)
"""Document fields owned by the entity worker and the synchronizer (from the entities table)."""

_SUBTREES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("position", "global"): (
        "latitude",
        "longitude",
        "altitude_msl",
        "altitude_relative",
        "altitude_terrain",
        "accuracy_h",
        "accuracy_v",
        "satellites_visible",
        "fix_type",
        "timestamp",
    ),
    ("position", "local"): ("x", "y", "z", "vx", "vy", "vz", "timestamp"),
    ("attitude", "euler"): ("roll", "pitch", "yaw", "rollspeed", "pitchspeed", "yawspeed", "timestamp"),
    ("attitude", "quaternion"): ("q1", "q2", "q3", "q4", "rollspeed", "pitchspeed", "yawspeed", "timestamp"),
    ("vehicle_status",): (
        "armed",
        "mode",
        "custom_mode",
        "autopilot",
        "system_status",
        "vehicle_type",
        "landed_state",
        "vtol_state",
        "load",
        "sensors_enabled",
        "sensors_health",
        "timestamp",
    ),
    ("power",): (
        "voltage",
        "current",
        "battery_remaining",
        "consumed",
        "energy_consumed",
        "cells",
        "temperature",
        "timestamp",
    ),
    ("vfr",): ("airspeed", "groundspeed", "heading", "climb_rate", "throttle", "altitude", "timestamp"),
    ("mission",): ("current_waypoint", "total_waypoints", "timestamp"),
    ("actuators",): ("servos", "timestamp"),
    ("environment",): ("pressure_abs", "pressure_diff", "temperature", "humidity", "timestamp"),
}
"""Every telemetry subtree of the document and its leaves."""

TELEMETRY_SUBTREES: tuple[tuple[str, ...], ...] = tuple(_SUBTREES)


def static_values(record: Mapping[str, Any], org_name: str | None) -> dict[str, Any]:
    """Return the :data:`STATIC_FIELDS` values an entity record (or store row) implies.

    Defaults as in ``entities.validate_entity_record``: name = entity_id, status = active,
    priority = normal.
    """
    return {
        "entity_id": record["entity_id"],
        "org_id": record["org_id"],
        "org_name": org_name,
        "name": record.get("name") or record["entity_id"],
        "entity_type": record.get("entity_type"),
        "status": record.get("status") or "active",
        "priority": record.get("priority") or "normal",
        "metadata": record.get("metadata"),
    }


def new_entity_doc(record: Mapping[str, Any], org_name: str | None, now: str) -> Doc:
    """Build a complete entity document for a newly known entity.

    Args:
        record: an entity record or store row (needs entity_id and org_id; extra keys ignored).
        org_name: the organisation's name (None if unknown).
        now: canonical timestamp for created_at/updated_at.

    Returns:
        Every subtree of docs/wire.md present with None leaves, empty detections, no cursors,
        is_live False, first_seen/last_seen None.
    """
    doc: Doc = static_values(record, org_name)
    doc["is_live"] = False
    doc["position"] = {}
    doc["attitude"] = {}
    for path, leaves in _SUBTREES.items():
        blank = dict.fromkeys(leaves)
        if len(path) == 2:
            doc[path[0]][path[1]] = blank
        else:
            doc[path[0]] = blank
    doc["detections"] = {
        "status": None,
        "is_live": False,
        "frame_count": 0,
        "tracked_objects": {},
        "timestamp": None,
    }
    doc["telemetry_cursors"] = {}
    doc["system_id"] = None
    doc["component_id"] = None
    doc["first_seen"] = None
    doc["last_seen"] = None
    doc["created_at"] = now
    doc["updated_at"] = now
    return doc


def static_drift(doc: Mapping[str, Any], record: Mapping[str, Any], org_name: str | None) -> list[str]:
    """Return the static fields whose document value differs from the record's (in order)."""
    return [k for k, v in static_values(record, org_name).items() if doc.get(k, _ABSENT) != v]


_ABSENT = object()


def _forward(doc: Doc, key: str, value: str) -> None:
    """Set ``doc[key] = max(doc[key], value)`` for canonical timestamps (None counts as oldest)."""
    old = doc.get(key)
    if not isinstance(old, str) or old < value:
        doc[key] = value


def apply_static(doc: Doc, record: Mapping[str, Any], org_name: str | None, now: str) -> bool:
    """Copy the record's static fields into the document; never touches telemetry subtrees.

    ``updated_at`` moves forward to ``now`` when anything changed.

    Returns:
        True if any static field changed.
    """
    changed = False
    for key, value in static_values(record, org_name).items():
        if doc.get(key, _ABSENT) != value:
            doc[key] = value
            changed = True
    if changed:
        _forward(doc, "updated_at", now)
    return changed


def apply_sets(doc: Doc, sets: Mapping[tuple[str, ...], Any]) -> None:
    """Set each leaf path to its value, creating (or replacing non-dict) intermediate nodes."""
    for path, value in sets.items():
        depth = len(path)
        if depth == 3:  # unrolled: every projected path has 2 or 3 parts (hot path)
            a, b, leaf = path
            node = doc.get(a)
            if type(node) is not dict:
                node = doc[a] = {}
            child = node.get(b)
            if type(child) is not dict:
                child = node[b] = {}
            child[leaf] = value
        elif depth == 2:
            a, leaf = path
            node = doc.get(a)
            if type(node) is not dict:
                node = doc[a] = {}
            node[leaf] = value
        else:
            node = doc
            for key in path[:-1]:
                child = node.get(key)
                if type(child) is not dict:
                    child = node[key] = {}
                node = child
            node[path[-1]] = value


def cursor_of(doc: Mapping[str, Any], message_type: str) -> str | None:
    """Return the timestamp of the last applied message of ``message_type``, or None."""
    cursors = doc.get("telemetry_cursors")
    if type(cursors) is not dict:
        return None
    cursor = cursors.get(message_type)
    if type(cursor) is not dict:
        return None
    ts = cursor.get("timestamp")
    return ts if isinstance(ts, str) else None


def merge_telemetry(
    doc: Doc,
    *,
    sets: Mapping[tuple[str, ...], Any],
    cursors: Mapping[str, tuple[str, str]],
    last_seen: str,
    system_id: int,
    component_id: int,
) -> None:
    """Merge already-filtered telemetry (one or more messages' projections) into the document.

    The caller has dropped stale messages (timestamp not newer than :func:`cursor_of`).

    Args:
        doc: the entity document, changed in place.
        sets: merged :attr:`~overwatch_lab.protocol.mavlink.Projection.sets` (later wins).
        cursors: message_type → (message_uid, timestamp) of the newest applied message; a
            cursor only moves forward.
        last_seen: newest envelope timestamp applied; last_seen/updated_at move forward to it.
        system_id: MAVLink system id of the newest message.
        component_id: MAVLink component id of the newest message.
    """
    apply_sets(doc, sets)
    tc = doc.get("telemetry_cursors")
    if type(tc) is not dict:
        tc = doc["telemetry_cursors"] = {}
    first = last_seen
    for message_type, (uid, ts) in cursors.items():
        if ts < first:
            first = ts
        old = tc.get(message_type)
        old_ts = old.get("timestamp") if type(old) is dict else None
        if not isinstance(old_ts, str) or old_ts < ts:
            tc[message_type] = {"message_uid": uid, "timestamp": ts}
    _forward(doc, "last_seen", last_seen)
    _forward(doc, "updated_at", last_seen)
    if doc.get("first_seen") is None:
        doc["first_seen"] = first
    doc["is_live"] = True
    doc["system_id"] = system_id
    doc["component_id"] = component_id


def merge_detection(doc: Doc, det: Detection) -> bool:
    """Merge one detection into ``detections.tracked_objects[track_id]`` (docs/wire.md).

    frame_count + 1, centroid (cx, cy) = bbox middle, dx/dy = change of centroid (0 for a new
    track), first_seen kept, last_seen = the detection's time; detection-level status
    ``active``, is_live True, frame_count + 1, timestamp and ``updated_at`` move forward.

    Returns:
        False, leaving the document untouched, when the detection is not newer than the
        track's last_seen; True otherwise.
    """
    dets = doc.get("detections")
    objects = dets.get("tracked_objects") if type(dets) is dict else None
    track = objects.get(det.track_id) if type(objects) is dict else None
    cx = (det.x1 + det.x2) / 2
    cy = (det.y1 + det.y2) / 2
    dx = dy = 0.0
    frames = 1
    first_seen = det.timestamp
    if type(track) is dict:
        last = track.get("last_seen")
        if isinstance(last, str) and det.timestamp <= last:
            return False
        old_cx, old_cy = track.get("cx"), track.get("cy")
        if isinstance(old_cx, int | float) and isinstance(old_cy, int | float):
            dx, dy = cx - old_cx, cy - old_cy
        old_frames = track.get("frame_count")
        frames = (old_frames if type(old_frames) is int else 0) + 1
        if isinstance(track.get("first_seen"), str):
            first_seen = track["first_seen"]
    if type(dets) is not dict:
        dets = doc["detections"] = {"status": None, "is_live": False, "frame_count": 0, "timestamp": None}
    if type(objects) is not dict:
        objects = dets["tracked_objects"] = {}
    objects[det.track_id] = {
        "track_id": det.track_id,
        "label": det.label,
        "confidence": det.confidence,
        "frame_count": frames,
        "bbox": {"x1": det.x1, "y1": det.y1, "x2": det.x2, "y2": det.y2},
        "cx": cx,
        "cy": cy,
        "dx": dx,
        "dy": dy,
        "first_seen": first_seen,
        "last_seen": det.timestamp,
    }
    dets["status"] = "active"
    dets["is_live"] = True
    total = dets.get("frame_count")
    dets["frame_count"] = (total if type(total) is int else 0) + 1
    _forward(dets, "timestamp", det.timestamp)
    _forward(doc, "updated_at", det.timestamp)
    return True


def mark_stale(doc: Doc, now_ts: float, stale_after_s: float) -> bool:
    """Turn ``is_live`` off when the entity has been silent for more than ``stale_after_s``.

    Silence is measured on the lab's clock: ``received_at`` (when the lab last applied
    something from the entity; **new**, see :func:`mark_received`), falling back to the device's
    ``last_seen`` for documents written before it existed. Device clocks can be skewed, or run
    ahead in a fast-forward simulation, so they cannot say how long the lab has heard nothing.
    An entity that is live but has neither (or unreadable ones) is stale too.

    Returns:
        True if ``is_live`` changed.
    """
    if doc.get("is_live") is not True:
        return False
    last_seen = doc.get("received_at") or doc.get("last_seen")
    if last_seen is not None:
        try:
            seen_ts = envelopes.parse_timestamp(last_seen, "received_at")[1]
        except ValueError:
            seen_ts = None
        if seen_ts is not None and now_ts - seen_ts <= stale_after_s:
            return False
    doc["is_live"] = False
    return True


def mark_received(doc: Doc, now: str) -> None:
    """Record that the lab applied something from this entity at ``now`` (the lab's clock)."""
    if (doc.get("received_at") or "") < now:
        doc["received_at"] = now


def _leaf(doc: Mapping[str, Any], *path: str) -> Any:
    node: Any = doc
    for key in path:
        if type(node) is not dict:
            return None
        node = node.get(key)
    return node


def live_fields(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Return the live columns the synchronizer writes back to the ``entities`` table.

    Keys: latitude, longitude, altitude (position.global.altitude_msl), heading (vfr.heading),
    velocity (vfr.groundspeed), position_timestamp (position.global.timestamp), is_live, last_seen.
    """
    return {
        "latitude": _leaf(doc, "position", "global", "latitude"),
        "longitude": _leaf(doc, "position", "global", "longitude"),
        "altitude": _leaf(doc, "position", "global", "altitude_msl"),
        "heading": _leaf(doc, "vfr", "heading"),
        "velocity": _leaf(doc, "vfr", "groundspeed"),
        "position_timestamp": _leaf(doc, "position", "global", "timestamp"),
        "is_live": doc.get("is_live") is True,
        "last_seen": doc.get("last_seen"),
    }
