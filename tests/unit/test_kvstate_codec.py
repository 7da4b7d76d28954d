"""The entity-document codec of kvstate.py: orjson/msgspec speed, ``json``'s meaning."""

from __future__ import annotations

import json
import math

import pytest

from overwatch_lab import kvstate
from overwatch_lab.protocol import state

DOC = {
    **state.new_entity_doc(
        {"entity_id": "e1", "org_id": "o1", "metadata": {"k": [1, 2.5]}}, "Org", "2026-11-27T10:00:00.000000Z"
    ),
    "name": "drône",
    "big": 2**70,
    "neg": -0.0,
}


def test_dumps_is_json_dumps_meaning_and_loads_round_trips():
    out = kvstate.dumps(DOC)
    assert json.loads(out) == json.loads(json.dumps(DOC, allow_nan=False)) == DOC
    assert kvstate.loads(out) == DOC
    assert type(kvstate.loads(out)["big"]) is int  # exact, not a float


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_dumps_rejects_non_finite_numbers_instead_of_writing_null(bad):
    for doc in ({"a": bad}, {"a": {"b": [1, bad]}}, {"a": ({"c": bad},)}):
        with pytest.raises(ValueError, match="non-finite"):
            kvstate.dumps(doc)


def test_dumps_falls_back_to_json_for_what_orjson_refuses():
    assert json.loads(kvstate.dumps({"n": 10**30, "s": "\ud800"})) == {"n": 10**30, "s": "\ud800"}
    with pytest.raises(TypeError):
        kvstate.dumps({"x": object()})


def test_loads_reads_what_msgspec_refuses_like_json():
    assert kvstate.loads(b'{"a":1e400}') == {"a": math.inf}  # then dumps refuses it, as before
    with pytest.raises(ValueError):
        kvstate.loads(b'{"a":')
