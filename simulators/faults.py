"""Faults: what can go wrong with a device or its link, when, for how long, and to whom.

A :class:`Fault` has a kind, a start and a duration in scenario seconds, targets (entity ids,
fleet names, org ids or ``"*"``) and kind-specific parameters (:data:`DEFAULT_PARAMS`). Faults
come from the scenario timeline or are injected live (``RunHandle.inject``). Their effects:

============== ================================================================================
kind           effect while active
============== ================================================================================
link_loss      nothing is sent (the model keeps flying); sending resumes at the end
gps_dropout    no fix: GPS_RAW_INT fix_type 1 with the last fix, eph/epv unknown; the position
               estimate drifts (dead reckoning) until the fix returns
gps_degraded   2-D fix, 4-6 satellites, eph 3-15 m, noisy raw positions
telemetry_delay every message leaves ``delay_s + U(0, jitter_s)`` late (so they also reorder)
battery_sag    internal resistance x ``resistance_factor``: the voltage sags under load
battery_failure the pack loses all its charge over ``drain_s`` seconds (then failsafes act)
motor_failure  propulsion lost: forced landing (aircraft fall at 1.5x max descent, fixed wings
               glide), then disarmed on the ground; re-arming works once the fault has ended
reboot         the onboard computer restarts: silent for the duration, then a new
               ``bootsequence`` event (boot_count + 1) and ``time_boot_ms`` from 0
clock_skew     message timestamps shifted by ``offset_s`` (negative: they look stale to the lab)
duplicate      each message is sent twice with probability ``probability``; the copy keeps the
               ``Nats-Msg-Id`` header (server dedup drops it) unless ``dedup_header`` is false
out_of_order   each message is held back by ``hold_s`` with probability ``probability``, so
               later messages overtake it
malformed      each message is replaced by a broken one with probability ``probability``
               (variants in :data:`MALFORMED_VARIANTS`; the lab must quarantine every one)
============== ================================================================================

:class:`Link` applies the link-level faults to a device's outgoing messages, drawing from the
device's own random generator, so a seeded run is reproducible. :func:`timeline_frame` gives
the fault timeline as a pandas DataFrame (one row per fault and affected device).
"""

from __future__ import annotations

import enum
import heapq
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from overwatch_lab.errors import ScenarioError
from overwatch_lab.protocol.envelopes import encode, format_timestamp

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


class FaultKind(enum.StrEnum):
    """The fault kinds (values are the names used in scenario files)."""

    LINK_LOSS = "link_loss"
    GPS_DROPOUT = "gps_dropout"
    GPS_DEGRADED = "gps_degraded"
    TELEMETRY_DELAY = "telemetry_delay"
    BATTERY_SAG = "battery_sag"
    BATTERY_FAILURE = "battery_failure"
    MOTOR_FAILURE = "motor_failure"
    REBOOT = "reboot"
    CLOCK_SKEW = "clock_skew"
    DUPLICATE = "duplicate"
    OUT_OF_ORDER = "out_of_order"
    MALFORMED = "malformed"


MALFORMED_VARIANTS: tuple[str, ...] = (
    "truncated",
    "not_json",
    "trailing_data",
    "bad_schema_version",
    "unknown_field",
    "missing_field",
    "identity_mismatch",
    "bad_timestamp",
    "bad_message_uid",
    "unknown_message_type",
)
"""Ways a malformed message is broken; every one breaks WIRE.md (the last one fails projection)."""

DEFAULT_PARAMS: MappingProxyType[FaultKind, MappingProxyType[str, Any]] = MappingProxyType(
    {
        FaultKind.LINK_LOSS: MappingProxyType({}),
        FaultKind.GPS_DROPOUT: MappingProxyType({}),
        FaultKind.GPS_DEGRADED: MappingProxyType({}),
        FaultKind.TELEMETRY_DELAY: MappingProxyType({"delay_s": 1.0, "jitter_s": 0.5}),
        FaultKind.BATTERY_SAG: MappingProxyType({"resistance_factor": 4.0}),
        FaultKind.BATTERY_FAILURE: MappingProxyType({"drain_s": 20.0}),
        FaultKind.MOTOR_FAILURE: MappingProxyType({}),
        FaultKind.REBOOT: MappingProxyType({}),
        FaultKind.CLOCK_SKEW: MappingProxyType({"offset_s": -30.0}),
        FaultKind.DUPLICATE: MappingProxyType({"probability": 1.0, "dedup_header": True}),
        FaultKind.OUT_OF_ORDER: MappingProxyType({"probability": 0.3, "hold_s": 0.5}),
        FaultKind.MALFORMED: MappingProxyType({"probability": 0.2, "variant": None}),
    }
)
"""Parameters each kind accepts, with their defaults (seconds, ratios, probabilities)."""

