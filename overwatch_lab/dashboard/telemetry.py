"""TelemetryPanel: one entity's altitude, speed and battery over time, from its telemetry history.

Pick the entity in the panel's own select box, in the fleet table or on the map: all three set
``data_store.selected``, and the DataStore then keeps that entity's recent history (a window of
``telemetry_window_s``, read incrementally). The plots share one time axis; their
ColumnDataSources get only the new rows (``stream`` with a rollover) while the same entity stays
selected, and are replaced when the selection changes. A summary line shows the entity's live
values from the fleet frame.
"""

from __future__ import annotations

import html
import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import ColumnDataSource, DataRange1d, DatetimeTickFormatter, HoverTool, Range1d
from bokeh.models.annotations import Title
from bokeh.models.renderers import DataRenderer
from bokeh.plotting import figure

from overwatch_lab.dashboard.datastore import DataStore
from overwatch_lab.dashboard.model_updates import ModelUpdates

if TYPE_CHECKING:
    from bokeh.models.sources import DataDict

SERIES: dict[str, tuple[str, ...]] = {
    "altitude": ("altitude_msl", "altitude_relative"),
    "speed": ("groundspeed", "airspeed"),
    "battery": ("battery_remaining",),
}
"""Plot → the telemetry columns it draws (each plot's rows: those where its first column is set)."""

LABELS: dict[str, str] = {
    "altitude_msl": "altitude MSL (m)",
    "altitude_relative": "altitude rel. (m)",
    "groundspeed": "groundspeed (m/s)",
    "airspeed": "airspeed (m/s)",
    "battery_remaining": "battery (%)",
}
MIN_WINDOW_MS = 10_000.0
"""The time axis never spans less than this (ms)."""

COLORS: dict[str, str] = {
    "altitude_msl": "#0969da",
    "altitude_relative": "#8250df",
    "groundspeed": "#1a7f37",
    "airspeed": "#bf8700",
    "battery_remaining": "#cf222e",
}


def series_columns(telemetry: pd.DataFrame | None, plot: str) -> DataDict:
    """Return one plot's source columns (``t`` in epoch ms, then its :data:`SERIES`) from telemetry rows.

    Rows are those where the plot's first column is set (other message types leave it NaN);
    a battery below 0 (MAVLink's "unknown") is left out. Also returns the row ``id`` so later
    rows can be recognised.
    """
    columns = SERIES[plot]
    empty: DataDict = {"t": [], "id": [], **{c: [] for c in columns}}
    if telemetry is None or telemetry.empty or columns[0] not in telemetry.columns:
        return empty
    rows = telemetry[telemetry[columns[0]].notna()]
    if plot == "battery":
        rows = rows[rows["battery_remaining"] >= 0]
    if rows.empty:
        return empty
    out: DataDict = {
        "t": (rows["ts"].to_numpy(dtype="float64") * 1000.0).tolist(),
        "id": rows["id"].astype("int64").tolist(),
    }
    for c in columns:
        values = rows[c].to_numpy(dtype="float64") if c in rows.columns else np.full(len(rows), np.nan)
        out[c] = values.tolist()
    return out


EMPTY_WINDOW_MS = 60_000.0
"""Time span (ms, ending now) an empty plot shows."""


def extent_columns(series: Any, plot: str, anchor_t: float | None, now_ms: float) -> DataDict:
    """Return the points of a plot's invisible extent glyph, which keeps its ranges finite.

    With data: its newest point with a finite value (inside the data's bounds, so it never widens
    them). Without: 0..1 high at ``anchor_t`` (another plot's newest time: the shared time axis is
    not widened) or over the last :data:`EMPTY_WINDOW_MS`. An empty Bokeh DataRange1d has NaN
    bounds, and the browser then warns "could not set initial ranges" on every update.
    """
    t = list(series["t"])
    for i in range(len(t) - 1, -1, -1):
        for c in SERIES[plot]:
            v = series[c][i]
            if v is not None and math.isfinite(v):
                return {"t": [t[i]], "v": [v]}
    if anchor_t is not None:
        return {"t": [anchor_t, anchor_t], "v": [0.0, 1.0]}
    return {"t": [now_ms - EMPTY_WINDOW_MS, now_ms], "v": [0.0, 1.0]}


