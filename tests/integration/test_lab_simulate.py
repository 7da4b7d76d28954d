"""Simulated fleets observed through a real lab: registration, state, faults, commands."""

from __future__ import annotations

import pytest

from simulators import Scenario

ORG = "sim-org"


def tiny(*, timeline=(), kinds=("multirotor",), duration_s=120.0, seed=3) -> Scenario:
    """A one-fleet scenario small enough for a test (one device per kind)."""
    return Scenario.from_dict(
        {
            "name": "tiny",
            "seed": seed,
            "duration_s": duration_s,
            "rates": {"EXTENDED_SYS_STATE": 1.0},
            "area": {"center": [32.95, -96.80], "size_m": 500, "ground_alt_m": 150},
            "orgs": [{"org_id": ORG, "name": "Sim Org", "org_type": "civilian"}],
            "fleets": [
                {"name": kind.replace("_", "-"), "org": ORG, "kind": kind, "count": 1, "behaviour": "hold"}
                for kind in kinds
            ],
            "timeline": list(timeline),
        },
        source="test",
    )


@pytest.fixture
def sim_lab(lab_factory):
    return lab_factory(stale_after_s=1.0, sync_period_s=0.25)


def live(lab, eid):
    doc = lab.state_of(eid)
    return doc is not None and doc["is_live"] is True


def test_a_mixed_fleet_registers_and_every_projection_shows_sensible_state(sim_lab):
    lab = sim_lab
    kinds = ("multirotor", "fixed_wing", "vtol", "ground", "usv", "sensor")
    sim = lab.fleet.simulate(tiny(kinds=kinds), speed=4.0)
    ids = [eid for eid, *_ in sim.scenario.devices()]
    assert len(ids) == len(kinds)

    def full(eid):
        d = lab.state_of(eid)
        return (
            d is not None
            and d["position"]["global"]["latitude"] is not None
            and d["vehicle_status"]["mode"] is not None
            and d["power"]["battery_remaining"] is not None
            and d["attitude"]["euler"]["yaw"] is not None
            and d["vfr"]["groundspeed"] is not None
            and d["position"]["global"]["fix_type"] is not None
            and d
        )

    for eid in ids:
        doc = lab.wait_for(lambda eid=eid: full(eid), timeout=20, what=f"{eid} full state")
        g = doc["position"]["global"]
        assert 32.9 < g["latitude"] < 33.0 and -96.9 < g["longitude"] < -96.7
        assert 0 <= doc["power"]["battery_remaining"] <= 100
        assert doc["position"]["global"]["fix_type"] >= 2
    assert lab.stats()["telemetry-worker"]["quarantined"] == 0
    boots = lab.frames.device_events()
    assert set(ids) <= set(boots["entity_id"])
    assert sim.stats()["devices"] == len(kinds)


def test_link_loss_makes_the_entity_stale_then_it_recovers(sim_lab):
    lab = sim_lab
    sim = lab.fleet.simulate(tiny(), speed=1.0)
    eid = sim.scenario.devices()[0][0]
    lab.wait_for(lambda: live(lab, eid), timeout=15, what="live")
    sim.inject("link_loss", 4.0, eid)
    lab.wait_for(lambda: lab.state_of(eid)["is_live"] is False, timeout=10, what="stale during link loss")
    lab.wait_for(lambda: live(lab, eid), timeout=15, what="live again after the link returns")
    faults = sim.fault_timeline()
    assert "link_loss" in set(faults["kind"])


def test_reboot_sends_a_new_bootsequence(sim_lab):
    lab = sim_lab
    sim = lab.fleet.simulate(tiny(), speed=2.0)
    eid = sim.scenario.devices()[0][0]
    lab.wait_for(lambda: live(lab, eid), timeout=15, what="live")
    sim.inject("reboot", 1.0, eid)
    lab.wait_for(
        lambda: (lab.frames.device_events(entity_id=eid)["event_type"] == "bootsequence").sum() >= 2,
        timeout=15,
        what="second bootsequence",
    )


def test_malformed_messages_are_quarantined_and_the_device_keeps_streaming(sim_lab):
    lab = sim_lab
    sim = lab.fleet.simulate(tiny(), speed=2.0)
    eid = sim.scenario.devices()[0][0]
    lab.wait_for(lambda: live(lab, eid), timeout=15, what="live")
    sim.inject("malformed", 3.0, eid)
    q = lab.wait_for(
        lambda: (f := lab.frames.quarantine()).shape[0] >= 1 and f, timeout=15, what="quarantine"
    )
    assert (q["original_subject"].str.contains(eid)).all()
    before = lab.frames.telemetry(entity_id=eid).shape[0]
    lab.wait_for(
        lambda: lab.frames.telemetry(entity_id=eid).shape[0] > before + 20, timeout=15, what="more rows"
    )


