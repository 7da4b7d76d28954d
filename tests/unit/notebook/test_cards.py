"""The notebook cards: hostile names are escaped, the content is there, a repr never raises."""

from __future__ import annotations

import re

import pytest

from overwatch_lab.notebook import cards
from overwatch_lab.notebook.entity import EntityState
from overwatch_lab.notebook.html import esc, guarded, link, redact_url, safe_text

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>&amp;'


def no_raw_markup(html: str) -> None:
    """Nothing the hostile string carries survives as markup: its tags are there escaped only."""
    assert "<script" not in html and "<img" not in html
    assert (
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;&amp;amp;" in html
    )


def no_external_resources(html: str) -> None:
    assert not re.search(r"\b(src|href)=\"(?!https?://127\.0\.0\.1|http://localhost)", html)
    assert "<link" not in html and "<style" not in html and "@import" not in html and "url(" not in html


def test_esc_escapes_quotes_and_cuts_long_values():
    assert esc("\"a\" & 'b'") == "&quot;a&quot; &amp; &#x27;b&#x27;"
    assert esc("x" * 500, 10) == "x" * 9 + "…"
    assert esc(None) == "—" and esc(True) == "yes" and esc(float("nan")) == "—"


def test_link_only_makes_http_urls_into_links():
    assert link("javascript:alert(1)") == "javascript:alert(1)"
    assert link('http://127.0.0.1:5006/"><b>') == (
        '<a href="http://127.0.0.1:5006/&quot;&gt;&lt;b&gt;" target="_blank" rel="noopener noreferrer">'
        "http://127.0.0.1:5006/&quot;&gt;&lt;b&gt;</a>"
    )


def test_redact_url_drops_user_password_and_token():
    assert redact_url("nats://s3cret@127.0.0.1:4222") == "nats://127.0.0.1:4222"
    assert redact_url("nats://u:p@h:1/x@y") == "nats://h:1/x@y"
    assert redact_url("127.0.0.1:4222") == "127.0.0.1:4222"


def test_guarded_falls_back_to_the_plain_text_and_the_error():
    def boom() -> str:
        raise RuntimeError("<broken>")

    out = guarded(boom, lambda: "<Lab running>")
    assert out.startswith("<pre") and "&lt;Lab running&gt;" in out and "RuntimeError: &lt;broken&gt;" in out
    assert "RuntimeError" in guarded(boom, boom)  # even when the plain text fails too
    assert safe_text(boom) == "<unprintable: RuntimeError: <broken>>"


def lab_info(**over):
    info = {
        "state": "running",
        "owner": True,
        "data_dir": f"/tmp/{HOSTILE}",
        "nats_url": "nats://tok3n@127.0.0.1:4222",
        "monitor_url": "http://127.0.0.1:8222",
        "dashboard_url": "http://127.0.0.1:5006/",
        "db_url": "/tmp/x/overwatch.db",
        "orgs": 2,
        "entities": 7,
        "live": 5,
        "simulations": 1,
        "workers": [
            ("entity-worker", {"handled": 7, "acked": 7, "retried": 1, "quarantined": 0, "lag": 0}),
            ("telemetry-worker", {"handled": 90, "holding": True, "hold_reason": HOSTILE}),
        ],
        "synchronizer": {"passes": 3, "failed_passes": 0},
        "broker": {"restarts": 0},
        "unavailable": [],
    }
    info.update(over)
    return info


def test_lab_card_shows_state_links_counts_and_workers_but_never_the_token():
    html = cards.lab_card(lab_info())
    assert "running" in html and "owner" in html
    assert "nats://127.0.0.1:4222" in html and "tok3n" not in html
    assert '<a href="http://127.0.0.1:5006/"' in html and '<a href="http://127.0.0.1:8222"' in html
    assert "7 in KV, 5 live" in html and ">2<" in html
    assert "entity-worker" in html and "holding: " in html and "3 passes, 0 failed" in html
    no_raw_markup(html)
    no_external_resources(html)


def test_lab_card_of_a_stopped_lab_says_what_is_missing():
    html = cards.lab_card(
        {"state": "failed", "failure": f"BrokerExited: {HOSTILE}", "unavailable": ["counters (x)"]}
    )
    assert "failed" in html and "BrokerExited" in html and "not shown: counters (x)" in html
    no_raw_markup(html)


def doc(**over):
    d = {
        "entity_id": "uav-1",
        "org_id": "org-1",
        "org_name": HOSTILE,
        "name": HOSTILE,
        "entity_type": "aircraft_multirotor",
        "status": "active",
        "priority": "high",
        "is_live": True,
        "position": {"global": {"latitude": 32.95, "longitude": -96.8, "altitude_msl": 152.4, "fix_type": 3}},
        "vehicle_status": {"mode": "GUIDED", "armed": True},
        "power": {"battery_remaining": 87, "voltage": 15.2},
        "vfr": {"groundspeed": 4.5, "heading": 90},
        "detections": {"tracked_objects": {"a": {}, "b": {}}},
        "last_seen": "2026-01-01T00:00:00Z",
    }
    d.update(over)
    return d


