"""One message a device puts on the wire (or would, in a dry run): subject, exact bytes, ``Nats-Msg-Id``."""

from __future__ import annotations

from typing import NamedTuple


class Emission(NamedTuple):
    """One message a device puts on the wire (or would, in a dry run).

    Attributes:
        subject: the NATS subject.
        payload: the exact bytes.
        msg_id: the ``Nats-Msg-Id`` header value, or None for no header.
        kind: ``telemetry``, ``entity``, ``org`` or ``event``.
        message_type: the MAVLink message name for telemetry (else the event type).
        entity_id: the sending device ("" for an org event).
    """

    subject: str
    payload: bytes
    msg_id: str | None
    kind: str
    message_type: str
    entity_id: str
