"""The synchronizer (overwatch_lab/sync.py) on its own: a real nats-server's KV bucket, a real
libSQL file, a state built by hand, and passes run one at a time.

No lab and no workers: each test writes entity rows and KV documents directly, runs
``Synchronizer.run_pass()`` and reads both sides back. ``test_lab_sync.py`` covers the same
duties inside a running lab.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from overwatch_lab.broker.connect import connect
from overwatch_lab.broker.provision import open_kv, provision
from overwatch_lab.config import LabConfig
from overwatch_lab.errors import KvError, SyncError
from overwatch_lab.kvstate import Doc, EntityKV
from overwatch_lab.protocol import state
from overwatch_lab.protocol.envelopes import format_timestamp, now_timestamp
from overwatch_lab.store.database import Store
from overwatch_lab.store.schema import TELEMETRY_INSERT_COLUMNS
from overwatch_lab.sync import Synchronizer
from tests.polling import wait_for

ORG, ORG_NAME = "org-s", "Sync Org"
STALE_AFTER_S = 2.0


@dataclass
class Rig:
    """What one synchronizer works on: the store, the KV documents and what it asked to forget."""

    store: Store
    ekv: EntityKV
    config: LabConfig
    forgotten: list[str] = field(default_factory=list)
    sync: Synchronizer = field(init=False)

    def __post_init__(self) -> None:
        self.sync = Synchronizer(self.store, self.ekv, self.config, self.forgotten.append)

    async def add_entity(self, entity_id: str, **record: Any) -> dict[str, Any]:
        """An ``entities`` row (no KV document)."""
        fields = {"entity_id": entity_id, "org_id": ORG, "name": f"name-{entity_id}",
                  "entity_type": "ground_vehicle_wheeled", "status": "active", "priority": "normal"}  # fmt: skip
        return await self.store.upsert_entity({**fields, **record}, now_timestamp())

    async def put_doc(self, entity_id: str, doc: Doc) -> int:
        """Write a KV document as is (no CAS): what another writer or a corruption leaves."""
        return await self.ekv.kv.put(entity_id, json.dumps(doc).encode())

    async def doc(self, entity_id: str) -> Doc | None:
        return (await self.ekv.read(entity_id))[1]

    async def row(self, entity_id: str) -> dict[str, Any]:
        (row,) = [r for r in await self.store.entities() if r["entity_id"] == entity_id]
        return row


def registered_doc(entity_id: str) -> Doc:
    """The document the entity worker writes for a row made by :meth:`Rig.add_entity`."""
    record = {"entity_id": entity_id, "org_id": ORG, "name": f"name-{entity_id}",
              "entity_type": "ground_vehicle_wheeled"}  # fmt: skip
    return state.new_entity_doc(record, ORG_NAME, now_timestamp())


def flying(doc: Doc, *, lat: float, lon: float, heard_s_ago: float) -> Doc:
    """``doc`` with a position, a VFR and ``is_live``, last heard ``heard_s_ago`` seconds ago."""
    heard = format_timestamp(time.time() - heard_s_ago)
    doc["position"]["global"].update(latitude=lat, longitude=lon, altitude_msl=120.0, timestamp=heard)
    doc["vfr"].update(groundspeed=3.0, heading=90.0, timestamp=heard)
    doc.update(is_live=True, last_seen=heard, received_at=heard)
    return doc


def telemetry_row(uid: str, ts: float) -> tuple[Any, ...]:
    row = dict.fromkeys(TELEMETRY_INSERT_COLUMNS)
    row.update(message_uid=uid, org_id=ORG, entity_id="e1", message_type="VFR_HUD", timestamp=format_timestamp(ts),
               ts=ts, ingested_at=time.time(), system_id=1, component_id=1, data="{}", late=0)  # fmt: skip
    return tuple(row.values())


@contextlib.asynccontextmanager
async def make_rig(js: Any, tmp_path: Path, **config: Any) -> AsyncIterator[Rig]:
    """A provisioned broker, an open store with organisation ``org-s``, and a synchronizer."""
    cfg = LabConfig(data_dir=tmp_path / "lab", stale_after_s=STALE_AFTER_S, **config)
    await provision(js, cfg)
    store = Store(str(tmp_path / "lab" / "overwatch.db"))
    await store.open()
    try:
        await store.upsert_organization(ORG, ORG_NAME, "civilian", None, now_timestamp())
        yield Rig(store, EntityKV(await open_kv(js)), cfg)
    finally:
        await store.close()


@pytest.fixture
async def rig(js, tmp_path) -> AsyncIterator[Rig]:
    """:func:`make_rig` with the default config."""
    async with make_rig(js, tmp_path) as r:
        yield r


async def test_the_boot_pass_creates_missing_documents_and_keeps_existing_ones(rig):
    for eid in ("e1", "e2", "e3"):
        await rig.add_entity(eid)
    await rig.put_doc("e2", flying(registered_doc("e2"), lat=10.0, lon=20.0, heard_s_ago=0))
    st = await rig.sync.run_pass()
    assert (st.passes, st.created, st.repaired, st.removed) == (1, 2, 0, 0)
    for eid in ("e1", "e3"):
        doc = await rig.doc(eid)
        assert doc["name"] == f"name-{eid}" and doc["org_name"] == ORG_NAME and doc["is_live"] is False
        assert doc["entity_type"] == "ground_vehicle_wheeled" and doc["vfr"]["groundspeed"] is None
    assert (await rig.doc("e2"))["vfr"]["groundspeed"] == 3.0  # live state survives a boot
    st = await rig.sync.run_pass()
    assert (st.passes, st.created) == (2, 2)  # nothing left to create


async def test_drifted_static_fields_are_repaired_and_live_fields_kept(rig):
    await rig.add_entity("e1")
    await rig.add_entity("e2")
    doc = flying(registered_doc("e1"), lat=10.0, lon=20.0, heard_s_ago=0)
    await rig.put_doc("e1", {**doc, "name": "hijacked", "entity_type": "waypoint", "org_name": "nobody"})
    clean_rev = await rig.put_doc("e2", registered_doc("e2"))
    st = await rig.sync.run_pass()
    assert st.repaired == 1
    fixed = await rig.doc("e1")
    assert (fixed["name"], fixed["entity_type"], fixed["org_name"]) == (
        "name-e1",
        "ground_vehicle_wheeled",
        ORG_NAME,
    )
    assert fixed["vfr"]["groundspeed"] == 3.0 and fixed["position"]["global"]["latitude"] == 10.0
    assert (await rig.ekv.read("e2"))[0] == clean_rev  # a document without drift is not rewritten


async def test_a_repair_racing_another_writer_keeps_both_changes(rig):
    """Every KV write is a compare-and-set: a worker's write between read and repair survives."""
    await rig.add_entity("e1")
    await rig.put_doc("e1", {**registered_doc("e1"), "name": "hijacked"})

    class RacingKV(EntityKV):
        async def all(self) -> dict[str, tuple[int, Doc]]:
            docs = await super().all()
            worker = flying(dict(docs["e1"][1]), lat=1.0, lon=2.0, heard_s_ago=0)  # lands after the read
            await self.kv.put("e1", json.dumps(worker).encode())
            return docs

    racing = RacingKV(rig.ekv.kv)
    sync = Synchronizer(rig.store, racing, rig.config, rig.forgotten.append)
    st = await sync.run_pass()
    doc = await rig.doc("e1")
    assert st.repaired == 1 and racing.conflicts >= 1
    assert doc["name"] == "name-e1" and doc["position"]["global"]["latitude"] == 1.0


