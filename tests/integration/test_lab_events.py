"""Event worker: detections merged into the document, bootsequence / shutdown recorded."""

from __future__ import annotations

import time

import pytest

from overwatch_lab.protocol import subjects as s
from overwatch_lab.protocol.events import make_detection, make_device_event

ORG = "org-e"
EID = "cam-1"


@pytest.fixture
def cam(lab):
    lab.register_org(ORG)
    lab.register_entity(ORG, EID, "sensor_platform")
    return lab


def test_detections_merge_into_tracked_objects(cam):
    lab = cam
    t0 = time.time()
    for i, (x1, y1) in enumerate([(0.1, 0.1), (0.2, 0.1)]):
        det = make_detection(ORG, EID, "trk-7", "vehicle", 0.9, x1, y1, x1 + 0.2, y1 + 0.2,
                             timestamp=t0 + i)  # fmt: skip
        lab.publish(s.detection_subject(ORG, EID, "trk-7"), det)
    stale = make_detection(ORG, EID, "trk-7", "vehicle", 0.5, 0.0, 0.0, 0.1, 0.1, timestamp=t0 - 5)
    lab.publish(s.detection_subject(ORG, EID, "trk-7"), stale)
    lab.wait_for(lambda: lab.stats()["event-worker"]["handled"] >= 3, what="3 detections handled")
    track = lab.state_of(EID)["detections"]["tracked_objects"]["trk-7"]
    assert track["frame_count"] == 2
    assert track["cx"] == pytest.approx(0.3) and track["dx"] == pytest.approx(0.1)
    assert track["label"] == "vehicle"


def test_bootsequence_and_shutdown_are_recorded(cam):
    lab = cam
    boot = make_device_event(ORG, EID, "bootsequence", firmware="1.2.3")
    lab.publish(s.device_event_subject(ORG, EID, "bootsequence"), boot)
    lab.wait_for(lambda: lab.state_of(EID)["is_live"] is True, what="live after boot")
    lab.publish(s.device_event_subject(ORG, EID, "shutdown"), make_device_event(ORG, EID, "shutdown"))
    lab.wait_for(lambda: lab.state_of(EID)["is_live"] is False, what="not live after shutdown")
    events = lab.wait_for(
        lambda: (f := lab.frames.device_events(entity_id=EID)).shape[0] == 2 and f, what="rows"
    )
    assert list(events["event_type"]) == ["bootsequence", "shutdown"]


def test_bad_detection_is_quarantined(cam):
    lab = cam
    det = make_detection(ORG, EID, "trk-1", "person", 0.9, 0.1, 0.1, 0.2, 0.2)
    det["x2"] = 0.05  # x2 < x1
    lab.publish(s.detection_subject(ORG, EID, "trk-1"), det)
    lab.publish(s.device_event_subject(ORG, "nobody", "bootsequence"),
                make_device_event(ORG, "nobody", "bootsequence"))  # fmt: skip
    q = lab.wait_for(lambda: (f := lab.frames.quarantine()).shape[0] >= 2 and f, what="quarantine")
    assert set(q["worker"]) == {"event-worker"}
    assert any("x2" in e for e in q["error"]) and any("unknown entity" in e for e in q["error"])
