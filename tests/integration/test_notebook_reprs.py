"""The notebook face against a real lab: the cards of a Lab, an entity, a command and a simulation,
and the ipywidgets controls driven programmatically (toggle, slider, button clicks)."""

from __future__ import annotations

import pytest

from overwatch_lab import CommandStatus
from simulators import Scenario
from tests.polling import wait_until

ORG = "nb-org"
HOSTILE = '<script>alert("x")</script><b onclick=alert(1)>&amp;'


def one_drone(seed: int = 5) -> Scenario:
    """One multirotor holding position: the smallest fleet that flies and takes commands."""
    return Scenario.from_dict(
        {
            "name": "nb-tiny",
            "seed": seed,
            "duration_s": 600.0,
            "area": {"center": [32.95, -96.80], "size_m": 500, "ground_alt_m": 150},
            "orgs": [{"org_id": ORG, "name": "Notebook Org", "org_type": "civilian"}],
            "fleets": [{"name": "quad", "org": ORG, "kind": "multirotor", "count": 1, "behaviour": "hold"}],
        },
        source="test",
    )


@pytest.fixture
def nb_lab(lab_factory):
    return lab_factory(stale_after_s=1.0, sync_period_s=0.25)


def live(lab, eid):
    doc = lab.state_of(eid)
    return doc is not None and doc["is_live"] is True


def test_the_lab_card_shows_state_broker_counts_and_workers_never_the_token(nb_lab):
    lab = nb_lab
    lab.register_org("org-1", HOSTILE)
    lab.register_entity("org-1", "uav-1", "aircraft_multirotor", name=HOSTILE)
    # the count comes from the KV cache, which follows the bucket a moment behind
    html = lab.wait_for(lambda: "1 in KV" in (h := lab._repr_html_()) and h, what="1 entity in the card")
    assert "running" in html and "owner" in html and lab.nats_url in html
    secret = lab.nats_auth.password
    assert secret and secret not in html and secret not in repr(lab)
    assert "organisations" in html and "entity-worker" in html
    assert str(lab.config.data_dir) in html and "dashboard" not in html
    assert repr(lab) == f"<Lab running {lab.nats_url} data_dir={str(lab.config.data_dir)!r}>"
    lab.dashboard_url = "http://127.0.0.1:5006/"
    assert '<a href="http://127.0.0.1:5006/"' in lab._repr_html_()
    lab.down()
    stopped = lab._repr_html_()
    assert "stopped" in stopped and "entity-worker" not in stopped
    assert repr(lab) == f"<Lab stopped data_dir={str(lab.config.data_dir)!r}>"


def test_an_entitys_card_escapes_the_name_a_device_gave_itself(nb_lab):
    lab = nb_lab
    lab.register_org("org-1")
    lab.register_entity("org-1", "uav-1", "aircraft_multirotor", name=HOSTILE)
    state = lab.entity("uav-1")
    assert state is not None and state == lab.state_of("uav-1")  # the same document, read only
    html = state._repr_html_()
    assert "<script" not in html and "<b onclick" not in html and "&lt;script&gt;" in html
    assert "uav-1" in html and "aircraft_multirotor" in html and "no telemetry yet" in html
    assert lab.entity("nobody") is None


def test_a_command_shows_its_ladder_and_keeps_showing_it_when_the_lab_is_gone(nb_lab):
    lab = nb_lab
    sim = lab.fleet.simulate(one_drone(), speed=2.0)
    (eid,) = sim.entity_ids
    lab.wait_for(lambda: live(lab, eid), timeout=15, what="the drone live")
    handle = lab.commands.send(eid, "set_mode", mode="LOITER")
    handle.wait("SUCCEEDED", timeout=20)
    html = handle._repr_html_()
    assert f"command {handle.command_id} · set_mode → {eid}" in html
    for stage in ("QUEUED", "SENT", "RECEIVED", "ACCEPTED", "EXECUTING", "DONE"):
        assert f">{stage}<" in html
    assert html.count("SUCCEEDED") == 2 and " ms<" in html
    assert repr(handle) == f"<CommandHandle {handle.command_id} → {eid}: SUCCEEDED>"
    lab.down()
    after = handle._repr_html_()  # no lab to ask: the last status seen, and why it is not fresh
    assert "SUCCEEDED" in after and "status as last seen" in after
    assert repr(handle).endswith(": SUCCEEDED>")


def test_the_simulation_controls_pause_speed_and_inject_a_real_fleet(nb_lab):
    lab = nb_lab
    sim = lab.fleet.simulate(one_drone(), speed=2.0)
    (eid,) = sim.entity_ids
    html = sim._repr_html_()
    assert "simulation nb-tiny" in html and "running" in html and "2× real time" in html
    controls = sim.controls()
    assert set(controls.kind.options) >= {"link_loss", "gps_dropout", "reboot"}
    controls.paused.value = True
    assert sim.state == "paused" and "paused" in controls.card.value
    frozen = sim.stats()["sim_time_s"]
    controls.paused.value = False
    assert sim.state == "running"
    wait_until(lambda: sim.stats()["sim_time_s"] > frozen, what="simulated time moving again")
    controls.speed.value = 5.0
    assert sim.speed == 5.0 and sim.stats()["speed"] == 5.0
    lab.wait_for(lambda: live(lab, eid), timeout=15, what="the drone live")
    controls.kind.value, controls.target.value, controls.duration.value = "link_loss", eid, 60.0
    controls.inject.click()
    assert "injected link_loss" in controls.message.value, controls.message.value
    assert [(f["kind"], f["targets"], f["source"]) for f in sim.faults()] == [("link_loss", [eid], "live")]
    lab.wait_for(lambda: lab.state_of(eid)["is_live"] is False, timeout=15, what="stale under link loss")
    assert "faults (1)" in controls.card.value and "active" in controls.card.value


def test_the_command_panel_sends_a_command_that_reaches_succeeded(nb_lab):
    lab = nb_lab
    sim = lab.fleet.simulate(one_drone(), speed=2.0)
    (eid,) = sim.entity_ids
    lab.wait_for(lambda: live(lab, eid), timeout=15, what="the drone live")
    panel = lab.commands.widget()
    assert [value for _label, value in panel.entity.options] == [eid]
    panel.action.value = "goto"
    panel.params["lat"].value, panel.params["lon"].value = "123", "-96.8"
    panel.send.click()
    assert panel.handle is None and "outside -90..90" in panel.message.value
    assert lab.frames.commands().empty  # refused in the panel: nothing reached the lab
    panel.params["lat"].value = "32.9501"
    panel.send.click()
    handle = panel.handle
    assert handle is not None and handle.command_id in panel.message.value
    wait_until(lambda: "SUCCEEDED" in panel.ladder.value, timeout=20, what="the ladder at SUCCEEDED")
    assert handle.status is CommandStatus.SUCCEEDED
    assert ">EXECUTING<" in panel.ladder.value and " ms<" in panel.ladder.value


def test_an_attached_labs_card_says_so_and_reads_the_owners_counts(nb_lab):
    from overwatch_lab import Lab

    nb_lab.register_org("org-1")
    nb_lab.register_entity("org-1", "uav-1", "aircraft_multirotor")
    attached = Lab.attach(nb_lab.config.data_dir)
    try:
        html = attached.wait_for(
            lambda: "1 in KV" in (h := attached._repr_html_()) and "entity-worker" in h and h,
            what="the owner's counts in the attached card",
        )
        assert "attached" in html and nb_lab.nats_url in html and str(nb_lab.nats_auth.password) not in html
        assert repr(attached).startswith("<Lab running attached nats://")
    finally:
        attached.down()
