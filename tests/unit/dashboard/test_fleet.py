"""FleetTable and sync_tabulator: rows from a FakeSource, updated by patch/stream, never rebuilt."""

from __future__ import annotations

import numpy as np
import pandas as pd
import panel as pn

from overwatch_lab.dashboard.datastore import DataStore
from overwatch_lab.dashboard.fleet import FleetTable, sync_tabulator
from tests.builders import FLEET, entity_ids


def _frame(rows: list[tuple[str, float, str | None]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["k", "v", "s"]).astype({"k": object, "s": object})


def test_sync_tabulator_patches_streams_and_replaces():
    table = pn.widgets.Tabulator(_frame([]))
    assert sync_tabulator(table, _frame([("a", 1.0, "x"), ("b", np.nan, None)]), "k") == "replace"
    assert sync_tabulator(table, _frame([("a", 1.0, "x"), ("b", np.nan, None)]), "k") == "none"

    patched: list[dict] = []
    original_patch = table.patch
    table.patch = lambda value, as_index=True: (patched.append(value), original_patch(value, as_index))[1]
    assert (
        sync_tabulator(table, _frame([("b", 2.0, None), ("a", 1.0, "x"), ("c", 3.0, "z")]), "k")
        == "patch+stream"
    )
    assert patched == [{"v": [(1, 2.0)]}]  # only the changed cell, by row label
    assert table.value["k"].tolist() == ["a", "b", "c"] and table.value["v"].tolist() == [1.0, 2.0, 3.0]

    assert sync_tabulator(table, _frame([("c", 3.0, "z"), ("a", 1.0, "x")]), "k") == "replace"  # b removed
    assert table.value["k"].tolist() == ["c", "a"]


def test_sync_tabulator_keep_order_replaces_when_rows_would_move():
    table = pn.widgets.Tabulator(_frame([("b", 1.0, None)]))
    assert (
        sync_tabulator(table, _frame([("a", 0.0, None), ("b", 1.0, None)]), "k", keep_order=True) == "replace"
    )
    assert table.value["k"].tolist() == ["a", "b"]
    assert (
        sync_tabulator(
            table, _frame([("a", 0.0, None), ("b", 1.0, None), ("c", 2.0, None)]), "k", keep_order=True
        )
        == "stream"
    )


def test_fleet_table_follows_its_source(source):
    source.fly()
    store = DataStore(source=source)
    view = FleetTable(data_store=store)
    table = view.table
    store.refresh()
    assert table.value["entity_id"].tolist() == entity_ids()
    row = table.value.set_index("entity_id").loc["ugv-1"]
    assert row["org_name"] == "Bravo" and row["battery"] == 60.0 and row["mode"] == "GUIDED"
    assert view.last_update == "replace"

    # A mode change is a patch of the same table, not a new one.
    heartbeat = {"custom_mode": 6, "base_mode": 1, "type": 10}  # RTL, disarmed
    source.publish_telemetry("org-b", "ugv-1", "HEARTBEAT", heartbeat)
    store.refresh()
    assert table.value.set_index("entity_id").loc["ugv-1", "mode"] == "RTL"
    assert view.table is table and "patch" in view.last_update
    assert table.value.set_index("entity_id").loc["ugv-1", "armed"] is False

    # A new entity is streamed in.
    source.register_entity("org-b", "usv-9", "surface_vessel_usv", name="Skiff")
    store.refresh()
    assert "usv-9" in table.value["entity_id"].tolist()
    assert view.last_update.endswith("stream") and len(table.value) == len(FLEET) + 1

    # A deleted entity goes away (the only case that replaces the value).
    source.delete_entity("uav-2")
    store.refresh()
    assert "uav-2" not in table.value["entity_id"].tolist()
    assert view.last_update == "replace"
    assert view._count.object.startswith(f"{len(FLEET)} entities")  # 3 registered + 1 new - 1 deleted


def test_selection_goes_both_ways(source):
    store = DataStore(source=source)
    view = FleetTable(data_store=store)
    store.refresh()
    view.table.selection = [2]
    assert store.selected == view.table.value["entity_id"].iloc[2]
    store.selected = "uav-1"
    assert view.table.selection == [view.table.value["entity_id"].tolist().index("uav-1")]


def test_live_only_filters_stale_rows(source):
    source.publish_telemetry("org-a", "uav-1", "VFR_HUD", {"groundspeed": 1.0})  # the only live one
    store = DataStore(source=source)
    view = FleetTable(data_store=store)
    store.refresh()
    assert store.fleet.loc[store.fleet["is_live"], "entity_id"].tolist() == ["uav-1"]
    view.live_only = True
    assert view.table.current_view["entity_id"].tolist() == ["uav-1"] and len(view.table.value) == len(FLEET)
    source.go_silent("uav-1")
    store.refresh()
    assert view.table.current_view.empty  # the filter follows the refresh
    view.live_only = False
    assert len(view.table.current_view) == len(FLEET)


def test_sync_tabulator_patches_a_mostly_changed_column_as_one_slice():
    keys = [f"e{i:02d}" for i in range(40)]
    table = pn.widgets.Tabulator(_frame([(k, 0.0, "x") for k in keys]))
    table.stream(_frame([("e40", 0.0, "x")]), reset_index=True)  # labels stay 0..n-1 after a stream
    patched: list[dict] = []
    original_patch = table.patch
    table.patch = lambda value, as_index=True: (patched.append(value), original_patch(value, as_index))[1]
    wanted = _frame([(k, float(i), "x" if i != 3 else "y") for i, k in enumerate([*keys, "e40"])])
    assert sync_tabulator(table, wanted, "k") == "patch"
    (slice_patch,) = patched[0]["v"]
    assert slice_patch[0] == slice(0, 41) and slice_patch[1] == [float(i) for i in range(41)]
    assert patched[0]["s"] == [(3, "y")]  # one changed cell stays a cell patch
    assert table.value["v"].tolist() == [float(i) for i in range(41)] and table.value["s"].iloc[3] == "y"
