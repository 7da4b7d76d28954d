"""Provisioning streams, durable consumers and the KV bucket against a real nats-server."""

from __future__ import annotations

import pytest

from overwatch_lab.broker.provision import (
    CONSUMERS,
    MAX_WAITING,
    STREAM_FLAGS,
    consumers,
    open_kv,
    provision,
    retire_partitions,
)
from overwatch_lab.config import DEFAULT_STREAMS, LabConfig
from overwatch_lab.errors import ConfigError, ProvisionError
from overwatch_lab.protocol import subjects as s

ALL_CONSUMERS = {
    (s.STREAM_ENTITIES, s.CONSUMER_ENTITY, "constellation.entities.>"),
    (s.STREAM_ORGANIZATIONS, s.CONSUMER_ORGANIZATION, "constellation.organizations.>"),
    (s.STREAM_EVENTS, s.CONSUMER_EVENT, "constellation.events.>"),
    (s.STREAM_TELEMETRY, s.CONSUMER_TELEMETRY, "constellation.telemetry.>"),
    (s.STREAM_COMMANDS, s.CONSUMER_COMMAND, "constellation.commands.>"),
    *((s.STREAM_TELEMETRY, f"telemetry-processor-p{k}", f"constellation.telemetry-p.*.*.{k}") for k in range(4)),
}


@pytest.fixture
def cfg(tmp_path) -> LabConfig:
    # Non-default consumer settings, so the test sees them flow from LabConfig to the server.
    return LabConfig(data_dir=tmp_path / "lab", max_ack_pending=12_345, ack_wait_s=12.5, max_deliver=4)


async def test_fresh_provision_creates_everything_then_is_idempotent(js, cfg):
    first = await provision(js, cfg)
    expected = (
        set(DEFAULT_STREAMS)
        | {f"kv:{s.KV_GLOBAL_STATE}"}
        | {f"{stream}/{durable}" for stream, durable, _ in ALL_CONSUMERS}
    )
    assert set(first.created) == expected and len(first.created) == 16
    assert first.updated == () and first.unchanged == () and first.changed
    assert first.elapsed_s > 0

    second = await provision(js, cfg)
    assert second.created == () and second.updated == ()
    assert set(second.unchanged) == expected and not second.changed
    assert "16 unchanged" in str(second)


async def test_streams_match_the_wire_contract(js, cfg):
    await provision(js, cfg)
    for name, limits in DEFAULT_STREAMS.items():
        c = (await js.stream_info(name)).config
        assert c.subjects == list(limits.subjects)
        assert c.retention == limits.retention
        assert c.discard == limits.discard
        assert c.storage == "file"
        assert c.max_msgs == limits.max_msgs and c.max_bytes == limits.max_bytes
        assert c.max_age == pytest.approx(limits.max_age_s)
        assert c.max_msg_size == limits.max_msg_size
        assert c.duplicate_window == pytest.approx(limits.duplicate_window_s)
        assert (bool(c.allow_direct), bool(c.allow_rollup_hdrs)) == STREAM_FLAGS[name]
    commands = (await js.stream_info(s.STREAM_COMMANDS)).config
    assert commands.retention == "workqueue" and commands.discard == "new"
    assert commands.max_age == pytest.approx(15 * 60)


async def test_changed_limits_update_the_stream_in_place(js, cfg):
    await provision(js, cfg)
    ack = await js.publish("constellation.telemetry.org-1.ent-1", b"{}")
    bigger = cfg.with_stream_limits(
        s.STREAM_TELEMETRY, max_msgs=3_000_000, max_bytes=2 << 30, max_age_s=3 * 3600
    )

    report = await provision(js, bigger)
    assert report.updated == (s.STREAM_TELEMETRY,)
    assert report.created == ()
    info = await js.stream_info(s.STREAM_TELEMETRY)
    assert info.config.max_msgs == 3_000_000 and info.config.max_bytes == 2 << 30
    assert info.config.max_age == pytest.approx(3 * 3600)
    assert info.state.messages == 1  # updated in place: the data is still there
    stored = (await js.get_msg(s.STREAM_TELEMETRY, ack.seq)).subject  # with its partition token
    assert stored.rsplit(".", 1)[0] == "constellation.telemetry-p.org-1.ent-1"

    again = await provision(js, bigger)
    assert not again.changed
    back = await provision(js, cfg)  # and back to the defaults
    assert back.updated == (s.STREAM_TELEMETRY,)
    assert (await js.stream_info(s.STREAM_TELEMETRY)).config.max_msgs == DEFAULT_STREAMS[
        s.STREAM_TELEMETRY
    ].max_msgs


