"""A stream, consumer or KV bucket of the lab's own deleted on the broker during a run is noticed,
logged and recreated (or, when the broker refuses, the lab fails loudly)."""

from __future__ import annotations

import logging

import pytest

from overwatch_lab import LabState
from overwatch_lab.broker.connect import connect
from overwatch_lab.errors import ProvisionError
from overwatch_lab.protocol import subjects as s
from overwatch_lab.runtime import LoopThread

ORG = "org-rep"
EID = "rep-1"
REPAIR_LOGGER = "overwatch_lab.broker.repair"


def on_broker(lab, op):
    """Run ``op(js)`` on a connection of our own (an operator with the nats CLI, say)."""

    async def go():
        nc = await connect(lab.nats_url, auth=lab.nats_auth, name="operator")
        try:
            return await op(nc.jetstream())
        finally:
            await nc.close()

    thread = LoopThread("operator")
    try:
        return thread.call(go(), 30)
    finally:
        thread.close()


def warnings_about(caplog, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == REPAIR_LOGGER and r.levelno == logging.WARNING and text in r.getMessage()
    ]


def rows(lab) -> int:
    return lab.frames.telemetry(entity_id=EID).shape[0]


def test_a_deleted_consumer_and_kv_bucket_are_noticed_logged_and_recreated(lab_factory, caplog):
    caplog.set_level(logging.WARNING, logger=REPAIR_LOGGER)
    # No periodic check during the test: the symptoms alone must trigger the repair.
    lab = lab_factory(broker_check_period_s=600.0)
    lab.register_org(ORG)
    lab.register_entity(ORG, EID, "sensor_platform")
    lab.publish_telemetry(ORG, EID, "VFR_HUD", {"groundspeed": 1.0})
    lab.wait_for(lambda: rows(lab) == 1, what="first row")

    on_broker(lab, lambda js: js.delete_consumer(s.STREAM_TELEMETRY, s.CONSUMER_TELEMETRY))
    message = lab.wait_for(
        lambda: warnings_about(caplog, f"{s.STREAM_TELEMETRY}/{s.CONSUMER_TELEMETRY}"),
        timeout=10,
        what="a warning naming the recreated consumer",
    )[0]
    assert "disappeared" in message and "Consumer Deleted" in message and "deliver all" in message
    lab.publish_telemetry(ORG, EID, "VFR_HUD", {"groundspeed": 2.0})
    lab.wait_for(lambda: rows(lab) == 2, what="ingest resumed")
    info = on_broker(lab, lambda js: js.consumer_info(s.STREAM_TELEMETRY, s.CONSUMER_TELEMETRY))
    assert info.config.max_ack_pending == lab.config.max_ack_pending  # the lab's own config again
    assert rows(lab) == 2  # the replayed first message was not stored twice

    on_broker(lab, lambda js: js.delete_key_value(s.KV_GLOBAL_STATE))
    message = lab.wait_for(
        lambda: warnings_about(caplog, f"kv:{s.KV_GLOBAL_STATE}"),
        timeout=10,
        what="a warning naming the bucket",
    )[0]
    assert "sync pass failed" in message
    # The synchronizer rebuilt the entity's document in the new bucket; telemetry lands in it again.
    lab.wait_for(lambda: lab.state_of(EID) is not None, timeout=10, what="document rebuilt")
    lab.publish_telemetry(ORG, EID, "VFR_HUD", {"groundspeed": 3.0})
    lab.wait_for(
        lambda: (lab.state_of(EID) or {}).get("vfr", {}).get("groundspeed") == 3.0, what="live state"
    )

    on_broker(lab, lambda js: js.delete_stream(s.STREAM_EVENTS))  # its consumer goes with it
    message = lab.wait_for(
        lambda: warnings_about(caplog, f"{s.STREAM_EVENTS}/{s.CONSUMER_EVENT}"),
        timeout=10,
        what="stream back",
    )[0]
    assert f"re-provisioned {s.STREAM_EVENTS}, " in message and "a recreated stream starts empty" in message
    assert on_broker(lab, lambda js: js.stream_info(s.STREAM_EVENTS)).config.retention == "workqueue"
    stats = lab.stats()
    assert stats["provision"]["recreated"] >= 4 and lab.state is LabState.RUNNING
    assert stats["telemetry-worker"]["quarantined"] == 0


def test_a_consumer_the_broker_will_not_give_back_fails_the_lab(lab_factory):
    """The stream is limited to the consumers it has, then the lab's consumer is deleted."""
    lab = lab_factory(broker_check_period_s=600.0)

    async def take_over(js):
        await js.add_consumer(s.STREAM_TELEMETRY, durable_name="foreign", ack_policy="explicit")
        info = await js.stream_info(s.STREAM_TELEMETRY)
        await js.update_stream(info.config.evolve(max_consumers=1))  # no room for another one
        await js.delete_consumer(s.STREAM_TELEMETRY, s.CONSUMER_TELEMETRY)

    on_broker(lab, take_over)
    assert lab.ended().result(timeout=20) is LabState.FAILED
    assert isinstance(lab.failure, ProvisionError)
    assert f"consumer {s.CONSUMER_TELEMETRY} on stream {s.STREAM_TELEMETRY}" in str(lab.failure)
    with pytest.raises(ProvisionError, match="the lab failed"):
        lab.stats()


async def test_the_puller_backs_off_while_its_consumer_is_gone(nats_server, nc):
    """503 answers (no consumer) come back at once: the puller must not spin on them."""
    from overwatch_lab.workers.pull import GONE_BACKOFF_S, BatchPuller

    js = nc.jetstream()
    await js.add_stream(name="P", subjects=["p.>"])
    seen: list[str] = []
    puller = BatchPuller(nc, "P", "missing", on_gone=seen.append)
    await puller.start()
    try:
        sent_before = nc.stats["out_msgs"]
        assert await puller.fetch(10, 1.0) == []
        requests = nc.stats["out_msgs"] - sent_before
        assert seen and seen[0].startswith("503")
        assert requests <= 1.0 / GONE_BACKOFF_S + 2, f"{requests} pull requests in 1 s"
        await js.add_consumer("P", durable_name="missing", ack_policy="explicit")
        await js.publish("p.x", b"back")
        msgs = await puller.fetch(10, 3.0)
        assert [m.data for m in msgs] == [b"back"]
    finally:
        await puller.stop()
