"""A real lab: register through the wire, stream telemetry, see KV state and history."""

from __future__ import annotations

import stat
import time

import pytest

from overwatch_lab import LabState, LabStateError
from overwatch_lab.protocol import envelopes, lifecycle
from overwatch_lab.protocol import subjects as s

ORG = "org-galaxy"
EID = "gc35-e4b"
GOLDEN = {"lat": 329488100, "lon": -968013200, "alt": 152400, "relative_alt": 30480, "hdg": 9000,
          "vx": 123, "vy": -45, "vz": 6}  # fmt: skip


def test_boot_writes_lab_json_and_stops_cleanly(lab_factory):
    lab = lab_factory()
    info_path = lab.config.data_dir / "lab.json"
    assert lab.state is LabState.RUNNING
    mode = stat.S_IMODE(info_path.stat().st_mode)
    assert mode == 0o600
    import json

    info = json.loads(info_path.read_text())
    assert info["monitor_url"] is None  # no HTTP monitoring port
    for key in ("nats_url", "nats_auth", "system_auth", "identities", "db_url", "pid"):
        assert info[key], key
    server_pid = lab._core.server.pid
    lab.down()
    assert lab.state is LabState.STOPPED
    assert not info_path.exists()
    assert not pid_alive(server_pid)
    with pytest.raises(LabStateError):
        lab._runner.begin()


def test_golden_position_reaches_kv_and_history(lab):
    lab.register_org(ORG, "Galaxy")
    lab.register_entity(ORG, EID, "aircraft_multirotor", name="GC35")
    uid = lab.publish_telemetry(ORG, EID, "GLOBAL_POSITION_INT", GOLDEN)
    doc = lab.wait_for(
        lambda: (d := lab.state_of(EID)) and d["position"]["global"]["latitude"] is not None and d,
        what="position in KV",
    )
    g = doc["position"]["global"]
    assert g["latitude"] == pytest.approx(32.94881)
    assert g["longitude"] == pytest.approx(-96.80132)
    assert g["altitude_msl"] == pytest.approx(152.4)
    assert g["altitude_relative"] == pytest.approx(30.48)
    assert doc["position"]["local"]["vx"] == pytest.approx(1.23)
    assert doc["is_live"] is True and doc["name"] == "GC35" and doc["org_name"] == "Galaxy"
    frame = lab.wait_for(lambda: (f := lab.frames.telemetry(entity_id=EID)).shape[0] == 1 and f, what="row")
    row = frame.iloc[0]
    assert row["message_uid"] == uid and row["latitude"] == pytest.approx(32.94881)


def test_publish_telemetry_can_wait_until_state_and_history_show_it(lab):
    """The README's first snippet: read the state right after publishing, with no polling."""
    lab.register_org(ORG)
    lab.register_entity(ORG, EID, "aircraft_multirotor")
    t0 = time.time()
    uid = lab.publish_telemetry(ORG, EID, "GLOBAL_POSITION_INT", GOLDEN, timestamp=t0, wait=True)
    assert lab.state_of(EID)["position"]["global"]["latitude"] == pytest.approx(32.94881)
    assert lab.frames.telemetry(entity_id=EID)["message_uid"].tolist() == [uid]
    # A late message changes history only: waiting for it ends once its row is there.
    late = lab.publish_telemetry(
        ORG, EID, "GLOBAL_POSITION_INT", {**GOLDEN, "lat": 0}, timestamp=t0 - 5, wait=True
    )
    rows = lab.frames.telemetry(entity_id=EID).set_index("message_uid")
    assert bool(rows.loc[late, "late"]) and lab.state_of(EID)["position"]["global"][
        "latitude"
    ] == pytest.approx(32.94881)


def test_waiting_for_telemetry_that_is_never_applied_times_out_naming_quarantine(lab):
    lab.register_org(ORG)
    with pytest.raises(TimeoutError, match=r"(?s)telemetry .* applied.*lab\.frames\.quarantine\(\)"):
        lab.publish_telemetry(ORG, "ghost", "VFR_HUD", {"groundspeed": 1.0}, wait=True, timeout=1.0)


def test_entity_registered_after_boot_takes_telemetry_at_once(lab):
    lab.register_org(ORG)
    record = {"entity_id": "late-1", "org_id": ORG, "entity_type": "ground_vehicle_wheeled"}
    event = lifecycle.make_entity_event("created", record)
    # No waiting between registration and the first telemetry: a device boots and talks at once.
    lab.publish(s.entity_subject(ORG, "created"), event, msg_id=event["id"])
    lab.publish_telemetry(ORG, "late-1", "VFR_HUD", {"airspeed": 0.0, "groundspeed": 3.5, "heading": 90,
                                                      "throttle": 20, "alt": 10.0, "climb": 0.0})  # fmt: skip
    doc = lab.wait_for(lambda: (d := lab.state_of("late-1")) and d["vfr"]["groundspeed"] and d, what="vfr")
    assert doc["vfr"]["groundspeed"] == 3.5
    assert lab.stats()["telemetry-worker"]["quarantined"] == 0


