"""Commands on the wire (**new**: Overwatch queues commands but has no delivery status or ack).

This docstring is the wire contract for a real device (or its MAVLink relay).

Subjects and streams
--------------------
========================================================  ==========================================
``constellation.commands.{org_id}.{entity_id}``           issue (or cancel) a command: ingress, the
``constellation.commands.{org_id}.broadcast``             CONSTELLATION_COMMANDS work queue, durable
                                                          ``command-processor`` (the lab only)
``constellation.devices.{org_id}.{entity_id}.commands``   delivery to the device: core NATS, the
                                                          lab resends until the device acks
``constellation.command_acks.{org_id}.{entity_id}``       device acks: stream CONSTELLATION_COMMAND_ACKS
                                                          (limits), durable ``command-ack-processor``
KV ``CONSTELLATION_COMMAND_STATE``, key ``{command_id}.{entity_id}``   live status (JSON document)
========================================================  ==========================================

Delivery and acks live outside ``constellation.commands.>`` because a work-queue stream allows
only one consumer per subject. Acks go to a stream, so none is lost while the lab restarts.

Command envelope (ingress), schema 1.0.0 — one JSON object, unknown fields rejected
------------------------------------------------------------------------------------
``command_id`` (token; a redelivery or a resend with the same id is ignored; publishers set
``Nats-Msg-Id`` to it; when absent the lab uses ``cmd-{stream_seq}``), ``org_id`` and
``entity_id`` (must match the subject; ``entity_id`` is absent or null on ``.broadcast``),
``issued_at`` (RFC 3339; default: when the lab takes it), ``ttl_s`` (seconds the device has to
acknowledge receipt; default and maximum in LabConfig), ``source``, ``metadata`` (object), and
**either** a high-level ``action`` with ``params`` (below; the lab builds the relay fields)
**or** Overwatch's flat edge-relay fields: ``command_type`` (command_long, command_int,
set_mode, mission_item_int), ``target_system``, ``target_component`` and that type's fields
(``command``, ``param1``…``param7``, ``frame``, ``x``, ``y``, ``z``, ``custom_mode``,
``base_mode``, ``seq``…), from which the lab infers the action. ``{"op": "cancel",
"command_id": ...}`` on the same subject cancels a command not yet received by its device.

Actions and params (units in the names; angles in degrees; ``alt_m`` above home; validation and
mapping in :mod:`overwatch_lab.protocol.command_actions`):

=============  ===================================================  ==============================
action         params                                               MAVLink relay
=============  ===================================================  ==============================
goto           lat, lon; alt_m | alt_msl_m; speed_mps                command_int DO_REPOSITION (192)
rtl            —                                                    command_long NAV_RETURN_TO_LAUNCH (20)
land           lat, lon (optional pair)                             command_long NAV_LAND (21)
hold           lat, lon (optional pair); alt_m                      command_long NAV_LOITER_UNLIM (17)
set_mode       mode (ArduCopter name) | custom_mode                 set_mode (base_mode 1)
arm / disarm   force (bool)                                         command_long COMPONENT_ARM_DISARM (400)
set_speed      speed_mps                                            command_long DO_CHANGE_SPEED (178)
follow_route   waypoints [[lat, lon, alt_m?], …] (1–500); loop;     mission_clear_all, mission_count,
               speed_mps                                            mission_item_int × n, MISSION_START (300)
orbit          lat, lon (optional pair); radius_m; clockwise;       command_int DO_ORBIT (34)
               alt_m; speed_mps
=============  ===================================================  ==============================

Bad commands (unknown entity or organisation, unknown action or relay type, invalid params,
expired on arrival, over ``command_max_bytes``) are recorded as REJECTED with the reason; only a
body that is not a JSON object, or a bad subject, is quarantined.

Delivery (lab → device)
-----------------------
The envelope above, normalised (``action``, ``params``, ``command_type``, ``target_system``,
``target_component``, ``mavlink``: the list of relay messages), for one entity, plus
``expires_at`` (RFC 3339) and ``attempt`` (1, 2, …). A cancel notice is ``{"op": "cancel",
"command_id", "org_id", "entity_id"}``. The lab resends (backoff) until it sees any ack, and
stops at ``expires_at`` (EXPIRED).

Acks (device → lab), schema 1.0.0
---------------------------------
``{"command_id", "org_id", "entity_id", "status", "reason"?, "timestamp"}`` with status one of
RECEIVED, ACCEPTED, REJECTED (reason required), EXECUTING, SUCCEEDED, FAILED (reason
required), CANCELLED. Publish with ``Nats-Msg-Id: {command_id}.{entity_id}.{status}``. A device
executes a ``command_id`` at most once: on a second delivery it re-sends its latest ack instead.

Lifecycle
---------
QUEUED → SENT → RECEIVED → ACCEPTED | REJECTED → EXECUTING → SUCCEEDED | FAILED, or EXPIRED (no
ack before the TTL) or CANCELLED. Every transition is forward (:data:`ALLOWED_FROM`); a later
stage may skip an earlier one (a lost RECEIVED), a late or duplicate ack never moves a command
backwards and is recorded as not applied.

Pure: no I/O.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from overwatch_lab.errors import EnvelopeError, ProtocolError, SubjectError
from overwatch_lab.protocol.command_actions import (
    RELAY_FIELDS,
    Action,
    action_from_relay,
    relay_messages,
    validate_params,
)
from overwatch_lab.protocol.envelopes import format_timestamp, loads_strict, parse_timestamp
from overwatch_lab.protocol.printable import printable, printable_names
from overwatch_lab.protocol.subjects import TOKEN_RE, check_token

SCHEMA_VERSION = "1.0.0"
STREAM_COMMAND_ACKS = "CONSTELLATION_COMMAND_ACKS"
CONSUMER_COMMAND_ACK = "command-ack-processor"
KV_COMMAND_STATE = "CONSTELLATION_COMMAND_STATE"
COMMAND_ACKS_ALL = "constellation.command_acks.>"
BROADCAST = "broadcast"


# ---------------------------------------------------------------------------------------------
# Subjects and keys


def delivery_subject(org_id: str, entity_id: str) -> str:
    """Return ``constellation.devices.{org_id}.{entity_id}.commands`` (what a device subscribes to)."""
    return f"constellation.devices.{check_token(org_id, 'org_id')}.{check_token(entity_id, 'entity_id')}.commands"


def ack_subject(org_id: str, entity_id: str) -> str:
    """Return ``constellation.command_acks.{org_id}.{entity_id}`` (where a device acks)."""
    return f"constellation.command_acks.{check_token(org_id, 'org_id')}.{check_token(entity_id, 'entity_id')}"


def parse_command_subject(subject: str) -> tuple[str, str | None]:
    """Parse ``constellation.commands.{org}.{entity|broadcast}`` into (org_id, entity_id or None)."""
    parts = subject.split(".")
    if len(parts) != 4 or parts[:2] != ["constellation", "commands"]:
        raise SubjectError(
            f"command subject {subject!r} must be constellation.commands.{{org_id}}.{{entity_id|broadcast}}"
        )
    org = check_token(parts[2], "org_id")
    target = check_token(parts[3], "entity_id")
    return org, None if target == BROADCAST else target


def parse_ack_subject(subject: str) -> tuple[str, str]:
    """Parse ``constellation.command_acks.{org}.{entity}`` into (org_id, entity_id)."""
    parts = subject.split(".")
    if len(parts) != 4 or parts[:2] != ["constellation", "command_acks"]:
        raise SubjectError(
            f"ack subject {subject!r} must be constellation.command_acks.{{org_id}}.{{entity_id}}"
        )
    return check_token(parts[2], "org_id"), check_token(parts[3], "entity_id")


def state_key(command_id: str, entity_id: str) -> str:
    """Return the KV key of one command delivery: ``{command_id}.{entity_id}``."""
    return f"{command_id}.{entity_id}"


# ---------------------------------------------------------------------------------------------
# Lifecycle


class CommandStatus(enum.StrEnum):
    """Where a command (for one entity) is in its lifecycle."""

    QUEUED = "QUEUED"
    SENT = "SENT"
    RECEIVED = "RECEIVED"
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    EXECUTING = "EXECUTING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"


S = CommandStatus
TERMINAL: frozenset[CommandStatus] = frozenset({S.REJECTED, S.SUCCEEDED, S.FAILED, S.EXPIRED, S.CANCELLED})
PROGRESS: tuple[CommandStatus, ...] = (S.QUEUED, S.SENT, S.RECEIVED, S.ACCEPTED, S.EXECUTING, S.SUCCEEDED)
"""The success path, in order."""
DEVICE_STATUSES: frozenset[CommandStatus] = frozenset(
    {S.RECEIVED, S.ACCEPTED, S.REJECTED, S.EXECUTING, S.SUCCEEDED, S.FAILED, S.CANCELLED}
)
"""What a device may report in an ack."""
_DEVICE_ONWARD = frozenset({S.SENT, S.RECEIVED, S.ACCEPTED, S.EXECUTING})
ALLOWED_FROM: Mapping[CommandStatus, frozenset[CommandStatus]] = {
    S.QUEUED: frozenset(),
    S.SENT: frozenset({S.QUEUED}),
    S.RECEIVED: frozenset({S.SENT}),
    S.ACCEPTED: frozenset({S.SENT, S.RECEIVED}),
    S.REJECTED: frozenset({S.QUEUED, S.SENT, S.RECEIVED}),
    S.EXECUTING: frozenset({S.SENT, S.RECEIVED, S.ACCEPTED}),
    S.SUCCEEDED: _DEVICE_ONWARD,
    S.FAILED: _DEVICE_ONWARD,
    S.EXPIRED: frozenset({S.QUEUED, S.SENT}),
    S.CANCELLED: frozenset({S.QUEUED}) | _DEVICE_ONWARD,
}
"""new status → the statuses it may follow. Never backwards, never out of a terminal status."""
STAGE_OF: Mapping[CommandStatus, str] = {
    S.QUEUED: "queued",
    S.SENT: "sent",
    S.RECEIVED: "received",
    S.ACCEPTED: "accepted",
    S.EXECUTING: "executing",
    **{t: "done" for t in TERMINAL},
}
"""The time stamp a status sets (every terminal status sets ``done``)."""
STAGES: tuple[str, ...] = ("queued", "sent", "received", "accepted", "executing", "done")
LAB_CANCELLABLE: frozenset[CommandStatus] = frozenset({S.QUEUED, S.SENT})
"""Statuses the lab cancels on its own; later, only the device can confirm a cancel."""


def can_transition(current: CommandStatus, new: CommandStatus) -> bool:
    """Return True if ``current → new`` is allowed by the lifecycle."""
    return current in ALLOWED_FROM[new]


def status_of(value: object) -> CommandStatus:
    """Return the CommandStatus named by ``value`` (case-insensitive)."""
    try:
        return CommandStatus(str(value).upper())
    except ValueError:
        raise EnvelopeError(f"unknown command status {value!r}; one of {', '.join(S)}") from None


def reached(status: CommandStatus, target: CommandStatus) -> bool:
    """True when ``status`` is ``target`` or, on the success path, beyond it."""
    if status == target:
        return True
    if target in TERMINAL or status not in PROGRESS:
        return False
    return PROGRESS.index(status) >= PROGRESS.index(target)


_FAILURE_ORDER = (S.REJECTED, S.FAILED, S.EXPIRED, S.CANCELLED)


def aggregate_status(statuses: Iterable[CommandStatus]) -> CommandStatus | None:
    """The status of a broadcast: its least advanced delivery; once all are done, SUCCEEDED only
    if all succeeded, else the first failure of REJECTED, FAILED, EXPIRED, CANCELLED."""
    items = list(statuses)
    if not items:
        return None
    open_ = [s for s in items if s not in TERMINAL]
    if open_:
        return min(open_, key=PROGRESS.index)
    for failure in _FAILURE_ORDER:
        if failure in items:
            return failure
    return S.SUCCEEDED


# ---------------------------------------------------------------------------------------------
# Envelopes


@dataclass(frozen=True, slots=True)
class Command:
    """A valid command, normalised. ``entity_id`` is None for an org broadcast (before fan-out)."""

    command_id: str
    org_id: str
    entity_id: str | None
    action: Action
    params: Mapping[str, Any]
    command_type: str
    target_system: int
    target_component: int
    mavlink: tuple[Mapping[str, Any], ...]
    issued_at: str
    issued_ts: float
    ttl_s: float
    source: str | None = None
    metadata: Mapping[str, Any] | None = None

    @property
    def expires_ts(self) -> float:
        """Epoch seconds after which an unacknowledged command expires."""
        return self.issued_ts + self.ttl_s

    @property
    def broadcast(self) -> bool:
        """True for an org broadcast not yet fanned out."""
        return self.entity_id is None

    def for_entity(self, entity_id: str) -> Command:
        """The delivery of a broadcast to one entity."""
        return replace(self, entity_id=entity_id)

    def envelope(self) -> dict[str, Any]:
        """The normalised wire form (what the lab stores and delivers, without attempt/expires_at)."""
        out: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "command_id": self.command_id,
            "org_id": self.org_id,
            "entity_id": self.entity_id,
            "action": str(self.action),
            "params": dict(self.params),
            "command_type": self.command_type,
            "target_system": self.target_system,
            "target_component": self.target_component,
            "mavlink": [dict(m) for m in self.mavlink],
            "issued_at": self.issued_at,
            "ttl_s": self.ttl_s,
        }
        if self.source is not None:
            out["source"] = self.source
        if self.metadata is not None:
            out["metadata"] = dict(self.metadata)
        return out


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """``{"op": "cancel", "command_id": ...}`` on a command subject."""

    command_id: str
    org_id: str
    entity_id: str | None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class RejectedCommand:
    """A parsable but invalid command: recorded as REJECTED with ``reason``."""

    command_id: str
    org_id: str
    entity_id: str | None
    reason: str
    body: Mapping[str, Any] = field(default_factory=dict)


_TOP_FIELDS = frozenset(
    {"schema_version", "command_id", "op", "org_id", "entity_id", "action", "params", "command_type",
     "target_system", "target_component", "issued_at", "ttl_s", "source", "metadata", "timestamp"}
)  # fmt: skip


def decode_command(
    body: bytes | str,
    subject: tuple[str, str | None],
    *,
    now_ts: float,
    fallback_id: str,
    default_ttl_s: float,
    max_ttl_s: float,
    max_bytes: int,
) -> Command | CancelRequest | RejectedCommand:
    """Decode and validate one ingress message.

    Args:
        body: the raw message.
        subject: ``parse_command_subject`` of its subject.
        now_ts: the lab's time (epoch seconds): default ``issued_at`` and the expiry check.
        fallback_id: the command_id when the body has none (``cmd-{stream_seq}``).
        default_ttl_s / max_ttl_s: TTL when absent / the largest accepted.
        max_bytes: larger bodies are rejected (oversize).

    Returns:
        A Command, a CancelRequest, or a RejectedCommand carrying the reason.

    Raises:
        EnvelopeError: the body is not a JSON object, so nothing can be recorded (quarantine it).
    """
    org_id, entity_id = subject
    obj = loads_strict(body, "command")
    if not isinstance(obj, dict):
        raise EnvelopeError(f"command: body must be a JSON object, got {type(obj).__name__}")
    raw_id = obj.get("command_id")
    command_id = raw_id if isinstance(raw_id, str) and TOKEN_RE.fullmatch(raw_id) else fallback_id

    def rejected(reason: str) -> RejectedCommand:
        return RejectedCommand(command_id, org_id, entity_id, reason, obj)

    if len(body) > max_bytes:
        return rejected(f"oversize: {len(body)} bytes > command_max_bytes {max_bytes}")
    try:
        if raw_id is not None and command_id != raw_id:
            check_token(raw_id, "command_id")
        if obj.get("op", "issue") == "cancel":
            if raw_id is None:
                raise EnvelopeError("cancel needs the command_id to cancel")
            return CancelRequest(command_id, org_id, entity_id, _opt_str(obj, "source"))
        return _decode_issue(obj, command_id, org_id, entity_id, now_ts, default_ttl_s, max_ttl_s)
    except ProtocolError as exc:
        return rejected(str(exc))


def _opt_str(obj: Mapping[str, Any], key: str) -> str | None:
    v = obj.get(key)
    if v is not None and not isinstance(v, str):
        raise EnvelopeError(f"{key} must be a string, got {v!r:.40}")
    return v


def _decode_issue(
    obj: dict[str, Any],
    command_id: str,
    org_id: str,
    entity_id: str | None,
    now_ts: float,
    default_ttl_s: float,
    max_ttl_s: float,
) -> Command:
    if obj.get("op", "issue") != "issue":
        raise EnvelopeError(f"op {obj.get('op')!r} is not one of issue, cancel")
    unknown = set(obj) - _TOP_FIELDS - RELAY_FIELDS
    if unknown:
        raise EnvelopeError(f"unknown field(s) {printable_names(unknown)}")
    version = obj.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise EnvelopeError(f"schema_version {version!r} is not supported (expected {SCHEMA_VERSION!r})")
    if obj.get("org_id", org_id) != org_id:
        raise EnvelopeError(f"subject/body mismatch: body org_id {obj.get('org_id')!r} != subject {org_id!r}")
    body_entity = obj.get("entity_id")
    if entity_id is None and body_entity not in (None, BROADCAST):
        raise EnvelopeError(f"a broadcast carries no entity_id (got {body_entity!r})")
    if entity_id is not None and body_entity not in (None, entity_id):
        raise EnvelopeError(f"subject/body mismatch: body entity_id {body_entity!r} != subject {entity_id!r}")
    raw_action = obj.get("action")
    command_type = obj.get("command_type")
    relay_given = sorted(set(obj) & RELAY_FIELDS)
    if raw_action is not None:
        if relay_given:
            raise EnvelopeError(
                f"give action with params, or relay fields, not both (got {', '.join(relay_given)})"
            )
        try:
            action = Action(raw_action)
        except ValueError:
            raise EnvelopeError(f"unknown action {raw_action!r}; one of {', '.join(Action)}") from None
        params = validate_params(action, obj.get("params"))
        mavlink = relay_messages(action, params)
        if command_type is not None and command_type != mavlink[0]["type"]:
            raise EnvelopeError(
                f"command_type {command_type!r} does not match {action} ({mavlink[0]['type']})"
            )
    elif command_type is not None:
        if not isinstance(command_type, str):
            raise EnvelopeError(f"command_type must be a string, got {command_type!r:.40}")
        if "params" in obj:
            raise EnvelopeError("relay commands carry their fields flat, not in params")
        action, inferred = action_from_relay(command_type, obj)
        params = validate_params(action, inferred)
        mavlink = [{"type": command_type, **{k: obj[k] for k in relay_given}}]
    else:
        raise EnvelopeError("a command needs an action or a command_type")
    ts_raw = obj.get("issued_at", obj.get("timestamp"))
    issued_at, issued_ts = (
        (format_timestamp(now_ts), now_ts) if ts_raw is None else parse_timestamp(ts_raw, "issued_at")
    )
    ttl = obj.get("ttl_s", default_ttl_s)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= max_ttl_s:
        raise EnvelopeError(f"ttl_s must be a number in (0, {max_ttl_s:g}], got {ttl!r:.40}")
    if issued_ts + ttl <= now_ts:
        raise EnvelopeError(
            f"expired on arrival: issued_at {issued_at} + ttl_s {ttl:g} is {now_ts - issued_ts - ttl:.1f} s ago"
        )
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise EnvelopeError("metadata must be an object")
    return Command(
        command_id=command_id,
        org_id=org_id,
        entity_id=entity_id,
        action=action,
        params=params,
        command_type=str(mavlink[0]["type"]),
        target_system=_byte(obj, "target_system"),
        target_component=_byte(obj, "target_component"),
        mavlink=tuple(mavlink),
        issued_at=issued_at,
        issued_ts=issued_ts,
        ttl_s=float(ttl),
        source=_opt_str(obj, "source"),
        metadata=metadata,
    )


def _byte(obj: Mapping[str, Any], key: str) -> int:
    v = obj.get(key, 1)
    if type(v) is not int or not 0 <= v <= 255:
        raise EnvelopeError(f"{key} must be an integer 0..255, got {v!r:.40}")
    return v


def new_command_id() -> str:
    """A fresh command id (``cmd-`` + 24 hex digits)."""
    return f"cmd-{uuid.uuid4().hex[:24]}"


def make_command(
    org_id: str,
    entity_id: str | None,
    action: str,
    params: Mapping[str, Any] | None = None,
    *,
    command_id: str | None = None,
    ttl_s: float | None = None,
    issued_at: str | float | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """Build an ingress envelope (``entity_id`` None for a broadcast). Not validated here: the lab
    validates and records a bad one as REJECTED, so callers see the reason."""
    env: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "command_id": command_id or new_command_id(),
        "org_id": org_id,
        "action": action,
        "params": dict(params or {}),
    }
    if entity_id is not None:
        env["entity_id"] = entity_id
    if ttl_s is not None:
        env["ttl_s"] = ttl_s
    if issued_at is not None:
        env["issued_at"] = issued_at if isinstance(issued_at, str) else format_timestamp(issued_at)
    if source is not None:
        env["source"] = source
    return env


def make_cancel(
    org_id: str, entity_id: str | None, command_id: str, *, source: str | None = None
) -> dict[str, Any]:
    """Build a cancel request (ingress) or a cancel notice (delivery)."""
    out: dict[str, Any] = {"op": "cancel", "command_id": command_id, "org_id": org_id, "entity_id": entity_id}
    if source is not None:
        out["source"] = source
    return out


def make_delivery(envelope: Mapping[str, Any], *, expires_ts: float, attempt: int) -> dict[str, Any]:
    """The message delivered to a device: the stored envelope plus ``expires_at`` and ``attempt``."""
    return {**envelope, "expires_at": format_timestamp(expires_ts), "attempt": attempt}


@dataclass(frozen=True, slots=True)
class CommandAck:
    """One device acknowledgement."""

    command_id: str
    org_id: str
    entity_id: str
    status: CommandStatus
    reason: str | None
    timestamp: str
    ts: float


_ACK_FIELDS = frozenset(
    {"schema_version", "command_id", "org_id", "entity_id", "status", "reason", "timestamp"}
)
_ACK_REQUIRED = frozenset({"command_id", "org_id", "entity_id", "status", "timestamp"})


def decode_ack(body: bytes | str, subject: tuple[str, str]) -> CommandAck:
    """Decode and validate a device ack against its subject's identity.

    Raises:
        EnvelopeError / SubjectError: anything wrong (the ack can never be applied).
    """
    obj = loads_strict(body, "command ack")
    if not isinstance(obj, dict):
        raise EnvelopeError(f"command ack: body must be a JSON object, got {type(obj).__name__}")
    if not obj.keys() <= _ACK_FIELDS:
        raise EnvelopeError(f"command ack: unknown field(s) {printable_names(obj.keys() - _ACK_FIELDS)}")
    if not obj.keys() >= _ACK_REQUIRED:
        raise EnvelopeError(f"command ack: missing field(s) {', '.join(sorted(_ACK_REQUIRED - obj.keys()))}")
    if obj.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise EnvelopeError(f"command ack: schema_version {obj['schema_version']!r} is not supported")
    command_id = check_token(obj["command_id"], "command_id")
    if (obj["org_id"], obj["entity_id"]) != subject:
        raise EnvelopeError(
            f"command ack: subject/body mismatch: body {printable(obj['org_id'], 130)}/{printable(obj['entity_id'], 130)} != subject "
            f"{subject[0]}/{subject[1]}"
        )
    status = status_of(obj["status"])
    if status not in DEVICE_STATUSES:
        raise EnvelopeError(
            f"command ack: a device cannot report {status}; one of {', '.join(sorted(DEVICE_STATUSES))}"
        )
    reason = obj.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise EnvelopeError(f"command ack: reason must be a string, got {reason!r:.40}")
    if status in (S.REJECTED, S.FAILED) and not reason:
        raise EnvelopeError(f"command ack: {status} needs a reason")
    timestamp, ts = parse_timestamp(obj["timestamp"])
    return CommandAck(command_id, subject[0], subject[1], status, reason or None, timestamp, ts)


def make_ack(
    org_id: str,
    entity_id: str,
    command_id: str,
    status: CommandStatus | str,
    reason: str | None = None,
    *,
    ts: float,
) -> dict[str, Any]:
    """Build a device ack envelope (``ts`` = epoch seconds of the event on the device)."""
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "command_id": command_id,
        "org_id": org_id,
        "entity_id": entity_id,
        "status": str(status),
        "timestamp": format_timestamp(ts),
    }
    if reason:
        out["reason"] = reason
    return out


def ack_msg_id(command_id: str, entity_id: str, status: CommandStatus | str) -> str:
    """The ``Nats-Msg-Id`` of an ack: a resent ack inside the dedup window is dropped by the server."""
    return f"{command_id}.{entity_id}.{status}"
