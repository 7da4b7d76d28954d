"""``Frames``: one lab's data as pandas DataFrames, from a running lab or a data directory.

The same type is ``lab.frames`` (history from libSQL, live state from the lab's KV cache) and
``overwatch_lab.open(data_dir)`` (history only, read-only, no broker). Every method takes the
same filters, keyword-only:

- ``org``: an organisation id, or several;
- ``entity``: an entity id, or several;
- ``entity_type``: e.g. ``"aircraft_multirotor"`` (resolved through the ``entities`` table);
- ``message_type``: a MAVLink message name, or several (history, tracks, as-of);
- ``since`` / ``until``: the window ``since <= time < until``: epoch seconds, ISO 8601 text, a
  ``datetime`` or ``pandas.Timestamp``. **Naive datetimes and strings are taken as UTC.**

An unknown entity, organisation, type or column raises :class:`~overwatch_lab.errors.FrameError`
naming it; ``since`` after ``until`` too. A known entity with nothing in the window, or an empty
window, gives an empty frame with the usual columns and dtypes. Everything runs in SQL on the
indexes; nothing loads the whole history to filter it in pandas.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from overwatch_lab.errors import LabStateError
from overwatch_lab.frames import asof, history, records, tracks
from overwatch_lab.frames import export as exporting
from overwatch_lab.frames import validation as v
from overwatch_lab.frames.export import Progress, Written
from overwatch_lab.frames.filters import Filters
from overwatch_lab.frames.live import LiveFrame, LiveSource, StateRows, rows_frame
from overwatch_lab.frames.reader import Reader

DEFAULT_STALE_AFTER_S = 5.0
"""``LabConfig.stale_after_s``'s default: what as-of pictures use when not told otherwise."""

Ids = str | Iterable[str] | None


