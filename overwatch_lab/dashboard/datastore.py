"""DataStore: the one object that reads the lab and holds the frames every dashboard view shows.

Views never talk to the lab. They take ``data_store=`` and watch its output parameters
(``fleet``, ``stats``, ``telemetry``, ...), so one read of the lab feeds every view and the same
views work in a notebook, under ``panel serve`` and against anything shaped like the lab's
``frames`` and ``stats()`` (a :class:`FleetSource`).

Refreshing: :meth:`DataStore.start` installs ONE periodic callback (``period_s``, default 1 s).
Each tick reads the source on a short-lived daemon thread, never on the Panel event loop, so a
slow or hung lab cannot freeze the page; the result is applied on the document's own loop
(``Document.add_next_tick_callback``, the one thread-safe Bokeh entry point). A tick that finds
the previous read still running is skipped and counted. A failed read is counted and kept in
``last_error``; the previous frames stay on screen, and the next tick tries again, so a stopped
lab never crashes the dashboard. :meth:`refresh` does the same read and apply synchronously
(tests, scripts).

Cost per tick: ``frames.states()`` and ``stats()`` always; the selected entity's telemetry
incrementally (only rows newer than the last one held); the quarantine stream only when the
quarantine counters moved or ``quarantine_period_s`` passed (each read scans that stream, and an
empty read waits for the broker's fetch timeout).

The pure reductions a refresh applies (:func:`~overwatch_lab.dashboard.frames.fleet_frame`,
worker rates, quarantine and telemetry windows) live in :mod:`overwatch_lab.dashboard.frames`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, runtime_checkable

import pandas as pd
import param

from overwatch_lab.dashboard.frames import (
    empty_fleet,
    fleet_frame,
    merge_telemetry,
    quarantine_total,
    trim_quarantine,
    worker_rates,
)

log = logging.getLogger(__name__)

TELEMETRY_OVERLAP_S = 5.0
"""An incremental telemetry read starts this many seconds before the newest row held (s), so a
message that reached the store slightly out of time order is still picked up (rows are
de-duplicated by ``id``)."""


class FrameSource(Protocol):
    """The frames a DataStore reads (``lab.frames``, a :class:`~overwatch_lab.frames.Frames`)."""

    def states(self) -> pd.DataFrame:
        """Every entity's KV document, flattened, one row per entity."""
        ...

    def telemetry(self, **filters: Any) -> pd.DataFrame:
        """Telemetry history (``entity_id=``, ``since=``, ``limit=`` ...)."""
        ...

    def quarantine(self) -> pd.DataFrame:
        """Every quarantine record."""
        ...


@runtime_checkable
class FleetSource(Protocol):
    """What a DataStore reads: ``frames`` and ``stats()`` (``Lab`` satisfies it)."""

    @property
    def frames(self) -> FrameSource:
        """The frames: states, telemetry history, quarantine."""
        ...

    def stats(self) -> dict[str, dict[str, Any]]:
        """Counters per worker and the synchronizer's."""
        ...


