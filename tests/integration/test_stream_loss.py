"""Overload is never silent: what a stream discards before the lab saw it is counted exactly.

The truth comes from the publisher's PubAcks (stream sequences) and the history rows the lab
stored: every acknowledged message either has its row or was discarded by the stream.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from overwatch_lab import LabConfig
from overwatch_lab.broker.connect import connect
from overwatch_lab.broker.process import NatsServer
from overwatch_lab.broker.provision import stream_config
from overwatch_lab.nats_auth import NatsAuth
from overwatch_lab.protocol import envelopes
from overwatch_lab.protocol import subjects as s
from tests.polling import wait_for

ORG, EID = "org-loss", "uav-1"
TEL = s.STREAM_TELEMETRY


def _limits(**tel: int) -> dict:
    return {"streams": LabConfig().with_stream_limits(TEL, **tel).streams}


async def _publish(
    url: str, auth: NatsAuth, n: int, start: int = 0, entities: tuple[str, ...] = (EID,)
) -> dict[str, int]:
    """Publish ``n`` valid ATTITUDE envelopes (time strictly increasing; round-robin over
    ``entities``); returns uid -> PubAck seq."""
    nc = await connect(url, auth=auth, name="pytest-publisher")
    t0 = time.time() - 600
    try:
        js = nc.jetstream()
        futures = []
        for i in range(start, start + n):
            eid = entities[i % len(entities)]
            env = envelopes.make_telemetry(ORG, eid, "ATTITUDE", {"roll": 0.1, "pitch": 0.0, "yaw": 1.0},
                                           timestamp=t0 + i * 0.001, message_uid=f"m{i:06d}")  # fmt: skip
            futures.append(
                (env["message_uid"], await js.publish_async(
                    s.telemetry_subject(ORG, eid), envelopes.encode(env),
                    headers={"Nats-Msg-Id": env["message_uid"]},
                ))
            )  # fmt: skip
        await js.publish_async_completed()
        return {uid: (await fut).seq for uid, fut in futures}
    finally:
        await nc.close()


def _stored_uids(lab, entity_id: str | None = EID) -> set[str]:
    if entity_id is None:
        return set(lab.frames.telemetry(org_id=ORG)["message_uid"])
    return set(lab.frames.telemetry(entity_id=entity_id)["message_uid"])


async def _settled(lab, after: float, within_s: float = 20.0) -> dict:
    """The telemetry stream's counters once a pass begun after ``after`` saw the consumer idle."""

    def idle() -> dict | None:
        st = lab.stats()["streams"][TEL]
        ok = st["checked_at"] > after and st["lag"] == 0 and st["unconfirmed"] == 0
        return st if ok else None

    return await wait_for(idle, timeout=within_s, interval=0.05, what="telemetry consumer idle")


async def test_messages_discarded_while_the_lab_was_down_are_counted_exactly(lab_factory, tmp_path: Path):
    data = tmp_path / "lab"
    lab = lab_factory(data_dir=data, **_limits(max_msgs=200))
    lab.register_org(ORG)
    lab.register_entity(ORG, EID, "aircraft_multirotor")
    lab.down()

    server = NatsServer(data / "broker", ready_timeout_s=10.0, stop_timeout_s=5.0)  # the lab is down
    await server.start()
    try:
        acks = await _publish(server.url, server.auth, 1000)
    finally:
        await server.stop()
    assert len(set(acks.values())) == 1000

    lab = lab_factory(data_dir=data, **_limits(max_msgs=200))
    assert lab.stats()["streams"][TEL]["discarded"] == 800  # the boot pass, before any worker ran
    st = await _settled(lab, time.time())
    stored = _stored_uids(lab)
    assert stored == {uid for uid, seq in acks.items() if seq > max(acks.values()) - 200}
    assert st["discarded"] == len(acks) - len(stored) == 800 and st["lost"] == 800


async def test_a_new_durable_does_not_count_what_the_stream_lost_before_it_existed(lab_factory, tmp_path):
    data = tmp_path / "lab"
    cfg = LabConfig(data_dir=data, **_limits(max_msgs=100))
    server = NatsServer(data / "broker", ready_timeout_s=10.0, stop_timeout_s=5.0)
    await server.start()
    try:
        nc = await connect(server.url, auth=server.auth, name="pytest")
        await nc.jetstream().add_stream(stream_config(TEL, cfg.streams[TEL]))  # no durable yet
        await nc.close()
        await _publish(server.url, server.auth, 300)  # 200 aged out before the lab's first boot
    finally:
        await server.stop()

    lab = lab_factory(data_dir=data, streams=cfg.streams)
    st = await _settled(lab, time.time())
    assert st["delivered_seq"] == 300 and st["first_seq"] == 201
    assert st["discarded"] == 0


