"""A lithium battery pack model: pure functions over (state of charge, load).

The open-circuit voltage of one cell follows a typical LiPo discharge curve (flat in the middle,
steep near empty: that steep knee is the "sag near empty"); under load the terminal voltage
drops further by ``I * R_internal``, and the internal resistance rises as the pack empties.
Energy is drained in watt-hours. No state and no randomness: the device owns the numbers.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

# State of charge (0..1) → open-circuit cell voltage (V), a typical LiPo curve.
OCV_SOC: tuple[float, ...] = (0.0, 0.03, 0.07, 0.12, 0.2, 0.3, 0.5, 0.7, 0.85, 0.95, 1.0)
OCV_V: tuple[float, ...] = (3.27, 3.45, 3.6, 3.68, 3.73, 3.77, 3.84, 3.95, 4.05, 4.14, 4.2)
CELL_EMPTY_V = 3.27  # cut-off (open circuit) at 0 % state of charge
RESISTANCE_RISE_AT_EMPTY = 2.5  # internal resistance multiplier at 0 % (rises below 20 %)
SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class BatterySpec:
    """Fixed properties of one battery pack.

    Attributes:
        capacity_wh: usable energy when full, in watt-hours.
        cells: cells in series (the "S" count).
        internal_resistance_ohm: pack resistance when charged (rises near empty).
        temperature_c: nominal pack temperature in degrees Celsius.
    """

    capacity_wh: float
    cells: int
    internal_resistance_ohm: float = 0.02
    temperature_c: float = 25.0

    @property
    def nominal_v(self) -> float:
        """Nominal pack voltage (3.7 V per cell)."""
        return 3.7 * self.cells

    @property
    def capacity_ah(self) -> float:
        """Capacity in amp-hours at the nominal voltage."""
        return self.capacity_wh / self.nominal_v


def cell_ocv(soc: float) -> float:
    """Return the open-circuit voltage of one cell at state of charge ``soc`` (clamped to 0..1)."""
    s = min(1.0, max(0.0, soc))
    i = bisect.bisect_right(OCV_SOC, s)
    if i >= len(OCV_SOC):
        return OCV_V[-1]
    if i == 0:
        return OCV_V[0]
    s0, s1 = OCV_SOC[i - 1], OCV_SOC[i]
    v0, v1 = OCV_V[i - 1], OCV_V[i]
    return v0 + (v1 - v0) * (s - s0) / (s1 - s0)


def internal_resistance(spec: BatterySpec, soc: float, factor: float = 1.0) -> float:
    """Return the pack resistance in ohms at ``soc``, times ``factor`` (a sag fault raises it)."""
    s = min(1.0, max(0.0, soc))
    rise = 1.0 + (RESISTANCE_RISE_AT_EMPTY - 1.0) * max(0.0, 0.2 - s) / 0.2
    return spec.internal_resistance_ohm * rise * factor


def terminal(
    spec: BatterySpec, soc: float, power_w: float, resistance_factor: float = 1.0
) -> tuple[float, float]:
    """Return (voltage_v, current_a) of the pack delivering ``power_w`` at ``soc``.

    Solves ``P = V * I`` with ``V = OCV - I * R`` (the physical, lower-current root). If the
    load exceeds what the pack can deliver, returns the maximum-power point (V = OCV / 2).
    """
    ocv = cell_ocv(soc) * spec.cells
    r = internal_resistance(spec, soc, resistance_factor)
    p = max(0.0, power_w)
    if p == 0.0:
        return ocv, 0.0
    disc = ocv * ocv - 4.0 * r * p
    if disc <= 0.0:
        current = ocv / (2.0 * r)
        return ocv / 2.0, current
    current = (ocv - disc**0.5) / (2.0 * r)
    return ocv - current * r, current


def drain(remaining_wh: float, power_w: float, dt_s: float) -> float:
    """Return the energy left after delivering ``power_w`` for ``dt_s`` seconds (never below 0)."""
    return max(0.0, remaining_wh - max(0.0, power_w) * dt_s / SECONDS_PER_HOUR)


def remaining_percent(spec: BatterySpec, remaining_wh: float) -> int:
    """Return the state of charge as MAVLink ``battery_remaining`` (0..100)."""
    return max(0, min(100, round(100.0 * remaining_wh / spec.capacity_wh)))


def endurance_s(remaining_wh: float, power_w: float) -> float:
    """Return how long ``remaining_wh`` lasts at a constant ``power_w`` (inf for no load)."""
    if power_w <= 0.0:
        return float("inf")
    return remaining_wh / power_w * SECONDS_PER_HOUR