_FLOAT_PARAMS = {"delay_s", "jitter_s", "resistance_factor", "drain_s", "offset_s", "probability", "hold_s"}


class Emission(NamedTuple):
    """One message a device puts on the wire (or would, in a dry run).

    Attributes:
        subject: the NATS subject.
        payload: the exact bytes.
        msg_id: the ``Nats-Msg-Id`` header value, or None for no header.
        kind: ``telemetry``, ``entity``, ``org`` or ``event``.
        message_type: the MAVLink message name for telemetry (else the event type).
        entity_id: the sending device ("" for an org event).
    """

    subject: str
    payload: bytes
    msg_id: str | None
    kind: str
    message_type: str
    entity_id: str


def _fail(path: str, problem: str) -> ScenarioError:
    return ScenarioError(f"{path}: {problem}")


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault: kind, start and duration (scenario seconds), targets and parameters.

    Build it with :meth:`Fault.make`, which validates and fills in default parameters.

    Attributes:
        kind: the fault kind.
        start_s: scenario seconds at which it starts.
        duration_s: how long it lasts (> 0).
        targets: entity ids, fleet names, org ids, or ``"*"`` for every device.
        params: kind-specific parameters (see :data:`DEFAULT_PARAMS`).
        fault_id: a name for the timeline (default ``{kind}-{start}``).
        source: ``scenario`` or ``live``.
    """

    kind: FaultKind
    start_s: float
    duration_s: float
    targets: tuple[str, ...] = ("*",)
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    fault_id: str = ""
    source: str = "scenario"

    @classmethod
    def make(
        cls,
        kind: str | FaultKind,
        start_s: float,
        duration_s: float,
        targets: str | Iterable[str] = "*",
        *,
        params: Mapping[str, Any] | None = None,
        fault_id: str = "",
        source: str = "scenario",
        path: str = "fault",
    ) -> Fault:
        """Validate and build a fault; ``path`` prefixes error messages (e.g. ``timeline[3]``).

        Raises:
            ScenarioError: unknown kind or parameter, a bad time, probability or target.
        """
        try:
            fk = FaultKind(kind)
        except ValueError:
            raise _fail(
                f"{path}.fault", f"{kind!r} is not one of {', '.join(k.value for k in FaultKind)}"
            ) from None
        for name, value in (("start_s", start_s), ("duration_s", duration_s)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise _fail(f"{path}.{name}", f"must be a finite number of seconds, got {value!r}")
        if start_s < 0:
            raise _fail(f"{path}.start_s", f"must be >= 0, got {start_s}")
        if duration_s <= 0:
            raise _fail(f"{path}.duration_s", f"must be > 0, got {duration_s}")
        if isinstance(targets, str):
            targets = (targets,)
        tgt = tuple(targets)
        if not tgt or not all(isinstance(t, str) and t for t in tgt):
            raise _fail(f"{path}.targets", f"must be a non-empty list of names, got {targets!r}")
        defaults = DEFAULT_PARAMS[fk]
        merged = dict(defaults)
        for key, value in (params or {}).items():
            if key not in defaults:
                allowed = ", ".join(defaults) or "none"
                raise _fail(f"{path}.params.{key}", f"is not a parameter of {fk.value} (allowed: {allowed})")
            if key in _FLOAT_PARAMS:
                if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                    raise _fail(f"{path}.params.{key}", f"must be a finite number, got {value!r}")
                value = float(value)
            merged[key] = value
        for key in ("probability",):
            if key in merged and not 0.0 <= merged[key] <= 1.0:
                raise _fail(f"{path}.params.{key}", f"must be in [0, 1], got {merged[key]}")
        for key in ("delay_s", "jitter_s", "hold_s"):
            if key in merged and merged[key] < 0:
                raise _fail(f"{path}.params.{key}", f"must be >= 0, got {merged[key]}")
        if "drain_s" in merged and merged["drain_s"] <= 0:
            raise _fail(f"{path}.params.drain_s", f"must be > 0, got {merged['drain_s']}")
        if "resistance_factor" in merged and merged["resistance_factor"] < 1:
            raise _fail(
                f"{path}.params.resistance_factor", f"must be >= 1, got {merged['resistance_factor']}"
            )
        variant = merged.get("variant")
        if variant is not None and variant not in MALFORMED_VARIANTS:
            raise _fail(
                f"{path}.params.variant", f"{variant!r} is not one of {', '.join(MALFORMED_VARIANTS)}"
            )
        if "dedup_header" in merged and not isinstance(merged["dedup_header"], bool):
            raise _fail(
                f"{path}.params.dedup_header", f"must be true or false, got {merged['dedup_header']!r}"
            )
        return cls(
            fk,
            float(start_s),
            float(duration_s),
            tgt,
            MappingProxyType(merged),
            fault_id or f"{fk.value}-{start_s:g}s",
            source,
        )

    @property
    def end_s(self) -> float:
        """Scenario seconds at which it ends."""
        return self.start_s + self.duration_s

    def active(self, t_s: float) -> bool:
        """True while ``start_s <= t_s < end_s``."""
        return self.start_s <= t_s < self.end_s

    def matches(self, entity_id: str, fleet: str, org_id: str) -> bool:
        """True when this fault targets the device."""
        t = self.targets
        return "*" in t or entity_id in t or fleet in t or org_id in t

    def describe(self) -> dict[str, Any]:
        """Return a plain dict (for YAML/JSON and the timeline frame)."""
        return {
            "fault_id": self.fault_id,
            "kind": self.kind.value,
            "start_s": self.start_s,
            "duration_s": self.duration_s,
            "targets": list(self.targets),
            "params": dict(self.params),
            "source": self.source,
        }


# ---------------------------------------------------------------------------------------------
# Malformed messages


def malformed(variant: str, envelope: dict[str, Any], payload: bytes) -> bytes:
    """Return a broken version of a telemetry message (``envelope`` is not modified).

    Raises:
        ValueError: unknown variant.
    """
    if variant == "truncated":
        return payload[: max(1, len(payload) // 2)]
    if variant == "not_json":
        return b"\xff\xfe\x00 garbage from a noisy link"
    if variant == "trailing_data":
        return payload + b' {"again":1}'
    env = dict(envelope)
    if variant == "bad_schema_version":
        env["schema_version"] = "0.9.0"
    elif variant == "unknown_field":
        env["debug_blob"] = "x"
    elif variant == "missing_field":
        del env["timestamp"]
    elif variant == "identity_mismatch":
        env["entity_id"] = f"{env['entity_id']}-imposter"[:128]
    elif variant == "bad_timestamp":
        env["timestamp"] = "0001-01-01T00:00:00Z"
    elif variant == "bad_message_uid":
        env["message_uid"] = "bad uid.with*wildcards"
    elif variant == "unknown_message_type":
        env["message_type"] = "SIM_GARBAGE"
        env["message_id"] = 65000
    else:
        raise ValueError(f"unknown malformed variant {variant!r}")
    return encode(env)


# ---------------------------------------------------------------------------------------------
# The link: link-level faults on one device's outgoing messages


@dataclass(frozen=True, slots=True)
class LinkEffects:
    """The link-level faults active on one device at one moment."""

    silent: bool = False
    skew_s: float = 0.0
    delay: tuple[float, float] | None = None  # (delay_s, jitter_s)
    duplicate: tuple[float, bool] | None = None  # (probability, dedup_header)
    out_of_order: tuple[float, float] | None = None  # (probability, hold_s)
    malformed: tuple[float, str | None] | None = None  # (probability, variant)

    @property
    def clean(self) -> bool:
        """True when nothing alters the messages."""
        return (
            not self.silent
            and self.delay is None
            and self.duplicate is None
            and (self.out_of_order is None and self.malformed is None)
        )


def link_effects(active: Iterable[Fault]) -> LinkEffects:
    """Combine the active faults of one device into :class:`LinkEffects` (first of each kind wins)."""
    silent = False
    skew = 0.0
    delay = duplicate = out_of_order = bad = None
    for f in active:
        p = f.params
        if f.kind in (FaultKind.LINK_LOSS, FaultKind.REBOOT):
            silent = True
        elif f.kind is FaultKind.CLOCK_SKEW:
            skew += p["offset_s"]
        elif f.kind is FaultKind.TELEMETRY_DELAY and delay is None:
            delay = (p["delay_s"], p["jitter_s"])
        elif f.kind is FaultKind.DUPLICATE and duplicate is None:
            duplicate = (p["probability"], p["dedup_header"])
        elif f.kind is FaultKind.OUT_OF_ORDER and out_of_order is None:
            out_of_order = (p["probability"], p["hold_s"])
        elif f.kind is FaultKind.MALFORMED and bad is None:
            bad = (p["probability"], p["variant"])
    return LinkEffects(silent, skew, delay, duplicate, out_of_order, bad)


NO_EFFECTS = LinkEffects()


@dataclass(slots=True)
class LinkStats:
    """What the link did to one device's messages."""

    dropped: int = 0
    duplicated: int = 0
    delayed: int = 0
    reordered: int = 0
    malformed: int = 0


