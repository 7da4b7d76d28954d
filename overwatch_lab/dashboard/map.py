"""FleetMap: every entity with a position on one Bokeh plot, plus the selected entity's track.

Offline by default: the plot is Web Mercator metres with longitude/latitude tick labels and a
grid, and no tile layer, so nothing is fetched from outside. Pass ``tile_url`` (an XYZ template
such as a local tile server's ``http://127.0.0.1:8080/{z}/{x}/{y}.png``) to draw tiles under it.

One glyph per entity: the marker says what it is (triangle = aircraft, square = ground vehicle,
diamond = surface vessel, …), rotated to its heading; the colour says which organisation (or
kind, ``color_by``); a stale entity is drawn faded. Hover shows id, mode, speed, battery. Tap an
entity to select it (``data_store.selected``): its recent positions from the telemetry history
are drawn as a trail. The ColumnDataSources are updated in place; the figure is never rebuilt.

The view is fitted once: to the fleet when the first positions arrive, and again only when the
operator picks what to fit (``focus_org``: the whole fleet or one organisation). Between fits the
axes stay put however the fleet moves, and a pan or zoom by the operator is kept (the reset tool
returns to the last fit). An entity whose link is stale is drawn faded; one not heard from for
``drop_after_s`` (default 10 minutes: a finished fleet) is left off the map (it stays in the table).

Every change to the Bokeh models goes through :class:`~.model_updates.ModelUpdates`, i.e. into
the document's lock when the map is served.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import ColumnDataSource, DataRange1d, HoverTool, TapTool, WMTSTileSource
from bokeh.models.annotations import LabelSet
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from overwatch_lab.dashboard.datastore import DataStore
from overwatch_lab.dashboard.model_updates import ModelUpdates

if TYPE_CHECKING:
    from bokeh.models.sources import DataDict

EARTH_RADIUS_M = 6378137.0
"""WGS 84 semi-major axis (m), the Web Mercator sphere."""

MAX_MERCATOR_LAT = 85.05112878
"""Web Mercator is undefined at the poles; latitudes are clamped to ± this (degrees)."""

MARKERS: dict[str, str] = {
    "air": "triangle",
    "ground": "square",
    "surface": "diamond",
    "underwater": "inverted_triangle",
    "sensor": "circle",
    "station": "star",
    "geo": "x",
    "other": "circle",
}
"""Bokeh marker per entity kind."""

MIN_SPAN_M = 400.0
"""The map never zooms in (automatically or by hand) to less than this across (m)."""

_ORIENTED = frozenset({"air", "ground", "surface", "underwater"})
PALETTE: tuple[str, ...] = tuple(Category10_10)
STALE_ALPHA = 0.3

DROP_AFTER_S = 600.0
"""Entities not heard from for this long (s) are left off the map by default."""

WORLD_FIT: tuple[float, float, float, float] = (-30.0, 60.0, 20.0, 60.0)
"""(lon min, lon max, lat min, lat max) shown before any entity has a position (never empty ranges)."""

ENTITY_COLUMNS: tuple[str, ...] = (
    "x", "y", "entity_id", "name", "org", "kind", "entity_type", "mode", "speed", "battery",
    "altitude", "heading", "latitude", "longitude", "live", "age", "color", "marker", "angle", "alpha",
)  # fmt: skip
"""Columns of the map's entity source (one row per entity with a position)."""


def to_mercator(lon: Any, lat: Any) -> tuple[np.ndarray, np.ndarray]:
    """Project WGS 84 degrees to Web Mercator metres (arrays in, arrays out; NaN stays NaN)."""
    lon_a = np.asarray(lon, dtype="float64")
    lat_a = np.clip(np.asarray(lat, dtype="float64"), -MAX_MERCATOR_LAT, MAX_MERCATOR_LAT)
    x = EARTH_RADIUS_M * np.radians(lon_a)
    y = EARTH_RADIUS_M * np.log(np.tan(np.pi / 4 + np.radians(lat_a) / 2))
    return x, y


class ColorMap:
    """Stable category → colour assignment: a category keeps its colour for the view's life."""

    def __init__(self, palette: tuple[str, ...] = PALETTE) -> None:
        self.palette = palette
        self._assigned: dict[str, str] = {}

    def __call__(self, category: str) -> str:
        """Return the colour of ``category``, assigning the next palette colour on first sight."""
        if category not in self._assigned:
            self._assigned[category] = self.palette[len(self._assigned) % len(self.palette)]
        return self._assigned[category]

    def items(self, categories: list[str]) -> list[tuple[str, str]]:
        """Return (category, colour) for each of ``categories``, in order."""
        return [(c, self(c)) for c in categories]


