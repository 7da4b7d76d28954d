"""Lab helpers for observing the fabric: counters, DataFrames, quarantine records.

Mixed into :class:`overwatch_lab.lab.Lab`; blocking calls, safe from any thread but the lab's own.
"""

from __future__ import annotations

import json
from typing import Any

import nats.js.errors as js_errors
import pandas as pd
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from overwatch_lab.errors import LabStateError
from overwatch_lab.protocol import subjects as s
from overwatch_lab.store import queries

STATS_BUCKET = "OVERWATCH_LAB_STATS"
STATS_KEY = "owner"


async def stats_kv(js: JetStreamContext) -> KeyValue:
    """The (memory, history 1) bucket where an owner lab publishes its counters; created if absent."""
    try:
        return await js.key_value(STATS_BUCKET)
    except js_errors.BucketNotFoundError:
        return await js.create_key_value(
            KeyValueConfig(bucket=STATS_BUCKET, history=1, storage=StorageType.MEMORY)
        )


async def read_published_stats(js: JetStreamContext) -> dict[str, dict[str, Any]]:
    """The counters the owner lab published last ({} before the first publication)."""
    try:
        entry = await (await js.key_value(STATS_BUCKET)).get(STATS_KEY)
    except js_errors.NotFoundError:  # no bucket or no key yet
        return {}
    return json.loads(entry.value) if entry.value else {}


class ObserveHelpers:
    """Counters and frames (see the module docstring)."""

    def stats(self) -> dict[str, dict[str, Any]]:
        """Counters per worker (handled, acked, ignored, retried, quarantined, lag…) and the synchronizer's;
        ``broker`` (restarts of the embedded broker) and ``provision`` (objects recreated).

        A worker that holds messages for an infrastructure fault (database full, read-only,
        locked, unreachable) says so: ``holding`` (the alarm), ``hold_reason``, ``hold_since``,
        ``held`` (messages kept unacked now), ``hold_attempts``, ``holds`` (episodes so far) and
        ``last_hold_s`` (how long the last one lasted).

        ``stats()["streams"][stream]`` holds each stream's counters (see
        :class:`~overwatch_lab.streamwatch.StreamCounters`): ``discarded`` messages the stream
        removed before a worker saw them, ``dropped`` quarantine records removed by its limits,
        consumer ``lag`` and its trend ``lag_rate_per_s``.

        An attached lab reads the owner's counters, which the owner publishes every
        ``stats_period_s`` to the ``OVERWATCH_LAB_STATS`` KV bucket (empty until the first).
        """
        f = self._require()
        if not self._owner:
            return self.call(read_published_stats(f.js))
        return self._local_stats()

    def _local_stats(self) -> dict[str, dict[str, Any]]:
        f = self._booted()  # also while starting: the stats publisher runs from boot
        out: dict[str, dict[str, Any]] = {loop.worker.name: loop.worker.stats.snapshot() for loop in f.loops}
        if f.sync is not None:
            out["synchronizer"] = f.sync.stats.snapshot()
        if f.commands is not None:
            out["commands"] = f.commands.stats.snapshot()
        if f.streams is not None:
            out["streams"] = f.streams.snapshot()
        out["kv"] = {"cas_conflicts": f.ekv.conflicts}
        if f.broker is not None:
            out["broker"] = f.broker.stats.snapshot()
        if f.repair is not None:
            out["provision"] = f.repair.stats.snapshot()
        return out

    def sync_now(self) -> dict[str, Any]:
        """Run one synchronizer pass now and return its cumulative counters."""
        f = self._require()
        if f.sync is None:
            raise LabStateError("an attached lab has no synchronizer; call sync_now() on the owner")
        return self.call(f.sync.run_pass()).snapshot()

    def telemetry_frame(self, **filters: Any) -> pd.DataFrame:
        """Telemetry history as a DataFrame (see ``store.queries.telemetry_frame`` for filters)."""
        return queries.telemetry_frame(self.db_url, **filters)

    def entities_frame(self) -> pd.DataFrame:
        """The ``entities`` table as a DataFrame."""
        return queries.entities_frame(self.db_url)

    def device_events_frame(self, **filters: Any) -> pd.DataFrame:
        """Device events (bootsequence, shutdown, …) as a DataFrame."""
        return queries.device_events_frame(self.db_url, **filters)

    def quarantine_frame(self) -> pd.DataFrame:
        """Every quarantine record in CONSTELLATION_QUARANTINE, with the reason for each."""
        f = self._require()

        async def go() -> list[dict[str, Any]]:
            records: list[dict[str, Any]] = []
            psub = await f.js.pull_subscribe(s.QUARANTINE_ALL, stream=s.STREAM_QUARANTINE)
            try:
                while True:
                    try:
                        msgs = await psub.fetch(500, timeout=0.3)
                    except TimeoutError:
                        break
                    for m in msgs:
                        records.append(json.loads(m.data))
                        await m.ack()
                    if msgs[-1].metadata.num_pending == 0:
                        break
            finally:
                await psub.unsubscribe()
            return records

        records = self.call(go())
        columns = [
            "quarantined_at", "worker", "error", "original_subject", "num_delivered",
            "stream_sequence", "source_stream", "source_consumer", "original_data",
        ]  # fmt: skip
        return pd.DataFrame(records, columns=columns)
