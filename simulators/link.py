"""A device's radio link: the link-level faults applied to its outgoing messages.

:func:`link_effects` combines the faults active on a device into :class:`LinkEffects`;
:class:`Link` applies them to each tick's messages (silence, delay and jitter, duplicates,
out-of-order holds, malformed replacements), drawing only from the device's own random
generator, so a seeded run is reproducible. What each fault does is in :mod:`simulators.faults`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from simulators.emission import Emission
from simulators.faults import Fault, FaultKind
from simulators.malformed import MALFORMED_VARIANTS, malformed

if TYPE_CHECKING:
    import numpy as np


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
