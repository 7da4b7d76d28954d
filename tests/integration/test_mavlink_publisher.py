"""The bridge's publisher against a real nats-server: acked, bounded in flight, resent, given up.

A stream captures ``t.>``; nothing captures ``nowhere.>`` (the server answers "no responders"
to those publishes' reply subjects, as it does when the lab's stream is missing).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS

from overwatch_lab.mavlink.publisher import Publisher
from tests.polling import wait_for


@pytest.fixture
async def stream(nc: NATS) -> str:
    js = nc.jetstream()
    await js.add_stream(name="T", subjects=["t.>"], duplicate_window=60)
    return "T"


@contextlib.asynccontextmanager
async def running(publisher: Publisher) -> AsyncIterator[Publisher]:
    task = asyncio.get_running_loop().create_task(publisher.run(), name="test-publisher")
    try:
        yield publisher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_every_message_is_acked_with_a_bounded_window_and_deduplicated(nc, stream):
    p = Publisher(nc, max_inflight=16, batch=5, queue_size=64)
    async with running(p):
        for i in range(500):
            await p.put((f"t.e{i % 7}", b'{"n": %d}' % i, f"m-{i}"))  # waits for room: 64 queued at most
        await p.put(("t.e0", b"again", "m-3"))  # the same Nats-Msg-Id: acked, stored once
        async with asyncio.timeout(10):
            await p.drained()
    st = p.stats.snapshot()
    assert st["acked"] == 501 and st["failed"] == 0 and st["resent"] == 0
    assert 0 < st["inflight_peak"] <= 16 and st["queue_peak"] <= 64
    info = await nc.jetstream().stream_info(stream)
    assert info.state.messages == 500


async def test_a_refused_message_is_resent_then_given_up_and_the_rest_still_go(nc, stream):
    p = Publisher(nc, attempts=3, ack_timeout_s=2.0)
    async with running(p):
        assert p.offer(("nowhere.x", b"{}", "lost-1"))
        assert p.offer(("t.ok", b"{}", "ok-1"))
        async with asyncio.timeout(10):
            await p.drained()
        assert p.pending == 0
    st = p.stats.snapshot()
    assert st["acked"] == 1 and st["resent"] == 2 and st["failed"] == 1


async def test_a_full_queue_drops_what_is_offered_and_counts_it(nc, stream):
    p = Publisher(nc, queue_size=3)  # not running: nothing leaves the queue
    assert [p.offer(("t.q", b"{}", f"q-{i}")) for i in range(5)] == [True, True, True, False, False]
    assert p.stats.dropped_full == 2 and p.pending == 3
    async with running(p):
        await wait_for(lambda: p.stats.acked == 3, what="the 3 queued messages acked")


async def test_a_message_without_a_puback_is_resent_after_the_timeout_then_given_up(nc, stream):
    silent = await nc.subscribe("silent.>")  # takes the message, never answers: no PubAck comes
    try:
        p = Publisher(nc, attempts=2, ack_timeout_s=0.3)
        async with running(p):
            p.offer(("silent.x", b"{}", "s-1"))
            p.offer(("t.ok", b"{}", "ok-2"))
            async with asyncio.timeout(5):
                await p.drained()
        st = p.stats.snapshot()
        assert st["acked"] == 1 and st["resent"] == 1 and st["failed"] == 1
        assert (await silent.next_msg(timeout=1)).headers == {"Nats-Msg-Id": "s-1"}  # sent twice
        assert (await silent.next_msg(timeout=1)).headers == {"Nats-Msg-Id": "s-1"}
    finally:
        await silent.unsubscribe()
