"""The broker and KV seams against a real nats-server: what a failed call raises is ours.

``broker/jetstream.py`` (the calls of workers, the consumer loop, commands, the stream watch) and
``kvstate.py`` (entity documents) translate nats-py's errors; the table itself is unit-tested in
``tests/unit/test_broker_seam.py``.
"""

from __future__ import annotations

import json

import nats.errors
import pytest
from nats.js.api import StreamConfig

from overwatch_lab.broker import jetstream
from overwatch_lab.broker.connect import connect
from overwatch_lab.broker.provision import open_kv, provision
from overwatch_lab.config import LabConfig
from overwatch_lab.errors import (
    BrokerConnectionClosed,
    BrokerNotFound,
    BrokerTimeout,
    BrokerUnavailable,
    KvConflictError,
    KvError,
)
from overwatch_lab.kvstate import EntityKV


async def test_missing_streams_consumers_and_messages_are_told_apart(nc, js):
    with pytest.raises(BrokerNotFound) as caught:
        await jetstream.consumer_info(js, "NOSUCH", "nobody", timeout_s=2.0)
    assert caught.value.err_code == 10059  # stream not found
    with pytest.raises(BrokerNotFound, match="NOSUCH"):
        await jetstream.api_request(nc, "$JS.API.STREAM.INFO.NOSUCH", 2.0)
    with pytest.raises(BrokerNotFound):
        await jetstream.next_stored(js, "NOSUCH", 1, ">")

    await js.add_stream(StreamConfig(name="SEAM", subjects=["seam.>"]))
    assert await jetstream.next_stored(js, "SEAM", 1, ">") is None  # an empty stream: None, not an error
    ack = await jetstream.js_publish(js, "seam.a", b"one", headers={"Nats-Msg-Id": "m1"})
    stored = await jetstream.next_stored(js, "SEAM", 1, ">")
    assert stored is not None and (stored.seq, stored.data) == (ack.seq, b"one")
    assert await jetstream.next_stored(js, "SEAM", ack.seq + 1, ">") is None
    resp = await jetstream.api_request(nc, "$JS.API.STREAM.INFO.SEAM", 2.0)
    assert resp["state"]["messages"] == 1


async def test_no_responders_and_no_answer_are_unavailable_and_timeout(nc, js):
    with pytest.raises(BrokerUnavailable):  # no stream captures the subject
        await jetstream.js_publish(js, "nobody.listens", b"x")

    async def silent(msg):  # receives the request and never answers it
        pass

    sub = await jetstream.subscribe(nc, "seam.silent", silent)
    try:
        with pytest.raises(BrokerTimeout) as caught:
            await jetstream.request(nc, "seam.silent", b"?", 0.2)
        assert isinstance(caught.value, TimeoutError)
        assert isinstance(caught.value.__cause__, nats.errors.TimeoutError)
    finally:
        await jetstream.unsubscribe(sub)


async def test_a_closed_connection_is_closed_for_every_call_of_the_seam(nats_server):
    client = await connect(nats_server.url, auth=nats_server.auth, name="pytest-closed")
    js = client.jetstream()
    await js.add_stream(StreamConfig(name="SEAM", subjects=["seam.>"]))
    await client.close()
    with pytest.raises(BrokerConnectionClosed):
        await jetstream.publish(client, "seam.a", b"x")
    with pytest.raises(BrokerConnectionClosed):
        await jetstream.flush(client, 1.0)
    with pytest.raises(BrokerConnectionClosed):
        await jetstream.subscribe(client, "seam.b", _ignore)
    with pytest.raises(BrokerConnectionClosed):
        await jetstream.js_publish(js, "seam.a", b"x")


async def test_a_kv_failure_is_a_kv_error_naming_the_key(nats_server, tmp_path):
    client = await connect(nats_server.url, auth=nats_server.auth, name="pytest-kv")
    js = client.jetstream()
    await provision(js, LabConfig(data_dir=tmp_path / "lab"))
    ekv = EntityKV(await open_kv(js))
    assert await ekv.read("e1") == (0, None)  # absent: not an error
    rev, _ = await ekv.mutate("e1", lambda d: {"n": 1})
    assert await ekv.read("e1") == (rev, {"n": 1})
    await client.close()
    for call in (ekv.read("e1"), ekv.mutate("e2", lambda d: {"n": 2}), ekv.delete("e1"), ekv.all()):
        with pytest.raises(KvError) as caught:
            await call
        assert isinstance(caught.value.__cause__, nats.errors.Error)
        assert not isinstance(caught.value, KvConflictError)
    with pytest.raises(KvError, match="'e1'"):
        await ekv.read("e1")


async def test_a_write_that_keeps_losing_its_race_is_a_conflict(nc, js, tmp_path):
    await provision(js, LabConfig(data_dir=tmp_path / "lab"))
    ekv = EntityKV(await open_kv(js), attempts=3)
    await ekv.kv.put("e1", json.dumps({"n": 0}).encode())

    async def racing_read(key, real=ekv.read):
        revision, doc = await real(key)
        await ekv.kv.put(key, json.dumps({"n": -1}).encode())  # lands between our read and our write
        return revision, doc

    ekv.read = racing_read  # type: ignore[method-assign]
    with pytest.raises(KvConflictError, match="after 3 attempts") as caught:
        await ekv.mutate("e1", lambda d: {"n": 99})
    assert isinstance(caught.value, KvError) and ekv.conflicts == 3
    assert (await real_read(ekv, "e1"))[1] == {"n": -1}  # the other writer's value stands


async def real_read(ekv: EntityKV, key: str):
    return await EntityKV.read(ekv, key)


async def _ignore(msg):
    pass
