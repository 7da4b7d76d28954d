"""Scenarios: an area, organisations, fleets, routes and a timeline of faults and commands.

A scenario is plain data (frozen dataclasses). Write it in Python (``Scenario.from_dict`` or
the constructors; see ``simulators/fleets/``), or load it from YAML or TOML with
:func:`load_scenario`. Every problem raises :class:`~overwatch_lab.errors.ScenarioError` naming
the field path, e.g. ``fleets[1].kind: 'tank' is not one of multirotor, fixed_wing, ...``.

File layout (YAML; TOML uses the same keys with ``[[fleets]]`` and ``[[timeline]]`` tables)::

    name: small-isr-patrol
    seed: 7
    start: "2026-01-01T12:00:00Z"     # optional; a live run starts "now" when absent
    duration_s: 600                   # optional default run length
    tick_hz: 10                       # model step rate; telemetry rates are multiples of it
    area: {box: [south, west, north, east], ground_alt_m: 120}   # or {center: [lat, lon], size_m: 2000}
    orgs: [{org_id: blue, name: Blue Force, org_type: military}]
    rates: {ATTITUDE: 5}              # override default rates for every fleet
    routes: {loop-a: {waypoints: [[lat, lon, alt_m], ...], loop: true}}
    fleets:
      - name: isr                     # fleet name (also a fault/command target)
        org: blue
        kind: multirotor              # multirotor | fixed_wing | vtol | ground | usv | sensor
        count: 4
        id_prefix: isr                # entity ids isr-000, isr-001, ...
        at: [lat, lon]                # formation anchor (default: area centre)
        formation: grid               # grid | line | column | circle | random
        spacing_m: 25
        heading_deg: 0
        alt_m: 60                     # start height above ground (0 = on the ground, disarmed)
        battery_pct: [85, 100]        # a number, or a range drawn per device from the seed
        speed_mps: 12                 # cruise speed
        rates: {GLOBAL_POSITION_INT: 10}
        device_rates: {isr-002: {GPS_RAW_INT: 5}}
        behaviour: {type: patrol, spacing_m: 80, split: true}
    timeline:
      - {at_s: 60, fault: link_loss, duration_s: 20, targets: [isr-001]}
      - {at_s: 90, command: rtl, targets: [isr]}

Altitudes in a scenario (``alt_m``, the third value of a waypoint) are metres above the ground
at the device's start point. Behaviour types: hold, goto (``to``), route (``route`` name or
``waypoints``; ``stagger`` starts device i at waypoint i), orbit (``center``, ``radius_m``,
``clockwise``), patrol (``box`` default the area, ``spacing_m``, ``split`` into one strip per
device, ``along`` ns|ew), rtl, land, idle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import yaml

from overwatch_lab.errors import EnvelopeError, ScenarioError, SubjectError
from overwatch_lab.protocol.entities import ORG_TYPES
from overwatch_lab.protocol.envelopes import parse_timestamp
from overwatch_lab.protocol.subjects import check_token
from simulators.devices import KINDS
from simulators.faults import Fault, timeline_frame
from simulators.telemetry import BUILDERS, DEFAULT_RATES_HZ

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_START_EPOCH_S = 1_767_268_800.0  # 2026-01-01T12:00:00Z: the start of a dry run without one
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
# The data model


@dataclass(frozen=True, slots=True)
class Area:
    """The operating area: a lat/lon box and the ground height in it.

    Attributes:
        south, west, north, east: the box in degrees.
        ground_alt_m: ground height above mean sea level in metres.
    """

    south: float
    west: float
    north: float
    east: float
    ground_alt_m: float = 0.0

    @property
    def center(self) -> tuple[float, float]:
        """The box centre (lat, lon)."""
        return (self.south + self.north) / 2.0, (self.west + self.east) / 2.0

    @property
    def box(self) -> tuple[float, float, float, float]:
        """(south, west, north, east)."""
        return self.south, self.west, self.north, self.east


@dataclass(frozen=True, slots=True)
class OrgSpec:
    """One organisation the scenario registers."""

    org_id: str
    name: str
    org_type: str = "civilian"


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A named route: waypoints (lat, lon, alt_m above ground or None) and whether it loops."""

    name: str
    waypoints: tuple[tuple[float, float, float | None], ...]
    loop: bool = False


