"""Export (Parquet/CSV + data dictionary), overwatch_lab.open() on a data dir, the live frame, the bench."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pandas as pd
import pytest

import overwatch_lab
from overwatch_lab.errors import DataDirError, FrameError, LabStateError
from overwatch_lab.frames import Frames, LiveFrame
from overwatch_lab.frames.export import DICTIONARY_FIELDS
from overwatch_lab.kvcache import Changes
from overwatch_lab.store.schema import SCHEMA_VERSION

from .conftest import T0


def test_parquet_round_trip_equals_the_frame_and_a_dictionary_is_beside_it(small_db, tmp_path):
    f = Frames(small_db)
    frame = f.history(
        columns=["altitude_msl_m", "battery_pct", "armed", "mode", "message_uid", "ingested_at"]
    )
    written = f.write(frame, tmp_path / "out", "uavs")
    back = pd.read_parquet(written.path)
    pd.testing.assert_frame_equal(back, frame)
    d = pd.read_csv(written.dictionary)
    assert tuple(d.columns) == DICTIONARY_FIELDS
    assert d.set_index("column").loc["altitude_msl_m", "unit"] == "m"
    assert d["column"].tolist() == ["time", *frame.columns]
    with pytest.raises(FrameError, match="format='xlsx'"):
        f.write(frame, tmp_path, "x", format="xlsx")


def test_a_whole_run_exports_in_chunks_with_progress(small_db, tmp_path):
    seen: list[tuple[str, int, int]] = []
    written = Frames(small_db).export(tmp_path / "run", chunk_rows=7, progress=lambda *a: seen.append(a))
    names = {w.table: w for w in written}
    assert set(names) == {"telemetry", "device_events", "detections", "commands", "entities", "organizations"}
    telemetry = pd.read_parquet(names["telemetry"].path)
    assert len(telemetry) == names["telemetry"].rows == 24
    pd.testing.assert_frame_equal(telemetry.sort_values("message_uid"), Frames(small_db).history(columns=list(telemetry.columns)).sort_values("message_uid"), check_categorical=False)  # fmt: skip
    assert [s for s in seen if s[0] == "telemetry"][-1] == ("telemetry", 24, 24)
    assert all(w.dictionary.exists() for w in written)
    csv = Frames(small_db).export(tmp_path / "csv", format="csv", entity="uav-b", since=T0 + 5)
    rows = pd.read_csv(csv[0].path)
    assert len(rows) == 5 and set(rows["entity_id"]) == {"uav-b"}


def test_open_reads_a_data_dir_read_only(small_db):
    frames = overwatch_lab.open(Path(small_db).parent)
    assert isinstance(frames, overwatch_lab.Frames)
    assert len(frames.history(entity="uav-a")) == 13
    with pytest.raises(LabStateError, match="needs a running lab"):
        frames.states()
    with pytest.raises(overwatch_lab.DatabaseError, match="readonly"):
        frames._reader.rows("DELETE FROM telemetry")


def test_open_names_what_is_wrong_with_the_data_dir(tmp_path):
    with pytest.raises(DataDirError, match="no data directory"):
        overwatch_lab.open(tmp_path / "missing")
    with pytest.raises(DataDirError, match="overwatch.db is missing"):
        overwatch_lab.open(tmp_path)
    sqlite3.connect(tmp_path / "overwatch.db").close()
    with pytest.raises(DataDirError, match="is empty"):
        overwatch_lab.open(tmp_path)


def test_open_refuses_a_newer_schema(small_db):
    conn = sqlite3.connect(small_db)
    conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(DataDirError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        overwatch_lab.open(Path(small_db).parent)


class Versions:
    """A ChangeSource whose documents change when told to."""

    def __init__(self) -> None:
        self.version = 1
        self.docs = {"a": {"entity_id": "a", "vfr": {"groundspeed": 1.0}}}
        self.lock = threading.Lock()

    def entity_docs(self):
        return self.docs

    def quarantine_records(self):
        return []

    def entity_changes(self, since: int) -> Changes:
        with self.lock:
            if since >= self.version:
                return Changes(self.version, {}, frozenset(), False)
            return Changes(self.version, {k: (1, d) for k, d in self.docs.items()}, frozenset(), True)


def test_the_live_frame_keeps_itself_current():
    from tests.polling import wait_until

    source = Versions()
    frames = Frames(":memory:", source)
    changed: list[int] = []
    with frames.live(period_s=0.02) as live:
        live.on_change(lambda frame: changed.append(len(frame)))
        assert live.frame.loc["a", "vfr.groundspeed"] == 1.0
        with source.lock:
            source.docs = {**source.docs, "b": {"entity_id": "b", "vfr": {"groundspeed": 2.0}}}
            source.version = 2
        wait_until(lambda: "b" in live.frame.index, timeout=5, what="b in the live frame")
        assert changed and changed[-1] == 2
    assert not live.running
    with pytest.raises(FrameError, match="period_s"):
        LiveFrame(frames._rows, 0)  # type: ignore[arg-type]


def test_bench_frames_smoke(tmp_path):
    from overwatch_lab.bench import frames as bench

    result = bench.run(rows=3000, entities=20, out_dir=tmp_path, repeat=1)
    assert set(result["targets"]) >= {"as-of < 200 ms", "whole table <= 0.5x read_sql"}
    assert [c["rows"] for c in result["cases"].values()][1] == 3000
    assert Path(result["json_path"]).exists() and "frames benchmark" in bench.report(result)
