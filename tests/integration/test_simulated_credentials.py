"""Simulated fleets are held to the device rights (issue 13): one relay per organisation, issued
by the lab through ``lab.devices``, revoked when the simulation ends.

Real lab, real broker: the simulator's own connection tries what a device of another
organisation may not do, and the broker refuses it (nothing stored).
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from overwatch_lab import Lab
from overwatch_lab.protocol.envelopes import encode, make_telemetry
from overwatch_lab.simulation import RELAY_PREFIX
from overwatch_lab.store import queries
from simulators import Scenario
from tests.integration.test_device_credentials import Client
from tests.polling import wait_until

ORG_A, ORG_B = "sim-a", "sim-b"


def two_orgs(duration_s: float = 120.0) -> Scenario:
    """Two organisations, two devices each, on one simulator connection today."""
    return Scenario.from_dict(
        {
            "name": "two-orgs",
            "seed": 5,
            "duration_s": duration_s,
            "area": {"center": [32.95, -96.80], "size_m": 500, "ground_alt_m": 150},
            "orgs": [
                {"org_id": ORG_A, "name": "Org A", "org_type": "civilian"},
                {"org_id": ORG_B, "name": "Org B", "org_type": "civilian"},
            ],
            "fleets": [
                {"name": "a", "org": ORG_A, "kind": "multirotor", "count": 2, "behaviour": "hold"},
                {"name": "b", "org": ORG_B, "kind": "ground", "count": 2, "behaviour": "hold"},
            ],
        },
        source="test",
    )


def _rows(lab: Lab, message_uid: str) -> int:
    sql = "SELECT COUNT(*) AS n FROM telemetry WHERE message_uid = ?"
    return int(queries.read_frame(lab.db_url, sql, (message_uid,))["n"].iloc[0])


def _sim_relays(lab: Lab) -> dict[str, tuple[str, list[str]]]:
    rows = lab.devices.list()
    rows = rows[rows["name"].str.startswith(RELAY_PREFIX)]
    return {str(r["name"]): (str(r["org_id"]), list(r["entities"])) for _, r in rows.iterrows()}


def _ids(sim, org: str) -> list[str]:
    return [eid for eid, _fleet, o, _kind in sim.scenario.devices() if o == org]


def test_a_simulated_fleet_speaks_as_one_relay_per_org_and_cannot_publish_another_orgs_telemetry(
    lab_factory, caplog
):
    caplog.set_level(logging.WARNING, logger="overwatch_lab.broker.connect")
    lab = lab_factory(stale_after_s=1.0)
    sim = lab.fleet.simulate(two_orgs(), speed=4.0)
    a_ids, b_ids = _ids(sim, ORG_A), _ids(sim, ORG_B)
    lab.wait_for(lambda: all((lab.state_of(e) or {}).get("is_live") for e in a_ids + b_ids), timeout=20,
                 what="every simulated device live")  # fmt: skip
    # one relay per organisation, scoped to that organisation's simulated entities
    relays = _sim_relays(lab)
    assert sorted(relays.values()) == [(ORG_A, sorted(a_ids)), (ORG_B, sorted(b_ids))]
    # the simulator's connection of org A: the broker knows it as org A's relay
    uplink = sim._nc
    assert uplink is not None and uplink.scoped and sorted(uplink.by_org) == [ORG_A, ORG_B]
    nc_a = uplink.for_org(ORG_A)
    assert nc_a is not uplink.for_org(ORG_B)
    assert "permissions violation" not in caplog.text.lower()  # the fleet itself does only what it may

    forged = make_telemetry(ORG_B, b_ids[0], "VFR_HUD", {"groundspeed": 99.0, "heading": 1})
    own = make_telemetry(ORG_A, a_ids[0], "VFR_HUD", {"groundspeed": 1.0, "heading": 2})

    async def try_it() -> None:
        await nc_a.publish(f"constellation.telemetry.{ORG_B}.{b_ids[0]}", encode(forged))
        await nc_a.publish(f"constellation.telemetry.{ORG_A}.{a_ids[0]}", encode(own))
        await nc_a.flush()

    lab.call(try_it())
    # the same connection's own telemetry is stored, so the forged one had its chance
    wait_until(lambda: _rows(lab, own["message_uid"]) == 1, timeout=10, what="the allowed message stored")
    wait_until(lambda: "permissions violation" in caplog.text.lower(), timeout=5,
               what="the broker's permissions violation on the simulator's connection")  # fmt: skip
    assert _rows(lab, forged["message_uid"]) == 0
    assert (lab.state_of(b_ids[0]) or {}).get("vfr", {}).get("groundspeed") != 99.0
    assert not uplink.for_org(ORG_A).is_closed  # a refused publish does not cost the fleet its link

    # the relay's identity itself, from outside: the broker refuses another org and the lab's KV
    name_a = next(n for n, (org, _) in relays.items() if org == ORG_A)
    cred = lab.devices.get(name_a)
    assert cred is not None and cred.grant.role == "relay"
    client = Client(lab.nats_url, cred.auth)
    try:
        subject = f"constellation.telemetry.{ORG_B}.{b_ids[1]}"
        with pytest.raises((TimeoutError, Exception)):
            client.call(client.js.publish(subject, encode(forged)))
        with pytest.raises((TimeoutError, Exception)):
            client.call(client.js.key_value("CONSTELLATION_GLOBAL_STATE"))
        wait_until(lambda: client.denied(subject) and client.denied("$JS.API.STREAM.INFO.KV_"), timeout=5,
                   what="both refused by the broker")  # fmt: skip
    finally:
        client.close()

    # the simulation ends: its relays are revoked and their files deleted
    files = [cred.file, cred.seed_file]
    sim.stop()
    assert _sim_relays(lab) == {}
    assert not any(p.exists() for p in files)


def test_commands_reach_a_simulated_device_on_its_relay(lab_factory):
    lab = lab_factory(stale_after_s=1.0)
    sim = lab.fleet.simulate(two_orgs(), speed=4.0)
    target = _ids(sim, ORG_B)[0]
    lab.wait_for(lambda: (lab.state_of(target) or {}).get("is_live"), timeout=20, what="device live")
    handle = lab.commands.send(target, "rtl")
    assert handle.wait(timeout=20).value == "SUCCEEDED"
    sim.stop()
    assert _sim_relays(lab) == {}


@pytest.mark.slow
def test_a_fleet_in_worker_processes_connects_per_org_and_its_relays_go_with_it(lab_factory):
    lab = lab_factory(stale_after_s=1.0)
    sim = lab.fleet.simulate(two_orgs(), speed=2.0, processes=2)
    ids = [eid for eid, *_ in sim.scenario.devices()]
    lab.wait_for(lambda: all((lab.state_of(e) or {}).get("is_live") for e in ids), timeout=30,
                 what="every device live from the worker processes")  # fmt: skip
    assert len(_sim_relays(lab)) == 2
    # each worker opens one connection per organisation among its devices: 2 workers x 2 orgs
    connz = lab.call(lab._require().broker_monitor("connz", {"limit": 1024}))
    sim_conns = [
        c for c in connz.get("connections", []) if str(c.get("name", "")).startswith("overwatch-lab-sim-")
    ]
    assert len(sim_conns) == 4, [c.get("name") for c in sim_conns]
    sim.stop()
    assert _sim_relays(lab) == {}


def test_relays_for_simulators_started_elsewhere(lab):
    """``lab.fleet.relays``: what the load test and ``overwatch-lab sim`` use."""
    from overwatch_lab.broker.connect import connect
    from simulators import run_scenario
    from simulators.uplink import Uplink

    sc = two_orgs(duration_s=3.0)
    creds = lab.fleet.relays(sc)
    assert creds is not None and sorted(creds.by_org) == [ORG_A, ORG_B]
    ids = [eid for eid, *_ in sc.devices()]
    assert all((lab.state_of(e) or {}).get("org_id") in (ORG_A, ORG_B) for e in ids)  # registered by the lab

    async def fly() -> dict:
        ncs = {org: await connect(lab.nats_url, auth=auth) for org, auth in creds.by_org.items()}
        uplink = Uplink(by_org=ncs)
        try:
            handle = await run_scenario(sc, uplink, speed=3.0, registered=True)
            async with asyncio.timeout(20):
                return await handle.wait()
        finally:
            await uplink.close()

    final = lab.call(fly(), timeout=30)
    assert final["state"] == "finished" and final["messages"] > 0
    lab.wait_for(
        lambda: all((lab.state_of(e) or {}).get("position") for e in ids), timeout=10, what="telemetry"
    )
    lab.fleet.release(creds)
    assert _sim_relays(lab) == {}


def test_the_sim_command_against_a_lab_flies_on_relays_and_revokes_them(lab):
    """``overwatch-lab sim area-search`` (two organisations) next to a running lab."""
    import signal
    import subprocess
    import sys

    from simulators import load_scenario

    proc = subprocess.Popen(
        [sys.executable, "-m", "overwatch_lab.cli", "sim", "area-search", "--data-dir", str(lab.config.data_dir),
         "--speed", "5", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        sc = load_scenario("area-search")
        orgs = sorted({org for _e, _f, org, _k in sc.devices()})
        wait_until(lambda: sorted(org for org, _ in _sim_relays(lab).values()) == orgs, timeout=60,
                   what="one relay per organisation issued for the simulator")  # fmt: skip
        ids = [eid for eid, *_ in sc.devices()]
        lab.wait_for(lambda: all((lab.state_of(e) or {}).get("is_live") for e in ids), timeout=30,
                     what="every device of both organisations streaming on its relay")  # fmt: skip
        connz = lab.call(lab._require().broker_monitor("connz", {"limit": 1024}))
        names = sorted(str(c.get("name")) for c in connz.get("connections", []))
        assert [n for n in names if n.startswith("overwatch-lab-sim:")] == [
            f"overwatch-lab-sim:area-search:{o}" for o in orgs
        ]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert _sim_relays(lab) == {}
    assert "permissions violation" not in err.lower()


def test_the_lab_stopping_revokes_its_fleets_relays(lab_factory):
    from overwatch_lab.broker.credentials import CredentialStore

    lab = lab_factory()
    lab.fleet.simulate(two_orgs(), speed=2.0)
    assert len(_sim_relays(lab)) == 2
    store = CredentialStore(lab.config.data_dir / "credentials")
    lab.down()
    assert [g.name for g in store.grants() if g.name.startswith(RELAY_PREFIX)] == []
    assert not list(store.root.glob(f"{RELAY_PREFIX}*"))  # no seed or connection file left behind


def test_an_observer_cannot_fly_a_fleet(lab):
    from overwatch_lab.errors import LabStateError

    attached = Lab.attach(lab.config.data_dir)  # observer
    try:
        with pytest.raises(LabStateError, match="identity='internal'"):
            attached.fleet.simulate(two_orgs())
    finally:
        attached.down()
    assert _sim_relays(lab) == {}
