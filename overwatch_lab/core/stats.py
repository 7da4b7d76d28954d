"""The counters an owner lab publishes for attached labs and dashboards (``OVERWATCH_LAB_STATS``).

A memory bucket with history 1 and one key: the owner puts its ``stats()`` there every
``stats_period_s``; an attached lab reads it. Counters are not data, so publishing is best effort.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import nats.errors
import nats.js.errors as js_errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

STATS_BUCKET = "OVERWATCH_LAB_STATS"
STATS_KEY = "owner"
Stats = dict[str, Any]
"""Counters by part (``dict`` each), plus ``processes``: a list of ``{role, name, pid}``."""

log = logging.getLogger(__name__)


async def stats_kv(js: JetStreamContext, replicas: int = 1) -> KeyValue:
    """The (memory, history 1) bucket where an owner lab publishes its counters; created if absent
    (with ``replicas``: ``LabConfig.replicas`` on a cluster)."""
    try:
        return await js.key_value(STATS_BUCKET)
    except js_errors.BucketNotFoundError:
        return await js.create_key_value(
            KeyValueConfig(bucket=STATS_BUCKET, history=1, storage=StorageType.MEMORY, replicas=replicas)
        )


async def read_published_stats(js: JetStreamContext) -> Stats:
    """The counters the owner lab published last ({} before the first publication)."""
    try:
        entry = await (await js.key_value(STATS_BUCKET)).get(STATS_KEY)
    except js_errors.NotFoundError:  # no bucket or no key yet
        return {}
    out: Stats = json.loads(entry.value) if entry.value else {}
    return out


async def publish_stats(
    js: JetStreamContext,
    snapshot: Callable[[], Stats],
    period_s: float,
    stop: asyncio.Event,
    replicas: int = 1,
) -> None:
    """Put ``snapshot()`` into the stats bucket every ``period_s`` until ``stop`` is set (creating
    it with ``replicas`` if absent)."""
    kv: KeyValue | None = None
    while not stop.is_set():
        try:
            if kv is None:  # the bucket is in memory: a restarted broker has lost it
                kv = await stats_kv(js, replicas)
            await kv.put(STATS_KEY, json.dumps(snapshot(), default=str).encode())
        except (nats.errors.Error, TimeoutError) as exc:  # best effort: counters are not data
            kv = None
            log.debug("stats publish failed: %r", exc)
        try:
            async with asyncio.timeout(period_s):
                await stop.wait()
        except TimeoutError:
            pass
