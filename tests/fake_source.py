"""A :class:`~overwatch_lab.dashboard.datastore.FleetSource` made of plain data, for the dashboard's unit tests.

No broker, no database, no threads: entity documents, telemetry rows, quarantine records and
counters held in memory. They are built with the lab's own pure functions, so the frames look
like a real lab's: an entity document comes from ``protocol.state.new_entity_doc``, telemetry
goes through ``protocol.envelopes`` (make, encode, decode), ``workers.telemetry.plan_batch``
(live or late, the history row) and ``protocol.state.merge_telemetry``. ``frames.states()``
flattens the documents as ``lab.frames.states()`` does. ``tests/integration/test_dashboard_lab.py`` checks
that this fake's frames keep the real lab's columns.

Everything is synchronous: a view test publishes, calls ``store.refresh()`` and asserts, with no
waiting. ``stop()`` makes every read raise :class:`~overwatch_lab.errors.LabStateError`, like a
lab that was shut down.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pandas as pd

from overwatch_lab.errors import LabStateError
from overwatch_lab.protocol import envelopes, mavlink, state
from overwatch_lab.protocol import subjects as s
from overwatch_lab.protocol.entities import validate_entity_record
from overwatch_lab.store.schema import TELEMETRY_INSERT_COLUMNS, TELEMETRY_PROJECTED_COLUMNS
from overwatch_lab.workers.telemetry import plan_batch
from tests import builders

QUARANTINE_COLUMNS = (
    "quarantined_at", "worker", "error", "original_subject", "num_delivered",
    "stream_sequence", "source_stream", "source_consumer", "original_data",
)  # fmt: skip
"""The columns of ``lab.frames.quarantine()``."""

WORKERS = {"entity-worker": "entity-processor", "telemetry-worker": "telemetry-processor"}
"""Worker name -> durable consumer, for the counters and quarantine records the fake keeps."""


def _worker_counters() -> dict[str, Any]:
    return {"handled": 0, "acked": 0, "ignored": 0, "retried": 0, "quarantined": 0, "lag": 0,
            "busy_s": 0.0, "holding": False, "held": 0, "last_error": None}  # fmt: skip


class FakeSource:
    """What a DataStore reads, as data the test sets up (see the module docstring).

    Attributes:
        docs: entity_id -> KV document.
        rows: telemetry history rows, in arrival order (dicts with the table's columns).
        quarantined: quarantine records (dicts with :data:`QUARANTINE_COLUMNS`).
        counters: what ``stats()`` returns (a deep copy of it); tests may edit it freely.
        reads: every read call, as (method, filters), for tests of what the DataStore asks.
    """

    def __init__(self) -> None:
        self.orgs: dict[str, str] = {}
        self.docs: dict[str, state.Doc] = {}
        self.rows: list[dict[str, Any]] = []
        self.quarantined: list[dict[str, Any]] = []
        self.counters: dict[str, dict[str, Any]] = {
            **{name: _worker_counters() for name in WORKERS},
            "synchronizer": {"passes": 1, "created": 0, "repaired": 0, "removed": 0, "marked_stale": 0},
            "kv": {"cas_conflicts": 0},
        }
        self.reads: list[tuple[str, dict[str, Any]]] = []
        self.stopped = False
        self.frames = FakeFrames(self)

    def __repr__(self) -> str:
        return f"FakeSource({len(self.docs)} entities, {len(self.rows)} rows)"

    # ------------------------------------------------------------------ FleetSource
    def stats(self) -> dict[str, dict[str, Any]]:
        """A copy of :attr:`counters`."""
        self._read("stats")
        return copy.deepcopy(self.counters)

    def _states(self) -> pd.DataFrame:
        """Every document flattened into one row per entity, as ``lab.frames.states()``."""
        self._read("states")
        if not self.docs:
            return pd.DataFrame()
        frame = pd.json_normalize(copy.deepcopy(list(self.docs.values())), max_level=3)
        return frame.set_index("entity_id", drop=False).sort_index()

    def _telemetry(
        self,
        *,
        entity_id: str | None = None,
        org_id: str | None = None,
        message_type: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """The rows matching, oldest first; ``limit`` keeps the newest (as ``store.queries``)."""
        filters = {"entity_id": entity_id, "org_id": org_id, "message_type": message_type,
                   "since": since, "until": until, "limit": limit}  # fmt: skip
        self._read("telemetry", {k: v for k, v in filters.items() if v is not None})
        equals = {"entity_id": entity_id, "org_id": org_id, "message_type": message_type}
        rows = [
            r
            for r in self.rows
            if all(v is None or r[k] == v for k, v in equals.items())
            and (since is None or r["ts"] >= since)
            and (until is None or r["ts"] < until)
        ]
        rows.sort(key=lambda r: (r["ts"], r["id"]))
        if limit is not None:
            rows = rows[len(rows) - limit :] if limit else []
        columns = ["id", *TELEMETRY_INSERT_COLUMNS]
        frame = pd.DataFrame(rows, columns=columns)
        frame.insert(0, "time", pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601"))
        for column in TELEMETRY_PROJECTED_COLUMNS:
            if column not in ("armed", "mode"):
                frame[column] = frame[column].astype("float64")
        for column in ("system_id", "component_id"):
            frame[column] = frame[column].astype("Int64")
        frame["armed"] = frame["armed"].astype("boolean")
        frame["late"] = frame["late"].astype(bool)
        return frame

    def _quarantine(self) -> pd.DataFrame:
        """Every quarantine record, oldest first."""
        self._read("quarantine")
        from overwatch_lab.frames.filters import Filters
        from overwatch_lab.frames.records import quarantine

        return quarantine(self.quarantined, Filters())

    # ------------------------------------------------------------------ building the data
    def register_org(self, org_id: str, name: str | None = None) -> None:
        """Know an organisation (its name shows as each entity's ``org_name``)."""
        self.orgs[org_id] = name or org_id
        self._count("entity-worker", "handled", "acked")

    def register_entity(self, org_id: str, entity_id: str, entity_type: str, *, name: str | None = None,
                        **fields: Any) -> state.Doc:  # fmt: skip
        """Create the entity's document, as the entity worker does; returns it."""
        record = validate_entity_record(
            {"org_id": org_id, "entity_id": entity_id, "entity_type": entity_type, "name": name, **fields}
        )
        doc = self.docs.get(entity_id)
        now = envelopes.now_timestamp()
        if doc is None:
            self.docs[entity_id] = doc = state.new_entity_doc(record, self.orgs.get(org_id), now)
        else:
            state.apply_static(doc, record, self.orgs.get(org_id), now)
        self._count("entity-worker", "handled", "acked")
        return doc

    def delete_entity(self, entity_id: str) -> None:
        """Forget an entity's document (its history stays, as in the lab)."""
        del self.docs[entity_id]
        self._count("entity-worker", "handled", "acked")

    def publish_telemetry(
        self,
        org_id: str,
        entity_id: str,
        message_type: str,
        data: dict[str, Any],
        *,
        timestamp: str | float | None = None,
        message_uid: str | None = None,
    ) -> str:
        """Ingest one telemetry message as the telemetry worker would; returns its message_uid.

        A message for an unknown entity is quarantined with the lab's reason.
        """
        env = envelopes.make_telemetry(
            org_id, entity_id, message_type, data, timestamp=timestamp, message_uid=message_uid
        )
        subject = s.telemetry_subject(org_id, entity_id)
        if entity_id not in self.docs:
            reason = f"unknown entity {entity_id!r}: register it with a constellation.entities.{{org}}.created event"
            self.quarantine("telemetry-worker", subject, reason, envelopes.encode(env))
            return env["message_uid"]
        t = envelopes.decode_telemetry(envelopes.encode(env), s.parse_telemetry_subject(subject))
        proj = mavlink.project(t.message_type, t.data, t.timestamp)
        plan = plan_batch([(0, t, proj)], lambda eid, mt: state.cursor_of(self.docs[eid], mt), time.time())
        for eid, eb in plan.entities.items():
            if eb.cursors:
                state.merge_telemetry(self.docs[eid], sets=eb.sets, cursors=eb.cursors, last_seen=eb.last_seen,
                                      system_id=eb.system_id, component_id=eb.component_id)  # fmt: skip
                state.mark_received(self.docs[eid], envelopes.now_timestamp())
        for row in (*plan.rows, *plan.late_rows):
            self.rows.append(
                {"id": len(self.rows) + 1, **dict(zip(TELEMETRY_INSERT_COLUMNS, row, strict=True))}
            )
        self._count("telemetry-worker", "handled", "acked")
        return t.message_uid

    def quarantine(self, worker: str, subject: str, error: str, data: bytes = b"") -> dict[str, Any]:
        """Add a quarantine record (and count it for ``worker``); returns it."""
        self._count(worker, "handled", "quarantined")
        record = {
            "quarantined_at": envelopes.now_timestamp(),
            "worker": worker,
            "error": error,
            "original_subject": subject,
            "num_delivered": 1,
            "stream_sequence": len(self.quarantined) + 1,
            "source_stream": s.STREAM_TELEMETRY,
            "source_consumer": WORKERS.get(worker),
            "original_data": data.hex(),
        }
        self.quarantined.append(record)
        return record

    def go_silent(self, entity_id: str) -> None:
        """Mark the entity not live, as the synchronizer does after ``stale_after_s``."""
        self.docs[entity_id]["is_live"] = False

    def stop(self) -> None:
        """From now on every read raises LabStateError, as a stopped lab's do."""
        self.stopped = True

    # ------------------------------------------------------------------ the fleet of tests.builders
    def register_fleet(self, fleet: builders.Fleet = builders.FLEET) -> None:
        """:func:`tests.builders.register_fleet` into this source."""
        builders.register_fleet(self, fleet)

    def fly(self, steps: int = 3, *, t0: float | None = None, fleet: builders.Fleet = builders.FLEET) -> int:
        """Ingest a :func:`tests.builders.flight`; returns the number of telemetry rows held."""
        builders.publish_flight(self, builders.flight(steps, t0=t0, fleet=fleet))
        return len(self.rows)

    # ------------------------------------------------------------------ internals
    def _read(self, method: str, filters: dict[str, Any] | None = None) -> None:
        if self.stopped:
            raise LabStateError(f"{method}() on a stopped lab: the lab is stopped")
        self.reads.append((method, filters or {}))

    def _count(self, worker: str, *keys: str) -> None:
        counters = self.counters.setdefault(worker, _worker_counters())
        for key in keys:
            counters[key] = counters.get(key, 0) + 1


class FakeFrames:
    """``source.frames``: the FrameSource side of a :class:`FakeSource` (as ``lab.frames``)."""

    def __init__(self, source: FakeSource) -> None:
        self._source = source

    def states(self) -> pd.DataFrame:
        """Every document flattened into one row per entity, as ``lab.frames.states()``."""
        return self._source._states()

    def telemetry(self, **filters: Any) -> pd.DataFrame:
        """The rows matching, oldest first; ``limit`` keeps the newest (as ``lab.frames.telemetry``)."""
        return self._source._telemetry(**filters)

    def quarantine(self) -> pd.DataFrame:
        """Every quarantine record, oldest first."""
        return self._source._quarantine()
