"""Where a scenario's devices start and what they first do: one seed, every device built.

:func:`build_devices` turns a scenario into its devices, in fleet order: each fleet placed in
its formation around its anchor, each device with its own random generator, battery draw and
initial behaviour (:func:`build_behaviour`). Random streams: ``SeedSequence(seed)`` spawns a
layout stream (random formations) and one stream per device, in fleet order, so the same
scenario and seed always build the same devices.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from overwatch_lab.errors import ScenarioError
from simulators import behaviours as bh
from simulators import kinematics as k
from simulators.devices import KINDS, Device, make_device

if TYPE_CHECKING:
    from simulators.clock import SimClock
    from simulators.scenario import Scenario
    from simulators.scenario_specs import FleetSpec


def build_devices(scenario: Scenario, clock: SimClock) -> list[Device]:
    """Return every device of ``scenario``, in :meth:`~simulators.scenario.Scenario.devices` order."""
    root = np.random.SeedSequence(scenario.seed)
    layout_ss, devices_ss = root.spawn(2)
    layout = np.random.default_rng(layout_ss)
    seeds = devices_ss.spawn(scenario.device_count)
    every: list[Device] = []
    for fleet in scenario.fleets:
        every.extend(
            _build_fleet(scenario, fleet, clock, layout, seeds[len(every) : len(every) + fleet.count])
        )
    return every


def _build_fleet(
    sc: Scenario,
    fleet: FleetSpec,
    clock: SimClock,
    layout: np.random.Generator,
    seeds: list[np.random.SeedSequence],
) -> list[Device]:
    anchor = fleet.at or sc.area.center
    ground = (
        fleet.ground_alt_m
        if fleet.ground_alt_m is not None
        else (0.0 if fleet.kind == "usv" else sc.area.ground_alt_m)
    )
    spec = KINDS[fleet.kind][1]
    offsets = formation_offsets(fleet.formation, fleet.count, fleet.spacing_m, fleet.heading_deg, layout)
    flying = fleet.behaviour.type != "idle"
    if fleet.alt_m is not None:
        agl = fleet.alt_m
    else:
        agl = spec.default_agl_m if (flying and spec.airborne_kind) else 0.0
    out = []
    base_index = sum(f.count for f in sc.fleets[: sc.fleets.index(fleet)])
    for i, (eid, (dn, de), ss) in enumerate(zip(fleet.entity_ids(), offsets, seeds, strict=True)):
        rng = np.random.default_rng(ss)
        lo, hi = fleet.battery_pct
        battery = lo + (hi - lo) * float(rng.random()) if hi > lo else lo
        lat, lon = k.offset(anchor[0], anchor[1], dn, de)
        dev = make_device(
            fleet.kind,
            entity_id=eid,
            org_id=fleet.org,
            clock=clock,
            rng=rng,
            lat=lat,
            lon=lon,
            ground_alt_msl_m=ground,
            alt_agl_m=agl,
            heading_deg=fleet.heading_deg,
            name=f"{fleet.name} #{i + 1}",
            system_id=(base_index + i) % 254 + 1,
            battery_pct=battery,
            armed=flying and spec.moves,
            cruise_speed_mps=fleet.speed_mps,
            fleet=fleet.name,
        )
        dev.behaviour = build_behaviour(sc, fleet, dev, i)
        out.append(dev)
    return out


def formation_offsets(
    formation: str, n: int, spacing_m: float, heading_deg: float, rng: np.random.Generator
) -> list[tuple[float, float]]:
    """Return (north_m, east_m) offsets of ``n`` devices from the anchor, oriented along the heading."""
    pts: list[tuple[float, float]] = []  # (along, across)
    if formation == "grid":
        cols = math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        for i in range(n):
            r, c = divmod(i, cols)
            pts.append((-(r - (rows - 1) / 2.0) * spacing_m, (c - (cols - 1) / 2.0) * spacing_m))
    elif formation == "line":
        pts = [(0.0, (i - (n - 1) / 2.0) * spacing_m) for i in range(n)]
    elif formation == "column":
        pts = [(-(i - (n - 1) / 2.0) * spacing_m, 0.0) for i in range(n)]
    elif formation == "circle":
        radius = max(spacing_m, spacing_m * n / (2.0 * math.pi)) if n > 1 else 0.0
        pts = [
            (radius * math.cos(2 * math.pi * i / n), radius * math.sin(2 * math.pi * i / n)) for i in range(n)
        ]
    elif formation == "random":
        radius = spacing_m * math.sqrt(n)
        u = rng.random((n, 2))
        pts = [
            (
                radius * math.sqrt(a) * math.cos(2 * math.pi * b),
                radius * math.sqrt(a) * math.sin(2 * math.pi * b),
            )
            for a, b in u.tolist()
        ]
    else:
        raise ScenarioError(f"formation {formation!r} is unknown")
    h = math.radians(heading_deg)
    ch, sh = math.cos(h), math.sin(h)
    return [(a * ch - c * sh, a * sh + c * ch) for a, c in pts]


def _strip(
    box: tuple[float, float, float, float], i: int, n: int, along: str
) -> tuple[float, float, float, float]:
    s, w, north, e = box
    if along == "ns":
        width = (e - w) / n
        return s, w + i * width, north, w + (i + 1) * width
    height = (north - s) / n
    return s + i * height, w, s + (i + 1) * height, e


def build_behaviour(sc: Scenario, fleet: FleetSpec, dev: Device, i: int) -> bh.Behaviour:
    """Return the initial behaviour of device ``i`` of ``fleet`` (see the scenario docstring)."""
    spec = fleet.behaviour
    p = spec.params
    ground = dev.ground_alt_msl_m
    if not dev.spec.airborne_kind:
        alt = ground
    elif "alt_m" in p:
        alt = ground + p["alt_m"]
    elif dev.airborne:
        alt = dev.alt_msl_m
    else:
        alt = ground + dev.spec.default_agl_m

    def wp_alt(a: float | None) -> float:
        if not dev.spec.airborne_kind:
            return ground
        return alt if a is None else ground + a

    speed = p.get("speed_mps")
    t = spec.type
    if t == "hold":
        return bh.Hold(bh.Waypoint(dev.lat, dev.lon, alt))
    if t == "goto":
        to = p["to"]
        return bh.Goto(bh.Waypoint(to[0], to[1], wp_alt(to[2] if len(to) == 3 else None)), speed)
    if t == "route":
        if "route" in p:
            route = sc.routes[p["route"]]
            raw, loop = route.waypoints, route.loop
        else:
            raw, loop = p["waypoints"], False
        loop = p.get("loop", loop)
        wps = [bh.Waypoint(lat, lon, wp_alt(a)) for lat, lon, a in raw]
        r = bh.Route(wps, loop=loop, speed_mps=speed)
        if p.get("stagger", False):
            r.index = i % len(wps)
        return r
    if t == "orbit":
        lat, lon = p.get("center", sc.area.center)
        return bh.Orbit(
            bh.Waypoint(lat, lon, alt),
            p.get("radius_m", 100.0),
            clockwise=p.get("clockwise", True),
            speed_mps=speed,
        )
    if t == "patrol":
        box = p.get("box", sc.area.box)
        along = p.get("along", "ns")
        if p.get("split", True) and fleet.count > 1:
            box = _strip(box, i, fleet.count, along)
        return bh.Patrol(
            *box, alt_msl_m=alt, spacing_m=p.get("spacing_m", 100.0), along_ns=along == "ns", speed_mps=speed
        )
    if t == "rtl":
        return bh.ReturnToLaunch()
    if t == "land":
        return bh.Land()
    return bh.Idle()
