"""Frames over a real lab: ``overwatch_lab.open`` on a data dir a lab is running on, and ``lab.frames``."""

from __future__ import annotations

import time

import pandas as pd
import pytest

import overwatch_lab

ORG = "org-frames"
EID = "fr-1"
POS = {
    "lat": 329488100,
    "lon": -968013200,
    "alt": 152400,
    "relative_alt": 30480,
    "hdg": 9000,
    "vx": 123,
    "vy": 0,
    "vz": 0,
}


def test_open_reads_a_data_dir_while_its_lab_runs(lab):
    lab.register_org(ORG)
    lab.register_entity(ORG, EID, "aircraft_multirotor")
    t0 = time.time()
    for k in range(3):
        lab.publish_telemetry(
            ORG, EID, "GLOBAL_POSITION_INT", {**POS, "alt": 152400 + k * 1000}, timestamp=t0 + k, wait=True
        )
    frames = overwatch_lab.open(lab.config.data_dir)  # a second reader, read-only, no broker of its own
    h = frames.history(entity=EID)
    assert h["altitude_msl_m"].tolist() == pytest.approx([152.4, 153.4, 154.4])
    assert h["latitude_deg"].iloc[0] == pytest.approx(32.94881) and h["vx_mps"].iloc[0] == pytest.approx(1.23)
    assert abs(h.index[0] - pd.Timestamp(t0, unit="s", tz="UTC")) < pd.Timedelta("1ms")
    # The lab keeps writing while the other reader holds its frames: the next read sees the new row.
    lab.publish_telemetry(ORG, EID, "GLOBAL_POSITION_INT", POS, timestamp=t0 + 3, wait=True)
    assert len(frames.history(entity=EID)) == 4
    picture = frames.as_of(t0 + 3.5, stale_after_s=5)
    assert picture.loc[EID, "is_live"] and picture.loc[EID, "altitude_msl_m"] == pytest.approx(152.4)
    # The lab's own frames are the same type and also answer live questions.
    assert isinstance(lab.frames, overwatch_lab.Frames)
    assert lab.frames.history(entity=EID).equals(frames.history(entity=EID))
    with lab.frames.live(period_s=0.05) as live:
        assert live.frame.loc[EID, "position.global.latitude"] == pytest.approx(32.94881)