class Link:
    """A device's radio link: applies malformed/duplicate/delay/out-of-order/silence to its messages.

    Messages held back (delay, out-of-order) wait in a heap keyed by release time and leave in
    that order; a message released while the link is silent is lost.

    Args:
        rng: the device's random generator (the only source of randomness here).
    """

    __slots__ = ("_held", "_order", "rng", "stats")

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self._held: list[tuple[float, int, Emission]] = []
        self._order = 0
        self.stats = LinkStats()

    @property
    def held(self) -> int:
        """Messages waiting to be released."""
        return len(self._held)

    def corrupt(self, fx: LinkEffects, envelope: dict[str, Any], em: Emission) -> Emission:
        """Replace ``em`` by a malformed message when the malformed fault draws it."""
        if fx.malformed is None:
            return em
        prob, variant = fx.malformed
        if self.rng.random() >= prob:
            return em
        if variant is None:
            variant = MALFORMED_VARIANTS[int(self.rng.integers(len(MALFORMED_VARIANTS)))]
        self.stats.malformed += 1
        return em._replace(payload=malformed(variant, envelope, em.payload))

    def send(self, fx: LinkEffects, items: list[Emission], t_s: float) -> list[Emission]:
        """Pass this tick's messages through the link; return those that go out now, in order.

        Args:
            fx: the active link effects.
            items: the messages the device produced this tick.
            t_s: scenario seconds now.
        """
        if fx is NO_EFFECTS and not self._held:
            return items
        rng = self.rng
        out: list[Emission] = []
        for em in items:
            copies = [em]
            if fx.duplicate is not None and rng.random() < fx.duplicate[0]:
                self.stats.duplicated += 1
                copies.append(em if fx.duplicate[1] else em._replace(msg_id=None))
            for c in copies:
                hold = 0.0
                if fx.delay is not None:
                    hold = fx.delay[0] + (fx.delay[1] * float(rng.random()) if fx.delay[1] > 0 else 0.0)
                    self.stats.delayed += 1
                if fx.out_of_order is not None and rng.random() < fx.out_of_order[0]:
                    hold += fx.out_of_order[1]
                    self.stats.reordered += 1
                if hold > 0.0:
                    self._order += 1
                    heapq.heappush(self._held, (t_s + hold, self._order, c))
                else:
                    out.append(c)
        if self._held:
            released: list[Emission] = []
            while self._held and self._held[0][0] <= t_s + 1e-9:
                released.append(heapq.heappop(self._held)[2])
            out = released + out
        if fx.silent:
            self.stats.dropped += len(out)
            return []
        return out

    def clear(self) -> int:
        """Drop every held message (the device rebooted); return how many."""
        n = len(self._held)
        self._held.clear()
        self.stats.dropped += n
        return n


