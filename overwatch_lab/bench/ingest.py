"""``overwatch-lab bench ingest``: sustained end-to-end telemetry ingest vs the best raw consume.

Two phases on one lab, each with M messages from a separate publisher process (distinct
message_uids per phase), each compared with the same ceiling measured the same way
(:mod:`overwatch_lab.bench.ceilings`):

- **live**: the publisher publishes while the lab ingests; end to end = from the first publish
  until every message's history row is committed, its KV state written and it is acknowledged.
  Neither the lab nor the ceiling can beat the publisher here.
- **backlog**: the lab's telemetry consumers are paused (JetStream consumer pause, nats-server
  2.11+), the publisher publishes everything, then they are resumed; end to end = from the resume
  until the last message is committed and acknowledged. This is the lab's own capacity, with no
  publisher competing for the cores (the ceiling's backlog consume likewise).

The publisher connects with the lab's internal identity, not as a device: it measures the broker
and the lab's ingest (simulated fleets, which speak as relays, are ``lab.fleet``'s).

Kept for comparison with earlier runs: nats-py ``fetch()`` + ack on the lab's own broker
(``raw_nats_pull_rate``, ``ratio_to_raw_nats``) and raw sqlite3 executemany of the same number of
rows. Prints a table, writes JSON and an offline HTML plot of progress.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import nats

from overwatch_lab.bench import ceilings
from overwatch_lab.bench.ceilings import ORG, say
from overwatch_lab.bench.plot import write_html
from overwatch_lab.config import LabConfig, MiB
from overwatch_lab.lab import Lab
from overwatch_lab.protocol.subjects import CONSUMER_TELEMETRY, STREAM_TELEMETRY

PAUSE_UNTIL = "2100-01-01T00:00:00Z"


def _pause_telemetry(lab: Lab, *, paused: bool) -> list[str]:
    """Pause (or resume) every telemetry consumer of the lab (the partition durables too)."""

    async def go() -> list[str]:
        nc = await nats.connect(lab.nats_url, **lab.nats_auth.kwargs())
        try:
            js = nc.jetstream()
            names = [
                c.name
                for c in await js.consumers_info(STREAM_TELEMETRY)
                if c.name.startswith(CONSUMER_TELEMETRY)
            ]
            for name in names:
                if paused:
                    await js.pause_consumer(STREAM_TELEMETRY, name, PAUSE_UNTIL)
                else:
                    await js.resume_consumer(STREAM_TELEMETRY, name)
            return names
        finally:
            await nc.close()

    return asyncio.run(go())


def _phase(
    lab: Lab, *, entities: int, messages: int, run: int, backlog: bool, timeout_s: float
) -> dict[str, Any]:
    """Publish ``messages`` from a separate process and wait until the lab has settled them all."""
    pub = subprocess.Popen(
        ceilings.publisher_argv(lab.nats_url, entities, messages, run),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=lab.nats_auth.env(),
    )  # fmt: skip
    try:
        assert pub.stdin is not None and pub.stdout is not None
        json.loads(pub.stdout.readline())  # ready
        if backlog:
            paused = _pause_telemetry(lab, paused=True)
            say(f"  backlog: paused {', '.join(paused)}; publishing {messages} messages first")
        before = lab.stats()["telemetry-worker"]
        acked0, quarantined0 = before["acked"], before["quarantined"]
        pub.stdin.write("go\n")
        pub.stdin.flush()
        t_go = time.time()
        if backlog:
            pub_result = json.loads(pub.stdout.readline())
            say(
                f"  backlog: published in {pub_result['ended_at'] - pub_result['started_at']:.2f} s; resuming"
            )
            _pause_telemetry(lab, paused=False)
            t_go = time.time()
        progress: list[tuple[float, int]] = []
        deadline = time.monotonic() + timeout_s
        done_at = None
        last_print = 0.0
        while time.monotonic() < deadline:
            st = lab.stats()["telemetry-worker"]
            settled = st["acked"] - acked0 + st["quarantined"] - quarantined0
            now = time.time()
            progress.append((now - t_go, st["acked"] - acked0))
            if now - last_print >= 1.0:
                last_print = now
                say(
                    f"  ingested {st['acked'] - acked0:>8}/{messages}  lag {st['lag']:>7}  quarantined {st['quarantined']}"
                )
            if settled >= messages:
                done_at = max(st["last_batch_at"] or now, t_go)
                break
            time.sleep(0.05)
        if not backlog:
            pub_result = json.loads(pub.stdout.readline())
        pub.wait(30)
    finally:
        if pub.poll() is None:
            pub.kill()
            pub.wait()
    if done_at is None:
        raise TimeoutError(f"ingest did not finish within {timeout_s} s")
    started = t_go if backlog else pub_result["started_at"]
    return {
        "s": done_at - started,
        "rate": messages / (done_at - started),
        "publish_rate": messages / (pub_result["ended_at"] - pub_result["started_at"]),
        "progress": progress,
    }


def run(
    *,
    entities: int,
    messages: int,
    out_dir: Path,
    sync_interval: str = "2m",
    workers: int | None = None,
    timeout_s: float = 300,
) -> dict[str, Any]:
    """Run the benchmark and return the result dict (also written to ``out_dir``).

    ``workers``: telemetry worker processes (None: the lab's default for this machine).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="overwatch-bench-") as tmp:
        extra: dict[str, Any] = {} if workers is None else {"workers": workers}
        cfg = LabConfig(data_dir=Path(tmp), sync_interval=sync_interval, **extra).with_stream_limits(
            STREAM_TELEMETRY, max_msgs=max(messages * 3, 100_000), max_bytes=max(messages * 3072, 256 * MiB)
        )
        say(f"booting lab in {tmp} (sync_interval={sync_interval}, {cfg.workers} telemetry worker processes)")
        with Lab(cfg) as lab:
            lab.register_org(ORG, "Bench org")
            records = [
                {"org_id": ORG, "entity_id": f"bench-{k:05d}", "entity_type": "aircraft_multirotor"}
                for k in range(entities)
            ]
            lab.register_entities(records, timeout=120)
            say(
                f"registered {entities} entities; phase 1 (live): the publisher publishes while the lab ingests"
            )
            live = _phase(
                lab, entities=entities, messages=messages, run=0, backlog=False, timeout_s=timeout_s
            )
            say("phase 2 (backlog): the lab's telemetry consumers paused while the publisher publishes")
            backlog = _phase(
                lab, entities=entities, messages=messages, run=1, backlog=True, timeout_s=timeout_s
            )
            stats = lab.stats()
            rows = int(lab.frames.telemetry(org_id=ORG).shape[0])
            states = lab.frames.states()
            say("measuring the raw nats-py fetch() ceiling on the same messages")
            raw_s = asyncio.run(ceilings.raw_consume(lab.nats_url, lab.nats_auth, messages, 2000))
        say(
            f"measuring the ceiling: a fresh nats-server, the same publisher, and a pipelined pull "
            f"consumer ({ceilings.CEILING_IN_FLIGHT} x {ceilings.CEILING_BATCH} in flight)"
        )
        ceiling = ceilings.ceiling(
            cfg=cfg, entities=entities, messages=messages, sync_interval=sync_interval, timeout_s=timeout_s
        )
        raw_sql_s = ceilings.raw_sqlite(messages, 28)
        say(
            f"measuring the sqlite3 ceiling: the lab's rows, schema and pragmas, batches of {ceilings.SQLITE_BATCHES}"
        )
        sqlite = ceilings.sqlite_ceiling(ceilings.history_rows(entities, messages))
    tw = stats["telemetry-worker"]
    result = {
        "benchmark": "ingest",
        "entities": entities,
        "messages": messages,
        "sync_interval": sync_interval,
        "workers": cfg.workers,
        "publish_rate": live["publish_rate"],
        "end_to_end_s": live["s"],
        "end_to_end_rate": live["rate"],
        "backlog_s": backlog["s"],
        "backlog_rate": backlog["rate"],
        "raw_nats_pull_s": raw_s,
        "raw_nats_pull_rate": messages / raw_s,
        "raw_sqlite_rate": messages / raw_sql_s,
        **sqlite,
        "db_rows_per_s": 2 * messages / tw["db_s"] if tw.get("db_s") else None,
        "ratio_to_raw_nats": live["rate"] / (messages / raw_s),
        **ceiling,
        "ratio_to_ceiling": live["rate"] / ceiling["ceiling_rate"],
        "ratio_backlog_to_ceiling": backlog["rate"] / ceiling["ceiling_backlog_rate"],
        "ceiling_method": ceilings.CEILING_METHOD,
        "history_rows": rows,
        "kv_documents": int(states.shape[0]),
        "lost": 2 * messages - rows,
        "quarantined": tw["quarantined"],
        "batches": tw["batches"],
        "peak_batch": tw["peak_batch_size"],
        "stage_s": {k: tw.get(k, 0.0) for k in ("decode_s", "db_s", "kv_s", "busy_s")},
        "kv_cas_conflicts": stats["kv"]["cas_conflicts"],
        "cpu_count": os.cpu_count(),
        "progress": live["progress"],
        "backlog_progress": backlog["progress"],
    }
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out_dir / f"ingest-{stamp}.json"
    path.write_text(json.dumps(result, indent=2))
    result["json_path"] = str(path)
    result["plot_path"] = str(_plot(result, out_dir / f"ingest-{stamp}.html"))
    return result


def _plot(result: dict[str, Any], path: Path) -> Path:
    """Write an offline HTML plot (inline BokehJS) of messages ingested over time, both phases."""
    from bokeh.plotting import figure

    fig = figure(
        title=f"ingest: {result['messages']} msgs, {result['entities']} entities — live "
        f"{result['end_to_end_rate']:.0f} msg/s (ceiling {result['ceiling_rate']:.0f}), backlog "
        f"{result['backlog_rate']:.0f} msg/s (ceiling {result['ceiling_backlog_rate']:.0f})",
        x_axis_label="seconds since the first publish (live) / since the resume (backlog)",
        y_axis_label="messages committed (KV + history) and acked",
        width=900,
        height=420,
    )
    for key, label, colour in (("progress", "live", "#1f77b4"), ("backlog_progress", "backlog", "#d62728")):
        pts = result[key]
        fig.line([p[0] for p in pts], [p[1] for p in pts], line_width=2, legend_label=label, color=colour)
    fig.legend.location = "bottom_right"
    return write_html(fig, path, "overwatch-lab ingest benchmark")


def report(result: dict[str, Any]) -> str:
    """Human-readable summary of a result."""
    st = result["stage_s"]
    return "\n".join(
        [
            f"ingest benchmark: {result['messages']} messages per phase, {result['entities']} entities, "
            f"sync_interval={result['sync_interval']}, {result['cpu_count']} cores, "
            f"{result['workers']} telemetry worker processes",
            f"  publisher (separate process) : {result['publish_rate']:>10.0f} msg/s",
            f"  live: end to end             : {result['end_to_end_rate']:>10.0f} msg/s  ({result['end_to_end_s']:.2f} s)",
            f"  live: ceiling                : {result['ceiling_rate']:>10.0f} msg/s  "
            f"(same publisher concurrently, {result['ceiling_publish_rate']:.0f} msg/s)",
            f"  live: ratio                  : {result['ratio_to_ceiling']:>10.2f}",
            f"  backlog: end to end          : {result['backlog_rate']:>10.0f} msg/s  ({result['backlog_s']:.2f} s)",
            f"  backlog: ceiling             : {result['ceiling_backlog_rate']:>10.0f} msg/s  "
            f"(+ json.loads: {result['ceiling_json_rate']:.0f} msg/s)",
            f"  backlog: ratio               : {result['ratio_backlog_to_ceiling']:>10.2f}",
            f"  old ceiling: fetch()+ack     : {result['raw_nats_pull_rate']:>10.0f} msg/s  (lab's broker, after the lab)",
            f"  ceiling: raw sqlite3 insert  : {result['raw_sqlite_rate']:>10.0f} rows/s  (1 unique index, 28 floats)",
            "  ceiling: sqlite3, lab schema : "
            + ", ".join(f"{b}: {result[f'sqlite_ceiling_rate_{b}']:.0f}" for b in ceilings.SQLITE_BATCHES)
            + " rows/s per batch size (CPU-bound: "
            + ", ".join(f"{result[f'sqlite_ceiling_cpu_rate_{b}']:.0f}" for b in ceilings.SQLITE_BATCHES)
            + ")",
            f"  lab's libSQL stage           : {result['db_rows_per_s'] or 0:>10.0f} rows/s  "
            f"(history rows / libSQL seconds, summed over processes)",
            f"  telemetry worker time (s)    : decode {st['decode_s']:.2f}, libSQL {st['db_s']:.2f}, "
            f"KV {st['kv_s']:.2f}, busy {st['busy_s']:.2f} (summed over processes)",
            f"  history rows {result['history_rows']}, lost {result['lost']}, quarantined {result['quarantined']}, "
            f"batches {result['batches']} (peak {result['peak_batch']}), KV CAS conflicts {result['kv_cas_conflicts']}",
            f"  JSON: {result['json_path']}",
            f"  plot: {result['plot_path']}",
        ]
    )
