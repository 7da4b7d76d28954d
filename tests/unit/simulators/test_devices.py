"""Device kinematics: every behaviour converges, and every kind keeps to its limits."""

from __future__ import annotations

import math

import pytest

from simulators import behaviours as bh
from simulators import kinematics as k
from simulators.devices import KINDS
from simulators.devices.base import MAV_VTOL_STATE_FW, MAV_VTOL_STATE_MC
from tests.unit.simulators.rig import LAT0, LON0, TICK_S


class LimitWatch:
    """Records the worst speed, climb and per-tick turn seen while stepping."""

    def __init__(self) -> None:
        self.max_speed = 0.0
        self.max_climb = 0.0
        self.max_descent = 0.0
        self.max_turn_dps = 0.0
        self.min_airborne_speed = math.inf
        self._heading: float | None = None

    def __call__(self, d) -> None:
        self.max_speed = max(self.max_speed, d.speed_mps)
        self.max_climb = max(self.max_climb, d.climb_mps)
        self.max_descent = max(self.max_descent, -d.climb_mps)
        if self._heading is not None:
            self.max_turn_dps = max(
                self.max_turn_dps, abs(k.angle_diff(d.heading_deg, self._heading)) / TICK_S
            )
        self._heading = d.heading_deg
        if d.airborne:
            self.min_airborne_speed = min(self.min_airborne_speed, d.speed_mps)


def _dist(d, lat: float, lon: float) -> float:
    return k.distance_bearing(d.lat, d.lon, lat, lon)[0]


@pytest.mark.parametrize("kind", ["multirotor", "vtol", "ground", "usv", "fixed_wing"])
def test_goto_reaches_the_waypoint_within_limits(rig, kind):
    spec = KINDS[kind][1]
    r = rig(kind, alt_agl_m=spec.default_agl_m, heading_deg=180.0, armed=True)  # facing away from the target
    d = r.dev
    tlat, tlon = k.offset(LAT0, LON0, 800.0, 300.0)
    alt = d.ground_alt_msl_m + spec.default_agl_m
    d.behaviour = bh.Goto(bh.Waypoint(tlat, tlon, alt))
    watch = LimitWatch()
    took = r.run_until(lambda dev: isinstance(dev.behaviour, bh.Hold), 900.0, watch)
    assert _dist(d, tlat, tlon) <= d.acceptance_radius_m() + 1.0
    expected = math.hypot(800.0, 300.0) / spec.cruise_speed_mps
    assert took < expected * 2 + 60  # no wandering
    assert watch.max_speed <= spec.max_speed_mps + 1e-9
    assert watch.max_turn_dps <= max(spec.max_turn_rate_dps, spec.fw_turn_rate_dps) + 1e-6
    if spec.airborne_kind:
        assert watch.max_climb <= spec.max_climb_mps + 1e-9
        assert watch.max_descent <= spec.max_descent_mps + 1e-9
    else:
        assert d.alt_msl_m == d.ground_alt_msl_m


@pytest.mark.parametrize("kind", ["multirotor", "vtol", "ground", "usv"])
def test_hover_capable_kinds_stop_on_the_held_point(rig, kind):
    spec = KINDS[kind][1]
    r = rig(kind, alt_agl_m=spec.default_agl_m, armed=True)
    tlat, tlon = k.offset(LAT0, LON0, -150.0, 120.0)
    r.dev.behaviour = bh.Goto(bh.Waypoint(tlat, tlon, r.dev.alt_msl_m))
    r.run(240.0)
    assert isinstance(r.dev.behaviour, bh.Hold)
    assert r.dev.speed_mps < 0.2
    assert _dist(r.dev, tlat, tlon) < spec.acceptance_m + 1.0


def test_fixed_wing_turn_rate_and_stall_margin_hold_in_an_orbit(rig):
    spec = KINDS["fixed_wing"][1]
    r = rig("fixed_wing", alt_agl_m=100.0)
    clat, clon = k.offset(LAT0, LON0, 1500.0, 0.0)
    r.dev.behaviour = bh.Orbit(bh.Waypoint(clat, clon, r.dev.alt_msl_m), 400.0, clockwise=False)
    watch = LimitWatch()
    r.run(400.0, watch)
    assert watch.max_turn_dps <= spec.max_turn_rate_dps + 1e-6
    assert watch.min_airborne_speed >= spec.min_speed_mps - 1e-9
    radii = []
    r.run(120.0, lambda d: radii.append(_dist(d, clat, clon)))
    assert min(radii) > 370.0 and max(radii) < 430.0  # converged onto the 400 m circle


