"""Plain scenario data (as loaded from YAML/TOML) parsed into the parts of a scenario.

:func:`parse_fields` turns plain data into the arguments of
:class:`~simulators.scenario.Scenario`, checking each field on the way (with
:mod:`simulators.scenario_fields`); the scenario then runs its cross-field checks itself. Every
problem raises :class:`~overwatch_lab.errors.ScenarioError` whose message starts with the field
path. The file layout is described in :mod:`simulators.scenario`. Timeline commands use the
lab's command vocabulary (:mod:`overwatch_lab.protocol.command_actions`).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from overwatch_lab.errors import EnvelopeError
from overwatch_lab.protocol.command_actions import Action
from overwatch_lab.protocol.entities import ORG_TYPES
from overwatch_lab.protocol.envelopes import parse_timestamp
from simulators import kinematics as k
from simulators import scenario_fields as check
from simulators.devices import KINDS
from simulators.devices.command_handler import parse_command
from simulators.faults import Fault
from simulators.scenario_specs import Area, BehaviourSpec, FleetSpec, OrgSpec, RouteSpec, TimelineEntry

FORMATIONS = ("grid", "line", "column", "circle", "random")
BEHAVIOURS = ("hold", "goto", "route", "orbit", "patrol", "rtl", "land", "idle")
COMMAND_TYPES: tuple[str, ...] = tuple(a.value for a in Action)
"""Timeline commands: the lab's actions."""
_BEHAVIOUR_PARAMS: dict[str, frozenset[str]] = {
    "hold": frozenset({"alt_m"}),
    "goto": frozenset({"to", "alt_m", "speed_mps"}),
    "route": frozenset({"route", "waypoints", "loop", "stagger", "alt_m", "speed_mps"}),
    "orbit": frozenset({"center", "radius_m", "clockwise", "alt_m", "speed_mps"}),
    "patrol": frozenset({"box", "spacing_m", "split", "along", "alt_m", "speed_mps"}),
    "rtl": frozenset(),
    "land": frozenset(),
    "idle": frozenset(),
}
_FLEET_KEYS = frozenset(
    {
        "name",
        "org",
        "kind",
        "count",
        "id_prefix",
        "at",
        "formation",
        "spacing_m",
        "heading_deg",
        "alt_m",
        "battery_pct",
        "speed_mps",
        "rates",
        "device_rates",
        "behaviour",
        "ground_alt_m",
    }
)
_TOP_KEYS = frozenset(
    {
        "name",
        "description",
        "seed",
        "start",
        "duration_s",
        "tick_hz",
        "area",
        "orgs",
        "rates",
        "routes",
        "fleets",
        "timeline",
    }
)


# ---------------------------------------------------------------------------------------------
# Parsing


def _parse_area(value: object, path: str = "area") -> Area:
    obj = check.mapping(value, path)
    check.unknown(obj, ("box", "center", "size_m", "ground_alt_m"), path)
    ground = check.number(obj.get("ground_alt_m", 0.0), f"{path}.ground_alt_m")
    if "box" in obj:
        s, w, n, e = check.box(obj["box"], f"{path}.box")
        return Area(s, w, n, e, ground)
    if "center" not in obj:
        raise check.fail(path, "needs box: [south, west, north, east] or center: [lat, lon] with size_m")
    lat, lon = check.latlon(obj["center"], f"{path}.center")
    size = obj.get("size_m", 2000.0)
    if isinstance(size, list | tuple):
        if len(size) != 2:
            raise check.fail(f"{path}.size_m", f"must be a number or [width, height], got {size!r}")
        width = check.number(size[0], f"{path}.size_m[0]", positive=True)
        height = check.number(size[1], f"{path}.size_m[1]", positive=True)
    else:
        width = height = check.number(size, f"{path}.size_m", positive=True)
    s, w = k.offset(lat, lon, -height / 2.0, -width / 2.0)
    n, e = k.offset(lat, lon, height / 2.0, width / 2.0)
    return Area(s, w, n, e, ground)


def _parse_orgs(value: object) -> tuple[OrgSpec, ...]:
    out = []
    for i, raw in enumerate(check.items(value, "orgs")):
        path = f"orgs[{i}]"
        if isinstance(raw, str):
            raw = {"org_id": raw}
        obj = check.mapping(raw, path)
        check.unknown(obj, ("org_id", "name", "org_type"), path)
        if "org_id" not in obj:
            raise check.fail(f"{path}.org_id", "is required")
        org_id = check.token(obj["org_id"], f"{path}.org_id")
        name = check.text(obj.get("name", org_id), f"{path}.name")
        org_type = obj.get("org_type", "civilian")
        if org_type not in ORG_TYPES:
            raise check.fail(f"{path}.org_type", f"{org_type!r} is not one of {', '.join(ORG_TYPES)}")
        out.append(OrgSpec(org_id, name, org_type))
    return tuple(out)


