"""docview.view reads the synchronizer's fields of a document as the whole document says them."""

from __future__ import annotations

import json

import pytest

from overwatch_lab.protocol import docview, state

ROW = {"entity_id": "e1", "org_id": "o1", "name": "n1", "entity_type": "waypoint"}


def _doc() -> state.Doc:
    doc = state.new_entity_doc(ROW, "Org", "2026-01-01T00:00:00.000000Z")
    doc["position"]["global"].update(latitude=1.5, longitude=-2.25, altitude_msl=30.0, timestamp="t")
    doc["vfr"].update(heading=90, groundspeed=3.5)
    doc.update(
        is_live=True, last_seen="2026-01-01T00:00:01.000000Z", received_at="2026-01-01T00:00:02.000000Z"
    )
    return doc


def _same(doc: state.Doc) -> state.Doc:
    v = docview.view(json.dumps(doc).encode())
    assert v is not None
    assert state.live_fields(v) == state.live_fields(doc)
    assert state.static_drift(v, ROW, "Org") == state.static_drift(doc, ROW, "Org")
    for now in (1767225600.0, 1767225700.0):  # 2026-01-01T00:00:00Z, and 100 s later
        assert state.mark_stale(dict(v), now, 5.0) == state.mark_stale(dict(doc), now, 5.0)
    return v


def test_a_full_document_reads_the_same_through_its_view():
    v = _same(_doc())
    assert v["received_at"] == "2026-01-01T00:00:02.000000Z" and "telemetry_cursors" not in v


def test_absent_and_null_fields_read_as_in_the_document():
    doc = _doc()
    del doc["name"], doc["received_at"]
    doc["position"] = None
    doc["vfr"] = {"heading": 10}
    v = _same(doc)
    assert "name" not in v and state.static_drift(v, ROW, "Org") == ["name"]
    _same({"entity_id": "e1"})


@pytest.mark.parametrize("raw", [b"[1, 2]", b"not json", b'{"position": 3}', b'{"vfr": "x"}',
                                 b'{"position": {"global": []}}'])  # fmt: skip
def test_an_unexpected_shape_asks_for_the_whole_document(raw):
    assert docview.view(raw) is None
