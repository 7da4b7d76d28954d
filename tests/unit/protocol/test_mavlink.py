"""MAVLink projections: every supported type, unit conversions, range checks, history columns."""

from __future__ import annotations

import pytest

from overwatch_lab.errors import EnvelopeError
from overwatch_lab.protocol import mavlink as m

TS = "2026-11-27T10:00:00.000000Z"


def sets(message_type: str, data: dict) -> dict:
    p = m.project(message_type, data, TS)
    assert p.skipped == (), p.skipped
    return p.sets


def test_message_ids():
    assert m.MESSAGE_IDS == {
        "HEARTBEAT": 0,
        "SYS_STATUS": 1,
        "GPS_RAW_INT": 24,
        "SCALED_PRESSURE": 29,
        "ATTITUDE": 30,
        "ATTITUDE_QUATERNION": 31,
        "LOCAL_POSITION_NED": 32,
        "GLOBAL_POSITION_INT": 33,
        "SERVO_OUTPUT_RAW": 36,
        "MISSION_CURRENT": 42,
        "VFR_HUD": 74,
        "ALTITUDE": 141,
        "BATTERY_STATUS": 147,
        "EXTENDED_SYS_STATE": 245,
    }


@pytest.mark.parametrize(
    ("number", "name"),
    [
        (0, "STABILIZE"),
        (3, "AUTO"),
        (4, "GUIDED"),
        (6, "RTL"),
        (9, "LAND"),
        (16, "POSHOLD"),
        (27, "AUTO_RTL"),
    ],
)
def test_mode_table(number, name):
    assert m.mode_name(number) == name
    assert m.MODE_NUMBERS[name] == number


def test_mode_table_gaps_and_unknown():
    assert m.mode_name(8) == "UNKNOWN_8"
    assert m.mode_name(10) == "UNKNOWN_10"
    assert m.mode_name(12) == "UNKNOWN_12"
    assert m.mode_name(99) == "UNKNOWN_99"
    assert len(m.MODE_NAMES) == len(m.MODE_NUMBERS) == 25


def test_unknown_message_type_is_an_error():
    with pytest.raises(EnvelopeError, match=r"unknown message_type 'FOO'; supported: .*GLOBAL_POSITION_INT"):
        m.project("FOO", {}, TS)


def test_golden_global_position_int():
    s = sets(
        "GLOBAL_POSITION_INT",
        {
            "time_boot_ms": 1000,
            "lat": 329488100,
            "lon": -968013200,
            "alt": 152400,
            "relative_alt": 30480,
            "hdg": 9000,
            "vx": 123,
            "vy": -45,
            "vz": 6,
        },
    )
    assert s == {
        ("position", "global", "latitude"): 32.94881,
        ("position", "global", "longitude"): -96.80132,
        ("position", "global", "altitude_msl"): 152.4,
        ("position", "global", "altitude_relative"): 30.48,
        ("position", "global", "timestamp"): TS,
        ("position", "local", "vx"): 1.23,
        ("position", "local", "vy"): -0.45,
        ("position", "local", "vz"): 0.06,
        ("position", "local", "timestamp"): TS,
    }  # local x/y/z untouched, hdg ignored


def test_heartbeat():
    s = sets(
        "HEARTBEAT",
        {
            "custom_mode": 4,
            "base_mode": 128 | 81,
            "autopilot": 3,
            "system_status": 4,
            "type": 2,
            "mavlink_version": 3,
        },
    )
    assert s == {
        ("vehicle_status", "custom_mode"): 4,
        ("vehicle_status", "mode"): "GUIDED",
        ("vehicle_status", "armed"): True,
        ("vehicle_status", "autopilot"): 3,
        ("vehicle_status", "system_status"): 4,
        ("vehicle_status", "vehicle_type"): 2,
        ("vehicle_status", "timestamp"): TS,
    }
    disarmed = sets("HEARTBEAT", {"base_mode": 81, "custom_mode": 42})
    assert disarmed[("vehicle_status", "armed")] is False
    assert disarmed[("vehicle_status", "mode")] == "UNKNOWN_42"


def test_sys_status_keeps_raw_units():
    s = sets(
        "SYS_STATUS",
        {
            "load": 250,
            "onboard_control_sensors_enabled": 0xFFFFFFFF,
            "onboard_control_sensors_health": 123,
            "voltage_battery": 12600,
            "current_battery": -1,
            "battery_remaining": -1,
        },
    )
    assert s[("vehicle_status", "load")] == 250
    assert s[("vehicle_status", "sensors_enabled")] == 0xFFFFFFFF
    assert s[("vehicle_status", "sensors_health")] == 123
    assert s[("power", "voltage")] == 12600
    assert s[("power", "current")] == -1
    assert s[("power", "battery_remaining")] == -1
    assert s[("power", "timestamp")] == s[("vehicle_status", "timestamp")] == TS


