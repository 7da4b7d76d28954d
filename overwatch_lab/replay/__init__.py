"""Replay: re-read a time window of telemetry from JetStream, and re-publish it into a lab.

- :func:`~overwatch_lab.replay.reader.read_window`: the window as a replay frame
  (:mod:`~overwatch_lab.replay.frame`), read from CONSTELLATION_TELEMETRY, not from libSQL;
- :func:`~overwatch_lab.replay.publisher.republish`: a replay frame sent again at 1x, Nx or as
  fast as possible, with fresh ``message_uid`` s or unchanged (the choices are in its module).

Both are coroutines on a NATS connection. From a lab: ``lab.frames.replay_frame(since, until)``
and ``lab.replay(since, until, speed=10)``; from a shell: ``overwatch-lab replay``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import pandas as pd

from overwatch_lab.replay.frame import REPLAY_FRAME_DTYPES, build_frame, empty_replay_frame
from overwatch_lab.replay.publisher import ReplayResult, check_speed, replay_messages, republish
from overwatch_lab.replay.reader import Progress, read_window, stored_filters
from overwatch_lab.store.window import TimeLike

__all__ = [
    "REPLAY_FRAME_DTYPES",
    "Progress",
    "ReplayResult",
    "ReplaySource",
    "build_frame",
    "check_speed",
    "empty_replay_frame",
    "read_window",
    "replay_messages",
    "republish",
    "stored_filters",
]


@runtime_checkable
class ReplaySource(Protocol):
    """A frames LiveSource that can also re-read telemetry from its broker (a running or attached lab)."""

    def replay_frame(
        self,
        since: TimeLike | None,
        until: TimeLike | None = None,
        *,
        org_id: str | None = None,
        entity_id: str | list[str] | None = None,
        progress: Progress | None = None,
    ) -> pd.DataFrame:
        """The replay frame of a window (see :func:`~overwatch_lab.replay.reader.read_window`)."""
        ...
