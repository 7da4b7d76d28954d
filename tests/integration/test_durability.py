"""Lose nothing, tried from outside: a retrying publisher across a lab or broker kill.

Runs ``overwatch-lab bench durability`` small: a separate ``overwatch-lab up`` process, a
publisher that keeps every PubAck and backfills what failed (so retried messages land after
newer ones), one fault in the middle, and then a count against libSQL and the KV.
"""

from __future__ import annotations

import pytest

from overwatch_lab.bench import durability

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("fault", durability.FAULTS)
def test_every_acknowledged_message_has_exactly_one_history_row(fault, tmp_path):
    r = durability.run(
        fault=fault, messages=20_000, entities=20, out_dir=tmp_path / "out", data_dir=tmp_path / "lab"
    )
    assert not r["publisher_gave_up"], r
    assert r["pubacked"] == r["sent"] == 20_000, r
    assert r["lost"] == 0, r
    assert r["quarantined"] == 0, r
    assert r["stored"] == r["sent"], r
    assert r["duplicated"] == 0, r
    assert r["kv_newest_ok"] == r["kv_entities"] == 20, r
    # Devices reconnect with what they were given: the broker kept its URL and token.
    assert r["url_and_token_kept"], r
    assert r["publisher_moved_to_new_url"] == 0, r
    if fault == "broker-kill":
        assert r["lab_survived_broker_kill"], r
