"""Faults in the pure model: what each one does to the messages a device sends."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest

from overwatch_lab.errors import ProtocolError, ScenarioError
from overwatch_lab.protocol.envelopes import decode_telemetry, parse_timestamp
from overwatch_lab.protocol.mavlink import project
from overwatch_lab.protocol.subjects import parse_telemetry_subject
from simulators.faults import TIMELINE_COLUMNS, Fault, FaultKind
from simulators.malformed import MALFORMED_VARIANTS, malformed
from simulators.model import FleetModel
from simulators.scenario import Scenario

TARGET = "uav-001"


def scenario(*timeline: dict[str, Any], count: int = 2, kind: str = "multirotor") -> Scenario:
    return Scenario.from_dict(
        {
            "name": "faults",
            "seed": 4,
            "area": {"center": [47.6, -122.33], "size_m": 1000, "ground_alt_m": 10},
            "fleets": [{"name": "uav", "org": "blue", "kind": kind, "count": count, "behaviour": "patrol"}],
            "timeline": list(timeline),
        }
    )


class Recorder:
    """Runs a model and keeps (tick time, emission, decoded body or None) for every message."""

    def __init__(self, sc: Scenario) -> None:
        self.model = FleetModel(sc)
        self.rows: list[tuple[float, Any, dict[str, Any] | None]] = []
        for em in self.model.start():
            self.rows.append((0.0, em, json.loads(em.payload)))

    def run(self, seconds: float) -> Recorder:
        for _ in range(round(seconds * 10)):
            t = self.model.elapsed_s + 0.1
            for em in self.model.step():
                try:
                    body = json.loads(em.payload)
                except ValueError:
                    body = None
                self.rows.append((round(t, 1), em, body))
        return self

    def telemetry(
        self, entity_id: str = TARGET, mtype: str | None = None
    ) -> list[tuple[float, Any, dict | None]]:
        return [
            r
            for r in self.rows
            if r[1].kind == "telemetry"
            and r[1].entity_id == entity_id
            and (mtype is None or r[1].message_type == mtype)
        ]

    def ts(self, body: dict) -> float:
        return parse_timestamp(body["timestamp"])[1] - self.model.clock.start_epoch_s


def test_link_loss_suppresses_messages_for_its_duration_then_resumes():
    rec = Recorder(scenario({"at_s": 5, "fault": "link_loss", "duration_s": 3, "targets": [TARGET]})).run(12)
    times = [t for t, _, _ in rec.telemetry()]
    assert any(t < 5 for t in times) and any(t >= 8 for t in times)
    assert not [t for t in times if 5 <= t < 8]
    other = [t for t, _, _ in rec.telemetry("uav-000")]
    assert [t for t in other if 5 <= t < 8]  # the other device was not affected
    seqs = [int(b["message_uid"].rsplit("-", 1)[1]) for _, _, b in rec.telemetry()]
    gap = max(b - a for a, b in zip(seqs, seqs[1:], strict=False))
    assert gap > 50  # ~3 s x 20.5 msg/s were produced and lost
    assert rec.model.link_stats()["dropped"] == gap - 1


def test_duplicate_sends_the_same_uid_twice():
    rec = Recorder(scenario({"at_s": 1, "fault": "duplicate", "duration_s": 1, "targets": [TARGET]})).run(3)
    window = [em for t, em, _ in rec.telemetry() if 1 <= t < 2]
    uids = [em.msg_id for em in window]
    assert len(uids) == 2 * len(set(uids))
    assert window[0].payload == window[1].payload


def test_duplicate_without_dedup_header_reaches_the_lab_as_a_second_message():
    rec = Recorder(
        scenario(
            {
                "at_s": 1,
                "fault": "duplicate",
                "duration_s": 1,
                "targets": [TARGET],
                "params": {"dedup_header": False},
            }
        )
    ).run(2)
    window = [em for t, em, _ in rec.telemetry() if 1 <= t < 2]
    assert [em.msg_id is None for em in window[:2]] == [False, True]


@pytest.mark.parametrize("variant", MALFORMED_VARIANTS)
def test_every_malformed_variant_is_rejected_by_the_lab_protocol(variant):
    rec = Recorder(
        scenario(
            {
                "at_s": 1,
                "fault": "malformed",
                "duration_s": 1,
                "targets": [TARGET],
                "params": {"probability": 1.0, "variant": variant},
            }
        )
    ).run(2)
    bad = [em for t, em, _ in rec.telemetry() if 1 <= t < 2]
    assert bad
    for em in bad:
        with pytest.raises(ProtocolError):
            t = decode_telemetry(em.payload, parse_telemetry_subject(em.subject))
            project(t.message_type, t.data, t.timestamp)


def test_malformed_keeps_the_original_dedup_id():
    env = {"schema_version": "1.0.0", "message_uid": "u1", "timestamp": "x", "entity_id": "e"}
    assert (
        malformed("missing_field", env, b"{}")
        == b'{"schema_version":"1.0.0","message_uid":"u1","entity_id":"e"}'
    )
    assert env["timestamp"] == "x"  # the caller's envelope is untouched
    with pytest.raises(ValueError):
        malformed("nonsense", env, b"{}")


def test_clock_skew_shifts_timestamps_by_the_offset():
    rec = Recorder(
        scenario(
            {
                "at_s": 2,
                "fault": "clock_skew",
                "duration_s": 2,
                "targets": [TARGET],
                "params": {"offset_s": -30},
            }
        )
    ).run(5)
    for t, _, body in rec.telemetry():
        expected = t - 30 if 2 <= t < 4 else t
        assert rec.ts(body) == pytest.approx(expected, abs=1e-5)


def test_reboot_goes_silent_then_sends_a_new_bootsequence():
    rec = Recorder(scenario({"at_s": 3, "fault": "reboot", "duration_s": 2, "targets": [TARGET]})).run(8)
    boots = [(t, b) for t, em, b in rec.rows if em.message_type == "bootsequence" and em.entity_id == TARGET]
    assert [(t, b["boot_count"]) for t, b in boots] == [(0.0, 1), (5.0, 2)]
    assert boots[0][1]["event_uid"] != boots[1][1]["event_uid"]
    assert not [t for t, _, _ in rec.telemetry() if 3 <= t < 5]
    after = [b for t, _, b in rec.telemetry(mtype="ATTITUDE") if t >= 5]
    assert after[0]["data"]["time_boot_ms"] < 200  # time since boot restarted
    before = [b for t, _, b in rec.telemetry(mtype="ATTITUDE") if t < 3]
    assert before[-1]["data"]["time_boot_ms"] > 2500


def test_telemetry_delay_holds_messages_back_and_reorders_them():
    rec = Recorder(
        scenario(
            {
                "at_s": 1,
                "fault": "telemetry_delay",
                "duration_s": 4,
                "targets": [TARGET],
                "params": {"delay_s": 1.0, "jitter_s": 0.5},
            }
        )
    ).run(8)
    late = [(t, rec.ts(b)) for t, _, b in rec.telemetry() if 1 <= rec.ts(b) < 5]
    assert late and all(1.0 - 1e-6 <= t - ts <= 1.6 for t, ts in late)
    stamps = [rec.ts(b) for _, _, b in rec.telemetry(mtype="ATTITUDE")]
    assert any(b < a for a, b in zip(stamps, stamps[1:], strict=False))  # jitter reorders
    assert len(stamps) == 80 and len(set(stamps)) == 80  # delayed, never lost


def test_out_of_order_lets_later_messages_overtake():
    rec = Recorder(
        scenario(
            {
                "at_s": 1,
                "fault": "out_of_order",
                "duration_s": 3,
                "targets": [TARGET],
                "params": {"probability": 0.5},
            }
        )
    ).run(5)
    stamps = [rec.ts(b) for _, _, b in rec.telemetry(mtype="ATTITUDE")]
    assert any(b < a for a, b in zip(stamps, stamps[1:], strict=False))
    assert rec.model.link_stats()["reordered"] > 0


def test_gps_dropout_loses_the_fix_and_the_estimate_drifts():
    rec = Recorder(scenario({"at_s": 2, "fault": "gps_dropout", "duration_s": 20, "targets": [TARGET]})).run(
        25
    )
    raw = [(t, b["data"]) for t, _, b in rec.telemetry(mtype="GPS_RAW_INT")]
    during = [d for t, d in raw if 3 <= t < 22]
    assert during and all(
        d["fix_type"] == 1 and d["eph"] == 65535 and d["satellites_visible"] <= 3 for d in during
    )
    assert all(d["fix_type"] == 3 for t, d in raw if t >= 23)
    sys_status = [b["data"] for t, _, b in rec.telemetry(mtype="SYS_STATUS") if 3 <= t < 22]
    assert all(not d["onboard_control_sensors_health"] & 32 for d in sys_status)


def test_gps_degraded_reports_a_2d_fix_with_few_satellites():
    rec = Recorder(scenario({"at_s": 1, "fault": "gps_degraded", "duration_s": 5, "targets": [TARGET]})).run(
        7
    )
    during = [b["data"] for t, _, b in rec.telemetry(mtype="GPS_RAW_INT") if 1.5 <= t < 6]
    assert during and all(
        d["fix_type"] == 2 and 4 <= d["satellites_visible"] <= 6 and d["eph"] >= 300 for d in during
    )


def test_battery_sag_lowers_the_voltage_under_load():
    fault = {
        "at_s": 1,
        "fault": "battery_sag",
        "duration_s": 5,
        "targets": [TARGET],
        "params": {"resistance_factor": 8},
    }
    sagged = Recorder(scenario(fault)).run(3)
    clean = Recorder(scenario()).run(3)
    assert sagged.model.device(TARGET).voltage_v < clean.model.device(TARGET).voltage_v - 0.3
    assert sagged.model.device("uav-000").voltage_v == clean.model.device("uav-000").voltage_v


def test_battery_failure_empties_the_pack_and_forces_a_landing():
    rec = Recorder(
        scenario(
            {
                "at_s": 1,
                "fault": "battery_failure",
                "duration_s": 100,
                "targets": [TARGET],
                "params": {"drain_s": 5},
            }
        )
    ).run(80)
    d = rec.model.device(TARGET)
    assert d.battery_pct == 0 and not d.airborne and not d.armed
    states = {b["data"]["charge_state"] for t, _, b in rec.telemetry(mtype="BATTERY_STATUS") if t > 2}
    assert 5 in states  # MAV_BATTERY_CHARGE_STATE_FAILED


def test_motor_failure_forces_a_landing_and_disarms():
    rec = Recorder(
        scenario({"at_s": 2, "fault": "motor_failure", "duration_s": 60, "targets": [TARGET]})
    ).run(70)
    d = rec.model.device(TARGET)
    assert not d.airborne and not d.armed and not d.motor_failed
    hb = [(t, b["data"]) for t, _, b in rec.telemetry(mtype="HEARTBEAT")]
    assert any(data["system_status"] == 6 for t, data in hb if 2 < t < 10)  # MAV_STATE_EMERGENCY
    vfr = [b["data"]["climb"] for t, _, b in rec.telemetry(mtype="VFR_HUD") if 2.5 < t < 6]
    assert min(vfr) < -3.0  # falling faster than the normal 2.5 m/s descent
    assert d.handle_command({"command_id": "rearm", "command_type": "arm"}).accepted


def test_live_faults_and_the_timeline_frame():
    sc = scenario({"at_s": 5, "fault": "link_loss", "duration_s": 3, "targets": ["uav"], "id": "storm"})
    m = FleetModel(sc)
    m.start()
    assert m.add_fault(Fault.make("gps_dropout", 2, 4, TARGET, source="live", fault_id="jam")) == 1
    frame = m.fault_timeline()
    assert list(frame.columns) == list(TIMELINE_COLUMNS)
    assert list(zip(frame["fault_id"], frame["entity_id"], strict=True)) == [
        ("jam", TARGET),
        ("storm", "uav-000"),
        ("storm", TARGET),
    ]
    assert frame.loc[1, "start"] == pd.Timestamp(m.clock.start_epoch_s + 5, unit="s", tz="UTC")
    assert json.loads(frame.loc[0, "params"]) == {}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "warp", "start_s": 0, "duration_s": 1}, "fault: 'warp' is not one of"),
        ({"kind": "link_loss", "start_s": -1, "duration_s": 1}, "start_s: must be >= 0"),
        ({"kind": "link_loss", "start_s": 0, "duration_s": 0}, "duration_s: must be > 0"),
        (
            {"kind": "link_loss", "start_s": 0, "duration_s": 1, "targets": []},
            "targets: must be a non-empty list",
        ),
        (
            {"kind": "clock_skew", "start_s": 0, "duration_s": 1, "params": {"offset_s": "x"}},
            "params.offset_s: must be a",
        ),
        (
            {"kind": "battery_sag", "start_s": 0, "duration_s": 1, "params": {"resistance_factor": 0.5}},
            "must be >= 1",
        ),
        (
            {"kind": "telemetry_delay", "start_s": 0, "duration_s": 1, "params": {"delay_s": -1}},
            "must be >= 0",
        ),
    ],
)
def test_fault_make_validates(kwargs, message):
    with pytest.raises(ScenarioError, match=message):
        Fault.make(**kwargs)


def test_fault_defaults_and_activity():
    f = Fault.make(FaultKind.DUPLICATE, 10, 5, ["a", "fleet-x"])
    assert f.params["probability"] == 1.0 and f.params["dedup_header"] is True
    assert f.active(10) and f.active(14.9) and not f.active(15) and not f.active(9.9)
    assert f.matches("a", "f", "o") and f.matches("z", "fleet-x", "o") and not f.matches("z", "f", "o")


def test_a_fault_survives_a_trip_through_its_description():
    f = Fault.make("out_of_order", 3, 7, ["uav", "org-x"], params={"hold_s": 2}, fault_id="f1", source="live")
    assert Fault.from_description(f.describe()) == f
    with pytest.raises(ScenarioError, match=r"fault.params.hold_s: must be >= 0"):
        Fault.from_description(f.describe() | {"params": {"hold_s": -1}})
