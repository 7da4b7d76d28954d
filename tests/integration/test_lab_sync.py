"""The synchronizer keeps KV and libSQL consistent both ways, and counts what it did."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

ORG = "org-s"


@pytest.fixture
def fleet(lab_factory):
    lab = lab_factory(stale_after_s=1.0, sync_period_s=0.3)
    lab.register_org(ORG, "Sync Org")
    for eid in ("e1", "e2", "e3"):
        lab.register_entity(ORG, eid, "ground_vehicle_wheeled", name=f"name-{eid}")
    return lab


def corrupt(lab, eid, **changes):
    async def go():
        kv = lab._core.ekv.kv
        entry = await kv.get(eid)
        doc = json.loads(entry.value)
        doc.update(changes)
        await kv.put(eid, json.dumps(doc).encode())

    lab.call(go())


def test_drifted_static_fields_are_repaired_and_live_fields_kept(fleet):
    lab = fleet
    lab.publish_telemetry(ORG, "e1", "VFR_HUD", {"groundspeed": 3.0, "heading": 90})
    lab.wait_for(lambda: lab.state_of("e1")["vfr"]["groundspeed"] == 3.0, what="telemetry")
    before = lab.stats()["synchronizer"]["repaired"]
    corrupt(lab, "e1", name="hijacked", entity_type="waypoint", org_name="nobody")
    lab.wait_for(lambda: lab.state_of("e1")["name"] == "name-e1", timeout=5, what="repair")
    doc = lab.state_of("e1")
    assert doc["entity_type"] == "ground_vehicle_wheeled" and doc["org_name"] == "Sync Org"
    assert doc["vfr"]["groundspeed"] == 3.0  # telemetry fields survive a repair
    assert lab.stats()["synchronizer"]["repaired"] >= before + 1


def test_missing_documents_are_recreated_and_orphans_removed(fleet):
    lab = fleet

    async def drop():
        await lab._core.ekv.kv.delete("e2")
        await lab._core.ekv.kv.put("orphan-9", json.dumps({"entity_id": "orphan-9"}).encode())

    lab.call(drop())
    lab.wait_for(
        lambda: lab.state_of("e2") is not None and lab.state_of("orphan-9") is None, what="reconcile"
    )
    st = lab.stats()["synchronizer"]
    assert st["created"] >= 1 and st["removed"] >= 1


def test_entity_deleted_from_sql_loses_its_document(fleet):
    lab = fleet
    with sqlite3.connect(lab.db_url) as conn:
        conn.execute("DELETE FROM entities WHERE entity_id = 'e3'")
    lab.wait_for(lambda: lab.state_of("e3") is None, what="e3 removed from KV")


def test_silent_entity_goes_stale_and_live_fields_reach_sql(fleet):
    lab = fleet
    lab.publish_telemetry(ORG, "e1", "GLOBAL_POSITION_INT", {"lat": 100000000, "lon": 200000000, "alt": 5000},
                          timestamp=time.time())  # fmt: skip
    lab.wait_for(lambda: lab.state_of("e1")["is_live"] is True, what="live")
    frame = lab.wait_for(
        lambda: (f := lab.frames.entities().set_index("entity_id")).loc["e1", "latitude"] == 10.0 and f,
        what="write-back",
    )
    assert frame.loc["e1", "longitude"] == pytest.approx(20.0)
    lab.wait_for(lambda: lab.state_of("e1")["is_live"] is False, timeout=5, what="stale")
    assert lab.stats()["synchronizer"]["marked_stale"] >= 1
    lab.wait_for(
        lambda: int(lab.frames.entities().set_index("entity_id").loc["e1", "is_live"]) == 0, what="sql"
    )
    # and it recovers with the next message
    lab.publish_telemetry(ORG, "e1", "HEARTBEAT", {"type": 2, "base_mode": 128, "custom_mode": 5})
    lab.wait_for(lambda: lab.state_of("e1")["is_live"] is True, what="live again")


def test_history_older_than_the_retention_is_pruned(lab_factory):
    lab = lab_factory(history_max_age_s=60.0, sync_period_s=0.2)
    lab.register_org(ORG)
    lab.register_entity(ORG, "h1", "sensor_platform")
    now = time.time()
    old = lab.publish_telemetry(ORG, "h1", "VFR_HUD", {"groundspeed": 1.0}, timestamp=now - 3600)
    new = lab.publish_telemetry(ORG, "h1", "VFR_HUD", {"groundspeed": 2.0}, timestamp=now)
    lab.wait_for(lambda: lab.stats()["synchronizer"]["history_pruned"] >= 1, timeout=10, what="pruned")
    uids = lab.wait_for(lambda: (u := set(lab.frames.telemetry(entity_id="h1")["message_uid"])) and new in u and u,
                        what="the recent row")  # fmt: skip
    assert old not in uids
    assert lab.state_of("h1")["vfr"]["groundspeed"] == 2.0  # live state is not history: untouched


def test_a_pass_reads_only_changed_documents_without_decoding_them(fleet):
    lab = fleet
    lab.sync_now()
    decoded = lab.stats()["kv_cache"]["decoded"]
    lab.publish_telemetry(ORG, "e2", "GLOBAL_POSITION_INT", {"lat": 300000000, "lon": 400000000, "alt": 5000},
                          timestamp=time.time())  # fmt: skip
    lab.wait_for(
        lambda: lab.frames.entities().set_index("entity_id").loc["e2", "latitude"] == 30.0, what="write-back"
    )
    lab.sync_now()
    # the synchronizer read the new revision's few fields, never the whole document
    assert lab.stats()["kv_cache"]["decoded"] == decoded


def test_a_static_field_changed_in_sql_alone_is_repaired_in_kv(fleet):
    lab = fleet
    lab.sync_now()
    with sqlite3.connect(lab.db_url) as conn:  # no KV revision: only the row says it changed
        conn.execute("UPDATE entities SET name = 'renamed-e3' WHERE entity_id = 'e3'")
    lab.wait_for(lambda: lab.state_of("e3")["name"] == "renamed-e3", timeout=5, what="repair from the row")
