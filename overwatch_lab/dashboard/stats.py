"""WorkerStats: is the fabric keeping up? Worker counters, the synchronizer, the quarantine.

On top, an alarm while any worker holds messages for an infrastructure fault (database full,
read-only, locked or unreachable: nothing is acked or quarantined until it clears). Then three
tables, all from the :class:`~.datastore.DataStore` (so from one ``lab.stats()`` per
refresh): one row per worker (handled, rate, acked, ignored, retried, quarantined, consumer lag,
batch sizes, busy share, last error); the synchronizer's and the dashboard's own counters
(refreshes, failures, skipped ticks: the drop accounting an operator needs to trust the
screen); and the newest quarantine records with the reason each was set aside.
"""

from __future__ import annotations

import html
import time
from typing import Any

import pandas as pd
import panel as pn
import param
from bokeh.models.widgets.tables import HTMLTemplateFormatter, NumberFormatter

from overwatch_lab.dashboard.datastore import DataStore
from overwatch_lab.dashboard.fleet import sync_tabulator
from overwatch_lab.dashboard.frames import QUARANTINE_COLUMNS, trim_quarantine
from overwatch_lab.dashboard.streams import STREAM_COLUMNS, loss_banner, stream_frame
from overwatch_lab.protocol.printable import printable

WORKER_COLUMNS: tuple[str, ...] = (
    "worker",
    "handled",
    "rate",
    "acked",
    "ignored",
    "retried",
    "quarantined",
    "held",
    "lag",
    "batches",
    "last_batch_size",
    "peak_batch_size",
    "busy_pct",
    "last_error",
)
"""Columns of :func:`worker_frame`."""

SYNC_COUNTERS: tuple[str, ...] = (
    "passes",
    "created",
    "repaired",
    "removed",
    "marked_stale",
    "written_back",
    "failed_passes",
    "last_pass_s",
    "last_error",
)
"""Synchronizer counters shown, in order."""

TEXT_CELL = '<span title="<%- value %>"><%- value %></span>'
"""Template of a text cell whose full text shows on hover. ``<%- %>`` escapes HTML in the cell
and in its ``title`` (the browser shows a title as plain text), where Tabulator's own
``tooltip: true`` would insert the value as HTML: a quarantine reason quotes device text."""


def text_cell() -> HTMLTemplateFormatter:
    """The formatter of a text column: HTML-escaped, full text on hover (:data:`TEXT_CELL`)."""
    return HTMLTemplateFormatter(template=TEXT_CELL)


def worker_frame(stats: dict[str, dict[str, Any]], rates: dict[str, dict[str, float]]) -> pd.DataFrame:
    """One row per worker (entries of ``lab.stats()`` with a ``handled`` counter).

    Args:
        stats: ``lab.stats()``.
        rates: ``DataStore.rates`` (per worker: handled_per_s, busy_pct over the last refresh).

    Returns:
        :data:`WORKER_COLUMNS`; ``rate`` in messages/s and ``busy_pct`` in % (NaN before two
        refreshes have been seen).
    """
    rows = []
    for name, c in sorted(stats.items()):
        if not isinstance(c, dict) or "handled" not in c:
            continue
        rate = rates.get(name, {})
        rows.append(
            {
                "worker": name,
                "handled": int(c.get("handled") or 0),
                "rate": float(rate.get("handled_per_s", float("nan"))),
                "acked": int(c.get("acked") or 0),
                "ignored": int(c.get("ignored") or 0),
                "retried": int(c.get("retried") or 0),
                "quarantined": int(c.get("quarantined") or 0),
                "held": int(c.get("held") or 0),
                "lag": int(c.get("lag") or 0),
                "batches": int(c.get("batches") or 0),
                "last_batch_size": int(c.get("last_batch_size") or 0),
                "peak_batch_size": int(c.get("peak_batch_size") or 0),
                "busy_pct": float(rate.get("busy_pct", float("nan"))),
                "last_error": printable(c.get("last_error") or ""),
            }
        )
    frame = pd.DataFrame(rows, columns=list(WORKER_COLUMNS))
    return frame.astype({"worker": object, "last_error": object, "rate": "float64", "busy_pct": "float64"})