async def test_orphan_documents_are_removed_and_forgotten(rig):
    await rig.add_entity("e1")
    await rig.put_doc("e1", registered_doc("e1"))
    await rig.put_doc("orphan-9", {"entity_id": "orphan-9", "org_id": ORG})
    st = await rig.sync.run_pass()
    assert st.removed == 1 and rig.forgotten == ["orphan-9"]
    assert await rig.doc("orphan-9") is None and await rig.doc("e1") is not None
    await rig.store.delete_entity("e1")  # deleted from SQL: its document goes next pass
    st = await rig.sync.run_pass()
    assert st.removed == 2 and rig.forgotten == ["orphan-9", "e1"] and await rig.doc("e1") is None


async def test_live_fields_are_written_back_once_per_change(rig):
    await rig.add_entity("e1")
    await rig.put_doc("e1", flying(registered_doc("e1"), lat=10.0, lon=20.0, heard_s_ago=0))
    st = await rig.sync.run_pass()
    assert st.written_back == 1
    row = await rig.row("e1")
    assert (row["latitude"], row["longitude"], row["altitude"]) == (10.0, 20.0, 120.0)
    assert (row["heading"], row["velocity"], row["is_live"]) == (90.0, 3.0, True)
    st = await rig.sync.run_pass()
    assert st.written_back == 1  # nothing changed: nothing written
    doc = await rig.doc("e1")
    await rig.put_doc("e1", flying(doc, lat=11.0, lon=20.0, heard_s_ago=0))
    st = await rig.sync.run_pass()
    assert st.written_back == 2 and (await rig.row("e1"))["latitude"] == 11.0


