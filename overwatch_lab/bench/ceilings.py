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
- :func:`sqlite_ceiling`: the history write without the lab around it: stdlib sqlite3
  ``executemany`` of the lab's own telemetry rows (the publisher's envelopes decoded, projected and
  turned into rows by the worker's own functions) into a fresh file with the store's schema (its
  indexes and the ``message_uid`` unique constraint: ``migrate``) and the store's pragmas (WAL,
  ``synchronous=NORMAL``), one ``BEGIN IMMEDIATE`` … ``COMMIT`` per batch, batches of the lab's
  typical sizes, on one thread with nothing else running.
- :func:`raw_sqlite`: sqlite3 ``executemany`` of the same number of rows in one transaction into a
  table of one unique index and ``cols`` float columns (the older figure, kept for comparison).
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
from overwatch_lab.nats_auth import NatsAuth
from overwatch_lab.protocol.envelopes import decode_telemetry
from overwatch_lab.protocol.mavlink import project
from overwatch_lab.protocol.subjects import STREAM_TELEMETRY, parse_telemetry_subject
from overwatch_lab.store.connection import connect
from overwatch_lab.store.schema import TELEMETRY_INSERT_COLUMNS, apply_pragmas, migrate
from overwatch_lab.workers.telemetry import history_row

ORG = "bench-org"
CEILING_BATCH = 5000  # messages per MSG.NEXT request
CEILING_IN_FLIGHT = 2  # requests outstanding at once
CEILING_EXPIRES_S = 0.5  # a request not filled by then ends (the publisher may be slower)
SQLITE_BATCHES = (200, 1000, 5000)  # rows per transaction in :func:`sqlite_ceiling`
CEILING_METHOD = (
    f"callback subscription on raw MSG.NEXT pulls ({CEILING_IN_FLIGHT} x {CEILING_BATCH}), "
    "await msg.ack() each, fresh nats-server provisioned like the lab, same publisher"
)


def say(msg: str) -> None:
    """Progress on stderr (stdout carries the report)."""
    print(msg, file=sys.stderr, flush=True)


async def raw_consume(url: str, auth: NatsAuth, n: int, batch: int) -> float:
    """Pull-consume n messages from the telemetry stream with fetch + ack only; return seconds."""
    nc = await nats.connect(url, **auth.kwargs(), pending_size=256 * MiB)
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
    url: str, auth: NatsAuth, n: int, *, durable: str, decode: bool = False, timeout_s: float = 300
) -> float:
    """Consume+ack n telemetry messages with a callback subscription on pipelined raw pull
    requests (public nats-py API only); return the wall time (epoch s) of the last ack."""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    nc = await nats.connect(url, **auth.kwargs(), pending_size=256 * MiB)
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
                nc = await nats.connect(server.url, **server.auth.kwargs())
                await provision(nc.jetstream(), cfg)  # the lab's streams, with the same limits
                await nc.close()
                pub = await asyncio.create_subprocess_exec(
                    *publisher_argv(server.url, entities, messages),
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=server.auth.env(),
                )  # fmt: skip
                try:
                    assert pub.stdin is not None and pub.stdout is not None
                    json.loads(await pub.stdout.readline())  # ready
                    consume = asyncio.ensure_future(
                        pipelined_consume(server.url, server.auth, messages, durable="bench-ceiling",
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
                    server.url, server.auth, messages, durable="bench-ceiling-backlog", timeout_s=timeout_s
                )
                t_json = time.time()
                json_last = await pipelined_consume(
                    server.url, server.auth, messages, durable="bench-ceiling-json", decode=True,
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


def publisher_argv(url: str, entities: int, messages: int, run: int = 0) -> list[str]:
    """The publisher process's command line (``run`` makes its message_uids distinct per run).

    Its credentials go in its environment (``NatsAuth.env()``): a raw benchmark publisher uses
    the lab's internal identity, since it measures the broker and the lab, not a device's rights.
    """
    return [sys.executable, "-m", "overwatch_lab.bench.publisher", "--url", url,
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


def history_rows(entities: int, messages: int) -> list[tuple[Any, ...]]:
    """The telemetry rows the lab writes for the publisher's messages (``late`` = 0), built by the
    worker's own decode, projection and :func:`~overwatch_lab.workers.telemetry.history_row`."""
    from overwatch_lab.bench.publisher import build

    ingested_at = time.time()
    rows = []
    for subject, payload, _ in build(ORG, [f"bench-{k:05d}" for k in range(entities)], messages):
        t = decode_telemetry(payload, parse_telemetry_subject(subject))
        rows.append(history_row(t, project(t.message_type, t.data, t.timestamp), ingested_at, late=False))
    return rows


def sqlite_ceiling(
    rows: list[tuple[Any, ...]], batches: tuple[int, ...] = SQLITE_BATCHES
) -> dict[str, float]:
    """Insert ``rows`` as the store would, without the store (see the module docstring); rows/s per batch size.

    Each batch size gets a fresh file. Returns ``{"sqlite_ceiling_rate_<batch>": rows/s}`` (wall
    time) and ``"sqlite_ceiling_cpu_rate_<batch>"`` (this thread's CPU time: what the rate would
    be on an idle core).
    """
    marks = ", ".join("?" * len(TELEMETRY_INSERT_COLUMNS))
    sql = f"INSERT OR IGNORE INTO telemetry ({', '.join(TELEMETRY_INSERT_COLUMNS)}) VALUES ({marks})"
    out: dict[str, float] = {}
    for batch in batches:
        with tempfile.TemporaryDirectory(prefix="overwatch-bench-sqlite-") as tmp:
            conn = connect(str(Path(tmp) / "ceiling.db"))
            try:
                apply_pragmas(conn, remote=False)
                migrate(conn)
                started, cpu = time.perf_counter(), time.thread_time()
                for i in range(0, len(rows), batch):
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany(sql, rows[i : i + batch])
                    conn.execute("COMMIT")
                elapsed, cpu = time.perf_counter() - started, time.thread_time() - cpu
                stored = conn.execute("SELECT count(*) FROM telemetry").fetchone()[0]
            finally:
                conn.close()
        if stored != len(rows):
            raise RuntimeError(f"sqlite ceiling stored {stored} of {len(rows)} rows")
        out[f"sqlite_ceiling_rate_{batch}"] = len(rows) / elapsed
        out[f"sqlite_ceiling_cpu_rate_{batch}"] = len(rows) / max(cpu, 1e-9)
    return out