def test_entity_card_shows_identity_position_vehicle_and_power():
    html = EntityState(doc())._repr_html_()
    for text in ("uav-1", "org-1", "aircraft_multirotor", "active / high", "32.95°", "-96.8°", "152.4 m",
                 "GUIDED", "87 %", "15.2 V", "4.5 m/s", "2 tracked objects", "live"):  # fmt: skip
        assert text in html, text
    no_raw_markup(html)
    no_external_resources(html)


def test_entity_card_of_an_entity_without_telemetry_says_so():
    html = EntityState(
        doc(position=None, vehicle_status="garbage", power={}, vfr=None, is_live=False)
    )._repr_html_()
    assert "no telemetry yet" in html and "stale" in html


def test_entity_state_is_a_read_only_mapping_of_the_document():
    state = EntityState(doc())
    assert state["vehicle_status"]["mode"] == "GUIDED" and state.get_path("power.voltage") == 15.2
    assert state.get_path("nope.deeper") is None and state.entity_id == "uav-1" and state.is_live is True
    assert dict(state) == doc() and len(state) == len(doc())
    with pytest.raises(TypeError):
        state["name"] = "x"  # type: ignore[index]
    copy = state.doc
    copy["name"] = "changed"
    assert state["name"] == HOSTILE
    assert repr(state).startswith(
        "<EntityState 'uav-1' aircraft_multirotor of 'org-1' live at 32.95000, -96.80000"
    )


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"position": ["not", "a", "dict"]},
        {"is_live": [1], "position": {"global": {"latitude": "x"}}},
        {"name": object(), "history": 3},
    ],  # fmt: skip
)
def test_an_entity_card_never_raises_on_a_strange_document(bad):
    state = EntityState(bad)
    assert "<div" in state._repr_html_() or "<pre" in state._repr_html_()
    assert repr(state).startswith("<")


def delivery(*stages, reason=None, at0=1_767_225_600.0):
    hist = [{"status": st, "at": at0 + i * 0.010, "reason": None} for i, st in enumerate(stages)]
    if reason:
        hist[-1]["reason"] = reason
    return {"status": stages[-1], "reason": reason, "history": hist}


def test_the_ladder_has_a_time_per_stage_relative_to_queued():
    deliveries = {"uav-1": delivery("QUEUED", "SENT", "RECEIVED", "ACCEPTED", "EXECUTING", "SUCCEEDED")}
    html = cards.ladder_card("cmd-1", "uav-1", deliveries, action="goto")
    assert "command cmd-1 · goto → uav-1" in html
    for col in cards.LADDER:
        assert f">{col}<" in html, col
    assert "00:00:00.000" in html and "+10 ms" in html and "+50 ms" in html
    assert html.count("SUCCEEDED") == 2  # the overall badge and the DONE cell


def test_the_ladder_of_a_rejected_broadcast_shows_the_least_advanced_and_the_reason():
    deliveries = {
        "uav-2": delivery("QUEUED", "REJECTED", reason=HOSTILE),
        "uav-1": delivery("QUEUED", "SENT"),
    }
    rows = cards.ladder_rows(deliveries)
    assert [r[0] for r in rows] == ["uav-1", "uav-2"] and rows[1][3] == "REJECTED"
    html = cards.ladder_card("cmd-2", "org-1 (broadcast)", deliveries)
    assert "QUEUED" in html and "REJECTED" in html
    no_raw_markup(html)


def test_the_ladder_of_a_big_broadcast_is_cut_and_counted():
    deliveries = {f"e{i:03d}": delivery("QUEUED") for i in range(cards.MAX_ROWS + 5)}
    html = cards.ladder_card("cmd-3", "org (broadcast)", deliveries)
    assert "e000" in html and f"e{cards.MAX_ROWS:03d}" not in html and "… and 5 more" in html


def test_an_unrecorded_command_says_so():
    html = cards.ladder_card("cmd-4", "uav-1", {}, stale="status as last seen: reading it failed")
    assert "not recorded yet" in html and "reading it failed" in html


def test_simulation_card_shows_state_speed_counts_and_faults():
    stats = {"scenario": HOSTILE, "seed": 7, "state": "paused", "speed": 5.0, "devices": 8,
             "sim_time_s": 30.0, "messages": 1200, "msgs_per_s": 40.0, "lag_s": 0.02}  # fmt: skip
    faults = [
        {"kind": "link_loss", "targets": ["drone-001"], "start_s": 10.0, "end_s": 35.0, "source": "live"},
        {"kind": "reboot", "targets": ["*"], "start_s": 40.0, "end_s": 50.0, "source": "scenario"},
        {"kind": "gps_dropout", "targets": [HOSTILE], "start_s": 1.0, "end_s": 2.0, "source": "scenario"},
    ]
    html = cards.simulation_card(stats, faults)
    for text in ("paused", "5× real time", "30.0 s", "1200 (40/s)", "faults (3)", "link_loss", "drone-001",
                 "10.0 – 35.0", "active", "pending", "over"):  # fmt: skip
        assert text in html, text
    no_raw_markup(html)
    no_external_resources(html)
