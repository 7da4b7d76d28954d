"""Subjects, stream names, consumer names and the identifier token rule of docs/wire.md.

Pure: no I/O. Every subject the lab builds or parses goes through this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from overwatch_lab.errors import SubjectError

TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")  # always used with fullmatch: "$" would allow "\n"
MESSAGE_TYPE_RE = re.compile(r"[A-Z][A-Z0-9_]*")

# Streams
STREAM_ENTITIES = "CONSTELLATION_ENTITIES"
STREAM_ORGANIZATIONS = "CONSTELLATION_ORGANIZATIONS"
STREAM_EVENTS = "CONSTELLATION_EVENTS"
STREAM_TELEMETRY = "CONSTELLATION_TELEMETRY"
STREAM_COMMANDS = "CONSTELLATION_COMMANDS"
STREAM_QUARANTINE = "CONSTELLATION_QUARANTINE"

# KV
KV_GLOBAL_STATE = "CONSTELLATION_GLOBAL_STATE"

# Subject roots / wildcards
ENTITIES_ALL = "constellation.entities.>"
ORGANIZATIONS_ALL = "constellation.organizations.>"
EVENTS_ALL = "constellation.events.>"
TELEMETRY_ALL = "constellation.telemetry.>"
COMMANDS_ALL = "constellation.commands.>"
QUARANTINE_ALL = "constellation.quarantine.>"

# Durable consumers (docs/wire.md) plus organization-processor (overwatch-lab: Overwatch has no
# consumer on the organizations stream; the entity worker needs one to keep the table).
CONSUMER_ENTITY = "entity-processor"
CONSUMER_ORGANIZATION = "organization-processor"
CONSUMER_EVENT = "event-processor"
CONSUMER_TELEMETRY = "telemetry-processor"
CONSUMER_TELEMETRY_PARTITION = "telemetry-processor-p{partition}"  # one per partition (str.format)

# Telemetry partitions (docs/wire.md "Telemetry partitions"): the lab-provisioned telemetry stream
# stores a 4-token subject as constellation.telemetry-p.{org}.{entity}.{partition}: a root no
# publish reaches (the stream captures constellation.telemetry.>), so every other stored shape
# stays under constellation.telemetry.> for telemetry-processor. Core-NATS subscribers still
# see the 4 tokens a device published.
TELEMETRY_TRANSFORM_SRC = "constellation.telemetry.*.*"
TELEMETRY_PARTITIONED_ROOT = "telemetry-p"
TELEMETRY_PARTITIONED_ALL = "constellation.telemetry-p.>"
PARTITION_RE = re.compile(r"0|[1-9][0-9]{0,3}")
MAX_TELEMETRY_PARTITIONS = 1024
CONSUMER_COMMAND = "command-processor"

ENTITY_EVENT_KINDS = ("created", "updated", "deleted", "status")
ORG_EVENT_KINDS = ("created", "updated", "deleted")


def check_token(value: object, what: str = "token") -> str:
    """Return ``value`` if it obeys the identifier token rule, else raise SubjectError."""
    if not isinstance(value, str) or not TOKEN_RE.fullmatch(value):
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        raise SubjectError(
            f"{what} {shown} breaks the token rule ^[A-Za-z0-9_-]{{1,128}}$ "
            "(no dots, wildcards, spaces or control characters)"
        )
    return value


def telemetry_subject(org_id: str, entity_id: str) -> str:
    """Return ``constellation.telemetry.{org_id}.{entity_id}`` after checking both tokens."""
    return f"constellation.telemetry.{check_token(org_id, 'org_id')}.{check_token(entity_id, 'entity_id')}"


def telemetry_transform_dest(partitions: int) -> str:
    """The stream subject transform's destination: the 4 tokens plus ``{{partition(P,1,2)}}``.

    The partition hashes the org and entity tokens together, so one entity always lands in one
    partition (its order is kept) while a fleet of one organisation still spreads.
    """
    if not 1 <= partitions <= MAX_TELEMETRY_PARTITIONS:
        raise SubjectError(f"telemetry partitions must be 1..{MAX_TELEMETRY_PARTITIONS}, got {partitions}")
    return f"constellation.telemetry-p.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}.{{{{partition({partitions},1,2)}}}}"


def telemetry_partition_filter(partition: int) -> str:
    """The filter of partition ``partition``'s durable: ``constellation.telemetry-p.*.*.{partition}``."""
    return f"constellation.telemetry-p.*.*.{partition}"