async def test_an_outpaced_lab_counts_exactly_what_the_stream_dropped(lab_factory, caplog):
    lab = lab_factory(fetch_batch=100, **_limits(max_msgs=300))
    lab.register_org(ORG)
    lab.register_entity(ORG, EID, "aircraft_multirotor")
    caplog.set_level(logging.WARNING, logger="overwatch_lab.streamwatch")

    acks = await _publish(lab.nats_url, lab.nats_auth, 15_000)  # pipelined: far faster than the lab
    st = await _settled(lab, time.time(), within_s=30)

    stored = _stored_uids(lab)
    lost = set(acks) - stored
    assert len(lost) > 5000  # genuinely outpaced: the stream held 300 of them at a time
    assert st["discarded"] == len(lost)
    assert max(acks[uid] for uid in lost) < st["first_seq"]  # every lost one was removed by the stream
    warned = [r for r in caplog.records if TEL in r.getMessage() and "discarded" in r.getMessage()]
    assert warned and warned[-1].levelno == logging.WARNING


FLEET = tuple(f"uav-{k}" for k in range(8))  # spread over the telemetry partitions


def _fleet_lab(lab_factory, **overrides):
    lab = lab_factory(workers=2, **overrides)
    assert sum(p["role"] == "telemetry-worker" for p in lab.stats()["processes"]) == 2
    lab.register_org(ORG)
    lab.register_entities(
        [{"org_id": ORG, "entity_id": e, "entity_type": "aircraft_multirotor"} for e in FLEET]
    )
    return lab


@pytest.mark.slow
async def test_worker_processes_on_a_partitioned_stream_count_exactly_what_it_dropped(lab_factory):
    lab = _fleet_lab(lab_factory, fetch_batch=100, **_limits(max_msgs=300))
    acks = await _publish(lab.nats_url, lab.nats_auth, 12_000, entities=FLEET)  # far faster than the lab
    st = await _settled(lab, time.time(), within_s=30)

    lost = set(acks) - _stored_uids(lab, None)
    assert len(lost) > 3000  # genuinely outpaced
    assert st["discarded"] == len(lost) == st["lost"]
    assert max(acks[uid] for uid in lost) < st["first_seq"]  # every lost one was removed by the stream
    assert sum(c["delivered_seq"] > 0 for c in st["consumers"].values()) >= 3  # several partitions fed it


@pytest.mark.slow
async def test_worker_processes_on_a_partitioned_stream_count_no_false_loss(lab_factory):
    """The stream removes only what the lab already had: other partitions' sequences and late
    reports from the worker processes must not look like discards."""
    lab = _fleet_lab(lab_factory, **_limits(max_msgs=400))
    acks: dict[str, int] = {}
    for chunk in range(10):  # each chunk consumed before the next pushes it out of the stream
        acks |= await _publish(lab.nats_url, lab.nats_auth, 300, start=chunk * 300, entities=FLEET)
        want = set(acks)
        await wait_for(lambda want=want: _stored_uids(lab, None) >= want, timeout=20, interval=0.05,
                       what=f"chunk {chunk} stored")  # fmt: skip
    st = await _settled(lab, time.time(), within_s=30)

    assert _stored_uids(lab, None) == set(acks)
    assert st["first_seq"] > 2000  # the stream did remove most of them (after they were seen)
    assert st["discarded"] == 0 and st["lost"] == 0
    assert st["delivered_seq"] == max(acks.values())


async def test_quarantine_records_dropped_by_its_limits_are_counted(lab_factory, caplog):
    quarantine = LabConfig().with_stream_limits(s.STREAM_QUARANTINE, max_msgs=5).streams
    lab = lab_factory(streams=quarantine)
    caplog.set_level(logging.WARNING, logger="overwatch_lab.streamwatch")
    for i in range(8):
        lab.publish(s.telemetry_subject(ORG, f"e{i}"), b"not json")  # poison: quarantined at once

    def counted() -> dict | None:
        st = lab.stats()
        q = st["streams"][s.STREAM_QUARANTINE]
        return q if st["telemetry-worker"]["quarantined"] == 8 and q["dropped"] == 3 else None

    q = await wait_for(counted, timeout=10, interval=0.05, what="3 quarantine drops counted")
    assert (q["messages"], q["lost"], q["aged"]) == (5, 3, 0)
    assert any("CONSTELLATION_QUARANTINE dropped" in r.getMessage() for r in caplog.records)