async def test_consumers_carry_the_configured_settings(js, cfg):
    await provision(js, cfg)
    assert {(st, d, f) for st, d, f in consumers(cfg)} == ALL_CONSUMERS
    assert set(CONSUMERS) < ALL_CONSUMERS
    for stream, durable, filter_subject in ALL_CONSUMERS:
        info = await js.consumer_info(stream, durable)
        c = info.config
        assert c.durable_name == durable
        assert (c.filter_subject or " ".join(c.filter_subjects or ())) == filter_subject
        assert c.ack_policy == "explicit"
        assert c.deliver_policy == "all"
        assert c.ack_wait == pytest.approx(12.5)
        assert c.max_deliver == 4
        assert c.max_ack_pending == 12_345
        assert c.max_waiting == MAX_WAITING
        assert c.deliver_subject is None  # pull consumer

    report = await provision(js, cfg.replace(max_ack_pending=20_000))
    assert set(report.updated) == {f"{st}/{d}" for st, d, _ in ALL_CONSUMERS}
    info = await js.consumer_info(s.STREAM_TELEMETRY, s.CONSUMER_TELEMETRY)
    assert info.config.max_ack_pending == 20_000


async def test_kv_bucket_has_history_and_no_ttl(js, cfg):
    with pytest.raises(ProvisionError, match="does not exist"):
        await open_kv(js)
    await provision(js, cfg)
    kv = await open_kv(js)
    status = await kv.status()
    assert status.bucket == s.KV_GLOBAL_STATE
    assert status.history == 10
    assert not status.ttl
    assert status.stream_info.config.storage == "file"
    for i in range(12):
        await kv.put("drone-1", str(i).encode())
    assert (await kv.get("drone-1")).value == b"11"
    assert len(await kv.history("drone-1")) == 10

    report = await provision(js, cfg.replace(kv_history=20))
    assert report.updated == (f"kv:{s.KV_GLOBAL_STATE}",)
    assert (await (await open_kv(js)).status()).history == 20
    assert (await (await open_kv(js)).get("drone-1")).value == b"11"


async def test_telemetry_lands_in_the_telemetry_stream(js, cfg):
    await provision(js, cfg)
    ack = await js.publish("constellation.telemetry.a.b", b'{"x": 1}', headers={"Nats-Msg-Id": "uid-1"})
    assert ack.stream == s.STREAM_TELEMETRY and not ack.duplicate
    dup = await js.publish("constellation.telemetry.a.b", b'{"x": 1}', headers={"Nats-Msg-Id": "uid-1"})
    assert dup.duplicate  # dedup window is on
    parts = [await js.consumer_info(s.STREAM_TELEMETRY, f"telemetry-processor-p{k}") for k in range(4)]
    assert sorted(i.num_pending for i in parts) == [0, 0, 0, 1]  # exactly one partition has it
    assert (await js.consumer_info(s.STREAM_TELEMETRY, s.CONSUMER_TELEMETRY)).num_pending == 0
    k = next(k for k, i in enumerate(parts) if i.num_pending)
    sub = await js.pull_subscribe_bind(f"telemetry-processor-p{k}", s.STREAM_TELEMETRY)
    [msg] = await sub.fetch(1, timeout=2)
    assert msg.subject == f"constellation.telemetry-p.a.b.{k}" and msg.data == b'{"x": 1}'
    assert s.parse_telemetry_subject(msg.subject) == s.TelemetrySubject("a", "b", k)
    await msg.ack_sync()


async def test_partition_transform_keeps_dedup_core_subjects_and_other_shapes(js, nc, cfg):
    await provision(js, cfg)
    core: list[str] = []

    async def heard(msg):
        core.append(msg.subject)

    await nc.subscribe("constellation.telemetry.>", cb=heard)
    acks = [
        await js.publish(f"constellation.telemetry.o.e{i}", b"{}", headers={"Nats-Msg-Id": f"u{i}"})
        for i in range(40)
    ]
    again = await js.publish("constellation.telemetry.o.e7", b"{}", headers={"Nats-Msg-Id": "u7"})
    assert again.duplicate and again.seq == acks[7].seq  # dedup sees through the transform
    odd = await js.publish("constellation.telemetry.o.e.x", b"{}")  # no partition shape: unchanged
    await nc.flush()
    assert (await js.get_msg(s.STREAM_TELEMETRY, odd.seq)).subject == "constellation.telemetry.o.e.x"
    tokens = {(await js.get_msg(s.STREAM_TELEMETRY, a.seq)).subject.split(".")[-1] for a in acks}
    assert tokens == {"0", "1", "2", "3"}  # 40 entities spread over the 4 partitions
    same = await js.publish("constellation.telemetry.o.e3", b"{}")  # one entity, one partition
    assert (await js.get_msg(s.STREAM_TELEMETRY, same.seq)).subject == (
        await js.get_msg(s.STREAM_TELEMETRY, acks[3].seq)
    ).subject
    assert "constellation.telemetry.o.e0" in core and not any("telemetry-p" in c for c in core)
    # the unpartitioned durable gets every other shape (to quarantine them), 5 tokens included
    await js.publish("constellation.telemetry.o", b"{}")
    await js.publish("constellation.telemetry.o.e.3", b"{}")  # looks like a partition: not one
    await js.publish("constellation.telemetry.o.e.x.y", b"{}")
    assert (await js.consumer_info(s.STREAM_TELEMETRY, s.CONSUMER_TELEMETRY)).num_pending == 4


