"""Device kinds: one module per kind (its limits as a ``SPEC`` and its model class).

:data:`KINDS` maps the kind name used in scenarios to ``(model class, spec)``;
:func:`make_device` builds one. Shared parts: ``base.py`` (the device: state and one-tick
dynamics), ``spec.py`` (:class:`KindSpec`), ``gps.py`` (the GPS receiver) and
``command_handler.py`` (what a device does with a command, in the lab's vocabulary).
"""

from __future__ import annotations

from typing import Any

from overwatch_lab.errors import ScenarioError
from simulators.devices.base import Device
from simulators.devices.fixed_wing import SPEC as FIXED_WING_SPEC
from simulators.devices.fixed_wing import FixedWing
from simulators.devices.ground import SPEC as GROUND_SPEC
from simulators.devices.ground import GroundVehicle
from simulators.devices.multirotor import SPEC as MULTIROTOR_SPEC
from simulators.devices.multirotor import Multirotor
from simulators.devices.sensor import SPEC as SENSOR_SPEC
from simulators.devices.sensor import SensorPlatform
from simulators.devices.spec import KindSpec
from simulators.devices.usv import SPEC as USV_SPEC
from simulators.devices.usv import SurfaceVessel
from simulators.devices.vtol import SPEC as VTOL_SPEC
from simulators.devices.vtol import Vtol

KINDS: dict[str, tuple[type[Device], KindSpec]] = {
    "multirotor": (Multirotor, MULTIROTOR_SPEC),
    "fixed_wing": (FixedWing, FIXED_WING_SPEC),
    "vtol": (Vtol, VTOL_SPEC),
    "ground": (GroundVehicle, GROUND_SPEC),
    "usv": (SurfaceVessel, USV_SPEC),
    "sensor": (SensorPlatform, SENSOR_SPEC),
}


def make_device(kind: str, **kwargs: Any) -> Device:
    """Build a device of ``kind`` (a key of :data:`KINDS`); kwargs go to :class:`Device`.

    Raises:
        ScenarioError: unknown kind.
    """
    try:
        cls, spec = KINDS[kind]
    except KeyError:
        raise ScenarioError(f"kind {kind!r} is not one of {', '.join(KINDS)}") from None
    return cls(spec, **kwargs)


__all__ = ["KINDS", "Device", "KindSpec", "make_device"]
