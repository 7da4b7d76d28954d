"""What the CoT sender sends and when (overwatch_lab/cot/sender.py), ticked by hand on a fake clock.

The state comes from a fake change source (pure logic: the sender's decisions); the events go
over real loopback sockets to :class:`tests.cot_receiver.CotReceiver` (pytak reads, takproto
parses). tests/integration/test_cot.py runs the same sender against a real lab.
"""

from __future__ import annotations

import copy
import socket

import pytest

from overwatch_lab.cot.sender import CotSender, stale_after_of
from overwatch_lab.errors import ConfigError, LabStateError
from overwatch_lab.kvcache import Changes
from tests.cot_receiver import CotReceiver

T0 = 1_780_000_000.0


class FakeChanges:
    """A change source: entity_changes(since) over docs put and deleted here, like the KV cache."""

    def __init__(self) -> None:
        self.version = 0
        self.docs: dict[str, tuple[int, int, dict]] = {}  # eid -> (version, revision, doc)
        self.deleted: dict[str, int] = {}
        self.fail: Exception | None = None

    def put(self, eid: str, doc: dict) -> None:
        self.version += 1
        self.docs[eid] = (self.version, self.version, copy.deepcopy(doc))
        self.deleted.pop(eid, None)

    def delete(self, eid: str) -> None:
        self.version += 1
        self.docs.pop(eid, None)
        self.deleted[eid] = self.version

    def entity_changes(self, since: int) -> Changes:
        if self.fail is not None:
            raise self.fail
        full = since <= 0
        changed = {e: (rev, d) for e, (v, rev, d) in self.docs.items() if full or v > since}
        deleted = frozenset() if full else frozenset(e for e, v in self.deleted.items() if v > since)
        return Changes(self.version, changed, deleted, full)


def uav(lat: float = 32.9, *, live: bool = True, org: str = "org-a", name: str = "Falcon") -> dict:
    return {
        "org_id": org,
        "name": name,
        "entity_type": "aircraft_multirotor",
        "status": "active",
        "is_live": live,
        "position": {"global": {"latitude": lat, "longitude": -96.8, "altitude_msl": 100.0}},
    }


@pytest.fixture
def rx():
    with CotReceiver("udp") as r:
        yield r


@pytest.fixture
def make(rx):
    senders: list[CotSender] = []

    def build(source, **kw) -> CotSender:
        kw.setdefault("stale_after_s", 5.0)
        s = CotSender(source, kw.pop("to", rx.url), **kw)
        senders.append(s)
        return s

    yield build
    for s in senders:
        s.stop()


def test_a_live_entity_is_sent_once_and_again_only_when_it_changed_or_nears_its_stale_time(rx, make):
    src = FakeChanges()
    tx = make(src, rate_hz=10)
    src.put("uav-1", uav())
    assert tx.tick(0.0, T0) == 1
    got = rx.wait(1)[0].event
    assert (got.uid, got.type, got.lat) == ("org-a.uav-1", "a-f-A-M-F-Q", pytest.approx(32.9))
    assert got.staleTime - got.sendTime == 5000

    src.put("uav-1", uav())  # a new revision that says nothing new
    assert tx.tick(1.0, T0 + 1) == 0 and tx.stats()["unchanged"] == 1
    src.put("uav-1", uav(lat=33.0))
    assert tx.tick(1.1, T0 + 1.1) == 1
    src.put("uav-1", uav(lat=33.0))  # unchanged, but the last event is half its stale time old
    assert tx.tick(3.7, T0 + 3.7) == 1
    events = rx.wait(3)
    assert [round(e.event.lat, 1) for e in events] == [32.9, 33.0, 33.0]


def test_at_most_one_event_per_entity_per_interval_and_the_latest_state_wins(rx, make):
    src = FakeChanges()
    tx = make(src, rate_hz=1)
    sent = 0
    for i in range(31):  # 3 s of a document changing every 0.1 s
        src.put("uav-1", uav(lat=30 + i / 100))
        sent += tx.tick(i / 10, T0 + i / 10)
    assert sent == 4  # at 0, 1, 2 and 3 s
    assert [round(e.event.lat, 2) for e in rx.wait(4)] == [30.0, 30.1, 30.2, 30.3]


def test_the_global_cap_holds_back_and_nobody_starves(rx, make):
    src = FakeChanges()
    tx = make(src, rate_hz=100, max_events_per_s=20)
    sent = 0
    for i in range(100):  # 1 s, 50 entities changing every 10 ms
        for e in range(50):
            src.put(f"e{e}", uav(lat=10 + i / 1000 + e / 100))
        sent += tx.tick(i / 100, T0 + i / 100)
    assert 20 <= sent <= 20 + tx.pacer.burst
    assert tx.stats()["capped"] > 0 and tx.stats()["waiting"] > 0  # the rest wait, latest state kept