def _fmt(value: Any, fmt: str, missing: str = "–") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, fmt)


def entity_columns(
    fleet: pd.DataFrame, color_by: str, colors: ColorMap, drop_after_s: float | None = None
) -> DataDict:
    """Build the map's entity source columns from a fleet frame.

    Entities without a position are left out, and so are those last seen more than
    ``drop_after_s`` ago (None: none dropped); stale ones are drawn faded (``alpha``).

    Args:
        fleet: a :func:`~.frames.fleet_frame`.
        color_by: ``"org"`` or ``"kind"``.
        colors: the view's colour assignment.
        drop_after_s: seconds after which a silent entity leaves the map.

    Returns:
        A dict of :data:`ENTITY_COLUMNS` → lists, ready for ``ColumnDataSource.data``.
    """
    placed = fleet[fleet["latitude"].notna() & fleet["longitude"].notna()] if not fleet.empty else fleet
    if drop_after_s is not None and not placed.empty:
        placed = placed[~(placed["age_s"] > drop_after_s)]  # never seen (NaN) is kept
    if placed.empty:
        return {c: [] for c in ENTITY_COLUMNS}
    x, y = to_mercator(placed["longitude"], placed["latitude"])
    org = [o or i for o, i in zip(placed["org_name"], placed["org_id"], strict=True)]
    kinds = placed["kind"].tolist()
    groups = org if color_by == "org" else kinds
    heading = placed["heading"].to_numpy(dtype="float64")
    angle = [
        -math.radians(h) if k in _ORIENTED and not math.isnan(h) else 0.0
        for k, h in zip(kinds, heading, strict=True)
    ]
    live = placed["is_live"].astype(bool).tolist()
    return {
        "x": x.tolist(),
        "y": y.tolist(),
        "entity_id": placed["entity_id"].tolist(),
        "name": placed["name"].tolist(),
        "org": org,
        "kind": kinds,
        "entity_type": placed["entity_type"].tolist(),
        "mode": [m or "–" for m in placed["mode"]],
        "speed": [_fmt(v, ".1f") for v in placed["speed"]],
        "battery": [_fmt(v, ".0f") for v in placed["battery"]],
        "altitude": [_fmt(v, ".1f") for v in placed["altitude"]],
        "heading": [_fmt(v, ".0f") for v in placed["heading"]],
        "latitude": placed["latitude"].tolist(),
        "longitude": placed["longitude"].tolist(),
        "live": ["live" if v else "stale" for v in live],
        "age": [_fmt(v, ".1f", "never") for v in placed["age_s"]],
        "color": [colors(g) for g in groups],
        "marker": [MARKERS.get(k, "circle") for k in kinds],
        "angle": angle,
        "alpha": [1.0 if v else STALE_ALPHA for v in live],
    }


def fit_box(fleet: pd.DataFrame, org: str | None = None) -> tuple[float, float, float, float] | None:
    """Return (lon min, lon max, lat min, lat max) of the positioned entities (of ``org``), or None."""
    if fleet.empty:
        return None
    rows = fleet[fleet["latitude"].notna() & fleet["longitude"].notna()]
    if org is not None:
        rows = rows[(rows["org_name"].fillna(rows["org_id"]) == org) | (rows["org_id"] == org)]
    if rows.empty:
        return None
    lon, lat = rows["longitude"], rows["latitude"]
    return float(lon.min()), float(lon.max()), float(lat.min()), float(lat.max())


def trail_columns(telemetry: pd.DataFrame | None, points: int) -> DataDict:
    """Return the x/y (and lon/lat) of the newest ``points`` positions in a telemetry frame."""
    if telemetry is None or telemetry.empty or "latitude" not in telemetry.columns:
        return {"x": [], "y": [], "longitude": [], "latitude": []}
    pos = telemetry[telemetry["latitude"].notna() & telemetry["longitude"].notna()].tail(points)
    x, y = to_mercator(pos["longitude"], pos["latitude"])
    return {
        "x": x.tolist(),
        "y": y.tolist(),
        "longitude": pos["longitude"].tolist(),
        "latitude": pos["latitude"].tolist(),
    }


