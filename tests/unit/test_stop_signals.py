"""The stop ladder with real signals sent to this process (handlers restored afterwards)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from overwatch_lab.stop_signals import STOP_SIGNALS, StopSignals, arm_early
from tests.integration.conftest import wait_for


@pytest.fixture
def restore_handlers() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


async def test_first_signal_asks_to_stop_and_second_forces(restore_handlers):
    firsts: list[signal.Signals] = []
    forced: list[signal.Signals] = []
    with StopSignals(on_first=firsts.append, on_force=forced.append) as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        await wait_for(signals.stop_requested.is_set, what="the first signal")
        assert signals.first is signal.SIGTERM and firsts == [signal.SIGTERM] and forced == []
        os.kill(os.getpid(), signal.SIGINT)
        await wait_for(lambda: forced, what="the second signal")
        assert forced == [signal.SIGINT] and firsts == [signal.SIGTERM]


async def test_a_signal_before_the_loop_took_over_is_replayed(restore_handlers):
    arm_early()
    signal.raise_signal(signal.SIGINT)  # to this thread: handled before the next line, recorded
    forced: list[signal.Signals] = []
    with StopSignals(on_force=forced.append) as signals:
        assert signals.first is signal.SIGINT and signals.stop_requested.is_set()
        os.kill(os.getpid(), signal.SIGINT)
        await wait_for(lambda: forced, what="the second signal")
    assert forced == [signal.SIGINT]


async def test_request_stop_without_a_signal(restore_handlers):
    with StopSignals(on_force=lambda sig: None) as signals:
        signals.request_stop()
        await wait_for(signals.stop_requested.is_set, what="the stop request")
        assert signals.first is None
