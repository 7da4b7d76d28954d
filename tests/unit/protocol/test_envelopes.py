"""Envelopes (protocol/envelopes.py): strict JSON, timestamps, the telemetry envelope."""

from __future__ import annotations

import json
import random
import time

import pytest

from overwatch_lab.errors import EnvelopeError, ProtocolError, SubjectError
from overwatch_lab.protocol import envelopes as e
from overwatch_lab.protocol.mavlink import MESSAGE_IDS
from overwatch_lab.protocol.subjects import TelemetrySubject

ORG, ENT = "org-galaxy", "gc35-e4b"
SUBJ = TelemetrySubject(ORG, ENT)
GOLDEN_DATA = {
    "lat": 329488100,
    "lon": -968013200,
    "alt": 152400,
    "relative_alt": 30480,
    "hdg": 9000,
    "vx": 123,
    "vy": -45,
    "vz": 6,
}
TS = "2026-11-27T10:00:00.000000Z"


def golden() -> dict:
    return {
        "schema_version": "1.0.0",
        "message_uid": "m-0001",
        "org_id": ORG,
        "entity_id": ENT,
        "source": "GC35-E4B",
        "message_id": 33,
        "message_type": "GLOBAL_POSITION_INT",
        "system_id": 1,
        "component_id": 1,
        "data": dict(GOLDEN_DATA),
        "timestamp": TS,
    }


def body(obj: object) -> bytes:
    return json.dumps(obj).encode()


def with_(**changes: object) -> bytes:
    env = golden()
    env.update(changes)
    return body(env)


def without(field: str) -> bytes:
    env = golden()
    del env[field]
    return body(env)


# --------------------------------------------------------------------------- loads_strict


@pytest.mark.parametrize("text", ['{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}', "NaN"])
def test_loads_strict_rejects_non_finite(text):
    with pytest.raises(EnvelopeError, match=r"^thing: .*(NaN|Infinity)"):
        e.loads_strict(text.encode(), "thing")


def test_loads_strict_rejects_invalid_utf8():
    with pytest.raises(EnvelopeError, match="UTF-8"):
        e.loads_strict(b'{"a": "\xff"}', "thing")


@pytest.mark.parametrize("text", ["{}{}", '{"a":1} 2', '{"a":1}x', "[1] []"])
def test_loads_strict_rejects_trailing_data(text):
    with pytest.raises(EnvelopeError, match="trailing data"):
        e.loads_strict(text, "thing")


@pytest.mark.parametrize("text", ["", "{", '{"a":}', "{'a': 1}", "[1,]", '{"a" 1}', "\ufeff{}"])
def test_loads_strict_rejects_malformed(text):
    with pytest.raises(EnvelopeError, match="malformed JSON"):
        e.loads_strict(text, "thing")


def test_loads_strict_rejects_absurd_numbers_and_nesting():
    with pytest.raises(EnvelopeError):
        e.loads_strict('{"a": ' + "9" * 5000 + "}", "thing")
    with pytest.raises(EnvelopeError):
        e.loads_strict("[" * 100_000 + "]" * 100_000, "thing")


def test_loads_strict_accepts_str_bytes_and_whitespace():
    assert e.loads_strict(b' {"a": [1, 2.5, "\xc3\xa9"]} \n', "x") == {"a": [1, 2.5, "é"]}
    assert e.loads_strict(memoryview(b"[1]"), "x") == [1]
    assert e.loads_strict("null", "x") is None


def test_encode_is_compact_utf8_and_rejects_nan():
    assert e.encode({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode()
    with pytest.raises(EnvelopeError):
        e.encode({"a": float("nan")})
    with pytest.raises(EnvelopeError):
        e.encode({"a": object()})


# --------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("2026-11-27T10:00:00Z", "2026-11-27T10:00:00.000000Z"),
        ("2026-11-27T10:00:00.000000Z", "2026-11-27T10:00:00.000000Z"),
        ("2026-11-27T10:00:00.1Z", "2026-11-27T10:00:00.100000Z"),
        ("2026-11-27T10:00:00.123456789+02:00", "2026-11-27T08:00:00.123456Z"),
        ("2026-11-27T10:00:00.1234567Z", "2026-11-27T10:00:00.123456Z"),
        ("2026-11-27T01:00:00-05:30", "2026-11-27T06:30:00.000000Z"),
        ("2026-11-27T23:30:00-01:00", "2026-11-28T00:30:00.000000Z"),
        ("2026-11-27T10:00:00+00:00", "2026-11-27T10:00:00.000000Z"),
        ("2026-11-27t10:00:00.5z", "2026-11-27T10:00:00.500000Z"),
        ("2024-02-29T00:00:00Z", "2024-02-29T00:00:00.000000Z"),
        ("0002-01-01T00:00:00Z", "0002-01-01T00:00:00.000000Z"),
    ],
)
def test_parse_timestamp_canonicalises(text, canonical):
    got, ts = e.parse_timestamp(text)
    assert got == canonical
    assert e.parse_timestamp(canonical) == (canonical, ts)
    assert e.format_timestamp(ts) == canonical