class FleetMap(pn.viewable.Viewer):
    """Bokeh map of the fleet: one glyph per entity, hover details, the selected entity's trail."""

    data_store = param.ClassSelector(class_=DataStore, doc="Where the fleet and telemetry frames come from.")
    color_by: param.Selector[str] = param.Selector(
        default="org", objects=["org", "kind"], doc="Colour glyphs by organisation or kind."
    )
    show_labels = param.Boolean(default=True, doc="Write each entity's name next to its glyph.")
    trail_points = param.Integer(
        default=300, bounds=(2, None), doc="Positions drawn in the selected entity's trail."
    )
    tile_url = param.String(
        default=None,
        allow_None=True,
        doc="XYZ tile URL template drawn under the plot (None: no tiles, nothing fetched; keep it local offline).",
    )
    tile_attribution = param.String(default="", doc="Attribution text for the tile layer.")
    height = param.Integer(default=540, bounds=(200, None), doc="Plot height in pixels.")
    drop_after_s = param.Number(
        default=DROP_AFTER_S,
        bounds=(1, None),
        allow_None=True,
        doc="Entities not heard from for this long (s) leave the map (None: never); stale ones are faded.",
    )
    focus_org = param.String(
        default=None, allow_None=True, doc="Organisation the view fits to (None: the whole fleet)."
    )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.colors = ColorMap()
        self.source = ColumnDataSource({c: [] for c in ENTITY_COLUMNS}, name="fleet-entities")
        self.trail = ColumnDataSource({"x": [], "y": [], "longitude": [], "latitude": []}, name="fleet-trail")
        self.fit_source = ColumnDataSource(self._box_columns(WORLD_FIT), name="fleet-fit")
        self.fitted: tuple[float, float, float, float] | None = None  # the box last fitted (None: none yet)
        self.figure = self._build_figure()
        self.updates = ModelUpdates(self.figure)
        self._legend = pn.pane.HTML("", margin=(0, 10), styles={"font-size": "0.85em"})
        self._syncing = False
        self.source.selected.on_change("indices", self._on_tap)
        self._sync()

    @staticmethod
    def _box_columns(box: tuple[float, float, float, float]) -> DataDict:
        x, y = to_mercator([box[0], box[1]], [box[2], box[3]])
        return {"x": x.tolist(), "y": y.tolist()}

    def _build_figure(self) -> Any:
        # Never show less than MIN_SPAN_M across (one entity, or a fleet parked in one spot).
        # The ranges follow one invisible renderer, the fitted box, not the entities: a moving fleet
        # never moves the axes, and the ranges are never empty (no "could not set initial ranges").
        fig = figure(
            x_axis_type="mercator",
            y_axis_type="mercator",
            match_aspect=True,
            tools="pan,wheel_zoom,box_zoom,reset,save",
            active_scroll="wheel_zoom",
            sizing_mode="stretch_width",
            height=self.height,
            toolbar_location="above",
            background_fill_color="#f6f8fa",
            border_fill_color="white",
            name="fleet-map",
        )
        fig.toolbar.logo = None
        fig.xaxis.axis_label = "longitude"
        fig.yaxis.axis_label = "latitude"
        fig.grid.grid_line_color = "#d0d7de"
        fig.grid.grid_line_alpha = 0.8
        fig.xaxis.major_label_text_font_size = fig.yaxis.major_label_text_font_size = "9pt"
        if self.tile_url:
            fig.add_tile(WMTSTileSource(url=self.tile_url, attribution=self.tile_attribution))
        fit = fig.scatter("x", "y", source=self.fit_source, size=0, alpha=0.0, visible=False)
        fig.x_range = DataRange1d(range_padding=0.15, min_interval=MIN_SPAN_M, renderers=[fit])
        fig.y_range = DataRange1d(range_padding=0.15, min_interval=MIN_SPAN_M, renderers=[fit])
        fig.line("x", "y", source=self.trail, line_color="#0969da", line_width=2, line_alpha=0.7)
        fig.scatter("x", "y", source=self.trail, size=3, color="#0969da", alpha=0.5)
        entities = fig.scatter(
            "x",
            "y",
            source=self.source,
            marker="marker",
            angle="angle",
            size=15,
            fill_color="color",
            fill_alpha="alpha",
            line_color="#24292f",
            line_alpha="alpha",
            line_width=1,
            selection_line_color="#0969da",
            selection_line_width=3,  # type: ignore[call-arg]  # a glyph visual; bokeh 3.9's stub omits it
            selection_fill_alpha="alpha",
            nonselection_fill_alpha="alpha",
            nonselection_line_alpha="alpha",
        )
        self.labels = LabelSet(
            x="x",
            y="y",
            text="name",
            source=self.source,
            x_offset=9,
            y_offset=6,
            text_font_size="8pt",
            text_color="#24292f",
            text_alpha=0.85,
            visible=self.show_labels,
        )
        fig.add_layout(self.labels)
        fig.add_tools(
            HoverTool(
                renderers=[entities],
                tooltips=[
                    ("entity", "@entity_id (@name)"),
                    ("org", "@org"),
                    ("type", "@entity_type"),
                    ("link", "@live, seen @age s ago"),
                    ("mode", "@mode"),
                    ("speed", "@speed m/s, heading @heading°"),
                    ("battery", "@battery %"),
                    ("alt", "@altitude m"),
                    ("lat, lon", "@latitude{0.00000}, @longitude{0.00000}"),
                ],
            ),
            TapTool(renderers=[entities]),
        )
        return fig

    @param.depends("show_labels", watch=True)
    def _labels_toggled(self) -> None:
        self.updates.apply("labels", lambda: setattr(self.labels, "visible", self.show_labels))

    @param.depends("data_store.fleet", "color_by", "drop_after_s", watch=True)
    def _sync(self) -> None:
        if self.data_store is None or self.data_store.fleet is None:
            return
        self.updates.apply("entities", self._apply_entities)

    def _apply_entities(self) -> None:
        store = self.data_store
        if store is None or store.fleet is None:
            return
        fleet = store.fleet
        data = entity_columns(fleet, self.color_by, self.colors, self.drop_after_s)
        self._syncing = True
        try:
            self.source.data = data
            self._select_in_source(store.selected)
        finally:
            self._syncing = False
        if self.fitted is None:
            self._fit(fleet)
        groups = sorted(set(data["org"] if self.color_by == "org" else data["kind"]))
        self._legend.object = " ".join(
            f'<span style="white-space:nowrap;margin-right:12px"><span style="display:inline-block;width:10px;'
            f'height:10px;border-radius:2px;background:{c};margin-right:4px"></span>{html.escape(str(g))}</span>'
            for g, c in self.colors.items(groups)
        )

    @param.depends("focus_org", watch=True)
    def _focus_changed(self) -> None:
        self.fit()

    def fit(self) -> None:
        """Fit the view to the fleet (or ``focus_org``) as it is now."""
        self.updates.apply("fit", self._fit_now)

    def _fit_now(self) -> None:
        if self.data_store is not None and self.data_store.fleet is not None:
            self._fit(self.data_store.fleet)

    def _fit(self, fleet: pd.DataFrame) -> None:
        box = fit_box(fleet, self.focus_org)
        if box is None or box == self.fitted:
            return
        self.fitted = box
        self.fit_source.data = self._box_columns(box)

    @param.depends("data_store.telemetry", "data_store.selected", "trail_points", watch=True)
    def _sync_trail(self) -> None:
        if self.data_store is not None:
            self.updates.apply("trail", self._apply_trail)

    def _apply_trail(self) -> None:
        store = self.data_store
        if store is None:
            return
        same = store.selected is not None and store.telemetry_entity == store.selected
        self.trail.data = trail_columns(store.telemetry if same else None, self.trail_points)

    @param.depends("data_store.selected", watch=True)
    def _on_store_selection(self) -> None:
        if self.data_store is not None:
            self.updates.apply("selection", self._apply_selection)

    def _apply_selection(self) -> None:
        if self.data_store is None:
            return
        self._syncing = True
        try:
            self._select_in_source(self.data_store.selected)
        finally:
            self._syncing = False

    def _select_in_source(self, entity: str | None) -> None:
        ids = list(self.source.data["entity_id"])
        wanted = [ids.index(entity)] if entity is not None and entity in ids else []
        if list(self.source.selected.indices) != wanted:
            self.source.selected.indices = wanted

    def _on_tap(self, attr: str, old: list[int], new: list[int]) -> None:
        if self._syncing or not new or self.data_store is None:
            return
        ids = self.source.data["entity_id"]
        if new[0] < len(ids) and ids[new[0]] != self.data_store.selected:
            self.data_store.selected = ids[new[0]]

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.pane.Bokeh(self.figure, sizing_mode="stretch_width"),
            self._legend,
            sizing_mode="stretch_width",
        )
