"""The fleet model: a scenario's devices stepped tick by tick into the messages they send.

:class:`FleetModel` owns the scenario clock (manual: it advances one tick per :meth:`step`),
builds every device from the scenario and its seed, applies the fault timeline and timeline
commands, and turns each device's due telemetry into wire-ready :class:`~simulators.emission.Emission`
values (subject, exact bytes, ``Nats-Msg-Id``). It does no I/O: the runner publishes the
emissions, a dry run hashes them. Pacing against the wall clock is the runner's business, so
the emissions depend only on the scenario, its seed and the start time.

The devices come from :func:`simulators.fleet_layout.build_devices` (one seed, every device).
A model built for a slice of the devices (process mode) builds them all and keeps its slice,
so each device behaves exactly as in a single process.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from overwatch_lab.errors import ScenarioError
from overwatch_lab.protocol.envelopes import encode, format_timestamp, make_telemetry
from overwatch_lab.protocol.events import make_device_event
from overwatch_lab.protocol.lifecycle import make_entity_event, make_org_event
from overwatch_lab.protocol.subjects import (
    device_event_subject,
    entity_subject,
    organization_subject,
    telemetry_subject,
)
from simulators import behaviours as bh
from simulators.clock import SimClock
from simulators.devices import Device
from simulators.devices.command_handler import CommandResult
from simulators.emission import Emission
from simulators.faults import Fault, FaultKind, timeline_frame
from simulators.fleet_layout import build_devices
from simulators.link import NO_EFFECTS, Link, LinkEffects, link_effects
from simulators.message_schedule import MessageSchedule
from simulators.scenario import DEFAULT_START_EPOCH_S, Scenario, merged_rates
from simulators.telemetry import BUILDERS

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SOURCE = "overwatch-lab-simulator"
FIRMWARE = "overwatch-lab-sim/1.0"
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def run_tag(start_epoch_s: float) -> str:
    """Return a short token naming a run by its start time (base-36 milliseconds).

    It goes into every message_uid and event id, so two runs of one scenario at different
    start times never collide in the broker's dedup window.
    """
    n = round(start_epoch_s * 1000)
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _B36[r] + out
        if n == 0:
            return out


@dataclass(slots=True)
class _Slot:
    """One device and everything the model keeps for it."""

    dev: Device
    subject: str
    schedule: MessageSchedule
    link: Link
    faults: list[Fault] = field(default_factory=list)
    active: frozenset[int] = frozenset()  # id() of each active fault
    fx: LinkEffects = NO_EFFECTS


class FleetModel:
    """Every device of a scenario (or a slice of them), stepped in fixed ticks.

    Args:
        scenario: the scenario.
        start_epoch_s: Unix time of t = 0 (default: the scenario's, else
            :data:`~simulators.scenario.DEFAULT_START_EPOCH_S`).
        members: indices (in :meth:`Scenario.devices` order) of the devices this model drives;
            None for all.
    """

    def __init__(
        self, scenario: Scenario, *, start_epoch_s: float | None = None, members: Sequence[int] | None = None
    ) -> None:
        self.scenario = scenario
        start = (
            start_epoch_s if start_epoch_s is not None else (scenario.start_epoch_s or DEFAULT_START_EPOCH_S)
        )
        self.clock = SimClock(start, rate=0.0)
        self.tick_s = 1.0 / scenario.tick_hz
        self.tick = 0
        self.tag = run_tag(start)
        self.counts: collections.Counter[str] = collections.Counter()
        self.bytes_sent = 0
        self.command_log: list[tuple[float, str, CommandResult]] = []
        self.started = False
        every = build_devices(scenario, self.clock)
        chosen = range(len(every)) if members is None else sorted(set(members))
        self.all_ids = [d.entity_id for d in every]
        self._slots: list[_Slot] = []
        self._by_id: dict[str, _Slot] = {}
        fleet_of = {eid: f for f in scenario.fleets for eid in f.entity_ids()}
        for idx in chosen:
            dev = every[idx]
            rates = merged_rates(scenario, fleet_of[dev.entity_id], dev.entity_id)
            slot = _Slot(
                dev,
                telemetry_subject(dev.org_id, dev.entity_id),
                MessageSchedule.build(rates, scenario.tick_hz, dev.rng),
                Link(dev.rng),
            )
            self._slots.append(slot)
            self._by_id[dev.entity_id] = slot
        self.faults: list[Fault] = []
        for f in scenario.faults:
            self.add_fault(f)
        self._commands = collections.deque(e for e in scenario.timeline if e.command is not None)

    # ------------------------------------------------------------------ views
    @property
    def devices(self) -> list[Device]:
        """The devices this model drives, in order."""
        return [s.dev for s in self._slots]

    def device(self, entity_id: str) -> Device:
        """Return one device.

        Raises:
            KeyError: not a device of this model.
        """
        return self._by_id[entity_id].dev

    @property
    def elapsed_s(self) -> float:
        """Simulated seconds since t = 0."""
        return self.clock.elapsed_s

    def link_stats(self) -> dict[str, int]:
        """Totals of what the links did (dropped, duplicated, delayed, reordered, malformed, held)."""
        out = collections.Counter[str]()
        for s in self._slots:
            st = s.link.stats
            out.update(
                dropped=st.dropped,
                duplicated=st.duplicated,
                delayed=st.delayed,
                reordered=st.reordered,
                malformed=st.malformed,
                held=s.link.held,
            )
        return dict(out)

    def devices_frame(self) -> pd.DataFrame:
        """Return the current truth of every device as a DataFrame (one row per device)."""
        import pandas as pd

        rows = [
            {
                "entity_id": d.entity_id,
                "fleet": d.fleet,
                "kind": d.spec.kind,
                "lat": d.lat,
                "lon": d.lon,
                "alt_msl_m": d.alt_msl_m,
                "alt_agl_m": d.alt_agl_m,
                "speed_mps": d.speed_mps,
                "heading_deg": d.heading_deg,
                "battery_pct": d.battery_pct,
                "voltage_v": d.voltage_v,
                "armed": d.armed,
                "airborne": d.airborne,
                "mode": d.mode,
                "behaviour": d.behaviour.name,
                "gps": d.gps_mode,
                "motor_failed": d.motor_failed,
                "boot_count": d.boot_count,
            }
            for d in self.devices
        ]
        return pd.DataFrame(rows)

    def fault_timeline(self) -> pd.DataFrame:
        """Return the fault timeline (scenario and live faults) for this model's devices."""
        devs = [(s.dev.entity_id, s.dev.fleet, s.dev.org_id) for s in self._slots]
        return timeline_frame(self.faults, devs, self.clock.start_epoch_s)

    # ------------------------------------------------------------------ faults and commands
    def add_fault(self, fault: Fault) -> int:
        """Add a fault (from the timeline, or live); return how many of this model's devices it hits."""
        self.faults.append(fault)
        hit = 0
        for s in self._slots:
            d = s.dev
            if fault.matches(d.entity_id, d.fleet, d.org_id):
                s.faults.append(fault)
                hit += 1
        return hit

    def matches_any(self, fault: Fault) -> bool:
        """True when ``fault`` targets at least one device of this model."""
        return any(fault.matches(s.dev.entity_id, s.dev.fleet, s.dev.org_id) for s in self._slots)

    def command(self, entity_id: str, command: dict[str, Any]) -> CommandResult:
        """Hand a command to one device now (see :meth:`Device.handle_command`).

        Raises:
            KeyError: not a device of this model.
        """
        result = self._by_id[entity_id].dev.handle_command(command)
        self.command_log.append((self.elapsed_s, entity_id, result))
        return result

    def _targets(self, targets: tuple[str, ...]) -> list[_Slot]:
        return [
            s
            for s in self._slots
            if "*" in targets or {s.dev.entity_id, s.dev.fleet, s.dev.org_id} & set(targets)
        ]

    # ------------------------------------------------------------------ emissions
    def start(self) -> list[Emission]:
        """Return the registration messages at t = 0: org created, entity created, bootsequence."""
        if self.started:
            return []
        self.started = True
        now = self.clock.now()
        ts = format_timestamp(now)
        out: list[Emission] = []
        orgs_here = {s.dev.org_id for s in self._slots}
        for org in self.scenario.orgs:
            if org.org_id not in orgs_here:
                continue
            ev = make_org_event("created", org.org_id, org.name, org.org_type, source=SOURCE)
            ev["id"] = f"org-{org.org_id}-created-{self.tag}"
            ev["timestamp"] = ts
            out.append(Emission(organization_subject("created"), encode(ev), ev["id"], "org", "created", ""))
        for s in self._slots:
            d = s.dev
            ev = make_entity_event("created", d.entity_record(), source=SOURCE)
            ev["id"] = f"{d.entity_id}-created-{self.tag}"
            ev["timestamp"] = ts
            out.append(
                Emission(
                    entity_subject(d.org_id, "created"),
                    encode(ev),
                    ev["id"],
                    "entity",
                    "created",
                    d.entity_id,
                )
            )
        for s in self._slots:
            out.append(self._boot_event(s.dev))
        self._count(out)
        return out

    def _boot_event(self, d: Device) -> Emission:
        uid = f"{d.entity_id}-boot{d.boot_count}-{self.tag}"
        body = make_device_event(
            d.org_id,
            d.entity_id,
            "bootsequence",
            event_uid=uid,
            timestamp=self.clock.now(),
            boot_count=d.boot_count,
            firmware=FIRMWARE,
            entity_type=d.spec.entity_type,
            system_id=d.system_id,
            source=SOURCE,
        )
        return Emission(
            device_event_subject(d.org_id, d.entity_id, "bootsequence"),
            encode(body),
            uid,
            "event",
            "bootsequence",
            d.entity_id,
        )

    def _count(self, out: list[Emission]) -> None:
        counts = self.counts
        for em in out:
            counts[em.message_type if em.kind == "telemetry" else em.kind] += 1
            self.bytes_sent += len(em.payload)

    def _fault_transitions(self, s: _Slot, t: float, out: list[Emission]) -> None:
        now_faults = [f for f in s.faults if f.active(t)]
        active = frozenset(id(f) for f in now_faults)
        if active == s.active:
            return
        before = s.active
        s.active = active
        d = s.dev
        kinds = {f.kind for f in now_faults}
        # physical effects, recomputed from the active set
        d.set_gps_mode(
            "dropout"
            if FaultKind.GPS_DROPOUT in kinds
            else "degraded"
            if FaultKind.GPS_DEGRADED in kinds
            else "ok"
        )
        d.battery_resistance_factor = math.prod(
            f.params["resistance_factor"] for f in now_faults if f.kind is FaultKind.BATTERY_SAG
        )
        d.battery_fail_wh_per_s = sum(
            d.spec.battery.capacity_wh / f.params["drain_s"]
            for f in now_faults
            if f.kind is FaultKind.BATTERY_FAILURE
        )
        motor = FaultKind.MOTOR_FAILURE in kinds
        if motor and not d.motor_failed:
            d.motor_failed = True
            if d.spec.moves:
                d.behaviour = bh.Land() if d.airborne else bh.Idle()
        elif not motor:
            d.motor_failed = False
        reboots = [f for f in s.faults if f.kind is FaultKind.REBOOT]
        if any(id(f) in active and id(f) not in before for f in reboots):
            s.link.clear()  # the computer went down with whatever it was holding
        ended_reboot = FaultKind.REBOOT not in kinds and any(id(f) in before for f in reboots)
        s.fx = link_effects(now_faults) if now_faults else NO_EFFECTS
        if ended_reboot:
            d.reboot()
            if not s.fx.silent:
                out.append(self._boot_event(d))
        log.debug("%s faults now %s at t=%.1f", d.entity_id, sorted(kinds), t)

    def step(self) -> list[Emission]:
        """Advance one tick; return what every device sends during it, in order."""
        if not self.started:
            raise ScenarioError("call start() (registration) before step()")
        clock = self.clock
        clock.advance(self.tick_s)
        self.tick += 1
        tick = self.tick
        t = clock.elapsed_s
        now = clock.now()
        dt = self.tick_s
        out: list[Emission] = []
        while self._commands and self._commands[0].at_s <= t + 1e-9:
            entry = self._commands.popleft()
            assert entry.command is not None
            for s in self._targets(entry.targets):
                self.command(s.dev.entity_id, dict(entry.command))
        builders = BUILDERS
        tag = self.tag
        for s in self._slots:
            d = s.dev
            if s.faults:
                self._fault_transitions(s, t, out)
            d.step(dt)
            due = s.schedule.due(tick)
            if not due and not s.link.held:
                continue
            fx = s.fx
            stamp = now + fx.skew_s if fx.skew_s else now
            items: list[Emission] = []
            for mtype in due:
                d.seq += 1
                uid = f"{d.entity_id}-{tag}-{d.seq}"
                env = make_telemetry(
                    d.org_id,
                    d.entity_id,
                    mtype,
                    builders[mtype](d),
                    message_uid=uid,
                    timestamp=stamp,
                    system_id=d.system_id,
                )
                em = Emission(s.subject, encode(env), uid, "telemetry", mtype, d.entity_id)
                if fx.malformed is not None:
                    em = s.link.corrupt(fx, env, em)
                items.append(em)
            out.extend(s.link.send(fx, items, t) if (fx is not NO_EFFECTS or s.link.held) else items)
        self._count(out)
        return out

    def run_dry(self, duration_s: float) -> Iterator[Emission]:
        """Yield every emission of the first ``duration_s`` simulated seconds (registration first)."""
        yield from self.start()
        ticks = round(duration_s * self.scenario.tick_hz)
        for _ in range(ticks):
            yield from self.step()
