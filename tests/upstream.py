"""A NATS server provisioned the way an Overwatch hub provisions it, and a byte-level snapshot of it.

:func:`provision_like_upstream` creates, with plain nats-py JetStream calls, what Overwatch's
``CreateConstellationStreams`` / ``initializeStreamsAndConsumers`` / ``CreateGlobalStateKV`` create
(../shared/design/OVERWATCH-NOTES.md §2-3, WIRE.md "Streams"): the six streams with their limits,
retention, dedup windows, discard policies and direct/rollup flags, the four durable pull
consumers (explicit ack, ack wait 30 s, max deliver 5, max ack pending 1000, deliver all, instant
replay, the server's default max_waiting) and the state bucket (history 10, no TTL, 512 MiB).
:func:`seed_like_upstream` then stores what such a deployment holds: entity documents, v1 and
Pulsar telemetry, an entity event, an unconsumed work-queue event, a quarantine record, and a
``telemetry-processor`` that has delivered and acknowledged two messages.

:func:`snapshot` reads every stream's and consumer's info as the JetStream API returns it (JSON),
without the response time ``ts`` and the streams' ``consumer_count`` (an observer's own ephemeral
consumers come and go); durables only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext, api

MiB = 1024 * 1024
DAY = 86_400.0
ORG = "org-galaxy"
ENTITIES = ("gc35-e4b", "gc35-x9")
EDGE_FIXTURES = Path(__file__).parent / "fixtures" / "edge"

# name -> (subjects, retention, max msgs, max bytes, max age s, max msg size, dedup s, discard, rollup, direct)
UPSTREAM_STREAMS: dict[str, tuple[str, str, int, int, float, int, float, str, bool, bool]] = {
    "CONSTELLATION_ENTITIES": ("constellation.entities.>", "limits", 100_000, 256 * MiB, 7 * DAY, MiB, 120, "old", True, True),
    "CONSTELLATION_EVENTS": ("constellation.events.>", "workqueue", 50_000, 128 * MiB, DAY, 256 * 1024, 120, "old", False, True),
    "CONSTELLATION_TELEMETRY": ("constellation.telemetry.>", "limits", 100_000, 256 * MiB, 7200, 128 * 1024, 30, "old", True, True),
    "CONSTELLATION_ORGANIZATIONS": ("constellation.organizations.>", "limits", 10_000, 32 * MiB, 7 * DAY, 256 * 1024, 120, "old", False, True),
    "CONSTELLATION_COMMANDS": ("constellation.commands.>", "workqueue", 10_000, 32 * MiB, 900, 32 * 1024, 60, "new", False, False),
    "CONSTELLATION_QUARANTINE": ("constellation.quarantine.>", "limits", 10_000, 64 * MiB, 7 * DAY, 512 * 1024, 120, "old", False, False),
}  # fmt: skip
UPSTREAM_CONSUMERS = (
    ("CONSTELLATION_ENTITIES", "entity-processor", "constellation.entities.>"),
    ("CONSTELLATION_COMMANDS", "command-processor", "constellation.commands.>"),
    ("CONSTELLATION_EVENTS", "event-processor", "constellation.events.>"),
    ("CONSTELLATION_TELEMETRY", "telemetry-processor", "constellation.telemetry.>"),
)
KV_BUCKET = "CONSTELLATION_GLOBAL_STATE"


async def provision_like_upstream(js: JetStreamContext) -> None:
    """Create Overwatch's streams, durable consumers and state bucket (see the module docstring)."""
    for name, (
        subject,
        retention,
        msgs,
        size,
        age,
        msg_size,
        dedup,
        discard,
        rollup,
        direct,
    ) in UPSTREAM_STREAMS.items():
        await js.add_stream(
            api.StreamConfig(
                name=name, subjects=[subject], retention=api.RetentionPolicy(retention),
                storage=api.StorageType.FILE, max_msgs=msgs, max_bytes=size, max_age=age,
                max_msg_size=msg_size, duplicate_window=dedup, discard=api.DiscardPolicy(discard),
                allow_rollup_hdrs=rollup, allow_direct=direct, num_replicas=1,
            )
        )  # fmt: skip
    await js.create_key_value(
        api.KeyValueConfig(
            bucket=KV_BUCKET, description="Global state storage for fleets and swarms", history=10,
            ttl=0, max_bytes=512 * MiB, storage=api.StorageType.FILE, replicas=1,
        )
    )  # fmt: skip
    for stream, durable, subject in UPSTREAM_CONSUMERS:
        await js.add_consumer(
            stream,
            api.ConsumerConfig(
                durable_name=durable, filter_subject=subject, ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=30, max_deliver=5, max_ack_pending=1000, deliver_policy=api.DeliverPolicy.ALL,
                replay_policy=api.ReplayPolicy.INSTANT,
            ),
        )  # fmt: skip