def _fmt(value: Any, fmt: str, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{format(value, fmt)}{unit}"


class TelemetryPanel(pn.viewable.Viewer):
    """Select an entity and watch its altitude, speed and battery over time."""

    data_store = param.ClassSelector(class_=DataStore, doc="Where the telemetry and fleet frames come from.")
    max_points = param.Integer(
        default=3000, bounds=(10, None), doc="Points kept per plot (older ones roll off)."
    )
    plot_height = param.Integer(default=150, bounds=(80, None), doc="Height of each plot in pixels.")
    auto_select = param.Boolean(
        default=True, doc="When no entity is selected, select the first one (so the plots show something)."
    )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.entity = pn.widgets.Select(label="Entity", options=[], sizing_mode="stretch_width")
        self.entity.param.watch(self._on_pick, "value")
        self.summary = pn.pane.HTML("", sizing_mode="stretch_width", margin=(0, 10))
        self.sources = {plot: ColumnDataSource(series_columns(pd.DataFrame(), plot)) for plot in SERIES}
        self.extents = {
            plot: ColumnDataSource(extent_columns(source.data, plot, None, time.time() * 1000.0))
            for plot, source in self.sources.items()
        }
        self.figures = self._build_figures()
        self.updates = ModelUpdates(next(iter(self.figures.values())))
        self._entity: str | None = None
        self._last_id = -1
        self._sync_options()
        self._sync_plots()

    def _build_figures(self) -> dict[str, Any]:
        figures: dict[str, Any] = {}
        shared_x = DataRange1d(min_interval=MIN_WINDOW_MS)  # one point still gets a readable time axis
        for plot, columns in SERIES.items():
            fig = figure(
                x_axis_type="datetime",
                height=self.plot_height,
                sizing_mode="stretch_width",
                tools="xpan,xwheel_zoom,reset,save",
                active_scroll="xwheel_zoom",
                toolbar_location="right",
                title=Title(text=plot, text_font_size="9pt"),
                name=f"telemetry-{plot}",
                x_range=shared_x,
            )
            fig.xaxis.major_label_text_font_size = fig.yaxis.major_label_text_font_size = "8pt"
            fig.min_border_left = 50
            fig.xaxis.formatter = DatetimeTickFormatter(
                microseconds="%H:%M:%S.%3N",
                milliseconds="%H:%M:%S.%3N",
                seconds="%H:%M:%S",
                minsec="%H:%M:%S",
                minutes="%H:%M",
                hourmin="%H:%M",
                hours="%H:%M",
                context=None,
            )
            if plot == "battery":
                fig.y_range = Range1d(start=0, end=105)
            fig.scatter("t", "v", source=self.extents[plot], size=0, alpha=0.0, visible=False)
            lines: list[DataRenderer] = []
            for c in columns:
                lines.append(
                    fig.line(
                        "t",
                        c,
                        source=self.sources[plot],
                        line_width=2,
                        color=COLORS[c],
                        legend_label=LABELS[c],
                    )
                )
                fig.scatter(
                    "t", c, source=self.sources[plot], size=3, color=COLORS[c], legend_label=LABELS[c]
                )
            fig.legend.location = "top_left"
            fig.legend.orientation = "horizontal"
            fig.legend.label_text_font_size = "8pt"
            fig.legend.label_height = fig.legend.glyph_height = 10
            fig.legend.background_fill_alpha = 0.7
            fig.legend.spacing = fig.legend.margin = 2
            fig.legend.padding = 2  # type: ignore[assignment]  # bokeh 3.9's stub wraps Padding in a Property
            fig.toolbar.logo = None
            fig.toolbar.autohide = True
            fig.add_tools(
                HoverTool(
                    tooltips=[("time", "@t{%H:%M:%S}"), *((LABELS[c], f"@{c}{{0.0}}") for c in columns)],
                    formatters={"@t": "datetime"},
                    mode="vline",
                    renderers=lines[:1],
                )
            )
            figures[plot] = fig
        return figures

    def _on_pick(self, event: param.parameterized.Event) -> None:
        if self.data_store is not None and event.new and event.new != self.data_store.selected:
            self.data_store.selected = event.new

    @param.depends("data_store.fleet", "data_store.selected", watch=True)
    def _sync_options(self) -> None:
        store = self.data_store
        if store is None or store.fleet is None:  # the DataStore sets fleet; None only before that
            return
        fleet = store.fleet
        options = {
            f"{n} ({e})" if n != e else e: e for e, n in zip(fleet["entity_id"], fleet["name"], strict=True)
        }
        if store.selected is None and self.auto_select and options:
            store.selected = next(iter(options.values()))  # re-enters through the watcher
            return
        if store.selected is not None and store.selected not in options.values():
            options[store.selected] = store.selected
        current = self.entity.options
        if list(current.values() if isinstance(current, dict) else current) != list(options.values()):
            self.entity.options = options
        if store.selected is not None and self.entity.value != store.selected:
            self.entity.value = store.selected
        self._sync_summary(store, fleet)

    def _sync_summary(self, store: DataStore, fleet: pd.DataFrame) -> None:
        row = (
            fleet[fleet["entity_id"] == store.selected]
            if store.selected and not fleet.empty
            else fleet.iloc[:0]
        )
        if row.empty:
            self.summary.object = (
                '<span style="color:#57606a">Select an entity (here, in the table or on the map).</span>'
            )
            return
        r = row.iloc[0]
        live = (
            '<b style="color:#1a7f37">&#9679; live</b>'
            if r["is_live"]
            else '<b style="color:#8c959f">&#9675; stale</b>'
        )
        armed = [{True: "armed", False: "disarmed"}[r["armed"]]] if r["armed"] is not None else []
        parts = [
            live,
            f"mode <b>{html.escape(str(r['mode'] or '–'))}</b>",
            *armed,
            f"alt <b>{_fmt(r['altitude'], '.1f', ' m')}</b>",
            f"speed <b>{_fmt(r['speed'], '.1f', ' m/s')}</b>",
            f"battery <b>{_fmt(r['battery'], '.0f', ' %')}</b>",
            f"seen {_fmt(r['age_s'], '.1f', ' s')} ago",
        ]
        self.summary.object = " &middot; ".join(parts)

    @param.depends("data_store.telemetry", watch=True)
    def _sync_plots(self) -> None:
        if self.data_store is not None:
            self.updates.apply("plots", self._apply_plots)  # in the document's lock when served

    def _apply_plots(self) -> None:
        store = self.data_store
        if store is None:
            return
        telemetry = store.telemetry
        entity = store.telemetry_entity
        if entity != self._entity or telemetry is None or telemetry.empty:
            for plot, source in self.sources.items():
                source.data = series_columns(telemetry, plot)
            self._entity = entity
        else:
            new = telemetry[telemetry["id"] > self._last_id]
            for plot, source in self.sources.items():
                columns = series_columns(new, plot)
                if columns["t"]:
                    source.stream(columns, rollover=self.max_points)
        ids = (
            telemetry["id"]
            if telemetry is not None and "id" in telemetry.columns
            else pd.Series(dtype="int64")
        )
        self._last_id = int(ids.max()) if len(ids) else -1
        newest = [source.data["t"][-1] for source in self.sources.values() if len(source.data["t"])]
        anchor = max(newest) if newest else None
        for plot, source in self.sources.items():
            self.extents[plot].data = extent_columns(source.data, plot, anchor, time.time() * 1000.0)
        for plot, fig in self.figures.items():
            fig.title.text = f"{plot} · {entity}" if entity else plot

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            self.entity,
            self.summary,
            *(pn.pane.Bokeh(fig, sizing_mode="stretch_width") for fig in self.figures.values()),
            sizing_mode="stretch_width",
        )