def test_late_messages_are_stored_marked_and_duplicates_once_while_kv_keeps_the_newest(lab):
    lab.register_org(ORG)
    lab.register_entity(ORG, EID, "aircraft_multirotor")
    t0 = time.time()
    newest = lab.publish_telemetry(ORG, EID, "VFR_HUD", {"groundspeed": 5.0}, timestamp=t0)
    older = lab.publish_telemetry(ORG, EID, "VFR_HUD", {"groundspeed": 9.0}, timestamp=t0 - 1)
    same_time = lab.publish_telemetry(ORG, EID, "VFR_HUD", {"groundspeed": 7.0}, timestamp=t0)
    # Resent copies without Nats-Msg-Id (the stream's dedup cannot catch them): stored once.
    for uid, speed, ts in ((newest, 5.0, t0), (older, 9.0, t0 - 1)):
        env = envelopes.make_telemetry(
            ORG, EID, "VFR_HUD", {"groundspeed": speed}, timestamp=ts, message_uid=uid
        )
        lab.publish(s.telemetry_subject(ORG, EID), env)
    lab.wait_for(lambda: lab.stats()["telemetry-worker"]["acked"] >= 5, what="5 acked")
    frame = lab.frames.telemetry(entity_id=EID).set_index("message_uid")
    assert sorted(frame.index) == sorted([newest, older, same_time])  # every distinct message, once
    assert frame["late"].to_dict() == {newest: False, older: True, same_time: True}
    assert frame.loc[older, "groundspeed"] == 9.0 and frame.loc[same_time, "groundspeed"] == 7.0
    assert lab.state_of(EID)["vfr"]["groundspeed"] == 5.0  # live state: the newest only
    st = lab.stats()["telemetry-worker"]
    assert st["late"] == 2  # stored late: older, same_time
    assert st["ignored"] == 4  # did not change live state: older, same_time and both copies
    assert st["quarantined"] == 0 and st["retried"] == 0


def test_many_messages_for_one_entity_coalesce_into_few_kv_writes(lab):
    lab.register_org(ORG)
    lab.register_entity(ORG, EID, "aircraft_multirotor")
    t0 = time.time()
    items = []
    for i in range(500):
        env = envelopes.make_telemetry(ORG, EID, "ATTITUDE", {"roll": 0.0, "pitch": 0.0, "yaw": i / 1000},
                                       timestamp=t0 + i * 0.001)  # fmt: skip
        items.append((s.telemetry_subject(ORG, EID), envelopes.encode(env), env["message_uid"]))
    lab.publish_many(items)
    lab.wait_for(lambda: lab.frames.telemetry(entity_id=EID).shape[0] == 500, what="500 rows")
    doc = lab.state_of(EID)
    assert doc["attitude"]["euler"]["yaw"] == pytest.approx(0.499)
    st = lab.stats()["telemetry-worker"]
    assert st["batches"] < 500  # batched, not one message per round trip
    assert st["kv_writes"] <= st["batches"] < 500  # one KV write per entity per batch, not per message


def pid_alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_org_entity_and_telemetry_published_back_to_back_are_all_applied(lab):
    """A device that registers its org, itself and streams at once loses nothing to the race
    between the three streams: a miss is final only once the lifecycle consumers have caught up
    past the message (see test_lab_registration.py for the same under load)."""
    org_ev = lifecycle.make_org_event("created", "org-race", "Race")
    lab.publish(s.organization_subject("created"), org_ev, msg_id=org_ev["id"])
    for k in range(5):
        rec = {"entity_id": f"race-{k}", "org_id": "org-race", "entity_type": "aircraft_multirotor"}
        ev = lifecycle.make_entity_event("created", rec)
        lab.publish(s.entity_subject("org-race", "created"), ev, msg_id=ev["id"])
        lab.publish_telemetry("org-race", f"race-{k}", "VFR_HUD", {"groundspeed": 1.0 + k})
    for k in range(5):
        lab.wait_for(lambda k=k: (d := lab.state_of(f"race-{k}")) and d["vfr"]["groundspeed"] == 1.0 + k,
                     timeout=15, what=f"race-{k} state")  # fmt: skip
    assert lab.frames.quarantine().empty
