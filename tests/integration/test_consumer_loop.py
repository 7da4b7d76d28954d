"""ConsumerLoop settling against a real nats-server: ACK, RETRY, POISON and HOLD.

The worker is a small fake whose results the test scripts (the loop is what is under test);
the stream, the durable consumer and the quarantine stream are real JetStream.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from overwatch_lab.broker.provision import consumer_config, stream_config
from overwatch_lab.config import DEFAULT_STREAMS, LabConfig, StreamLimits
from overwatch_lab.errors import DatabaseUnavailable
from overwatch_lab.protocol import subjects as s
from overwatch_lab.workers.base import ACK, ConsumerLoop, Result, Worker, defer, hold, poison, retry
from tests.polling import wait_for

STREAM = "LOOP_TEST"
DURABLE = "loop-processor"
SUBJECT = "loop.test"

Script = Callable[[int, list[Msg]], list[Result]]


class ScriptedWorker(Worker):
    """Returns what ``script(call_number, msgs)`` says (or raises what it raises); records every call."""

    name = "scripted-worker"
    stream = STREAM
    durable = DURABLE

    def __init__(self, script: Script) -> None:
        super().__init__()
        self.script = script
        self.calls: list[list[tuple[int, int]]] = []  # per call: (stream seq, num_delivered)

    async def handle_batch(self, msgs: list[Msg]) -> list[Result]:
        self.calls.append([(m.metadata.sequence.stream, m.metadata.num_delivered) for m in msgs])
        return self.script(len(self.calls), msgs)

    def deliveries(self) -> set[int]:
        return {n for call in self.calls for _, n in call}


def config(tmp_path: Path, **overrides) -> LabConfig:
    values = {
        "data_dir": tmp_path / "lab",
        "fetch_batch": 5,
        "fetch_timeout_s": 0.2,
        "retry_delay_s": 0.05,
        "hold_backoff_initial_s": 0.02,
        "hold_backoff_max_s": 0.1,
        **overrides,
    }
    return LabConfig(**values)


async def make_stream(js: JetStreamContext, cfg: LabConfig, *, quarantine: bool = True) -> None:
    limits = StreamLimits((f"{SUBJECT}.>",), "limits", 10_000, 16 * 1024 * 1024, 3600, 64 * 1024, 60)
    await js.add_stream(stream_config(STREAM, limits))
    await js.add_consumer(STREAM, consumer_config(DURABLE, f"{SUBJECT}.>", cfg))
    if quarantine:
        await add_quarantine(js)


async def add_quarantine(js: JetStreamContext) -> None:
    await js.add_stream(stream_config(s.STREAM_QUARANTINE, DEFAULT_STREAMS[s.STREAM_QUARANTINE]))


async def publish(js: JetStreamContext, n: int) -> None:
    for i in range(n):
        await js.publish(f"{SUBJECT}.m{i}", f"message {i}".encode())


@contextlib.asynccontextmanager
async def running(loop: ConsumerLoop) -> AsyncIterator[asyncio.Task[None]]:
    ready = asyncio.Event()
    task = asyncio.create_task(loop.run(ready), name="loop-under-test")
    try:
        async with asyncio.timeout(5):
            await ready.wait()
        yield task
    finally:
        loop.request_stop()
        async with asyncio.timeout(10):
            await task


async def quarantine_records(js: JetStreamContext) -> list[dict]:
    psub = await js.pull_subscribe(s.QUARANTINE_ALL, stream=s.STREAM_QUARANTINE)
    try:
        msgs = await psub.fetch(100, timeout=1.0)
    finally:
        await psub.unsubscribe()
    return [json.loads(m.data) for m in msgs]


async def consumer(js: JetStreamContext):
    return await js.consumer_info(STREAM, DURABLE)


async def test_ack_settles_every_message(tmp_path, js, nc):
    cfg = config(tmp_path)
    await make_stream(js, cfg)
    await publish(js, 12)
    worker = ScriptedWorker(lambda _, msgs: [ACK] * len(msgs))
    async with running(ConsumerLoop(worker, nc, js, cfg)):
        await wait_for(lambda: worker.stats.acked == 12, what="12 acked")
        info = await wait_for(lambda: _acked_through(js, 12), what="the server saw every ack")
    assert info.num_pending == 0 and info.num_redelivered == 0
    st = worker.stats
    assert (st.handled, st.retried, st.quarantined, st.holds) == (12, 0, 0, 0)
    assert st.peak_batch_size <= cfg.fetch_batch


async def _acked_through(js: JetStreamContext, seq: int):
    info = await consumer(js)
    return info if info.ack_floor.stream_seq == seq and info.num_ack_pending == 0 else None


async def test_retry_naks_then_quarantines_on_the_configured_delivery(tmp_path, js, nc):
    cfg = config(tmp_path)
    await make_stream(js, cfg)
    await publish(js, 1)
    worker = ScriptedWorker(lambda _, msgs: [retry("flaky downstream")] * len(msgs))
    async with running(ConsumerLoop(worker, nc, js, cfg)):
        await wait_for(lambda: worker.stats.quarantined == 1, what="quarantined")
        await wait_for(lambda: _acked_through(js, 1), what="terminated")
    assert [call[0][1] for call in worker.calls] == [1, 2, 3]  # quarantine_after = 3
    assert worker.stats.retried == 2
    (record,) = await quarantine_records(js)
    assert record["error"] == "failed on delivery 3: flaky downstream"
    assert record["num_delivered"] == 3 and record["stream_sequence"] == 1
    assert base64.b64decode(record["original_data"]) == b"message 0"
    assert record["source_stream"] == STREAM and record["source_consumer"] == DURABLE


async def test_poison_is_quarantined_at_once(tmp_path, js, nc):
    cfg = config(tmp_path)
    await make_stream(js, cfg)
    await publish(js, 2)
    worker = ScriptedWorker(
        lambda _, msgs: [poison("bad envelope") if m.data == b"message 0" else ACK for m in msgs]
    )
    async with running(ConsumerLoop(worker, nc, js, cfg)):
        await wait_for(lambda: worker.stats.quarantined == 1 and worker.stats.acked == 1, what="settled")
        await wait_for(lambda: _acked_through(js, 2), what="server settled")
    (record,) = await quarantine_records(js)
    assert record["error"] == "bad envelope" and record["num_delivered"] == 1
    assert worker.stats.retried == 0 and len(worker.calls) == 1


async def test_hold_keeps_messages_unacked_stops_fetching_and_resumes_without_redelivery(tmp_path, js, nc):
    cfg = config(tmp_path)
    await make_stream(js, cfg)
    await publish(js, 12)
    cleared = asyncio.Event()

    def script(_: int, msgs: list[Msg]) -> list[Result]:
        return [ACK] * len(msgs) if cleared.is_set() else [hold("database or disk is full")] * len(msgs)

    worker = ScriptedWorker(script)
    st = worker.stats
    async with running(ConsumerLoop(worker, nc, js, cfg)):
        await wait_for(lambda: st.hold_attempts >= 3, what="several attempts while holding")
        assert st.holding and st.hold_reason == "database or disk is full" and st.holds == 1
        # The first batch (5) and the prefetch in flight (5) are held, in stream order; the
        # last 2 messages stay in the stream: nothing more is fetched while holding.
        assert [seq for seq, _ in worker.calls[1]] == list(range(1, 11))
        assert st.held == 10
        info = await consumer(js)
        assert info.num_ack_pending == 10 and info.num_pending == 2
        assert (st.acked, st.retried, st.quarantined, st.handled) == (0, 0, 0, 0)
        cleared.set()
        await wait_for(lambda: st.acked == 12, what="all acked after the fault cleared")
        info = await wait_for(lambda: _acked_through(js, 12), what="server settled")
    assert not st.holding and st.held == 0 and st.holds == 1 and st.last_hold_s > 0
    assert worker.deliveries() == {1}  # never redelivered: a hold burns no delivery
    assert info.delivered.consumer_seq == 12  # one delivery per message, ever
    assert st.quarantined == 0 and st.retried == 0


@pytest.mark.slow
async def test_a_hold_longer_than_ack_wait_is_never_redelivered(tmp_path, js, nc):
    cfg = config(tmp_path, ack_wait_s=1.0)
    await make_stream(js, cfg)
    await publish(js, 8)
    cleared = asyncio.Event()

    def script(_: int, msgs: list[Msg]) -> list[Result]:
        return [ACK] * len(msgs) if cleared.is_set() else [hold("database is locked")] * len(msgs)

    worker = ScriptedWorker(script)
    st = worker.stats
    loop = ConsumerLoop(worker, nc, js, cfg)
    assert loop.progress_every_s == pytest.approx(1 / 3)
    async with running(loop):
        await wait_for(lambda: st.holding, what="holding")
        await wait_for(lambda: time.time() - st.hold_since >= 3.5, timeout=6, what="3.5 ack waits of hold")
        info = await consumer(js)
        assert info.num_redelivered == 0 and info.delivered.consumer_seq == info.delivered.stream_seq
        cleared.set()
        await wait_for(lambda: st.acked == 8, what="all acked")
    assert worker.deliveries() == {1}
    assert (await consumer(js)).delivered.consumer_seq == 8


@pytest.mark.slow
async def test_a_batch_handled_longer_than_ack_wait_is_kept_in_progress(tmp_path, js, nc):
    cfg = config(tmp_path, ack_wait_s=1.0)
    await make_stream(js, cfg)
    await publish(js, 3)
    release = asyncio.Event()
    started: list[float] = []

    class SlowWorker(ScriptedWorker):
        async def handle_batch(self, msgs: list[Msg]) -> list[Result]:
            started.append(time.monotonic())
            await release.wait()  # a DB call that takes long (e.g. waiting on a lock)
            return await super().handle_batch(msgs)

    worker = SlowWorker(lambda _, msgs: [ACK] * len(msgs))
    async with running(ConsumerLoop(worker, nc, js, cfg)):
        await wait_for(
            lambda: started and time.monotonic() - started[0] >= 3.0, timeout=6, what="3 s in a batch"
        )
        info = await consumer(js)
        assert info.num_redelivered == 0 and info.delivered.consumer_seq == 3
        release.set()
        await wait_for(lambda: worker.stats.acked == 3, what="acked")
    assert worker.deliveries() == {1}


@pytest.mark.slow
async def test_a_deferred_message_waits_in_progress_while_the_rest_flows(tmp_path, js, nc):
    """A registration race: the message is carried from batch to batch, unacked and in progress
    (ack_wait 1 s, deferred for 2.5 s: never redelivered), while fetching goes on; no alarm."""
    cfg = config(tmp_path, ack_wait_s=1.0)
    await make_stream(js, cfg)
    await publish(js, 3)
    registered = asyncio.Event()
    first_seen: list[float] = []

    def script(_: int, msgs: list[Msg]) -> list[Result]:
        out = []
        for m in msgs:
            if m.data == b"message 0" and not registered.is_set():
                first_seen[:] = first_seen or [time.monotonic()]
                out.append(defer("unknown entity 'e1': its registration is in flight"))
            else:
                out.append(ACK)
        return out

    worker = ScriptedWorker(script)
    st = worker.stats
    async with running(ConsumerLoop(worker, nc, js, cfg)):
        await wait_for(lambda: st.acked == 2 and st.deferred == 1, what="the others acked")
        await js.publish(f"{SUBJECT}.late", b"message 3")  # fetching goes on meanwhile
        await wait_for(lambda: st.acked == 3, what="a message published later")
        await wait_for(lambda: time.monotonic() - first_seen[0] >= 2.5, timeout=5, what="2.5 ack waits")
        assert not st.holding and st.holds == 0 and st.deferred == 1
        info = await consumer(js)
        assert info.num_redelivered == 0 and info.num_ack_pending == 1
        registered.set()
        await wait_for(lambda: st.acked == 4 and st.deferred == 0, what="applied once registered")
    assert worker.deliveries() == {1}
    assert st.retried == 0 and st.quarantined == 0
    assert (await consumer(js)).delivered.consumer_seq == 4


async def test_a_batch_raising_database_unavailable_is_held_not_retried(tmp_path, js, nc):
    cfg = config(tmp_path)
    await make_stream(js, cfg)
    await publish(js, 3)

    def script(call: int, msgs: list[Msg]) -> list[Result]:
        if call <= 2:
            raise DatabaseUnavailable("insert failed on overwatch.db: attempt to write a readonly database")
        return [ACK] * len(msgs)

    worker = ScriptedWorker(script)
    async with running(ConsumerLoop(worker, nc, js, cfg)):
        await wait_for(lambda: worker.stats.acked == 3, what="acked once the fault cleared")
    st = worker.stats
    assert st.holds == 1 and st.retried == 0 and not st.holding
    assert "readonly" in st.hold_reason
    assert worker.deliveries() == {1}


async def test_any_other_batch_exception_retries_every_message(tmp_path, js, nc):
    cfg = config(tmp_path)
    await make_stream(js, cfg)
    await publish(js, 2)

    def script(call: int, msgs: list[Msg]) -> list[Result]:
        if call == 1:
            raise ValueError("a bug in the worker")
        return [ACK] * len(msgs)

    worker = ScriptedWorker(script)
    async with running(ConsumerLoop(worker, nc, js, cfg)):
        await wait_for(lambda: worker.stats.acked == 2, what="acked on redelivery")
    st = worker.stats
    assert st.retried == 2 and st.holds == 0
    assert [n for call in worker.calls[1:] for _, n in call] == [2, 2]  # NAKed and redelivered
    assert "ValueError: a bug in the worker" in st.last_error


async def test_a_failed_quarantine_publish_holds_until_the_broker_takes_it(tmp_path, js, nc):
    cfg = config(tmp_path)
    await make_stream(js, cfg, quarantine=False)  # no stream captures constellation.quarantine.>
    await publish(js, 1)
    worker = ScriptedWorker(lambda _, msgs: [poison("unknown entity 'x'")] * len(msgs))
    st = worker.stats
    async with running(ConsumerLoop(worker, nc, js, cfg)):
        await wait_for(lambda: st.holding and st.hold_attempts >= 2, what="held while quarantine fails")
        assert "quarantine publish failed" in st.hold_reason
        assert st.quarantined == 0 and st.retried == 0
        await add_quarantine(js)
        await wait_for(lambda: st.quarantined == 1 and not st.holding, what="quarantined once possible")
        await wait_for(lambda: _acked_through(js, 1), what="terminated")
    assert worker.deliveries() == {1}
    (record,) = await quarantine_records(js)
    assert record["error"] == "unknown entity 'x'" and record["num_delivered"] == 1


async def test_stop_while_holding_releases_the_messages_at_once(tmp_path, js, nc):
    cfg = config(tmp_path)  # ack_wait 30 s: only the release makes redelivery immediate
    await make_stream(js, cfg)
    await publish(js, 4)
    worker = ScriptedWorker(lambda _, msgs: [hold("libSQL server unreachable")] * len(msgs))
    loop = ConsumerLoop(worker, nc, js, cfg)
    async with running(loop) as task:
        await wait_for(lambda: worker.stats.holding, what="holding")
        loop.request_stop()
        async with asyncio.timeout(2):  # the backoff wait ends at once
            await task
    assert not worker.stats.holding
    after = ScriptedWorker(lambda _, msgs: [ACK] * len(msgs))
    async with running(ConsumerLoop(after, nc, js, cfg)):
        await wait_for(lambda: after.stats.acked == 4, timeout=5, what="redelivered well before ack_wait")
    assert after.deliveries() == {2}


async def test_the_next_batch_is_prepared_while_this_one_is_handled(tmp_path, js, nc):
    cfg = config(tmp_path)
    await make_stream(js, cfg)
    await publish(js, 5)
    prepared: list[int] = []
    next_prepared = asyncio.Event()
    seen_unprepared: list[int] = []

    class Preparing(ScriptedWorker):
        async def prepare(self, msgs: list[Msg]) -> None:
            prepared.extend(m.metadata.sequence.stream for m in msgs)
            if len(prepared) > 5:
                next_prepared.set()

        async def handle_batch(self, msgs: list[Msg]) -> list[Result]:
            seen_unprepared.extend(
                m.metadata.sequence.stream for m in msgs if m.metadata.sequence.stream not in prepared
            )
            if not self.calls:  # the first batch: the next one arrives and is prepared meanwhile
                for i in range(5, 10):
                    await js.publish(f"{SUBJECT}.m{i}", b"next")
                async with asyncio.timeout(5):
                    await next_prepared.wait()
            return await super().handle_batch(msgs)

    worker = Preparing(lambda _, msgs: [ACK] * len(msgs))
    async with running(ConsumerLoop(worker, nc, js, cfg)):
        await wait_for(lambda: worker.stats.acked == 10, what="10 acked")
    assert sorted(prepared) == list(range(1, 11)) and seen_unprepared == []
    assert worker.calls[0] == [(seq, 1) for seq in range(1, 6)]


async def test_what_arrives_during_a_batch_is_the_next_batch_whole(tmp_path, js, nc):
    # The fetch in flight collects every delivery until the batch being handled is done: the
    # messages published meanwhile are handled together next, not a first one alone and then
    # the rest (a message would wait for two batches).
    cfg = config(tmp_path)
    await make_stream(js, cfg)
    await publish(js, 1)
    release = asyncio.Event()

    class Gated(ScriptedWorker):
        async def handle_batch(self, msgs: list[Msg]) -> list[Result]:
            if not self.calls:
                await release.wait()
            return await super().handle_batch(msgs)

    worker = Gated(lambda _, msgs: [ACK] * len(msgs))
    async with running(ConsumerLoop(worker, nc, js, cfg)):
        await wait_for(lambda: _delivered(js, 1), what="the first one delivered")
        for i in range(1, 5):
            await js.publish(f"{SUBJECT}.m{i}", b"meanwhile")
        await wait_for(lambda: _delivered(js, 5), what="the other 4 delivered while the first is handled")
        release.set()
        await wait_for(lambda: worker.stats.acked == 5, what="5 acked")
    assert [[seq for seq, _ in call] for call in worker.calls] == [[1], [2, 3, 4, 5]]


async def _delivered(js: JetStreamContext, n: int) -> bool:
    info = await consumer(js)
    return info.delivered.consumer_seq == n
