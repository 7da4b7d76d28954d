"""Entity documents as CoT events (overwatch_lab/cot/events.py), read back by takproto and expat."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
import takproto

from overwatch_lab.cot import events
from overwatch_lab.cot.events import COT_TYPES, affiliation_letter, cot_type, entity_event
from overwatch_lab.errors import ConfigError
from overwatch_lab.protocol.entities import ENTITY_TYPES

NOW = 1_780_000_000.25  # 2026-05-28T20:26:40.250Z


def doc(**over):
    d = {
        "entity_id": "uav-1",
        "org_id": "org-a",
        "org_name": "Org A",
        "name": "Falcon 1",
        "entity_type": "aircraft_multirotor",
        "status": "active",
        "is_live": True,
        "position": {
            "global": {
                "latitude": 32.94881,
                "longitude": -96.80132,
                "altitude_msl": 152.4,
                "accuracy_h": 1.5,
            },
            "local": {"vx": 0.0, "vy": 3.0},
        },
        "vfr": {"groundspeed": 12.5, "heading": 271.0},
        "power": {"battery_remaining": 87},
        "vehicle_status": {"mode": "GUIDED", "armed": True},
    }
    d.update(over)
    return d


def parsed(event, stale_after_s=5.0):
    raw = event.xml(NOW, stale_after_s)
    root = ET.fromstring(raw)  # strict XML 1.0 (expat)
    return root, takproto.parse_proto(bytearray(raw)).cotEvent


def test_every_entity_type_of_the_wire_has_a_cot_type():
    assert set(COT_TYPES) == set(ENTITY_TYPES)


@pytest.mark.parametrize(
    ("entity_type", "aff", "expected"),
    [
        ("aircraft_multirotor", "f", "a-f-A-M-F-Q"),
        ("aircraft_fixed_wing", "h", "a-h-A-M-F-Q"),
        ("aircraft_helicopter", "n", "a-n-A-M-H"),
        ("ground_vehicle_wheeled", "f", "a-f-G-E-V"),
        ("surface_vessel_usv", "u", "a-u-S"),
        ("sensor_platform", "f", "a-f-G-E-S"),
        ("waypoint", "h", "b-m-p-w"),  # a place has no affiliation
        ("something_new", "f", "a-f-G"),
        (None, "s", "a-s-G"),
    ],
)
def test_cot_type_from_entity_type_and_affiliation(entity_type, aff, expected):
    assert cot_type(entity_type, aff) == expected


def test_affiliations_by_name_or_letter_and_a_clear_error_otherwise():
    assert affiliation_letter("Hostile") == "h"
    assert affiliation_letter("f") == "f"
    with pytest.raises(ConfigError, match="unknown CoT affiliation 'enemy'.*hostile"):
        affiliation_letter("enemy")


def test_a_live_entity_becomes_one_event_with_uid_type_times_point_and_detail():
    root, ev = parsed(entity_event("uav-1", doc(), affiliation="f"))
    assert root.tag == "event" and root.get("version") == "2.0"
    assert ev.uid == "org-a.uav-1" and ev.type == "a-f-A-M-F-Q" and ev.how == "m-g"
    assert ev.sendTime == ev.startTime == int(NOW * 1000)
    assert ev.staleTime - ev.sendTime == 5000
    assert (ev.lat, ev.lon, ev.hae, ev.ce, ev.le) == pytest.approx(
        (32.94881, -96.80132, 152.4, 1.5, 9999999.0)
    )
    assert ev.detail.contact.callsign == "Falcon 1"
    assert (ev.detail.group.name, ev.detail.group.role) == ("Cyan", "Team Member")
    assert (ev.detail.track.course, ev.detail.track.speed) == pytest.approx((271.0, 12.5))
    assert ev.detail.status.battery == 87
    remarks = root.find("detail/remarks").text
    assert remarks == "aircraft_multirotor; org Org A; status active; mode GUIDED; armed"


def test_the_course_comes_from_the_ned_velocity_when_vfr_has_none():
    d = doc(vfr={})
    d["position"]["local"] = {"vx": 0.0, "vy": -4.0}  # due west
    _, ev = parsed(entity_event("uav-1", d))
    assert (ev.detail.track.course, ev.detail.track.speed) == pytest.approx((270.0, 4.0))


def test_no_track_without_motion_and_unknowns_as_cot_spells_them():
    d = doc(vfr={}, power={})
    d["position"] = {"global": {"latitude": 1.0, "longitude": 2.0}}
    root, ev = parsed(entity_event("uav-1", d))
    assert root.find("detail/track") is None and root.find("detail/status") is None
    assert (ev.hae, ev.ce, ev.le) == (9999999.0, 9999999.0, 9999999.0)


@pytest.mark.parametrize(
    "position",
    [
        {},
        {"global": {"latitude": None, "longitude": 2.0}},
        {"global": {"latitude": float("nan"), "longitude": 2.0}},
        {"global": {"latitude": 91.0, "longitude": 2.0}},
        {"global": {"latitude": True, "longitude": 2.0}},
        {"global": "not a dict"},
    ],
)
def test_no_usable_position_no_event(position):
    assert entity_event("uav-1", doc(position=position)) is None


def test_an_entity_that_is_not_live_is_sent_already_stale():
    root, ev = parsed(entity_event("uav-1", doc(is_live=False)))
    assert ev.staleTime == ev.sendTime
    assert root.find("detail/remarks").text.endswith("; not live")


@pytest.mark.parametrize(
    "name",
    [
        '<script>alert("x")</script>',
        "a & b ' \" < > ]]> <!-- -->",
        "<?xml version='1.0'?><event/>",
        "\x00\x01\x07\x08\x0b\x0c\x1b\x7f bell",
        "line\nbreak\rand\ttab",
        "\ud800 lone surrogate \ufffe \uffff",
        "&amp;&#0;&#x1b;",
        "emoji \U0001f681 and Ünïcödé",
    ],
)
def test_hostile_names_give_well_formed_xml_with_the_text_kept_as_text(name):
    d = doc(name=name, vehicle_status={"mode": name, "armed": False}, org_name=name)
    root, ev = parsed(entity_event("uav-1", d))
    callsign = root.find("detail/contact").get("callsign")
    assert ev.detail.contact.callsign == callsign
    expected = events.xml_text(name, events.CALLSIGN_MAX)
    assert callsign == expected  # exactly the text, with only XML-impossible characters replaced
    assert f"mode {expected}" in root.find("detail/remarks").text
    assert len(root) == 2 and [c.tag for c in root.find("detail")] == [
        "contact",
        "__group",
        "track",
        "status",
        "remarks",
    ]


def test_characters_xml_cannot_carry_become_the_replacement_character():
    assert events.xml_text("a\x00b\x1bc\ud800d\ufffe", 100) == "a\ufffdb\ufffdc\ufffdd\ufffd"
    assert events.xml_text("tab\tnl\ncr\r crnl\r\n", 100) == "tab\tnl\ncr\n crnl\n"


def test_a_long_name_is_cut_so_an_event_fits_a_datagram():
    root, _ = parsed(entity_event("uav-1", doc(name="x" * 5000)))
    callsign = root.find("detail/contact").get("callsign")
    assert len(callsign) == events.CALLSIGN_MAX and callsign.endswith("\u2026")
    assert len(entity_event("uav-1", doc(name="&" * 256)).xml(NOW, 5)) < 1400


def test_the_same_state_gives_an_equal_event_and_a_move_a_different_one():
    a, b = entity_event("uav-1", doc()), entity_event("uav-1", doc())
    moved = doc()
    moved["position"]["global"]["latitude"] += 0.0001
    assert a == b and a != entity_event("uav-1", moved)


def test_the_document_is_not_modified():
    d = doc()
    before = repr(d)
    entity_event("uav-1", d).xml(NOW, 5)
    assert repr(d) == before
