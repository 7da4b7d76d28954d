"""FleetTable: every entity in one Tabulator, updated cell by cell as the fleet changes.

The table is built once. Each refresh of the :class:`~.datastore.DataStore` is turned into the
smallest update (:func:`sync_tabulator`): changed cells are sent with ``Tabulator.patch``, new
entities with ``Tabulator.stream``, and only a removed entity makes it replace the value. Rows
are keyed by ``entity_id``; the row index is a plain integer (Tabulator cannot stream onto a
string index).

Selecting a row sets ``data_store.selected`` (the map draws its track and the telemetry panel
plots it); selecting elsewhere selects the row here.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models.widgets.tables import HTMLTemplateFormatter, NumberFormatter

from overwatch_lab.dashboard.datastore import DataStore
from overwatch_lab.dashboard.frames import empty_fleet

log = logging.getLogger(__name__)

SHOWN_COLUMNS: tuple[str, ...] = (
    "entity_id",
    "name",
    "org_name",
    "entity_type",
    "status",
    "is_live",
    "mode",
    "armed",
    "battery",
    "latitude",
    "longitude",
    "altitude",
    "speed",
    "heading",
    "age_s",
)
"""Fleet columns the table shows; the rest of the fleet frame stays in ``value``, hidden."""

TITLES: dict[str, str] = {
    "entity_id": "Entity",
    "name": "Name",
    "org_name": "Org",
    "entity_type": "Type",
    "status": "Status",
    "is_live": "Link",
    "mode": "Mode",
    "armed": "Armed",
    "battery": "Battery %",
    "latitude": "Lat °",
    "longitude": "Lon °",
    "altitude": "Alt m",
    "speed": "Speed m/s",
    "heading": "Hdg °",
    "age_s": "Seen (s ago)",
}

LIVE_COLOR = "#1a7f37"
STALE_COLOR = "#8c959f"

_LIVE_TEMPLATE = (
    '<% if (value) { %><span class="ow-live">&#9679; live</span>'
    '<% } else { %><span class="ow-stale">&#9675; stale</span><% } %>'
)

STYLESHEET = f"""
.ow-live {{ color: {LIVE_COLOR}; font-weight: 600; }}
.ow-stale {{ color: {STALE_COLOR}; }}
.tabulator-row.tabulator-selected .ow-live,
.tabulator-row.tabulator-selected .ow-stale {{ color: #fff; }}
"""
"""Row colours for the link column (the selected row is blue, so its text turns white)."""

TYPE_LABELS: dict[str, str] = {
    "aircraft_fixed_wing": "fixed wing",
    "aircraft_multirotor": "multirotor",
    "aircraft_vtol": "VTOL",
    "aircraft_helicopter": "helicopter",
    "ground_vehicle_wheeled": "UGV wheeled",
    "ground_vehicle_tracked": "UGV tracked",
    "surface_vessel_usv": "USV",
    "underwater_vehicle": "UUV",
    "sensor_platform": "sensor",
    "payload_system": "payload",
    "operator_station": "station",
    "waypoint": "waypoint",
    "no_fly_zone": "no-fly zone",
    "geofence": "geofence",
}
"""Short display labels of entity types (the value, and the header filter, keep the full name)."""


def formatters() -> dict[str, Any]:
    """Return the Tabulator formatters of the fleet columns (client-side, nothing per refresh)."""
    return {
        "is_live": HTMLTemplateFormatter(template=_LIVE_TEMPLATE),
        "entity_type": {"type": "lookup", **TYPE_LABELS},
        "armed": {"type": "tickCross", "allowEmpty": True},
        "battery": {
            "type": "progress",
            "min": 0,
            "max": 100,
            "legend": True,
            "color": ["#cf222e", "#d4a72c", "#2da44e", "#2da44e"],
        },
        "latitude": NumberFormatter(format="0.00000", nan_format="–"),
        "longitude": NumberFormatter(format="0.00000", nan_format="–"),
        "altitude": NumberFormatter(format="0.0", nan_format="–"),
        "speed": NumberFormatter(format="0.0", nan_format="–"),
        "heading": NumberFormatter(format="0", nan_format="–"),
        "age_s": NumberFormatter(format="0.0", nan_format="never"),
    }


WHOLE_COLUMN_MIN = 16
"""Above this many changed cells (and a quarter of the rows) a column is patched as one slice."""


def _same(a: pd.Series, b: pd.Series) -> pd.Series:
    """Element-wise equality where two missing values count as equal."""
    a_na, b_na = a.isna().to_numpy(), b.isna().to_numpy()
    left, right = a.to_numpy(), b.to_numpy()
    both = ~a_na & ~b_na
    if left.dtype != object and right.dtype != object:
        equal = left == right
    else:  # element by element, skipping missing cells (None, NaN, pd.NA)
        equal = np.zeros(len(left), dtype=bool)
        for i in np.flatnonzero(both):
            equal[i] = bool(left[i] == right[i])
    return pd.Series((equal & both) | (a_na & b_na), index=a.index)


def _cell(value: Any) -> Any:
    """A patch value Tabulator can send (numpy scalars to Python)."""
    if hasattr(value, "item") and not isinstance(value, str):
        return value.item()
    return value


def sync_tabulator(
    table: pn.widgets.Tabulator, new: pd.DataFrame, key: str, *, keep_order: bool = False
) -> str:
    """Bring ``table.value`` to ``new`` with the smallest update, matching rows on column ``key``.

    Args:
        table: a Tabulator whose value has the same columns as ``new`` (or is empty/None).
        new: the wanted rows; ``key`` values must be unique.
        key: the column that identifies a row.
        keep_order: rows must stay in ``new``'s order; new rows are then streamed only when
            they come after every existing row (else the value is replaced). When False, new
            rows are appended at the end (the operator sorts in the browser).

    Returns:
        What was done: ``"none"``, ``"patch"``, ``"stream"``, ``"patch+stream"`` or ``"replace"``
        (a row removed, the columns changed, or the table was empty).
    """
    old = table.value
    if old is None or old.empty or list(old.columns) != list(new.columns) or new.empty:
        if old is not None and old.empty and new.empty:
            return "none"
        table.value = new.reset_index(drop=True)
        return "replace"
    old_keys = pd.Index(old[key])
    new_keys = pd.Index(new[key])
    if not old_keys.is_unique or not new_keys.is_unique or not old_keys.isin(new_keys).all():
        table.value = new.reset_index(drop=True)
        return "replace"
    if keep_order and list(new_keys[: len(old_keys)]) != list(old_keys):
        table.value = new.reset_index(drop=True)
        return "replace"
    aligned = new.set_index(key, drop=False).loc[old_keys]
    aligned.index = old.index
    contiguous = old.index.equals(pd.RangeIndex(len(old)))  # labels are positions (always, here)
    patch: dict[str, list[tuple[Any, Any]]] = {}
    for column in new.columns:
        if column == key:
            continue
        changed = ~_same(old[column], aligned[column])
        n_changed = int(changed.sum())
        if not n_changed:
            continue
        if contiguous and n_changed > max(WHOLE_COLUMN_MIN, len(old) // 4):
            # Many cells: one slice patch of the whole column (per-cell patches cost ~0.1 ms each).
            patch[column] = [(slice(0, len(old)), [_cell(v) for v in aligned[column].tolist()])]
        else:
            patch[column] = [
                (label, _cell(aligned.at[label, column])) for label in old.index[changed.to_numpy()]
            ]
    added = new[~new_keys.isin(old_keys)]
    done = []
    if patch:
        table.patch(patch, as_index=True)
        done.append("patch")
    if not added.empty:
        table.stream(added, reset_index=True, follow=False)
        done.append("stream")
    return "+".join(done) or "none"


class FleetTable(pn.viewable.Viewer):
    """Tabulator of every entity: link state, mode, armed, battery, position, speed, last seen."""

    data_store = param.ClassSelector(class_=DataStore, doc="Where the fleet frame comes from.")
    live_only = param.Boolean(default=False, doc="Show only entities whose link is live.")
    height = param.Integer(
        default=640, bounds=(120, None), doc="Table height in pixels (about 18 rows; more rows scroll)."
    )
    last_update = param.String(
        default="none", doc="What the last refresh did to the table (patch, stream, …)."
    )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        text_filter = {"type": "input", "func": "like", "placeholder": "filter"}
        self.table = pn.widgets.Tabulator(
            empty_fleet(),
            show_index=False,
            disabled=True,
            selectable=1,
            sortable=True,
            layout="fit_columns",  # every column inside the table's width: none cut off at the right
            sizing_mode="stretch_width",
            height=self.height,
            frozen_columns=["entity_id"],
            hidden_columns=[c for c in empty_fleet().columns if c not in SHOWN_COLUMNS],
            titles=TITLES,
            formatters=formatters(),
            header_filters={c: text_filter for c in ("entity_id", "name", "org_name", "entity_type", "mode")},
            text_align={"is_live": "left", "battery": "left"},
            theme="bootstrap5",
            theme_classes=["table-sm"],
            stylesheets=[STYLESHEET],
        )
        self.table.add_filter(pn.bind(self._live_filter, live_only=self.param.live_only))
        self._live_toggle = pn.widgets.Checkbox.from_param(self.param.live_only, label="live only")
        self._count = pn.pane.HTML("", margin=(5, 10), styles={"color": "#57606a", "font-size": "0.9em"})
        self.table.param.watch(self._on_table_selection, "selection")
        self._sync()

    @staticmethod
    def _live_filter(df: pd.DataFrame, live_only: bool) -> pd.DataFrame:
        return df[df["is_live"].astype(bool)] if live_only else df

    @param.depends("data_store.fleet", watch=True)
    def _sync(self) -> None:
        if self.data_store is None or self.data_store.fleet is None:
            return
        fleet = self.data_store.fleet
        self.last_update = sync_tabulator(self.table, fleet, "entity_id")
        live = int(fleet["is_live"].sum()) if not fleet.empty else 0
        self._count.object = f"{len(fleet)} entities · {live} live · {len(fleet) - live} stale"
        self._select(self.data_store.selected)

    def _on_table_selection(self, event: param.parameterized.Event) -> None:
        if not event.new or self.data_store is None:
            return
        entity = str(self.table.value.iloc[event.new[0]]["entity_id"])
        if entity != self.data_store.selected:
            self.data_store.selected = entity

    @param.depends("data_store.selected", watch=True)
    def _on_store_selection(self) -> None:
        if self.data_store is not None:
            self._select(self.data_store.selected)

    def _select(self, entity: str | None) -> None:
        value = self.table.value
        if entity is None or value is None or value.empty:
            return
        matches = (value["entity_id"] == entity).to_numpy().nonzero()[0]
        wanted = [int(matches[0])] if len(matches) else []
        if wanted and self.table.selection != wanted:
            self.table.selection = wanted

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.Row(self._live_toggle, self._count, align="start"),
            self.table,
            sizing_mode="stretch_width",
        )
