"""The ceilings ``bench ingest`` compares the lab with, measured in the same run on the same messages.

- :func:`ceiling`: the best public-API Python consume, on a fresh nats-server of its own provisioned
  like the lab (same stream limits and fsync policy), fed by the same publisher process: a nats-py
  callback subscription on pipelined raw ``$JS.API.CONSUMER.MSG.NEXT`` requests of
  ``CEILING_BATCH``, ``CEILING_IN_FLIGHT`` in flight, ``await msg.ack()`` per message. Measured
  twice, as the lab is: *live* (consuming while the publisher publishes, timed from the first
  publish to the last ack) and *backlog* (the publisher done first, timed from the first pull to
  the last ack); plus the backlog consume with ``json.loads`` of each body.
- :func:`raw_consume`: nats-py ``fetch()`` + ack on the lab's own broker (the older ceiling, kept
  for comparison with earlier runs; ``fetch`` awaits each message with a task of its own).
- :func:`raw_sqlite`: sqlite3 ``executemany`` of the same number of rows in one transaction.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats

from overwatch_lab.broker.process import NatsServer
from overwatch_lab.broker.provision import provision
from overwatch_lab.config import LabConfig, MiB
from overwatch_lab.protocol.subjects import STREAM_TELEMETRY

ORG = "bench-org"
CEILING_BATCH = 5000  # messages per MSG.NEXT request
CEILING_IN_FLIGHT = 2  # requests outstanding at once
CEILING_EXPIRES_S = 0.5  # a request not filled by then ends (the publisher may be slower)
CEILING_METHOD = (
    f"callback subscription on raw MSG.NEXT pulls ({CEILING_IN_FLIGHT} x {CEILING_BATCH}), "
    "await msg.ack() each, fresh nats-server provisioned like the lab, same publisher"
)


def say(msg: str) -> None:
    """Progress on stderr (stdout carries the report)."""
    print(msg, file=sys.stderr, flush=True)


async def raw_consume(url: str, token: str | None, n: int, batch: int) -> float:
    """Pull-consume n messages from the telemetry stream with fetch + ack only; return seconds."""
    nc = await nats.connect(url, token=token, pending_size=256 * MiB)
    js = nc.jetstream()
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    await js.add_consumer(
        STREAM_TELEMETRY,
        ConsumerConfig(
            durable_name="bench-ceiling",
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            # no filter: the whole stream, as stored (partitioned subjects included)
            max_ack_pending=max(n, batch) + 1,
        ),
    )
    psub = await js.pull_subscribe_bind("bench-ceiling", STREAM_TELEMETRY)
    got = 0
    started = time.perf_counter()
    while got < n:
        msgs = await psub.fetch(batch, timeout=2.0)
        for m in msgs:
            await m.ack()
        got += len(msgs)
    elapsed = time.perf_counter() - started
    await nc.close()
    return elapsed


async def pipelined_consume(
    url: str, token: str | None, n: int, *, durable: str, decode: bool = False, timeout_s: float = 300
) -> float:
    """Consume+ack n telemetry messages with a callback subscription on pipelined raw pull
    requests (public nats-py API only); return the wall time (epoch s) of the last ack."""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    nc = await nats.connect(url, token=token, pending_size=256 * MiB)
    js = nc.jetstream()
    await js.add_consumer(
        STREAM_TELEMETRY,
        ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            # no filter: the whole stream, as stored (partitioned subjects included)
            max_ack_pending=CEILING_BATCH * CEILING_IN_FLIGHT * 2,
        ),
    )
    next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{STREAM_TELEMETRY}.{durable}"
    request = json.dumps({"batch": CEILING_BATCH, "expires": int(CEILING_EXPIRES_S * 1e9)}).encode()
    inbox = nc.new_inbox()
    done = asyncio.Event()
    got = 0
    owed = 0  # messages requested and neither delivered nor expired
    last_ack = 0.0

    async def refill() -> None:
        nonlocal owed
        while owed <= CEILING_BATCH * (CEILING_IN_FLIGHT - 1):
            await nc.publish(next_subject, request, reply=inbox)
            owed += CEILING_BATCH

    async def on_msg(msg: Any) -> None:
        nonlocal got, owed, last_ack
        status = msg.headers.get("Status") if msg.headers else None
        if status is not None:  # 408: a request expired (says how many it still owed); 100: heartbeat
            if status in ("408", "409"):
                owed = max(0, owed - int(msg.headers.get("Nats-Pending-Messages") or CEILING_BATCH))
                await refill()
            return
        if decode:
            json.loads(msg.data)
        await msg.ack()
        got += 1
        owed -= 1
        if got >= n:
            last_ack = time.time()
            done.set()
            return
        await refill()

    sub = await nc.subscribe(inbox, cb=on_msg, pending_msgs_limit=-1, pending_bytes_limit=-1)
    try:
        await refill()
        async with asyncio.timeout(timeout_s):
            await done.wait()
        await nc.flush()  # the last acks reach the server
    finally:
        await sub.unsubscribe()
        await nc.close()
    return last_ack


def ceiling(
    *, cfg: LabConfig, entities: int, messages: int, sync_interval: str, timeout_s: float
) -> dict[str, float]:
    """The honest ceiling (see the module docstring) on a fresh nats-server of its own."""

    async def go() -> dict[str, float]:
        with tempfile.TemporaryDirectory(prefix="overwatch-bench-ceiling-") as tmp:
            server = NatsServer(
                Path(tmp) / "broker",
                sync_interval=sync_interval,
                ready_timeout_s=cfg.ready_timeout_s,
                stop_timeout_s=cfg.stop_timeout_s,
                binary=cfg.nats_server_path,
            )
            await server.start()
            try:
                nc = await nats.connect(server.url, token=server.token)
                await provision(nc.jetstream(), cfg)  # the lab's streams, with the same limits
                await nc.close()
                pub = await asyncio.create_subprocess_exec(
                    *publisher_argv(server.url, server.token, entities, messages),
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                )  # fmt: skip
                try:
                    assert pub.stdin is not None and pub.stdout is not None
                    json.loads(await pub.stdout.readline())  # ready
                    consume = asyncio.ensure_future(
                        pipelined_consume(server.url, server.token, messages, durable="bench-ceiling",
                                           timeout_s=timeout_s)
                    )  # fmt: skip
                    pub.stdin.write(b"go\n")
                    await pub.stdin.drain()
                    pub_result = json.loads(await pub.stdout.readline())
                    say("  ceiling: publisher done, waiting for the consumer")
                    last_ack = await consume
                    await pub.wait()
                finally:
                    if pub.returncode is None:
                        pub.kill()
                        await pub.wait()
                say("  ceiling: backlog (the publisher done first), then again with json.loads of each body")
                t_backlog = time.time()
                backlog_last = await pipelined_consume(
                    server.url, server.token, messages, durable="bench-ceiling-backlog", timeout_s=timeout_s
                )
                t_json = time.time()
                json_last = await pipelined_consume(
                    server.url, server.token, messages, durable="bench-ceiling-json", decode=True,
                    timeout_s=timeout_s,
                )  # fmt: skip
            finally:
                await server.stop()
        ceiling_s = last_ack - pub_result["started_at"]
        return {
            "ceiling_s": ceiling_s,
            "ceiling_rate": messages / ceiling_s,
            "ceiling_publish_rate": messages / (pub_result["ended_at"] - pub_result["started_at"]),
            "ceiling_backlog_rate": messages / (backlog_last - t_backlog),
            "ceiling_json_rate": messages / (json_last - t_json),
        }

    return asyncio.run(go())


def publisher_argv(url: str, token: str | None, entities: int, messages: int, run: int = 0) -> list[str]:
    """The publisher process's command line (``run`` makes its message_uids distinct per run)."""
    return [sys.executable, "-m", "overwatch_lab.bench.publisher", "--url", url, "--token", token or "",
            "--org", ORG, "--entities", str(entities), "--messages", str(messages), "--run", str(run)]  # fmt: skip


def raw_sqlite(n: int, cols: int) -> float:
    """executemany n rows of `cols` columns into a fresh sqlite file in one transaction; return seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(Path(tmp) / "raw.db")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        names = ", ".join(f"c{i}" for i in range(cols))
        conn.execute(f"CREATE TABLE t (id INTEGER PRIMARY KEY, uid TEXT UNIQUE, {names})")
        rows = [(f"uid-{i}", *([1.5] * cols)) for i in range(n)]
        marks = ", ".join("?" * (cols + 1))
        started = time.perf_counter()
        with conn:
            conn.executemany(f"INSERT OR IGNORE INTO t (uid, {names}) VALUES ({marks})", rows)
        elapsed = time.perf_counter() - started
        conn.close()
    return elapsed
