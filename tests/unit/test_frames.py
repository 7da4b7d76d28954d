"""Frames over a database alone (no running lab): history reads work, live reads say why they cannot."""

from __future__ import annotations

import pytest

from overwatch_lab import Frames, LabStateError


class Live:
    """A LiveSource made of plain data."""

    def entity_docs(self):
        return {"b": {"entity_id": "b", "position": {"global": {"latitude": 2.0}}},
                "a": {"entity_id": "a", "position": {"global": {"latitude": 1.0}}}}  # fmt: skip

    def quarantine_records(self):
        return [{"worker": "telemetry-worker", "error": "bad", "extra": 1}]


@pytest.mark.parametrize("read", ["states", "quarantine"])
def test_live_frames_need_a_live_source(tmp_path, read):
    frames = Frames(str(tmp_path / "overwatch.db"))
    with pytest.raises(LabStateError, match=f"{read}\\(\\) needs a running lab"):
        getattr(frames, read)()


def test_states_flatten_one_row_per_entity_sorted_by_id(tmp_path):
    states = Frames(str(tmp_path / "overwatch.db"), Live()).states()
    assert states.index.tolist() == ["a", "b"]
    assert states["position.global.latitude"].tolist() == [1.0, 2.0]


def test_quarantine_keeps_the_record_columns(tmp_path):
    q = Frames(str(tmp_path / "overwatch.db"), Live()).quarantine()
    assert list(q.columns)[:3] == ["quarantined_at", "worker", "error"] and "extra" not in q
    assert q["error"].tolist() == ["bad"]