def test_parse_timestamp_epoch_value():
    assert e.parse_timestamp("1970-01-01T00:00:01.5Z")[1] == 1.5
    assert e.parse_timestamp("2026-11-27T10:00:00+02:00")[1] == e.parse_timestamp("2026-11-27T08:00:00Z")[1]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("0001-01-01T00:00:00Z", id="zero-time"),
        pytest.param("0001-01-01T00:00:00.000000Z", id="zero-time-canonical"),
        pytest.param("0001-06-01T12:00:00Z", id="year-1"),
        pytest.param("0001-01-01T00:30:00+01:00", id="before-year-1"),
        pytest.param("9999-12-31T23:59:59-01:00", id="after-9999"),
        pytest.param("2026-11-27", id="date-only"),
        pytest.param("2026-11-27 10:00:00Z", id="space"),
        pytest.param("2026-11-27T10:00Z", id="no-seconds"),
        pytest.param("2026-11-27T10:00:00", id="no-offset"),
        pytest.param("2026-11-27T10:00:00.Z", id="empty-fraction"),
        pytest.param("2026-11-27T10:00:00.1234567891Z", id="10-digit-fraction"),
        pytest.param("2026-11-27T10:00:00+0200", id="offset-no-colon"),
        pytest.param("2026-11-27T10:00:00+24:00", id="offset-24h"),
        pytest.param("2026-11-27T10:00:00+05:75", id="offset-75min"),
        pytest.param("2026-02-30T10:00:00Z", id="feb-30"),
        pytest.param("2025-02-29T10:00:00Z", id="not-leap"),
        pytest.param("2026-11-27T24:00:00Z", id="hour-24"),
        pytest.param("2026-11-27T23:59:60Z", id="leap-second"),
        pytest.param("2026-11-27T10:60:00Z", id="minute-60"),
        pytest.param("2026-13-01T10:00:00Z", id="month-13"),
        pytest.param("2026-11-27T10:00:00Z\n", id="trailing-newline"),
        pytest.param(" 2026-11-27T10:00:00Z", id="leading-space"),
        pytest.param("٢٠٢٦-11-27T10:00:00Z", id="non-ascii-digits"),
        pytest.param("", id="empty"),
        pytest.param(1795766400, id="int"),
        pytest.param(None, id="none"),
    ],
)
def test_parse_timestamp_rejects(value):
    with pytest.raises(EnvelopeError, match="^when: "):
        e.parse_timestamp(value, "when")


def test_parse_timestamp_names_zero_time():
    with pytest.raises(EnvelopeError, match="zero time"):
        e.parse_timestamp("0001-01-01T00:00:00Z")


def test_canonical_string_order_is_time_order():
    rng = random.Random(7)
    samples = []
    for _ in range(500):
        epoch = rng.uniform(0, 4e9)
        offset_min = rng.choice([0, 60, -90, 330, -720, 840])
        sign = "+" if offset_min >= 0 else "-"
        local = e.format_timestamp(epoch + offset_min * 60)[:-1]  # wall time at that offset
        text = f"{local}{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"
        samples.append(e.parse_timestamp(text))
    by_text = sorted(samples, key=lambda p: p[0])
    by_time = sorted(samples, key=lambda p: p[1])
    assert [p[0] for p in by_text] == [p[0] for p in by_time]


def test_format_timestamp_round_trips_microseconds():
    rng = random.Random(3)
    for _ in range(2000):
        us = rng.randrange(0, 4_000_000_000_000_000)
        text = e.format_timestamp(us / 1_000_000)
        assert e.format_timestamp(e.parse_timestamp(text)[1]) == text
    with pytest.raises(EnvelopeError):
        e.format_timestamp(float("nan"))


def test_now_timestamp_is_canonical_and_current():
    text = e.now_timestamp()
    canonical, ts = e.parse_timestamp(text)
    assert canonical == text
    assert abs(ts - time.time()) < 5


