"""Who may do what on the embedded broker: the roles, their subject permissions, and the
``authorization``/``accounts`` part of nats-server's config that enforces them.

Pure: no I/O. nats-server itself enforces every rule (NKey users with ``permissions``, see
docs/wire.md "Identities"); nothing here checks a message.

Roles (``Grant.role``):

- ``internal``: the lab itself (user and password, full rights, never handed out);
- ``device``: one entity of one organisation: publishes its own telemetry, device events and
  command acks, and the lifecycle events of its organisation (that subject carries no entity
  id, so the broker can scope it to the organisation only); subscribes to its own command
  delivery subject and its own inbox; no ``$JS.API``, no KV, nothing of another organisation;
- ``relay``: the same for a list of entities of one organisation, on one connection;
- ``observer``: read-only, every organisation: subscriptions to ``constellation.>`` (telemetry,
  lifecycle, commands, acks), reads of the lab's KV buckets (stream info, direct get, ordered
  watch consumers) and of the quarantine stream; no publish but the JetStream flow-control
  replies and API requests that read;
- ``operator``: an observer that may also send (and cancel) commands.

The system account (``SYS``, user ``overwatch-lab-sys``) answers the ``$SYS.REQ.SERVER.PING.*``
monitoring requests (varz, connz, jsz, healthz) instead of an HTTP port any local user could
reach; only the lab holds its password.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from overwatch_lab.protocol import commands as cmds
from overwatch_lab.protocol import subjects as s

Role = Literal["device", "relay", "observer", "operator"]
ROLES: tuple[Role, ...] = ("device", "relay", "observer", "operator")

INTERNAL_USER = "overwatch-lab"
SYSTEM_USER = "overwatch-lab-sys"
SYSTEM_ACCOUNT = "SYS"

INBOX_ROOT = "_INBOX"
"""Scoped identities get ``_INBOX.{role}.{name}`` as their inbox prefix and may subscribe only under it."""

STATS_BUCKET = "OVERWATCH_LAB_STATS"  # core/stats.py's bucket (a layer above: checked by a unit test)
OBSERVED_BUCKETS = (s.KV_GLOBAL_STATE, cmds.KV_COMMAND_STATE, STATS_BUCKET)
"""KV buckets an observer (and operator) may read."""
OBSERVED_STREAMS = (s.STREAM_QUARANTINE,)
"""Streams an observer may read through an ephemeral consumer of its own (``lab.frames.quarantine()``)."""

# The entity lifecycle kinds a device or relay may publish for its organisation (not `deleted`:
# removing an entity is the operator's, through the lab).
DEVICE_ENTITY_KINDS = ("created", "updated", "status")


@dataclass(frozen=True, slots=True)
class Permissions:
    """Subjects a user may publish to and subscribe to (nats-server ``permissions``)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Grant:
    """One scoped identity as the broker knows it (a user of the config file).

    Attributes:
        name: Unique name among the grants (an entity id for a device).
        role: What it may do (see the module docstring).
        public_key: Its NKey user public key (``U...``); the seed stays with the holder.
        org_id: The organisation of a device or relay (None: every organisation).
        entities: The entities of a device (one) or relay (several).
    """

    name: str
    role: Role
    public_key: str
    org_id: str | None = None
    entities: tuple[str, ...] = field(default=())

    @property
    def inbox_prefix(self) -> str:
        """``_INBOX.{role}.{name}``: the only inbox it may subscribe to."""
        return inbox_prefix(self.role, self.name)


def inbox_prefix(role: Role, name: str) -> str:
    """The inbox prefix of a scoped identity (``name`` obeys the token rule)."""
    return f"{INBOX_ROOT}.{role}.{s.check_token(name, 'name')}"


def device_subjects(org_id: str, entity_id: str) -> Permissions:
    """What one entity of ``org_id`` may publish and subscribe to (without its inbox)."""
    return Permissions(
        publish=(
            s.telemetry_subject(org_id, entity_id),
            f"constellation.events.isr.{org_id}.{entity_id}.>",
            cmds.ack_subject(org_id, entity_id),
        ),
        subscribe=(cmds.delivery_subject(org_id, entity_id),),
    )