def hold_alarm(stats: dict[str, dict[str, Any]], now: float | None = None) -> str:
    """The alarm's HTML: one line per worker that holds messages now; ``""`` when none does.

    Args:
        stats: ``lab.stats()`` (workers report ``holding``, ``held``, ``hold_since``,
            ``hold_attempts`` and ``hold_reason``).
        now: epoch seconds to measure the hold's age against (default: the clock).
    """
    now = time.time() if now is None else now
    lines = []
    for name, c in sorted(stats.items()):
        if not isinstance(c, dict) or not c.get("holding"):
            continue
        since = c.get("hold_since")
        age = f" for {max(0.0, now - since):,.0f} s" if isinstance(since, int | float) else ""
        lines.append(
            f"<b>{html.escape(name)}</b> holds {int(c.get('held') or 0):,} messages{age} "
            f"({int(c.get('hold_attempts') or 0)} attempts): {html.escape(str(c.get('hold_reason') or ''))}"
        )
    if not lines:
        return ""
    return (
        '<div style="padding:8px 12px;border:1px solid #cf222e;border-radius:6px;background:#ffebe9;'
        'color:#82071e"><b>&#9888; HOLDING: infrastructure fault</b>. Nothing is acked or quarantined; '
        "the stream keeps the messages and the workers resume by themselves when the fault clears."
        f"<br>{'<br>'.join(lines)}</div>"
    )


def counters_frame(stats: dict[str, dict[str, Any]], store: DataStore) -> pd.DataFrame:
    """Key/value rows: the synchronizer's counters, KV conflicts, then the dashboard's own."""
    rows: list[tuple[str, str]] = []
    sync = stats.get("synchronizer")
    if isinstance(sync, dict):
        for key in SYNC_COUNTERS:
            value = sync.get(key)
            if key == "last_pass_s" and isinstance(value, int | float):
                value = f"{value * 1000:.1f} ms"
            rows.append((f"sync · {key}", "" if value is None else str(value)))
    kv = stats.get("kv")
    if isinstance(kv, dict):
        rows.extend((f"kv · {k}", str(v)) for k, v in kv.items())
    rows.extend(
        [
            ("dashboard · refreshes", str(store.refreshes)),
            ("dashboard · failed refreshes", str(store.errors)),
            ("dashboard · skipped ticks", str(store.skipped)),
            ("dashboard · last read", f"{store.last_refresh_s * 1000:.1f} ms"),
            ("dashboard · last error", store.last_error or ""),
        ]
    )
    return pd.DataFrame(rows, columns=["counter", "value"], dtype=object)