# --------------------------------------------------------------------------- telemetry


def test_decode_telemetry_golden():
    t = e.decode_telemetry(body(golden()), SUBJ)
    assert t == e.Telemetry(
        message_uid="m-0001",
        org_id=ORG,
        entity_id=ENT,
        source="GC35-E4B",
        message_id=33,
        message_type="GLOBAL_POSITION_INT",
        system_id=1,
        component_id=1,
        data=GOLDEN_DATA,
        timestamp=TS,
        ts=e.parse_timestamp(TS)[1],
    )
    with pytest.raises(AttributeError):
        t.org_id = "other"  # type: ignore[misc]


def test_decode_telemetry_without_subject_and_source():
    t = e.decode_telemetry(without("source"))
    assert t.source is None
    assert e.decode_telemetry(with_(source=None), SUBJ).source is None  # Go senders may emit null


def test_decode_telemetry_canonicalises_the_timestamp():
    t = e.decode_telemetry(with_(timestamp="2026-11-27T12:00:00.5+02:00"), SUBJ)
    assert t.timestamp == "2026-11-27T10:00:00.500000Z"


def test_decode_telemetry_accepts_extremes():
    t = e.decode_telemetry(with_(message_id=4294967295, system_id=255, component_id=0), SUBJ)
    assert (t.message_id, t.system_id, t.component_id) == (4294967295, 255, 0)


def test_decode_telemetry_accepts_unknown_but_well_formed_message_type():
    assert e.decode_telemetry(with_(message_type="NAMED_VALUE_FLOAT", message_id=251)).message_type == (
        "NAMED_VALUE_FLOAT"
    )


def test_decode_telemetry_rejects_malformed_json():
    with pytest.raises(EnvelopeError, match="^telemetry: malformed JSON"):
        e.decode_telemetry(b'{"schema_version": "1.0.0",', SUBJ)


def test_decode_telemetry_rejects_trailing_data():
    with pytest.raises(EnvelopeError, match="trailing data"):
        e.decode_telemetry(body(golden()) + b"{}", SUBJ)


def test_decode_telemetry_rejects_nan_in_data():
    raw = body(golden()).replace(b'"vx": 123', b'"vx": NaN')
    assert b"NaN" in raw
    with pytest.raises(EnvelopeError, match="NaN"):
        e.decode_telemetry(raw, SUBJ)


@pytest.mark.parametrize("value", [[], "x", 1, None])
def test_decode_telemetry_rejects_non_object(value):
    with pytest.raises(EnvelopeError, match="JSON object"):
        e.decode_telemetry(body(value), SUBJ)


def test_decode_telemetry_rejects_unknown_fields():
    with pytest.raises(EnvelopeError, match="unknown field.*extra"):
        e.decode_telemetry(with_(extra=1), SUBJ)


def test_decode_telemetry_rejects_legacy_pulsar_envelope():
    legacy = {"msg_id": 33, "msg_name": "GLOBAL_POSITION_INT", "fields": GOLDEN_DATA}
    with pytest.raises(EnvelopeError, match="unknown field"):
        e.decode_telemetry(body(legacy), SUBJ)


@pytest.mark.parametrize(
    "field",
    [
        "schema_version",
        "message_uid",
        "org_id",
        "entity_id",
        "message_id",
        "message_type",
        "system_id",
        "component_id",
        "data",
        "timestamp",
    ],
)
def test_decode_telemetry_rejects_missing_required_field(field):
    with pytest.raises(EnvelopeError, match=f"missing required field.*{field}"):
        e.decode_telemetry(without(field), SUBJ)


@pytest.mark.parametrize("version", ["1.0.1", "2.0.0", "1.0", 1, None, ""])
def test_decode_telemetry_rejects_other_schema_versions(version):
    with pytest.raises(EnvelopeError, match="schema_version"):
        e.decode_telemetry(with_(schema_version=version), SUBJ)


BAD_TOKENS = ["a.b", "gc35.>", "*", ">", "a b", "a\rb", "a\nb", "uid\r\n", "x" * 129, "", 7, None]


@pytest.mark.parametrize("field", ["message_uid", "org_id", "entity_id"])
@pytest.mark.parametrize("token", BAD_TOKENS)
def test_decode_telemetry_rejects_bad_tokens(field, token):
    with pytest.raises(SubjectError, match=field):
        e.decode_telemetry(with_(**{field: token}))


