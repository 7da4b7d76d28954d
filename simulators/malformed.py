"""Malformed telemetry: the ways the ``malformed`` fault breaks a message, each one a wire-contract breach.

Every variant in :data:`MALFORMED_VARIANTS` breaks the telemetry envelope of docs/wire.md, so the lab
must quarantine every one (the last, an unknown message type, fails projection instead).
"""

from __future__ import annotations

from typing import Any

from overwatch_lab.protocol.envelopes import encode

MALFORMED_VARIANTS: tuple[str, ...] = (
    "truncated",
    "not_json",
    "trailing_data",
    "bad_schema_version",
    "unknown_field",
    "missing_field",
    "identity_mismatch",
    "bad_timestamp",
    "bad_message_uid",
    "unknown_message_type",
)
"""Ways a malformed message is broken; every one breaks docs/wire.md (the last one fails projection)."""


def malformed(variant: str, envelope: dict[str, Any], payload: bytes) -> bytes:
    """Return a broken version of a telemetry message (``envelope`` is not modified).

    Raises:
        ValueError: unknown variant.
    """
    if variant == "truncated":
        return payload[: max(1, len(payload) // 2)]
    if variant == "not_json":
        return b"\xff\xfe\x00 garbage from a noisy link"
    if variant == "trailing_data":
        return payload + b' {"again":1}'
    env = dict(envelope)
    if variant == "bad_schema_version":
        env["schema_version"] = "0.9.0"
    elif variant == "unknown_field":
        env["debug_blob"] = "x"
    elif variant == "missing_field":
        del env["timestamp"]
    elif variant == "identity_mismatch":
        env["entity_id"] = f"{env['entity_id']}-imposter"[:128]
    elif variant == "bad_timestamp":
        env["timestamp"] = "0001-01-01T00:00:00Z"
    elif variant == "bad_message_uid":
        env["message_uid"] = "bad uid.with*wildcards"
    elif variant == "unknown_message_type":
        env["message_type"] = "SIM_GARBAGE"
        env["message_id"] = 65000
    else:
        raise ValueError(f"unknown malformed variant {variant!r}")
    return encode(env)
