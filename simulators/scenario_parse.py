"""Parsing and validation of scenario data (as loaded from YAML/TOML) into scenario parts.

:func:`_parse_fields` turns plain data into the arguments of
:class:`~simulators.scenario.Scenario`, checking each field on the way; :func:`_validate` runs
the cross-field checks on a built scenario. Every problem raises
:class:`~overwatch_lab.errors.ScenarioError` whose message starts with the field path. The file
layout is described in :mod:`simulators.scenario`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from overwatch_lab.errors import EnvelopeError, ScenarioError, SubjectError
from overwatch_lab.protocol.entities import ORG_TYPES
from overwatch_lab.protocol.envelopes import parse_timestamp
from overwatch_lab.protocol.subjects import check_token
from simulators.devices import KINDS
from simulators.faults import Fault
from simulators.scenario_specs import Area, BehaviourSpec, FleetSpec, OrgSpec, RouteSpec, TimelineEntry
from simulators.telemetry import BUILDERS

if TYPE_CHECKING:
    from simulators.scenario import Scenario

FORMATIONS = ("grid", "line", "column", "circle", "random")
BEHAVIOURS = ("hold", "goto", "route", "orbit", "patrol", "rtl", "land", "idle")
COMMAND_TYPES = (
    "goto",
    "hold",
    "route",
    "orbit",
    "patrol",
    "rtl",
    "land",
    "arm",
    "disarm",
    "set_speed",
    "set_mode",
)
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
# Field checks


def _fail(path: str, problem: str) -> ScenarioError:
    return ScenarioError(f"{path}: {problem}")


def _number(
    value: object, path: str, *, lo: float | None = None, hi: float | None = None, positive: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(path, f"must be a finite number, got {value!r}")
    v = float(value)
    if positive and v <= 0:
        raise _fail(path, f"must be > 0, got {value!r}")
    if lo is not None and v < lo:
        raise _fail(path, f"must be >= {lo}, got {value!r}")
    if hi is not None and v > hi:
        raise _fail(path, f"must be <= {hi}, got {value!r}")
    return v


def _int(value: object, path: str, *, lo: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, f"must be an integer, got {value!r}")
    if value < lo:
        raise _fail(path, f"must be >= {lo}, got {value}")
    return value


def _str(value: object, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(path, f"must be a non-empty string, got {value!r}")
    return value


def _token(value: object, path: str) -> str:
    try:
        return check_token(value, path)
    except SubjectError as exc:
        raise _fail(path, str(exc).replace(f"{path} ", "", 1)) from None


def _mapping(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(path, f"must be a table/mapping, got {type(value).__name__}")
    return value


def _list(value: object, path: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise _fail(path, f"must be a list, got {type(value).__name__}")
    return list(value)


def _unknown(obj: Mapping[str, Any], allowed: Iterable[str], path: str) -> None:
    extra = set(obj) - set(allowed)
    if extra:
        name = sorted(map(str, extra))[0]
        raise _fail(
            f"{path}.{name}" if path else name, f"unknown field (allowed: {', '.join(sorted(allowed))})"
        )


def _latlon(value: object, path: str, *, with_alt: bool = False) -> tuple[float, ...]:
    items = _list(value, path)
    if len(items) not in ((2, 3) if with_alt else (2,)):
        raise _fail(path, f"must be [lat, lon{', alt_m' if with_alt else ''}], got {value!r}")
    lat = _number(items[0], f"{path}[0]", lo=-90.0, hi=90.0)
    lon = _number(items[1], f"{path}[1]", lo=-180.0, hi=180.0)
    if len(items) == 3:
        return lat, lon, _number(items[2], f"{path}[2]")
    return lat, lon


def _box(value: object, path: str) -> tuple[float, float, float, float]:
    items = _list(value, path)
    if len(items) != 4:
        raise _fail(path, f"must be [south, west, north, east], got {value!r}")
    s = _number(items[0], f"{path}[0]", lo=-90.0, hi=90.0)
    w = _number(items[1], f"{path}[1]", lo=-180.0, hi=180.0)
    n = _number(items[2], f"{path}[2]", lo=-90.0, hi=90.0)
    e = _number(items[3], f"{path}[3]", lo=-180.0, hi=180.0)
    if not (s < n and w < e):
        raise _fail(path, f"needs south < north and west < east, got {list(items)}")
    return s, w, n, e


def _rates(value: object, path: str, tick_hz: float) -> MappingProxyType[str, float]:
    out: dict[str, float] = {}
    for mtype, rate in _mapping(value, path).items():
        if mtype not in BUILDERS:
            raise _fail(f"{path}.{mtype}", f"is not a message the simulator sends ({', '.join(BUILDERS)})")
        r = _number(rate, f"{path}.{mtype}", lo=0.0)
        if r > tick_hz:
            raise _fail(
                f"{path}.{mtype}", f"{r} Hz is above the scenario tick rate {tick_hz} Hz (raise tick_hz)"
            )
        out[mtype] = r
    return MappingProxyType(out)


# ---------------------------------------------------------------------------------------------
# Parsing


def _parse_area(value: object, path: str = "area") -> Area:
    obj = _mapping(value, path)
    _unknown(obj, ("box", "center", "size_m", "ground_alt_m"), path)
    ground = _number(obj.get("ground_alt_m", 0.0), f"{path}.ground_alt_m")
    if "box" in obj:
        s, w, n, e = _box(obj["box"], f"{path}.box")
        return Area(s, w, n, e, ground)
    if "center" not in obj:
        raise _fail(path, "needs box: [south, west, north, east] or center: [lat, lon] with size_m")
    lat, lon = _latlon(obj["center"], f"{path}.center")
    size = obj.get("size_m", 2000.0)
    if isinstance(size, list | tuple):
        if len(size) != 2:
            raise _fail(f"{path}.size_m", f"must be a number or [width, height], got {size!r}")
        width = _number(size[0], f"{path}.size_m[0]", positive=True)
        height = _number(size[1], f"{path}.size_m[1]", positive=True)
    else:
        width = height = _number(size, f"{path}.size_m", positive=True)
    from simulators.kinematics import offset

    s, w = offset(lat, lon, -height / 2.0, -width / 2.0)
    n, e = offset(lat, lon, height / 2.0, width / 2.0)
    return Area(s, w, n, e, ground)


def _parse_orgs(value: object) -> tuple[OrgSpec, ...]:
    out = []
    for i, raw in enumerate(_list(value, "orgs")):
        path = f"orgs[{i}]"
        if isinstance(raw, str):
            raw = {"org_id": raw}
        obj = _mapping(raw, path)
        _unknown(obj, ("org_id", "name", "org_type"), path)
        if "org_id" not in obj:
            raise _fail(f"{path}.org_id", "is required")
        org_id = _token(obj["org_id"], f"{path}.org_id")
        name = _str(obj.get("name", org_id), f"{path}.name")
        org_type = obj.get("org_type", "civilian")
        if org_type not in ORG_TYPES:
            raise _fail(f"{path}.org_type", f"{org_type!r} is not one of {', '.join(ORG_TYPES)}")
        out.append(OrgSpec(org_id, name, org_type))
    return tuple(out)


def _parse_waypoints(value: object, path: str) -> tuple[tuple[float, float, float | None], ...]:
    items = _list(value, path)
    if not items:
        raise _fail(path, "needs at least one waypoint")
    wps = []
    for i, wp in enumerate(items):
        p = _latlon(wp, f"{path}[{i}]", with_alt=True)
        wps.append((p[0], p[1], p[2] if len(p) == 3 else None))
    return tuple(wps)


def _parse_routes(value: object) -> MappingProxyType[str, RouteSpec]:
    out = {}
    for name, raw in _mapping(value, "routes").items():
        path = f"routes.{name}"
        if isinstance(raw, list):
            raw = {"waypoints": raw}
        obj = _mapping(raw, path)
        _unknown(obj, ("waypoints", "loop"), path)
        loop = obj.get("loop", False)
        if not isinstance(loop, bool):
            raise _fail(f"{path}.loop", f"must be true or false, got {loop!r}")
        out[str(name)] = RouteSpec(
            str(name), _parse_waypoints(obj.get("waypoints"), f"{path}.waypoints"), loop
        )
    return MappingProxyType(out)


def _parse_behaviour(value: object, path: str) -> BehaviourSpec:
    if isinstance(value, str):
        value = {"type": value}
    obj = dict(_mapping(value, path))
    btype = obj.pop("type", "hold")
    if btype not in BEHAVIOURS:
        raise _fail(f"{path}.type", f"{btype!r} is not one of {', '.join(BEHAVIOURS)}")
    _unknown(obj, _BEHAVIOUR_PARAMS[btype], path)
    params: dict[str, Any] = {}
    for key, v in obj.items():
        p = f"{path}.{key}"
        if key in ("alt_m",):
            params[key] = _number(v, p, lo=0.0)
        elif key in ("speed_mps", "radius_m", "spacing_m"):
            params[key] = _number(v, p, positive=True)
        elif key == "to":
            params[key] = _latlon(v, p, with_alt=True)
        elif key == "center":
            params[key] = _latlon(v, p)
        elif key == "box":
            params[key] = _box(v, p)
        elif key == "waypoints":
            params[key] = _parse_waypoints(v, p)
        elif key == "route":
            params[key] = _str(v, p)
        elif key in ("loop", "stagger", "split", "clockwise"):
            if not isinstance(v, bool):
                raise _fail(p, f"must be true or false, got {v!r}")
            params[key] = v
        elif key == "along":
            if v not in ("ns", "ew"):
                raise _fail(p, f"must be 'ns' or 'ew', got {v!r}")
            params[key] = v
    if btype == "goto" and "to" not in params:
        raise _fail(f"{path}.to", "is required for goto")
    if btype == "route" and ("route" in params) == ("waypoints" in params):
        raise _fail(path, "a route behaviour needs exactly one of route (a name) or waypoints")
    return BehaviourSpec(btype, MappingProxyType(params))


def _parse_fleet(value: object, i: int, tick_hz: float) -> FleetSpec:
    path = f"fleets[{i}]"
    obj = _mapping(value, path)
    _unknown(obj, _FLEET_KEYS, path)
    for req in ("name", "org", "kind"):
        if req not in obj:
            raise _fail(f"{path}.{req}", "is required")
    name = _token(obj["name"], f"{path}.name")
    kind = obj["kind"]
    if kind not in KINDS:
        raise _fail(f"{path}.kind", f"{kind!r} is not one of {', '.join(KINDS)}")
    count = _int(obj.get("count", 1), f"{path}.count", lo=1)
    prefix = obj.get("id_prefix", name)
    _token(prefix, f"{path}.id_prefix")
    formation = obj.get("formation", "grid")
    if formation not in FORMATIONS:
        raise _fail(f"{path}.formation", f"{formation!r} is not one of {', '.join(FORMATIONS)}")
    at = _latlon(obj["at"], f"{path}.at") if "at" in obj else None
    battery = obj.get("battery_pct", [90, 100])
    if isinstance(battery, list | tuple):
        if len(battery) != 2:
            raise _fail(f"{path}.battery_pct", f"must be a number or [low, high], got {battery!r}")
        lo = _number(battery[0], f"{path}.battery_pct[0]", lo=0.0, hi=100.0)
        hi = _number(battery[1], f"{path}.battery_pct[1]", lo=lo, hi=100.0)
    else:
        lo = hi = _number(battery, f"{path}.battery_pct", lo=0.0, hi=100.0)
    device_rates: dict[str, MappingProxyType[str, float]] = {}
    for eid, rates in _mapping(obj.get("device_rates", {}), f"{path}.device_rates").items():
        device_rates[str(eid)] = _rates(rates, f"{path}.device_rates.{eid}", tick_hz)
    speed = obj.get("speed_mps")
    max_speed = KINDS[kind][1].max_speed_mps
    return FleetSpec(
        name=name,
        org=_token(obj["org"], f"{path}.org"),
        kind=kind,
        count=count,
        id_prefix=prefix,
        at=at,  # type: ignore[arg-type]
        formation=formation,
        spacing_m=_number(obj.get("spacing_m", 20.0), f"{path}.spacing_m", positive=True),
        heading_deg=_number(obj.get("heading_deg", 0.0), f"{path}.heading_deg") % 360.0,
        alt_m=_number(obj["alt_m"], f"{path}.alt_m", lo=0.0) if "alt_m" in obj else None,
        battery_pct=(lo, hi),
        speed_mps=None if speed is None else _number(speed, f"{path}.speed_mps", positive=True, hi=max_speed),
        rates=_rates(obj.get("rates", {}), f"{path}.rates", tick_hz),
        device_rates=MappingProxyType(device_rates),
        behaviour=_parse_behaviour(obj.get("behaviour", "hold"), f"{path}.behaviour"),
        ground_alt_m=_number(obj["ground_alt_m"], f"{path}.ground_alt_m") if "ground_alt_m" in obj else None,
    )


def _targets(value: object, path: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    items = _list(value, path)
    if not items:
        raise _fail(path, "needs at least one target (entity id, fleet name, org id or '*')")
    return tuple(_str(t, f"{path}[{i}]") for i, t in enumerate(items))


def _parse_timeline(value: object) -> tuple[TimelineEntry, ...]:
    out = []
    for i, raw in enumerate(_list(value, "timeline")):
        path = f"timeline[{i}]"
        obj = _mapping(raw, path)
        if "at_s" not in obj:
            raise _fail(f"{path}.at_s", "is required")
        at = _number(obj["at_s"], f"{path}.at_s", lo=0.0)
        targets = _targets(obj.get("targets", "*"), f"{path}.targets")
        if ("fault" in obj) == ("command" in obj):
            raise _fail(path, "needs exactly one of fault: KIND or command: TYPE")
        if "fault" in obj:
            _unknown(obj, ("at_s", "fault", "duration_s", "targets", "params", "id"), path)
            if "duration_s" not in obj:
                raise _fail(f"{path}.duration_s", "is required for a fault")
            params = _mapping(obj.get("params", {}), f"{path}.params")
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
            _unknown(obj, ("at_s", "command", "targets", "params", "id"), path)
            ctype = obj["command"]
            if ctype not in COMMAND_TYPES:
                raise _fail(f"{path}.command", f"{ctype!r} is not one of {', '.join(COMMAND_TYPES)}")
            params = dict(_mapping(obj.get("params", {}), f"{path}.params"))
            command = {
                "command_id": str(obj.get("id") or f"timeline-{i}"),
                "command_type": ctype,
                "params": params,
            }
            from simulators.commands import parse_command

            try:
                parse_command(command)
            except ValueError as exc:
                raise _fail(f"{path}.params", str(exc)) from None
            out.append(TimelineEntry(at, targets, command=MappingProxyType(command)))
    return tuple(sorted(out, key=lambda e: e.at_s))


def _parse_start(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _number(value, "start", positive=True)
    if hasattr(value, "isoformat"):  # YAML/TOML parse bare timestamps into datetime
        value = value.isoformat().replace("+00:00", "Z")
        if not value.endswith("Z") and "+" not in value[10:] and "-" not in value[10:]:
            value += "Z"
    try:
        return parse_timestamp(value, "start")[1]
    except EnvelopeError as exc:
        raise _fail("start", str(exc)) from None


def _parse_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """Parse and check every field of plain scenario data; return the :class:`Scenario` arguments."""
    obj = _mapping(data, "scenario")
    _unknown(obj, _TOP_KEYS, "")
    for req in ("name", "area", "fleets"):
        if req not in obj:
            raise _fail(req, "is required")
    tick_hz = _number(obj.get("tick_hz", 10.0), "tick_hz", positive=True, hi=100.0)
    fleets_raw = _list(obj["fleets"], "fleets")
    fleets = tuple(_parse_fleet(f, i, tick_hz) for i, f in enumerate(fleets_raw))
    orgs = (
        _parse_orgs(obj["orgs"])
        if "orgs" in obj
        else tuple(OrgSpec(o, o) for o in dict.fromkeys(f.org for f in fleets))
    )
    duration = obj.get("duration_s")
    return dict(
        name=_str(obj["name"], "name"),
        seed=_int(obj.get("seed", 0), "seed"),
        area=_parse_area(obj["area"]),
        orgs=orgs,
        fleets=fleets,
        routes=_parse_routes(obj.get("routes", {})),
        timeline=_parse_timeline(obj.get("timeline", [])),
        tick_hz=tick_hz,
        rates=_rates(obj.get("rates", {}), "rates", tick_hz),
        start_epoch_s=_parse_start(obj.get("start")),
        duration_s=None if duration is None else _number(duration, "duration_s", positive=True),
        description=str(obj.get("description", "")),
    )


def _validate(sc: Scenario) -> None:
    """Cross-field checks (also run for scenarios built in Python)."""
    if not sc.fleets:
        raise _fail("fleets", "needs at least one fleet")
    org_ids = [o.org_id for o in sc.orgs]
    if len(set(org_ids)) != len(org_ids):
        raise _fail("orgs", f"org_id values must be unique, got {org_ids}")
    names: set[str] = set()
    ids: set[str] = set()
    for i, f in enumerate(sc.fleets):
        if f.name in names:
            raise _fail(f"fleets[{i}].name", f"{f.name!r} is used by another fleet")
        names.add(f.name)
        if f.org not in org_ids:
            raise _fail(f"fleets[{i}].org", f"{f.org!r} is not one of the orgs ({', '.join(org_ids)})")
        if f.kind not in KINDS:
            raise _fail(f"fleets[{i}].kind", f"{f.kind!r} is not one of {', '.join(KINDS)}")
        fleet_ids = f.entity_ids()
        for eid in fleet_ids:
            _token(eid, f"fleets[{i}].id_prefix (entity id {eid})")
            if eid in ids:
                raise _fail(f"fleets[{i}].id_prefix", f"entity id {eid!r} is also made by another fleet")
            ids.add(eid)
        for eid in f.device_rates:
            if eid not in fleet_ids:
                raise _fail(f"fleets[{i}].device_rates.{eid}", "is not an entity of this fleet")
        route = f.behaviour.params.get("route")
        if route is not None and route not in sc.routes:
            raise _fail(
                f"fleets[{i}].behaviour.route",
                f"{route!r} is not one of the routes ({', '.join(sc.routes) or 'none'})",
            )
        if not KINDS[f.kind][1].moves and f.behaviour.type not in ("hold", "idle"):
            raise _fail(
                f"fleets[{i}].behaviour.type", f"a {f.kind} cannot move ({f.behaviour.type!r}); use hold"
            )
    known = names | ids | set(org_ids) | {"*"}
    for i, e in enumerate(sc.timeline):
        for j, t in enumerate(e.targets):
            if t not in known:
                raise _fail(f"timeline[{i}].targets[{j}]", f"{t!r} matches no fleet, org or entity id")
    for mtype in sc.rates:
        if mtype not in BUILDERS:
            raise _fail(f"rates.{mtype}", f"is not a message the simulator sends ({', '.join(BUILDERS)})")
