"""FleetMap: glyph per positioned entity of a FakeSource, colours and markers, trail of the selected entity, offline."""

from __future__ import annotations

import math

import pytest
from bokeh.models.renderers import TileRenderer

from overwatch_lab.dashboard.datastore import DataStore
from overwatch_lab.dashboard.map import EARTH_RADIUS_M, MARKERS, ColorMap, FleetMap, to_mercator
from tests.builders import BASE_LAT, BASE_LON


def test_to_mercator_known_points():
    x, y = to_mercator([0.0, 180.0, -90.0], [0.0, 0.0, 45.0])
    assert x.tolist() == pytest.approx([0.0, math.pi * EARTH_RADIUS_M, -math.pi / 2 * EARTH_RADIUS_M])
    assert y[0] == pytest.approx(0.0, abs=1e-6) and y[2] == pytest.approx(5_621_521.486, rel=1e-9)
    _, y_pole = to_mercator([0.0], [90.0])
    assert math.isfinite(y_pole[0])  # clamped, not infinite


def test_color_map_is_stable_per_category():
    colors = ColorMap(("red", "green"))
    assert [colors("b"), colors("a"), colors("b"), colors("c")] == ["red", "green", "red", "red"]


def test_map_draws_positioned_entities_and_the_selected_trail(source):
    source.fly(steps=4)
    source.register_entity("org-b", "nowhere", "sensor_platform")  # no position: not drawn
    store = DataStore(source=source)
    view = FleetMap(data_store=store)
    glyphs = view.source
    store.refresh()
    data = glyphs.data
    assert sorted(data["entity_id"]) == ["uav-1", "uav-2", "ugv-1"]
    i = data["entity_id"].index("uav-1")
    assert data["latitude"][i] == pytest.approx(BASE_LAT + 0.0003) and data["longitude"][i] == pytest.approx(
        BASE_LON + 0.003
    )
    x, y = to_mercator([data["longitude"][i]], [data["latitude"][i]])
    assert (data["x"][i], data["y"][i]) == (pytest.approx(x[0]), pytest.approx(y[0]))
    assert (
        data["marker"][i] == MARKERS["air"]
        and data["marker"][data["entity_id"].index("ugv-1")] == MARKERS["ground"]
    )
    assert data["angle"][i] == pytest.approx(-math.pi / 2)  # VFR heading 90°
    assert (data["mode"][i], data["battery"][i], data["speed"][i]) == ("GUIDED", "80", "4.0")
    by_org = dict(zip(data["entity_id"], data["color"], strict=True))
    assert by_org["uav-1"] == by_org["uav-2"] != by_org["ugv-1"]
    assert "Alpha" in view._legend.object and "Bravo" in view._legend.object

    view.color_by = "kind"
    assert view.source is glyphs  # updated in place
    by_kind = dict(zip(glyphs.data["entity_id"], glyphs.data["color"], strict=True))
    assert by_kind["uav-1"] == by_kind["uav-2"] != by_kind["ugv-1"]

    assert view.trail.data["x"] == []
    store.selected = "uav-1"
    store.refresh()
    assert len(view.trail.data["x"]) == 4
    assert view.trail.data["latitude"][-1] == pytest.approx(BASE_LAT + 0.0003)
    assert glyphs.selected.indices == [glyphs.data["entity_id"].index("uav-1")]


def test_tapping_a_glyph_selects_the_entity(source):
    source.fly(steps=1)
    store = DataStore(source=source)
    view = FleetMap(data_store=store)
    store.refresh()
    j = view.source.data["entity_id"].index("ugv-1")
    view.source.selected.indices = [j]  # what a tap in the browser does
    assert store.selected == "ugv-1"


def test_no_tiles_unless_asked():
    store = DataStore()
    assert not [r for r in FleetMap(data_store=store).figure.renderers if isinstance(r, TileRenderer)]
    tiled = FleetMap(data_store=store, tile_url="http://127.0.0.1:9/{Z}/{X}/{Y}.png")
    tiles = [r for r in tiled.figure.renderers if isinstance(r, TileRenderer)]
    assert len(tiles) == 1 and tiles[0].tile_source.url.startswith("http://127.0.0.1:9/")


def test_the_map_fits_once_and_keeps_its_box_while_the_fleet_moves(source):
    from overwatch_lab.dashboard.map import WORLD_FIT

    store = DataStore(source=source)
    view = FleetMap(data_store=store)
    assert view.fitted is None and len(view.fit_source.data["x"]) == 2  # never empty ranges
    assert view.figure.x_range.renderers and view.figure.y_range.renderers  # the box, not the entities
    source.fly(steps=1)
    store.refresh()
    first = view.fitted
    assert first is not None and first != WORLD_FIT
    assert first[0] == pytest.approx(BASE_LON) and first[2] == pytest.approx(BASE_LAT)
    box = dict(view.fit_source.data)
    source.fly(steps=30)  # the fleet moves 0.03° east: the axes stay where they were
    store.refresh()
    assert view.fitted == first and view.fit_source.data == box
    view.focus_org = "Bravo"  # fit to one organisation, on demand
    assert view.fitted is not None and view.fitted != first
    assert view.fitted[2] == view.fitted[3]  # Bravo is one entity (ugv-1)


def test_silent_entities_fade_then_leave_the_map(source):
    source.fly(steps=1, t0=1000.0)  # last heard from long ago
    store = DataStore(source=source)
    view = FleetMap(data_store=store, drop_after_s=None)
    store.refresh()
    assert len(view.source.data["entity_id"]) == 3
    view.drop_after_s = 600.0
    assert view.source.data["entity_id"] == []  # a finished fleet leaves the map
    source.fly(steps=1)  # heard from now
    store.refresh()
    assert sorted(view.source.data["entity_id"]) == ["uav-1", "uav-2", "ugv-1"]