def test_never_live_is_never_sent_and_gone_live_is_sent_once_already_stale(rx, make):
    src = FakeChanges()
    tx = make(src, rate_hz=10)
    src.put("ghost", uav(live=False))
    src.put("uav-1", uav())
    tx.tick(0.0, T0)
    src.put("uav-1", uav(live=False))
    tx.tick(1.0, T0 + 1)
    src.put("uav-1", uav(live=False, lat=1.0))  # still not live: nothing more to say
    src.put("ghost", uav(live=False, lat=1.0))
    tx.tick(2.0, T0 + 2)
    events = rx.wait(2)
    assert [e.event.uid for e in events] == ["org-a.uav-1", "org-a.uav-1"]
    assert events[1].event.staleTime == events[1].event.sendTime
    assert tx.stats()["sent"] == 2 and tx.stats()["offline_sent"] == 1 and tx.stats()["tracked"] == 0


def test_a_deleted_entity_that_tak_holds_is_sent_already_stale(rx, make):
    src = FakeChanges()
    tx = make(src, rate_hz=10)
    src.put("uav-1", uav())
    src.put("uav-2", uav())
    tx.tick(0.0, T0)
    src.delete("uav-1")
    assert tx.tick(1.0, T0 + 1) == 1
    last = rx.wait(3)[-1].event
    assert last.uid == "org-a.uav-1" and last.staleTime == last.sendTime


def test_affiliation_per_organisation_and_documents_without_a_position(rx, make):
    src = FakeChanges()
    tx = make(src, affiliations={"org-red": "hostile"}, default_affiliation="neutral", group="Red", role="HQ")
    src.put("a", uav(org="org-red"))
    src.put("b", uav(org="org-a"))
    src.put("c", {"org_id": "org-a", "is_live": True, "position": {}})
    tx.tick(0.0, T0)
    types = {e.event.uid: e.event.type for e in rx.wait(2)}
    assert types == {"org-red.a": "a-h-A-M-F-Q", "org-a.b": "a-n-A-M-F-Q"}
    assert {(e.event.detail.group.name, e.event.detail.group.role) for e in rx.events()} == {("Red", "HQ")}
    assert tx.stats()["no_position"] == 1


def test_a_source_that_cannot_be_read_is_retried_not_fatal(rx, make):
    src = FakeChanges()
    tx = make(src)
    src.put("uav-1", uav())
    src.fail = LabStateError("the lab is stopping")
    assert tx.tick(0.0, T0) == 0
    assert tx.stats()["read_errors"] == 1 and "the lab is stopping" in tx.stats()["last_error"]
    src.fail = None
    assert tx.tick(1.0, T0 + 1) == 1


def test_events_wait_while_the_tak_server_is_down_and_go_out_once_it_is_up(make):
    reserved = socket.socket()
    reserved.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    port = reserved.getsockname()[1]
    src = FakeChanges()
    tx = make(src, to=f"tcp://127.0.0.1:{port}", rate_hz=10)
    tx._open().retry_s = 0.0  # the transport's own reconnect pause, in real time
    src.put("uav-1", uav())
    assert tx.tick(0.0, T0) == 0
    st = tx.stats()
    assert st["waiting"] == 1 and st["send_errors"] == 1 and "connect" in st["last_error"]
    with CotReceiver("tcp", sock=reserved) as server:
        assert tx.tick(1.0, T0 + 1) == 1
        assert server.wait(1)[0].event.uid == "org-a.uav-1"
        assert tx.stats()["connects"] == 1 and tx.stats()["waiting"] == 0


def test_bad_options_are_refused_before_anything_is_opened():
    src = FakeChanges()
    with pytest.raises(ConfigError, match="rate_hz must be > 0"):
        CotSender(src, "udp://127.0.0.1:9", rate_hz=0)
    with pytest.raises(ConfigError, match="unknown CoT affiliation"):
        CotSender(src, "udp://127.0.0.1:9", affiliations={"org-a": "enemy"})
    with pytest.raises(ConfigError, match="stale_after_s must be > 0"):
        CotSender(src, "udp://127.0.0.1:9", stale_after_s=0)
    with pytest.raises(ConfigError, match="needs entity_changes"):
        CotSender(object(), "udp://127.0.0.1:9")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="scheme must be"):
        CotSender(src, "http://127.0.0.1:9")


def test_the_stale_time_is_the_labs(tmp_path):
    from overwatch_lab import Lab

    lab = Lab(data_dir=tmp_path, stale_after_s=7.5)  # never started: its config says it
    assert stale_after_of(lab) == 7.5
    assert stale_after_of(FakeChanges()) == 5.0  # no lab behind it: LabConfig's default


def test_the_thread_starts_once_and_stops_within_a_tick(rx):
    src = FakeChanges()
    src.put("uav-1", uav())
    tx = CotSender(src, rx.url, stale_after_s=5, tick_s=0.01)
    with tx:
        assert tx.running
        rx.wait(1)
        with pytest.raises(LabStateError, match="starts once"):
            tx.start()
    assert not tx.running and tx.ended().done() and tx.failure is None


def test_a_bug_in_the_thread_ends_it_and_says_what(rx, caplog):
    src = FakeChanges()
    src.fail = KeyError("a bug, not an outage")  # not an OverwatchError: nothing to retry
    tx = CotSender(src, rx.url, stale_after_s=5, tick_s=0.01).start()
    try:
        tx.ended().result(timeout=10)
    finally:
        tx.stop()
    assert isinstance(tx.failure, KeyError) and not tx.running
    assert "CoT sender failed" in caplog.text