# ---------------------------------------------------------------------------------------------
# Timeline


TIMELINE_COLUMNS: tuple[str, ...] = (
    "fault_id",
    "kind",
    "entity_id",
    "fleet",
    "org_id",
    "start",
    "end",
    "start_s",
    "end_s",
    "duration_s",
    "source",
    "params",
)


def timeline_frame(
    faults: Iterable[Fault], devices: Iterable[tuple[str, str, str]], start_epoch_s: float
) -> pd.DataFrame:
    """Return the fault timeline: one row per fault and affected device, sorted by start.

    Args:
        faults: the faults (scenario and live).
        devices: (entity_id, fleet, org_id) of every device in the run.
        start_epoch_s: Unix time of scenario t = 0 (for the ``start``/``end`` UTC columns).

    Returns:
        Columns :data:`TIMELINE_COLUMNS`; ``start``/``end`` are UTC pandas Timestamps,
        ``params`` a JSON string.
    """
    import pandas as pd  # lazy: worker processes never build frames

    devs = list(devices)
    rows = []
    for f in faults:
        for eid, fleet, org in devs:
            if f.matches(eid, fleet, org):
                rows.append(
                    {
                        "fault_id": f.fault_id,
                        "kind": f.kind.value,
                        "entity_id": eid,
                        "fleet": fleet,
                        "org_id": org,
                        "start": format_timestamp(start_epoch_s + f.start_s),
                        "end": format_timestamp(start_epoch_s + f.end_s),
                        "start_s": f.start_s,
                        "end_s": f.end_s,
                        "duration_s": f.duration_s,
                        "source": f.source,
                        "params": json.dumps(dict(f.params), sort_keys=True),
                    }
                )
    frame = pd.DataFrame(rows, columns=list(TIMELINE_COLUMNS))
    frame["start"] = pd.to_datetime(frame["start"], utc=True)
    frame["end"] = pd.to_datetime(frame["end"], utc=True)
    return frame.sort_values(["start_s", "fault_id", "entity_id"], kind="stable").reset_index(drop=True)
