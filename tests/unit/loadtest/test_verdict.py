"""The load test's rules on made-up figures: held or not, the bottleneck named, the knee."""

from __future__ import annotations

import dataclasses

import pytest

from overwatch_lab.errors import ConfigError
from overwatch_lab.loadtest import verdict as V
from overwatch_lab.loadtest.plan import LoadPlan

HELD = V.StepFigures(
    devices=100,
    nominal_rate=2050.0,
    offered_rate=2049.0,
    stored_rate=2049.0,
    achieved_rate=2040.0,
    lag_slope_per_s=0.0,
    lag_end=10,
    kv_p99_ms=40.0,
    kv_p50_ms=8.0,
    history_p50_ms=6.0,
    sim_cpu_pct=[20.0],
    broker_cpu_pct=15.0,
    worker_cpu_pct=[40.0],
    wall_s=10.0,
)
# a lab that falls behind: lag grows, latency high; each test adds the evidence of one cause
BEHIND = dataclasses.replace(
    HELD,
    achieved_rate=1200.0,
    lag_slope_per_s=800.0,
    kv_p99_ms=4000.0,
    kv_p50_ms=2000.0,
    history_p50_ms=1900.0,
)


def verdict(f: V.StepFigures) -> V.Verdict:
    return V.bottleneck(f, held=not V.step_problems(f, max_p99_ms=1000.0))


def test_a_step_that_keeps_up_is_held_and_names_no_bottleneck():
    assert V.step_problems(HELD, max_p99_ms=1000.0) == []
    v = verdict(HELD)
    assert v.bottleneck == V.NONE
    assert "consumer at 40%" in v.reason  # the busiest process, for the record


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"lag_slope_per_s": 500.0, "lag_end": 5000}, "lag grew"),
        ({"kv_p99_ms": 1500.0}, "p99"),
        ({"kv_p99_ms": None}, "no KV latency"),
        ({"lost": 3}, "3 lost"),
        ({"discarded": 7}, "7 discarded"),
        ({"offered_rate": 1000.0}, "offered"),
        ({"achieved_rate": 1000.0}, "committed"),
        ({"sim_lag_s": 3.0}, "behind their clock"),
    ],
)
def test_each_problem_makes_a_step_not_held(change, words):
    problems = V.step_problems(dataclasses.replace(HELD, **change), max_p99_ms=1000.0)
    assert any(words in p for p in problems), problems


def test_a_lag_sawtooth_of_batches_in_flight_is_not_falling_behind():
    f = dataclasses.replace(HELD, lag_slope_per_s=300.0, lag_end=800)  # under a second of traffic
    assert V.step_problems(f, max_p99_ms=1000.0) == []


def test_simulator_saturated_and_short_of_the_rate_is_the_simulator():
    f = dataclasses.replace(HELD, offered_rate=1200.0, sim_cpu_pct=[99.0, 60.0])
    v = verdict(f)
    assert v.bottleneck == V.SIMULATOR
    assert v.evidence["sim_cpu_pct_max"] == 99.0


def test_short_of_the_rate_with_cpu_to_spare_is_client_publish():
    assert (
        verdict(dataclasses.replace(HELD, offered_rate=1200.0, sim_cpu_pct=[30.0])).bottleneck
        == V.CLIENT_PUBLISH
    )


def test_published_but_not_stored_is_client_publish():
    assert verdict(dataclasses.replace(BEHIND, stored_rate=1500.0)).bottleneck == V.CLIENT_PUBLISH


def test_a_saturated_broker_is_the_broker():
    v = verdict(dataclasses.replace(BEHIND, broker_cpu_pct=97.0, worker_cpu_pct=[99.0]))
    assert v.bottleneck == V.BROKER  # checked before the consumer: the consumer waits on it


@pytest.mark.parametrize(
    ("stages", "name"),
    [
        ({"decode_s": 7.0, "db_s": 1.0, "kv_s": 1.0}, V.CONSUMER),
        ({"decode_s": 1.0, "db_s": 8.0, "kv_s": 0.5}, V.LIBSQL_WRITES),
        ({"decode_s": 1.0, "db_s": 1.0, "kv_s": 6.0}, V.KV_WRITES),
    ],
)
def test_stage_seconds_name_the_stage_that_took_the_step(stages, name):
    v = verdict(dataclasses.replace(BEHIND, stage_s=stages, worker_cpu_pct=[99.0]))
    assert v.bottleneck == name
    assert max(v.evidence["stage_share"].values()) >= V.STAGE_DOMINANT