def _parse_waypoints(value: object, path: str) -> tuple[tuple[float, float, float | None], ...]:
    items = check.items(value, path)
    if not items:
        raise check.fail(path, "needs at least one waypoint")
    wps = []
    for i, wp in enumerate(items):
        p = check.latlon(wp, f"{path}[{i}]", with_alt=True)
        wps.append((p[0], p[1], p[2] if len(p) == 3 else None))
    return tuple(wps)


def _parse_routes(value: object) -> MappingProxyType[str, RouteSpec]:
    out = {}
    for name, raw in check.mapping(value, "routes").items():
        path = f"routes.{name}"
        if isinstance(raw, list):
            raw = {"waypoints": raw}
        obj = check.mapping(raw, path)
        check.unknown(obj, ("waypoints", "loop"), path)
        loop = obj.get("loop", False)
        if not isinstance(loop, bool):
            raise check.fail(f"{path}.loop", f"must be true or false, got {loop!r}")
        out[str(name)] = RouteSpec(
            str(name), _parse_waypoints(obj.get("waypoints"), f"{path}.waypoints"), loop
        )
    return MappingProxyType(out)


def _parse_behaviour(value: object, path: str) -> BehaviourSpec:
    if isinstance(value, str):
        value = {"type": value}
    obj = dict(check.mapping(value, path))
    btype = obj.pop("type", "hold")
    if btype not in BEHAVIOURS:
        raise check.fail(f"{path}.type", f"{btype!r} is not one of {', '.join(BEHAVIOURS)}")
    check.unknown(obj, _BEHAVIOUR_PARAMS[btype], path)
    params: dict[str, Any] = {}
    for key, v in obj.items():
        p = f"{path}.{key}"
        if key in ("alt_m",):
            params[key] = check.number(v, p, lo=0.0)
        elif key in ("speed_mps", "radius_m", "spacing_m"):
            params[key] = check.number(v, p, positive=True)
        elif key == "to":
            params[key] = check.latlon(v, p, with_alt=True)
        elif key == "center":
            params[key] = check.latlon(v, p)
        elif key == "box":
            params[key] = check.box(v, p)
        elif key == "waypoints":
            params[key] = _parse_waypoints(v, p)
        elif key == "route":
            params[key] = check.text(v, p)
        elif key in ("loop", "stagger", "split", "clockwise"):
            if not isinstance(v, bool):
                raise check.fail(p, f"must be true or false, got {v!r}")
            params[key] = v
        elif key == "along":
            if v not in ("ns", "ew"):
                raise check.fail(p, f"must be 'ns' or 'ew', got {v!r}")
            params[key] = v
    if btype == "goto" and "to" not in params:
        raise check.fail(f"{path}.to", "is required for goto")
    if btype == "route" and ("route" in params) == ("waypoints" in params):
        raise check.fail(path, "a route behaviour needs exactly one of route (a name) or waypoints")
    return BehaviourSpec(btype, MappingProxyType(params))


def _parse_fleet(value: object, i: int, tick_hz: float) -> FleetSpec:
    path = f"fleets[{i}]"
    obj = check.mapping(value, path)
    check.unknown(obj, _FLEET_KEYS, path)
    for req in ("name", "org", "kind"):
        if req not in obj:
            raise check.fail(f"{path}.{req}", "is required")
    name = check.token(obj["name"], f"{path}.name")
    kind = obj["kind"]
    if kind not in KINDS:
        raise check.fail(f"{path}.kind", f"{kind!r} is not one of {', '.join(KINDS)}")
    count = check.integer(obj.get("count", 1), f"{path}.count", lo=1)
    prefix = obj.get("id_prefix", name)
    check.token(prefix, f"{path}.id_prefix")
    formation = obj.get("formation", "grid")
    if formation not in FORMATIONS:
        raise check.fail(f"{path}.formation", f"{formation!r} is not one of {', '.join(FORMATIONS)}")
    at = check.latlon(obj["at"], f"{path}.at") if "at" in obj else None
    battery = obj.get("battery_pct", [90, 100])
    if isinstance(battery, list | tuple):
        if len(battery) != 2:
            raise check.fail(f"{path}.battery_pct", f"must be a number or [low, high], got {battery!r}")
        lo = check.number(battery[0], f"{path}.battery_pct[0]", lo=0.0, hi=100.0)
        hi = check.number(battery[1], f"{path}.battery_pct[1]", lo=lo, hi=100.0)
    else:
        lo = hi = check.number(battery, f"{path}.battery_pct", lo=0.0, hi=100.0)
    device_rates: dict[str, MappingProxyType[str, float]] = {}
    for eid, rates in check.mapping(obj.get("device_rates", {}), f"{path}.device_rates").items():
        device_rates[str(eid)] = check.rates(rates, f"{path}.device_rates.{eid}", tick_hz)
    speed = obj.get("speed_mps")
    max_speed = KINDS[kind][1].max_speed_mps
    return FleetSpec(
        name=name,
        org=check.token(obj["org"], f"{path}.org"),
        kind=kind,
        count=count,
        id_prefix=prefix,
        at=at,
        formation=formation,
        spacing_m=check.number(obj.get("spacing_m", 20.0), f"{path}.spacing_m", positive=True),
        heading_deg=check.number(obj.get("heading_deg", 0.0), f"{path}.heading_deg") % 360.0,
        alt_m=check.number(obj["alt_m"], f"{path}.alt_m", lo=0.0) if "alt_m" in obj else None,
        battery_pct=(lo, hi),
        speed_mps=None
        if speed is None
        else check.number(speed, f"{path}.speed_mps", positive=True, hi=max_speed),
        rates=check.rates(obj.get("rates", {}), f"{path}.rates", tick_hz),
        device_rates=MappingProxyType(device_rates),
        behaviour=_parse_behaviour(obj.get("behaviour", "hold"), f"{path}.behaviour"),
        ground_alt_m=check.number(obj["ground_alt_m"], f"{path}.ground_alt_m")
        if "ground_alt_m" in obj
        else None,
    )