async def test_upgraded_stream_keeps_its_unpartitioned_messages_for_the_old_durable(js, cfg):
    """A data dir from before the transform: its 4-token messages stay with telemetry-processor."""
    from overwatch_lab.broker.provision import _ensure_consumer, consumer_config, stream_config

    old = stream_config(s.STREAM_TELEMETRY, DEFAULT_STREAMS[s.STREAM_TELEMETRY])  # no transform
    await js.add_stream(old)
    await _ensure_consumer(
        js, s.STREAM_TELEMETRY, consumer_config(s.CONSUMER_TELEMETRY, "constellation.telemetry.>", cfg)
    )
    for i in range(3):
        await js.publish(f"constellation.telemetry.o.e{i}", b"{}")
    report = await provision(js, cfg)
    assert s.STREAM_TELEMETRY in report.updated
    await js.publish("constellation.telemetry.o.e9", b"{}")
    assert (await js.consumer_info(s.STREAM_TELEMETRY, s.CONSUMER_TELEMETRY)).num_pending == 3
    pending = [(await js.consumer_info(s.STREAM_TELEMETRY, f"telemetry-processor-p{k}")).num_pending for k in range(4)]
    assert sum(pending) == 1


async def test_fewer_partitions_keep_undrained_durables_and_delete_drained_ones(js, cfg):
    await provision(js, cfg)  # 4 partitions
    acks = [await js.publish(f"constellation.telemetry.o.e{i}", b"{}") for i in range(40)]
    drained = None
    for k in (2, 3):  # drain p2, leave p3 pending
        info = await js.consumer_info(s.STREAM_TELEMETRY, f"telemetry-processor-p{k}")
        assert info.num_pending > 0
        if k == 2:
            sub = await js.pull_subscribe_bind("telemetry-processor-p2", s.STREAM_TELEMETRY)
            for msg in await sub.fetch(info.num_pending, timeout=2):
                await msg.ack_sync()
            drained = info.num_pending
    assert drained
    two = cfg.replace(telemetry_partitions=2, workers=0)
    await provision(js, two)
    kept, deleted = await retire_partitions(js, two)
    assert kept == ["telemetry-processor-p3"] and deleted == ["telemetry-processor-p2"]
    names = {i.name for i in await js.consumers_info(s.STREAM_TELEMETRY)}
    assert "telemetry-processor-p2" not in names and "telemetry-processor-p3" in names
    late = await js.publish("constellation.telemetry.o.e1", b"{}")  # now into partition 0 or 1
    assert (await js.get_msg(s.STREAM_TELEMETRY, late.seq)).subject[-2:] in (".0", ".1")
    assert len(acks) == 40


async def test_invalid_limits_raise_provision_error_naming_the_stream(js, cfg):
    bad = cfg.with_stream_limits(s.STREAM_TELEMETRY, max_age_s=10, duplicate_window_s=60)
    with pytest.raises(ProvisionError, match=s.STREAM_TELEMETRY) as info:
        await provision(js, bad)
    assert "duplicates window can not be larger" in str(info.value)  # the server's own words
    assert await js.streams_info() != []  # the streams before it were created


def test_kv_history_beyond_the_nats_limit_is_refused(cfg):
    with pytest.raises(ConfigError, match="kv_history must be 1..64"):
        cfg.replace(kv_history=65)


async def test_unchangeable_field_raises_instead_of_deleting(js, cfg):
    await provision(js, cfg)
    await js.publish("constellation.organizations.created", b"{}")
    flipped = cfg.with_stream_limits(s.STREAM_ORGANIZATIONS, retention="workqueue")
    with pytest.raises(ProvisionError, match=s.STREAM_ORGANIZATIONS):
        await provision(js, flipped)
    info = await js.stream_info(s.STREAM_ORGANIZATIONS)
    assert info.config.retention == "limits" and info.state.messages == 1
