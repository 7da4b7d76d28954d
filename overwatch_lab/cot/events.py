"""Entity documents as Cursor-on-Target (CoT) events: the XML that TAK clients read.

One function, :func:`entity_event`, turns one entity document of the ``CONSTELLATION_GLOBAL_STATE``
bucket (docs/wire.md "Entity state in NATS KV") into one CoT 2.0 ``<event>``::

    <?xml version="1.0" encoding="UTF-8" standalone="yes"?>
    <event version="2.0" uid="org-a.uav-1" type="a-f-A-M-F-Q" how="m-g"
           time="…Z" start="…Z" stale="…Z">
      <point lat="32.94881" lon="-96.80132" hae="152.4" ce="1.2" le="9999999.0"/>
      <detail>
        <contact callsign="Falcon 1"/>
        <__group name="Cyan" role="Team Member"/>
        <track course="90.0" speed="12.5"/>
        <status battery="87"/>
        <remarks>aircraft_multirotor; org Org A; status active; mode GUIDED; armed</remarks>
      </detail>
    </event>

- **type** = ``{kind}-{affiliation}-{function}`` from :data:`COT_TYPES` (entity_type → CoT function,
  MIL-STD-2525 as CoT spells it) and the affiliation letter of the entity's organisation
  (:data:`AFFILIATIONS`; friendly unless told otherwise). Entity types that are places, not
  units (waypoint, no_fly_zone, geofence), get a map-point type with no affiliation.
- **uid** = ``{org_id}.{entity_id}`` (both are dot-free tokens on the wire, so it is unambiguous).
- **time/start** = when the event is made; **stale** = time + the lab's ``stale_after_s``: a TAK
  client greys the item out exactly when the lab would mark it not live. An entity that is not
  live (or was deleted) is sent with stale = time (already stale): TAK clients grey it and drop it.
- **point**: latitude/longitude from ``position.global``; hae = ``altitude_msl`` (MSL, not the
  ellipsoid: off by the geoid height, tens of metres), ce/le = ``accuracy_h``/``accuracy_v``;
  9999999 (CoT's "unknown") where the lab has no value. No position, no event.
- **track**: course = ``vfr.heading`` (else from the local NED velocity), speed = ``vfr.groundspeed``
  (else the horizontal speed of ``position.local``), in degrees and m/s.

Everything that comes from a device (names, ids, modes) is text to escape, never markup: the
tree is built with ``xml.etree`` (which escapes ``& < > "``), characters that XML 1.0 cannot
carry at all (control characters, lone surrogates, U+FFFE/U+FFFF) are replaced by U+FFFD, a
carriage return becomes a line feed (as an XML reader would read it in text anyway), and
long texts are cut (:data:`CALLSIGN_MAX`, :data:`REMARKS_MAX`) so an event fits a datagram.

Pure: no I/O.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from overwatch_lab.errors import ConfigError

COT_TYPES: Mapping[str, str] = {
    "aircraft_fixed_wing": "a-?-A-M-F-Q",  # air / military / fixed wing / drone (UAV)
    "aircraft_multirotor": "a-?-A-M-F-Q",  # the UAV symbol every TAK client draws (2525 has no rotary drone leaf they all know)
    "aircraft_vtol": "a-?-A-M-F-Q",
    "aircraft_helicopter": "a-?-A-M-H",  # air / military / rotary wing
    "ground_vehicle_wheeled": "a-?-G-E-V",  # ground / equipment / vehicle
    "ground_vehicle_tracked": "a-?-G-E-V",
    "surface_vessel_usv": "a-?-S",  # sea surface
    "underwater_vehicle": "a-?-U",  # subsurface
    "sensor_platform": "a-?-G-E-S",  # ground / equipment / sensor
    "payload_system": "a-?-G-E",  # ground / equipment
    "operator_station": "a-?-G",  # ground
    "waypoint": "b-m-p-w",  # map point: waypoint (no affiliation)
    "no_fly_zone": "b-m-p-s-m",  # map point: spot marker (the zone's shape is not carried)
    "geofence": "b-m-p-s-m",
}
"""CoT type of each entity_type of docs/wire.md; ``?`` is replaced by the affiliation letter."""

DEFAULT_COT_TYPE = "a-?-G"
"""CoT type of an entity whose entity_type is missing or unknown: a ground unit."""

AFFILIATIONS: Mapping[str, str] = {
    "friendly": "f",
    "hostile": "h",
    "neutral": "n",
    "unknown": "u",
    "assumed-friend": "a",
    "suspect": "s",
    "pending": "p",
}
"""CoT affiliation letters by name (the letters themselves are accepted too)."""

UNKNOWN = 9999999.0
"""CoT's value for an unknown hae, ce or le."""
CALLSIGN_MAX = 128
"""Characters of the entity name kept in the callsign (longer ones are cut, ending in …)."""
REMARKS_MAX = 512
"""Characters kept in the remarks."""
XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
HOW = "m-g"
"""How the position was made: machine, GPS."""

