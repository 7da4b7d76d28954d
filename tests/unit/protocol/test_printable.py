"""printable(): device text with every control character shown as its escape, idempotent."""

from __future__ import annotations

import json

import pytest

from overwatch_lab.errors import EnvelopeError, ProtocolError
from overwatch_lab.protocol import commands, envelopes, lifecycle
from overwatch_lab.protocol.printable import printable, printable_names
from overwatch_lab.protocol.subjects import EntitySubject, TelemetrySubject

FORGED = "2026-01-01 00:00:00,000 ERROR overwatch_lab.lab: lab failed: forged"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text, spaces and é ü 漢", "plain text, spaces and é ü 漢"),
        ("a\nb\rc\td", "a\\nb\\rc\\td"),
        ("\x1b[31mred\x1b[0m\x07", "\\x1b[31mred\\x1b[0m\\x07"),
        ("\x00\x7f\x85", "\\x00\\x7f\\x85"),  # NUL, DEL, NEL (C1)
        ("\u2028\u202e\ufeff", "\\u2028\\u202e\\ufeff"),  # line separator, bidi override, BOM
        ("\ud800", "\\ud800"),  # a lone surrogate (JSON can carry one)
        ("\U000e0041", "\\U000e0041"),  # a tag character
        ("back\\slash \\n stays", "back\\slash \\n stays"),  # already-escaped text is not escaped again
        (42, "42"),
    ],
)
def test_printable_shows_control_characters_as_escapes(text, shown):
    assert printable(text) == shown
    assert printable(shown) == shown  # idempotent
    assert shown.isprintable()


def test_printable_limit_cuts_the_escaped_text():
    cut = printable("\n" * 50, limit=10)
    assert len(cut) == 10 and cut.startswith("\\n\\n\\n") and cut.endswith("...")
    assert printable("short", limit=10) == "short"


def test_printable_names_sorted_escaped_and_cut():
    assert printable_names({"b\n", "a\x1b"}) == "a\\x1b, b\\n"
    assert len(printable_names({"x" * 1000}, limit=20)) == 20


def _telemetry(**extra: object) -> bytes:
    env = envelopes.make_telemetry("org-a", "e1", "ATTITUDE", {"roll": 0.1}, timestamp=1.8e9)
    env.update(extra)
    return json.dumps(env).encode()


@pytest.mark.parametrize(
    "decode",
    [
        lambda: envelopes.decode_telemetry(_telemetry(**{f"x\n{FORGED}": 1, "\x1b[2J": 2})),
        lambda: envelopes.decode_telemetry(_telemetry(message_type=f"A\r\n{FORGED}")),
        lambda: lifecycle.decode_entity_event(
            json.dumps({"id": "1", f"k\n{FORGED}": 1}), EntitySubject("org-a", "created")
        ),
        lambda: commands.decode_ack(
            json.dumps(
                {
                    "command_id": "c",
                    "org_id": f"o\n{FORGED}",
                    "entity_id": "e1",
                    "status": "RECEIVED",
                    "timestamp": "2026-11-27T10:00:00Z",
                }
            ),  # fmt: skip
            ("org-a", "e1"),
        ),
        lambda: commands.decode_ack(json.dumps({f"z\n{FORGED}": 1}), ("org-a", "e1")),
    ],
)
def test_decoder_errors_quote_device_text_escaped(decode):
    with pytest.raises(ProtocolError) as info:
        decode()
    message = str(info.value)
    assert message.isprintable(), message
    assert "\\n" in message or "\\x1b" in message


@pytest.mark.parametrize("number", [b"1e400", b"-1e400", b"1.5e999"])
def test_a_float_overflow_is_rejected_outside_telemetry(number):
    body = b'{"event_uid":"e","v":' + number + b"}"
    with pytest.raises(EnvelopeError, match="too large for a float"):
        envelopes.loads_strict(body, "device event")
    assert envelopes.loads_strict(b'{"v":1e300,"w":1.5e-400}', "x") == {"v": 1e300, "w": 0.0}  # finite: fine


def test_telemetry_keeps_its_contract_for_an_overflow():
    # docs/wire.md: the projection skips the field; the history text is the message's own, JSON
    body = _telemetry().replace(b'"roll": 0.1', b'"roll": 1e400')
    t = envelopes.decode_telemetry(body, TelemetrySubject("org-a", "e1"))
    assert t.data["roll"] == float("inf") and t.data_json == '{"roll": 1e400}'
