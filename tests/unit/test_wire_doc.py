"""docs/wire.md stays in step with the code it documents.

The page is for device integrators, so a name, limit or example that drifted from the code is a
bug. Tables are found by a ``<!-- table: NAME -->`` marker, examples by ``<!-- example: NAME -->``
before a ```json block. When a test here fails after a code change, update docs/wire.md.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from overwatch_lab.broker import provision
from overwatch_lab.commands.ledger import Tracked
from overwatch_lab.commands.worker import CommandAckWorker, CommandWorker
from overwatch_lab.config import DEFAULT_COMMAND_ACKS_STREAM, DEFAULT_STREAMS, LabConfig
from overwatch_lab.core import stats as lab_stats
from overwatch_lab.errors import EnvelopeError
from overwatch_lab.protocol import command_actions, entities, envelopes, events, lifecycle, mavlink, state
from overwatch_lab.protocol import commands as cmds
from overwatch_lab.protocol import subjects as s
from overwatch_lab.workers.base import ConsumerLoop
from overwatch_lab.workers.entity import EntityWorker, OrganizationWorker
from overwatch_lab.workers.event import EventWorker
from overwatch_lab.workers.telemetry import TelemetryWorker

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "wire.md").read_text()
FLAT = DOC.replace("\\|", "|")  # markdown tables escape the pipes of {a|b} subject patterns
WORKERS = (TelemetryWorker, EntityWorker, OrganizationWorker, EventWorker, CommandWorker, CommandAckWorker)
ACK_STREAM = {cmds.STREAM_COMMAND_ACKS: DEFAULT_COMMAND_ACKS_STREAM}

_UNITS = {"s": 1, "min": 60, "h": 3600, "d": 86400, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


def table(name: str) -> list[dict[str, str]]:
    """The rows of the markdown table after ``<!-- table: name -->``, keyed by header, backticks kept."""
    marker = f"<!-- table: {name} -->"
    assert marker in DOC, f"docs/wire.md has no {marker}"
    lines = DOC.split(marker, 1)[1].lstrip("\n").splitlines()
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        cells = [c.replace("\\|", "|").strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
        rows.append(cells)
    header, body = rows[0], rows[2:]
    return [dict(zip(header, r, strict=True)) for r in body]


def plain(cell: str) -> str:
    return cell.replace("`", "").replace("**", "").strip()  # bold marks, not the wildcards of a filter


def quantity(cell: str) -> Any:
    """'100,000' -> 100000.0, '256 MiB' -> bytes, '15 min' -> seconds, 'none' -> None, else the text."""
    text = plain(cell)
    if text == "none":
        return None
    m = re.fullmatch(r"(-?[\d,]*\.?\d+)\s*([A-Za-z]+)?", text)
    if m is None or (m[2] is not None and m[2] not in _UNITS):
        return text
    return float(m[1].replace(",", "")) * _UNITS.get(m[2] or "", 1)


def names(cell: str) -> set[str]:
    return set(re.findall(r"`(\w+)`", cell))


def examples() -> dict[str, tuple[str, Any]]:
    found = re.findall(r"<!-- example: ([\w-]+) -->\n```json\n(.*?)\n```", DOC, flags=re.S)
    out = {name: (raw, json.loads(raw)) for name, raw in found}
    assert len(out) == len(found), "two examples share a name"
    return out


EXAMPLES = examples()


def example(name: str) -> Any:
    return EXAMPLES[name][1]


def raw(name: str) -> str:
    return EXAMPLES[name][0]


# ---------------------------------------------------------------------------------------------
# Names, subjects, streams, consumers, KV


def _module_names(module: object) -> list[str]:
    return [
        v
        for k, v in vars(module).items()
        if isinstance(v, str) and (k.startswith(("STREAM_", "CONSUMER_", "KV_")) or k.endswith("_ALL"))
    ]


@pytest.mark.parametrize("name", [*_module_names(s), *_module_names(cmds), lab_stats.STATS_BUCKET])
def test_every_stream_consumer_kv_and_wildcard_name_is_documented(name):
    assert re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", DOC), name


def test_subject_patterns_match_the_builders():
    o, e, t, v = "ORGX", "ENTX", "TRKX", "EVTX"

    def pattern(subject: str) -> str:
        return (
            subject.replace(o, "{org_id}").replace(e, "{entity_id}")
            .replace(t, "{track_id}").replace(v, "{event_type}")
        )  # fmt: skip

    built = [
        s.telemetry_subject(o, e),
        s.detection_subject(o, e, t),
        s.device_event_subject(o, e, v),
        s.command_subject(o, e),
        s.command_subject(o),
        cmds.delivery_subject(o, e),
        cmds.ack_subject(o, e),
    ]
    for subject in built:
        assert f"`{pattern(subject)}`" in DOC, pattern(subject)
    assert s.quarantine_subject("WORKERX").replace("workerx", "{worker}") in DOC
    assert f"constellation.entities.{{org_id}}.{{{'|'.join(s.ENTITY_EVENT_KINDS)}}}" in FLAT
    assert f"constellation.organizations.{{{'|'.join(s.ORG_EVENT_KINDS)}}}" in FLAT
    assert f"`^{s.TOKEN_RE.pattern}$`" in DOC
    assert f"`^{s.MESSAGE_TYPE_RE.pattern}$`" in DOC


@pytest.mark.parametrize("worker", WORKERS, ids=lambda w: w.name)
def test_every_workers_quarantine_subject_is_listed(worker):
    assert f"`{s.quarantine_subject(worker.name)}`" in DOC


def test_stream_table_equals_the_default_limits():
    expected = {**DEFAULT_STREAMS, **ACK_STREAM}
    rows = {r["stream"]: r for r in table("streams")}
    assert set(rows) == set(expected), "the stream table must list every default stream"
    for name, lim in expected.items():
        r = rows[name]
        documented = (
            tuple(sorted(names(r["subjects"]) or {plain(r["subjects"])})),
            plain(r["retention"]),
            quantity(r["max msgs"]),
            quantity(r["max bytes"]),
            quantity(r["max age"]),
            quantity(r["max msg size"]),
            quantity(r["dedup window"]),
            plain(r["discard"]),
        )
        actual = (
            tuple(sorted(lim.subjects)), lim.retention, lim.max_msgs, lim.max_bytes, lim.max_age_s,
            lim.max_msg_size, lim.duplicate_window_s, lim.discard,
        )  # fmt: skip
        assert documented == actual, f"docs/wire.md streams table row {name} differs from config.py"


def test_stream_subjects_cell_shows_the_wildcard():
    for r in table("streams"):
        assert r["subjects"].startswith("`constellation.") and r["subjects"].endswith(".>`"), r["stream"]


def test_kv_table_equals_the_bucket_settings(tmp_path):
    cfg = LabConfig(data_dir=tmp_path)
    rows = {r["bucket"]: r for r in table("kv")}
    assert set(rows) == {s.KV_GLOBAL_STATE, cmds.KV_COMMAND_STATE, lab_stats.STATS_BUCKET}
    assert quantity(rows[s.KV_GLOBAL_STATE]["history"]) == cfg.kv_history
    assert quantity(rows[s.KV_GLOBAL_STATE]["TTL"]) is None
    assert quantity(rows[cmds.KV_COMMAND_STATE]["history"]) == cfg.command_state_history
    assert quantity(rows[cmds.KV_COMMAND_STATE]["TTL"]) == cfg.command_state_max_age_s
    assert cmds.state_key("{command_id}", "{entity_id}") in rows[cmds.KV_COMMAND_STATE]["key"]


def test_partition_transform_is_documented():
    assert s.TELEMETRY_TRANSFORM_SRC in DOC
    assert s.telemetry_transform_dest(4).replace("(4,", "(P,") in DOC
    assert str(LabConfig.__dataclass_fields__["telemetry_partitions"].default) in DOC


def test_consumer_table_equals_provisioning():
    expected = {
        *provision.CONSUMERS,
        (cmds.STREAM_COMMAND_ACKS, cmds.CONSUMER_COMMAND_ACK, cmds.COMMAND_ACKS_ALL),
        (  # one row for every partition's durable
            s.STREAM_TELEMETRY,
            s.CONSUMER_TELEMETRY_PARTITION,
            s.telemetry_partition_filter(0).removesuffix("0") + "{partition}",
        ),
    }
    rows = table("consumers")
    assert {(r["stream"], plain(r["durable"]), plain(r["filter"])) for r in rows} == expected
    worker_of = {w.durable: (w.name, w.stream) for w in WORKERS}
    worker_of[s.CONSUMER_TELEMETRY_PARTITION] = (TelemetryWorker.name, TelemetryWorker.stream)
    for r in rows:
        assert (plain(r["worker"]), r["stream"]) == worker_of[plain(r["durable"])]


# ---------------------------------------------------------------------------------------------
# Envelope fields


def _fields_and_required(rows: list[dict[str, str]]) -> tuple[set[str], set[str]]:
    fields, required = set(), set()
    for r in rows:
        got = names(r["field"])
        fields |= got
        if r.get("required", "").strip() == "yes":
            required |= got
    return fields, required


def test_telemetry_table_equals_the_decoder():
    fields, required = _fields_and_required(table("telemetry"))
    assert fields == envelopes._TELEMETRY_ALLOWED
    assert required == envelopes._TELEMETRY_REQUIRED


def test_detection_table_equals_the_decoder():
    fields, _ = _fields_and_required(table("detection"))
    assert fields == events._DETECTION_FIELDS


def test_event_envelope_table_equals_the_decoder():
    fields, required = _fields_and_required(table("event-envelope"))
    assert fields == lifecycle._EVENT_ALLOWED
    assert required == lifecycle._EVENT_REQUIRED


def test_command_table_names_every_field():
    rows = table("command")
    documented = set().union(*(names(r["field"]) | names(r["rule"]) for r in rows))
    assert cmds._TOP_FIELDS <= documented, cmds._TOP_FIELDS - documented
    for name in command_actions.RELAY_FIELDS:
        if not re.fullmatch(r"param\d", name):
            assert f"`{name}`" in DOC, name
    assert "`param1` … `param7`" in DOC
    for relay_type in command_actions.RELAY_TYPES:
        assert relay_type in DOC


def test_ack_table_equals_the_decoder():
    fields, required = _fields_and_required(table("ack"))
    assert fields == cmds._ACK_FIELDS
    assert required == cmds._ACK_REQUIRED
    assert f"`Nats-Msg-Id: {cmds.ack_msg_id('{command_id}', '{entity_id}', '{status}')}`" in DOC


def test_entity_record_columns_and_allowed_values_are_listed():
    for column in entities.ENTITY_COLUMNS:
        assert re.search(rf"\b{column}\b", DOC), column
    for values in (
        entities.ENTITY_TYPES,
        entities.STATUSES,
        entities.PRIORITIES,
        entities.ORG_TYPES,
    ):
        assert ", ".join(values) in DOC.replace("\n  ", " "), values


# ---------------------------------------------------------------------------------------------
# Projections


def test_projection_table_equals_the_projections():
    rows = {r["message_type"]: r for r in table("projection")}
    assert {mt: int(r["id"]) for mt, r in rows.items()} == mavlink.MESSAGE_IDS
    for mt, specs in mavlink._SPECS.items():
        row = rows[mt]["data fields → state (unit)"]
        for key, _lo, _hi, _label, conv, path, _ts in specs:
            assert f"`{key}`" in row, (mt, key)
            assert f"`{'.'.join(path)}`" in row, (mt, path)
            if isinstance(conv, float):
                assert f"÷ {'1e7' if conv == 1e7 else f'{conv:g}'}" in row, (mt, key, conv)
    for mt, path in (
        ("HEARTBEAT", "vehicle_status.mode"),
        ("BATTERY_STATUS", "power.cells"),
        ("SERVO_OUTPUT_RAW", "actuators.servos"),
    ):
        assert f"`{path}`" in rows[mt]["data fields → state (unit)"]


def test_mode_names_are_listed():
    for number, name in mavlink.MODE_NAMES.items():
        assert re.search(rf"\b{number} {name}\b", DOC), (number, name)


def test_golden_table_equals_the_projection_of_the_example():
    env = envelopes.decode_telemetry(raw("telemetry"))
    proj = mavlink.project(env.message_type, env.data, env.timestamp)
    assert proj.skipped == ()
    documented = {plain(r["state leaf"]): r["value"] for r in table("golden")}
    computed = {".".join(p): v for p, v in proj.sets.items()}
    assert set(documented) == set(computed)
    for leaf, value in computed.items():
        assert (float(documented[leaf]) if isinstance(value, float) else documented[leaf]) == value, leaf


# ---------------------------------------------------------------------------------------------
# Commands


def test_transition_table_equals_the_lifecycle():
    rows = {r["status"]: r for r in table("transitions")}
    assert set(rows) == {str(st) for st in cmds.CommandStatus}
    for st, allowed in cmds.ALLOWED_FROM.items():
        statuses = {str(x) for x in cmds.CommandStatus}
        follows = {w for w in re.findall(r"[A-Z]+", rows[str(st)]["may follow"]) if w in statuses}
        assert follows == {str(a) for a in allowed}, st


def test_action_table_equals_the_params():
    rows = {plain(r["action"]): r for r in table("actions")}
    assert set(rows) == {str(a) for a in command_actions.Action}
    for action, params in command_actions._PARAMS.items():
        cell = rows[str(action)]["params (required in bold)"]
        for p in params:
            assert re.search(rf"\b{p}\b", cell), (action, p)
        required = set(re.findall(r"\*\*(\w+)\*\*", cell))
        assert required == set(command_actions._REQUIRED.get(action, ())), action


def test_config_table_equals_the_defaults(tmp_path):
    cfg = LabConfig(data_dir=tmp_path)
    rows = table("config")
    assert rows
    for r in rows:
        field = plain(r["LabConfig field"])
        assert quantity(r["default"]) == getattr(cfg, field), field


# ---------------------------------------------------------------------------------------------
# Examples: each one is decoded by the lab's own decoders


def test_every_example_is_checked():
    assert set(EXAMPLES) == {
        "org-created", "entity-created", "entity-status", "telemetry", "detection", "device-event",
        "kv-entity", "quarantine", "command", "command-relay", "cancel", "delivery", "cancel-notice",
        "ack-received", "ack-failed", "command-state",
    }  # fmt: skip


def test_lifecycle_examples_decode():
    org = lifecycle.decode_org_event(
        raw("org-created"), s.parse_organization_subject(example("org-created")["subject"])
    )
    assert (org.org_id, org.name, org.org_type) == ("org-galaxy", "Galaxy", "civilian")
    for name in ("entity-created", "entity-status"):
        ev = lifecycle.decode_entity_event(raw(name), s.parse_entity_subject(example(name)["subject"]))
        assert ev.entity_id == "gc35-e4b"


def test_telemetry_example_is_complete_and_valid():
    env = example("telemetry")
    assert set(env) == envelopes._TELEMETRY_ALLOWED, "the complete example carries every field"
    subject = s.parse_telemetry_subject(s.telemetry_subject(env["org_id"], env["entity_id"]))
    t = envelopes.decode_telemetry(raw("telemetry"), subject)
    assert t.message_id == mavlink.MESSAGE_IDS[t.message_type]


def test_detection_and_device_event_examples_decode():
    d = example("detection")
    det = events.decode_detection(
        raw("detection"),
        s.parse_event_subject(s.detection_subject(d["org_id"], d["entity_id"], d["track_id"])),
    )
    doc = state.new_entity_doc({"entity_id": d["entity_id"], "org_id": d["org_id"]}, None, det.timestamp)
    assert state.merge_detection(doc, det)
    bullet = re.search(r"`detections\{(.*?)timestamp\}`", DOC, flags=re.S)
    assert bullet is not None
    for key in doc["detections"]["tracked_objects"][det.track_id]:
        assert re.search(rf"\b{key}\b", bullet[1]), key
    ev = example("device-event")
    subject = s.parse_event_subject(s.device_event_subject(ev["org_id"], ev["entity_id"], ev["event_type"]))
    assert events.decode_device_event(raw("device-event"), subject).event_type == "bootsequence"


def test_kv_example_is_the_document_the_golden_example_produces():
    e, ts = example("kv-entity"), "2026-11-27T10:00:00.000000Z"
    t = envelopes.decode_telemetry(raw("telemetry"))
    assert t.timestamp == ts
    doc = state.new_entity_doc(e, e["org_name"], e["created_at"])
    proj = mavlink.project(t.message_type, t.data, t.timestamp)
    state.merge_telemetry(
        doc,
        sets=proj.sets,
        cursors={t.message_type: (t.message_uid, t.timestamp)},
        last_seen=t.timestamp,
        system_id=t.system_id,
        component_id=t.component_id,
    )
    state.mark_received(doc, e["received_at"])
    assert doc == e


async def test_quarantine_table_and_example_equal_what_the_loop_publishes(tmp_path):
    q = example("quarantine")
    published: list[tuple[str, bytes, dict[str, str]]] = []

    class FakeJS:
        async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> None:
            published.append((subject, payload, headers))

    body = base64.b64decode(q["original_data"])
    with pytest.raises(EnvelopeError) as err:
        envelopes.decode_telemetry(body, s.parse_telemetry_subject(q["original_subject"]))
    assert str(err.value) == q["error"]
    meta = SimpleNamespace(sequence=SimpleNamespace(stream=q["stream_sequence"]), num_delivered=1)
    msg = SimpleNamespace(subject=q["original_subject"], data=body, metadata=meta)
    worker = TelemetryWorker(None, None, None)  # type: ignore[arg-type]  # only its names are used
    loop = ConsumerLoop(worker, None, FakeJS(), LabConfig(data_dir=tmp_path))  # type: ignore[arg-type]
    assert await loop._quarantine(msg, q["error"]) is None  # None: published, nothing to hold for
    subject, payload, headers = published[0]
    record = json.loads(payload)
    assert subject == s.quarantine_subject(worker.name)
    assert headers == {"Nats-Msg-Id": f"quarantine-{worker.stream}-{q['stream_sequence']}"}
    assert set(record) == set(q) == {plain(r["field"]) for r in table("quarantine")}
    assert {k: v for k, v in record.items() if k != "quarantined_at"} == {
        k: v for k, v in q.items() if k != "quarantined_at"
    }
    assert "`quarantine-{stream}-{stream_seq}`" in DOC


def _decode_command(name: str) -> Any:
    obj = example(name)
    issued = obj.get("issued_at")
    now = envelopes.parse_timestamp(issued)[1] + 0.2 if issued else 1.8e9
    subject = cmds.parse_command_subject(s.command_subject(obj["org_id"], obj.get("entity_id")))
    return cmds.decode_command(
        raw(name), subject, now_ts=now, fallback_id="cmd-1", default_ttl_s=60.0,
        max_ttl_s=900.0, max_bytes=16 * 1024,
    )  # fmt: skip


def test_command_example_is_delivered_as_the_delivery_example():
    cmd = _decode_command("command")
    assert isinstance(cmd, cmds.Command)
    delivery = cmds.make_delivery(cmd.envelope(), expires_ts=cmd.expires_ts, attempt=1)
    assert delivery == example("delivery")


def test_relay_and_cancel_examples_decode():
    relay = _decode_command("command-relay")
    assert isinstance(relay, cmds.Command) and relay.action is command_actions.Action.RTL
    cancel = _decode_command("cancel")
    assert isinstance(cancel, cmds.CancelRequest)
    notice = cmds.make_cancel(cancel.org_id, cancel.entity_id, cancel.command_id, source=cancel.source)
    assert notice == example("cancel-notice")


def test_ack_examples_decode():
    for name, status in (("ack-received", "RECEIVED"), ("ack-failed", "FAILED")):
        a = example(name)
        ack = cmds.decode_ack(
            raw(name), cmds.parse_ack_subject(cmds.ack_subject(a["org_id"], a["entity_id"]))
        )
        assert ack.status == status


def test_command_state_example_has_the_ledgers_fields():
    doc = Tracked("c", "e", "o", {}, cmds.CommandStatus.QUEUED).doc()
    ex = example("command-state")
    assert set(ex) == set(doc)
    assert set(ex["times"]) <= set(cmds.STAGES)
    assert all(set(h) == {"status", "at", "reason"} for h in ex["history"])
    for key in doc:
        assert f"`{key}`" in DOC, key


def test_readme_points_here():
    assert "docs/wire.md" in (ROOT / "README.md").read_text().split("## ", 1)[0]
