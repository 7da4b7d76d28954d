"""A device's GPS receiver: fix quality by mode, noisy readings, and dead reckoning without a fix.

The receiver is ``ok`` (3-D fix, 8-18 satellites, eph 0.6-1.5 m), ``degraded`` (2-D fix, 4-6
satellites, eph 3-15 m, noisy positions) or in ``dropout`` (no fix: the last fix is repeated
and the autopilot's position estimate drifts away from the truth). Faults switch the mode
(``simulators.faults``). Every random draw comes from the device's own generator.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from simulators import kinematics as k

if TYPE_CHECKING:
    import numpy as np

DROPOUT_DRIFT_MPS = 0.4  # m/s: dead-reckoning drift of the position estimate without GPS
NO_ACCURACY = 65535  # MAVLink eph/epv "unknown"


class GpsReceiver:
    """The GPS of one device; positions in and out are degrees and metres above mean sea level.

    Args:
        rng: the device's random generator.
        lat, lon, alt_msl_m: where the device starts (its first fix).
    """

    __slots__ = (
        "_drift_dir_rad",
        "drift_e_m",
        "drift_n_m",
        "eph_cm",
        "epv_cm",
        "last_fix",
        "mode",
        "rng",
        "sats",
    )

    def __init__(self, rng: np.random.Generator, lat: float, lon: float, alt_msl_m: float) -> None:
        self.rng = rng
        self.mode = "ok"  # ok | degraded | dropout
        self.sats = int(rng.integers(10, 17))
        self.eph_cm = int(rng.integers(70, 130))
        self.epv_cm = int(self.eph_cm * 1.6)
        self.drift_n_m = 0.0
        self.drift_e_m = 0.0
        self._drift_dir_rad = 0.0
        self.last_fix = (lat, lon, alt_msl_m)

    def set_mode(self, mode: str, lat: float, lon: float, alt_msl_m: float) -> None:
        """Switch between ``ok``, ``degraded`` and ``dropout`` (the device is at lat, lon, alt now)."""
        if mode == self.mode:
            return
        if mode == "dropout":
            self._drift_dir_rad = float(self.rng.uniform(0.0, 2.0 * math.pi))
            self.last_fix = (lat, lon, alt_msl_m)
        else:
            self.drift_n_m = self.drift_e_m = 0.0
        self.mode = mode

    def drift(self, dt: float) -> None:
        """Let the position estimate drift for ``dt`` seconds (only without a fix)."""
        if self.mode == "dropout":
            step = DROPOUT_DRIFT_MPS * dt
            self.drift_n_m += step * math.cos(self._drift_dir_rad)
            self.drift_e_m += step * math.sin(self._drift_dir_rad)

    def estimate(self, lat: float, lon: float) -> tuple[float, float]:
        """Return the position the autopilot believes: the truth plus the dead-reckoning drift."""
        if self.drift_n_m == 0.0 and self.drift_e_m == 0.0:
            return lat, lon
        return k.offset(lat, lon, self.drift_n_m, self.drift_e_m)

    def sample(
        self, lat: float, lon: float, alt_msl_m: float
    ) -> tuple[int, float, float, float, int, int, int]:
        """Draw one GPS_RAW_INT reading of the true position: (fix_type, lat, lon, alt_msl_m, eph_cm,
        epv_cm, satellites)."""
        rng = self.rng
        if self.mode == "dropout":
            lat, lon, alt = self.last_fix
            return 1, lat, lon, alt, NO_ACCURACY, NO_ACCURACY, int(rng.integers(0, 4))
        if self.mode == "degraded":
            sats = int(rng.integers(4, 7))
            eph = int(rng.integers(300, 1500))
            noise = eph / 100.0 / 2.0
        else:
            self.sats = int(min(18, max(8, self.sats + int(rng.integers(-1, 2)))))
            self.eph_cm = int(min(150, max(60, self.eph_cm + int(rng.integers(-8, 9)))))
            sats, eph = self.sats, self.eph_cm
            noise = eph / 100.0 / 4.0
        dn, de, du = rng.normal(0.0, noise, 3)
        lat, lon = k.offset(lat, lon, float(dn), float(de))
        alt = alt_msl_m + 1.5 * float(du)
        fix = 2 if self.mode == "degraded" else 3
        self.last_fix = (lat, lon, alt)
        return fix, lat, lon, alt, eph, int(eph * 1.6), sats
