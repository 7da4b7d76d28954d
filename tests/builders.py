"""A small fleet and a short flight over it, as plain data, for the dashboard tests.

The same fleet and flight feed a real lab (:func:`register_fleet`, :func:`fly`: integration and
browser tests) and a :class:`~tests.fake_source.FakeSource` (its ``register_fleet`` and ``fly``:
the dashboard's unit tests), so what a view shows of one can be compared with the other.

Anything with the lab's ``register_org``, ``register_entity`` and ``publish_telemetry`` methods
can be loaded: :func:`register_fleet` and :func:`publish_flight` do not care which.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

Fleet = tuple[tuple[str, str, str, str], ...]
"""(org_id, entity_id, entity_type, name) per entity."""

FLEET: Fleet = (
    ("org-a", "uav-1", "aircraft_multirotor", "Hawk 1"),
    ("org-a", "uav-2", "aircraft_multirotor", "Hawk 2"),
    ("org-b", "ugv-1", "ground_vehicle_wheeled", "Mule"),
)
ORGS = {"org-a": "Alpha", "org-b": "Bravo"}
BASE_LAT, BASE_LON = 32.94881, -96.80132  # Overwatch's golden position (deg)

Message = tuple[str, str, str, dict[str, Any], float]
"""(org_id, entity_id, message_type, data in raw MAVLink units, timestamp in epoch seconds)."""


class Loadable(Protocol):
    """What :func:`register_fleet` and :func:`publish_flight` need: a Lab or a FakeSource."""

    def register_org(self, org_id: str, name: str | None = None) -> Any: ...

    def register_entity(
        self, org_id: str, entity_id: str, entity_type: str, *, name: str | None = None
    ) -> Any: ...

    def publish_telemetry(
        self, org_id: str, entity_id: str, message_type: str, data: dict[str, Any], *, timestamp: float
    ) -> Any: ...


def entity_ids(fleet: Fleet = FLEET) -> list[str]:
    """The fleet's entity ids, sorted (the order of the fleet table)."""
    return sorted(e for _, e, _, _ in fleet)


def position(lat: float, lon: float, alt_m: float = 152.4, vx_mps: float = 1.0, vy_mps: float = 0.0) -> dict:
    """GLOBAL_POSITION_INT data in raw MAVLink units."""
    return {
        "lat": round(lat * 1e7),
        "lon": round(lon * 1e7),
        "alt": round(alt_m * 1000),
        "relative_alt": round((alt_m - 122.0) * 1000),
        "vx": round(vx_mps * 100),
        "vy": round(vy_mps * 100),
        "vz": 0,
        "hdg": 0,
    }


def flight(steps: int = 3, *, t0: float | None = None, fleet: Fleet = FLEET) -> list[Message]:
    """``steps`` positions per entity, then one VFR_HUD, SYS_STATUS and HEARTBEAT each.

    Entity ``i`` of the fleet flies at ``BASE_LAT + 0.001·i + 0.0001·step``, ``BASE_LON +
    0.001·step``, 150 m + step; its last messages say groundspeed ``4 + i`` m/s, heading 90°,
    battery ``80 - 10·i`` %, mode GUIDED (custom_mode 4), armed.
    """
    t0 = time.time() - steps if t0 is None else t0
    out: list[Message] = []
    for i, (org_id, entity_id, _, _) in enumerate(fleet):
        for step in range(steps):
            data = position(BASE_LAT + 0.001 * i + 0.0001 * step, BASE_LON + 0.001 * step, 150.0 + step)
            out.append((org_id, entity_id, "GLOBAL_POSITION_INT", data, t0 + step))
        last = t0 + steps
        vfr = {
            "groundspeed": 4.0 + i,
            "airspeed": 4.5,
            "heading": 90,
            "throttle": 40,
            "alt": 150.0,
            "climb": 0.5,
        }
        status = {"battery_remaining": 80 - 10 * i, "voltage_battery": 12000, "current_battery": 500}
        heartbeat = {"custom_mode": 4, "base_mode": 129, "type": 2, "autopilot": 3, "system_status": 4}
        out.append((org_id, entity_id, "VFR_HUD", vfr, last))
        out.append((org_id, entity_id, "SYS_STATUS", status, last))
        out.append((org_id, entity_id, "HEARTBEAT", heartbeat, last))
    return out


def register_fleet(target: Loadable, fleet: Fleet = FLEET) -> None:
    """Register the organisations and entities of ``fleet``."""
    for org_id in sorted({f[0] for f in fleet}):
        target.register_org(org_id, ORGS.get(org_id, org_id))
    for org_id, entity_id, entity_type, name in fleet:
        target.register_entity(org_id, entity_id, entity_type, name=name)


def publish_flight(target: Loadable, messages: list[Message]) -> int:
    """Publish every message of a :func:`flight`; returns how many."""
    for org_id, entity_id, message_type, data, ts in messages:
        target.publish_telemetry(org_id, entity_id, message_type, data, timestamp=ts)
    return len(messages)


def fly(lab: Any, steps: int = 3, *, t0: float | None = None, fleet: Fleet = FLEET) -> int:
    """Publish a :func:`flight` into a real lab and wait until its store holds every message.

    Returns the number of telemetry rows the store then holds.
    """
    before = lab.frames.telemetry().shape[0]
    sent = publish_flight(lab, flight(steps, t0=t0, fleet=fleet))
    lab.wait_for(lambda: lab.frames.telemetry().shape[0] >= before + sent, what=f"{sent} telemetry rows")
    return before + sent
