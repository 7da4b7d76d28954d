"""Per-organisation device credentials (issue 13): the broker itself refuses what a role may not do.

Every hostile action is tried with a real device credential of another organisation against a
real lab; each must be denied by the broker (a permissions violation reaches the client) and
leave nothing stored and nothing changed (history rows, KV documents, streams, organisations).
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from typing import Any

import nats
import nats.errors
import pytest

from overwatch_lab import Lab
from overwatch_lab.broker.connect import connect
from overwatch_lab.errors import BrokerError, LabStateError
from overwatch_lab.nats_auth import NatsAuth
from overwatch_lab.protocol import lifecycle
from overwatch_lab.protocol.commands import ack_subject, delivery_subject
from overwatch_lab.protocol.envelopes import encode, make_telemetry
from overwatch_lab.runtime import LoopThread
from overwatch_lab.store import queries
from tests.polling import wait_until

VICTIM_ORG, VICTIM = "org-victim", "victim-1"
HOSTILE_ORG, HOSTILE = "org-hostile", "hostile-1"


class Client:
    """One NATS client on a loop thread of its own; records the permission errors the server sends."""

    def __init__(self, url: str, auth: NatsAuth) -> None:
        self.errors: list[str] = []
        self.disconnects = 0
        self.thread = LoopThread("test-client")

        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc).lower())

        async def on_disconnect() -> None:
            self.disconnects += 1

        self.nc = self.call(
            nats.connect(
                url, error_cb=on_error, disconnected_cb=on_disconnect, max_reconnect_attempts=-1,
                reconnect_time_wait=0.2, **auth.kwargs(),
            )  # fmt: skip
        )
        self.js = self.nc.jetstream(timeout=1.0)

    def call(self, coro: Any, timeout: float = 15.0) -> Any:
        return self.thread.call(coro, timeout)

    def denied(self, subject: str) -> bool:
        return any("permissions violation" in e and subject.lower() in e for e in self.errors)

    def close(self) -> None:
        try:
            self.call(self.nc.close())
        finally:
            self.thread.close()


@pytest.fixture
def two_orgs(lab: Lab):
    """A lab with a victim device and a hostile device of another organisation, both connected."""
    victim = lab.devices.add(VICTIM_ORG, VICTIM)
    hostile = lab.devices.add(HOSTILE_ORG, HOSTILE)
    clients = {"victim": Client(lab.nats_url, victim.auth), "hostile": Client(lab.nats_url, hostile.auth)}
    yield lab, clients["victim"], clients["hostile"]
    for c in clients.values():
        c.close()


def _telemetry_rows(lab: Lab, entity_id: str) -> int:
    sql = "SELECT COUNT(*) AS n FROM telemetry WHERE entity_id = ?"
    return int(queries.read_frame(lab.db_url, sql, (entity_id,))["n"].iloc[0])


def _rejected(client: Client, subject: str, attempt: Callable[[], Any]) -> None:
    """``attempt`` (a JetStream publish or request) gets no answer, and the server says why."""
    with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError, TimeoutError)):
        client.call(attempt())
    wait_until(lambda: client.denied(subject), timeout=5, what=f"permissions violation for {subject}")


def test_a_device_streams_registers_receives_its_commands_and_acks(two_orgs):
    lab, victim, _ = two_orgs
    env = make_telemetry(VICTIM_ORG, VICTIM, "VFR_HUD", {"groundspeed": 4.0, "heading": 90})
    ack = victim.call(victim.js.publish(f"constellation.telemetry.{VICTIM_ORG}.{VICTIM}", encode(env)))
    assert ack.stream == "CONSTELLATION_TELEMETRY"
    lab.wait_for(lambda: (lab.state_of(VICTIM) or {}).get("vfr", {}).get("groundspeed") == 4.0, what="KV")
    # its own lifecycle (status) on its organisation's subject
    record = {"entity_id": VICTIM, "org_id": VICTIM_ORG, "name": "renamed", "entity_type": "aircraft_multirotor",
              "status": "maintenance", "priority": "normal"}  # fmt: skip
    event = lifecycle.make_entity_event("updated", record)
    victim.call(victim.js.publish(f"constellation.entities.{VICTIM_ORG}.updated", encode(event)))
    lab.wait_for(lambda: lab.state_of(VICTIM)["status"] == "maintenance", what="entity updated")
    # commands: it receives its own delivery subject and acks on its own subject
    got: list[bytes] = []

    async def listen() -> None:
        async def on_msg(msg: Any) -> None:
            got.append(msg.data)

        await victim.nc.subscribe(delivery_subject(VICTIM_ORG, VICTIM), cb=on_msg)
        await victim.nc.flush()

    victim.call(listen())
    operator = Lab.attach(lab.config.data_dir, identity="operator")
    try:
        handle = operator.commands.send(VICTIM, "rtl")
        wait_until(lambda: got, timeout=10, what="the command delivered to the device")
        cmd = json.loads(got[0])
        body = {"command_id": cmd["command_id"], "org_id": VICTIM_ORG, "entity_id": VICTIM,
                "status": "SUCCEEDED", "timestamp": "2026-01-01T00:00:00Z"}  # fmt: skip
        victim.call(victim.js.publish(ack_subject(VICTIM_ORG, VICTIM), json.dumps(body).encode()))
        assert handle.wait(timeout=10).value == "SUCCEEDED"
    finally:
        operator.down()
    assert victim.errors == []


def test_every_hostile_action_of_another_org_is_denied_and_changes_nothing(two_orgs):
    lab, victim, hostile = two_orgs
    before_doc = lab.state_of(VICTIM)
    before_rows = _telemetry_rows(lab, VICTIM)
    js = hostile.js

    # telemetry for another organisation's entity
    forged = make_telemetry(VICTIM_ORG, VICTIM, "VFR_HUD", {"groundspeed": 99.0, "heading": 1})
    subject = f"constellation.telemetry.{VICTIM_ORG}.{VICTIM}"
    _rejected(hostile, subject, lambda: js.publish(subject, encode(forged)))
    # reading another organisation's KV document (any KV at all)
    _rejected(
        hostile, "$JS.API.STREAM.INFO.KV_CONSTELLATION_GLOBAL_STATE",
        lambda: js.key_value("CONSTELLATION_GLOBAL_STATE"),
    )  # fmt: skip
    direct = f"$JS.API.DIRECT.GET.KV_CONSTELLATION_GLOBAL_STATE.$KV.CONSTELLATION_GLOBAL_STATE.{VICTIM}"
    _rejected(hostile, direct, lambda: hostile.nc.request(direct, b"", timeout=1))
    # a command to another organisation's entity, and a forged ack of its command
    cmd_subject = f"constellation.commands.{VICTIM_ORG}.{VICTIM}"
    _rejected(hostile, cmd_subject, lambda: js.publish(cmd_subject, b'{"action": "rtl"}'))
    forged_ack = ack_subject(VICTIM_ORG, VICTIM)
    _rejected(hostile, forged_ack, lambda: js.publish(forged_ack, b'{"status": "SUCCEEDED"}'))
    # deleting another organisation
    org_del = "constellation.organizations.deleted"
    event = lifecycle.make_org_event("deleted", VICTIM_ORG, VICTIM_ORG, "civilian")
    _rejected(hostile, org_del, lambda: js.publish(org_del, encode(event)))
    ent_del = f"constellation.entities.{VICTIM_ORG}.deleted"
    _rejected(hostile, ent_del, lambda: js.publish(ent_del, b"{}"))
    # deleting a KV key, purging quarantine, deleting the consumer, the bucket, the stream
    kv_del = f"$KV.CONSTELLATION_GLOBAL_STATE.{VICTIM}"
    _rejected(hostile, kv_del, lambda: js.publish(kv_del, b"", headers={"KV-Operation": "DEL"}))
    for api in (
        "$JS.API.STREAM.PURGE.CONSTELLATION_QUARANTINE",
        "$JS.API.CONSUMER.DELETE.CONSTELLATION_TELEMETRY.telemetry-processor",
        "$JS.API.STREAM.DELETE.KV_CONSTELLATION_GLOBAL_STATE",
        "$JS.API.STREAM.DELETE.CONSTELLATION_TELEMETRY",
    ):
        _rejected(hostile, api, lambda api=api: hostile.nc.request(api, b"", timeout=1))

    # a catch-all subscription sees nothing: the server refuses it
    async def catch_all() -> None:
        await hostile.nc.subscribe("constellation.>")
        await hostile.nc.flush()

    hostile.call(catch_all())
    wait_until(lambda: hostile.denied("constellation.>"), timeout=5, what="subscription violation")

    # nothing stored, nothing changed
    assert _telemetry_rows(lab, VICTIM) == before_rows
    assert lab.state_of(VICTIM) == before_doc
    orgs = queries.read_frame(lab.db_url, "SELECT org_id FROM organizations")
    assert VICTIM_ORG in set(orgs["org_id"])
    owner = queries.read_frame(lab.db_url, "SELECT org_id FROM entities WHERE entity_id = ?", (VICTIM,))
    assert list(owner["org_id"]) == [VICTIM_ORG]
    js_lab = lab.call(_streams(lab))
    assert {"CONSTELLATION_TELEMETRY", "KV_CONSTELLATION_GLOBAL_STATE", "CONSTELLATION_QUARANTINE"} <= js_lab
    assert victim.errors == []  # the victim noticed nothing


async def _streams(lab: Lab) -> set[str]:
    names = await lab._require().js.streams_info()
    return {s.config.name for s in names if s.config.name}


def test_an_observer_reads_but_cannot_publish_or_delete(lab: Lab):
    lab.devices.add(VICTIM_ORG, VICTIM)
    obs_cred = lab.devices.get("observer")
    assert obs_cred is not None
    obs = Client(lab.nats_url, obs_cred.auth)
    try:
        kv = obs.call(obs.js.key_value("CONSTELLATION_GLOBAL_STATE"))
        assert json.loads(obs.call(kv.get(VICTIM)).value)["org_id"] == VICTIM_ORG
        subject = f"constellation.telemetry.{VICTIM_ORG}.{VICTIM}"
        env = make_telemetry(VICTIM_ORG, VICTIM, "VFR_HUD", {"groundspeed": 5.0, "heading": 2})
        _rejected(obs, subject, lambda: obs.js.publish(subject, encode(env)))
        _rejected(obs, f"$KV.CONSTELLATION_GLOBAL_STATE.{VICTIM}", lambda: kv.delete(VICTIM))
        api = "$JS.API.STREAM.DELETE.CONSTELLATION_TELEMETRY"
        _rejected(obs, api, lambda: obs.nc.request(api, b"", timeout=1))
        assert lab.state_of(VICTIM) is not None and _telemetry_rows(lab, VICTIM) == 0
    finally:
        obs.close()
    # Lab.attach is an observer unless told otherwise
    attached = Lab.attach(lab.config.data_dir)
    try:
        assert (attached.state_of(VICTIM) or {}).get("org_id") == VICTIM_ORG
        with pytest.raises(LabStateError, match="observer"):
            attached.publish_telemetry(VICTIM_ORG, VICTIM, "VFR_HUD", {"groundspeed": 1.0})
    finally:
        attached.down()


def test_revoking_disconnects_only_that_device(two_orgs, tmp_path):
    lab, victim, hostile = two_orgs
    kept_seed = tmp_path / "stolen.nk"  # what a revoked device still holds
    kept_seed.write_text(lab.devices.get(HOSTILE).seed_file.read_text())
    assert {r for r in lab.devices.list()["name"]} >= {VICTIM, HOSTILE, "observer", "operator"}
    pid = lab._core.server.pid
    lab.devices.revoke(HOSTILE)
    wait_until(lambda: hostile.disconnects >= 1, timeout=10, what="the revoked device disconnected")
    assert lab._core.server.pid == pid  # a reload, not a restart
    assert victim.disconnects == 0 and victim.nc.is_connected
    env = make_telemetry(VICTIM_ORG, VICTIM, "VFR_HUD", {"groundspeed": 3.0, "heading": 3})
    assert victim.call(victim.js.publish(f"constellation.telemetry.{VICTIM_ORG}.{VICTIM}", encode(env))).seq > 0
    assert lab.devices.get(HOSTILE) is None
    # the broker no longer knows that key: a new connection with it is refused
    auth = NatsAuth(nkey_seed_file=str(kept_seed), inbox_prefix=f"_INBOX.device.{HOSTILE}")
    with pytest.raises(BrokerError, match="rejected the credentials"):
        victim.call(connect(lab.nats_url, auth=auth, connect_timeout_s=3.0))
    assert not hostile.nc.is_connected


def test_file_modes_and_a_restarted_lab_accepts_the_same_credentials(lab_factory, tmp_path):
    data_dir = tmp_path / "keep"
    first = lab_factory(data_dir=data_dir)
    cred = first.devices.add(VICTIM_ORG, VICTIM)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "overwatch.db").stat().st_mode) == 0o600
    for path in (cred.file, cred.seed_file, data_dir / "credentials" / "registry.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((data_dir / "credentials").stat().st_mode) == 0o700
    saved = cred.seed_file.read_text()
    first.down()

    second = lab_factory(data_dir=data_dir)
    assert cred.seed_file.read_text() == saved
    device = Client(second.nats_url, NatsAuth.load(cred.file))
    try:
        env = make_telemetry(VICTIM_ORG, VICTIM, "VFR_HUD", {"groundspeed": 2.0, "heading": 4})
        ack = device.call(device.js.publish(f"constellation.telemetry.{VICTIM_ORG}.{VICTIM}", encode(env)))
        assert ack.seq > 0
        second.wait_for(lambda: second.state_of(VICTIM)["vfr"]["groundspeed"] == 2.0, what="KV")
    finally:
        device.close()


def test_another_process_issues_a_device_through_the_cli(lab: Lab):
    """`overwatch-lab device add` next to a running lab: registered, reloaded, usable at once."""
    import subprocess
    import sys

    data_dir = str(lab.config.data_dir)
    out = subprocess.run(
        [sys.executable, "-m", "overwatch_lab.cli", "device", "add", VICTIM_ORG, VICTIM, "--data-dir", data_dir,
         "--type", "ground_vehicle_wheeled"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert (lab.state_of(VICTIM) or {}).get("entity_type") == "ground_vehicle_wheeled"
    cred = lab.devices.get(VICTIM)
    assert cred is not None and str(cred.file) in out.stdout
    device = Client(lab.nats_url, NatsAuth.load(cred.file))
    try:
        env = make_telemetry(VICTIM_ORG, VICTIM, "VFR_HUD", {"groundspeed": 1.5, "heading": 5})
        assert device.call(device.js.publish(f"constellation.telemetry.{VICTIM_ORG}.{VICTIM}", encode(env))).seq
    finally:
        device.close()
    listed = subprocess.run(
        [sys.executable, "-m", "overwatch_lab.cli", "device", "list", "--json", "--data-dir", data_dir],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert {r["name"] for r in json.loads(listed.stdout)} == {VICTIM, "observer", "operator"}