# ---------------------------------------------------------------------------------------------- store
@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one read of the source returned (built off the event loop, applied on it)."""

    fetched_at: float
    duration_s: float
    states: pd.DataFrame
    fleet: pd.DataFrame
    stats: dict[str, dict[str, Any]]
    telemetry_entity: str | None
    telemetry: pd.DataFrame
    quarantine: pd.DataFrame | None = None  # None: not read this time
    notes: list[str] = field(default_factory=list)  # non-fatal problems (quarantine read failed)


@dataclass(frozen=True, slots=True)
class Failure:
    """A read of the source that raised."""

    fetched_at: float
    duration_s: float
    error: str


class DataStore(param.Parameterized):
    """Holds the frames the dashboard shows and refreshes them from a lab at a fixed rate.

    Output parameters (read them, watch them; only the store writes them): ``states``,
    ``fleet``, ``stats``, ``rates``, ``telemetry`` (+ ``telemetry_entity``), ``quarantine`` and
    the health counters ``refreshes``, ``errors``, ``skipped``, ``last_refresh_s``,
    ``last_refresh_at``, ``last_error``, ``healthy``.

    Example (notebook)::

        store = DataStore(source=lab)
        store.refresh()          # one read now
        store.fleet.head()
    """

    source = param.Parameter(
        default=None, doc="Where the frames come from: a Lab, or any object with the FleetSource methods."
    )
    period_s = param.Number(default=1.0, bounds=(0.1, 3600), doc="Seconds between two refreshes.")
    selected = param.String(
        default=None, allow_None=True, doc="entity_id whose telemetry history is kept (None: none)."
    )
    telemetry_window_s = param.Number(
        default=600.0, bounds=(1, None), doc="Seconds of telemetry history kept for the selected entity."
    )
    telemetry_max_rows = param.Integer(
        default=5000, bounds=(10, None), doc="At most this many telemetry rows kept for the selected entity."
    )
    quarantine_period_s = param.Number(
        default=5.0,
        bounds=(0.5, None),
        doc="Minimum seconds between two reads of the quarantine stream (a read scans the stream).",
    )
    quarantine_recheck_s = param.Number(
        default=30.0,
        bounds=(1, None),
        doc="Read the quarantine stream at least this often even when no counter moved "
        "(an attached lab has no worker counters).",
    )
    quarantine_rows = param.Integer(default=200, bounds=(1, None), doc="Newest quarantine records kept.")

    # ---- outputs
    states = param.DataFrame(
        default=None, allow_None=True, doc="lab.frames.states(): flattened KV documents."
    )
    fleet = param.DataFrame(default=None, allow_None=True, doc="fleet_frame(states): one row per entity.")
    stats = param.Dict(default={}, doc="lab.stats(): counters per worker and the synchronizer's.")
    rates = param.Dict(
        default={}, doc="Per worker, over the last refresh: handled_per_s and busy_pct (see worker_rates)."
    )
    telemetry = param.DataFrame(default=None, allow_None=True, doc="Telemetry rows of telemetry_entity.")
    telemetry_entity = param.String(default=None, allow_None=True, doc="Entity the telemetry rows belong to.")
    quarantine = param.DataFrame(
        default=None, allow_None=True, doc="Newest quarantine records, newest first."
    )
    refreshes = param.Integer(default=0, doc="Successful refreshes.")
    errors = param.Integer(default=0, doc="Refreshes that failed (the source raised).")
    skipped = param.Integer(default=0, doc="Ticks skipped because the previous read was still running.")
    last_refresh_s = param.Number(default=0.0, doc="Duration of the last read (s).")
    last_refresh_at = param.Number(
        default=None, allow_None=True, doc="Epoch seconds of the last successful read."
    )
    last_error = param.String(
        default=None, allow_None=True, doc="The last failure, None once a read succeeds."
    )
    healthy = param.Boolean(default=False, doc="True when the last read succeeded.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.fleet = empty_fleet() if self.fleet is None else self.fleet
        self.states = pd.DataFrame() if self.states is None else self.states
        self.quarantine = trim_quarantine(pd.DataFrame(), 1) if self.quarantine is None else self.quarantine
        self.telemetry = pd.DataFrame() if self.telemetry is None else self.telemetry
        self._lock = threading.Lock()
        self._inflight: threading.Thread | None = None
        self._skipped = 0
        self._callback: Any = None
        self._deliver: Callable[[Callable[[], None]], object] | None = None
        self._started = False
        self._stopped = False
        self._quarantine_read_at = -math.inf
        self._quarantine_seen = -1
        self._logged_error: str | None = None
        self._prev_stats: tuple[float, dict[str, dict[str, Any]]] | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        """True while a periodic refresh is installed (between :meth:`start` and :meth:`stop`)."""
        return self._callback is not None and not self._stopped

    def start(self) -> DataStore:
        """Start refreshing every ``period_s`` (needs a Panel session or a running event loop).

        Under a Panel server the callback belongs to the current session and stops when the
        session is destroyed; in a notebook it runs on the kernel's loop. Without either (a
        plain script), nothing periodic can run: call :meth:`refresh` yourself. Returns self;
        calling it twice is a no-op.
        """
        if self._started:
            return self
        import panel as pn
        from panel.io.callbacks import PeriodicCallback

        self._started = True
        doc = pn.state.curdoc
        if doc is not None and doc.session_context is not None:
            self._deliver = partial(_deliver_to_doc, doc)
            pn.state.on_session_destroyed(lambda _ctx: self.stop())
        else:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is None:
                log.info("no Panel session and no running loop: the DataStore refreshes only on refresh()")
                return self
            self._deliver = loop.call_soon_threadsafe
        # background=True: a tick does not mark the page busy. Panel's busy flag is process-wide
        # and drives every template's busy indicator, so a foreground tick every second would
        # spin each page's indicator (and poke the documents of sessions that are gone).
        self._callback = PeriodicCallback(
            callback=self._tick, period=int(self.period_s * 1000), background=True
        )
        self._callback.start()
        self._tick()  # first read now, not one period from now
        return self

    def stop(self) -> None:
        """Stop refreshing (idempotent); a read in flight finishes but is not applied."""
        self._stopped = True
        callback, self._callback = self._callback, None
        if callback is not None:
            with contextlib.suppress(Exception):  # its session may already be gone
                callback.stop()

    @param.depends("period_s", watch=True)
    def _period_changed(self) -> None:
        if self._callback is not None:
            self._callback.period = int(self.period_s * 1000)

    @param.depends("selected", watch=True)
    def _selection_changed(self) -> None:
        if self.running:
            self._tick()  # show the new entity's history now, not at the next tick

    # ------------------------------------------------------------------ refresh
    def refresh(self) -> bool:
        """Read the source and apply the result now, blocking; returns True on success.

        Never raises for a failing source: the failure is counted in ``errors`` and kept in
        ``last_error``. Must not be called from the lab's own event-loop thread.
        """
        result = self._read()
        self._apply(result)
        return isinstance(result, Snapshot)

    def _tick(self) -> None:
        if self._stopped:
            return
        with self._lock:
            if self._inflight is not None and self._inflight.is_alive():
                self._skipped += 1
                return
            self._inflight = threading.Thread(
                target=self._read_and_deliver, name="overwatch-dashboard-refresh", daemon=True
            )
            self._inflight.start()

    def _read_and_deliver(self) -> None:
        result = self._read()
        deliver = self._deliver
        if self._stopped or deliver is None:
            return
        try:
            deliver(partial(self._apply, result))
        except Exception as exc:  # the session or loop went away between read and delivery
            log.debug("dashboard refresh not delivered: %r", exc)

    def _read(self) -> Snapshot | Failure:
        start = time.monotonic()
        now = time.time()
        source = self.source
        try:
            if source is None:
                raise RuntimeError("the DataStore has no source")
            states = source.frames.states()
            stats = source.stats()
            fleet = fleet_frame(states, now)
            entity, telemetry = self._read_telemetry(source, now)
            notes: list[str] = []
            quarantine = self._read_quarantine(source, stats, notes)
        except Exception as exc:  # a dashboard outlives its lab: every failure is counted, none kills it
            return Failure(now, time.monotonic() - start, f"{type(exc).__name__}: {exc}")
        return Snapshot(
            fetched_at=now,
            duration_s=time.monotonic() - start,
            states=states,
            fleet=fleet,
            stats=stats,
            telemetry_entity=entity,
            telemetry=telemetry,
            quarantine=quarantine,
            notes=notes,
        )

    def _read_telemetry(self, source: FleetSource, now: float) -> tuple[str | None, pd.DataFrame]:
        entity = self.selected
        if not entity:
            return None, pd.DataFrame()
        since = now - self.telemetry_window_s
        held = self.telemetry if self.telemetry_entity == entity else None
        if held is not None and not held.empty:
            new = source.frames.telemetry(
                entity_id=entity,
                since=float(held["ts"].max()) - TELEMETRY_OVERLAP_S,
                limit=self.telemetry_max_rows,
            )
        else:
            held = None
            new = source.frames.telemetry(entity_id=entity, since=since, limit=self.telemetry_max_rows)
        return entity, merge_telemetry(held, new, since=since, max_rows=self.telemetry_max_rows)

    def _read_quarantine(
        self, source: FleetSource, stats: dict[str, dict[str, Any]], notes: list[str]
    ) -> pd.DataFrame | None:
        total = quarantine_total(stats)
        since = time.monotonic() - self._quarantine_read_at
        due = since >= self.quarantine_recheck_s or (
            total != self._quarantine_seen and since >= self.quarantine_period_s
        )
        if not due:
            return None
        self._quarantine_read_at = time.monotonic()
        try:
            frame = trim_quarantine(source.frames.quarantine(), self.quarantine_rows)
        except Exception as exc:  # the rest of the snapshot is still good
            notes.append(f"quarantine read failed: {type(exc).__name__}: {exc}")
            return None
        self._quarantine_seen = total
        return frame

    def _apply(self, result: Snapshot | Failure) -> None:
        if isinstance(result, Failure):
            if result.error != self._logged_error:
                log.warning("dashboard refresh failed: %s", result.error)
                self._logged_error = result.error
            self.param.update(
                errors=self.errors + 1,
                last_error=result.error,
                last_refresh_s=result.duration_s,
                healthy=False,
                skipped=self._skipped,
            )
            return
        if self._logged_error is not None:
            log.info("dashboard refresh recovered")
            self._logged_error = None
        rates: dict[str, dict[str, float]] = {}
        if self._prev_stats is not None:
            rates = worker_rates(self._prev_stats[1], result.stats, result.fetched_at - self._prev_stats[0])
        self._prev_stats = (result.fetched_at, result.stats)
        updates: dict[str, Any] = {
            "states": result.states,
            "fleet": result.fleet,
            "stats": result.stats,
            "rates": rates,
            "telemetry_entity": result.telemetry_entity,
            "telemetry": result.telemetry,
            "refreshes": self.refreshes + 1,
            "last_refresh_s": result.duration_s,
            "last_refresh_at": result.fetched_at,
            "last_error": "; ".join(result.notes) or None,
            "healthy": True,
            "skipped": self._skipped,
        }
        if result.quarantine is not None:
            updates["quarantine"] = result.quarantine
        self.param.update(**updates)


def _deliver_to_doc(doc: Any, callback: Callable[[], None]) -> None:
    """Run ``callback`` on ``doc``'s loop with the document lock held and Panel's curdoc set."""
    from panel.io.state import set_curdoc

    def run() -> None:
        with set_curdoc(doc):
            callback()

    doc.add_next_tick_callback(run)
