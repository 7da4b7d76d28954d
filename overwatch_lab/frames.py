"""``lab.frames``: the lab's data as pandas DataFrames (history from libSQL, live state from KV).

:class:`Frames` takes what it reads from, not a Lab: the database's location and, for the live
parts (entity states, quarantine records), a :class:`LiveSource`. A running lab hands it its
own; a run left on disk has only its database::

    lab.frames.telemetry(entity_id="gc35-e4b")      # history, one row per message
    lab.frames.states()                             # KV documents, one flattened row per entity
    lab.frames.commands(status="SUCCEEDED")         # per-stage latencies (ms)
"""

from __future__ import annotations

import copy
import threading
from typing import Any, Protocol, runtime_checkable

import pandas as pd

from overwatch_lab.commands.api import commands_frame
from overwatch_lab.errors import LabStateError
from overwatch_lab.kvcache import Changes
from overwatch_lab.kvstate import Doc
from overwatch_lab.store import queries

STATES_MAX_LEVEL = 3
"""Nesting depth :meth:`Frames.states` flattens (``pd.json_normalize(..., max_level=3)``)."""

QUARANTINE_COLUMNS = (
    "quarantined_at", "worker", "error", "original_subject", "num_delivered",
    "stream_sequence", "source_stream", "source_consumer", "original_data",
)  # fmt: skip
"""The fields of a quarantine record (docs/wire.md "Quarantine"): the columns of :meth:`Frames.quarantine`."""


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


class Frames:
    """DataFrames over one lab's data (see the module docstring).

    Args:
        db_url: the libSQL database (file path or server URL).
        live: the live state and quarantine of a running lab; None for a database alone
            (then :meth:`states` and :meth:`quarantine` raise LabStateError).
    """

    def __init__(self, db_url: str, live: LiveSource | None = None) -> None:
        self.db_url = db_url
        self._live = live
        self._rows_lock = threading.Lock()  # readers on many threads (dashboard sessions) share the rows
        self._rows: dict[str, dict[str, Any]] = {}  # entity_id -> flattened row, as of _rows_version
        self._rows_version = 0

    def __repr__(self) -> str:
        return f"<Frames db={self.db_url!r}{' + live' if self._live is not None else ''}>"

    # ------------------------------------------------------------------ history (libSQL)
    def telemetry(self, **filters: Any) -> pd.DataFrame:
        """Telemetry history (``entity_id``, ``org_id``, ``message_type``, ``since``, ``until``,
        ``limit``; see ``store.queries.telemetry_frame``); late rows have ``late`` True."""
        return queries.telemetry_frame(self.db_url, **filters)

    def entities(self) -> pd.DataFrame:
        """The ``entities`` table."""
        return queries.entities_frame(self.db_url)

    def device_events(self, **filters: Any) -> pd.DataFrame:
        """Device events (bootsequence, shutdown, …); filters as for :meth:`telemetry`."""
        return queries.device_events_frame(self.db_url, **filters)

    def commands(self, **filters: Any) -> pd.DataFrame:
        """One row per command and entity: stage times and per-stage latencies (ms).

        Filters (equality): ``command_id``, ``entity_id``, ``org_id``, ``status``, ``action``.
        """
        return commands_frame(self.db_url, **filters)

    # ------------------------------------------------------------------ live (KV, quarantine stream)
    def states(self) -> pd.DataFrame:
        """Every entity document, flattened into one row per entity (columns like
        ``position.global.latitude``), indexed by entity_id.

        From a running lab's KV cache, only the documents that changed since the previous call
        are flattened again (the rows are shared by every caller of these frames: every
        dashboard session of the process).
        """
        live = self._require_live("states")
        if isinstance(live, ChangeSource):
            with self._rows_lock:
                changes = live.entity_changes(self._rows_version)
                if changes.full:
                    self._rows = {}
                for eid in changes.deleted:
                    self._rows.pop(eid, None)
                for eid, (_, doc) in changes.changed.items():
                    self._rows[eid] = flatten(doc)
                self._rows_version = changes.version
                rows = list(self._rows.values())
        else:
            rows = [flatten(doc) for doc in live.entity_docs().values()]
        if not rows:
            return pd.DataFrame()
        return pd.DataFrame(rows).set_index("entity_id", drop=False).sort_index()

    def quarantine(self) -> pd.DataFrame:
        """Every quarantine record in CONSTELLATION_QUARANTINE, with the reason for each."""
        records = self._require_live("quarantine").quarantine_records()
        return pd.DataFrame(records, columns=list(QUARANTINE_COLUMNS))

    def _require_live(self, what: str) -> LiveSource:
        if self._live is None:
            raise LabStateError(
                f"{what}() needs a running lab's KV and streams; these frames read {self.db_url} only"
            )
        return self._live

    # ------------------------------------------------------------------ issue 8: detections, replay
    def detections(self, **filters: Any) -> pd.DataFrame:
        """ISR detections history (``org_id``, ``entity_id`` one or a list, ``track_id``, ``since``,
        ``until``, ``limit``; see ``store.detections_sql.detections_frame``), indexed by UTC ``time``."""
        from overwatch_lab.store.detections_sql import detections_frame

        return detections_frame(self.db_url, **filters)

    def replay_frame(self, since: Any, until: Any = None, **filters: Any) -> pd.DataFrame:
        """Telemetry of a window re-read from the lab's JetStream, not libSQL (``org_id``,
        ``entity_id`` one or a list, ``progress``; see ``replay.read_window``): a running or attached lab only."""
        from overwatch_lab.replay import ReplaySource

        live = self._require_live("replay_frame")
        if not isinstance(live, ReplaySource):
            raise LabStateError(f"replay_frame() needs a lab's broker; {type(live).__name__} has none")
        return live.replay_frame(since, until, **filters)
