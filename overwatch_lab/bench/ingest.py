"""``overwatch-lab bench ingest``: sustained end-to-end telemetry ingest vs raw nats-py and sqlite.

End to end = from the first publish (by a separate process) until every message's KV state and
history row are committed and acknowledged.

The ceiling (``ceiling_rate``, ``ratio_to_ceiling``) is the best public-API Python consume under
the same conditions as the lab: a second, fresh nats-server with the same stream settings, the
same publisher process publishing the same messages, and meanwhile a nats-py callback
subscription on pipelined pull requests (raw ``$JS.API.CONSUMER.MSG.NEXT`` requests of
``CEILING_BATCH``, ``CEILING_IN_FLIGHT`` in flight, ``await msg.ack()`` per message) consuming
them; timed like the lab, from the publisher's first publish to the last ack. Also measured, on
that server once the publisher is done: the same consume with ``json.loads`` of each body
(``ceiling_json_rate``). Kept for comparison with earlier runs: nats-py ``fetch()`` + ack on the
lab's own broker after the lab finished (``raw_nats_pull_rate``, ``ratio_to_raw_nats``), and raw
sqlite3 executemany of the same number of rows. Prints a table, writes JSON and an offline HTML
plot of progress.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats

from overwatch_lab.bench.plot import write_html
from overwatch_lab.broker.process import NatsServer
from overwatch_lab.broker.provision import provision
from overwatch_lab.config import LabConfig, MiB
from overwatch_lab.lab import Lab
from overwatch_lab.protocol.subjects import STREAM_TELEMETRY, TELEMETRY_ALL

ORG = "bench-org"
CEILING_BATCH = 5000  # messages per MSG.NEXT request
CEILING_IN_FLIGHT = 2  # requests outstanding at once
CEILING_EXPIRES_S = 0.5  # a request not filled by then ends (the publisher may be slower)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


async def _raw_consume(url: str, token: str | None, n: int, batch: int) -> float:
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
            filter_subject=TELEMETRY_ALL,
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


async def _pipelined_consume(
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
            filter_subject=TELEMETRY_ALL,
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


def _ceiling(
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
                    *_publisher_argv(server.url, server.token, entities, messages),
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                )  # fmt: skip
                try:
                    assert pub.stdin is not None and pub.stdout is not None
                    json.loads(await pub.stdout.readline())  # ready
                    consume = asyncio.ensure_future(
                        _pipelined_consume(server.url, server.token, messages, durable="bench-ceiling",
                                           timeout_s=timeout_s)
                    )  # fmt: skip
                    pub.stdin.write(b"go\n")
                    await pub.stdin.drain()
                    pub_result = json.loads(await pub.stdout.readline())
                    _log("  ceiling: publisher done, waiting for the consumer")
                    last_ack = await consume
                    await pub.wait()
                finally:
                    if pub.returncode is None:
                        pub.kill()
                        await pub.wait()
                _log("  ceiling: again with json.loads of each body (publisher done)")
                t0 = time.time()
                json_last = await _pipelined_consume(
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
            "ceiling_json_rate": messages / (json_last - t0),
        }

    return asyncio.run(go())


def _publisher_argv(url: str, token: str | None, entities: int, messages: int) -> list[str]:
    return [sys.executable, "-m", "overwatch_lab.bench.publisher", "--url", url, "--token", token or "",
            "--org", ORG, "--entities", str(entities), "--messages", str(messages)]  # fmt: skip


def _raw_sqlite(n: int, cols: int) -> float:
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


def run(
    *, entities: int, messages: int, out_dir: Path, sync_interval: str = "2m", timeout_s: float = 300
) -> dict[str, Any]:
    """Run the benchmark and return the result dict (also written to ``out_dir``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="overwatch-bench-") as tmp:
        cfg = LabConfig(data_dir=Path(tmp), sync_interval=sync_interval).with_stream_limits(
            STREAM_TELEMETRY, max_msgs=max(messages * 2, 100_000), max_bytes=max(messages * 2048, 256 * MiB)
        )
        _log(f"booting lab in {tmp} (sync_interval={sync_interval})")
        with Lab(cfg) as lab:
            lab.register_org(ORG, "Bench org")
            records = [
                {"org_id": ORG, "entity_id": f"bench-{k:05d}", "entity_type": "aircraft_multirotor"}
                for k in range(entities)
            ]
            lab.register_entities(records, timeout=120)
            _log(f"registered {entities} entities; building {messages} envelopes in the publisher process")
            pub = subprocess.Popen(
                _publisher_argv(lab.nats_url, lab.nats_token, entities, messages),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            try:
                assert pub.stdin is not None and pub.stdout is not None
                json.loads(pub.stdout.readline())  # ready
                before = lab.stats()["telemetry-worker"]["acked"]
                pub.stdin.write("go\n")
                pub.stdin.flush()
                progress: list[tuple[float, int]] = []
                t_go = time.time()
                deadline = time.monotonic() + timeout_s
                done_at = None
                last_print = 0.0
                while time.monotonic() < deadline:
                    st = lab.stats()["telemetry-worker"]
                    acked = st["acked"] - before
                    now = time.time()
                    progress.append((now - t_go, acked))
                    if now - last_print >= 1.0:
                        last_print = now
                        _log(
                            f"  ingested {acked:>8}/{messages}  lag {st['lag']:>7}  quarantined {st['quarantined']}"
                        )
                    if acked + st["quarantined"] >= messages:
                        done_at = st["last_batch_at"]
                        break
                    time.sleep(0.05)
                pub_result = json.loads(pub.stdout.readline())
                pub.wait(30)
            finally:
                if pub.poll() is None:
                    pub.kill()
                    pub.wait()
            if done_at is None:
                raise TimeoutError(f"ingest did not finish within {timeout_s} s")
            stats = lab.stats()
            rows = int(lab.frames.telemetry(org_id=ORG).shape[0])
            states = lab.frames.states()
            _log("measuring the raw nats-py pull-consume ceiling on the same messages")
            raw_s = asyncio.run(_raw_consume(lab.nats_url, lab.nats_token, messages, 2000))
        _log(
            f"measuring the ceiling: a fresh nats-server, the same publisher, and a pipelined pull "
            f"consumer ({CEILING_IN_FLIGHT} x {CEILING_BATCH} in flight) consuming while it publishes"
        )
        ceiling = _ceiling(
            cfg=cfg, entities=entities, messages=messages, sync_interval=sync_interval, timeout_s=timeout_s
        )
        raw_sql_s = _raw_sqlite(messages, 28)
    e2e_s = done_at - pub_result["started_at"]
    result = {
        "benchmark": "ingest",
        "entities": entities,
        "messages": messages,
        "sync_interval": sync_interval,
        "publish_s": pub_result["ended_at"] - pub_result["started_at"],
        "publish_rate": messages / (pub_result["ended_at"] - pub_result["started_at"]),
        "end_to_end_s": e2e_s,
        "end_to_end_rate": messages / e2e_s,
        "raw_nats_pull_s": raw_s,
        "raw_nats_pull_rate": messages / raw_s,
        "raw_sqlite_rate": messages / raw_sql_s,
        "ratio_to_raw_nats": (messages / e2e_s) / (messages / raw_s),
        **ceiling,
        "ratio_to_ceiling": (messages / e2e_s) / ceiling["ceiling_rate"],
        "ceiling_method": f"callback subscription on raw MSG.NEXT pulls ({CEILING_IN_FLIGHT} x {CEILING_BATCH}), "
        "await msg.ack() each, fresh nats-server, same publisher concurrently",
        "history_rows": rows,
        "kv_documents": int(states.shape[0]),
        "lost": messages - rows,
        "quarantined": stats["telemetry-worker"]["quarantined"],
        "batches": stats["telemetry-worker"]["batches"],
        "peak_batch": stats["telemetry-worker"]["peak_batch_size"],
        "kv_cas_conflicts": stats["kv"]["cas_conflicts"],
        "cpu_count": os.cpu_count(),
        "progress": progress,
    }
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out_dir / f"ingest-{stamp}.json"
    path.write_text(json.dumps(result, indent=2))
    result["json_path"] = str(path)
    result["plot_path"] = str(_plot(result, out_dir / f"ingest-{stamp}.html"))
    return result


def _plot(result: dict[str, Any], path: Path) -> Path:
    """Write an offline HTML plot (inline BokehJS) of messages ingested over time."""
    from bokeh.plotting import figure

    xs = [p[0] for p in result["progress"]]
    ys = [p[1] for p in result["progress"]]
    fig = figure(
        title=f"ingest: {result['messages']} msgs, {result['entities']} entities — "
        f"{result['end_to_end_rate']:.0f} msg/s end to end, ceiling {result['ceiling_rate']:.0f} msg/s "
        f"(ratio {result['ratio_to_ceiling']:.2f})",
        x_axis_label="seconds since first publish",
        y_axis_label="messages committed (KV + history) and acked",
        width=900,
        height=420,
    )
    fig.line(xs, ys, line_width=2)
    return write_html(fig, path, "overwatch-lab ingest benchmark")


def report(result: dict[str, Any]) -> str:
    """Human-readable summary of a result."""
    return "\n".join(
        [
            f"ingest benchmark: {result['messages']} messages, {result['entities']} entities, "
            f"sync_interval={result['sync_interval']}, {result['cpu_count']} cores",
            f"  publisher (separate process) : {result['publish_rate']:>10.0f} msg/s",
            f"  end to end (KV + history)    : {result['end_to_end_rate']:>10.0f} msg/s  ({result['end_to_end_s']:.2f} s)",
            f"  ceiling: pipelined pull+ack  : {result['ceiling_rate']:>10.0f} msg/s  "
            f"(same publisher concurrently, {result['ceiling_publish_rate']:.0f} msg/s; fresh nats-server)",
            f"  ceiling + json.loads (after) : {result['ceiling_json_rate']:>10.0f} msg/s",
            f"  ratio end-to-end / ceiling   : {result['ratio_to_ceiling']:>10.2f}",
            f"  old ceiling: fetch()+ack     : {result['raw_nats_pull_rate']:>10.0f} msg/s  (lab's broker, after the lab)",
            f"  ceiling: raw sqlite3 insert  : {result['raw_sqlite_rate']:>10.0f} rows/s",
            f"  ratio end-to-end / fetch()   : {result['ratio_to_raw_nats']:>10.2f}",
            f"  history rows {result['history_rows']}, lost {result['lost']}, quarantined {result['quarantined']}, "
            f"batches {result['batches']} (peak {result['peak_batch']}), KV CAS conflicts {result['kv_cas_conflicts']}",
            f"  JSON: {result['json_path']}",
            f"  plot: {result['plot_path']}",
        ]
    )