class Frames:
    """DataFrames over one lab's data (see the module docstring for the shared filters).

    Args:
        db_url: the libSQL database (file path or server URL).
        live: the live state and quarantine of a running lab; None for a database alone
            (then :meth:`states`, :meth:`live` and :meth:`quarantine` raise LabStateError).
        stale_after_s: the lab's ``stale_after_s``, for ``is_live`` in as-of pictures and
            ``stale_s`` in :meth:`summary`.
    """

    def __init__(
        self, db_url: str, live: LiveSource | None = None, *, stale_after_s: float = DEFAULT_STALE_AFTER_S
    ) -> None:
        self.db_url = db_url
        self._reader = Reader(db_url)
        self._live = live
        self._rows = StateRows(live) if live is not None else None
        self.stale_after_s = float(stale_after_s)

    def __repr__(self) -> str:
        return f"<Frames db={self.db_url!r}{' + live' if self._live is not None else ''}>"

    # ------------------------------------------------------------------ history (libSQL)
    def history(
        self,
        *,
        org: Ids = None,
        entity: Ids = None,
        entity_type: Ids = None,
        message_type: Ids = None,
        since: v.TimeLike | None = None,
        until: v.TimeLike | None = None,
        columns: str | Iterable[str] | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Telemetry history, one row per message, oldest first.

        Args:
            org, entity, entity_type, message_type, since, until: the filters (module docstring).
            columns: which columns besides the keys (``entity_id``, ``org_id``, ``message_type``);
                default :data:`~overwatch_lab.frames.columns.DEFAULT`; any of
                :data:`~overwatch_lab.frames.history.HISTORY_COLUMNS`.
            limit: keep only the newest ``limit`` rows (still oldest first).

        Returns:
            Indexed by ``time`` (UTC, the message's own timestamp); ids and types categorical;
            measurements float64 with their unit in the name (``altitude_msl_m``,
            ``battery_pct``, ``voltage_v``...; see ``overwatch_lab/frames/columns.py``);
            ``armed`` and ``late`` boolean.
        """
        f = Filters.of(
            org=org,
            entity=entity,
            entity_type=entity_type,
            message_type=message_type,
            since=since,
            until=until,
        )
        return history.history(self._reader, f, columns, limit)

    def telemetry(
        self,
        *,
        entity_id: str | None = None,
        org_id: str | None = None,
        message_type: str | None = None,
        since: v.TimeLike | None = None,
        until: v.TimeLike | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """The ``telemetry`` table's rows as stored (raw column names and units, ``id``, epoch ``ts``).

        What the dashboard polls; for analysis use :meth:`history`. A ``time`` column (UTC)
        comes first; ``late`` is True for a message that was history only.
        """
        f = Filters.of(org=org_id, entity=entity_id, message_type=message_type, since=since, until=until)
        return history.raw_rows(self._reader, f, limit)

    # ------------------------------------------------------------------ tracks
    def tracks(
        self,
        interval: str | float | pd.Timedelta = "1s",
        *,
        how: str = "last",
        org: Ids = None,
        entity: Ids = None,
        entity_type: Ids = None,
        message_type: Ids = None,
        since: v.TimeLike | None = None,
        until: v.TimeLike | None = None,
        columns: str | Iterable[str] | None = None,
    ) -> pd.DataFrame:
        """Each entity's measurements on a regular grid of ``interval`` (``"1s"``, ``"10s"``, ...).

        Bucketed in SQL; ``how`` is ``"last"`` (newest value in each bucket) or ``"mean"``. A
        bucket without messages is a row of NaN, so each entity's series is regular.

        Returns:
            Indexed by ``time`` (bucket start, UTC), sorted by entity then time; ``entity_id``
            categorical; the numeric columns of :meth:`history`. Plot one column for every
            entity with ``frame.pivot(columns="entity_id", values="altitude_msl_m")``.
        """
        f = Filters.of(
            org=org,
            entity=entity,
            entity_type=entity_type,
            message_type=message_type,
            since=since,
            until=until,
        )
        return tracks.resample(self._reader, f, interval, how, columns)

    def summary(
        self,
        *,
        org: Ids = None,
        entity: Ids = None,
        entity_type: Ids = None,
        since: v.TimeLike | None = None,
        until: v.TimeLike | None = None,
        stale_after_s: float | None = None,
    ) -> pd.DataFrame:
        """One row per entity: messages, first/last time, ``distance_m`` travelled, ``max_gap_s``,
        ``stale_s`` (time stale: silence beyond ``stale_after_s``, default the lab's) and ``stale_pct``."""
        f = Filters.of(org=org, entity=entity, entity_type=entity_type, since=since, until=until)
        stale = v.positive(stale_after_s, "stale_after_s") or self.stale_after_s
        return tracks.summary(self._reader, f, stale)

    # ------------------------------------------------------------------ as of
    def as_of(
        self,
        at: v.TimeLike,
        *,
        org: Ids = None,
        entity: Ids = None,
        entity_type: Ids = None,
        columns: str | Iterable[str] | None = None,
        stale_after_s: float | None = None,
    ) -> pd.DataFrame:
        """The picture at instant ``at``: each entity's last known state then, ``is_live`` as it was.

        Returns:
            Indexed by ``entity_id`` (entities that had sent something by ``at``): ``org_id``,
            ``entity_type``, ``time`` (newest message), ``age_s``, ``is_live`` (newest message at
            most ``stale_after_s`` old, default the lab's), then the newest value of each state
            column (the numeric ones of :meth:`history`, ``armed``, ``mode``).
        """
        f = Filters.of(org=org, entity=entity, entity_type=entity_type)
        stale = v.positive(stale_after_s, "stale_after_s") or self.stale_after_s
        return asof.as_of(self._reader, f, at, stale, columns)

    def as_of_series(
        self,
        *,
        since: v.TimeLike,
        until: v.TimeLike,
        every: str | float | pd.Timedelta = "10s",
        org: Ids = None,
        entity: Ids = None,
        entity_type: Ids = None,
        columns: str | Iterable[str] | None = None,
        stale_after_s: float | None = None,
    ) -> pd.DataFrame:
        """The picture at ``since``, ``since + every``, ... ``until`` as one long frame.

        Returns:
            Indexed by (``as_of``, ``entity_id``); columns as :meth:`as_of`.
        """
        f = Filters.of(org=org, entity=entity, entity_type=entity_type, since=since, until=until)
        stale = v.positive(stale_after_s, "stale_after_s") or self.stale_after_s
        return asof.as_of_series(self._reader, f, every, stale, columns)

    # ------------------------------------------------------------------ records
    def entities(self, *, org: Ids = None, entity: Ids = None, entity_type: Ids = None) -> pd.DataFrame:
        """The ``entities`` table: one row per registered entity (also a data directory's state:
        position, heading, velocity, ``is_live``, ``last_seen`` as the synchronizer last wrote them)."""
        return records.entities(self._reader, Filters.of(org=org, entity=entity, entity_type=entity_type))

    def organizations(self) -> pd.DataFrame:
        """The ``organizations`` table."""
        return records.organizations(self._reader)

    def device_events(
        self,
        *,
        org: Ids = None,
        entity: Ids = None,
        entity_type: Ids = None,
        event_type: str | None = None,
        since: v.TimeLike | None = None,
        until: v.TimeLike | None = None,
        entity_id: str | None = None,
        org_id: str | None = None,
    ) -> pd.DataFrame:
        """Device events (bootsequence, shutdown, ...), indexed by event time (UTC).

        ``entity_id`` / ``org_id`` are the older spellings of ``entity`` / ``org``.
        """
        f = Filters.of(org=org if org is not None else org_id, entity=entity if entity is not None else entity_id,
                       entity_type=entity_type, since=since, until=until)  # fmt: skip
        return records.device_events(self._reader, f, event_type)

    def commands(
        self,
        *,
        org: Ids = None,
        entity: Ids = None,
        entity_type: Ids = None,
        since: v.TimeLike | None = None,
        until: v.TimeLike | None = None,
        **equals: Any,
    ) -> pd.DataFrame:
        """One row per command and entity, indexed by queued time: stage times and latencies (ms).

        Besides the shared filters: ``command_id``, ``status``, ``action`` (equality), and the
        older ``entity_id`` / ``org_id``.
        """
        entity = equals.pop("entity_id", None) if entity is None else entity
        org = equals.pop("org_id", None) if org is None else org
        f = Filters.of(org=org, entity=entity, entity_type=entity_type, since=since, until=until)
        return records.commands(self._reader, f, **equals)

    # ------------------------------------------------------------------ live (KV, quarantine stream)
    def states(self) -> pd.DataFrame:
        """Every entity document, flattened into one row per entity (columns like
        ``position.global.latitude``), indexed by entity_id.

        From a running lab's KV cache, only the documents that changed since the previous call
        are flattened again (the rows are shared by every caller of these frames: every
        dashboard session of the process). A data directory has no KV: use :meth:`entities`.
        """
        rows = self._require_rows("states")
        return rows_frame(rows.read()[0])

    def live(self, period_s: float = 0.5) -> LiveFrame:
        """A states frame that keeps itself current (``with frames.live() as live: live.frame``)."""
        return LiveFrame(self._require_rows("live"), period_s)

    def quarantine(
        self,
        *,
        org: Ids = None,
        entity: Ids = None,
        since: v.TimeLike | None = None,
        until: v.TimeLike | None = None,
    ) -> pd.DataFrame:
        """Every quarantine record in CONSTELLATION_QUARANTINE, with the reason for each,
        indexed by ``quarantined_at`` (UTC); ``org_id`` / ``entity_id`` from the original subject."""
        f = Filters.of(org=org, entity=entity, since=since, until=until)
        live = self._require_live("quarantine")
        return records.quarantine(live.quarantine_records(), f)

    def detections(
        self,
        *,
        org: str | None = None,
        entity: Ids = None,
        track_id: str | None = None,
        since: v.TimeLike | None = None,
        until: v.TimeLike | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """ISR detections history (one row per ``event_uid``), indexed by UTC ``time``, with
        categorical ids and the box (``x1 y1 x2 y2``, centre ``cx cy``); joinable with
        :meth:`history` on ``entity_id`` and time (``pd.merge_asof(..., by="entity_id")``)."""
        from overwatch_lab.store.detections_sql import detections_frame

        return detections_frame(
            self.db_url, org_id=org, entity_id=_listed(entity), track_id=track_id, since=since, until=until,
            limit=limit,
        )

    def replay_frame(
        self,
        since: v.TimeLike | None,
        until: v.TimeLike | None = None,
        *,
        org: str | None = None,
        entity: Ids = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> pd.DataFrame:
        """Telemetry of a window re-read from the lab's JetStream, not libSQL (see
        :func:`overwatch_lab.replay.read_window`): a running or attached lab only.
        ``progress(stage, done, total)`` hears how the read goes."""
        from overwatch_lab.replay import ReplaySource

        live = self._require_live("replay_frame")
        if not isinstance(live, ReplaySource):
            raise LabStateError(f"replay_frame() needs a lab's broker; {type(live).__name__} has none")
        return live.replay_frame(since, until, org_id=org, entity_id=_listed(entity), progress=progress)

    def _require_live(self, what: str) -> LiveSource:
        if self._live is None:
            raise LabStateError(
                f"{what}() needs a running lab's KV and streams; these frames read {self.db_url} only"
            )
        return self._live

    def _require_rows(self, what: str) -> StateRows:
        self._require_live(what)
        assert self._rows is not None
        return self._rows

    # ------------------------------------------------------------------ export
    def export(
        self,
        out_dir: str | Path,
        *,
        format: str = "parquet",
        org: Ids = None,
        entity: Ids = None,
        entity_type: Ids = None,
        since: v.TimeLike | None = None,
        until: v.TimeLike | None = None,
        progress: Progress | None = None,
        chunk_rows: int = 200_000,
    ) -> list[Written]:
        """Write the run (telemetry history, device events, detections, commands, entities, organisations)
        to ``out_dir`` as Parquet or CSV, each with ``<table>.dictionary.csv`` beside it.

        The filters apply to every table that has them. ``progress(table, done, total)`` is
        called as the history is written.
        """
        f = Filters.of(org=org, entity=entity, entity_type=entity_type, since=since, until=until)
        written = [
            exporting.export_history(
                self._reader, f, out_dir, format, chunk_rows=chunk_rows, progress=progress
            )
        ]
        tables: list[tuple[str, pd.DataFrame]] = [
            ("device_events", records.device_events(self._reader, f)),
            ("detections", self._export_detections(org, entity, since, until)),
            ("commands", records.commands(self._reader, f)),
            ("entities", exporting.raw_entities(self._reader, f)),
            ("organizations", self._reader.records("SELECT * FROM organizations ORDER BY org_id")),
        ]
        for name, frame in tables:
            written.append(exporting.write_frame(frame, out_dir, name, format, source=name))
            if progress is not None:
                progress(name, len(frame), len(frame))
        return written

    def _export_detections(
        self, org: Ids, entity: Ids, since: v.TimeLike | None, until: v.TimeLike | None
    ) -> pd.DataFrame:
        orgs = None if org is None else [org] if isinstance(org, str) else list(org)
        one = orgs[0] if orgs is not None and len(orgs) == 1 else None
        frame = self.detections(org=one, entity=entity, since=since, until=until)
        if orgs is not None and one is None:
            frame = frame[frame["org_id"].isin(orgs)]
        return frame

    def write(
        self, frame: pd.DataFrame, out_dir: str | Path, name: str, *, format: str = "parquet"
    ) -> Written:
        """Write any frame to ``out_dir/<name>.<format>`` with ``<name>.dictionary.csv`` beside it."""
        return exporting.write_frame(frame, out_dir, name, format)


def _listed(ids: Ids) -> str | list[str] | None:
    """One id as it is, several as a list."""
    return ids if ids is None or isinstance(ids, str) else list(ids)
