"""A real lab whose database sits on a small tmpfs: full, then read-only, during ingest.

Only the database is on the tmpfs (``db_url``); the broker's store is on ``tmp_path``, so
JetStream keeps acknowledging. Every test asserts the issue's promise: nothing valid is
quarantined, every PubAck'd message ends with exactly one history row, the workers say they
hold (and why) while the fault lasts and resume by themselves once it clears.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from overwatch_lab.protocol import envelopes
from overwatch_lab.protocol import subjects as s

ORG = "org-faults"
EID = "fault-1"
T0 = time.time()


def telemetry(start: int, n: int) -> list[tuple[str, bytes, str]]:
    """``n`` ATTITUDE envelopes with increasing timestamps (none is stale for live state)."""
    items = []
    for i in range(start, start + n):
        env = envelopes.make_telemetry(
            ORG, EID, "ATTITUDE", {"roll": 0.001 * i, "pitch": 0.0, "yaw": 0.0}, timestamp=T0 + i * 0.001
        )
        items.append((s.telemetry_subject(ORG, EID), envelopes.encode(env), env["message_uid"]))
    return items


def history_uids(db: Path) -> Counter[str]:
    conn = sqlite3.connect(db)
    try:
        return Counter(r[0] for r in conn.execute("SELECT message_uid FROM telemetry"))
    finally:
        conn.close()


def start_lab(lab_factory, tmpfs, **overrides):
    lab = lab_factory(db_url=str(tmpfs.path / "overwatch.db"), **overrides)
    lab.register_org(ORG)
    lab.register_entity(ORG, EID, "aircraft_multirotor")
    return lab


def worker(lab, name: str = "telemetry-worker") -> dict:
    return lab.stats()[name]


def holding(lab, fragment: str):
    st = worker(lab)
    return st if st["holding"] and fragment in (st["hold_reason"] or "") else None


def assert_all_stored_once(lab, db: Path, sent: list[tuple[str, bytes, str]]) -> None:
    expected = {uid for _, _, uid in sent}
    lab.wait_for(
        lambda: len(history_uids(db)) == len(expected) and not worker(lab)["holding"],
        timeout=15,
        what="every row, and the hold cleared",
    )
    rows = history_uids(db)
    assert set(rows) == expected and set(rows.values()) == {1}
    st = worker(lab)
    assert st["quarantined"] == 0 and not st["holding"] and st["held"] == 0
    assert lab.frames.quarantine().empty


@pytest.mark.slow
def test_disk_full_holds_then_stores_everything_once_space_is_freed(tmpfs, lab_factory):
    lab = start_lab(lab_factory, tmpfs)
    db = tmpfs.path / "overwatch.db"
    tmpfs.fill()
    sent = telemetry(0, 4000)
    assert lab.publish_many(sent) == 4000  # every one PubAck'd: the broker's disk is fine
    st = lab.wait_for(lambda: holding(lab, "database or disk is full"), timeout=10, what="a hold")
    assert st["held"] > 0 and st["hold_since"] is not None and st["holds"] == 1
    lab.wait_for(lambda: worker(lab)["hold_attempts"] >= 3, what="attempts while full")
    st = worker(lab)
    assert st["quarantined"] == 0 and st["retried"] == 0
    tmpfs.free_filler()
    lab.wait_for(lambda: not worker(lab)["holding"], timeout=15, what="the hold to clear")
    assert_all_stored_once(lab, db, sent)
    st = worker(lab)
    assert st["holds"] == 1 and st["last_hold_s"] > 0 and st["acked"] == 4000


@pytest.mark.slow
def test_read_only_database_holds_then_stores_everything_once_writable(tmpfs, lab_factory):
    """A read-only remount is refused while the store has its files open, so the fault starts
    as a full disk (the store then drops its connection); the file system is remounted
    read-only under the holding lab, ingest goes on, and it is made writable again."""
    lab = start_lab(lab_factory, tmpfs)
    db = tmpfs.path / "overwatch.db"
    sent = telemetry(0, 1000)
    lab.publish_many(sent)
    lab.wait_for(lambda: len(history_uids(db)) == 1000, what="first part stored")
    tmpfs.fill()
    more = telemetry(1000, 1000)
    lab.publish_many(more)
    sent += more
    lab.wait_for(lambda: holding(lab, "full"), timeout=10, what="a hold on the full disk")
    lab.wait_for(tmpfs.try_read_only, timeout=10, what="the read-only remount")
    more = telemetry(2000, 1000)
    lab.publish_many(more)
    sent += more
    st = lab.wait_for(lambda: holding(lab, "readonly database"), timeout=10, what="a read-only hold")
    assert st["quarantined"] == 0 and st["holds"] == 1  # one hold, whatever the fault became
    tmpfs.read_write()
    tmpfs.free_filler()
    assert_all_stored_once(lab, db, sent)
    assert worker(lab)["acked"] == 3000


@pytest.mark.slow
def test_a_hold_longer_than_ack_wait_causes_no_redelivery(tmpfs, lab_factory):
    lab = start_lab(lab_factory, tmpfs, ack_wait_s=2.0)
    db = tmpfs.path / "overwatch.db"
    tmpfs.fill()
    sent = telemetry(0, 3000)
    lab.publish_many(sent)
    st = lab.wait_for(lambda: holding(lab, "full"), timeout=10, what="a hold")
    lab.wait_for(lambda: time.time() - st["hold_since"] >= 5.0, timeout=10, what="2.5 ack waits")
    f = lab._core
    infos = [
        i
        for i in lab.call(f.js.consumers_info(s.STREAM_TELEMETRY))
        if i.name.startswith(s.CONSUMER_TELEMETRY)
    ]
    assert len(infos) > 1  # the partition durables and the unpartitioned one
    # Each delivery takes a consumer sequence: as many as messages delivered means none went out twice.
    delivered = sum(i.delivered.consumer_seq for i in infos)
    assert sum(i.num_redelivered for i in infos) == 0
    assert delivered == sum(i.num_ack_pending for i in infos) + worker(lab)["acked"]
    assert sum(i.num_ack_pending for i in infos) == worker(lab)["held"] > 0
    tmpfs.free_filler()
    assert_all_stored_once(lab, db, sent)
    infos = [
        i
        for i in lab.call(f.js.consumers_info(s.STREAM_TELEMETRY))
        if i.name.startswith(s.CONSUMER_TELEMETRY)
    ]
    assert sum(i.delivered.consumer_seq for i in infos) == 3000  # each delivered once, in all
    assert sum(i.num_ack_pending for i in infos) == 0 and sum(i.num_redelivered for i in infos) == 0
