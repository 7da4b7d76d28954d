"""Provisioning streams, durable consumers and the KV bucket against a real nats-server."""

from __future__ import annotations

import pytest

from overwatch_lab.broker.provision import CONSUMERS, MAX_WAITING, STREAM_FLAGS, open_kv, provision
from overwatch_lab.config import DEFAULT_STREAMS, LabConfig
from overwatch_lab.errors import ConfigError, ProvisionError
from overwatch_lab.protocol import subjects as s

ALL_CONSUMERS = {
    (s.STREAM_ENTITIES, s.CONSUMER_ENTITY, "constellation.entities.>"),
    (s.STREAM_ORGANIZATIONS, s.CONSUMER_ORGANIZATION, "constellation.organizations.>"),
    (s.STREAM_EVENTS, s.CONSUMER_EVENT, "constellation.events.>"),
    (s.STREAM_TELEMETRY, s.CONSUMER_TELEMETRY, "constellation.telemetry.>"),
    (s.STREAM_COMMANDS, s.CONSUMER_COMMAND, "constellation.commands.>"),
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
    assert set(first.created) == expected and len(first.created) == 12
    assert first.updated == () and first.unchanged == () and first.changed
    assert first.elapsed_s > 0

    second = await provision(js, cfg)
    assert second.created == () and second.updated == ()
    assert set(second.unchanged) == expected and not second.changed
    assert "12 unchanged" in str(second)


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
    assert (await js.get_msg(s.STREAM_TELEMETRY, ack.seq)).subject == "constellation.telemetry.org-1.ent-1"

    again = await provision(js, bigger)
    assert not again.changed
    back = await provision(js, cfg)  # and back to the defaults
    assert back.updated == (s.STREAM_TELEMETRY,)
    assert (await js.stream_info(s.STREAM_TELEMETRY)).config.max_msgs == DEFAULT_STREAMS[
        s.STREAM_TELEMETRY
    ].max_msgs


async def test_consumers_carry_the_configured_settings(js, cfg):
    await provision(js, cfg)
    assert {(st, d, f) for st, d, f in CONSUMERS} == ALL_CONSUMERS
    for stream, durable, filter_subject in ALL_CONSUMERS:
        info = await js.consumer_info(stream, durable)
        c = info.config
        assert c.durable_name == durable
        assert c.filter_subject == filter_subject
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
    info = await js.consumer_info(s.STREAM_TELEMETRY, s.CONSUMER_TELEMETRY)
    assert info.num_pending == 1
    sub = await js.pull_subscribe_bind(s.CONSUMER_TELEMETRY, s.STREAM_TELEMETRY)
    [msg] = await sub.fetch(1, timeout=2)
    assert msg.subject == "constellation.telemetry.a.b" and msg.data == b'{"x": 1}'
    await msg.ack_sync()


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
