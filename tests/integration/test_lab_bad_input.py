"""Bad input, on the record: every kind is quarantined with its reason (or a field skipped), and
none of them stops a worker or loses a valid message queued behind it."""

from __future__ import annotations

import json
import time

import pytest

from overwatch_lab.protocol import envelopes, lifecycle
from overwatch_lab.protocol import subjects as s

ORG = "org-a"
EID = "drone-1"
SUBJ = f"constellation.telemetry.{ORG}.{EID}"


def good(**changes):
    env = envelopes.make_telemetry(
        ORG, EID, "VFR_HUD", {"groundspeed": 4.0, "heading": 10}, timestamp=time.time()
    )
    env.update(changes)
    return env


def raw(obj) -> bytes:
    return json.dumps(obj).encode()


BAD_TELEMETRY = {
    "malformed json": (SUBJ, b'{"schema_version": "1.0.0", '),
    "unknown field": (SUBJ, raw(good(extra_field=1))),
    "wrong schema version": (SUBJ, raw(good(schema_version="2.0.0"))),
    "dot in message_uid": (SUBJ, raw(good(message_uid="a.b"))),
    "wildcard in message_uid": (SUBJ, raw(good(message_uid="a*"))),
    "gt wildcard in entity_id": (SUBJ, raw(good(entity_id=">"))),
    "crlf in message_uid": (SUBJ, raw(good(message_uid="a\r\nb"))),
    "token over 128 chars": (SUBJ, raw(good(message_uid="x" * 129))),
    "subject/body mismatch": (SUBJ, raw(good(entity_id="drone-2"))),
    "5-token subject": (SUBJ + ".extra", raw(good())),
    "out-of-range system_id": (SUBJ, raw(good(system_id=300))),
    "out-of-range message_id": (SUBJ, raw(good(message_id=2**32))),
    "NaN": (SUBJ, raw(good()).replace(b'"groundspeed": 4.0', b'"groundspeed": NaN')),
    "null data": (SUBJ, raw(good(data=None))),
    "unknown message type": (SUBJ, raw(good(message_type="NOT_A_MAVLINK_MESSAGE"))),
    "trailing data": (SUBJ, raw(good()) + b" {}"),
    "zero time": (SUBJ, raw(good(timestamp="0001-01-01T00:00:00Z"))),
}


@pytest.fixture
def ready_lab(lab):
    lab.register_org(ORG)
    lab.register_entity(ORG, EID, "aircraft_multirotor")
    lab.register_entity(ORG, "drone-2", "aircraft_multirotor")
    return lab


def test_every_bad_telemetry_is_quarantined_and_the_valid_one_behind_is_applied(ready_lab):
    lab = ready_lab
    for subject, body in BAD_TELEMETRY.values():
        lab.publish(subject, body)
    lab.publish(f"constellation.telemetry.{ORG}.ghost", raw(good(entity_id="ghost")))  # unknown entity
    uid = lab.publish_telemetry(ORG, EID, "VFR_HUD", {"groundspeed": 12.5, "heading": 45})

    n_bad = len(BAD_TELEMETRY) + 1
    q = lab.wait_for(
        lambda: (f := lab.frames.quarantine()).shape[0] >= n_bad and f, timeout=15, what="quarantine"
    )
    assert q.shape[0] == n_bad
    assert (q["worker"] == "telemetry-worker").all()
    assert q["error"].str.len().min() > 10  # every record says why
    reasons = " | ".join(q["error"])
    for needle in ("unknown field", "schema_version", "subject/body mismatch", "4 tokens", "system_id",
                   "message_id", "unknown message_type", "unknown entity", "data"):  # fmt: skip
        assert needle in reasons, needle
    # the valid message queued behind all of them was applied
    doc = lab.wait_for(
        lambda: (d := lab.state_of(EID)) and d["vfr"]["groundspeed"] == 12.5 and d, what="valid"
    )
    assert doc["vfr"]["heading"] == 45
    assert uid in set(lab.frames.telemetry(entity_id=EID)["message_uid"])
    st = lab.stats()["telemetry-worker"]
    assert st["quarantined"] == n_bad
    ghost = q["original_subject"].str.endswith(".ghost")
    assert q.loc[~ghost, "num_delivered"].max() == 1  # poison goes at once, not after retries
    # An unknown entity is final only once no registration can still be in flight: held (not
    # counted toward quarantine) for the registration grace, then quarantined.
    assert q.loc[ghost, "num_delivered"].iloc[0] >= 1
    assert "failed on delivery" not in q.loc[ghost, "error"].iloc[0]


