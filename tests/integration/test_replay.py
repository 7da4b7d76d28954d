"""Replay against a real lab: windows re-read from JetStream, and re-published into labs."""

from __future__ import annotations

import subprocess
import sys
import time

import pandas as pd
import pytest

from overwatch_lab.errors import FrameError
from overwatch_lab.protocol import envelopes
from overwatch_lab.protocol import subjects as s
from overwatch_lab.replay import REPLAY_FRAME_DTYPES

ORG = "org-r"
ENTITIES = ("uav-1", "uav-2", "uav-3")


def batch(start: int, n: int, t0: float) -> list[tuple[str, bytes, str]]:
    """``n`` ATTITUDE envelopes over the entities in turn, time stamps rising per entity."""
    items = []
    for i in range(start, start + n):
        eid = ENTITIES[i % len(ENTITIES)]
        env = envelopes.make_telemetry(
            ORG, eid, "ATTITUDE", {"roll": 0.001 * i, "pitch": 0.0, "yaw": 0.0}, timestamp=t0 + i * 0.01
        )
        items.append((s.telemetry_subject(ORG, eid), envelopes.encode(env), str(env["message_uid"])))
    return items


def uids(items: list[tuple[str, bytes, str]]) -> list[str]:
    return [uid for _, _, uid in items]


@pytest.fixture
def fleet(lab):
    lab.register_org(ORG)
    lab.register_entities(
        [{"org_id": ORG, "entity_id": e, "entity_type": "aircraft_multirotor"} for e in ENTITIES]
    )
    return lab


def three_windows(lab) -> tuple[list, list, list, float, float]:
    """Publish before / inside / after a window; return the three batches and the window's ends.

    Each publish_many returns once the stream acknowledged every message, and the broker stamps
    a message when it stores it, so every message of `inside` is stored in [t1, t2).
    """
    t0 = time.time() - 3600  # device time stamps: an hour ago, unrelated to the stored times
    before, inside, after = batch(0, 30, t0), batch(30, 60, t0), batch(90, 30, t0)
    lab.publish_many(before)
    t1 = time.time()
    lab.publish_many(inside)
    t2 = time.time()
    lab.publish_many(after)
    return before, inside, after, t1, t2


def test_a_replay_frame_is_what_the_stream_stored_in_the_window(fleet):
    lab = fleet
    before, inside, after, t1, t2 = three_windows(lab)
    seen: list[tuple[str, int, int]] = []
    frame = lab.frames.replay_frame(t1, t2, progress=lambda *a: seen.append(a))
    assert list(frame["message_uid"]) == uids(inside)  # count, ids and stream order
    for eid in ENTITIES:  # and so each entity's order
        assert list(frame.loc[frame["entity_id"] == eid, "message_uid"]) == [
            u for (subj, _, u) in inside if subj.endswith(eid)
        ]
    assert seen[-1] == ("read", 60, 60)
    assert list(frame.columns) == list(REPLAY_FRAME_DTYPES)
    assert {c: str(t) for c, t in frame.dtypes.items()} == REPLAY_FRAME_DTYPES
    assert str(frame.index.tz) == "UTC" and frame.index.name == "time"
    first = envelopes.decode_telemetry(inside[0][1])
    assert frame.index[0] == pd.Timestamp(first.timestamp) and frame["timestamp"].iloc[0] == first.timestamp
    assert frame["data"].iloc[0] == first.data_json
    assert frame["stream_seq"].is_monotonic_increasing and frame["stream_seq"].iloc[0] == 31
    assert (frame["stored_at"] >= pd.Timestamp(t1, unit="s", tz="UTC")).all()
    assert frame.attrs["replay"]["skipped"] == 0

    # Window edges, to the stored nanosecond: since is inclusive, until exclusive.
    stored = frame["stored_at"]
    edge = lab.frames.replay_frame(stored.iloc[1], stored.iloc[4])
    assert list(edge["message_uid"]) == uids(inside)[1:4]
    # Open ends: from the stream's start; up to its last message when the read began.
    assert list(lab.frames.replay_frame(None, t1)["message_uid"]) == uids(before)
    assert list(lab.frames.replay_frame(t2)["message_uid"]) == uids(after)
    # Filters: one entity, several, an organisation.
    one = lab.frames.replay_frame(t1, t2, entity="uav-2")
    assert set(one["entity_id"]) == {"uav-2"} and len(one) == 20
    assert len(lab.frames.replay_frame(t1, t2, entity=["uav-1", "uav-3"])) == 40
    assert len(lab.frames.replay_frame(t1, t2, org=ORG)) == 60
    assert lab.frames.replay_frame(t1, t2, org="org-other").empty


