"""The watcher-backed KV cache against a real broker: replay, order, versions, re-watches."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest

from overwatch_lab.broker.provision import open_kv, provision
from overwatch_lab.config import LabConfig
from overwatch_lab.errors import KvError
from overwatch_lab.kvcache import KVCache
from overwatch_lab.protocol import subjects as s

pytest_plugins = ["tests.lab_fixtures"]


def doc(eid: str, n: int) -> bytes:
    return json.dumps({"entity_id": eid, "n": n}).encode()


@pytest.fixture
async def kv(js, tmp_path):
    await provision(js, LabConfig(data_dir=tmp_path / "lab"))
    return await open_kv(js)


async def _running(cache: KVCache, tg: asyncio.TaskGroup) -> asyncio.Task[None]:
    ready = asyncio.Event()
    task = tg.create_task(cache.run(ready), name="kv-cache-under-test")
    async with asyncio.timeout(5):
        await ready.wait()
    return task


async def test_the_replay_applies_deletes_then_puts_and_deletes_arrive_in_order(kv, js, nc):
    for k in range(3):
        await kv.put(f"e{k}", doc(f"e{k}", 0))
    await kv.put("e0", doc("e0", 1))
    await kv.delete("e2")
    cache = KVCache(kv, js, nc, check_period_s=0.2)
    assert not cache.ready and cache.docs() == {}
    async with asyncio.TaskGroup() as tg:
        task = await _running(cache, tg)
        assert cache.ready and cache.healthy
        assert cache.docs() == {"e0": {"entity_id": "e0", "n": 1}, "e1": {"entity_id": "e1", "n": 0}}
        v0 = cache.version
        for n in range(2, 12):  # ten writes of one key, then a delete of another, then a re-create
            await kv.put("e0", doc("e0", n))
        await kv.delete("e1")
        rev = await kv.put("e2", doc("e2", 5))
        await cache.caught_up()  # read-your-writes: everything acked above is in
        assert cache.get("e0") is not None and cache.get("e0")[1]["n"] == 11  # the last one wins
        assert cache.get("e1") is None and cache.get("e2") == (rev, {"entity_id": "e2", "n": 5})
        assert cache.version == v0 + 12  # one version per change, in order
        ch = cache.changes_since(v0)
        assert not ch.full and ch.version == cache.version
        assert set(ch.changed) == {"e0", "e2"} and ch.deleted == frozenset({"e1"})
        assert cache.changes_since(cache.version).changed == {}
        assert cache.changes_since(0).full and set(cache.changes_since(0).changed) == {"e0", "e2"}
        stats = cache.snapshot()
        assert stats["updates"] == 11 and stats["deletes"] == 1 and stats["keys"] == 2
        cache.request_stop()
    assert task.done()


async def test_a_recreated_bucket_is_replayed_and_the_vanished_keys_reported(kv, js, nc, tmp_path):
    for k in range(5):
        await kv.put(f"e{k}", doc(f"e{k}", 0))
    cache = KVCache(kv, js, nc, check_period_s=0.2)
    async with asyncio.TaskGroup() as tg:
        await _running(cache, tg)
        v = cache.version
        await js.delete_key_value(s.KV_GLOBAL_STATE)
        with pytest.raises(KvError, match="stream info"):
            await cache.caught_up()  # the bucket is gone: a reader hears it, the picture stays
        assert len(cache.docs()) == 5
        await provision(js, LabConfig(data_dir=tmp_path / "lab"))
        await kv.put("e9", doc("e9", 1))
        await cache.caught_up()
        assert set(cache.docs()) == {"e9"}
        ch = cache.changes_since(v)
        assert set(ch.changed) == {"e9"} and ch.deleted == {f"e{k}" for k in range(5)}
        assert cache.snapshot()["rewatches"] == 1
        cache.request_stop()


async def test_documents_that_are_not_json_objects_are_counted_and_left_out(kv, js, nc):
    await kv.put("good", doc("good", 1))
    await kv.put("bad", b"not json")
    cache = KVCache(kv, js, nc)
    async with asyncio.TaskGroup() as tg:
        await _running(cache, tg)
        assert set(cache.docs()) == {"good"} and cache.get("bad") is None
        assert cache.snapshot()["undecodable"] == 1
        cache.request_stop()


def test_a_broker_restart_rewatches_without_ever_showing_a_partial_picture(lab_factory):
    """The supervisor restarts a SIGKILLed broker; the cache re-replays into a picture of its own
    and swaps it in, so a reader sampling it all along never sees fewer documents than there are."""
    lab = lab_factory()
    lab.register_org("org-c")
    eids = [f"c-{k}" for k in range(40)]
    lab.register_entities([{"org_id": "org-c", "entity_id": e, "entity_type": "sensor_platform"} for e in eids])
    cache = lab._core.kv_cache
    samples: list[int] = []
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            samples.append(len(cache.entries()))
            await asyncio.sleep(0.001)

    sampling = lab.submit(sample())
    try:
        os.kill(lab._core.server.pid, signal.SIGKILL)
        lab.wait_for(lambda: lab.stats()["broker"]["restarts"] == 1, timeout=20, what="broker restarted")
        lab.wait_for(lambda: lab.stats()["kv_cache"]["rewatches"] >= 1, timeout=10, what="a re-watch")
    finally:
        lab.call(_set(stop))
        sampling.result(5)
    assert len(samples) > 100 and min(samples) == len(eids)
    lab.publish_telemetry("org-c", "c-3", "VFR_HUD", {"groundspeed": 7.0})
    lab.wait_for(
        lambda: lab.frames.states().loc["c-3"].get("vfr.groundspeed") == 7.0, timeout=10, what="live again"
    )
    assert lab.stats()["kv_cache"]["healthy"]


async def _set(event: asyncio.Event) -> None:
    event.set()


async def test_a_reader_waiting_for_a_stopped_cache_gets_an_error(kv, js, nc):
    cache = KVCache(kv, js, nc)
    with pytest.raises(KvError, match="did not catch up"):
        await cache.caught_up(timeout_s=0.2)  # never started: no watch to catch up with
    assert not cache.ready and not cache.healthy
