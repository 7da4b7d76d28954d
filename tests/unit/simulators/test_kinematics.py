"""Pure geometry and motion helpers."""

from __future__ import annotations

import math

import pytest

from simulators import kinematics as k


@pytest.mark.parametrize(
    ("north", "east", "bearing"), [(100, 0, 0), (0, 100, 90), (-100, 0, 180), (0, -100, 270)]
)
def test_offset_and_distance_bearing_agree(north, east, bearing):
    lat, lon = k.offset(47.6, -122.33, north, east)
    dist, b = k.distance_bearing(47.6, -122.33, lat, lon)
    assert dist == pytest.approx(100.0, abs=1e-6)
    assert b == pytest.approx(bearing, abs=1e-6) or (bearing == 0 and b == pytest.approx(360.0, abs=1e-6))


def test_move_follows_the_heading():
    lat, lon = k.move(10.0, 20.0, 45.0, 1000.0)
    n, e = k.local_ne(10.0, 20.0, lat, lon)
    assert n == pytest.approx(707.1068, abs=1e-3)
    assert e == pytest.approx(707.1068, abs=1e-3)


def test_one_degree_of_latitude_is_about_111_km():
    assert k.distance_bearing(0.0, 0.0, 1.0, 0.0)[0] == pytest.approx(111_195, rel=1e-3)


@pytest.mark.parametrize(
    ("target", "current", "diff"), [(10, 350, 20), (350, 10, -20), (180, 0, -180), (90, 90, 0)]
)
def test_angle_diff_takes_the_short_way(target, current, diff):
    assert k.angle_diff(target, current) == pytest.approx(diff)


def test_turn_toward_is_limited_and_goes_the_short_way():
    assert k.turn_toward(350.0, 20.0, 10.0) == pytest.approx(0.0)
    assert k.turn_toward(350.0, 355.0, 10.0) == pytest.approx(355.0)
    assert k.turn_toward(10.0, 300.0, 15.0) == pytest.approx(355.0)


def test_approach_respects_separate_up_and_down_limits():
    assert k.approach(0.0, 10.0, 2.0, 1.0) == 2.0
    assert k.approach(10.0, 0.0, 2.0, 1.0) == 9.0
    assert k.approach(9.5, 10.0, 2.0, 1.0) == 10.0


def test_stopping_speed_stops_within_the_distance():
    v = k.stopping_speed(50.0, 2.0)
    assert v**2 / (2 * 2.0) == pytest.approx(50.0)
    assert k.stopping_speed(-1.0, 2.0) == 0.0


def test_turn_radius_and_bank():
    assert k.turn_radius(20.0, math.degrees(0.2)) == pytest.approx(100.0)
    assert k.turn_radius(20.0, 0.0) == math.inf
    assert k.bank_angle(20.0, 0.2) == pytest.approx(math.atan(4.0 / k.G_MPS2))
    assert k.bank_angle(20.0, -0.2) < 0


def test_ned_velocity_signs():
    vn, ve, vd = k.ned_velocity(10.0, 90.0, 2.0)
    assert vn == pytest.approx(0.0, abs=1e-9) and ve == pytest.approx(10.0) and vd == -2.0


def test_orbit_course_is_tangent_on_the_circle_and_converges_off_it():
    c = (47.6, -122.33)
    on = k.offset(*c, 0.0, 200.0)  # due east of the centre, on a 200 m circle
    assert k.orbit_course(*on, *c, 200.0, clockwise=True) == pytest.approx(180.0, abs=1e-6)
    assert k.orbit_course(*on, *c, 200.0, clockwise=False) == pytest.approx(0.0, abs=1e-6) or k.orbit_course(
        *on, *c, 200.0, clockwise=False
    ) == pytest.approx(360.0, abs=1e-6)
    far = k.offset(*c, 0.0, 5000.0)
    assert k.orbit_course(*far, *c, 200.0) == pytest.approx(270.0, abs=10.0)  # roughly at the centre
    inside = k.offset(*c, 0.0, 20.0)
    assert 90.0 < k.orbit_course(*inside, *c, 200.0) < 180.0  # heading outward-ish


def test_lawnmower_covers_the_box_edge_to_edge_alternating():
    s, w = 47.6, -122.33
    n, e = k.offset(s, w, 500.0, 250.0)
    pts = k.lawnmower(s, w, n, e, 100.0)
    assert len(pts) == 8  # lines at 0, 100, 200, 250 m east
    east_positions = sorted({round(k.local_ne(s, w, *p)[1], 3) for p in pts})
    assert east_positions == pytest.approx([0.0, 100.0, 200.0, 250.0], abs=1e-3)
    norths = [round(k.local_ne(s, w, *p)[0]) for p in pts]
    assert norths == [0, 500, 500, 0, 0, 500, 500, 0]
    ew = k.lawnmower(s, w, n, e, 200.0, along_ns=False)
    assert {round(k.local_ne(s, w, *p)[0]) for p in ew} == {0, 200, 400, 500}