@dataclass(frozen=True, slots=True)
class BehaviourSpec:
    """A fleet's initial behaviour: its type and parameters (see the module docstring)."""

    type: str = "hold"
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """A group of identical devices placed in a formation.

    Attributes:
        name: fleet name (unique; usable as a fault or command target).
        org: org_id of one of the scenario's orgs.
        kind: a device kind (``simulators.devices.KINDS``).
        count: number of devices (>= 1).
        id_prefix: entity ids are ``{id_prefix}-{index:03d}``.
        at: formation anchor (lat, lon), default the area centre.
        formation: grid | line | column | circle | random.
        spacing_m: distance between neighbours.
        heading_deg: initial heading (and formation orientation).
        alt_m: start height above ground (0 = on the ground and disarmed, unless a behaviour
            other than idle is given, which arms it for take-off).
        battery_pct: (low, high) start charge; each device draws from it.
        speed_mps: cruise speed (None: the kind's).
        rates: telemetry rates for this fleet (merged over the scenario's).
        device_rates: per-entity overrides of the rates.
        behaviour: the initial behaviour.
        ground_alt_m: ground height here (None: the area's; a USV defaults to 0).
    """

    name: str
    org: str
    kind: str
    count: int = 1
    id_prefix: str = ""
    at: tuple[float, float] | None = None
    formation: str = "grid"
    spacing_m: float = 20.0
    heading_deg: float = 0.0
    alt_m: float | None = None
    battery_pct: tuple[float, float] = (90.0, 100.0)
    speed_mps: float | None = None
    rates: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    device_rates: Mapping[str, Mapping[str, float]] = field(default_factory=lambda: MappingProxyType({}))
    behaviour: BehaviourSpec = field(default_factory=BehaviourSpec)
    ground_alt_m: float | None = None

    def entity_ids(self) -> list[str]:
        """The entity ids of this fleet's devices, in order."""
        prefix = self.id_prefix or self.name
        width = max(3, len(str(self.count - 1)))
        return [f"{prefix}-{i:0{width}d}" for i in range(self.count)]


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """A timeline event: a fault, or a command sent to the targets at ``at_s``."""

    at_s: float
    targets: tuple[str, ...]
    fault: Fault | None = None
    command: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    """A complete, validated scenario. Same scenario + seed + start = same telemetry, byte for byte.

    Attributes:
        name: scenario name.
        seed: the one seed every random stream derives from.
        area: the operating area.
        orgs: organisations.
        fleets: fleets, in order (entity ids and random streams follow this order).
        routes: named routes.
        timeline: faults and commands, by time.
        tick_hz: model step rate (every telemetry rate is rounded to a whole number of ticks).
        rates: scenario-wide telemetry rates (merged over :data:`DEFAULT_RATES_HZ`).
        start_epoch_s: Unix time of t = 0, or None (a live run then starts "now").
        duration_s: default run length, or None (run until stopped).
        description: free text.
    """

    name: str
    seed: int
    area: Area
    orgs: tuple[OrgSpec, ...]
    fleets: tuple[FleetSpec, ...]
    routes: Mapping[str, RouteSpec] = field(default_factory=lambda: MappingProxyType({}))
    timeline: tuple[TimelineEntry, ...] = ()
    tick_hz: float = 10.0
    rates: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    start_epoch_s: float | None = None
    duration_s: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        _validate(self)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "") -> Scenario:
        """Build and validate a scenario from plain data (as loaded from YAML/TOML).

        Raises:
            ScenarioError: any invalid field; the message starts with the field path.
        """
        try:
            return _parse(data)
        except ScenarioError as exc:
            if source:
                raise ScenarioError(f"{source}: {exc}") from None
            raise

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "<yaml>") -> Scenario:
        """Parse YAML text into a scenario.

        Raises:
            ScenarioError: invalid YAML or an invalid field.
        """
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ScenarioError(f"{source}: not valid YAML: {exc}") from None
        return cls.from_dict(_mapping(data, source or "scenario"), source=source)

    @classmethod
    def from_toml(cls, text: str, *, source: str = "<toml>") -> Scenario:
        """Parse TOML text into a scenario.

        Raises:
            ScenarioError: invalid TOML or an invalid field.
        """
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioError(f"{source}: not valid TOML: {exc}") from None
        return cls.from_dict(data, source=source)

    def to_dict(self) -> dict[str, Any]:
        """Return plain data that :meth:`from_dict` turns back into an equal scenario.

        Lists instead of tuples, so it can be dumped as YAML/JSON or sent to a worker process.
        """
        return _to_plain(self)

    def to_yaml(self) -> str:
        """Return the scenario as YAML text (loadable with :meth:`from_yaml`)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **changes: Any) -> Scenario:
        """Return a validated copy with ``changes`` (e.g. ``seed=2``, ``duration_s=60``)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ derived
    @property
    def device_count(self) -> int:
        """Number of devices."""
        return sum(f.count for f in self.fleets)

    @property
    def faults(self) -> tuple[Fault, ...]:
        """The timeline's faults."""
        return tuple(e.fault for e in self.timeline if e.fault is not None)

    def devices(self) -> list[tuple[str, str, str, str]]:
        """(entity_id, fleet, org_id, kind) of every device, in model order."""
        return [(eid, f.name, f.org, f.kind) for f in self.fleets for eid in f.entity_ids()]

    def frame(self) -> pd.DataFrame:
        """Return the devices as a DataFrame (entity_id, fleet, org_id, kind, entity_type)."""
        import pandas as pd

        rows = [
            {
                "entity_id": eid,
                "fleet": fleet,
                "org_id": org,
                "kind": kind,
                "entity_type": KINDS[kind][1].entity_type,
            }
            for eid, fleet, org, kind in self.devices()
        ]
        return pd.DataFrame(rows, columns=["entity_id", "fleet", "org_id", "kind", "entity_type"])

    def fault_timeline(self, start_epoch_s: float | None = None) -> pd.DataFrame:
        """Return the scenario's fault timeline (see :func:`simulators.faults.timeline_frame`)."""
        start = start_epoch_s if start_epoch_s is not None else (self.start_epoch_s or DEFAULT_START_EPOCH_S)
        return timeline_frame(self.faults, [(e, f, o) for e, f, o, _ in self.devices()], start)

    def telemetry_hash(self, duration_s: float, *, start_epoch_s: float | None = None) -> str:
        """Run the scenario without NATS for ``duration_s`` and hash every message it sends.

        The sha256 covers subject, ``Nats-Msg-Id`` and payload of every emission (registration,
        device events and telemetry, faults included), in emission order. It depends only on
        the scenario, its seed and the start time (``start_epoch_s``, else the scenario's, else
        :data:`DEFAULT_START_EPOCH_S`): never on the machine or a speed factor.
        """
        from simulators.model import FleetModel

        model = FleetModel(self, start_epoch_s=start_epoch_s)
        digest = hashlib.sha256()
        for em in model.run_dry(duration_s):
            digest.update(em.subject.encode())
            digest.update(b"\x00")
            digest.update((em.msg_id or "").encode())
            digest.update(b"\x00")
            digest.update(len(em.payload).to_bytes(4, "big"))
            digest.update(em.payload)
        return digest.hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _to_plain(sc: Scenario) -> dict[str, Any]:
    fleets = []
    for f in sc.fleets:
        fd: dict[str, Any] = {
            "name": f.name,
            "org": f.org,
            "kind": f.kind,
            "count": f.count,
            "id_prefix": f.id_prefix or f.name,
            "formation": f.formation,
            "spacing_m": f.spacing_m,
            "heading_deg": f.heading_deg,
            "battery_pct": list(f.battery_pct),
            "rates": _plain(f.rates),
            "device_rates": _plain(f.device_rates),
            "behaviour": {"type": f.behaviour.type, **_plain(f.behaviour.params)},
        }
        for key in ("at", "alt_m", "speed_mps", "ground_alt_m"):
            value = getattr(f, key)
            if value is not None:
                fd[key] = _plain(value)
        for key in ("waypoints",):
            if key in fd["behaviour"]:
                fd["behaviour"][key] = [
                    [a, b] if c is None else [a, b, c] for a, b, c in fd["behaviour"][key]
                ]
        fleets.append(fd)
    timeline = []
    for e in sc.timeline:
        if e.fault is not None:
            timeline.append(
                {
                    "at_s": e.fault.start_s,
                    "fault": e.fault.kind.value,
                    "duration_s": e.fault.duration_s,
                    "targets": list(e.targets),
                    "params": dict(e.fault.params),
                    "id": e.fault.fault_id,
                }
            )
        elif e.command is not None:
            timeline.append(
                {
                    "at_s": e.at_s,
                    "command": e.command["command_type"],
                    "targets": list(e.targets),
                    "params": _plain(e.command.get("params", {})),
                    "id": e.command["command_id"],
                }
            )
    out: dict[str, Any] = {
        "name": sc.name,
        "description": sc.description,
        "seed": sc.seed,
        "tick_hz": sc.tick_hz,
        "area": {"box": list(sc.area.box), "ground_alt_m": sc.area.ground_alt_m},
        "orgs": [{"org_id": o.org_id, "name": o.name, "org_type": o.org_type} for o in sc.orgs],
        "rates": _plain(sc.rates),
        "routes": {
            r.name: {
                "waypoints": [[a, b] if c is None else [a, b, c] for a, b, c in r.waypoints],
                "loop": r.loop,
            }
            for r in sc.routes.values()
        },
        "fleets": fleets,
        "timeline": timeline,
    }
    if sc.start_epoch_s is not None:
        out["start"] = sc.start_epoch_s
    if sc.duration_s is not None:
        out["duration_s"] = sc.duration_s
    return out


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


