"""TelemetryPanel: pick an entity, plot its history, stream new rows into the same sources."""

from __future__ import annotations

import time

import pandas as pd

from overwatch_lab.dashboard.datastore import DataStore
from overwatch_lab.dashboard.telemetry import SERIES, TelemetryPanel, series_columns


def test_series_columns_keep_rows_of_their_message_type():
    rows = pd.DataFrame(
        {
            "id": [1, 2, 3],
            "ts": [10.0, 11.0, 12.0],
            "altitude_msl": [100.0, None, None],
            "altitude_relative": [20.0, None, None],
            "battery_remaining": [None, -1.0, 55.0],
            "groundspeed": [None, None, None],
        }
    )
    alt = series_columns(rows, "altitude")
    assert alt == {"t": [10_000.0], "id": [1], "altitude_msl": [100.0], "altitude_relative": [20.0]}
    assert series_columns(rows, "battery")["battery_remaining"] == [55.0]  # -1 (unknown) left out
    assert series_columns(rows, "speed")["t"] == []
    assert set(series_columns(pd.DataFrame(), "speed")) == {"t", "id", *SERIES["speed"]}


def test_panel_plots_the_selected_entity_and_streams_new_rows(source):
    t0 = time.time() - 20
    source.fly(steps=3, t0=t0)
    store = DataStore(source=source)
    view = TelemetryPanel(data_store=store)
    store.refresh()
    assert store.selected == "ugv-1" or store.selected == "uav-1"  # auto-selected: the first option
    assert view.entity.value == store.selected
    view.entity.value = "uav-2"  # the operator picks one
    assert store.selected == "uav-2"
    store.refresh()
    sources = dict(view.sources)
    assert len(sources["altitude"].data["t"]) == 3 and len(sources["battery"].data["t"]) == 1
    assert sources["speed"].data["groundspeed"] == [5.0]
    assert "uav-2" in view.figures["altitude"].title.text
    assert "mode <b>GUIDED</b>" in view.summary.object and "battery <b>70 %</b>" in view.summary.object

    source.fly(steps=2, t0=t0 + 10)
    store.refresh()
    assert view.sources == sources and all(
        view.sources[k] is sources[k] for k in sources
    )  # streamed in place
    assert len(sources["altitude"].data["t"]) == 5 and len(sources["speed"].data["t"]) == 2
    assert sources["altitude"].data["id"] == sorted(sources["altitude"].data["id"])

    store.selected = "ugv-1"
    store.refresh()
    assert len(sources["altitude"].data["t"]) == 5  # the new entity's history replaces the old
    assert set(store.telemetry["entity_id"]) == {"ugv-1"}
    assert "ugv-1" in view.figures["speed"].title.text


def test_no_auto_select_when_disabled(source):
    store = DataStore(source=source)
    view = TelemetryPanel(data_store=store, auto_select=False)
    store.refresh()
    assert store.selected is None and "Select an entity" in view.summary.object


def test_empty_plots_keep_finite_ranges():
    from overwatch_lab.dashboard.telemetry import EMPTY_WINDOW_MS, extent_columns

    empty = {"t": [], "id": [], "groundspeed": [], "airspeed": []}
    assert extent_columns(empty, "speed", None, 100_000.0) == {
        "t": [100_000.0 - EMPTY_WINDOW_MS, 100_000.0],
        "v": [0.0, 1.0],
    }
    assert extent_columns(empty, "speed", 5.0, 100_000.0)["t"] == [5.0, 5.0]  # the shared axis not widened
    data = {"t": [1.0, 2.0], "id": [1, 2], "groundspeed": [3.0, float("nan")], "airspeed": [float("nan")] * 2}
    assert extent_columns(data, "speed", None, 100_000.0) == {"t": [1.0], "v": [3.0]}  # inside the data
