"""Every message a simulated device emits is valid telemetry v1 that the lab projects cleanly."""

from __future__ import annotations

import collections
import json
import math

import pytest

from overwatch_lab.protocol.envelopes import decode_telemetry
from overwatch_lab.protocol.events import decode_device_event
from overwatch_lab.protocol.lifecycle import decode_entity_event, decode_org_event
from overwatch_lab.protocol.mavlink import mode_name, project
from overwatch_lab.protocol.subjects import (
    parse_entity_subject,
    parse_event_subject,
    parse_organization_subject,
    parse_telemetry_subject,
)
from simulators.devices import KINDS
from simulators.model import FleetModel
from simulators.scenario import Scenario
from simulators.telemetry import BUILDERS, DEFAULT_RATES_HZ


def every_kind(rates: dict[str, float] | None = None) -> Scenario:
    fleets = [
        {
            "name": kind.replace("_", "-"),
            "org": "o",
            "kind": kind,
            "count": 2,
            "rates": rates or {},
            "behaviour": "patrol",
        }
        for kind in KINDS
        if kind != "sensor"
    ]
    fleets.append({"name": "mast", "org": "o", "kind": "sensor", "count": 1, "rates": rates or {}})
    return Scenario.from_dict(
        {"name": "kinds", "seed": 3, "area": {"center": [47.6, -122.33], "size_m": 1000}, "fleets": fleets}
    )


def test_registration_events_decode():
    m = FleetModel(every_kind())
    ems = m.start()
    kinds = collections.Counter(em.kind for em in ems)
    assert kinds == {"org": 1, "entity": 11, "event": 11}
    for em in ems:
        if em.kind == "org":
            ev = decode_org_event(em.payload, parse_organization_subject(em.subject))
            assert ev.org_id == "o" and em.msg_id == ev.id
        elif em.kind == "entity":
            ev = decode_entity_event(em.payload, parse_entity_subject(em.subject))
            assert ev.entity["entity_type"] == KINDS[ev.entity["metadata"]["kind"]][1].entity_type
            assert em.msg_id == ev.id
        else:
            ev = decode_device_event(em.payload, parse_event_subject(em.subject))
            assert ev.event_type == "bootsequence" and ev.data["boot_count"] == 1


def test_every_message_decodes_and_projects_without_skipped_fields():
    rates = {mtype: 1.0 for mtype in BUILDERS}
    m = FleetModel(every_kind(rates))
    m.start()
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(300):
        for em in m.step():
            t = decode_telemetry(em.payload, parse_telemetry_subject(em.subject))
            p = project(t.message_type, t.data, t.timestamp)
            assert p.skipped == (), (t.message_type, p.skipped)
            assert t.message_uid == em.msg_id
            seen[t.message_type] += 1
    assert set(seen) == set(BUILDERS)


def test_default_rates_give_20_5_messages_per_device_second():
    m = FleetModel(every_kind())
    m.start()
    n = sum(len(m.step()) for _ in range(200))  # 20 s
    assert n == pytest.approx(11 * 20 * 20.5, rel=0.01)
    assert sum(DEFAULT_RATES_HZ.values()) == 20.5


def test_projected_values_match_the_device_truth():
    m = FleetModel(every_kind())
    m.start()
    last: dict[tuple[str, str], dict] = {}
    for _ in range(100):
        for em in m.step():
            last[(em.entity_id, em.message_type)] = json.loads(em.payload)
    d = m.device("multirotor-000")
    pos = project("GLOBAL_POSITION_INT", last[(d.entity_id, "GLOBAL_POSITION_INT")]["data"], "t").sets
    assert pos[("position", "global", "latitude")] == pytest.approx(d.lat, abs=2e-5)
    assert pos[("position", "global", "altitude_relative")] == pytest.approx(d.alt_agl_m, abs=3.0)
    hb = last[(d.entity_id, "HEARTBEAT")]["data"]
    assert mode_name(hb["custom_mode"]) == d.mode == "AUTO"
    assert bool(hb["base_mode"] & 128) is d.armed is True
    batt = last[(d.entity_id, "BATTERY_STATUS")]["data"]
    assert len([v for v in batt["voltages"] if v != 65535]) == d.spec.battery.cells
    assert batt["battery_remaining"] == pytest.approx(d.battery_pct, abs=1)
    att = last[(d.entity_id, "ATTITUDE")]["data"]
    assert -math.pi <= att["yaw"] < math.pi
    vfr = last[(d.entity_id, "VFR_HUD")]["data"]
    assert 0 <= vfr["heading"] < 360 and 0 <= vfr["throttle"] <= 100


def test_timestamps_strictly_increase_per_entity_and_type():
    m = FleetModel(every_kind())
    m.start()
    last: dict[tuple[str, str], str] = {}
    for _ in range(100):
        for em in m.step():
            ts = json.loads(em.payload)["timestamp"]
            key = (em.entity_id, em.message_type)
            assert key not in last or ts > last[key]
            last[key] = ts