def _parse(data: Mapping[str, Any]) -> Scenario:
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
    return Scenario(
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


# ---------------------------------------------------------------------------------------------
# Loading by name or path


def load_scenario(ref: str | Path | Scenario) -> Scenario:
    """Return a scenario from a named fleet module, a YAML/TOML file, or a Scenario (as is).

    Args:
        ref: a name in ``simulators.fleets`` (e.g. ``small_isr_patrol``; dashes allowed), a
            ``.yaml``/``.yml``/``.toml`` path, or a :class:`Scenario`.

    Raises:
        ScenarioError: unknown name, unreadable file, or an invalid scenario.
    """
    if isinstance(ref, Scenario):
        return ref
    path = Path(ref)
    if path.suffix.lower() in (".yaml", ".yml", ".toml"):
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ScenarioError(f"{path}: cannot read the scenario file ({exc.strerror})") from None
        if path.suffix.lower() == ".toml":
            return Scenario.from_toml(text, source=str(path))
        return Scenario.from_yaml(text, source=str(path))
    from simulators.fleets import NAMED

    name = str(ref).replace("-", "_")
    if name not in NAMED:
        raise ScenarioError(
            f"unknown scenario {str(ref)!r}: not a .yaml/.toml file nor one of {', '.join(NAMED)}"
        )
    module = importlib.import_module(f"simulators.fleets.{name}")
    return module.scenario()


def merged_rates(sc: Scenario, fleet: FleetSpec, entity_id: str) -> dict[str, float]:
    """Return the telemetry rates of one device: defaults < scenario < fleet < device."""
    rates = dict(DEFAULT_RATES_HZ)
    rates.update(sc.rates)
    rates.update(fleet.rates)
    rates.update(fleet.device_rates.get(entity_id, {}))
    return rates