@pytest.mark.parametrize(("field", "value"), [("org_id", "org-other"), ("entity_id", "other-drone")])
def test_decode_telemetry_rejects_subject_body_mismatch(field, value):
    with pytest.raises(EnvelopeError, match=f"subject/body mismatch.*{field}"):
        e.decode_telemetry(with_(**{field: value}), SUBJ)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("message_id", 4294967296),
        ("message_id", -1),
        ("system_id", 256),
        ("system_id", -1),
        ("component_id", 256),
        ("component_id", 10**30),
    ],
)
def test_decode_telemetry_rejects_out_of_range_integers(field, value):
    with pytest.raises(EnvelopeError, match=f"{field}.*out of range"):
        e.decode_telemetry(with_(**{field: value}), SUBJ)


@pytest.mark.parametrize("field", ["message_id", "system_id", "component_id"])
@pytest.mark.parametrize("value", [True, False, 3.0, 1.5, "1", None])
def test_decode_telemetry_rejects_non_integers(field, value):
    with pytest.raises(EnvelopeError, match=f"{field}.*integer"):
        e.decode_telemetry(with_(**{field: value}), SUBJ)


@pytest.mark.parametrize(
    "value", ["gps_raw_int", "1GPS", "GPS.RAW", "GPS RAW", "GPS\n", "", "_GPS", 33, None]
)
def test_decode_telemetry_rejects_bad_message_type(value):
    with pytest.raises(EnvelopeError, match="message_type"):
        e.decode_telemetry(with_(message_type=value), SUBJ)


@pytest.mark.parametrize("value", [None, [], "x", 1])
def test_decode_telemetry_rejects_bad_data(value):
    with pytest.raises(EnvelopeError, match="'data'"):
        e.decode_telemetry(with_(data=value), SUBJ)


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00Z", "yesterday", "2026-11-27", 1795766400, None])
def test_decode_telemetry_rejects_bad_timestamp(value):
    with pytest.raises(EnvelopeError, match="timestamp"):
        e.decode_telemetry(with_(timestamp=value), SUBJ)


@pytest.mark.parametrize("value", [1, ["a"], {"a": 1}, True])
def test_decode_telemetry_rejects_non_string_source(value):
    with pytest.raises(EnvelopeError, match="source"):
        e.decode_telemetry(with_(source=value), SUBJ)


def test_envelope_errors_are_protocol_errors():
    assert issubclass(EnvelopeError, ProtocolError)


def test_make_telemetry_round_trips():
    env = e.make_telemetry(
        ORG, ENT, "GLOBAL_POSITION_INT", GOLDEN_DATA, timestamp=1795766400.25, source="sim"
    )
    assert env["message_id"] == MESSAGE_IDS["GLOBAL_POSITION_INT"] == 33
    assert env["timestamp"] == "2026-11-27T08:00:00.250000Z"
    assert len(env["message_uid"]) == 32
    t = e.decode_telemetry(e.encode(env), SUBJ)
    assert (t.data, t.source, t.system_id, t.component_id) == (GOLDEN_DATA, "sim", 1, 1)


def test_make_telemetry_defaults_and_options():
    a = e.make_telemetry(ORG, ENT, "HEARTBEAT", {})
    b = e.make_telemetry(ORG, ENT, "HEARTBEAT", {})
    assert a["message_uid"] != b["message_uid"]
    assert "source" not in a
    assert abs(e.parse_timestamp(a["timestamp"])[1] - time.time()) < 5
    c = e.make_telemetry(
        ORG, ENT, "HEARTBEAT", {}, message_uid="u1", timestamp="2026-11-27T12:00:00+02:00", system_id=7
    )
    assert (c["message_uid"], c["timestamp"], c["system_id"]) == ("u1", TS, 7)


def test_make_telemetry_rejects_bad_input():
    with pytest.raises(EnvelopeError, match="message_id"):
        e.make_telemetry(ORG, ENT, "NOT_PROJECTED", {})
    assert e.make_telemetry(ORG, ENT, "NOT_PROJECTED", {}, message_id=9)["message_id"] == 9
    with pytest.raises(EnvelopeError):
        e.make_telemetry(ORG, ENT, "bad", {})
    with pytest.raises(SubjectError):
        e.make_telemetry("org.x", ENT, "HEARTBEAT", {})
    with pytest.raises(SubjectError):
        e.make_telemetry(ORG, ENT, "HEARTBEAT", {}, message_uid="a\nb")