def test_orbit_radius_is_widened_to_what_the_kind_can_fly(rig):
    r = rig("fixed_wing", alt_agl_m=100.0)
    r.dev.behaviour = bh.Orbit(bh.Waypoint(LAT0, LON0, r.dev.alt_msl_m), 5.0)
    r.run(300.0)
    radii = []
    r.run(60.0, lambda d: radii.append(_dist(d, LAT0, LON0)))
    min_radius = k.turn_radius(r.dev.cruise_speed_mps, KINDS["fixed_wing"][1].max_turn_rate_dps)
    assert min(radii) > min_radius  # flyable, not a 5 m pirouette


def test_fixed_wing_hold_circles_the_point(rig):
    r = rig("fixed_wing", alt_agl_m=100.0)
    r.dev.behaviour = bh.Hold(bh.Waypoint(LAT0, LON0, r.dev.alt_msl_m))
    r.run(200.0)
    radii = []
    r.run(60.0, lambda d: radii.append(_dist(d, LAT0, LON0)))
    assert r.dev.speed_mps >= KINDS["fixed_wing"][1].min_speed_mps
    assert 50.0 < sum(radii) / len(radii) < 120.0  # loiter radius 80 m


def test_route_visits_every_waypoint_in_order_and_loops(rig):
    r = rig("multirotor", alt_agl_m=40.0)
    pts = [k.offset(LAT0, LON0, n, e) for n, e in ((200, 0), (200, 200), (0, 200))]
    wps = [bh.Waypoint(a, b, r.dev.alt_msl_m) for a, b in pts]
    route = bh.Route(wps, loop=True)
    r.dev.behaviour = route
    seen: list[int] = []
    r.run(300.0, lambda d: seen.append(route.index) if not seen or seen[-1] != route.index else None)
    assert seen[:4] == [0, 1, 2, 0]
    assert route.laps >= 1
    assert route.mission == (route.index, 3)


def test_route_without_loop_ends_holding_the_last_waypoint(rig):
    r = rig("ground")
    r.dev.armed = True
    pts = [k.offset(LAT0, LON0, n, e) for n, e in ((50, 0), (50, 60))]
    r.dev.behaviour = bh.Route([bh.Waypoint(a, b, 100.0) for a, b in pts])
    r.run_until(lambda d: isinstance(d.behaviour, bh.Hold), 200.0)
    r.run_until(lambda d: d.speed_mps < 0.01, 60.0)
    assert _dist(r.dev, *pts[-1]) < 4.0


def test_patrol_sweeps_the_box(rig):
    r = rig("multirotor", alt_agl_m=40.0)
    s, w = LAT0, LON0
    n, e = k.offset(LAT0, LON0, 300.0, 300.0)
    patrol = bh.Patrol(s, w, n, e, alt_msl_m=r.dev.alt_msl_m, spacing_m=100.0)
    r.dev.behaviour = patrol
    lats, lons = [], []
    r.run(600.0, lambda d: (lats.append(d.lat), lons.append(d.lon)))
    assert len(patrol.waypoints) == 8  # 4 sweep lines x 2 ends
    assert patrol.laps >= 1
    assert min(lats) < s + 1e-4 and max(lats) > n - 1e-4
    assert min(lons) < w + 1e-4 and max(lons) > e - 1e-4


@pytest.mark.parametrize("kind", ["multirotor", "vtol"])
def test_rtl_flies_home_lands_and_disarms(rig, kind):
    r = rig(kind, alt_agl_m=60.0)
    d = r.dev
    d.lat, d.lon = k.offset(LAT0, LON0, 400.0, -300.0)
    d.behaviour = bh.ReturnToLaunch()
    r.run_until(lambda dev: not dev.armed, 600.0)
    assert not d.airborne and d.alt_msl_m == d.ground_alt_msl_m
    assert _dist(d, LAT0, LON0) < 6.0
    assert isinstance(d.behaviour, bh.Idle) and d.mode == "STABILIZE"


def test_rtl_climbs_to_a_safe_height_first(rig):
    r = rig("multirotor", alt_agl_m=10.0)
    r.dev.lat, r.dev.lon = k.offset(LAT0, LON0, 500.0, 0.0)
    r.dev.behaviour = bh.ReturnToLaunch()
    top = []
    r.run(60.0, lambda d: top.append(d.alt_agl_m))
    assert max(top) >= bh.RTL_MIN_AGL_M - 0.5


def test_land_descends_slowly_near_the_ground_then_disarms(rig):
    r = rig("multirotor", alt_agl_m=30.0)
    r.dev.behaviour = bh.Land()
    low_rates = []
    r.run_until(
        lambda d: not d.armed,
        120.0,
        lambda d: low_rates.append(-d.climb_mps) if 0.5 < d.alt_agl_m < bh.LAND_SLOW_AGL_M - 1 else None,
    )
    assert low_rates and max(low_rates) <= bh.LAND_SLOW_MPS + 1e-9
    assert r.dev.landed_state == 1  # MAV_LANDED_STATE_ON_GROUND


