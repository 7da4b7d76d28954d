"""A small fleet registered and flown through a real lab, for the dashboard tests."""

from __future__ import annotations

import time
from typing import Any

from overwatch_lab import Lab

FLEET: tuple[tuple[str, str, str, str], ...] = (
    # org_id, entity_id, entity_type, name
    ("org-a", "uav-1", "aircraft_multirotor", "Hawk 1"),
    ("org-a", "uav-2", "aircraft_multirotor", "Hawk 2"),
    ("org-b", "ugv-1", "ground_vehicle_wheeled", "Mule"),
)
ORGS = {"org-a": "Alpha", "org-b": "Bravo"}
BASE_LAT, BASE_LON = 32.94881, -96.80132  # Overwatch's golden position (deg)


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


def register_fleet(lab: Lab, fleet: tuple[tuple[str, str, str, str], ...] = FLEET) -> None:
    """Register the organisations and entities of ``fleet``."""
    for org_id in sorted({f[0] for f in fleet}):
        lab.register_org(org_id, ORGS.get(org_id, org_id))
    for org_id, entity_id, entity_type, name in fleet:
        lab.register_entity(org_id, entity_id, entity_type, name=name)


def fly(lab: Lab, steps: int = 3, *, t0: float | None = None, fleet: tuple = FLEET) -> int:
    """Publish ``steps`` positions per entity plus one VFR_HUD, SYS_STATUS and HEARTBEAT each.

    Waits until the store holds every message; returns the number of telemetry rows expected.
    """
    t0 = time.time() - steps if t0 is None else t0
    before = lab.telemetry_frame().shape[0]
    sent = 0
    for i, (org_id, entity_id, _, _) in enumerate(fleet):
        for step in range(steps):
            data = position(BASE_LAT + 0.001 * i + 0.0001 * step, BASE_LON + 0.001 * step, 150.0 + step)
            lab.publish_telemetry(org_id, entity_id, "GLOBAL_POSITION_INT", data, timestamp=t0 + step)
            sent += 1
        last = t0 + steps
        vfr = {
            "groundspeed": 4.0 + i,
            "airspeed": 4.5,
            "heading": 90,
            "throttle": 40,
            "alt": 150.0,
            "climb": 0.5,
        }
        lab.publish_telemetry(org_id, entity_id, "VFR_HUD", vfr, timestamp=last)
        status = {"battery_remaining": 80 - 10 * i, "voltage_battery": 12000, "current_battery": 500}
        lab.publish_telemetry(org_id, entity_id, "SYS_STATUS", status, timestamp=last)
        heartbeat = {"custom_mode": 4, "base_mode": 129, "type": 2, "autopilot": 3, "system_status": 4}
        lab.publish_telemetry(org_id, entity_id, "HEARTBEAT", heartbeat, timestamp=last)
        sent += 3
    lab.wait_for(lambda: lab.telemetry_frame().shape[0] >= before + sent, what=f"{sent} telemetry rows")
    return before + sent


def wait_until(predicate: Any, *, timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until truthy (returned), failing the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {value!r})")
        time.sleep(0.02)