def _targets(value: object, path: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    items = check.items(value, path)
    if not items:
        raise check.fail(path, "needs at least one target (entity id, fleet name, org id or '*')")
    return tuple(check.text(t, f"{path}[{i}]") for i, t in enumerate(items))


def _parse_timeline(value: object) -> tuple[TimelineEntry, ...]:
    out = []
    for i, raw in enumerate(check.items(value, "timeline")):
        path = f"timeline[{i}]"
        obj = check.mapping(raw, path)
        if "at_s" not in obj:
            raise check.fail(f"{path}.at_s", "is required")
        at = check.number(obj["at_s"], f"{path}.at_s", lo=0.0)
        targets = _targets(obj.get("targets", "*"), f"{path}.targets")
        if ("fault" in obj) == ("command" in obj):
            raise check.fail(path, "needs exactly one of fault: KIND or command: TYPE")
        if "fault" in obj:
            check.unknown(obj, ("at_s", "fault", "duration_s", "targets", "params", "id"), path)
            if "duration_s" not in obj:
                raise check.fail(f"{path}.duration_s", "is required for a fault")
            params = check.mapping(obj.get("params", {}), f"{path}.params")
            fault = Fault.make(
                obj["fault"],
                at,
                obj["duration_s"],
                targets,
                params=params,
                fault_id=str(obj.get("id") or f"{obj['fault']}-{i}"),
                path=path,
            )
            out.append(TimelineEntry(at, targets, fault=fault))
        else:
            check.unknown(obj, ("at_s", "command", "targets", "params", "id"), path)
            ctype = obj["command"]
            if ctype not in COMMAND_TYPES:
                raise check.fail(f"{path}.command", f"{ctype!r} is not one of {', '.join(COMMAND_TYPES)}")
            params = dict(check.mapping(obj.get("params", {}), f"{path}.params"))
            command = {
                "command_id": str(obj.get("id") or f"timeline-{i}"),
                "command_type": ctype,
                "params": params,
            }
            try:
                parse_command(command)
            except EnvelopeError as exc:
                raise check.fail(f"{path}.params", str(exc)) from None
            out.append(TimelineEntry(at, targets, command=MappingProxyType(command)))
    return tuple(sorted(out, key=lambda e: e.at_s))


def _parse_start(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return check.number(value, "start", positive=True)
    if hasattr(value, "isoformat"):  # YAML/TOML parse bare timestamps into datetime
        text = str(value.isoformat()).replace("+00:00", "Z")
        if not text.endswith("Z") and "+" not in text[10:] and "-" not in text[10:]:
            text += "Z"
        value = text
    try:
        return parse_timestamp(value, "start")[1]
    except EnvelopeError as exc:
        raise check.fail("start", str(exc)) from None


def parse_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """Parse and check every field of plain scenario data; return the ``Scenario(**...)`` arguments.

    Raises:
        ScenarioError: an invalid field; the message starts with the field path.
    """
    obj = check.mapping(data, "scenario")
    check.unknown(obj, _TOP_KEYS, "")
    for req in ("name", "area", "fleets"):
        if req not in obj:
            raise check.fail(req, "is required")
    tick_hz = check.number(obj.get("tick_hz", 10.0), "tick_hz", positive=True, hi=100.0)
    fleets_raw = check.items(obj["fleets"], "fleets")
    fleets = tuple(_parse_fleet(f, i, tick_hz) for i, f in enumerate(fleets_raw))
    orgs = (
        _parse_orgs(obj["orgs"])
        if "orgs" in obj
        else tuple(OrgSpec(o, o) for o in dict.fromkeys(f.org for f in fleets))
    )
    duration = obj.get("duration_s")
    return dict(
        name=check.text(obj["name"], "name"),
        seed=check.integer(obj.get("seed", 0), "seed"),
        area=_parse_area(obj["area"]),
        orgs=orgs,
        fleets=fleets,
        routes=_parse_routes(obj.get("routes", {})),
        timeline=_parse_timeline(obj.get("timeline", [])),
        tick_hz=tick_hz,
        rates=check.rates(obj.get("rates", {}), "rates", tick_hz),
        start_epoch_s=_parse_start(obj.get("start")),
        duration_s=None if duration is None else check.number(duration, "duration_s", positive=True),
        description=str(obj.get("description", "")),
    )