def test_fixed_wing_land_glides_in_and_rolls_to_a_stop(rig):
    r = rig("fixed_wing", alt_agl_m=40.0)
    r.dev.behaviour = bh.Land()
    r.run_until(lambda d: not d.airborne, 120.0)
    r.run_until(lambda d: d.speed_mps == 0.0, 60.0)
    assert not r.dev.armed


def test_multirotor_takes_off_vertically_after_arm_and_goto(rig):
    r = rig("multirotor")  # on the ground, disarmed
    d = r.dev
    assert not d.airborne and not d.armed
    assert d.handle_command({"command_id": "a", "command_type": "arm"}).accepted
    tlat, tlon = k.offset(LAT0, LON0, 100.0, 0.0)
    assert d.handle_command(
        {"command_id": "g", "command_type": "goto", "params": {"lat": tlat, "lon": tlon, "alt_m": 30}}
    ).accepted
    moved_low = []
    r.run(60.0, lambda dev: moved_low.append(dev.speed_mps) if dev.alt_agl_m < 1.5 else None)
    assert max(moved_low, default=0.0) == 0.0  # no horizontal motion before lift-off
    assert d.airborne and abs(d.alt_agl_m - 30.0) < 1.0
    assert isinstance(d.behaviour, bh.Hold)


def test_fixed_wing_takes_off_with_a_ground_roll(rig):
    r = rig("fixed_wing")
    d = r.dev
    d.handle_command({"command_id": "a", "command_type": "arm"})
    d.handle_command(
        {"command_id": "g", "command_type": "goto", "params": {"lat": LAT0 + 0.02, "lon": LON0, "alt_m": 100}}
    )
    r.run_until(lambda dev: dev.airborne, 60.0)
    assert d.speed_mps >= KINDS["fixed_wing"][1].min_speed_mps


def test_vtol_switches_between_hover_and_wing_borne_flight(rig):
    r = rig("vtol", alt_agl_m=80.0)
    d = r.dev
    assert d.vtol_state == MAV_VTOL_STATE_MC
    tlat, tlon = k.offset(LAT0, LON0, 3000.0, 0.0)
    d.behaviour = bh.Goto(bh.Waypoint(tlat, tlon, d.alt_msl_m))
    r.run(30.0)
    assert d.vtol_state == MAV_VTOL_STATE_FW
    hover_power = KINDS["vtol"][1].hover_w
    assert d.power_w < hover_power  # the wing carries it


def test_sensor_platform_never_moves(rig):
    r = rig("sensor")
    d = r.dev
    res = d.handle_command(
        {"command_id": "g", "command_type": "goto", "params": {"lat": LAT0 + 0.01, "lon": LON0}}
    )
    assert not res.accepted and "cannot move" in res.reason
    r.run(30.0)
    assert (d.lat, d.lon, d.speed_mps) == (LAT0, LON0, 0.0)


def test_battery_drains_with_load_and_failsafes_send_it_home(rig):
    r = rig("multirotor", alt_agl_m=40.0, battery_pct=22.0)
    d = r.dev
    start_wh = d.battery_wh
    d.lat, d.lon = k.offset(LAT0, LON0, 300.0, 0.0)
    d.behaviour = bh.Hold(bh.Waypoint(d.lat, d.lon, d.alt_msl_m))
    r.run_until(lambda dev: isinstance(dev.behaviour, bh.ReturnToLaunch), 120.0)
    used_wh = start_wh - d.battery_wh
    assert d.battery_pct <= KINDS["multirotor"][1].failsafe_rtl_pct
    assert used_wh > 0
    assert d.system_status == 5  # MAV_STATE_CRITICAL


def test_hovering_costs_more_than_sitting_on_the_ground(rig):
    flying = rig("multirotor", alt_agl_m=40.0)
    parked = rig("multirotor")
    flying.run(60.0)
    parked.run(60.0)
    assert flying.dev.battery_wh < parked.dev.battery_wh
    assert flying.dev.current_a > 10 * parked.dev.current_a


def test_land_at_a_point_flies_there_before_descending(rig):
    r = rig("multirotor", alt_agl_m=40.0)
    tlat, tlon = k.offset(LAT0, LON0, 300.0, 0.0)
    res = r.dev.handle_command(
        {"command_id": "l", "command_type": "land", "params": {"lat": tlat, "lon": tlon}}
    )
    assert res.accepted
    heights_far = []
    r.run_until(
        lambda d: not d.armed,
        200.0,
        lambda d: heights_far.append(d.alt_agl_m) if _dist(d, tlat, tlon) > 20 else None,
    )
    assert min(heights_far) > 39.0  # no descent on the way
    assert _dist(r.dev, tlat, tlon) < 3.0