def telemetry_partition_durable(partition: int) -> str:
    """The durable consumer of one telemetry partition: ``telemetry-processor-p{partition}``."""
    return CONSUMER_TELEMETRY_PARTITION.format(partition=partition)


def partition_of_durable(durable: str) -> int | None:
    """The partition a ``telemetry-processor-p{k}`` durable reads, else None."""
    prefix = CONSUMER_TELEMETRY_PARTITION.split("{", 1)[0]
    rest = durable.removeprefix(prefix)
    return int(rest) if rest != durable and PARTITION_RE.fullmatch(rest) else None


def entity_subject(org_id: str, kind: str) -> str:
    """Return ``constellation.entities.{org_id}.{kind}`` (kind: created|updated|deleted|status)."""
    if kind not in ENTITY_EVENT_KINDS:
        raise SubjectError(f"entity event kind {kind!r} is not one of {ENTITY_EVENT_KINDS}")
    return f"constellation.entities.{check_token(org_id, 'org_id')}.{kind}"


def organization_subject(kind: str) -> str:
    """Return ``constellation.organizations.{kind}`` (kind: created|updated|deleted)."""
    if kind not in ORG_EVENT_KINDS:
        raise SubjectError(f"organization event kind {kind!r} is not one of {ORG_EVENT_KINDS}")
    return f"constellation.organizations.{kind}"


def detection_subject(org_id: str, entity_id: str, track_id: str) -> str:
    """Return the 7-token ISR detection subject."""
    return (
        f"constellation.events.isr.{check_token(org_id, 'org_id')}."
        f"{check_token(entity_id, 'entity_id')}.detection.{check_token(track_id, 'track_id')}"
    )


def device_event_subject(org_id: str, entity_id: str, event_type: str) -> str:
    """Return ``constellation.events.isr.{org}.{entity}.{event_type}`` (e.g. bootsequence)."""
    return (
        f"constellation.events.isr.{check_token(org_id, 'org_id')}."
        f"{check_token(entity_id, 'entity_id')}.{check_token(event_type, 'event_type')}"
    )


def command_subject(org_id: str, entity_id: str | None = None) -> str:
    """Return the command subject for one entity, or the org broadcast subject if entity_id is None."""
    target = "broadcast" if entity_id is None else check_token(entity_id, "entity_id")
    return f"constellation.commands.{check_token(org_id, 'org_id')}.{target}"


def quarantine_subject(worker: str) -> str:
    """Return ``constellation.quarantine.{worker}``: lower-cased, other chars turned into ``-``."""
    token = re.sub(r"[^a-z0-9_-]", "-", worker.lower()) or "unknown"
    return f"constellation.quarantine.{token}"


@dataclass(frozen=True, slots=True)
class TelemetrySubject:
    """The identity a telemetry subject carries; ``partition`` is set on a stored (transformed) subject."""

    org_id: str
    entity_id: str
    partition: int | None = None