async def test_a_silent_entity_goes_stale_and_sql_hears_of_it(rig):
    await rig.add_entity("quiet")
    await rig.add_entity("chatty")
    await rig.put_doc(
        "quiet", flying(registered_doc("quiet"), lat=1.0, lon=1.0, heard_s_ago=STALE_AFTER_S + 5)
    )
    await rig.put_doc("chatty", flying(registered_doc("chatty"), lat=2.0, lon=2.0, heard_s_ago=0))
    st = await rig.sync.run_pass()
    assert st.marked_stale == 1
    assert (await rig.doc("quiet"))["is_live"] is False and (await rig.doc("chatty"))["is_live"] is True
    assert (await rig.row("quiet"))["is_live"] is False and (await rig.row("chatty"))["is_live"] is True
    assert (await rig.doc("quiet"))["vfr"]["groundspeed"] == 3.0  # going stale keeps the last state
    st = await rig.sync.run_pass()
    assert st.marked_stale == 1  # already stale: not counted again


async def test_history_older_than_the_retention_is_pruned(js, tmp_path):
    now = time.time()
    async with make_rig(js, tmp_path, history_max_age_s=60.0) as rig:
        await rig.add_entity("e1")
        assert (
            await rig.store.insert_telemetry([telemetry_row(f"old-{i}", now - 3600 - i) for i in range(3)])
            == 3
        )
        assert await rig.store.insert_telemetry([telemetry_row("new", now)]) == 1
        st = await rig.sync.run_pass()
        assert st.history_pruned == 3
        assert (await rig.store.counts())["telemetry"] == 1
        assert (await rig.sync.run_pass()).history_pruned == 3  # nothing left to prune


async def test_without_a_retention_nothing_is_pruned(rig):
    await rig.add_entity("e1")
    await rig.store.insert_telemetry([telemetry_row("old", time.time() - 86_400 * 365)])
    st = await rig.sync.run_pass()
    assert st.history_pruned == 0 and (await rig.store.counts())["telemetry"] == 1


async def test_the_loop_runs_on_a_kick_counts_a_failed_pass_and_stops(rig):
    config = LabConfig(data_dir=rig.config.data_dir, sync_period_s=3600)  # only kicks start a pass
    sync = Synchronizer(rig.store, rig.ekv, config, rig.forgotten.append)
    await rig.add_entity("e1")
    ready = asyncio.Event()
    reopened = Store(rig.store.location)
    try:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(sync.run(ready), name="sync-under-test")
            async with asyncio.timeout(5):
                await ready.wait()
            sync.kick()
            await wait_for(lambda: sync.stats.passes == 1, what="the kicked pass")
            assert await rig.doc("e1") is not None
            await rig.store.close()  # the next pass fails: counted, and the loop carries on
            sync.kick()
            await wait_for(lambda: sync.stats.failed_passes == 1, what="the failed pass counted")
            assert sync.stats.passes == 1 and "is not open" in sync.stats.last_error
            assert not task.done()
            await reopened.open()
            rig.store = sync.store = reopened  # the database is back
            await rig.add_entity("e2")
            sync.kick()
            await wait_for(lambda: sync.stats.passes == 2, what="a pass after the store came back")
            assert await rig.doc("e2") is not None
            sync.request_stop()
            async with asyncio.timeout(5):
                await task
    finally:
        await reopened.close()


async def test_a_kv_outage_fails_passes_with_a_sync_error_logged_once(rig, nats_server, caplog):
    """A KV the synchronizer cannot reach: each pass raises SyncError (naming the step), the loop
    counts them all and logs one line for the outage, and says when it is over."""
    caplog.set_level(logging.INFO, logger="overwatch_lab.sync")
    await rig.add_entity("e1")
    config = LabConfig(data_dir=rig.config.data_dir, sync_period_s=3600)  # only kicks start a pass
    lost = await connect(nats_server.url, auth=nats_server.auth, name="pytest-lost-kv")
    sync = Synchronizer(rig.store, EntityKV(await open_kv(lost.jetstream())), config, rig.forgotten.append)
    await lost.close()  # every KV call of this synchronizer now fails
    with pytest.raises(SyncError, match="while reading the KV documents") as caught:
        await sync.run_pass()
    assert isinstance(caught.value.__cause__, KvError)
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(sync.run(ready), name="sync-under-test")
        async with asyncio.timeout(5):
            await ready.wait()
        for n in (1, 2, 3):
            sync.kick()
            await wait_for(lambda n=n: sync.stats.failed_passes == n, what=f"failed pass {n}")
        logged = [r for r in caplog.records if r.name == "overwatch_lab.sync"]
        assert len(logged) == 1 and logged[0].levelno == logging.WARNING and logged[0].exc_info is None
        assert "SyncError: sync pass failed while reading the KV documents" in logged[0].getMessage()
        sync.ekv = rig.ekv  # the KV is reachable again
        sync.kick()
        await wait_for(lambda: sync.stats.passes == 1, what="a pass after the KV came back")
        assert await rig.doc("e1") is not None
        assert [
            r.getMessage().split(" after")[0] for r in caplog.records[1:] if r.name == "overwatch_lab.sync"
        ] == ["sync recovered"]
        sync.request_stop()
    assert task.done() and sync.stats.outages == 1