def test_an_empty_window_is_an_empty_frame_and_start_after_end_an_error(fleet):
    lab = fleet
    _, _, _, t1, t2 = three_windows(lab)
    for since, until in ((t2 + 3600, t2 + 7200), (t1, t1)):
        empty = lab.frames.replay_frame(since, until)
        assert empty.empty and list(empty.columns) == list(REPLAY_FRAME_DTYPES)
        assert {c: str(t) for c, t in empty.dtypes.items()} == REPLAY_FRAME_DTYPES
        assert isinstance(empty.index, pd.DatetimeIndex) and str(empty.index.tz) == "UTC"
    with pytest.raises(FrameError, match="starts after it ends"):
        lab.frames.replay_frame(t2, t1)
    with pytest.raises(FrameError, match="starts after it ends"):
        lab.replay(t2, t1, speed=None)
    with pytest.raises(FrameError, match="not a time"):
        lab.frames.replay_frame("yesterday-ish", t2)
    with pytest.raises(FrameError, match="speed must be"):
        lab.replay(t1, t2, speed=0)
    with pytest.raises(FrameError, match="needs fresh_uids"):
        lab.replay(t1, t2, fresh_uids=False)
    assert lab.replay(t2 + 3600, t2 + 7200).published == 0  # nothing in the window: nothing sent


def test_republish_at_max_speed_adds_one_history_row_per_message_with_fresh_uids(fleet):
    lab = fleet
    _, inside, _, t1, t2 = three_windows(lab)
    lab.wait_for(lambda: len(lab.frames.telemetry()) == 120, what="the original 120 rows")
    result = lab.replay(t1, t2, speed=None)
    assert result.published == 60 and result.duplicates == 0 and result.uid_prefix is not None
    history = lab.wait_for(
        lambda: (f := lab.frames.telemetry()).shape[0] == 180 and f, timeout=20, what="60 new history rows"
    )
    new = history[history["message_uid"].str.startswith(result.uid_prefix)]
    assert len(new) == 60 and not set(new["message_uid"]) & set(uids(inside))
    assert not new["late"].any()  # shifted to now: newer than the live state, so applied
    original = history[history["message_uid"].isin(uids(inside))].sort_values("ts")
    assert list(new.sort_values("ts")["data"]) == list(original["data"])  # same series, same order
    gaps = new.sort_values("ts")["ts"].diff().dropna().to_numpy()
    assert gaps == pytest.approx(original["ts"].diff().dropna().to_numpy(), abs=2e-6)  # spacing kept
    assert new["ts"].min() == pytest.approx(original["ts"].min() + result.shift_s, abs=2e-6)
    assert result.shift_s > 3000  # the hour-old mission now starts now


def test_republish_at_10x_is_paced_by_the_stored_times(fleet):
    lab = fleet
    t0 = time.time()
    items = batch(0, 12, t0)
    t1 = time.time()
    for item in items:  # spread the window over ~1.1 s of stored time (the data, not a wait)
        lab.publish_many([item])
        time.sleep(0.1)
    frame = lab.frames.replay_frame(t1, None)
    span = (frame["stored_at"].iloc[-1] - frame["stored_at"].iloc[0]).total_seconds()
    assert len(frame) == 12 and span > 1.0
    result = lab.replay(t1, None, speed=10)
    assert result.published == 12 and result.span_s == pytest.approx(span, abs=1e-6)
    assert result.elapsed_s >= span / 10 - 0.005  # paced: never faster than a tenth of the span
    lab.wait_for(lambda: len(lab.frames.telemetry()) == 24, timeout=20, what="12 replayed rows")


def test_into_a_fresh_lab_with_unchanged_uids_registers_the_entities_first(lab_factory):
    source = lab_factory()
    source.register_org(ORG, "Org R", "ngo")
    source.register_entities(
        [{"org_id": ORG, "entity_id": e, "entity_type": "aircraft_multirotor"} for e in ENTITIES]
    )
    _, inside, _, t1, t2 = three_windows(source)
    fresh = lab_factory()
    result = source.replay(t1, t2, into=fresh, fresh_uids=False, keep_timestamps=True, speed=None)
    assert result.published == 60 and result.shift_s == 0.0 and result.uid_prefix is None
    history = fresh.wait_for(
        lambda: (f := fresh.frames.telemetry()).shape[0] == 60 and f, timeout=20, what="rows"
    )
    assert set(history["message_uid"]) == set(uids(inside))
    assert list(history["timestamp"]) == [envelopes.decode_telemetry(b).timestamp for _, b, _ in inside]
    assert sorted(fresh.frames.entities()["entity_id"]) == sorted(ENTITIES)
    assert fresh.stats()["telemetry-worker"]["quarantined"] == 0


@pytest.mark.slow  # three CLI processes, ~1.5 s of imports each
def test_cli_replay_republishes_into_the_running_lab(fleet):
    lab = fleet
    _, _, _, t1, t2 = three_windows(lab)
    lab.wait_for(lambda: len(lab.frames.telemetry()) == 120, what="the original rows")
    cli = [sys.executable, "-m", "overwatch_lab.cli", "replay", "--data-dir", str(lab.config.data_dir)]
    window = ["--since", pd.Timestamp(t1, unit="s", tz="UTC").isoformat(), "--until", str(t2)]
    refused = subprocess.run([*cli, *window], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "needs --fresh-uids" in refused.stderr
    backwards = subprocess.run(
        [*cli, "--since", str(t2), "--until", str(t1), "--fresh-uids"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert backwards.returncode == 2 and "starts after it ends" in backwards.stderr
    done = subprocess.run(
        [*cli, *window, "--speed", "max", "--fresh-uids"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "re-published 60 messages at max" in done.stdout
    lab.wait_for(lambda: len(lab.frames.telemetry()) == 180, timeout=20, what="60 replayed rows")
