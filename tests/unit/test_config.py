"""LabConfig defaults that are decisions, not docs/wire.md copies."""

from __future__ import annotations

import math
import os

import pytest

from overwatch_lab.config import (
    DEFAULT_STREAMS,
    DEFAULT_TELEMETRY_PARTITIONS,
    WORKERS_ENV,
    LabConfig,
    default_workers,
)
from overwatch_lab.errors import ConfigError
from overwatch_lab.protocol import subjects as s
from simulators.fleets import load_1000

STORED_BYTES_PER_MSG = (
    480  # measured: load-1000 telemetry in a file stream (payload ~360 B + subject, msg id)
)


def test_the_telemetry_stream_holds_a_minute_of_the_load_1000_fleet():
    tel = DEFAULT_STREAMS[s.STREAM_TELEMETRY]
    devices = load_1000.MULTIROTORS + load_1000.FIXED_WINGS + load_1000.GROUND_VEHICLES + load_1000.USVS
    minute = 60 * (devices + load_1000.SENSORS) * load_1000.MESSAGES_PER_DEVICE_S  # ~1.23M
    assert tel.max_msgs >= minute
    assert tel.max_bytes >= minute * STORED_BYTES_PER_MSG


def test_the_quarantine_is_sized_not_to_be_the_first_thing_lost():
    q = DEFAULT_STREAMS[s.STREAM_QUARANTINE]
    assert (q.max_msgs, q.max_bytes, q.discard) == (100_000, 512 * 1024 * 1024, "old")


@pytest.mark.parametrize("field", ["stale_after_s", "history_max_age_s", "sync_period_s", "ack_wait_s"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_numbers_are_refused(field, value):  # nan passed every `x <= 0` check
    with pytest.raises(ConfigError, match=f"{field} must be a finite number"):
        LabConfig(**{field: value})


def test_default_workers_is_one_process_per_core_up_to_the_partitions(monkeypatch):
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert default_workers() == 2 == LabConfig().workers
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert default_workers() == DEFAULT_TELEMETRY_PARTITIONS
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert default_workers() == 1
    monkeypatch.setenv(WORKERS_ENV, "0")  # telemetry in the lab's own process
    assert LabConfig().workers == 0
    monkeypatch.setenv(WORKERS_ENV, "two")
    with pytest.raises(ConfigError, match=WORKERS_ENV):
        default_workers()
    assert LabConfig(workers=9, telemetry_partitions=3).workers == 3  # never a process without a partition
    with pytest.raises(ConfigError, match="workers"):
        LabConfig(workers=-1)