def test_a_write_lock_busy_most_of_the_time_is_libsql_writes():
    waits = [0.1, 700.0, 650.0, 0.2, 800.0, 720.0]  # ms, four of six probes found it busy
    share = V.busy_share(waits)
    assert share == pytest.approx(4 / 6)
    v = verdict(
        dataclasses.replace(BEHIND, db_lock_busy_share=share, db_lock_p95_ms=800.0, worker_cpu_pct=[20.0])
    )
    assert v.bottleneck == V.LIBSQL_WRITES
    assert "67%" in v.reason


def test_long_but_rare_commits_are_not_libsql_writes():
    # the lab's own writer commits big batches (a probe now and then waits ~90 ms): not the limit
    share = V.busy_share([0.1, 0.1, 89.0, 0.2, 0.1, 0.1, 0.1, 0.3])
    v = verdict(
        dataclasses.replace(BEHIND, db_lock_busy_share=share, db_lock_p95_ms=89.0, worker_cpu_pct=[95.0])
    )
    assert v.bottleneck == V.CONSUMER
    assert V.busy_share([]) is None


def test_a_worker_holding_for_a_database_fault_is_libsql_writes():
    v = verdict(dataclasses.replace(BEHIND, hold_reason="database is locked", worker_cpu_pct=[5.0]))
    assert v.bottleneck == V.LIBSQL_WRITES


def test_a_saturated_worker_without_stage_seconds_is_the_consumer():
    assert verdict(dataclasses.replace(BEHIND, worker_cpu_pct=[98.0])).bottleneck == V.CONSUMER


def test_kv_visible_long_after_history_is_kv_writes():
    v = verdict(dataclasses.replace(BEHIND, kv_p50_ms=2000.0, history_p50_ms=300.0, worker_cpu_pct=[30.0]))
    assert v.bottleneck == V.KV_WRITES


def test_falling_behind_with_nothing_saturated_is_a_waiting_consumer():
    v = verdict(dataclasses.replace(BEHIND, worker_cpu_pct=[30.0]))
    assert v.bottleneck == V.CONSUMER
    assert "waiting" in v.reason


def test_falling_behind_on_a_full_machine_is_a_starved_consumer():
    v = verdict(dataclasses.replace(BEHIND, worker_cpu_pct=[50.0], host_cpu_pct=99.0))
    assert v.bottleneck == V.CONSUMER
    assert "starved" in v.reason and v.evidence["host_cpu_pct"] == 99.0


def test_the_knee_is_the_highest_device_count_held():
    assert V.knee([(100, True), (250, True), (500, False), (750, False)]) == 250
    assert V.knee([(100, False)]) is None
    assert V.knee([(250, True), (100, True), (500, False)]) == 250


def test_slope_and_percentiles():
    assert V.slope([(0, 0), (1, 10), (2, 20)]) == pytest.approx(10.0)
    assert V.slope([(1, 5)]) == 0.0
    assert V.slope([(1, 5), (1, 7)]) == 0.0
    p = V.percentiles([float(x) for x in range(1, 101)])
    assert p == {"p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0, "n": 100}
    assert V.percentiles([]) is None


def test_plan_steps_and_bad_plans():
    plan = LoadPlan.ramp([50, 100], step_s=5, rate_factors=(1.0, 2.0))
    assert plan.steps() == [(50, 1.0), (50, 2.0), (100, 1.0), (100, 2.0)]
    assert LoadPlan.hold(1000, 600).processes_for(1000) == 2
    assert plan.expected_messages() == round((50 + 100 + 100 + 200) * 20.5 * 5)
    with pytest.raises(ConfigError, match=">= 39"):
        LoadPlan.ramp([10])
    with pytest.raises(ConfigError, match="rate factors"):
        LoadPlan.ramp([50], rate_factors=(0.0,))
    with pytest.raises(ConfigError, match="one device count"):
        LoadPlan(mode="hold", devices=(50, 100))
    with pytest.raises(ConfigError, match="step time"):
        LoadPlan.ramp([50], step_s=float("nan"))
