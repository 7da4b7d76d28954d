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
    sim = lab.simulate(tiny(kinds=kinds), speed=4.0)
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
    boots = lab.device_events_frame()
    assert set(ids) <= set(boots["entity_id"])
    assert sim.stats()["devices"] == len(kinds)


def test_link_loss_makes_the_entity_stale_then_it_recovers(sim_lab):
    lab = sim_lab
    sim = lab.simulate(tiny(), speed=1.0)
    eid = sim.scenario.devices()[0][0]
    lab.wait_for(lambda: live(lab, eid), timeout=15, what="live")
    sim.inject("link_loss", 4.0, eid)
    lab.wait_for(lambda: lab.state_of(eid)["is_live"] is False, timeout=10, what="stale during link loss")
    lab.wait_for(lambda: live(lab, eid), timeout=15, what="live again after the link returns")
    faults = sim.fault_timeline()
    assert "link_loss" in set(faults["kind"])


def test_reboot_sends_a_new_bootsequence(sim_lab):
    lab = sim_lab
    sim = lab.simulate(tiny(), speed=2.0)
    eid = sim.scenario.devices()[0][0]
    lab.wait_for(lambda: live(lab, eid), timeout=15, what="live")
    sim.inject("reboot", 1.0, eid)
    lab.wait_for(
        lambda: (lab.device_events_frame(entity_id=eid)["event_type"] == "bootsequence").sum() >= 2,
        timeout=15,
        what="second bootsequence",
    )


def test_malformed_messages_are_quarantined_and_the_device_keeps_streaming(sim_lab):
    lab = sim_lab
    sim = lab.simulate(tiny(), speed=2.0)
    eid = sim.scenario.devices()[0][0]
    lab.wait_for(lambda: live(lab, eid), timeout=15, what="live")
    sim.inject("malformed", 3.0, eid)
    q = lab.wait_for(lambda: (f := lab.quarantine_frame()).shape[0] >= 1 and f, timeout=15, what="quarantine")
    assert (q["original_subject"].str.contains(eid)).all()
    before = lab.telemetry_frame(entity_id=eid).shape[0]
    lab.wait_for(
        lambda: lab.telemetry_frame(entity_id=eid).shape[0] > before + 20, timeout=15, what="more rows"
    )


def test_a_simulated_device_executes_a_command_from_the_lab(sim_lab):
    lab = sim_lab
    sim = lab.simulate(tiny(), speed=2.0)
    eid = sim.scenario.devices()[0][0]
    lab.wait_for(lambda: live(lab, eid), timeout=15, what="live")
    handle = lab.send_command(eid, "set_mode", mode="LOITER")
    handle.wait("SUCCEEDED", timeout=20)
    lab.wait_for(
        lambda: lab.state_of(eid)["vehicle_status"]["mode"] == "LOITER", timeout=15, what="mode LOITER"
    )


def test_the_lab_stops_its_fleet(lab_factory):
    lab = lab_factory()
    sim = lab.simulate(tiny(), speed=1.0)
    lab.down()
    assert sim.done