def test_sys_status_battery_remaining_range():
    p = m.project("SYS_STATUS", {"battery_remaining": 101, "voltage_battery": 70000}, TS)
    assert p.sets == {}
    assert sorted(p.skipped) == [
        "SYS_STATUS.battery_remaining: 101 out of -1..100 range",
        "SYS_STATUS.voltage_battery: 70000 out of uint16 range",
    ]


def test_gps_raw_int():
    s = sets(
        "GPS_RAW_INT",
        {
            "lat": -337654321,
            "lon": 1512345678,
            "alt": -5500,
            "eph": 121,
            "epv": 250,
            "satellites_visible": 14,
            "fix_type": 3,
        },
    )
    assert s == {
        ("position", "global", "latitude"): -33.7654321,
        ("position", "global", "longitude"): 151.2345678,
        ("position", "global", "altitude_msl"): -5.5,
        ("position", "global", "accuracy_h"): 1.21,
        ("position", "global", "accuracy_v"): 2.5,
        ("position", "global", "satellites_visible"): 14,
        ("position", "global", "fix_type"): 3,
        ("position", "global", "timestamp"): TS,
    }


def test_attitude_and_quaternion():
    euler = {"roll": 0.1, "pitch": -0.2, "yaw": 3.1, "rollspeed": 0, "pitchspeed": 0.01, "yawspeed": -0.5}
    s = sets("ATTITUDE", {**euler, "time_boot_ms": 5})
    assert {k[-1]: v for k, v in s.items()} == {**euler, "rollspeed": 0.0, "timestamp": TS}
    assert all(k[:2] == ("attitude", "euler") for k in s)
    assert type(s[("attitude", "euler", "rollspeed")]) is float
    quat = {"q1": 1.0, "q2": 0.0, "q3": 0.0, "q4": 0.0, "rollspeed": 0.1, "pitchspeed": 0.2, "yawspeed": 0.3}
    s = sets("ATTITUDE_QUATERNION", quat)
    assert {k[-1]: v for k, v in s.items()} == {**quat, "timestamp": TS}
    assert all(k[:2] == ("attitude", "quaternion") for k in s)


def test_local_position_ned_as_sent():
    s = sets("LOCAL_POSITION_NED", {"x": 1.5, "y": -2, "z": -10.25, "vx": 0.5, "vy": 0.0, "vz": -0.1})
    assert s == {
        ("position", "local", "x"): 1.5,
        ("position", "local", "y"): -2.0,
        ("position", "local", "z"): -10.25,
        ("position", "local", "vx"): 0.5,
        ("position", "local", "vy"): 0.0,
        ("position", "local", "vz"): -0.1,
        ("position", "local", "timestamp"): TS,
    }


def test_altitude():
    s = sets(
        "ALTITUDE",
        {"altitude_amsl": 152.4, "altitude_relative": 30.5, "altitude_terrain": 28.0, "altitude_local": 3},
    )
    assert s == {
        ("position", "global", "altitude_msl"): 152.4,
        ("position", "global", "altitude_relative"): 30.5,
        ("position", "global", "altitude_terrain"): 28.0,
        ("position", "global", "timestamp"): TS,
    }


def test_vfr_hud():
    s = sets(
        "VFR_HUD",
        {"airspeed": 12.5, "groundspeed": 11.9, "heading": 360, "throttle": 100, "alt": 120.4, "climb": -0.3},
    )
    assert s == {
        ("vfr", "airspeed"): 12.5,
        ("vfr", "groundspeed"): 11.9,
        ("vfr", "heading"): 360,
        ("vfr", "throttle"): 100,
        ("vfr", "altitude"): 120.4,
        ("vfr", "climb_rate"): -0.3,
        ("vfr", "timestamp"): TS,
    }


@pytest.mark.parametrize(
    ("field", "value"), [("heading", 361), ("heading", -1), ("throttle", 101), ("throttle", -1)]
)
def test_vfr_hud_ranges(field, value):
    p = m.project("VFR_HUD", {field: value, "airspeed": 1.0}, TS)
    assert p.sets == {("vfr", "airspeed"): 1.0, ("vfr", "timestamp"): TS}
    assert len(p.skipped) == 1 and f"VFR_HUD.{field}" in p.skipped[0]


def test_mission_current():
    assert sets("MISSION_CURRENT", {"seq": 3, "total": 12}) == {
        ("mission", "current_waypoint"): 3,
        ("mission", "total_waypoints"): 12,
        ("mission", "timestamp"): TS,
    }
    assert ("mission", "total_waypoints") not in sets("MISSION_CURRENT", {"seq": 3})


