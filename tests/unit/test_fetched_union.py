"""The union gap view of a stream read by several durables (pure logic)."""

from __future__ import annotations

from overwatch_lab.fetched_union import FetchedUnion, runs


def _union(*sources: str, at: int = 0) -> FetchedUnion:
    u = FetchedUnion(sources)
    u.baseline({s: at for s in sources})
    return u


def test_runs_compresses_sequences_in_any_order():
    assert runs([5, 1, 2, 3, 7, 8, 3]) == [1, 3, 5, 5, 7, 8]
    assert runs([]) == []


def test_interleaved_partitions_with_nothing_removed_count_nothing():
    u = _union("a", "b")
    u.add("a", runs([1, 3, 5, 7]))
    u.add("b", runs([2, 4, 6, 8]))
    assert u.confirm(first_seq=100) == 0
    assert u.floor == 8 and u.unconfirmed == 0


def test_a_gap_counts_only_once_every_source_reported_past_it():
    u = _union("a", "b")
    u.add("a", runs([1, 3, 5, 6]))
    u.add("b", runs([2]))  # 4 is missing; b has reported only up to 2
    assert u.confirm(first_seq=10) == 0
    assert u.unconfirmed == 1
    u.add("b", runs([7]))  # b is past 4 now: nobody got it, and the stream no longer holds it
    assert u.confirm(first_seq=10) == 1
    assert u.unconfirmed == 0


def test_a_late_report_fills_the_gap_instead_of_making_a_false_loss():
    u = _union("a", "slow-child")
    u.add("a", runs([1, 2, 5]))
    assert u.confirm(first_seq=10) == 0  # 3 and 4 may still be reported by slow-child
    u.add("slow-child", runs([3, 4]))
    assert u.confirm(first_seq=10) == 0 and u.floor == 5


def test_nothing_still_in_the_stream_is_counted():
    u = _union("a", "b")
    u.add("a", runs([1, 5]))
    u.add("b", runs([6]))
    assert u.confirm(first_seq=3) == 1  # 2 is gone; 3 and 4 may still be delivered
    assert u.unconfirmed == 2


def test_an_idle_source_that_reported_every_delivery_does_not_hold_the_view_back():
    u = _union("busy", "idle")
    u.add("busy", runs([1, 2, 3, 7, 8]))
    u.caught_up("idle", first_seq=5, last_seq=8, delivered=0, pending=0)
    assert u.horizon["idle"] == 8
    assert u.confirm(first_seq=5) == 1  # 4 only: 5 and 6 are still in the stream
    u.caught_up("busy", first_seq=9, last_seq=8, delivered=8, pending=0)
    assert u.confirm(first_seq=9) == 2


def test_a_source_delivered_more_than_it_reported_keeps_its_horizon():
    u = _union("a", "b")
    u.add("a", runs([1, 2]))
    u.caught_up("b", first_seq=50, last_seq=60, delivered=7, pending=0)  # its report is in flight
    assert u.horizon["b"] == 0 and u.confirm(first_seq=50) == 0


def test_what_was_dropped_while_down_counts_from_the_highest_position():
    u = FetchedUnion(["p0", "p1"])
    u.baseline({"p0": 0, "p1": 0})
    for src in ("p0", "p1"):  # boot pass: 1000 stored, the stream kept 801..1000
        u.caught_up(src, first_seq=801, last_seq=1000, delivered=0, pending=200 if src == "p0" else 0)
    assert u.confirm(first_seq=801) == 800
    u.add("p0", runs(range(801, 1001)))
    assert u.confirm(first_seq=801) == 0 and u.floor == 1000


def test_reset_starts_over_from_the_positions():
    u = _union("a", "b", at=500)
    u.add("a", runs([501, 503]))
    u.reset({"a": 0, "b": 0})
    assert u.floor == 0 and u.unconfirmed == 0
