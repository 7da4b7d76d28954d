"""A separate process that publishes telemetry v1 for M entities as fast as JetStream accepts it.

Run by ``overwatch-lab bench ingest``; prints one JSON line with what it did. Payloads are built
before the clock starts so the figure measures the fabric, not this generator.

It connects with the lab's **internal** identity (handed over in ``OVERWATCH_LAB_NATS_AUTH``),
not as a device or relay: it is a raw load generator that measures the broker and the lab's
ingest, not a simulated fleet (those are held to the device rights: ``lab.fleet``), and a relay
for thousands of entities would only add a subject-permission check per message to the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import nats

from overwatch_lab.nats_auth import NatsAuth
from overwatch_lab.protocol.envelopes import encode, make_telemetry
from overwatch_lab.protocol.subjects import telemetry_subject

MESSAGES = (
    ("GLOBAL_POSITION_INT", lambda i: {"lat": 329488100 + i, "lon": -968013200 - i, "alt": 152400,
                                       "relative_alt": 30480, "vx": 123, "vy": -45, "vz": 6, "hdg": 9000}),
    ("ATTITUDE", lambda i: {"roll": 0.01, "pitch": -0.02, "yaw": (i % 628) / 100.0,
                            "rollspeed": 0.0, "pitchspeed": 0.0, "yawspeed": 0.1}),
    ("VFR_HUD", lambda i: {"airspeed": 12.5, "groundspeed": 12.0, "heading": i % 360, "throttle": 55,
                           "alt": 152.4, "climb": 0.1}),
    ("SYS_STATUS", lambda i: {"voltage_battery": 15800, "current_battery": 1200, "battery_remaining": 80,
                              "load": 250}),
)  # fmt: skip


def build(org_id: str, entities: list[str], n: int, run: int = 0) -> list[tuple[str, bytes, str]]:
    """Build n (subject, payload, msg_id) in round-robin over entities, timestamps strictly increasing.

    ``run`` > 0 makes the message_uids distinct from an earlier run's (``bench-r{run}-…``).
    """
    prefix = "bench" if run == 0 else f"bench-r{run}"
    out = []
    base = time.time()  # device clocks read "now": older timestamps would make the entities stale
    for i in range(n):
        eid = entities[i % len(entities)]
        mtype, fields = MESSAGES[(i // len(entities)) % len(MESSAGES)]
        env = make_telemetry(
            org_id, eid, mtype, fields(i), timestamp=base + i * 1e-4, message_uid=f"{prefix}-{eid}-{i}"
        )
        out.append((telemetry_subject(org_id, eid), encode(env), env["message_uid"]))
    return out


async def publish(url: str, auth: NatsAuth, items: list[tuple[str, bytes, str]]) -> dict[str, float]:
    """Publish with pipelined JetStream acks; returns start/end wall times."""
    nc = await nats.connect(url, **auth.kwargs(), pending_size=256 * 1024 * 1024)
    js = nc.jetstream(publish_async_max_pending=4000)
    started = time.time()
    last_report = started
    for k, (subject, payload, msg_id) in enumerate(items, 1):
        await js.publish_async(subject, payload, headers={"Nats-Msg-Id": msg_id})
        if time.time() - last_report > 1.0:
            last_report = time.time()
            print(json.dumps({"progress": k}), file=sys.stderr, flush=True)
    await js.publish_async_completed()
    ended = time.time()
    await nc.close()
    return {"started_at": started, "ended_at": ended}


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m overwatch_lab.bench.publisher --url ... --org ... --entities ... --messages ...``."""
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--org", required=True)
    p.add_argument("--entity-prefix", default="bench")
    p.add_argument("--entities", type=int, required=True)
    p.add_argument("--messages", type=int, required=True)
    p.add_argument("--run", type=int, default=0, help="distinct message_uids per run of one lab")
    a = p.parse_args(argv)
    entities = [f"{a.entity_prefix}-{k:05d}" for k in range(a.entities)]
    items = build(a.org, entities, a.messages, a.run)
    print(json.dumps({"ready": len(items)}), flush=True)
    sys.stdin.readline()  # wait for "go" so the timer starts with the parent watching
    times = asyncio.run(publish(a.url, NatsAuth.from_env(), items))
    print(json.dumps({"published": len(items), **times}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
