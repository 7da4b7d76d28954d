"""Detections history (schema version 4): written by the event worker, upgraded data directories."""

from __future__ import annotations

import sqlite3
import time

import pandas as pd
import pytest

from overwatch_lab.errors import FrameError
from overwatch_lab.protocol import subjects as s
from overwatch_lab.protocol.events import make_detection
from overwatch_lab.store import schema
from overwatch_lab.store.connection import connect

ORG = "org-d"
EID = "cam-1"
OTHER = "cam-2"


def detection(entity_id: str, track: str, t: float, x1: float = 0.1, uid: str | None = None) -> dict:
    det = make_detection(ORG, entity_id, track, "vehicle", 0.8, x1, 0.2, x1 + 0.2, 0.4, timestamp=t)
    if uid is not None:
        det["event_uid"] = uid
    return det


def publish(lab, det: dict) -> None:
    lab.publish(s.detection_subject(ORG, det["entity_id"], det["track_id"]), det, msg_id=det["event_uid"])


def register(lab) -> None:
    lab.register_org(ORG)
    lab.register_entity(ORG, EID, "sensor_platform")
    lab.register_entity(ORG, OTHER, "sensor_platform")


def test_every_detection_gets_one_row_late_ones_and_other_entities_included(lab):
    register(lab)
    t0 = float(int(time.time()))  # whole seconds: stored times are truncated to the microsecond
    publish(lab, detection(EID, "trk-1", t0, uid="d-1"))
    publish(lab, detection(EID, "trk-1", t0 + 1, x1=0.3, uid="d-2"))
    publish(lab, detection(EID, "trk-1", t0 - 5, uid="d-late"))  # not newer: KV ignores it, history keeps it
    publish(lab, detection(OTHER, "trk-9", t0 + 2, uid="d-3"))
    lab.publish(  # the same event_uid again, past the dedup window's reach (another Nats-Msg-Id)
        s.detection_subject(ORG, EID, "trk-1"),
        detection(EID, "trk-1", t0 + 1, x1=0.3, uid="d-2"),
        msg_id="again",
    )
    frame = lab.wait_for(lambda: (f := lab.frames.detections()).shape[0] >= 4 and f, what="4 detection rows")
    lab.wait_for(lambda: lab.stats()["event-worker"]["handled"] >= 5, what="5 detections handled")
    frame = lab.frames.detections()
    assert list(frame["event_uid"]) == ["d-late", "d-1", "d-2", "d-3"]  # oldest first, d-2 once
    assert isinstance(frame.index, pd.DatetimeIndex) and str(frame.index.tz) == "UTC"
    assert frame.index[1] == pd.Timestamp(t0, unit="s", tz="UTC")
    assert frame["entity_id"].dtype == "category" and frame["label"].dtype == "category"
    assert frame["cx"].iloc[2] == pytest.approx(0.4) and frame["cy"].iloc[2] == pytest.approx(0.3)
    track = lab.state_of(EID)["detections"]["tracked_objects"]["trk-1"]
    assert track["frame_count"] == 2  # the late one and the resend changed only history

    both = lab.frames.detections(entity=[EID, OTHER], since=t0, until=t0 + 2)
    assert list(both["event_uid"]) == ["d-1", "d-2"]  # until is exclusive
    assert list(lab.frames.detections(entity=OTHER)["event_uid"]) == ["d-3"]
    assert list(lab.frames.detections(org=ORG, limit=1)["event_uid"]) == ["d-3"]
    none = lab.frames.detections(entity=EID, since=t0 + 10)
    assert none.empty and list(none.columns) == list(frame.columns)
    assert (none.dtypes.astype(str) == frame.dtypes.astype(str)).all()
    with pytest.raises(FrameError, match="unknown entity 'nobody'"):
        lab.frames.detections(entity=["nobody", EID], since=t0 + 10)
    with pytest.raises(FrameError, match="starts after it ends"):
        lab.frames.detections(since=t0 + 1, until=t0)


def test_detections_join_telemetry_on_entity_and_time(lab):
    register(lab)
    t0 = float(int(time.time()))  # whole seconds: stored times are truncated to the microsecond
    for i in range(3):
        lab.publish_telemetry(ORG, EID, "GLOBAL_POSITION_INT",
                              {"lat": 329_000_000 + i, "lon": -968_000_000, "alt": 1000, "relative_alt": 500},
                              timestamp=t0 + i)  # fmt: skip
    publish(lab, detection(EID, "trk-1", t0 + 1.5, uid="d-join"))
    lab.wait_for(lambda: lab.frames.detections().shape[0] == 1 and lab.frames.telemetry().shape[0] == 3,
                 what="rows")  # fmt: skip
    tel = lab.frames.telemetry().set_index("time")
    tel["entity_id"] = tel["entity_id"].astype("category")
    joined = pd.merge_asof(
        lab.frames.detections().reset_index(), tel.reset_index()[["time", "entity_id", "latitude"]],
        on="time", by="entity_id",
    )  # fmt: skip
    assert joined["latitude"].iloc[0] == pytest.approx(32.9000001)


def test_a_data_dir_with_schema_3_upgrades_and_keeps_its_history(lab_factory, tmp_path):
    data_dir = tmp_path / "old"
    data_dir.mkdir()
    conn = connect(str(data_dir / "overwatch.db"))
    schema.apply_pragmas(conn, remote=False)
    schema.migrate(conn, tuple(m for m in schema.MIGRATIONS if m.version <= 3))
    conn.execute(
        f"INSERT INTO telemetry ({', '.join(schema.TELEMETRY_INSERT_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(schema.TELEMETRY_INSERT_COLUMNS))})",
        ("u-before", ORG, EID, "HEARTBEAT", "2026-11-27T08:00:00.000000Z", 1.8e9, 1.8e9, 1, 1,
         *([None] * len(schema.TELEMETRY_PROJECTED_COLUMNS)), "{}", 0),
    )  # fmt: skip
    conn.close()

    lab = lab_factory(data_dir=data_dir)
    register(lab)
    publish(lab, detection(EID, "trk-1", time.time(), uid="d-after"))
    frame = lab.wait_for(lambda: (f := lab.frames.detections()).shape[0] == 1 and f, what="a detection row")
    assert list(frame["event_uid"]) == ["d-after"]
    assert list(lab.frames.telemetry()["message_uid"]) == ["u-before"]
    check = sqlite3.connect(data_dir / "overwatch.db")
    try:
        assert check.execute("SELECT version FROM schema_version").fetchone()[0] == schema.SCHEMA_VERSION
    finally:
        check.close()


@pytest.mark.slow
def test_a_locked_database_holds_detections_then_stores_them(lab):
    """An infrastructure fault (the write lock held elsewhere) holds; nothing is quarantined or lost."""
    register(lab)
    blocker = sqlite3.connect(lab.db_url, timeout=0.1)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        publish(lab, detection(EID, "trk-1", time.time(), uid="d-held"))
        held = lab.wait_for(
            lambda: (st := lab.stats()["event-worker"])["holding"] and st,
            timeout=20,
            what="event worker holding",
        )
        assert "history insert failed" in (held["hold_reason"] or "")
    finally:
        blocker.rollback()
        blocker.close()
    frame = lab.wait_for(lambda: (f := lab.frames.detections()).shape[0] == 1 and f, timeout=20, what="row")
    assert list(frame["event_uid"]) == ["d-held"]
    assert lab.stats()["event-worker"]["quarantined"] == 0
    assert lab.state_of(EID)["detections"]["tracked_objects"]["trk-1"]["frame_count"] == 1
