"""Small ISR patrol: a handful of mixed devices guarding a 2 km square, ten minutes.

Four multirotors sweep the square in strips, a fixed wing circles overhead, a VTOL flies a
route, a ground vehicle drives the perimeter and a sensor mast watches the centre. The timeline
exercises the usual troubles: one drone loses its link for 20 s, another's GPS degrades, the
fixed wing's telemetry computer reboots, and at the end one drone is recalled.
"""

from __future__ import annotations

from typing import Any

from simulators.scenario import Scenario

NAME = "small-isr-patrol"  # scenario name (load_scenario accepts it)
SEED = 7  # the one seed every random stream derives from
EXTRA_RATES_HZ = {"EXTENDED_SYS_STATE": 0.5}  # Hz, on top of the defaults: landed/VTOL state
DURATION_S = 600.0  # s
CENTER = (32.9488, -96.8013)  # lat, lon (deg)
AREA_SIZE_M = 2000.0  # m, square side
GROUND_ALT_M = 180.0  # m above mean sea level
DRONES = 4  # multirotors sweeping the area
DRONE_ALT_M = 60.0  # m above ground
SWEEP_SPACING_M = 100.0  # m between sweep lines
ORBIT_RADIUS_M = 600.0  # m, fixed-wing overwatch orbit
ORBIT_ALT_M = 150.0  # m above ground
UGV_SPEED_MPS = 4.0  # m/s
LINK_LOSS_AT_S = 60.0  # s
LINK_LOSS_FOR_S = 20.0  # s
GPS_DEGRADED_AT_S = 120.0  # s
GPS_DEGRADED_FOR_S = 45.0  # s
REBOOT_AT_S = 200.0  # s
REBOOT_FOR_S = 8.0  # s, time the telemetry computer is down
RECALL_AT_S = 540.0  # s, one drone returns to launch


def _perimeter(inset_deg: float = 0.006) -> list[list[float]]:
    lat, lon = CENTER
    return [
        [lat - inset_deg, lon - inset_deg],
        [lat - inset_deg, lon + inset_deg],
        [lat + inset_deg, lon + inset_deg],
        [lat + inset_deg, lon - inset_deg],
    ]


def data() -> dict[str, Any]:
    """Return the scenario as plain data (what a YAML file would hold)."""
    lat, lon = CENTER
    return {
        "name": NAME,
        "description": __doc__.splitlines()[0],
        "seed": SEED,
        "duration_s": DURATION_S,
        "rates": EXTRA_RATES_HZ,
        "area": {"center": list(CENTER), "size_m": AREA_SIZE_M, "ground_alt_m": GROUND_ALT_M},
        "orgs": [{"org_id": "blue-isr", "name": "Blue ISR Detachment", "org_type": "military"}],
        "routes": {
            "perimeter": {"waypoints": _perimeter(), "loop": True},
            "survey": {
                "waypoints": [[lat + 0.004, lon - 0.008, 80], [lat - 0.004, lon + 0.008, 80]],
                "loop": True,
            },
        },
        "fleets": [
            {
                "name": "drone",
                "org": "blue-isr",
                "kind": "multirotor",
                "count": DRONES,
                "formation": "line",
                "spacing_m": 30,
                "alt_m": 0,
                "behaviour": {"type": "patrol", "spacing_m": SWEEP_SPACING_M, "alt_m": DRONE_ALT_M},
            },
            {
                "name": "overwatch",
                "org": "blue-isr",
                "kind": "fixed_wing",
                "count": 1,
                "alt_m": ORBIT_ALT_M,
                "behaviour": {"type": "orbit", "radius_m": ORBIT_RADIUS_M, "alt_m": ORBIT_ALT_M},
            },
            {
                "name": "vtol",
                "org": "blue-isr",
                "kind": "vtol",
                "count": 1,
                "at": [lat - 0.002, lon - 0.002],
                "behaviour": {"type": "route", "route": "survey"},
            },
            {
                "name": "ugv",
                "org": "blue-isr",
                "kind": "ground",
                "count": 1,
                "at": [lat - 0.006, lon - 0.0062],
                "speed_mps": UGV_SPEED_MPS,
                "behaviour": {"type": "route", "route": "perimeter"},
            },
            {"name": "mast", "org": "blue-isr", "kind": "sensor", "count": 1, "behaviour": "hold"},
        ],
        "timeline": [
            {
                "at_s": LINK_LOSS_AT_S,
                "fault": "link_loss",
                "duration_s": LINK_LOSS_FOR_S,
                "targets": ["drone-001"],
            },
            {
                "at_s": GPS_DEGRADED_AT_S,
                "fault": "gps_degraded",
                "duration_s": GPS_DEGRADED_FOR_S,
                "targets": ["drone-002"],
            },
            {
                "at_s": REBOOT_AT_S,
                "fault": "reboot",
                "duration_s": REBOOT_FOR_S,
                "targets": ["overwatch-000"],
            },
            {"at_s": RECALL_AT_S, "command": "rtl", "targets": ["drone-003"]},
        ],
    }


def scenario(**overrides: Any) -> Scenario:
    """Return the scenario; ``overrides`` replace fields (e.g. ``seed=2``, ``duration_s=60``)."""
    sc = Scenario.from_dict(data(), source=NAME)
    return sc.replace(**overrides) if overrides else sc
