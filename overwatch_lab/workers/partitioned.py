"""Telemetry by partition: one TelemetryWorker per durable, dealt to processes, counters summed.

The telemetry stream stores each message with a partition token (docs/wire.md "Telemetry
partitions"); every partition has its own durable, ``telemetry-processor-p{k}``, read by one
:class:`~overwatch_lab.workers.telemetry.TelemetryWorker` (in the lab's process, or in a worker
process of :mod:`overwatch_lab.workers.processes`). The unpartitioned ``telemetry-processor``
stays with the lab's own process. Pure helpers, shared by the lab and its worker processes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from overwatch_lab.kvstate import EntityKV
from overwatch_lab.protocol import subjects as s
from overwatch_lab.registry import Registry
from overwatch_lab.store.database import Store
from overwatch_lab.workers.telemetry import TelemetryWorker

AGGREGATE = TelemetryWorker.name
"""``lab.stats()`` key of the sum over every telemetry durable, wherever it runs."""


def stats_key(durable: str) -> str:
    """``lab.stats()`` key of one telemetry durable: ``telemetry-worker.p{k}``, or
    ``telemetry-worker.unpartitioned`` for ``telemetry-processor``."""
    k = s.partition_of_durable(durable)
    return f"{AGGREGATE}.p{k}" if k is not None else f"{AGGREGATE}.unpartitioned"


def partition_worker(store: Store, ekv: EntityKV, registry: Registry, durable: str) -> TelemetryWorker:
    """A TelemetryWorker on ``durable`` (its name stays ``telemetry-worker``: quarantine subject).

    The worker reads its durable from the instance, so one class serves every partition.
    """
    worker = TelemetryWorker(store, ekv, registry)
    worker.durable = durable
    return worker


def deal(durables: Sequence[str], processes: int) -> list[list[str]]:
    """Deal ``durables`` round-robin to ``processes`` processes (empty hands are dropped)."""
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    hands: list[list[str]] = [[] for _ in range(processes)]
    for i, durable in enumerate(durables):
        hands[i % processes].append(durable)
    return [h for h in hands if h]


_MAX = frozenset({"last_batch_at", "peak_batch_size", "last_batch_size", "last_hold_s", "hold_attempts"})
_MIN = frozenset({"hold_since"})
# What a worker is doing now, not what it did: a restarted worker process starts these afresh.
_NOW = frozenset({"held", "deferred", "lag", "hold_attempts", "last_batch_size", "hold_since"})


def carry_over(before: Mapping[str, Any], now: Mapping[str, Any]) -> dict[str, Any]:
    """The WorkerStats of one durable across a restart of its worker process.

    ``before`` is what the earlier processes counted, ``now`` what the current one reports:
    cumulative counters and seconds are summed (so ``lab.stats()`` never goes backwards),
    ``peak_batch_size`` / ``last_batch_at`` / ``last_hold_s`` are the largest, and what describes
    the present (``lag``, ``held``, ``deferred``, ``holding`` …) is the current process's.
    """
    out = dict(now)
    for key, value in before.items():
        if isinstance(value, bool) or key in _NOW:
            continue
        have = out.get(key)
        if isinstance(value, int | float):
            if have is None:
                out[key] = value
            elif key in _MAX:
                out[key] = max(have, value)
            elif isinstance(have, int | float) and not isinstance(have, bool):
                out[key] = have + value
        elif have is None:
            out[key] = value
    return out


def aggregate(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Sum the WorkerStats snapshots of several telemetry durables into one.

    Counters, ``lag`` and seconds are summed; ``holding`` is any; ``last_batch_at``, peak and
    last batch sizes, ``last_hold_s`` and ``hold_attempts`` are the largest; ``hold_since`` the
    earliest; ``hold_reason`` / ``last_error`` the first one set (a holding part's first).
    """
    parts = sorted(parts, key=lambda p: not p.get("holding"))
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            have = out.get(key)
            if isinstance(value, bool):
                out[key] = bool(have) or value
            elif isinstance(value, int | float):
                if have is None:
                    out[key] = value
                elif key in _MAX:
                    out[key] = max(have, value)
                elif key in _MIN:
                    out[key] = min(have, value)
                else:
                    out[key] = have + value
            elif key not in out or have is None:
                out[key] = value
    return out
