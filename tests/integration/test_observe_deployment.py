"""Attaching to a real deployment: a nats-server provisioned as an Overwatch hub provisions it
(tests/upstream.py). ``Lab.observe`` shows its entities, telemetry and quarantine and changes
nothing there; ``up --nats-url`` against it refuses, naming the conflicts, and changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from overwatch_lab import Lab, LabConfig
from overwatch_lab.broker.process import NatsServer
from overwatch_lab.dashboard.datastore import DataStore
from overwatch_lab.errors import BrokerError, LabStateError, ProvisionError
from tests.upstream import ENTITIES, ORG, provision_like_upstream, seed_like_upstream, snapshot


@pytest.fixture
async def upstream(nats_server: NatsServer, nc: NATS, js: JetStreamContext) -> AsyncIterator[NatsServer]:
    """The test's nats-server, provisioned and filled like an Overwatch deployment."""
    await provision_like_upstream(js)
    await seed_like_upstream(js)
    yield nats_server


async def test_observe_shows_the_deployment_and_changes_nothing(upstream, nc, js, tmp_path: Path):
    before = await snapshot(nc, js)
    assert "consumer CONSTELLATION_TELEMETRY/telemetry-processor" in before
    lab = await asyncio.to_thread(Lab.observe, upstream.url, user=upstream.auth.user, password=upstream.auth.password, data_dir=tmp_path / "obs")
    try:
        assert lab.owner is False
        states = await asyncio.to_thread(lab.frames.states)
        assert sorted(states.index) == sorted(ENTITIES)
        assert states.loc[ENTITIES[1], "position.global.latitude"] == pytest.approx(33.9)
        await asyncio.to_thread(
            lab.wait_for, lambda: lab.frames.telemetry().shape[0] >= 2, what="2 history rows"
        )
        history = await asyncio.to_thread(lab.frames.telemetry)
        by_type = history.set_index("message_type")
        assert by_type.loc["HEARTBEAT", "entity_id"] == ENTITIES[1]
        # the Pulsar message: org from the entity's KV document, projected as v1 would be
        assert (
            by_type.loc["GLOBAL_POSITION_INT", "org_id"],
            by_type.loc["GLOBAL_POSITION_INT", "entity_id"],
        ) == (ORG, "gc35-e4b")
        assert by_type.loc["GLOBAL_POSITION_INT", "latitude"] == pytest.approx(32.94881)
        quarantine = await asyncio.to_thread(lab.frames.quarantine)
        assert list(quarantine["error"]) == ["telemetry: malformed JSON"]
        stats = await asyncio.to_thread(lab.stats)
        assert stats["streams"]["CONSTELLATION_TELEMETRY"]["messages"] == 2
        assert stats["streams"]["CONSTELLATION_TELEMETRY"]["consumer"] == "telemetry-processor"
        assert stats["history-recorder"]["stored"] == 2
        with pytest.raises(LabStateError, match="read-only"):
            await asyncio.to_thread(lab.publish, f"constellation.telemetry.{ORG}.{ENTITIES[0]}", b"{}")
        store = DataStore(source=lab)  # what `overwatch-lab dashboard --nats-url` serves
        assert await asyncio.to_thread(store.refresh), store.last_error
        assert store.healthy and store.fleet is not None and len(store.fleet) == len(ENTITIES)
        assert "CONSTELLATION_TELEMETRY" in store.stats["streams"]
        assert await snapshot(nc, js) == before  # while it watches
    finally:
        await asyncio.to_thread(lab.down)
    assert await snapshot(nc, js) == before


async def test_up_against_the_deployment_refuses_and_changes_nothing(upstream, nc, js, tmp_path: Path):
    before = await snapshot(nc, js)
    lab = Lab(
        LabConfig(data_dir=tmp_path / "lab", nats_url=upstream.url, nats_user=upstream.auth.user, nats_password=upstream.auth.password, workers=0)
    )
    with pytest.raises(ProvisionError) as info:
        await lab.start()
    text = str(info.value)
    assert (
        "consumer CONSTELLATION_TELEMETRY/telemetry-processor: " in text and "max_waiting 512 -> 4096" in text
    )
    assert "stream CONSTELLATION_TELEMETRY: " in text and "subject_transform None" in text
    assert "Lab.observe" in text and str(upstream.password) not in text
    assert await snapshot(nc, js) == before


async def test_a_lab_provisioned_server_is_not_foreign_to_the_next_boot(nats_server, nc, js, tmp_path: Path):
    cfg = LabConfig(
        data_dir=tmp_path / "lab", nats_url=nats_server.url, nats_user=nats_server.auth.user, nats_password=nats_server.auth.password, workers=0
    )
    async with Lab(cfg):
        pass
    info = await js.consumer_info("CONSTELLATION_TELEMETRY", "telemetry-processor")
    assert (info.config.metadata or {}).get("overwatch-lab") == "provisioned"
    async with Lab(cfg.replace(max_ack_pending=cfg.max_ack_pending + 1)):  # its own: updated, not refused
        pass
    info = await js.consumer_info("CONSTELLATION_TELEMETRY", "telemetry-processor")
    assert info.config.max_ack_pending == cfg.max_ack_pending + 1


async def test_observe_refuses_wrong_credentials_and_a_server_without_the_bucket(
    nats_server, js, tmp_path: Path
):
    with pytest.raises(BrokerError, match="rejected the credentials"):
        await asyncio.to_thread(Lab.observe, nats_server.url, token="wrong", data_dir=tmp_path / "a")
    with pytest.raises(ProvisionError, match="CONSTELLATION_GLOBAL_STATE does not exist"):
        await asyncio.to_thread(
            Lab.observe, nats_server.url, user=nats_server.auth.user, password=nats_server.auth.password, data_dir=tmp_path / "b"
        )
    assert await js.streams_info() == []  # neither attempt created anything on the server
