"""Scenarios: an area, organisations, fleets, routes and a timeline of faults and commands.

A scenario is plain data (frozen dataclasses). Write it in Python (``Scenario.from_dict`` or
the constructors; see ``simulators/fleets/``), or load it from YAML or TOML with
:func:`simulators.catalog.load_scenario` (which also finds the named ones). Every problem raises :class:`~overwatch_lab.errors.ScenarioError` naming
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
      - {at_s: 120, command: goto, targets: [isr-000], params: {lat: 47.61, lon: -122.3, alt_m: 40}}

Altitudes in a scenario (``alt_m``, the third value of a waypoint) are metres above the ground
at the device's start point. Behaviour types: hold, goto (``to``), route (``route`` name or
``waypoints``; ``stagger`` starts device i at waypoint i), orbit (``center``, ``radius_m``,
``clockwise``), patrol (``box`` default the area, ``spacing_m``, ``split`` into one strip per
device, ``along`` ns|ew), rtl, land, idle. Timeline commands are the lab's actions with their
params (goto, rtl, land, hold, set_mode, arm, disarm, set_speed, follow_route, orbit; see
:mod:`overwatch_lab.protocol.command_actions`), exactly as the lab would deliver them.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import yaml

from overwatch_lab.errors import ScenarioError
from simulators import scenario_fields as check
from simulators.devices import KINDS
from simulators.faults import Fault, timeline_frame
from simulators.scenario_parse import parse_fields
from simulators.scenario_specs import Area, FleetSpec, OrgSpec, RouteSpec, TimelineEntry
from simulators.telemetry import BUILDERS, DEFAULT_RATES_HZ

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_START_EPOCH_S = 1_767_268_800.0  # 2026-01-01T12:00:00Z: the start of a dry run without one


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
        self._check()

    def _check(self) -> None:
        """Cross-field checks (run for every scenario, parsed or built in Python)."""
        if not self.fleets:
            raise check.fail("fleets", "needs at least one fleet")
        org_ids = [o.org_id for o in self.orgs]
        if len(set(org_ids)) != len(org_ids):
            raise check.fail("orgs", f"org_id values must be unique, got {org_ids}")
        names: set[str] = set()
        ids: set[str] = set()
        for i, f in enumerate(self.fleets):
            if f.name in names:
                raise check.fail(f"fleets[{i}].name", f"{f.name!r} is used by another fleet")
            names.add(f.name)
            if f.org not in org_ids:
                raise check.fail(
                    f"fleets[{i}].org", f"{f.org!r} is not one of the orgs ({', '.join(org_ids)})"
                )
            if f.kind not in KINDS:
                raise check.fail(f"fleets[{i}].kind", f"{f.kind!r} is not one of {', '.join(KINDS)}")
            fleet_ids = f.entity_ids()
            for eid in fleet_ids:
                check.token(eid, f"fleets[{i}].id_prefix (entity id {eid})")
                if eid in ids:
                    raise check.fail(
                        f"fleets[{i}].id_prefix", f"entity id {eid!r} is also made by another fleet"
                    )
                ids.add(eid)
            for eid in f.device_rates:
                if eid not in fleet_ids:
                    raise check.fail(f"fleets[{i}].device_rates.{eid}", "is not an entity of this fleet")
            route = f.behaviour.params.get("route")
            if route is not None and route not in self.routes:
                raise check.fail(
                    f"fleets[{i}].behaviour.route",
                    f"{route!r} is not one of the routes ({', '.join(self.routes) or 'none'})",
                )
            if not KINDS[f.kind][1].moves and f.behaviour.type not in ("hold", "idle"):
                raise check.fail(
                    f"fleets[{i}].behaviour.type", f"a {f.kind} cannot move ({f.behaviour.type!r}); use hold"
                )
        known = names | ids | set(org_ids) | {"*"}
        for i, e in enumerate(self.timeline):
            for j, t in enumerate(e.targets):
                if t not in known:
                    raise check.fail(
                        f"timeline[{i}].targets[{j}]", f"{t!r} matches no fleet, org or entity id"
                    )
        for mtype in self.rates:
            if mtype not in BUILDERS:
                raise check.fail(
                    f"rates.{mtype}", f"is not a message the simulator sends ({', '.join(BUILDERS)})"
                )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "") -> Scenario:
        """Build and validate a scenario from plain data (as loaded from YAML/TOML).

        Raises:
            ScenarioError: any invalid field; the message starts with the field path.
        """
        try:
            return Scenario(**parse_fields(data))
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
            raise ScenarioError(f"{source}: not valid YAML: {_one_line(exc)}") from None
        return cls.from_dict(check.mapping(data, source or "scenario"), source=source)

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


def merged_rates(sc: Scenario, fleet: FleetSpec, entity_id: str) -> dict[str, float]:
    """Return the telemetry rates of one device: defaults < scenario < fleet < device."""
    rates = dict(DEFAULT_RATES_HZ)
    rates.update(sc.rates)
    rates.update(fleet.rates)
    rates.update(fleet.device_rates.get(entity_id, {}))
    return rates


def _one_line(exc: yaml.YAMLError) -> str:
    """A YAML error on one line (PyYAML's own text spans five, with a caret under the spot)."""
    problem = getattr(exc, "problem", None)
    if problem is None:
        return " ".join(str(exc).split())
    context = getattr(exc, "context", None)
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{context + ': ' if context else ''}{problem}{where}"
