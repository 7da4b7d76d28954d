"""SIGINT/SIGTERM for a foreground command: the first asks for a clean stop, a second forces exit.

Only CLI entry points use this (a Lab never installs signal handlers). The signals are received
with the running loop's ``add_signal_handler``: the C-level handler only writes the signal
number to the loop's wakeup fd, and :class:`StopSignals` sees it later as an ordinary loop
callback, so no lock is ever taken inside a signal handler. (A ``threading.Event.set()`` in a
Python signal handler can deadlock against the main thread's own ``Event.wait()``, as both take
the same lock: that is how one Ctrl-C in six used to hang ``overwatch-lab up``.)

The waiting command keeps its loop free (blocking work goes to ``asyncio.to_thread``), so a
second signal is acted on at once, even during a clean stop that hangs.

:func:`arm_early` closes the gap before the loop runs: called first thing (before
``asyncio.run``, which would otherwise install a SIGINT handler of its own that cancels the
main task), it records signals with a handler that only appends to a list, and
:class:`StopSignals` takes them over when entered. ``signal.signal`` runs pending handlers
before it switches, so a signal is never lost between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_early: list[int] = []  # signals received before StopSignals took over (list.append: no lock)


def arm_early() -> None:
    """Record SIGINT/SIGTERM from now on, until a :class:`StopSignals` takes them over."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _record_early)


def _record_early(signum: int, _frame: object) -> None:
    _early.append(signum)


class StopSignals:
    """The stop ladder of a foreground command, installed on the running loop by ``with``.

    Args:
        on_first: called (in the loop) with the first signal, e.g. to say "stopping".
        on_force: called (in the loop) with a second signal; normally ends the process
            (see :func:`exit_now`).
    """

    def __init__(
        self,
        *,
        on_first: Callable[[signal.Signals], None] | None = None,
        on_force: Callable[[signal.Signals], None],
    ) -> None:
        self.first: signal.Signals | None = None
        """The first signal received (None while none came)."""
        self.stop_requested = asyncio.Event()
        """Set by the first signal or by :meth:`request_stop`."""
        self._on_first = on_first
        self._on_force = on_force
        self._loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> StopSignals:
        self._loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            self._loop.add_signal_handler(sig, self._received, sig)
        while _early:  # what came before the loop took over, in order
            self._received(signal.Signals(_early.pop(0)))
        return self

    def __exit__(self, *exc: object) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)

    def request_stop(self) -> None:
        """Ask for the clean stop without a signal (e.g. the lab ended); safe from any thread."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed: nobody waits
                loop.call_soon_threadsafe(self.stop_requested.set)

    def _received(self, sig: signal.Signals) -> None:
        if self.first is None:
            self.first = sig
            self.stop_requested.set()
            if self._on_first is not None:
                self._on_first(sig)
        else:
            self._on_force(sig)


def exit_now(code: int, cleanup: Callable[[], None] | None = None) -> NoReturn:
    """Leave the process at once with ``code``, after a best-effort ``cleanup``.

    ``os._exit``: no atexit hooks and no thread joins, which are what a forced exit skips. The
    standard streams are flushed first.
    """
    if cleanup is not None:
        try:
            cleanup()
        except Exception:  # best effort: the exit must happen whatever the cleanup does
            log.exception("cleanup before a forced exit failed")
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