def test_a_simulated_device_executes_a_command_from_the_lab(sim_lab):
    lab = sim_lab
    sim = lab.fleet.simulate(tiny(), speed=2.0)
    eid = sim.scenario.devices()[0][0]
    lab.wait_for(lambda: live(lab, eid), timeout=15, what="live")
    handle = lab.commands.send(eid, "set_mode", mode="LOITER")
    handle.wait("SUCCEEDED", timeout=20)
    lab.wait_for(
        lambda: lab.state_of(eid)["vehicle_status"]["mode"] == "LOITER", timeout=15, what="mode LOITER"
    )


def test_the_lab_stops_its_fleet(lab_factory):
    lab = lab_factory()
    sim = lab.fleet.simulate(tiny(), speed=1.0)
    lab.down()
    assert sim.done


def test_the_fleet_part_lists_and_stops_its_simulations(lab_factory):
    lab = lab_factory()
    first, second = lab.fleet.simulate(tiny(seed=1)), lab.fleet.simulate(tiny(seed=2))
    assert lab.fleet.running == [first, second]
    first.stop()
    assert lab.fleet.running == [second]
    finals = lab.fleet.stop()
    assert len(finals) == 2 and lab.fleet.running == [] and second.done


def ignored(lab) -> int:
    return lab.stats()["telemetry-worker"]["ignored"]


def late_rows(lab, eid) -> int:
    return int(lab.frames.telemetry(entity_id=eid)["late"].sum())


def _gps_fix(lab, eid):
    return lab.state_of(eid)["position"]["global"]["fix_type"]


# Each remaining fault kind, observed through the lab: (kind, params, what the lab shows during it,
# what it shows after it). "after" None = the effect is permanent (a failure) or only counted.
FAULTS = {
    "gps_dropout": ({}, lambda lab, eid: _gps_fix(lab, eid) is not None and _gps_fix(lab, eid) <= 1,
                    lambda lab, eid: _gps_fix(lab, eid) >= 3),
    "gps_degraded": ({}, lambda lab, eid: (lab.state_of(eid)["position"]["global"]["accuracy_h"] or 0) > 5,
                     lambda lab, eid: (lab.state_of(eid)["position"]["global"]["accuracy_h"] or 99) < 5),
    "battery_sag": ({"resistance_factor": 8.0}, None, None),
    "motor_failure": ({}, lambda lab, eid: lab.state_of(eid)["vehicle_status"]["mode"] == "LAND", None),
    "battery_failure": ({"drain_s": 2.0},
                        lambda lab, eid: (lab.state_of(eid)["power"]["battery_remaining"] or 100) <= 10, None),
    "telemetry_delay": ({"delay_s": 0.5, "jitter_s": 1.0}, None, None),
    "clock_skew": ({"offset_s": -30.0}, None, None),
    "duplicate": ({"probability": 1.0, "dedup_header": False}, None, None),
    "out_of_order": ({"probability": 0.5, "hold_s": 0.5}, None, None),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_fault_kind_is_visible_through_the_lab(sim_lab, kind):
    lab = sim_lab
    params, during, after = FAULTS[kind]
    sim = lab.fleet.simulate(tiny(), speed=2.0)
    eid = sim.scenario.devices()[0][0]
    lab.wait_for(
        lambda: live(lab, eid) and lab.state_of(eid)["position"]["global"]["fix_type"] is not None,
        timeout=15, what="live with a fix",
    )  # fmt: skip
    volts0 = lab.state_of(eid)["power"]["voltage"]
    ignored0 = ignored(lab)
    seen0 = lab.state_of(eid)["last_seen"]
    sim.inject(kind, 6.0, eid, **params)
    if kind == "battery_sag":  # the pack sags under load: voltage drops below where it was
        lab.wait_for(
            lambda: (lab.state_of(eid)["power"]["voltage"] or volts0) < volts0, timeout=15, what="sag"
        )
    elif kind == "duplicate":  # resent copies (same message_uid, no dedup header): stored once
        lab.wait_for(lambda: ignored(lab) > ignored0, timeout=15, what="copies left live state alone")
        frame = lab.frames.telemetry(entity_id=eid)
        assert frame["message_uid"].is_unique and not frame["late"].any()
        assert lab.stats()["telemetry-worker"]["late"] == 0
    elif during is None:  # delayed, skewed or reordered: stored and marked late, KV keeps the newest
        lab.wait_for(lambda: late_rows(lab, eid) > 0, timeout=15, what="late messages stored")
        lab.wait_for(lambda: ignored(lab) > ignored0, timeout=15, what="late messages left live state alone")
        assert lab.stats()["telemetry-worker"]["late"] >= late_rows(lab, eid)
        assert lab.state_of(eid)["last_seen"] >= seen0  # never moves backwards
    else:
        lab.wait_for(lambda: during(lab, eid), timeout=15, what=f"{kind} visible in state")
    if after is not None:
        lab.wait_for(lambda: after(lab, eid), timeout=20, what=f"{kind} over")
    assert lab.stats()["telemetry-worker"]["quarantined"] == 0
    assert kind in set(sim.fault_timeline()["kind"])
