"""CoT out of a real lab: events a TAK client hears on loopback, read by pytak and parsed by takproto.

A real lab (embedded nats-server, libSQL file) with entities registered and telemetry published
through the wire; the sender reads the lab's KV cache (``lab.entity_changes``) and sends to a
:class:`tests.cot_receiver.CotReceiver` on 127.0.0.1 (UDP, TCP, and multicast joined on the
loopback interface with the sender's multicast interface set to 127.0.0.1, so no datagram
leaves the host). Rate limits are checked as upper bounds on the events counted in a window.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from overwatch_lab.cot import CotSender
from overwatch_lab.cot.events import CALLSIGN_MAX, xml_text
from tests.builders import BASE_LAT, BASE_LON, FLEET, position, register_fleet
from tests.cot_receiver import CotReceiver, multicast_on_loopback
from tests.polling import wait_until

STALE_S = 3.0


def fly_fleet(lab, step: int = 0) -> None:
    """One GLOBAL_POSITION_INT per entity of FLEET, applied before this returns."""
    for k, (org, eid, _, _) in enumerate(FLEET):
        lat, lon = BASE_LAT + k * 0.001 + step * 1e-4, BASE_LON - k * 0.001
        lab.publish_telemetry(
            org, eid, "GLOBAL_POSITION_INT", position(lat, lon, vx_mps=0.0, vy_mps=2.0), wait=True
        )


def check_fleet_events(rx: CotReceiver, stale_s: float) -> None:
    """Every entity of FLEET arrived with its uid, type, callsign, point and the lab's stale time."""
    types = {"uav-1": "a-f-A-M-F-Q", "uav-2": "a-f-A-M-F-Q", "ugv-1": "a-h-G-E-V"}  # org-b is hostile
    for k, (org, eid, _, name) in enumerate(FLEET):
        ev = rx.wait(1, uid=f"{org}.{eid}")[0].event
        assert ev.type == types[eid]
        assert ev.detail.contact.callsign == name
        assert (ev.lat, ev.lon) == pytest.approx((BASE_LAT + k * 0.001, BASE_LON - k * 0.001), abs=1e-6)
        assert ev.hae == pytest.approx(152.4)
        assert ev.staleTime - ev.sendTime == round(stale_s * 1000)
        assert abs(ev.sendTime / 1000 - time.time()) < 30
        assert ev.detail.track.speed == pytest.approx(2.0) and ev.detail.track.course == pytest.approx(90.0)
    assert rx.bad == []


@pytest.fixture
def fleet_lab(lab_factory):
    lab = lab_factory(stale_after_s=STALE_S)
    register_fleet(lab)
    return lab


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_the_fleet_arrives_with_uid_type_point_and_the_labs_stale_time(fleet_lab, kind):
    with CotReceiver(kind) as rx, CotSender(fleet_lab, rx.url, affiliations={"org-b": "hostile"}):
        fly_fleet(fleet_lab)
        check_fleet_events(rx, STALE_S)
        if kind == "tcp":
            assert rx.connections == 1


def test_multicast_on_the_loopback_interface(fleet_lab):
    reason = multicast_on_loopback()
    if reason is not None:
        pytest.skip(reason)
    with (
        CotReceiver("multicast", group="239.2.3.1") as rx,
        CotSender(fleet_lab, rx.url, affiliations={"org-b": "h"}, multicast_interface="127.0.0.1") as tx,
    ):
        assert tx.target.multicast
        fly_fleet(fleet_lab)
        check_fleet_events(rx, STALE_S)


def test_at_most_one_event_per_entity_per_interval_however_often_it_changes(fleet_lab):
    rate_hz, window_s = 2.0, 2.0
    with CotReceiver() as rx, CotSender(fleet_lab, rx.url, rate_hz=rate_hz):
        fly_fleet(fleet_lab)
        rx.wait(1, uid="org-a.uav-1")
        start = time.monotonic()
        published = 0
        while time.monotonic() - start < window_s:  # each message is applied before the next
            published += 1
            lat = BASE_LAT + published * 1e-5
            fleet_lab.publish_telemetry(
                "org-a", "uav-1", "GLOBAL_POSITION_INT", position(lat, BASE_LON), wait=True
            )
        end = time.monotonic()
        got = [r for r in rx.events("org-a.uav-1") if start <= r.at <= end]
    assert published >= 8  # the document changed far more often than it may be sent
    # one more than the window holds: an event sent just before it may arrive in it
    assert 1 <= len(got) <= (end - start) * rate_hz + 2
    gaps = [b.event.sendTime - a.event.sendTime for a, b in zip(got, got[1:], strict=False)]
    assert all(g >= 1000 / rate_hz - 5 for g in gaps), gaps  # the events' own times, not ours