def test_bad_fields_are_skipped_and_the_rest_applied(ready_lab):
    lab = ready_lab
    lab.publish_telemetry(
        ORG, EID, "GLOBAL_POSITION_INT",
        {"lat": 2**40, "lon": -968013200, "alt": "high", "relative_alt": 30480, "vx": 10**6, "vy": 5, "vz": 0},
    )  # fmt: skip
    doc = lab.wait_for(
        lambda: (d := lab.state_of(EID)) and d["position"]["global"]["longitude"] and d, what="lon"
    )
    g = doc["position"]["global"]
    assert g["latitude"] is None and g["altitude_msl"] is None  # skipped, previous (none) kept
    assert g["longitude"] == pytest.approx(-96.80132)
    assert doc["position"]["local"]["vx"] is None and doc["position"]["local"]["vy"] == pytest.approx(0.05)
    assert lab.stats()["telemetry-worker"]["quarantined"] == 0


def test_bad_entity_and_org_events_are_quarantined_with_reasons(lab):
    lab.register_org(ORG)
    record = {"entity_id": "x1", "org_id": ORG, "entity_type": "aircraft_multirotor"}
    ev = lifecycle.make_entity_event("created", record)
    ev["data"]["entity"]["entity_type"] = "tank"
    lab.publish(s.entity_subject(ORG, "created"), ev)
    lab.publish(s.entity_subject(ORG, "created"), b"not json")
    ev2 = lifecycle.make_entity_event("created", {"entity_id": "x2", "org_id": "org-missing",
                                                  "entity_type": "sensor_platform"})  # fmt: skip
    lab.publish(s.entity_subject("org-missing", "created"), ev2)
    lab.publish(s.organization_subject("created"), {"id": "e1", "type": "created"})
    # a valid entity behind them still registers
    lab.register_entity(ORG, "ok-1", "sensor_platform")
    q = lab.wait_for(
        lambda: (f := lab.frames.quarantine()).shape[0] >= 4 and f, timeout=15, what="quarantine"
    )
    reasons = " | ".join(q["error"])
    assert "tank" in reasons and "unknown organization" in reasons
    assert set(q["worker"]) == {"entity-worker", "organization-worker"}


def test_a_history_outage_holds_every_message_of_the_batch_and_loses_none(lab_factory):
    """A failed insert is not the messages' fault: nothing is quarantined, and no message of the
    failed batch is acked as "late" because a newer one of the same batch was seen."""
    import sqlite3

    lab = lab_factory(hold_backoff_initial_s=0.05, hold_backoff_max_s=0.2)
    lab.register_org(ORG)
    lab.register_entity(ORG, EID, "aircraft_multirotor")
    # Take the history table away: every insert fails, which is an outage, not a bad message.
    with sqlite3.connect(lab.db_url) as conn:
        conn.execute("ALTER TABLE telemetry RENAME TO telemetry_away")
    t0 = time.time()
    items, uids = [], []
    for k in range(100):  # a newer message, then an older one: fetched together in a batch
        for ts in (t0 + k + 0.5, t0 + k):
            env = envelopes.make_telemetry(ORG, EID, "VFR_HUD", {"groundspeed": float(k)}, timestamp=ts)
            items.append((s.telemetry_subject(ORG, EID), envelopes.encode(env), env["message_uid"]))
            uids.append(env["message_uid"])
    lab.publish_many(items)
    lab.wait_for(lambda: lab.stats()["telemetry-worker"]["hold_attempts"] >= 2, what="held and retried twice")
    st = lab.stats()["telemetry-worker"]
    assert st["holding"] and st["held"] == len(items), st
    assert st["quarantined"] == 0 and st["acked"] == 0 and "history insert failed" in st["hold_reason"]
    assert lab.frames.quarantine().empty
    # the outage ends: the held messages are stored, each once, and the newest reaches KV
    with sqlite3.connect(lab.db_url) as conn:
        conn.execute("ALTER TABLE telemetry_away RENAME TO telemetry")
    lab.wait_for(lambda: lab.frames.telemetry(entity_id=EID).shape[0] == len(uids), timeout=15, what="rows")
    assert sorted(lab.frames.telemetry(entity_id=EID)["message_uid"]) == sorted(uids)
    lab.wait_for(lambda: lab.state_of(EID)["vfr"]["groundspeed"] == 99.0, what="newest in KV")
    assert lab.stats()["telemetry-worker"]["quarantined"] == 0