class WorkerStats(pn.viewable.Viewer):
    """Worker counters (handled, rate, acked, quarantined, lag, …), synchronizer counters, quarantine."""

    data_store = param.ClassSelector(class_=DataStore, doc="Where the stats and quarantine frames come from.")
    height = param.Integer(default=260, bounds=(100, None), doc="Height of the quarantine table in pixels.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        number = NumberFormatter(format="0,0")
        table_opts: dict[str, Any] = {
            "show_index": False,
            "disabled": True,
            "sizing_mode": "stretch_width",
            "theme": "bootstrap5",
            "theme_classes": ["table-sm"],
            "layout": "fit_data_stretch",
        }
        self.workers = pn.widgets.Tabulator(
            worker_frame({}, {}),
            titles={
                "worker": "Worker",
                "handled": "Handled",
                "rate": "msg/s",
                "acked": "Acked",
                "ignored": "Ignored",
                "retried": "Retried",
                "quarantined": "Quarantined",
                "held": "Held",  # unacked, kept in progress while an infrastructure fault lasts
                "lag": "Lag",
                "batches": "Batches",
                "last_batch_size": "Last batch",
                "peak_batch_size": "Peak batch",  # largest batch fetched
                "busy_pct": "Busy %",
                "last_error": "Error",
            },
            formatters={
                **{
                    c: number for c in WORKER_COLUMNS if c not in ("worker", "rate", "busy_pct", "last_error")
                },
                "rate": NumberFormatter(format="0,0.0", nan_format="–"),
                "busy_pct": NumberFormatter(format="0.0", nan_format="–"),
                "worker": text_cell(),
                "last_error": text_cell(),  # full last error on hover
            },
            hidden_columns=["batches", "last_batch_size"],
            **table_opts,
        )
        self.loss = pn.pane.HTML("", sizing_mode="stretch_width", margin=(0, 10))  # empty unless lost
        self.streams = pn.widgets.Tabulator(
            stream_frame({}),
            titles={
                "stream": "Stream",
                "consumer": "Consumer",
                "messages": "Messages",
                "fill_pct": "Full %",
                "lag": "Lag",
                "lag_rate": "Lag trend msg/s",  # > 0: falling behind
                "overflow_in_s": "Overflow in s",
                "lost": "Lost",
                "discarded": "Discarded unseen",
                "dropped": "Dropped (limits)",
            },
            formatters={
                **{
                    c: number
                    for c in STREAM_COLUMNS
                    if c not in ("stream", "consumer", "fill_pct", "lag_rate")
                },
                "lag": NumberFormatter(format="0,0", nan_format="–"),
                "overflow_in_s": NumberFormatter(format="0,0", nan_format="–"),
                "fill_pct": NumberFormatter(format="0.0", nan_format="–"),
                "lag_rate": NumberFormatter(format="+0,0", nan_format="–"),
            },
            hidden_columns=["discarded", "dropped"],
            **table_opts,
        )
        self.counters = pn.widgets.Tabulator(
            pd.DataFrame(columns=["counter", "value"], dtype=object),
            titles={"counter": "Counter", "value": "Value"},
            **table_opts,
        )
        self.alarm = pn.pane.HTML("", sizing_mode="stretch_width", margin=(8, 10, 0, 10), visible=False)
        self.quarantine = pn.widgets.Tabulator(
            trim_quarantine(pd.DataFrame(), 1),
            titles={
                "quarantined_at": "Quarantined at",
                "worker": "Worker",
                "error": "Reason",
                "original_subject": "Subject",
                "num_delivered": "Deliveries",
                "stream_sequence": "Seq",
                "source_stream": "Stream",
            },
            formatters={c: text_cell() for c in ("quarantined_at", "worker", "original_subject", "error")},
            hidden_columns=["source_stream"],
            height=self.height,
            configuration={"placeholder": "No quarantined messages"},
            **table_opts,
        )
        self._sync()
        self._sync_quarantine()

    @param.depends("data_store.stats", "data_store.refreshes", "data_store.errors", watch=True)
    def _sync(self) -> None:
        store = self.data_store
        if store is None:
            return
        alarm = hold_alarm(store.stats)
        self.alarm.object, self.alarm.visible = alarm, bool(alarm)
        sync_tabulator(self.workers, worker_frame(store.stats, store.rates), "worker", keep_order=True)
        sync_tabulator(self.counters, counters_frame(store.stats, store), "counter", keep_order=True)
        sync_tabulator(self.streams, stream_frame(store.stats), "stream", keep_order=True)
        self.loss.object = loss_banner(store.stats)

    @param.depends("data_store.quarantine", watch=True)
    def _sync_quarantine(self) -> None:
        store = self.data_store
        if store is None or store.quarantine is None:
            return
        frame = store.quarantine.reindex(columns=list(QUARANTINE_COLUMNS))
        if not frame.equals(self.quarantine.value):
            self.quarantine.value = frame

    def __panel__(self) -> pn.viewable.Viewable:
        def title(text: str) -> pn.pane.HTML:
            return pn.pane.HTML(text, margin=(8, 10, 0, 10))

        return pn.Column(
            self.alarm,
            self.loss,
            title("<b>Workers</b>"),
            self.workers,
            title(
                "<b>Streams</b> (lag trend &gt; 0: falling behind; lost: removed before any worker saw it)"
            ),
            self.streams,
            title("<b>Quarantine</b> (newest first; hover a cell for the full text)"),
            self.quarantine,
            title("<b>Synchronizer &amp; dashboard</b>"),
            pn.Row(self.counters, width=440),
            sizing_mode="stretch_width",
        )
