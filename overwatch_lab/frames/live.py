"""Live state: the KV documents of a running lab flattened into one row per entity.

- :class:`LiveSource` / :class:`ChangeSource`: what the live frames read (a running lab's
  ``LiveReads`` is both: its KV cache and quarantine stream as blocking calls).
- :func:`flatten`: one document → one row, exactly as ``pd.json_normalize(max_level=3)``.
- :class:`StateRows`: the flattened rows, kept current incrementally from the KV cache's
  versions (only documents that changed since the last read are flattened again).
- :class:`LiveFrame`: a frame for notebooks that keeps itself current: a small thread it owns
  asks the lab's KV cache (:mod:`overwatch_lab.kvcache`, the one watcher of the bucket; no
  second watch) what changed every ``period_s`` and, when something did, rebuilds
  :attr:`LiveFrame.frame` and calls the callbacks registered with :meth:`LiveFrame.on_change`.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import pandas as pd

from overwatch_lab.errors import FrameError, OverwatchError
from overwatch_lab.kvcache import Changes
from overwatch_lab.kvstate import Doc

log = logging.getLogger(__name__)

STATES_MAX_LEVEL = 3
"""Nesting depth :meth:`Frames.states` flattens (``pd.json_normalize(..., max_level=3)``)."""


class LiveSource(Protocol):
    """Where the live frames come from: a running lab's KV bucket and quarantine stream."""

    def entity_docs(self) -> dict[str, Doc]:
        """Every live entity document, by entity_id."""
        ...

    def quarantine_records(self) -> list[dict[str, Any]]:
        """Every quarantine record, oldest first."""
        ...


@runtime_checkable
class ChangeSource(Protocol):
    """A LiveSource that can also say what changed since a version (a running lab's KV cache)."""

    def entity_changes(self, since: int) -> Changes:
        """What changed since version ``since`` (0: everything); see :class:`~overwatch_lab.kvcache.Changes`."""
        ...


def flatten(doc: Doc, max_level: int = STATES_MAX_LEVEL) -> dict[str, Any]:
    """One row of :meth:`Frames.states`: ``doc`` flattened exactly as ``pd.json_normalize(max_level=...)``.

    Same keys in the same order (top-level scalars first, then each nested dict's leaves as
    ``a.b.c``; empty dicts vanish; dicts deeper than ``max_level`` stay whole), without its deep
    copy of every document: only lists and dicts left in a cell are copied, so a frame never
    shares a mutable object with the cache.
    """
    row: dict[str, Any] = {}
    nested = []
    for key, value in doc.items():
        if isinstance(value, dict):
            nested.append((key, value))
        else:
            row[key] = copy.deepcopy(value) if isinstance(value, list) else value
    for key, value in nested:
        _flatten_into(row, key, value, 1, max_level)
    return row


def _flatten_into(row: dict[str, Any], prefix: str, d: dict[str, Any], level: int, max_level: int) -> None:
    for key, value in d.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict) and level < max_level:
            _flatten_into(row, name, value, level + 1, max_level)
        else:
            row[name] = copy.deepcopy(value) if isinstance(value, list | dict) else value


def rows_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Flattened rows → the states frame (indexed by entity_id, sorted; empty when no rows)."""
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).set_index("entity_id", drop=False).sort_index()


class StateRows:
    """Flattened KV documents kept current from a source's versions (shared by every reader).

    Args:
        live: the lab's KV (a :class:`ChangeSource` is read incrementally; a plain
            :class:`LiveSource` is flattened whole on each read).
    """

    def __init__(self, live: LiveSource) -> None:
        self._live = live
        self._lock = threading.Lock()  # readers on many threads (dashboard sessions) share the rows
        self._rows: dict[str, dict[str, Any]] = {}  # entity_id -> flattened row, as of _version
        self._version = 0

    def read(self) -> tuple[list[dict[str, Any]], bool]:
        """Return (every row, whether anything changed since the previous read)."""
        live = self._live
        if not isinstance(live, ChangeSource):
            return [flatten(doc) for doc in live.entity_docs().values()], True
        with self._lock:
            changes = live.entity_changes(self._version)
            changed = changes.full or bool(changes.changed) or bool(changes.deleted)
            if changes.full:
                self._rows = {}
            for eid in changes.deleted:
                self._rows.pop(eid, None)
            for eid, (_, doc) in changes.changed.items():
                self._rows[eid] = flatten(doc)
            self._version = changes.version
            return list(self._rows.values()), changed


class LiveFrame:
    """A states frame that keeps itself current while it runs (for notebooks).

    ``with lab.frames.live() as live:`` (or :meth:`start` / :meth:`stop`): a daemon thread owned
    by this object reads the KV cache's changes every ``period_s``; :attr:`frame` is always the
    newest picture, and each callback given to :meth:`on_change` is called with it after a change
    (on that thread: a Panel or ipywidgets callback should hand over to its own loop). The thread
    ends on :meth:`stop`, or by itself when the lab stops (:attr:`error` then says why).

    Args:
        rows: the rows to keep current (``Frames`` shares its own).
        period_s: seconds between two reads of the KV cache's changes.
    """

    def __init__(self, rows: StateRows, period_s: float = 0.5) -> None:
        if isinstance(period_s, bool) or not isinstance(period_s, int | float) or not period_s > 0:
            raise FrameError(f"period_s must be a positive number of seconds, got {period_s!r}")
        self._rows = rows
        self.period_s = float(period_s)
        self._frame = pd.DataFrame()
        self._callbacks: list[Callable[[pd.DataFrame], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.updates = 0
        """Times :attr:`frame` was rebuilt."""
        self.error: BaseException | None = None
        """Why the thread ended by itself (the lab stopped), else None."""

    def __repr__(self) -> str:
        return f"<LiveFrame {len(self._frame)} entities, {self.updates} updates{', running' if self.running else ''}>"

    @property
    def frame(self) -> pd.DataFrame:
        """The newest picture (one row per entity, as :meth:`Frames.states`)."""
        return self._frame

    @property
    def running(self) -> bool:
        """True while the refresh thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def on_change(self, callback: Callable[[pd.DataFrame], None]) -> None:
        """Call ``callback(frame)`` after every change (on the refresh thread)."""
        self._callbacks.append(callback)

    def refresh(self) -> bool:
        """Read the changes now; return True if the frame changed."""
        rows, changed = self._rows.read()
        if changed or self.updates == 0:
            self._frame = rows_frame(rows)
            self.updates += 1
            for callback in list(self._callbacks):
                try:
                    callback(self._frame)
                except Exception:  # a notebook's callback must not end the refresh
                    log.exception("LiveFrame callback %r failed", callback)
            return True
        return False

    def start(self) -> LiveFrame:
        """Read once, then start the refresh thread (once)."""
        if self._thread is not None:
            raise FrameError("this LiveFrame was already started; build a new one with frames.live()")
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="overwatch-live-frame", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.refresh()
            except OverwatchError as exc:  # the lab stopped or failed: nothing more to read
                self.error = exc
                log.info("LiveFrame stopped: %s", exc)
                return

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the refresh thread and wait for it (calling it again does nothing)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def __enter__(self) -> LiveFrame:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