def test_battery_status():
    s = sets(
        "BATTERY_STATUS",
        {
            "battery_remaining": 76,
            "current_battery": 1234,
            "current_consumed": 850,
            "energy_consumed": -1,
            "temperature": 2500,
            "voltages": [4100, 4120, 4090, 65535, 65535, 65535, 65535, 65535, 65535, 65535],
        },
    )
    assert s == {
        ("power", "battery_remaining"): 76,
        ("power", "current"): 12.34,
        ("power", "consumed"): 850,
        ("power", "energy_consumed"): -1,
        ("power", "temperature"): 2500,
        ("power", "cells"): [4100, 4120, 4090],
        ("power", "timestamp"): TS,
    }


def test_battery_status_cells_only_when_every_cell_is_valid():
    p = m.project("BATTERY_STATUS", {"battery_remaining": 50, "voltages": [4100, -5, 4100]}, TS)
    assert ("power", "cells") not in p.sets
    assert p.sets[("power", "battery_remaining")] == 50
    assert len(p.skipped) == 1 and "voltages" in p.skipped[0] and "voltages[1]" in p.skipped[0]
    p = m.project("BATTERY_STATUS", {"voltages": "4100"}, TS)
    assert p.sets == {} and "voltages" in p.skipped[0]
    assert sets("BATTERY_STATUS", {"voltages": [65535] * 10})[("power", "cells")] == []


def test_servo_output_raw():
    data = {f"servo{n}_raw": 1000 + n for n in range(1, 9)}
    assert sets("SERVO_OUTPUT_RAW", {**data, "port": 0}) == {
        ("actuators", "servos"): [1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008],
        ("actuators", "timestamp"): TS,
    }
    p = m.project("SERVO_OUTPUT_RAW", {"servo1_raw": 1500, "servo3_raw": 70000}, TS)
    assert p.sets[("actuators", "servos")] == [1500, None, None, None, None, None, None, None]
    assert len(p.skipped) == 1 and "servo3_raw" in p.skipped[0]
    assert m.project("SERVO_OUTPUT_RAW", {"port": 0}, TS).sets == {}


def test_scaled_pressure():
    assert sets("SCALED_PRESSURE", {"press_abs": 1013.25, "press_diff": 0.5, "temperature": 2150}) == {
        ("environment", "pressure_abs"): 1013.25,
        ("environment", "pressure_diff"): 0.5,
        ("environment", "temperature"): 2150,
        ("environment", "timestamp"): TS,
    }


def test_extended_sys_state():
    assert sets("EXTENDED_SYS_STATE", {"vtol_state": 0, "landed_state": 2}) == {
        ("vehicle_status", "vtol_state"): 0,
        ("vehicle_status", "landed_state"): 2,
        ("vehicle_status", "timestamp"): TS,
    }


@pytest.mark.parametrize("message_type", sorted(m.MESSAGE_IDS))
def test_empty_data_sets_nothing(message_type):
    p = m.project(message_type, {}, TS)
    assert p.sets == {} and p.skipped == ()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (3_500_000_000, "out of"),
        (-3_500_000_000, "out of"),
        (900_000_001, "out of"),  # inside int32 but past 90°
        (True, "expected an integer"),
        (32.5, "expected an integer"),
        ("329488100", "expected an integer"),
        (None, "expected an integer"),
        ([1], "expected an integer"),
        (float("nan"), "expected an integer"),
    ],
)
def test_invalid_integer_fields_are_skipped_not_raised(value, reason):
    p = m.project("GLOBAL_POSITION_INT", {"lat": value, "lon": -968013200}, TS)
    assert ("position", "global", "latitude") not in p.sets
    assert p.sets[("position", "global", "longitude")] == -96.80132
    assert len(p.skipped) == 1
    assert p.skipped[0].startswith("GLOBAL_POSITION_INT.lat: ") and reason in p.skipped[0]


def test_skip_reason_for_int32_overflow_names_the_type():
    p = m.project("GPS_RAW_INT", {"alt": 3_500_000_000}, TS)
    assert p.skipped == ("GPS_RAW_INT.alt: 3500000000 out of int32 range",)


def test_integral_floats_count_as_integers():
    s = sets("GLOBAL_POSITION_INT", {"lat": 329488100.0, "vx": -45.0})
    assert s[("position", "global", "latitude")] == 32.94881
    assert s[("position", "local", "vx")] == -0.45


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("vx", 32768),
        ("vx", -32769),
        ("relative_alt", 2**31),
        ("alt", -(2**31) - 1),
        ("lon", 1_800_000_001),
    ],
)
def test_integer_ranges_by_mavlink_type(field, value):
    p = m.project("GLOBAL_POSITION_INT", {field: value}, TS)
    assert p.sets == {} and len(p.skipped) == 1


