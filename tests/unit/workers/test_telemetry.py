"""plan_batch: which messages of a batch change live state, and every one gets its history row."""

from __future__ import annotations

from overwatch_lab.protocol import envelopes
from overwatch_lab.protocol.envelopes import decode_telemetry
from overwatch_lab.protocol.mavlink import project
from overwatch_lab.store.schema import TELEMETRY_INSERT_COLUMNS
from overwatch_lab.workers.telemetry import plan_batch

ORG, EID = "org-a", "uav-1"
T0 = 1_800_000_000.0
LATE = TELEMETRY_INSERT_COLUMNS.index("late")
UID = TELEMETRY_INSERT_COLUMNS.index("message_uid")


def item(i, ts, *, entity_id=EID, message_type="VFR_HUD", uid=None, groundspeed=1.0):
    data = (
        {"groundspeed": groundspeed} if message_type == "VFR_HUD" else {"roll": 0.1, "pitch": 0.0, "yaw": 0.0}
    )
    env = envelopes.make_telemetry(ORG, entity_id, message_type, data, timestamp=ts, message_uid=uid)
    t = decode_telemetry(envelopes.encode(env))
    return i, t, project(t.message_type, t.data, t.timestamp)


def no_cursor(entity_id, message_type):
    return None


def cursor_at(ts):
    stamp = envelopes.format_timestamp(ts)
    return lambda entity_id, message_type: stamp if message_type == "VFR_HUD" else None


def test_every_message_gets_a_row_and_only_newer_ones_are_applied():
    batch = [item(0, T0 + 5, groundspeed=5.0), item(1, T0 + 1, groundspeed=1.0), item(2, T0 + 5, groundspeed=7.0),
             item(3, T0 + 6, groundspeed=6.0)]  # fmt: skip
    plan = plan_batch(batch, no_cursor, ingested_at=T0 + 10)
    assert [r[UID] for r in plan.rows] == [batch[0][1].message_uid, batch[3][1].message_uid]
    assert [r[UID] for r in plan.late_rows] == [batch[1][1].message_uid, batch[2][1].message_uid]
    assert {r[LATE] for r in plan.rows} == {0} and {r[LATE] for r in plan.late_rows} == {1}
    assert plan.late == [1, 2]
    eb = plan.entities[EID]
    assert eb.indices == [0, 1, 2, 3]  # held together if the entity's write fails
    assert eb.sets[("vfr", "groundspeed")] == 6.0
    assert eb.cursors["VFR_HUD"] == (batch[3][1].message_uid, batch[3][1].timestamp)
    assert eb.last_seen == batch[3][1].timestamp
    assert all(len(r) == len(TELEMETRY_INSERT_COLUMNS) for r in plan.rows + plan.late_rows)
    assert {r[TELEMETRY_INSERT_COLUMNS.index("ingested_at")] for r in plan.rows + plan.late_rows} == {T0 + 10}


def test_a_message_not_newer_than_live_state_is_late_and_changes_nothing():
    plan = plan_batch([item(0, T0), item(1, T0 - 1)], cursor_at(T0), ingested_at=T0)
    assert plan.rows == [] and len(plan.late_rows) == 2 and plan.late == [0, 1]
    assert plan.entities[EID].cursors == {} and plan.entities[EID].sets == {}  # nothing to write


def test_cursors_are_per_entity_and_message_type():
    batch = [item(0, T0 + 1), item(1, T0 - 5, message_type="ATTITUDE"), item(2, T0 + 1, entity_id="uav-2")]
    plan = plan_batch(batch, cursor_at(T0), ingested_at=T0)
    assert plan.late == [] and len(plan.rows) == 3
    assert set(plan.entities) == {EID, "uav-2"}
    assert set(plan.entities[EID].cursors) == {"VFR_HUD", "ATTITUDE"}


def test_a_resent_copy_in_the_same_batch_is_late():
    first = item(0, T0 + 1, uid="same-uid")
    plan = plan_batch([first, item(1, T0 + 1, uid="same-uid")], cursor_at(T0), ingested_at=T0)
    assert plan.late == [1] and [r[UID] for r in plan.rows] == ["same-uid"]
    # the store inserts the applied rows first, so the uid is stored once, not late
