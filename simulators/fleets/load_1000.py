"""Load fleet: 1,000 devices at the default telemetry rates (~20,500 messages/s), for load tests.

Four organisations over a 20 x 20 km area: 600 multirotors orbiting in groups, 200 fixed wings
on wide orbits, 100 ground vehicles and 50 USVs patrolling, and 50 sensor masts. No faults: the
point is steady load. Run it in worker processes (``--processes 2``) so it keeps real time.
"""

from __future__ import annotations

from typing import Any

from simulators.scenario import Scenario

NAME = "load-1000"  # scenario name (load_scenario accepts it)
SEED = 1000  # the one seed every random stream derives from
DURATION_S = 300.0  # s
CENTER = (34.05, -118.25)  # lat, lon (deg)
AREA_SIZE_M = 20_000.0  # m, square side
GROUND_ALT_M = 90.0  # m above mean sea level
MULTIROTORS = 600  # devices, orbiting in groups
FIXED_WINGS = 200  # devices, on wide orbits
GROUND_VEHICLES = 100  # devices, patrolling
USVS = 50  # devices, patrolling
SENSORS = 50  # devices, fixed masts
GROUPS = 4  # one organisation per group; each gets a quarter of every kind
ORBIT_RADIUS_M = 300.0  # m, multirotor orbits
FW_ORBIT_RADIUS_M = 1500.0  # m, fixed-wing orbits
SPACING_M = 40.0  # m between devices in a formation
MESSAGES_PER_DEVICE_S = 20.5  # messages/s at the default rates: 1 + 5 + 10 + 2 + 1 + 0.5 + 1


def data() -> dict[str, Any]:
    """Return the scenario as plain data (what a YAML file would hold)."""
    lat0, lon0 = CENTER
    step = 0.04  # deg between group anchors (~4 km)
    anchors = [
        (lat0 - step, lon0 - step),
        (lat0 - step, lon0 + step),
        (lat0 + step, lon0 - step),
        (lat0 + step, lon0 + step),
    ]
    fleets: list[dict[str, Any]] = []
    for g, (lat, lon) in enumerate(anchors):
        org = f"org-{g + 1}"
        fleets += [
            {
                "name": f"g{g + 1}-mr",
                "org": org,
                "kind": "multirotor",
                "count": MULTIROTORS // GROUPS,
                "at": [lat, lon],
                "formation": "random",
                "spacing_m": SPACING_M,
                "behaviour": {"type": "orbit", "center": [lat, lon], "radius_m": ORBIT_RADIUS_M},
            },
            {
                "name": f"g{g + 1}-fw",
                "org": org,
                "kind": "fixed_wing",
                "count": FIXED_WINGS // GROUPS,
                "at": [lat, lon],
                "formation": "circle",
                "spacing_m": SPACING_M * 3,
                "behaviour": {"type": "orbit", "center": [lat, lon], "radius_m": FW_ORBIT_RADIUS_M},
            },
            {
                "name": f"g{g + 1}-ugv",
                "org": org,
                "kind": "ground",
                "count": GROUND_VEHICLES // GROUPS,
                "at": [lat, lon],
                "formation": "grid",
                "spacing_m": SPACING_M,
                "behaviour": {
                    "type": "patrol",
                    "box": [lat - 0.01, lon - 0.01, lat + 0.01, lon + 0.01],
                    "spacing_m": 200,
                },
            },
            {
                "name": f"g{g + 1}-usv",
                "org": org,
                "kind": "usv",
                "count": USVS // GROUPS + (1 if g < USVS % GROUPS else 0),
                "at": [lat - 0.02, lon],
                "formation": "line",
                "spacing_m": SPACING_M * 2,
                "behaviour": {
                    "type": "patrol",
                    "box": [lat - 0.03, lon - 0.02, lat - 0.02, lon + 0.02],
                    "spacing_m": 300,
                },
            },
            {
                "name": f"g{g + 1}-mast",
                "org": org,
                "kind": "sensor",
                "count": SENSORS // GROUPS + (1 if g < SENSORS % GROUPS else 0),
                "at": [lat, lon],
                "formation": "circle",
                "spacing_m": 500,
            },
        ]
    return {
        "name": NAME,
        "description": __doc__.splitlines()[0],
        "seed": SEED,
        "duration_s": DURATION_S,
        "area": {"center": list(CENTER), "size_m": AREA_SIZE_M, "ground_alt_m": GROUND_ALT_M},
        "orgs": [
            {"org_id": f"org-{g + 1}", "name": f"Load Group {g + 1}", "org_type": "commercial"}
            for g in range(GROUPS)
        ],
        "fleets": fleets,
    }


def scaled(devices: int, **overrides: Any) -> Scenario:
    """Return the same mix scaled to ``devices`` devices (at least one per fleet kind group)."""
    d = data()
    total = sum(f["count"] for f in d["fleets"])
    counts = [max(1, round(f["count"] * devices / total)) for f in d["fleets"]]
    counts[0] += devices - sum(counts)  # the remainder goes to the first (multirotor) fleet
    if counts[0] < 1:
        raise ValueError(f"cannot scale the load fleet down to {devices} devices")
    for f, n in zip(d["fleets"], counts, strict=True):
        f["count"] = n
    d["name"] = f"load-{devices}"
    sc = Scenario.from_dict(d, source=d["name"])
    return sc.replace(**overrides) if overrides else sc


def scenario(**overrides: Any) -> Scenario:
    """Return the scenario; ``overrides`` replace fields (e.g. ``seed=2``, ``duration_s=60``)."""
    sc = Scenario.from_dict(data(), source=NAME)
    return sc.replace(**overrides) if overrides else sc
