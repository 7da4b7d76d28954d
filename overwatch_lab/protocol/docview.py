"""A light decode of the few entity-document fields the synchronizer reads.

A pass of the synchronizer needs, of each changed document, its static fields, the live fields it
writes back to SQL and what says how long the entity has been silent: a dozen leaves of a
document of a few kilobytes. :func:`view` decodes only those (msgspec skips the rest without
building it), into a small dict shaped like the document, so the functions of
:mod:`overwatch_lab.protocol.state` (``static_drift``, ``live_fields``, ``mark_stale``) read it as
they read the whole document. A key absent from the document stays absent from the view.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from overwatch_lab.protocol.state import STATIC_FIELDS

Doc = dict[str, Any]


class _Global(msgspec.Struct):
    latitude: Any = None
    longitude: Any = None
    altitude_msl: Any = None
    timestamp: Any = None


class _Position(msgspec.Struct):
    global_: _Global | None = msgspec.field(default=None, name="global")


class _Vfr(msgspec.Struct):
    heading: Any = None
    groundspeed: Any = None


class _View(msgspec.Struct):
    entity_id: Any | UnsetType = UNSET
    org_id: Any | UnsetType = UNSET
    org_name: Any | UnsetType = UNSET
    name: Any | UnsetType = UNSET
    entity_type: Any | UnsetType = UNSET
    status: Any | UnsetType = UNSET
    priority: Any | UnsetType = UNSET
    metadata: Any | UnsetType = UNSET
    is_live: Any | UnsetType = UNSET
    last_seen: Any | UnsetType = UNSET
    received_at: Any | UnsetType = UNSET
    position: _Position | None = None
    vfr: _Vfr | None = None


_TOP = (*STATIC_FIELDS, "is_live", "last_seen", "received_at")
_decoder = msgspec.json.Decoder(_View)


def view(raw: bytes) -> Doc | None:
    """Decode the fields the synchronizer reads of one document's JSON.

    Returns:
        A dict with those fields (absent ones left out), or None when the value does not have the
        expected shape (not an object, ``position``/``vfr`` not objects, not JSON): the caller
        then reads the whole document.
    """
    try:
        v = _decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    out: Doc = {}
    for key in _TOP:
        value = getattr(v, key)
        if value is not UNSET:
            out[key] = value
    g = v.position.global_ if v.position is not None else None
    if g is not None:
        out["position"] = {
            "global": {
                "latitude": g.latitude,
                "longitude": g.longitude,
                "altitude_msl": g.altitude_msl,
                "timestamp": g.timestamp,
            }
        }
    if v.vfr is not None:
        out["vfr"] = {"heading": v.vfr.heading, "groundspeed": v.vfr.groundspeed}
    return out