def test_integer_range_edges_are_accepted():
    s = sets("GLOBAL_POSITION_INT", {"vx": 32767, "vy": -32768, "alt": 2**31 - 1, "lat": 900_000_000})
    assert s[("position", "local", "vx")] == 327.67
    assert s[("position", "local", "vy")] == -327.68
    assert s[("position", "global", "latitude")] == 90.0
    assert sets("HEARTBEAT", {"custom_mode": 2**32 - 1})[("vehicle_status", "mode")] == f"UNKNOWN_{2**32 - 1}"
    p = m.project("HEARTBEAT", {"custom_mode": 2**32}, TS)
    assert p.sets == {} and "uint32" in p.skipped[0]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), True, "1.0", None, 10**400, {}])
def test_invalid_float_fields_are_skipped(value):
    p = m.project("ATTITUDE", {"roll": value, "pitch": 0.5}, TS)
    assert p.sets == {("attitude", "euler", "pitch"): 0.5, ("attitude", "euler", "timestamp"): TS}
    assert len(p.skipped) == 1 and p.skipped[0].startswith("ATTITUDE.roll: ")


def test_subtree_timestamp_only_when_something_is_set():
    p = m.project("SYS_STATUS", {"load": 10, "voltage_battery": -1}, TS)
    assert ("vehicle_status", "timestamp") in p.sets
    assert ("power", "timestamp") not in p.sets
    assert ("power", "voltage") not in p.sets


def test_projection_is_frozen():
    p = m.project("HEARTBEAT", {}, TS)
    with pytest.raises(AttributeError):
        p.sets = {}  # type: ignore[misc]


def test_history_values():
    p = m.project(
        "GLOBAL_POSITION_INT",
        {"lat": 329488100, "lon": -968013200, "alt": 152400, "relative_alt": 30480, "vx": 1},
        TS,
    )
    assert m.history_values(p) == {
        "latitude": 32.94881,
        "longitude": -96.80132,
        "altitude_msl": 152.4,
        "altitude_relative": 30.48,
        "vx": 0.01,
    }
    hb = m.project("HEARTBEAT", {"custom_mode": 6, "base_mode": 128, "autopilot": 3}, TS)
    assert m.history_values(hb) == {"armed": True, "mode": "RTL"}
    vfr = m.project(
        "VFR_HUD", {"heading": 90, "groundspeed": 5.0, "airspeed": 6.0, "climb": 1.0, "throttle": 40}, TS
    )
    assert m.history_values(vfr) == {"heading": 90, "groundspeed": 5.0, "airspeed": 6.0, "climb_rate": 1.0}
    att = m.project("ATTITUDE", {"roll": 0.1, "pitch": 0.2, "yaw": 0.3, "rollspeed": 1.0}, TS)
    assert m.history_values(att) == {"roll": 0.1, "pitch": 0.2, "yaw": 0.3}
    sys = m.project(
        "SYS_STATUS", {"voltage_battery": 12600, "current_battery": 150, "battery_remaining": 80}, TS
    )
    assert m.history_values(sys) == {"voltage": 12600, "current": 150, "battery_remaining": 80}
    assert m.history_values(m.project("SCALED_PRESSURE", {"press_abs": 1.0}, TS)) == {}
    assert set(m.history_values(p)) <= set(m.HISTORY_COLUMNS)
    assert len(m.HISTORY_COLUMNS) == 19


def test_history_row_values_are_history_values_in_column_order():
    cases = [
        ("GLOBAL_POSITION_INT", {"lat": 329488100, "lon": -968013200, "alt": 152400, "vx": 1, "vz": -3}),
        ("HEARTBEAT", {"custom_mode": 6, "base_mode": 128}),
        ("VFR_HUD", {"heading": 90, "groundspeed": 5.0, "airspeed": 6.0, "climb": 1.0}),
        ("SYS_STATUS", {"voltage_battery": 12600, "current_battery": 150, "battery_remaining": 80}),
        ("BATTERY_STATUS", {"current_battery": 250, "battery_remaining": 50}),
        ("SCALED_PRESSURE", {"press_abs": 1.0}),
    ]
    for message_type, data in cases:
        p = m.project(message_type, data, TS)
        hv = m.history_values(p)
        assert m.history_row_values(p) == [hv.get(c) for c in m.HISTORY_COLUMNS], message_type
    assert m.history_row_values(m.project("SCALED_PRESSURE", {}, TS)) == [None] * 19
