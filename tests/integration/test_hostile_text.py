"""A hostile device's text and numbers, on a real lab: shown escaped, never interpreted or stored
as non-JSON (issue 13, second paragraph).

- a field name or a subject with a newline or ANSI escapes cannot forge or repaint a line of
  ``overwatch-lab up``'s stderr, and the quarantine reason shows them as ``\\n``/``\\x1b``;
- ``1e400`` (a float overflow): telemetry keeps the field out of live state and its history row
  holds valid JSON; an entity or device event carrying one is quarantined with the reason,
  leaving no row and no KV document behind.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import nats

from overwatch_lab.nats_auth import NatsAuth
from overwatch_lab.protocol import commands, envelopes, lifecycle
from overwatch_lab.protocol import subjects as s
from tests.integration.test_lab_lifecycle import nats_server_pids
from tests.polling import wait_for, wait_until

ORG = "org-h"
EID = "drone-h"
SUBJ = f"constellation.telemetry.{ORG}.{EID}"
FORGED = "2026-01-01 00:00:00,000 ERROR overwatch_lab.lab: lab failed: forged"
ANSI = "\x1b[31mRED\x1b[0m\x1b]0;title\x07"


def strict_json(text: str | bytes, *, finite: bool = True) -> object:
    """``json.loads`` that fails on NaN/Infinity and (``finite``) on a number that overflows to inf."""

    def no_constant(name: str) -> object:
        raise AssertionError(f"non-JSON constant {name} in {text!r:.200}")

    def finite_float(num: str) -> float:
        value = float(num)
        assert math.isfinite(value), f"{num} decodes to {value} in {text!r:.200}"
        return value

    return json.loads(text, parse_constant=no_constant, parse_float=finite_float if finite else None)


def telemetry(data: dict | None = None, /, **changes: object) -> dict:
    env = envelopes.make_telemetry(ORG, EID, "ATTITUDE", data or {"roll": 0.1}, timestamp=time.time())
    env.update(changes)
    return env


def raw(obj: object) -> bytes:
    return json.dumps(obj).encode()


def control_free(text: str) -> bool:
    return text.isprintable()


async def _register(js, kv) -> None:
    org = lifecycle.make_org_event("created", ORG, "Hostile", "civilian")
    await js.publish(s.organization_subject("created"), envelopes.encode(org))
    rec = {"entity_id": EID, "org_id": ORG, "entity_type": "aircraft_multirotor"}
    await js.publish(
        s.entity_subject(ORG, "created"), envelopes.encode(lifecycle.make_entity_event("created", rec))
    )

    async def in_kv() -> bool:
        try:
            return bool(await kv.get(EID))
        except Exception:  # KeyNotFoundError until the entity worker has written it
            return False

    await wait_for(in_kv, timeout=15, interval=0.05, what="entity in KV")


async def _quarantine_errors(js, n: int) -> list[str]:
    async def count() -> int:
        return (await js.stream_info(s.STREAM_QUARANTINE)).state.messages >= n

    await wait_for(count, timeout=15, interval=0.05, what=f"{n} quarantine records")
    info = await js.stream_info(s.STREAM_QUARANTINE)
    msgs = [
        await js.get_msg(s.STREAM_QUARANTINE, seq)
        for seq in range(info.state.first_seq, info.state.last_seq + 1)
    ]
    return [json.loads(m.data)["error"] for m in msgs]


async def _hostile_device(info: dict) -> list[str]:
    """Register, send the hostile messages with nats-py as raw bytes; return the quarantine reasons."""
    nc = await nats.connect(info["nats_url"], **NatsAuth.from_dict(info["nats_auth"]).kwargs(), allow_reconnect=False)
    try:
        js = nc.jetstream()
        await _register(js, await js.key_value(s.KV_GLOBAL_STATE))
        await js.publish(SUBJ, raw(telemetry(**{f"x\n{FORGED}": 1})))  # the report's forged line
        await js.publish(SUBJ, raw(telemetry(**{ANSI: 1})))
        await js.publish(SUBJ, raw(telemetry(message_type=f"BAD\r\n{FORGED}")))
        await js.publish(f"constellation.telemetry.{ORG}.{ANSI[:5]}", raw(telemetry()))  # in the subject
        return await _quarantine_errors(js, 4)
    finally:
        await nc.close()


def test_up_stderr_has_no_forged_line_and_no_raw_escape(tmp_path: Path):
    data_dir = tmp_path / "lab"
    stderr_file = tmp_path / "stderr.txt"
    with stderr_file.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "overwatch_lab.cli", "up", "--data-dir", str(data_dir),
             "--fleet", "none", "--no-dashboard"],
            stdout=subprocess.PIPE, stderr=err, text=True,
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        while (line := proc.stdout.readline()) and "Ctrl-C to stop." not in line:
            pass
        errors = asyncio.run(_hostile_device(json.loads((data_dir / "lab.json").read_text())))
        # the reasons: every control character shown as its escape
        assert all(control_free(e) for e in errors), errors
        assert any(f"x\\n{FORGED}"[:40] in e for e in errors), errors
        assert any("\\x1b[31mRED" in e for e in errors), errors
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert nats_server_pids(str(data_dir)) == []
    log = stderr_file.read_text()
    lines = log.splitlines()
    assert "quarantined" in log  # the quarantine warnings were logged...
    assert not [
        ln for ln in lines if ln.startswith("2026-01-01") or "lab failed: forged" in ln and "\\n" not in ln
    ]
    assert "\x1b" not in log and "\x07" not in log and "\r" not in log  # ...with nothing raw in them
    assert f"x\\n{FORGED}"[:40] in log and "\\x1b[31mRED" in log  # shown escaped


def test_quarantine_reasons_and_log_records_show_control_characters_escaped(lab, caplog):
    lab.register_org(ORG)
    lab.register_entity(ORG, EID, "aircraft_multirotor")
    caplog.set_level("WARNING", logger="overwatch_lab")
    lab.publish(SUBJ, raw(telemetry(**{f"x\n{FORGED}": 1, ANSI: 2})))
    ack = {"command_id": "c1", "org_id": f"o\n{FORGED}", "entity_id": EID, "status": "RECEIVED",
           "timestamp": envelopes.now_timestamp()}  # fmt: skip
    lab.publish(commands.ack_subject(ORG, EID), raw(ack))
    q = lab.wait_for(
        lambda: (f := lab.frames.quarantine()).shape[0] >= 2 and f, timeout=15, what="quarantine"
    )
    errors = list(q["error"])
    assert all(control_free(e) for e in errors), errors
    assert any("\\x1b[31mRED" in e and f"x\\n{FORGED}"[:40] in e for e in errors), errors
    assert any(f"o\\n{FORGED}"[:40] in e for e in errors), errors
    wait_until(lambda: sum("quarantined" in r.getMessage() for r in caplog.records) >= 2, what="log records")
    for record in caplog.records:
        assert control_free(record.getMessage()), record.getMessage()


def test_a_float_overflow_never_reaches_history_kv_or_rows_as_non_json(lab):
    lab.register_org(ORG)
    lab.register_entity(ORG, EID, "aircraft_multirotor")
    # telemetry: the contract skips the field (live state) and keeps the message (history)
    env = telemetry({"roll": "@r", "pitch": 0.25, "yaw": "@y", "extra": {"deep": "@r"}})
    body = raw(env).replace(b'"@r"', b"1e400").replace(b'"@y"', b"-1e400")
    lab.publish(SUBJ, body)
    doc = lab.wait_for(
        lambda: (d := lab.state_of(EID)) and d["attitude"]["euler"]["pitch"] == 0.25 and d,
        what="pitch applied",
    )
    assert doc["attitude"]["euler"]["roll"] is None and doc["attitude"]["euler"]["yaw"] is None  # skipped
    # an entity record and a device event carrying one: quarantined with the reason
    rec = {
        "entity_id": "drone-inf",
        "org_id": ORG,
        "entity_type": "aircraft_multirotor",
        "metadata": {"x": "@r"},
    }
    lab.publish(
        s.entity_subject(ORG, "created"),
        raw(lifecycle.make_entity_event("created", rec)).replace(b'"@r"', b"1e400"),
    )
    lab.publish(s.device_event_subject(ORG, EID, "bootsequence"), b'{"event_uid":"ev-inf","v":1e400}')
    q = lab.wait_for(
        lambda: (f := lab.frames.quarantine()).shape[0] >= 2 and f, timeout=15, what="quarantine"
    )
    assert sorted(q["worker"]) == ["entity-worker", "event-worker"]
    assert all("1e400 is too large for a float" in e for e in q["error"]), list(q["error"])

    db = sqlite3.connect(lab.config.db_path)
    try:
        (data,) = db.execute(
            "SELECT data FROM telemetry WHERE message_uid = ?", (env["message_uid"],)
        ).fetchone()
        # the message's own text: JSON (no Infinity/NaN constant), the overflow kept as sent
        assert strict_json(data, finite=False) == strict_json(body, finite=False)["data"]
        assert "1e400" in data and "Infinity" not in data and "NaN" not in data
        for table, col in (("entities", "metadata"), ("entities", "components"), ("device_events", "data")):
            for (text,) in db.execute(f"SELECT {col} FROM {table} WHERE {col} IS NOT NULL"):
                strict_json(text)
        assert db.execute("SELECT count(*) FROM entities WHERE entity_id = 'drone-inf'").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM device_events").fetchone() == (0,)
    finally:
        db.close()
    assert lab.state_of("drone-inf") is None
    strict_json(json.dumps(lab.state_of(EID), allow_nan=False))  # the KV document, as stored