def test_the_global_cap_bounds_the_whole_fleet(fleet_lab):
    cap, window_s = 3.0, 2.0
    with CotReceiver() as rx, CotSender(fleet_lab, rx.url, rate_hz=50, max_events_per_s=cap) as tx:
        fly_fleet(fleet_lab)
        rx.wait(1)
        start = time.monotonic()
        step = 0
        while time.monotonic() - start < window_s:
            step += 1
            fly_fleet(fleet_lab, step)
        end = time.monotonic()
        got = [r for r in rx.events() if start <= r.at <= end]
        assert 1 <= len(got) <= (end - start) * cap + tx.pacer.burst + 1  # + one sent just before
        assert tx.stats()["capped"] > 0


def test_hostile_names_arrive_as_well_formed_xml_with_the_name_as_text(lab):
    names = {
        "uav-x": '</callsign><event uid="evil"/> & "quotes" \'apos\' <![CDATA[ ]]>',
        "uav-y": "bell\x07 nul\x00 esc\x1b[31m del\x7f nl\n cr\r tab\t",
        "uav-z": "\U0001f681 Ünïcödé " + "&" * 300,
    }
    lab.register_org("org-h", "<Org & Co>")
    for eid, name in names.items():
        lab.register_entity("org-h", eid, "aircraft_multirotor", name=name[:256])
    with CotReceiver() as rx, CotSender(lab, rx.url):
        for eid in names:
            lab.publish_telemetry(
                "org-h", eid, "GLOBAL_POSITION_INT", position(BASE_LAT, BASE_LON), wait=True
            )
        for eid, name in names.items():
            got = rx.wait(1, uid=f"org-h.{eid}")[0]
            assert got.event.detail.contact.callsign == xml_text(name[:256], CALLSIGN_MAX)
            assert got.xml.find("detail/contact").get("callsign") == got.event.detail.contact.callsign
            assert [e.tag for e in got.xml.iter()].count("event") == 1
            assert "org <Org & Co>" in got.xml.find("detail/remarks").text
        assert rx.bad == []


def test_an_entity_the_lab_marks_not_live_is_sent_once_already_stale(lab_factory):
    lab = lab_factory(stale_after_s=0.5, sync_period_s=0.2)
    register_fleet(lab)
    with CotReceiver() as rx, CotSender(lab, rx.url, rate_hz=20) as tx:
        lab.publish_telemetry(
            "org-a", "uav-1", "GLOBAL_POSITION_INT", position(BASE_LAT, BASE_LON), wait=True
        )
        live, gone = rx.wait(2, uid="org-a.uav-1", what="uav-1 live, then not live")[:2]
        assert live.event.staleTime - live.event.sendTime == 500
        assert gone.event.staleTime == gone.event.sendTime
        assert lab.state_of("uav-1")["is_live"] is False
        wait_until(lambda: tx.stats()["tracked"] == 0, what="nothing left live on the TAK side")
        assert rx.events("org-a.uav-2") == []  # never live: never sent


def _cot_cli(data_dir, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "overwatch_lab.cli", "cot", "--data-dir", str(data_dir), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
    )  # fmt: skip


@pytest.mark.slow  # a Python start, imports and an attach: ~8 s on this shared box
def test_the_cli_attaches_sends_with_the_owners_stale_time_and_stops_on_sigint(lab_factory):
    lab = lab_factory(stale_after_s=4.0)
    register_fleet(lab)
    with CotReceiver() as rx:
        proc = _cot_cli(lab.config.data_dir, "--to", rx.url, "--affiliation", "org-b=hostile", "--rate", "5")
        try:
            assert proc.stdout is not None
            assert "Ctrl-C to stop" in proc.stdout.readline()
            fly_fleet(lab)
            check_fleet_events(rx, 4.0)  # the owner's stale time, read from its lab.json
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    assert "CoT: stopped" in out and '"sent": ' in out
