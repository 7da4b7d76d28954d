"""Battery model: drain with load, voltage sag under load and near empty."""

from __future__ import annotations

import pytest

from simulators import battery as bat

PACK = bat.BatterySpec(capacity_wh=100.0, cells=4, internal_resistance_ohm=0.05)


def test_open_circuit_voltage_rises_with_charge_between_the_limits():
    socs = [i / 20 for i in range(21)]
    volts = [bat.cell_ocv(s) for s in socs]
    assert volts == sorted(volts)
    assert volts[0] == bat.CELL_EMPTY_V and volts[-1] == 4.2
    assert bat.cell_ocv(-1.0) == volts[0] and bat.cell_ocv(2.0) == volts[-1]


def test_the_curve_is_steep_near_empty_and_flat_in_the_middle():
    near_empty = bat.cell_ocv(0.1) - bat.cell_ocv(0.0)
    middle = bat.cell_ocv(0.6) - bat.cell_ocv(0.5)
    assert near_empty > 2.5 * middle


def test_terminal_voltage_sags_under_load_and_current_matches_power():
    v0, i0 = bat.terminal(PACK, 0.8, 0.0)
    v, i = bat.terminal(PACK, 0.8, 400.0)
    assert i0 == 0.0 and v0 == pytest.approx(4 * bat.cell_ocv(0.8))
    assert v < v0
    assert v * i == pytest.approx(400.0)
    assert v == pytest.approx(v0 - i * bat.internal_resistance(PACK, 0.8))


def test_sag_is_worse_near_empty_and_with_a_sag_fault():
    drop_full = bat.terminal(PACK, 0.8, 300.0)
    drop_low = bat.terminal(PACK, 0.05, 300.0)
    assert (4 * bat.cell_ocv(0.05) - drop_low[0]) > (4 * bat.cell_ocv(0.8) - drop_full[0])
    faulty = bat.terminal(PACK, 0.8, 300.0, resistance_factor=4.0)
    assert faulty[0] < drop_full[0]


def test_an_overload_returns_the_maximum_power_point():
    v, i = bat.terminal(PACK, 0.5, 1e9)
    ocv = 4 * bat.cell_ocv(0.5)
    assert v == pytest.approx(ocv / 2)
    assert i == pytest.approx(ocv / (2 * bat.internal_resistance(PACK, 0.5)))


def test_drain_and_percent():
    left = bat.drain(100.0, 360.0, 60.0)  # 360 W for a minute = 6 Wh
    assert left == pytest.approx(94.0)
    assert bat.drain(1.0, 3600.0, 10.0) == 0.0
    assert bat.remaining_percent(PACK, 94.0) == 94
    assert bat.remaining_percent(PACK, 150.0) == 100
    assert bat.endurance_s(50.0, 100.0) == pytest.approx(1800.0)
    assert bat.endurance_s(50.0, 0.0) == float("inf")
