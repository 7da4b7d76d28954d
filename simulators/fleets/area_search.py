"""Area search: a search-and-rescue sweep of a 4 x 3 km box by drones, VTOLs and boats.

Twelve multirotors sweep the land half in strips, two VTOLs sweep the whole box at height with
wide lanes, and three USVs search the water (the southern strip). The timeline stresses the
fabric the way a long search does: a drone's motor fails (forced landing), a VTOL's battery
sags, one boat's link is delayed and jittery, and a drone's GPS drops out for a minute.
"""

from __future__ import annotations

from typing import Any

from simulators.scenario import Scenario

NAME = "area-search"  # scenario name (load_scenario accepts it)
SEED = 11  # the one seed every random stream derives from
EXTRA_RATES_HZ = {"EXTENDED_SYS_STATE": 0.5}  # Hz, on top of the defaults: landed/VTOL state
DURATION_S = 1800.0  # s
BOX = (47.590, -122.380, 47.617, -122.327)  # south, west, north, east (deg): about 4 x 3 km
WATER_NORTH = 47.597  # deg: the USVs search south of this latitude
GROUND_ALT_M = 40.0  # m above mean sea level
DRONES = 12  # multirotors sweeping the land in strips
DRONE_ALT_M = 50.0  # m above ground
DRONE_LANE_M = 60.0  # m between sweep lines (camera swath)
VTOLS = 2  # VTOLs sweeping the whole box at height
VTOL_ALT_M = 120.0  # m above ground
VTOL_LANE_M = 250.0  # m between VTOL sweep lines
USVS = 3  # boats searching the water
USV_LANE_M = 150.0  # m between boat sweep lines
MOTOR_FAILURE_AT_S = 400.0  # s
BATTERY_SAG_AT_S = 600.0  # s
BATTERY_SAG_FOR_S = 300.0  # s
DELAY_AT_S = 200.0  # s
DELAY_FOR_S = 120.0  # s
DELAY_S = 2.0  # s of added latency
JITTER_S = 1.5  # s of random extra latency
GPS_DROPOUT_AT_S = 900.0  # s
GPS_DROPOUT_FOR_S = 60.0  # s


def data() -> dict[str, Any]:
    """Return the scenario as plain data (what a YAML file would hold)."""
    s, w, n, e = BOX
    base = [WATER_NORTH + 0.001, w + 0.002]
    return {
        "name": NAME,
        "description": __doc__.splitlines()[0],
        "seed": SEED,
        "duration_s": DURATION_S,
        "rates": EXTRA_RATES_HZ,
        "area": {"box": list(BOX), "ground_alt_m": GROUND_ALT_M},
        "orgs": [
            {"org_id": "sar-air", "name": "SAR Air Unit", "org_type": "civilian"},
            {"org_id": "sar-sea", "name": "SAR Marine Unit", "org_type": "ngo"},
        ],
        "fleets": [
            {
                "name": "drone",
                "org": "sar-air",
                "kind": "multirotor",
                "count": DRONES,
                "at": base,
                "formation": "grid",
                "spacing_m": 15,
                "alt_m": 0,
                "behaviour": {
                    "type": "patrol",
                    "box": [WATER_NORTH, w, n, e],
                    "spacing_m": DRONE_LANE_M,
                    "alt_m": DRONE_ALT_M,
                },
            },
            {
                "name": "vtol",
                "org": "sar-air",
                "kind": "vtol",
                "count": VTOLS,
                "at": base,
                "formation": "line",
                "spacing_m": 40,
                "alt_m": 0,
                "behaviour": {"type": "patrol", "spacing_m": VTOL_LANE_M, "alt_m": VTOL_ALT_M, "along": "ew"},
            },
            {
                "name": "usv",
                "org": "sar-sea",
                "kind": "usv",
                "count": USVS,
                "at": [s + 0.002, w + 0.004],
                "formation": "line",
                "spacing_m": 50,
                "behaviour": {"type": "patrol", "box": [s, w, WATER_NORTH, e], "spacing_m": USV_LANE_M},
            },
        ],
        "timeline": [
            {
                "at_s": MOTOR_FAILURE_AT_S,
                "fault": "motor_failure",
                "duration_s": 60,
                "targets": ["drone-004"],
            },
            {
                "at_s": BATTERY_SAG_AT_S,
                "fault": "battery_sag",
                "duration_s": BATTERY_SAG_FOR_S,
                "targets": ["vtol-001"],
                "params": {"resistance_factor": 6.0},
            },
            {
                "at_s": DELAY_AT_S,
                "fault": "telemetry_delay",
                "duration_s": DELAY_FOR_S,
                "targets": ["usv-000"],
                "params": {"delay_s": DELAY_S, "jitter_s": JITTER_S},
            },
            {
                "at_s": GPS_DROPOUT_AT_S,
                "fault": "gps_dropout",
                "duration_s": GPS_DROPOUT_FOR_S,
                "targets": ["drone-007"],
            },
        ],
    }


def scenario(**overrides: Any) -> Scenario:
    """Return the scenario; ``overrides`` replace fields (e.g. ``seed=2``, ``duration_s=60``)."""
    sc = Scenario.from_dict(data(), source=NAME)
    return sc.replace(**overrides) if overrides else sc
