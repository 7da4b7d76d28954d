"""consumer_progress against a real nats-server: ack floor and the time before which all is acked."""

from __future__ import annotations

import time

import pytest

from overwatch_lab.broker.provision import provision
from overwatch_lab.config import LabConfig
from overwatch_lab.errors import BrokerError
from overwatch_lab.protocol import subjects as s
from overwatch_lab.workers.progress import consumer_progress

SUBJECT = s.entity_subject("org-a", "created")


async def test_progress_follows_the_acknowledgements(js, tmp_path):
    await provision(js, LabConfig(data_dir=tmp_path / "lab"))
    idle = await consumer_progress(js, s.STREAM_ENTITIES, s.CONSUMER_ENTITY)
    assert idle.idle and idle.ack_floor == 0 and idle.horizon <= time.time()

    acks = [await js.publish(SUBJECT, f"event {k}".encode()) for k in range(3)]
    sub = await js.pull_subscribe_bind(s.CONSUMER_ENTITY, s.STREAM_ENTITIES)
    msgs = await sub.fetch(3, timeout=2)
    await msgs[0].ack_sync()
    behind = await consumer_progress(js, s.STREAM_ENTITIES, s.CONSUMER_ENTITY)
    assert not behind.idle and behind.ack_floor == acks[0].seq
    # every message stored before the first unacknowledged one (the second) is acknowledged
    # (the same stored instant through two conversions that each truncate to µs and round a float
    # near 1.8e9 s, where one float step is 0.24 µs: equal within 2 µs, seen 1.0000x µs apart)
    second = msgs[1].metadata.timestamp.timestamp()
    assert abs(behind.horizon - second) <= 2e-6

    await msgs[2].ack_sync()  # acked out of order: the floor stays at the first
    assert (await consumer_progress(js, s.STREAM_ENTITIES, s.CONSUMER_ENTITY)).ack_floor == acks[0].seq
    await msgs[1].ack_sync()
    before = time.time()
    done = await consumer_progress(js, s.STREAM_ENTITIES, s.CONSUMER_ENTITY)
    assert done.idle and done.ack_floor == acks[2].seq and done.horizon >= before


async def test_a_missing_consumer_is_a_broker_error(js, tmp_path):
    await provision(js, LabConfig(data_dir=tmp_path / "lab"))
    with pytest.raises(BrokerError, match="progress of consumer"):
        await consumer_progress(js, s.STREAM_ENTITIES, "no-such-consumer")