def parse_telemetry_subject(subject: str) -> TelemetrySubject:
    """Parse ``constellation.telemetry.{org}.{entity}``: exactly 4 tokens, both ids valid tokens.

    A JetStream consumer of a lab-provisioned stream sees the stored form of a partitioned one,
    ``constellation.telemetry-p.{org}.{entity}.{partition}`` (a decimal number, see
    :func:`telemetry_transform_dest`); it is accepted too.
    """
    parts = subject.split(".")
    partition: int | None = None
    if len(parts) == 5 and parts[1] == TELEMETRY_PARTITIONED_ROOT and PARTITION_RE.fullmatch(parts[4]):
        partition = int(parts.pop())
        parts[1] = "telemetry"
    if len(parts) != 4 or parts[0] != "constellation" or parts[1] != "telemetry":
        raise SubjectError(
            f"telemetry subject {subject!r} must be exactly constellation.telemetry.{{org_id}}.{{entity_id}} "
            f"(4 tokens, or the stored constellation.telemetry-p.{{org_id}}.{{entity_id}}.{{partition}}; got {len(subject.split('.'))})"
        )
    return TelemetrySubject(check_token(parts[2], "org_id"), check_token(parts[3], "entity_id"), partition)


def published_subject(subject: str) -> str:
    """The subject a message was published on, from the subject JetStream delivers it with.

    The stored ``constellation.telemetry-p.{org}.{entity}.{partition}`` becomes
    ``constellation.telemetry.{org}.{entity}``; any other subject is returned as it is.
    """
    parts = subject.split(".")
    if len(parts) == 5 and parts[1] == TELEMETRY_PARTITIONED_ROOT and PARTITION_RE.fullmatch(parts[4]):
        return f"{parts[0]}.telemetry.{parts[2]}.{parts[3]}"
    return subject


@dataclass(frozen=True, slots=True)
class EntitySubject:
    """The identity an entity lifecycle subject carries."""

    org_id: str
    kind: str


def parse_entity_subject(subject: str) -> EntitySubject:
    """Parse ``constellation.entities.{org}.{created|updated|deleted|status}``."""
    parts = subject.split(".")
    if len(parts) != 4 or parts[:2] != ["constellation", "entities"] or parts[3] not in ENTITY_EVENT_KINDS:
        raise SubjectError(
            f"entity subject {subject!r} must be constellation.entities.{{org_id}}.{{{'|'.join(ENTITY_EVENT_KINDS)}}}"
        )
    return EntitySubject(check_token(parts[2], "org_id"), parts[3])


def parse_organization_subject(subject: str) -> str:
    """Parse ``constellation.organizations.{created|updated|deleted}`` and return the kind."""
    parts = subject.split(".")
    if len(parts) != 3 or parts[:2] != ["constellation", "organizations"] or parts[2] not in ORG_EVENT_KINDS:
        raise SubjectError(
            f"organization subject {subject!r} must be constellation.organizations.{{{'|'.join(ORG_EVENT_KINDS)}}}"
        )
    return parts[2]


@dataclass(frozen=True, slots=True)
class EventSubject:
    """The identity an ISR event subject carries; track_id is set only for detections."""

    org_id: str
    entity_id: str
    event_type: str
    track_id: str | None = None


def parse_event_subject(subject: str) -> EventSubject:
    """Parse a detection (7 tokens) or device event (6 tokens) subject under constellation.events.isr."""
    parts = subject.split(".")
    if len(parts) < 6 or parts[:3] != ["constellation", "events", "isr"]:
        raise SubjectError(
            f"event subject {subject!r} must be constellation.events.isr.{{org_id}}.{{entity_id}}.{{event_type}}"
        )
    org_id = check_token(parts[3], "org_id")
    entity_id = check_token(parts[4], "entity_id")
    if parts[5] == "detection":
        if len(parts) != 7:
            raise SubjectError(
                f"detection subject {subject!r} must have exactly 7 tokens "
                "(constellation.events.isr.{org}.{entity}.detection.{track_id}), "
                f"got {len(parts)}"
            )
        return EventSubject(org_id, entity_id, "detection", check_token(parts[6], "track_id"))
    if len(parts) != 6:
        raise SubjectError(f"device event subject {subject!r} must have exactly 6 tokens, got {len(parts)}")
    return EventSubject(org_id, entity_id, check_token(parts[5], "event_type"))
