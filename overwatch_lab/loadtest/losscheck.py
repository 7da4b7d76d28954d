"""The final check of a load test: every message the stream stored has exactly one history row.

The simulators publish with core NATS and ``Nats-Msg-Id`` = ``message_uid``; what the telemetry
stream stored is what JetStream acknowledged. :func:`check_stored` reads those messages back by
stream sequence (an ordered consumer, headers only), loads their uids into a temporary table of
a read-only connection to the lab's database and asks for the uids without a row (lost, unless
quarantined) and with more than one (duplicated).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import sqlite3
from collections.abc import Mapping
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from overwatch_lab.lab import Lab
from overwatch_lab.protocol.subjects import STREAM_TELEMETRY

log = logging.getLogger(__name__)

READBACK_TIMEOUT_S = 300.0  # s at least; more for big runs (READBACK_MIN_RATE)
READBACK_MIN_RATE = 20_000  # msg/s the read-back is allowed to be as slow as
SHOWN = 100  # uids listed in the result (all are counted)


async def read_back(nc: NATS, first: int, last: int) -> list[tuple[int, str]]:
    """(stream seq, message_uid) of every telemetry message stored in [first, last] (headers only)."""
    out: list[tuple[int, str]] = []
    if last < first:
        return out
    done = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        out.append((seq, (msg.headers or {}).get("Nats-Msg-Id", "")))
        if seq >= last or msg.metadata.num_pending == 0:
            done.set()

    sub = await nc.jetstream().subscribe(
        ">",  # every stored subject: partitioned telemetry is stored under its own root
        stream=STREAM_TELEMETRY,
        cb=on_msg,
        ordered_consumer=True,
        pending_msgs_limit=1_000_000,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=first, headers_only=True
        ),
    )
    try:
        async with asyncio.timeout(max(READBACK_TIMEOUT_S, (last - first) / READBACK_MIN_RATE)):
            await done.wait()
    finally:
        await sub.unsubscribe()
    return [(s, u) for s, u in out if s <= last]


def quarantined_uids(lab: Lab) -> set[str]:
    """message_uids of the telemetry records in the lab's quarantine (empty if unreadable)."""
    out: set[str] = set()
    try:
        frame = lab.frames.quarantine()
    except Exception as exc:  # no quarantine access (e.g. the stream is gone): nothing excluded
        log.info("quarantine not readable: %r", exc)
        return out
    for raw in frame.get("original_data", []):
        with contextlib.suppress(ValueError, TypeError):
            body = json.loads(base64.b64decode(raw))
            if isinstance(body, dict) and isinstance(body.get("message_uid"), str):
                out.add(body["message_uid"])
    return out


def lookup(db_path: str, stored: list[tuple[int, str]]) -> tuple[list[tuple[int, str]], list[str]]:
    """(seq, uid) without a history row, and uids with more than one."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30.0)
    try:
        conn.execute("CREATE TEMP TABLE expected (uid TEXT PRIMARY KEY, seq INTEGER) WITHOUT ROWID")
        conn.executemany("INSERT OR IGNORE INTO temp.expected VALUES (?, ?)", [(u, s) for s, u in stored])
        missing = conn.execute(
            "SELECT seq, uid FROM temp.expected e WHERE NOT EXISTS "
            "(SELECT 1 FROM telemetry t WHERE t.message_uid = e.uid) ORDER BY seq"
        ).fetchall()
        dups = conn.execute(
            "SELECT t.message_uid FROM telemetry t JOIN temp.expected e ON e.uid = t.message_uid "
            "GROUP BY t.message_uid HAVING COUNT(*) > 1"
        ).fetchall()
    finally:
        conn.close()
    return [(int(s), str(u)) for s, u in missing], [str(u) for (u,) in dups]


async def check_stored(
    nc: NATS, lab: Lab, first: int, last: int, steps: Mapping[int, tuple[int, int]]
) -> dict[str, Any]:
    """Check stream sequences [first, last]; ``steps`` maps a step index to its (after, upto] range."""
    stored = await read_back(nc, first, last)
    uids = [u for _, u in stored]
    quarantined = await asyncio.to_thread(quarantined_uids, lab) & set(uids)
    missing, dups = await asyncio.to_thread(lookup, lab.db_url, stored)
    lost = [(s, u) for s, u in missing if u not in quarantined]
    per_step: dict[int, int] = {}
    for s, _ in lost:
        for index, (after, upto) in steps.items():
            if after < s <= upto:
                per_step[index] = per_step.get(index, 0) + 1
    return {
        "stored": last - first + 1,
        "read_back": len(stored),
        "not_in_stream": last - first + 1 - len(stored),  # discarded by the limits before the check
        "checked": len(uids),
        "lost": len(lost),
        "lost_uids": [u for _, u in lost[:SHOWN]],
        "duplicated": len(dups),
        "duplicated_uids": dups[:SHOWN],
        "stream_duplicates": len(uids) - len(set(uids)),
        "quarantined": len(quarantined),
        "per_step_lost": per_step,
    }