def entity_doc(entity_id: str, lat: float) -> dict[str, Any]:
    """An entity document as the hub's telemetry worker leaves it in KV (shared.EntityState)."""
    return {
        "entity_id": entity_id, "org_id": ORG, "org_name": "Galaxy", "name": entity_id.upper(),
        "entity_type": "aircraft_multirotor", "status": "active", "priority": "normal", "is_live": True,
        "position": {"global": {"latitude": lat, "longitude": -96.80132, "altitude_msl": 152.4,
                                "timestamp": "2026-11-27T10:00:00Z"}},
        "system_id": 1, "component_id": 1, "last_seen": "2026-11-27T10:00:00Z",
    }  # fmt: skip


def edge_message(name: str) -> tuple[str, bytes]:
    """(subject, body) of a golden edge message (tests/fixtures/edge)."""
    doc = json.loads((EDGE_FIXTURES / f"{name}.json").read_text())
    return doc["subject"], json.dumps(doc["body"], separators=(",", ":")).encode()


async def seed_like_upstream(js: JetStreamContext) -> None:
    """Store what a running deployment holds (see the module docstring)."""
    kv = await js.key_value(KV_BUCKET)
    for i, eid in enumerate(ENTITIES):
        await kv.put(eid, json.dumps(entity_doc(eid, 32.9 + i)).encode())
    v1 = {
        "schema_version": "1.0.0", "message_uid": "up-1", "org_id": ORG, "entity_id": ENTITIES[1],
        "message_id": 0, "message_type": "HEARTBEAT", "system_id": 1, "component_id": 1,
        "data": {"custom_mode": 4, "base_mode": 209}, "timestamp": "2026-11-27T10:00:00Z",
    }  # fmt: skip
    await js.publish(f"constellation.telemetry.{ORG}.{ENTITIES[1]}", json.dumps(v1).encode(),
                     headers={"Nats-Msg-Id": "up-1"})  # fmt: skip
    subject, body = edge_message("pulsar_globalpositionint")
    await js.publish(subject, body)
    await js.publish(f"constellation.entities.{ORG}.created", b'{"id":"e1","type":"created"}')
    await js.publish(
        f"constellation.events.isr.{ORG}.{ENTITIES[0]}.bootsequence", b'{"event_type":"bootsequence"}'
    )
    record = {"worker": "telemetry-worker", "error": "telemetry: malformed JSON", "original_subject": "x"}
    await js.publish("constellation.quarantine.telemetry-worker", json.dumps(record).encode())
    psub = await js.pull_subscribe_bind("telemetry-processor", stream="CONSTELLATION_TELEMETRY")
    try:
        for m in await psub.fetch(2, timeout=2):
            await m.ack_sync()
    finally:
        await psub.unsubscribe()


async def snapshot(nc: NATS, js: JetStreamContext) -> dict[str, Any]:
    """Every stream's and durable's info as the server returns it (see the module docstring)."""
    out: dict[str, Any] = {}
    names = json.loads((await nc.request("$JS.API.STREAM.NAMES", b"{}", timeout=2)).data)["streams"] or []
    for name in sorted(names):
        info = json.loads((await nc.request(f"$JS.API.STREAM.INFO.{name}", b"", timeout=2)).data)
        info.pop("ts", None)
        info["state"].pop("consumer_count", None)
        out[f"stream {name}"] = info
        for c in await js.consumers_info(name):
            if not c.config.durable_name:
                continue  # an ephemeral consumer (the observer's own, while the server keeps it)
            raw = json.loads(
                (await nc.request(f"$JS.API.CONSUMER.INFO.{name}.{c.name}", b"", timeout=2)).data
            )
            raw.pop("ts", None)
            out[f"consumer {name}/{c.name}"] = raw
    return out
