"""A telemetry worker process: the child the lab starts to consume some telemetry partitions.

Run as ``python -m overwatch_lab.workers.process``; the lab (:mod:`.processes`) starts it and owns
it. It reads one JSON line on stdin (:func:`child_spec`: the lab's config, broker URL and
credentials, the durables it consumes; on stdin so no secret is in ``ps``), then:

- opens the libSQL store (the owner migrated it; a second writer of one SQLite file waits up to
  the busy timeout, then the batch is held, never quarantined), connects to the broker as
  ``overwatch-lab-worker-{n}``, opens the entity KV bucket;
- builds a :class:`~.store_registry.StoreRegistry` (what exists comes from libSQL, not from the
  lab's memory) and one :class:`~.telemetry.TelemetryWorker` + :class:`~.base.ConsumerLoop` per
  durable;
- writes ``{"ready": ...}`` on stdout once every loop is bound, then ``{"stats": {durable:
  WorkerStats}}`` every ``STATS_PERIOD_S``, and ``{"fetched": {durable: runs}}`` for every batch
  fetched (stream sequences as flat runs, :func:`~overwatch_lab.fetched_union.runs`);
- on SIGTERM (the lab stopping it, or the kernel because the lab died: PR_SET_PDEATHSIG) asks the
  loops to finish their batch (held and buffered messages are NAKed), writes its last stats and
  exits 0. A loop that fails ends the process with an error: the lab restarts it, and what it
  had not acknowledged is redelivered after ``ack_wait_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg

from overwatch_lab import logs
from overwatch_lab.broker.connect import connect
from overwatch_lab.broker.provision import open_kv
from overwatch_lab.config import LabConfig
from overwatch_lab.fetched_union import runs, stream_seq
from overwatch_lab.kvstate import EntityKV
from overwatch_lab.nats_auth import NatsAuth
from overwatch_lab.protocol import subjects as s
from overwatch_lab.store.database import Store
from overwatch_lab.workers.base import ConsumerLoop
from overwatch_lab.workers.partitioned import partition_worker
from overwatch_lab.workers.progress import consumer_progress
from overwatch_lab.workers.store_registry import StoreRegistry
from overwatch_lab.workers.telemetry import TelemetryWorker

log = logging.getLogger(__name__)

STATS_PERIOD_S = 0.5
_SCALARS = (str, int, float, bool, type(None))


def child_spec(
    config: LabConfig, *, name: str, nats_url: str, nats_auth: NatsAuth, durables: list[str]
) -> dict[str, Any]:
    """What the lab writes on a worker process's stdin (one JSON object)."""
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, Path):
            value = str(value)
        if isinstance(value, _SCALARS):
            fields[f.name] = value
    fields.update(workers=0, nats_url=None)  # the child runs no children; the URL comes apart
    fields.update(replicas=None)  # nor provisions anything (replicas > 1 would need the URL)
    return {
        "name": name,
        "nats_url": nats_url,
        "nats_auth": nats_auth.to_dict(),
        "durables": durables,
        "config": fields,
    }


def _config_of(fields: dict[str, Any]) -> LabConfig:
    known = {f.name: f for f in dataclasses.fields(LabConfig)}
    kwargs = {k: v for k, v in fields.items() if k in known}
    for key in ("data_dir", "nats_creds", "nats_server_path"):
        if kwargs.get(key) is not None:
            kwargs[key] = Path(kwargs[key])
    return LabConfig(**kwargs)


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


async def run(spec: dict[str, Any]) -> None:
    """Consume ``spec["durables"]`` until SIGTERM (see the module docstring)."""
    cfg = _config_of(spec["config"])
    name = str(spec["name"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        store = Store(cfg.db_path, autocheckpoint=cfg.checkpoint_period_s == 0)  # the lab checkpoints
        await store.open()
        stack.push_async_callback(store.close)
        auth = NatsAuth.from_dict(spec.get("nats_auth") or {}, "the worker spec's nats_auth")
        nc = await connect(spec["nats_url"], auth=auth, name=f"overwatch-lab-{name}")
        stack.push_async_callback(_close, nc)
        js = nc.jetstream()
        ekv = EntityKV(await open_kv(js), attempts=cfg.kv_cas_attempts)
        workers: list[TelemetryWorker] = []

        def forget(entity_id: str) -> None:
            for w in workers:
                w.forget(entity_id)

        registry = StoreRegistry(store, grace_s=cfg.registration_grace_s, forget=forget)
        await registry.reload()
        for stream, durable in (
            (s.STREAM_ORGANIZATIONS, s.CONSUMER_ORGANIZATION),
            (s.STREAM_ENTITIES, s.CONSUMER_ENTITY),
        ):
            registry.add_progress_source(stream, partial(consumer_progress, js, stream, durable))
        workers.extend(partition_worker(store, ekv, registry, d) for d in spec["durables"])
        loops = [ConsumerLoop(w, nc, js, cfg, partial(_report_fetched, w.durable)) for w in workers]

        def stats() -> dict[str, Any]:
            return {"stats": {w.durable: w.stats.snapshot() for w in workers}, "reloads": registry.reloads}

        async with asyncio.TaskGroup() as tg:
            readies = [asyncio.Event() for _ in range(len(loops) + 1)]
            tasks = [
                tg.create_task(lp.run(r), name=f"loop:{lp.worker.durable}")
                for lp, r in zip(loops, readies[:-1], strict=True)
            ]
            tasks.append(tg.create_task(registry.watch(nc, readies[-1], stop), name="registry-watch"))
            reporter = tg.create_task(_report(stats, stop), name="stats-report")
            async with asyncio.timeout(cfg.ready_timeout_s):
                for ready in readies:
                    await ready.wait()
            _emit({"ready": [w.durable for w in workers], "pid": os.getpid()})
            log.info("%s consuming %s", name, ", ".join(spec["durables"]))
            await stop.wait()  # a loop that fails cancels this wait: the group raises, exit 1
            for lp in loops:
                lp.request_stop()
            await asyncio.wait([*tasks, reporter])
        _emit(stats())


def _report_fetched(durable: str, msgs: list[Msg]) -> None:
    """Tell the lab which stream sequences were fetched, at once: before they are handled (and
    acknowledged), so a process killed later cannot leave an acknowledged sequence unreported,
    which the lab's stream watch would count as discarded once the stream removed it."""
    _emit({"fetched": {durable: runs(map(stream_seq, msgs))}})


async def _report(stats: Any, stop: asyncio.Event) -> None:
    while not stop.is_set():
        _emit(stats())
        try:
            async with asyncio.timeout(STATS_PERIOD_S):
                await stop.wait()
        except TimeoutError:
            pass


async def _close(nc: Any) -> None:
    with contextlib.suppress(Exception):
        await nc.close()


def main() -> int:
    """Entry point: read the spec line from stdin, run, exit 0 after a clean stop."""
    logs.configure(logging.INFO, "%(levelname)s %(name)s: %(message)s", sys.stderr)
    line = sys.stdin.readline()
    if not line:
        log.error("no spec on stdin: this process is started by the lab (overwatch_lab.workers.processes)")
        return 2
    spec = json.loads(line)
    try:
        asyncio.run(run(spec))
    except Exception:
        log.exception("%s failed", spec.get("name"))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