def _reads(buckets: Iterable[str], streams: Iterable[str]) -> tuple[str, ...]:
    """The JetStream API requests that read a KV bucket (open, get, watch) or a stream."""
    out = ["$JS.API.INFO"]
    for bucket in buckets:
        stream = f"KV_{bucket}"
        out += [
            f"$JS.API.STREAM.INFO.{stream}",
            f"$JS.API.STREAM.MSG.GET.{stream}",
            f"$JS.API.DIRECT.GET.{stream}",
            f"$JS.API.DIRECT.GET.{stream}.>",
            f"$JS.API.CONSUMER.CREATE.{stream}",  # ephemeral (ordered) watch consumers
            f"$JS.API.CONSUMER.CREATE.{stream}.>",
            f"$JS.API.CONSUMER.INFO.{stream}.*",
            f"$JS.FC.{stream}.>",  # flow-control replies of an ordered consumer
        ]
    for stream in streams:
        out += [
            f"$JS.API.STREAM.INFO.{stream}",
            f"$JS.API.CONSUMER.CREATE.{stream}",
            f"$JS.API.CONSUMER.CREATE.{stream}.>",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.*",
            f"$JS.API.CONSUMER.INFO.{stream}.*",
            f"$JS.ACK.{stream}.>",  # acks of its own consumer: a limits stream keeps the messages
        ]
    return tuple(out)


def permissions(grant: Grant) -> Permissions:
    """The subject permissions of ``grant`` (see the module docstring)."""
    inbox = f"{grant.inbox_prefix}.>"
    if grant.role in ("device", "relay"):
        if grant.org_id is None or not grant.entities:
            raise ValueError(f"a {grant.role} needs an organisation and at least one entity")
        pub: list[str] = [s.entity_subject(grant.org_id, kind) for kind in DEVICE_ENTITY_KINDS]
        sub: list[str] = [inbox]
        for entity_id in grant.entities:
            one = device_subjects(grant.org_id, entity_id)
            pub += one.publish
            sub += one.subscribe
        return Permissions(tuple(pub), tuple(sub))
    reads = _reads(OBSERVED_BUCKETS, OBSERVED_STREAMS)
    observe = ("constellation.>", inbox)
    if grant.role == "observer":
        return Permissions(reads, observe)
    if grant.role == "operator":
        return Permissions((*reads, s.COMMANDS_ALL), observe)
    raise ValueError(f"unknown role {grant.role!r}; expected one of {ROLES}")


def _q(value: str) -> str:
    return json.dumps(value)  # nats-server's parser takes JSON-style quoted strings


def _user_block(grant: Grant) -> str:
    perms = permissions(grant)
    pub = ", ".join(_q(x) for x in perms.publish)
    sub = ", ".join(_q(x) for x in perms.subscribe)
    return (
        f"    {{ nkey: {_q(grant.public_key)}, permissions: {{ "
        f"publish: {{ allow: [{pub}] }}, subscribe: {{ allow: [{sub}] }} }} }}"
        f"  # {grant.role} {grant.name}"
    )


def render_authorization(internal_password: str, system_password: str, grants: Iterable[Grant]) -> str:
    """The ``authorization``, ``accounts`` and ``system_account`` config text for these users.

    The lab's user and every grant live in the global account (where the lab's streams and KV
    buckets are); the system account holds only the lab's monitoring user.
    """
    lines = [
        "# Written by overwatch-lab (mode 0600): who may connect and what each may do.",
        "authorization {",
        "  users: [",
        f"    {{ user: {_q(INTERNAL_USER)}, password: {_q(internal_password)} }}  # the lab: full rights",
    ]
    lines += [_user_block(g) for g in grants]
    lines += [
        "  ]",
        "}",
        f"accounts {{ {SYSTEM_ACCOUNT}: {{ users: [ {{ user: {_q(SYSTEM_USER)}, "
        f"password: {_q(system_password)} }} ] }} }}",
        f"system_account: {SYSTEM_ACCOUNT}",
        "",
    ]
    return "\n".join(lines)
