"""The pure parts of replay: filters, the frame built from stored messages, re-published bodies."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from overwatch_lab.errors import FrameError
from overwatch_lab.protocol import envelopes
from overwatch_lab.protocol.subjects import parse_telemetry_subject
from overwatch_lab.replay import (
    REPLAY_FRAME_DTYPES,
    build_frame,
    check_speed,
    empty_replay_frame,
    replay_messages,
    stored_filters,
)
from overwatch_lab.store.window import TimeWindow, entity_ids, epoch_ns_of

T0 = 1_800_000_000.0


def stored(i: int, eid: str = "e1", **fields) -> tuple[str, bytes, int, int]:
    env = envelopes.make_telemetry(
        "o1",
        eid,
        "VFR_HUD",
        {"groundspeed": 1.5 * i, "heading": 90},
        timestamp=T0 + i,
        source="sim",
        **fields,
    )
    return f"constellation.telemetry-p.o1.{eid}.2", envelopes.encode(env), 100 + i, int((T0 + 10 + i) * 1e9)


def test_stored_filters_name_the_partitioned_and_the_untransformed_subjects():
    assert stored_filters(None, None) == ["constellation.telemetry-p.*.*.*", "constellation.telemetry.*.*"]
    assert stored_filters("o1", ["a", "b"]) == [
        "constellation.telemetry-p.o1.a.*",
        "constellation.telemetry.o1.a",
        "constellation.telemetry-p.o1.b.*",
        "constellation.telemetry.o1.b",
    ]
    assert stored_filters(None, [f"e{i}" for i in range(101)]) == stored_filters(None, None)  # filtered here


def test_build_frame_decodes_strictly_skips_what_the_lab_would_quarantine_and_filters():
    bad_body = ("constellation.telemetry-p.o1.e1.2", b'{"not": "telemetry"}', 99, int(T0 * 1e9))
    msgs = [stored(0), bad_body, stored(1, "e2"), stored(2)]
    frame = build_frame(msgs)
    assert list(frame["stream_seq"]) == [100, 101, 102] and frame.attrs["replay"]["skipped"] == 1
    assert list(frame["entity_id"]) == ["e1", "e2", "e1"]
    assert {c: str(t) for c, t in frame.dtypes.items()} == REPLAY_FRAME_DTYPES
    assert frame.index[0] == pd.Timestamp(T0, unit="s", tz="UTC")
    assert frame["stored_at"].iloc[0] == pd.Timestamp(int((T0 + 10) * 1e9), unit="ns", tz="UTC")
    assert frame["source"].iloc[0] == "sim" and frame["message_id"].iloc[0] == 74
    assert list(build_frame(msgs, frozenset({"e2"}))["stream_seq"]) == [101]
    empty = build_frame([bad_body])
    assert empty.empty and empty.attrs["replay"]["skipped"] == 1
    assert {c: str(t) for c, t in empty.dtypes.items()} == REPLAY_FRAME_DTYPES


def test_replay_messages_are_valid_envelopes_with_fresh_uids_and_shifted_times():
    frame = build_frame([stored(0), stored(1, "e2"), stored(2)])
    shift_us = 123_456_789_012
    out = replay_messages(frame, uid_prefix="replay-abc", shift_us=shift_us)
    assert [uid for _, _, uid in out] == ["replay-abc-0", "replay-abc-1", "replay-abc-2"]
    for (subject, body, uid), orig in zip(out, [stored(0), stored(1, "e2"), stored(2)], strict=True):
        t = envelopes.decode_telemetry(body, parse_telemetry_subject(subject))
        o = envelopes.decode_telemetry(orig[1])
        assert subject == f"constellation.telemetry.o1.{o.entity_id}" and t.message_uid == uid
        assert round((t.ts - o.ts) * 1e6) == shift_us  # exact to the microsecond
        assert (t.data_json, t.message_type, t.source, t.system_id) == (o.data_json, o.message_type, "sim", 1)
    kept = replay_messages(frame, uid_prefix=None, shift_us=0)
    assert [uid for _, _, uid in kept] == list(frame["message_uid"])
    assert envelopes.decode_telemetry(kept[1][1]).timestamp == frame["timestamp"].iloc[1]
    assert replay_messages(empty_replay_frame(), uid_prefix="x", shift_us=0) == []
    with pytest.raises(FrameError, match="not a replay frame"):
        replay_messages(pd.DataFrame({"a": [1]}), uid_prefix=None, shift_us=0)


@pytest.mark.parametrize("bad", [0, -1, math.inf, math.nan, True, "fast"])
def test_check_speed_refuses_anything_but_a_positive_number_or_none(bad):
    with pytest.raises(FrameError, match="speed must be"):
        check_speed(bad)


def test_check_speed_accepts_none_and_positive_numbers():
    assert check_speed(None) is None and check_speed(10) == 10.0 and check_speed(0.5) == 0.5


def test_windows_take_naive_times_as_utc_and_refuse_start_after_end():
    assert (
        TimeWindow.of("2027-01-15T08:00:00", None).since == TimeWindow.of("2027-01-15T08:00:00Z", None).since
    )
    assert TimeWindow.of(T0, T0).empty and not TimeWindow.of(T0, T0 + 1).empty
    with pytest.raises(FrameError, match="starts after it ends"):
        TimeWindow.of(T0 + 1, T0)
    for bad in (True, math.nan, "not a time"):
        with pytest.raises(FrameError, match="not a time"):
            TimeWindow.of(bad, None)
    stamp = pd.Timestamp(1_800_000_000_123_456_789, unit="ns", tz="UTC")
    assert epoch_ns_of(stamp, "since") == 1_800_000_000_123_456_789  # a stored_at selects itself exactly
    assert epoch_ns_of(stamp.tz_localize(None), "since") == stamp.value


def test_entity_ids_are_one_or_many_checked_tokens():
    assert (
        entity_ids(None) is None and entity_ids("a") == ("a",) and entity_ids(["a", "b", "a"]) == ("a", "b")
    )
    with pytest.raises(FrameError, match="selects nothing"):
        entity_ids([])
    with pytest.raises(FrameError, match="token rule"):
        entity_ids(["a.b"])
