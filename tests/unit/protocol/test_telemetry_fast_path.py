"""The msgspec fast path of ``decode_telemetry`` accepts exactly what the hand-written decoder
accepts, gives the same result and the same error, and keeps ``data``'s own JSON text."""

from __future__ import annotations

import json
import random

import pytest

from overwatch_lab.errors import ProtocolError
from overwatch_lab.protocol import envelopes as e
from overwatch_lab.protocol.subjects import TelemetrySubject

from .test_envelopes import SUBJ, golden

# Values that break (or nearly break) some rule, for any field.
ODD_VALUES: list[object] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    255,
    256,
    2**32 - 1,
    2**32,
    2**64,
    1.0,
    3.5,
    -0.0,
    "",
    "x",
    "1.0.0",
    "1.0.1",
    "a.b",
    "a b",
    "é",
    "A" * 129,
    "GLOBAL_POSITION_INT",
    "lower",
    "2026-11-27T10:00:00Z",
    "0001-01-01T00:00:00Z",
    "2026-02-30T00:00:00Z",
    [],
    {},
    [1],
    {"a": 1},
    "org-galaxy",
    "gc35-e4b",
    "m\n",
    "m-0001\n",
]
# Raw texts spliced in as a field's value (JSON the stdlib and msgspec may read differently).
ODD_TEXTS = [
    b"1e400",
    b"-1e400",
    b"1.5e-400",
    b"123456789012345678901234567890",
    b"1" + b"0" * 4000,
    b"1" + b"0" * 5000,
    b'"\\ud800"',
    b'"\\udc00x"',
    b'"\xff"',
    b"NaN",
    b"Infinity",
    b"[" * 3000 + b"]" * 3000,
    b'{"a":1,"a":2}',
    b'{"nested":{"x":1e400}}',
    b"1E5",
    b"-0",
]


def _outcome(fn, raw: bytes, subject: TelemetrySubject | None):
    try:
        t = fn(raw, subject)
    except ProtocolError as exc:
        return ("error", type(exc).__name__, str(exc))
    return ("ok", t, t.data_json)


def _bodies(rng: random.Random) -> list[bytes]:
    out: list[bytes] = []
    keys = list(golden())
    for _ in range(1500):
        env = golden()
        for _ in range(rng.choice((1, 1, 2))):
            op = rng.random()
            if op < 0.15:
                env.pop(rng.choice(keys), None)
            elif op < 0.2:
                env[rng.choice(("extra", "Data", "source"))] = rng.choice(ODD_VALUES)
            elif op < 0.75:
                env[rng.choice(keys)] = rng.choice(ODD_VALUES)
            elif isinstance(env.get("data"), dict):
                env["data"] = {**env["data"], rng.choice(("lat", "vx", "zz")): rng.choice(ODD_VALUES)}
        out.append(json.dumps(env, ensure_ascii=rng.random() < 0.5).encode())
    for text in ODD_TEXTS:  # spliced as raw text into data and into each top-level field
        for key in ("lat", "message_id", "source", "message_uid", "timestamp"):
            env = golden()
            if key == "lat":
                env["data"]["lat"] = "@@"
            else:
                env[key] = "@@"
            out.append(json.dumps(env).encode().replace(b'"@@"', text))
    base = json.dumps(golden()).encode()
    out += [base + b" x", base + b"{}", b" " + base + b"\n", b"\xef\xbb\xbf" + base, b"[]", b"null", b""]
    return out


@pytest.mark.parametrize("subject", [SUBJ, None])
def test_fast_path_agrees_with_the_reference_decoder(subject):
    rng = random.Random(1414)
    accepted = rejected = 0
    for raw in _bodies(rng):
        fast = _outcome(e.decode_telemetry, raw, subject)
        slow = _outcome(e._decode_telemetry_slow, raw, subject)
        assert fast == slow, raw[:300]
        if fast[0] == "ok":
            accepted += 1
            json.loads(fast[2], parse_constant=lambda c: pytest.fail(f"history text holds {c}"))
        else:
            rejected += 1
    assert accepted > 100 and rejected > 500  # the corpus exercises both sides


def test_data_text_is_the_message_own_bytes():
    raw = (
        b'{"schema_version":"1.0.0","message_uid":"u1","org_id":"org-galaxy","entity_id":"gc35-e4b",'
        b'"message_id":30,"message_type":"ATTITUDE","system_id":1,"component_id":1,'
        b'"data":{ "roll" : 0.10, "pitch":1e400, "label":"\xc3\xa9" },"timestamp":"2026-11-27T10:00:00Z"}'
    )
    t = e.decode_telemetry(raw, SUBJ)
    assert t.data_json == '{ "roll" : 0.10, "pitch":1e400, "label":"é" }'
    assert t.data == {"roll": 0.1, "pitch": float("inf"), "label": "é"}  # projection skips inf


def test_data_that_cannot_be_stored_as_json_is_rejected():
    # Only reachable through the reference decoder: a lone surrogate (msgspec cannot read it) and
    # a float overflow (json reads it as inf, which has no JSON text) in the same body.
    env = golden()
    env["data"] = {"label": "@s", "lat": "@n"}
    raw = json.dumps(env).encode().replace(b'"@s"', b'"\\ud800"').replace(b'"@n"', b"1e400")
    with pytest.raises(ProtocolError, match="too large for a float"):
        e.decode_telemetry(raw, SUBJ)
