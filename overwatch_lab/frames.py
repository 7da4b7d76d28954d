"""``lab.frames``: the lab's data as pandas DataFrames (history from libSQL, live state from KV).

:class:`Frames` takes what it reads from, not a Lab: the database's location and, for the live
parts (entity states, quarantine records), a :class:`LiveSource`. A running lab hands it its
own; a run left on disk has only its database::

    lab.frames.telemetry(entity_id="gc35-e4b")      # history, one row per message
    lab.frames.states()                             # KV documents, one flattened row per entity
    lab.frames.commands(status="SUCCEEDED")         # per-stage latencies (ms)
"""

from __future__ import annotations

from typing import Any, Protocol

import pandas as pd

from overwatch_lab.commands.api import commands_frame
from overwatch_lab.errors import LabStateError
from overwatch_lab.kvstate import Doc
from overwatch_lab.store import queries

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
        ``position.global.latitude``), indexed by entity_id."""
        docs = self._require_live("states").entity_docs()
        if not docs:
            return pd.DataFrame()
        frame = pd.json_normalize(list(docs.values()), max_level=3)
        return frame.set_index("entity_id", drop=False).sort_index()

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