# Characters XML 1.0 can carry (its Char production); anything else becomes U+FFFD.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def affiliation_letter(value: str) -> str:
    """The CoT affiliation letter for a name of :data:`AFFILIATIONS` or a letter itself.

    Raises:
        ConfigError: neither (the message lists the names).
    """
    v = value.strip().lower()
    if v in AFFILIATIONS.values():
        return v
    letter = AFFILIATIONS.get(v)
    if letter is None:
        raise ConfigError(
            f"unknown CoT affiliation {value!r}; one of {', '.join(AFFILIATIONS)} "
            f"(or a letter: {', '.join(AFFILIATIONS.values())})"
        )
    return letter


def cot_type(entity_type: object, affiliation: str = "f") -> str:
    """The CoT type of an entity_type (see :data:`COT_TYPES`) for an affiliation letter."""
    template = (
        COT_TYPES.get(entity_type, DEFAULT_COT_TYPE) if isinstance(entity_type, str) else DEFAULT_COT_TYPE
    )
    return template.replace("?", affiliation, 1)


def xml_text(value: object, limit: int) -> str:
    """``value`` as text that XML 1.0 can carry, at most ``limit`` characters (cut ones end in …)."""
    # \r would reach a reader as \n in element text (XML's end-of-line rule): say so up front
    text = _NOT_XML_CHAR.sub("\ufffd", str(value)).replace("\r\n", "\n").replace("\r", "\n")
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def cot_time(ts: float) -> str:
    """A Unix time as CoT writes it: ``2026-01-31T12:00:00.000Z`` (UTC, milliseconds)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True, slots=True)
class CotEvent:
    """One entity's event, built but not yet timed.

    Attributes:
        uid: ``{org_id}.{entity_id}``.
        live: False for an entity that is not live (sent already stale).
        body: what the event says apart from its times: equal bodies mean nothing changed.
    """

    uid: str
    live: bool
    body: tuple[Any, ...]

    def xml(self, now: float, stale_after_s: float) -> bytes:
        """The whole event as UTF-8 bytes (declaration included), made at ``now``.

        stale = now + ``stale_after_s`` for a live entity, = now for one that is not.
        """
        cot_type_, point, callsign, group, role, track, battery, remarks = self.body
        stamp = cot_time(now)
        event = ET.Element(
            "event",
            {
                "version": "2.0",
                "uid": self.uid,
                "type": cot_type_,
                "how": HOW,
                "time": stamp,
                "start": stamp,
                "stale": cot_time(now + stale_after_s) if self.live else stamp,
            },
        )
        lat, lon, hae, ce, le = point
        ET.SubElement(
            event,
            "point",
            {"lat": f"{lat:.7f}", "lon": f"{lon:.7f}", "hae": _num(hae), "ce": _num(ce), "le": _num(le)},
        )
        detail = ET.SubElement(event, "detail")
        ET.SubElement(detail, "contact", {"callsign": callsign})
        ET.SubElement(detail, "__group", {"name": group, "role": role})
        if track is not None:
            ET.SubElement(detail, "track", {"course": f"{track[0]:.1f}", "speed": f"{track[1]:.2f}"})
        if battery is not None:
            ET.SubElement(detail, "status", {"battery": str(battery)})
        ET.SubElement(detail, "remarks").text = remarks
        return (XML_DECLARATION + ET.tostring(event, encoding="unicode")).encode()


def entity_event(
    entity_id: str,
    doc: Mapping[str, Any],
    *,
    affiliation: str = "f",
    group: str = "Cyan",
    role: str = "Team Member",
) -> CotEvent | None:
    """The CoT event of one entity document, or None when it has no usable position.

    Args:
        entity_id: the document's key in the bucket.
        doc: the entity document (not modified).
        affiliation: the CoT affiliation letter (:func:`affiliation_letter`).
        group: the TAK team (``__group`` name, a team colour such as Cyan).
        role: the TAK role (``__group`` role).
    """
    point = _point(doc)
    if point is None:
        return None
    org_id = doc.get("org_id")
    uid = xml_text(f"{org_id}.{entity_id}" if org_id else entity_id, 300)
    name = doc.get("name")
    callsign = xml_text(name if isinstance(name, str) and name else entity_id, CALLSIGN_MAX)
    body = (
        cot_type(doc.get("entity_type"), affiliation),
        point,
        callsign,
        xml_text(group, 64),
        xml_text(role, 64),
        _track(doc),
        _battery(doc),
        xml_text(_remarks(doc), REMARKS_MAX),
    )
    return CotEvent(uid=uid, live=doc.get("is_live") is True, body=body)


def _num(x: float) -> str:
    return f"{x:.1f}" if x == UNKNOWN else f"{x:.2f}"


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _sub(doc: Mapping[str, Any], *path: str) -> Mapping[str, Any]:
    node: object = doc
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}


def _point(doc: Mapping[str, Any]) -> tuple[float, float, float, float, float] | None:
    g = _sub(doc, "position", "global")
    lat, lon = _finite(g.get("latitude")), _finite(g.get("longitude"))
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    hae = _finite(g.get("altitude_msl"))
    ce, le = _finite(g.get("accuracy_h")), _finite(g.get("accuracy_v"))
    return (
        lat,
        lon,
        UNKNOWN if hae is None else hae,
        UNKNOWN if ce is None or ce < 0 else ce,
        UNKNOWN if le is None or le < 0 else le,
    )


def _track(doc: Mapping[str, Any]) -> tuple[float, float] | None:
    vfr, local = _sub(doc, "vfr"), _sub(doc, "position", "local")
    vx, vy = _finite(local.get("vx")), _finite(local.get("vy"))
    course, speed = _finite(vfr.get("heading")), _finite(vfr.get("groundspeed"))
    if speed is None and vx is not None and vy is not None:
        speed = math.hypot(vx, vy)
    if course is None and vx is not None and vy is not None and math.hypot(vx, vy) > 0.1:
        course = math.degrees(math.atan2(vy, vx))  # NED: x north, y east
    if course is None or speed is None or speed < 0:
        return None
    return (course % 360.0, speed)


def _battery(doc: Mapping[str, Any]) -> int | None:
    b = _finite(_sub(doc, "power").get("battery_remaining"))
    return int(b) if b is not None and 0 <= b <= 100 else None


def _remarks(doc: Mapping[str, Any]) -> str:
    vs = _sub(doc, "vehicle_status")
    parts = [str(doc.get("entity_type") or "unknown type")]
    org = doc.get("org_name") or doc.get("org_id")
    if org:
        parts.append(f"org {org}")
    if doc.get("status"):
        parts.append(f"status {doc['status']}")
    if vs.get("mode"):
        parts.append(f"mode {vs['mode']}")
    if isinstance(vs.get("armed"), bool):
        parts.append("armed" if vs["armed"] else "disarmed")
    if doc.get("is_live") is not True:
        parts.append("not live")
    return "; ".join(parts)
