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
               (variants in :data:`simulators.malformed.MALFORMED_VARIANTS`; the lab must
               quarantine every one)
============== ================================================================================

:class:`simulators.link.Link` applies the link-level faults to a device's outgoing messages;
the fleet model (:mod:`simulators.model`) applies the others to the device.
:func:`timeline_frame` gives the fault timeline as a pandas DataFrame (one row per fault and
affected device).
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from overwatch_lab.errors import ScenarioError
from overwatch_lab.protocol.envelopes import format_timestamp
from simulators.malformed import MALFORMED_VARIANTS

if TYPE_CHECKING:
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

    @classmethod
    def from_description(cls, d: Mapping[str, Any]) -> Fault:
        """Rebuild a fault from :meth:`describe` (e.g. after a trip through a pipe), validated again.

        Raises:
            ScenarioError: the description is not a valid fault.
        """
        return cls.make(
            d["kind"],
            d["start_s"],
            d["duration_s"],
            d["targets"],
            params=d["params"],
            fault_id=d["fault_id"],
            source=d["source"],
        )


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
