"""RetryTimer (overwatch_lab/commands/ledger.py): the resend timer, as pure arithmetic (RFC 6298)."""

from __future__ import annotations

import pytest

from overwatch_lab.commands.ledger import RetryTimer
from overwatch_lab.config import LabConfig


@pytest.fixture
def timer(tmp_path) -> RetryTimer:
    """initial 0.2 s, factor 2, cap 10 s."""
    config = LabConfig(
        data_dir=tmp_path, command_retry_initial_s=0.2, command_retry_factor=2.0, command_retry_max_s=10.0
    )
    return RetryTimer(config)


def test_without_a_sample_the_timeout_is_the_initial_one(timer):
    assert (timer.srtt, timer.samples, timer.timeout_s) == (None, 0, 0.2)
    assert timer.delay(1) == 0.2
    assert timer.delay(0) == 0.2  # no attempt yet counts as the first


def test_the_first_sample_sets_srtt_and_half_of_it_as_variance(timer):
    timer.sample(1.0)
    assert (timer.srtt, timer.rttvar, timer.samples) == (1.0, 0.5, 1)
    assert timer.timeout_s == pytest.approx(1.0 + 4 * 0.5)


def test_later_samples_smooth_as_rfc_6298_says(timer):
    timer.sample(1.0)
    timer.sample(2.0)  # rttvar = 3/4·0.5 + 1/4·|1 - 2|, then srtt = 7/8·1 + 1/8·2
    assert timer.rttvar == pytest.approx(0.625) and timer.srtt == pytest.approx(1.125)
    assert timer.timeout_s == pytest.approx(1.125 + 4 * 0.625)
    timer.sample(1.0)
    assert timer.rttvar == pytest.approx(0.75 * 0.625 + 0.25 * 0.125)
    assert timer.srtt == pytest.approx(0.875 * 1.125 + 0.125 * 1.0)
    assert timer.samples == 3


def test_steady_round_trips_converge_on_the_round_trip(timer):
    for _ in range(200):
        timer.sample(0.5)
    assert timer.srtt == pytest.approx(0.5) and timer.rttvar == pytest.approx(0.0, abs=1e-9)
    assert timer.timeout_s == pytest.approx(0.5)


def test_the_timeout_is_kept_between_initial_and_cap(timer, tmp_path):
    timer.sample(0.001)  # a LAN-fast ack: never resend sooner than the initial timeout
    assert timer.timeout_s == 0.2
    slow = RetryTimer(LabConfig(data_dir=tmp_path, command_retry_initial_s=0.2, command_retry_max_s=10.0))
    slow.sample(60.0)  # a very slow link: never wait longer than the cap
    assert slow.timeout_s == 10.0


def test_a_negative_round_trip_counts_as_zero(timer):
    timer.sample(-3.0)  # clocks stepped backwards between send and ack
    assert (timer.srtt, timer.rttvar, timer.timeout_s) == (0.0, 0.0, 0.2)


def test_attempts_back_off_by_the_factor_up_to_the_cap(timer):
    timer.sample(0.5)  # timeout 0.5 + 4·0.25 = 1.5 s
    assert [timer.delay(n) for n in range(1, 6)] == pytest.approx([1.5, 3.0, 6.0, 10.0, 10.0])


def test_a_factor_of_one_resends_at_the_timeout(tmp_path):
    timer = RetryTimer(LabConfig(data_dir=tmp_path, command_retry_initial_s=1.0, command_retry_factor=1.0))
    assert [timer.delay(n) for n in (1, 2, 10)] == [1.0, 1.0, 1.0]
