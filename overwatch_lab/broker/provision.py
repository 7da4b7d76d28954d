"""Create or update, idempotently, the streams, durable consumers and KV bucket of docs/wire.md.

Each object is read back first: absent → created, present but different in a field the lab
owns → updated (starting from the server's own config, so fields the lab does not manage are
kept), present and equal → left alone. ``num_replicas`` is the lab's only when
``LabConfig.replicas`` (or a stream's ``StreamLimits.replicas``) is set; unset, a new stream or
bucket gets 1 and an existing one keeps its own (see :mod:`overwatch_lab.broker.replicas`). Running
:func:`provision` twice therefore reports everything ``unchanged`` the second time, and changing
a limit in :class:`~overwatch_lab.config.LabConfig` updates the stream in place.

Every stream and consumer the lab creates carries the metadata :data:`LAB_METADATA`. On a server
the lab does not own (``LabConfig.nats_url``), :func:`foreign_conflicts` runs first: an object
that exists without that mark (an Overwatch deployment's own) and differs from what the lab would
provision is a conflict, and the lab refuses to boot naming each one; it never updates, deletes
or takes over another system's stream, consumer or bucket (``Lab.observe`` watches one instead).

A field the server cannot change in place (a stream's retention to or from work queue, a
consumer's ``max_waiting`` or deliver policy) makes the update fail with a
:class:`~overwatch_lab.errors.ProvisionError` naming the object and the server's reason: the lab
never deletes a stream or a durable consumer (it would lose data or positions).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from overwatch_lab.broker import replicas as rep
from overwatch_lab.config import LabConfig, StreamLimits
from overwatch_lab.errors import ProvisionError
from overwatch_lab.protocol import subjects as s
from overwatch_lab.protocol.commands import (
    COMMAND_ACKS_ALL,
    CONSUMER_COMMAND_ACK,
    KV_COMMAND_STATE,
    STREAM_COMMAND_ACKS,
)

log = logging.getLogger(__name__)

KV_STREAM = f"KV_{s.KV_GLOBAL_STATE}"
LAB_METADATA_KEY = "overwatch-lab"
LAB_METADATA = {LAB_METADATA_KEY: "provisioned"}
"""Stamped on every stream and consumer the lab creates: what :func:`foreign_conflicts` looks for."""
MAX_WAITING = 4096  # concurrent pull requests per consumer (server default 512)
_NS = 1_000_000_000
_ERR_STREAM_NAME_IN_USE = 10058  # JSStreamNameExistErr

# Direct get / rollup headers per stream, as upstream sets them (OVERWATCH-NOTES.md §2).
# A stream not listed here (an extra one in LabConfig.streams) gets neither.
STREAM_FLAGS: dict[str, tuple[bool, bool]] = {  # name -> (allow_direct, allow_rollup_hdrs)
    s.STREAM_ENTITIES: (True, True),
    s.STREAM_ORGANIZATIONS: (True, False),
    s.STREAM_EVENTS: (True, False),
    s.STREAM_TELEMETRY: (True, True),
    s.STREAM_COMMANDS: (False, False),
    s.STREAM_QUARANTINE: (False, False),
}

# Durable pull consumers: (stream, durable name, filter subject). The telemetry partitions'
# durables (one per LabConfig.telemetry_partitions) are added by :func:`consumers`.
CONSUMERS: tuple[tuple[str, str, str], ...] = (
    (s.STREAM_ENTITIES, s.CONSUMER_ENTITY, s.ENTITIES_ALL),
    (s.STREAM_ORGANIZATIONS, s.CONSUMER_ORGANIZATION, s.ORGANIZATIONS_ALL),
    (s.STREAM_EVENTS, s.CONSUMER_EVENT, s.EVENTS_ALL),
    (s.STREAM_TELEMETRY, s.CONSUMER_TELEMETRY, s.TELEMETRY_ALL),
    (s.STREAM_COMMANDS, s.CONSUMER_COMMAND, s.COMMANDS_ALL),
)
"""``telemetry-processor`` reads what the partition transform leaves under ``constellation.telemetry.>``:
messages stored before the stream had its transform (or by a stream provisioned without it) and
every invalid subject shape, which it quarantines."""


def consumers(config: LabConfig) -> tuple[tuple[str, str, str], ...]:
    """Every durable of :data:`CONSUMERS` plus one per telemetry partition (``telemetry-processor-p{k}``)."""
    parts = tuple(
        (s.STREAM_TELEMETRY, s.telemetry_partition_durable(k), s.telemetry_partition_filter(k))
        for k in range(config.telemetry_partitions)
    )
    return CONSUMERS + parts


def telemetry_transform(partitions: int) -> api.SubjectTransform:
    """The telemetry stream's subject transform: append the partition token (docs/wire.md)."""
    return api.SubjectTransform(src=s.TELEMETRY_TRANSFORM_SRC, dest=s.telemetry_transform_dest(partitions))


@dataclass(frozen=True, slots=True)
class ProvisionReport:
    """What one :func:`provision` run did.

    Attributes:
        created: Names created by this run (streams by name, consumers as ``STREAM/durable``,
            the KV bucket as ``kv:BUCKET``).
        updated: Names whose config differed and was updated.
        unchanged: Names already as configured.
        elapsed_s: Wall time of the run.
    """

    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    elapsed_s: float = 0.0

    @property
    def changed(self) -> bool:
        """True if anything was created or updated."""
        return bool(self.created or self.updated)

    def __str__(self) -> str:
        return (
            f"{len(self.created)} created, {len(self.updated)} updated, {len(self.unchanged)} unchanged "
            f"in {self.elapsed_s * 1000:.0f} ms"
            + (f"; created {', '.join(self.created)}" if self.created else "")
            + (f"; updated {', '.join(self.updated)}" if self.updated else "")
        )


@dataclass(slots=True)
class _Tally:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def add(self, outcome: str, name: str) -> None:
        getattr(self, outcome).append(name)


def stream_config(
    name: str, limits: StreamLimits, partitions: int | None = None, replicas: int | None = None
) -> api.StreamConfig:
    """Build the JetStream config of one stream from its :class:`StreamLimits` (file storage).

    ``partitions`` (the telemetry stream only) adds the partition subject transform.
    ``replicas``: its ``num_replicas`` (None: ``limits.replicas``, else 1).
    """
    direct, rollup = STREAM_FLAGS.get(name, (False, False))
    transform = telemetry_transform(partitions) if partitions is not None else None
    return api.StreamConfig(
        name=name,
        subjects=list(limits.subjects),
        retention=api.RetentionPolicy(limits.retention),
        discard=api.DiscardPolicy(limits.discard),
        storage=api.StorageType.FILE,
        max_msgs=limits.max_msgs,
        max_bytes=limits.max_bytes,
        max_age=limits.max_age_s,
        max_msg_size=limits.max_msg_size,
        duplicate_window=limits.duplicate_window_s,
        allow_direct=direct,
        allow_rollup_hdrs=rollup,
        subject_transform=transform,
        num_replicas=replicas or limits.replicas or 1,
        metadata=dict(LAB_METADATA),
    )


def consumer_config(durable: str, filter_subject: str, config: LabConfig) -> api.ConsumerConfig:
    """Build the config of one durable pull consumer (explicit ack, deliver all, instant replay).

    ``filter_subject``: one subject, or several separated by spaces (``filter_subjects``).
    """
    filters = filter_subject.split()
    return api.ConsumerConfig(
        durable_name=durable,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=config.ack_wait_s,
        max_deliver=config.max_deliver,
        deliver_policy=api.DeliverPolicy.ALL,
        replay_policy=api.ReplayPolicy.INSTANT,
        filter_subject=filters[0] if len(filters) == 1 else None,
        filter_subjects=filters if len(filters) > 1 else None,
        max_ack_pending=config.max_ack_pending,
        max_waiting=MAX_WAITING,
        metadata=dict(LAB_METADATA),
    )


_STREAM_FIELDS = (
    "subjects",
    "retention",
    "discard",
    "storage",
    "max_msgs",
    "max_bytes",
    "max_age",
    "max_msg_size",
    "duplicate_window",
    "allow_direct",
    "allow_rollup_hdrs",
    "subject_transform",
)
_CONSUMER_FIELDS = (
    "ack_policy",
    "ack_wait",
    "max_deliver",
    "deliver_policy",
    "replay_policy",
    "filter_subject",
    "filter_subjects",
    "max_ack_pending",
    "max_waiting",
)
_SECONDS_FIELDS = frozenset({"max_age", "duplicate_window", "ack_wait"})


def _norm(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in _SECONDS_FIELDS:
        return round(float(value) * _NS)
    if name in ("subjects", "filter_subjects"):
        return sorted(value) or None
    if name == "filter_subject" and value == "":
        return None
    if isinstance(value, api.SubjectTransform):
        return (value.src, value.dest)
    if hasattr(value, "value"):  # str enums from our configs vs plain strings from the server
        return value.value
    return value


def diff(desired: api.Base, actual: api.Base, fields: tuple[str, ...]) -> dict[str, tuple[Any, Any]]:
    """Return ``{field: (actual, desired)}`` for the managed fields that differ."""
    out: dict[str, tuple[Any, Any]] = {}
    for f in fields:
        want, have = _norm(f, getattr(desired, f)), _norm(f, getattr(actual, f, None))
        if want != have:
            out[f] = (have, want)
    return out


def _describe(exc: BaseException, replicas: int | None = None) -> str:
    if isinstance(exc, nats.js.errors.APIError) and exc.description:
        said = f"{exc.description} (code {exc.code}, err_code {exc.err_code})"
        hint = rep.explain(exc, replicas)
        return f"{said}: {hint}" if hint else said
    if isinstance(exc, nats.errors.NoRespondersError):
        return "no responders: JetStream is not enabled on this server or account"
    if isinstance(exc, nats.errors.TimeoutError):
        return "the JetStream API did not answer in time"
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


def _lab_made(cfg: api.StreamConfig | api.ConsumerConfig) -> bool:
    return bool((cfg.metadata or {}).get(LAB_METADATA_KEY))


async def foreign_conflicts(js: JetStreamContext, config: LabConfig) -> list[str]:
    """What :func:`provision` and :func:`provision_commands` would change that the lab did not make.

    Reads only (stream and consumer info). An object is a conflict when it exists, lacks the
    :data:`LAB_METADATA` mark, and differs from the lab's config in a field the lab manages
    (for the KV bucket: history, max age, storage). Absent objects and identical ones are not.

    Returns:
        One line per conflict: ``stream NAME: field have -> want, ...``, ``consumer
        STREAM/DURABLE: ...``, ``kv BUCKET: ...``; empty when there is none.

    Raises:
        ProvisionError: an object could not be read.
    """
    out: list[str] = []
    streams = [
        (stream_config(name, limits, partitions, replicas), replicas)
        for name, limits, partitions, replicas in _streams(config)
    ]
    wanted = [*consumers(config), (STREAM_COMMAND_ACKS, CONSUMER_COMMAND_ACK, COMMAND_ACKS_ALL)]
    try:
        for want, replicas in streams:
            assert want.name is not None
            try:
                have = (await js.stream_info(want.name)).config
            except nats.js.errors.NotFoundError:
                continue
            fields = rep.managed_fields(_STREAM_FIELDS, replicas)
            if not _lab_made(have) and (changes := diff(want, have, fields)):
                out.append(f"stream {want.name}: {_show(changes)}")
        for stream, durable, filter_subject in wanted:
            try:
                info = await js.consumer_info(stream, durable)
            except nats.js.errors.NotFoundError:
                continue
            want_c = consumer_config(durable, filter_subject, config)
            if not _lab_made(info.config) and (changes := diff(want_c, info.config, _CONSUMER_FIELDS)):
                out.append(f"consumer {stream}/{durable}: {_show(changes)}")
        for bucket, history, max_age in (
            (s.KV_GLOBAL_STATE, config.kv_history, 0.0),
            (KV_COMMAND_STATE, config.command_state_history, config.command_state_max_age_s),
        ):
            try:
                have = (await js.stream_info(f"KV_{bucket}")).config
            except nats.js.errors.NotFoundError:
                continue
            want, fields = rep.kv_want(have, config.replicas, max_msgs_per_subject=history, max_age=max_age)
            if changes := diff(want, have, fields):
                out.append(f"kv {bucket}: {_show(changes)}")
    except nats.errors.Error as exc:
        raise ProvisionError(f"could not read the server's streams and consumers: {_describe(exc)}") from exc
    return out


async def provision(js: JetStreamContext, config: LabConfig) -> ProvisionReport:
    """Create or update every stream of ``config.streams``, the durable consumers and the KV bucket.

    Args:
        js: A JetStream context of a connected client.
        config: Supplies the stream limits, consumer settings and KV history.

    Returns:
        What was created, updated and left unchanged, and how long it took.

    Raises:
        ProvisionError: an object could not be read, created or updated; the message names it
            and carries the server's description.
    """
    started = time.perf_counter()
    tally = _Tally()
    for name, limits, partitions, replicas in _streams(config):
        if name == STREAM_COMMAND_ACKS:  # provision_commands' (its report stays as it was)
            continue
        stream_cfg = stream_config(name, limits, partitions, replicas)
        tally.add(await _ensure_stream(js, stream_cfg, replicas), name)
    tally.add(await _ensure_kv(js, config.kv_history, config.replicas), f"kv:{s.KV_GLOBAL_STATE}")
    for stream, durable, filter_subject in consumers(config):
        desired = consumer_config(durable, filter_subject, config)
        tally.add(await _ensure_consumer(js, stream, desired), f"{stream}/{durable}")
    report = ProvisionReport(
        tuple(tally.created), tuple(tally.updated), tuple(tally.unchanged), time.perf_counter() - started
    )
    log.log(logging.INFO if report.changed else logging.DEBUG, "provision: %s", report)
    return report


async def provision_commands(js: JetStreamContext, config: LabConfig) -> ProvisionReport:
    """Create or update the command objects (issue 4): the CONSTELLATION_COMMAND_ACKS stream, its
    durable ``command-ack-processor`` and the CONSTELLATION_COMMAND_STATE KV bucket.

    Kept apart from :func:`provision` so its report (and docs/wire.md's table) stays as it was; the
    Lab runs both at boot.

    Raises:
        ProvisionError: as :func:`provision`.
    """
    started = time.perf_counter()
    tally = _Tally()
    replicas = config.stream_replicas(config.command_acks_stream)
    acks = stream_config(STREAM_COMMAND_ACKS, config.command_acks_stream, replicas=replicas)
    tally.add(await _ensure_stream(js, acks, replicas), STREAM_COMMAND_ACKS)
    tally.add(await _ensure_command_kv(js, config), f"kv:{KV_COMMAND_STATE}")
    desired = consumer_config(CONSUMER_COMMAND_ACK, COMMAND_ACKS_ALL, config)
    tally.add(
        await _ensure_consumer(js, STREAM_COMMAND_ACKS, desired),
        f"{STREAM_COMMAND_ACKS}/{CONSUMER_COMMAND_ACK}",
    )
    report = ProvisionReport(
        tuple(tally.created), tuple(tally.updated), tuple(tally.unchanged), time.perf_counter() - started
    )
    log.log(logging.INFO if report.changed else logging.DEBUG, "provision commands: %s", report)
    return report


async def open_command_kv(js: JetStreamContext) -> KeyValue:
    """Return the KeyValue handle of the command-state bucket.

    Raises:
        ProvisionError: the bucket does not exist (the running lab predates commands) or cannot be read.
    """
    try:
        return await js.key_value(KV_COMMAND_STATE)
    except nats.js.errors.BucketNotFoundError as exc:
        raise ProvisionError(
            f"KV bucket {KV_COMMAND_STATE} does not exist; provision the server first"
        ) from exc
    except nats.errors.Error as exc:
        raise ProvisionError(f"cannot open KV bucket {KV_COMMAND_STATE}: {_describe(exc)}") from exc


async def _ensure_command_kv(js: JetStreamContext, config: LabConfig) -> str:
    history, max_age = config.command_state_history, config.command_state_max_age_s
    stream = f"KV_{KV_COMMAND_STATE}"
    try:
        try:
            info = await js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            await js.create_key_value(
                bucket=KV_COMMAND_STATE,
                history=history,
                ttl=max_age,
                storage=api.StorageType.FILE,
                direct=True,
                replicas=config.replicas or 1,
                description="overwatch-lab command status: one JSON document per command and entity",
            )
            log.info(
                "KV bucket %s created (history %d, R%d)", KV_COMMAND_STATE, history, config.replicas or 1
            )
            return "created"
        want, fields = rep.kv_want(
            info.config, config.replicas, file_storage=False, max_msgs_per_subject=history, max_age=max_age
        )
        changes = diff(want, info.config, fields)
        if not changes:
            return "unchanged"
        await js.update_stream(want)
        log.info("KV bucket %s updated: %s", KV_COMMAND_STATE, _show(changes))
        return "updated"
    except nats.errors.Error as exc:
        raise ProvisionError(
            f"could not create or update KV bucket {KV_COMMAND_STATE}: {_describe(exc, config.replicas)}"
        ) from exc


async def open_kv(js: JetStreamContext) -> KeyValue:
    """Return the KeyValue handle of the global-state bucket.

    Raises:
        ProvisionError: the bucket does not exist (run :func:`provision` first) or cannot be read.
    """
    try:
        return await js.key_value(s.KV_GLOBAL_STATE)
    except nats.js.errors.BucketNotFoundError as exc:
        raise ProvisionError(
            f"KV bucket {s.KV_GLOBAL_STATE} does not exist; provision the server first"
        ) from exc
    except nats.errors.Error as exc:
        raise ProvisionError(f"cannot open KV bucket {s.KV_GLOBAL_STATE}: {_describe(exc)}") from exc


def _streams(config: LabConfig) -> list[tuple[str, StreamLimits, int | None, int | None]]:
    """(name, limits, partitions, configured replicas) of every stream the lab provisions, the
    command acks stream last."""
    out = [
        (name, limits, config.telemetry_partitions if name == s.STREAM_TELEMETRY else None,
         config.stream_replicas(limits))
        for name, limits in config.streams.items()
    ]  # fmt: skip
    acks = config.command_acks_stream
    return [*out, (STREAM_COMMAND_ACKS, acks, None, config.stream_replicas(acks))]


async def _ensure_stream(js: JetStreamContext, desired: api.StreamConfig, replicas: int | None = None) -> str:
    """``replicas``: the configured count (None: ``num_replicas`` is set at creation only)."""
    name = desired.name
    fields = rep.managed_fields(_STREAM_FIELDS, replicas)
    if name is None:
        raise ProvisionError("a stream config without a name cannot be provisioned")
    try:
        try:
            info = await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            try:
                await js.add_stream(desired)
                log.info("stream %s created", name)
                return "created"
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != _ERR_STREAM_NAME_IN_USE:
                    raise
                # Someone else created it between our read and our create: update it instead.
                info = await js.stream_info(name)
        changes = diff(desired, info.config, fields)
        if not changes:
            return "unchanged"
        await js.update_stream(info.config.evolve(**{f: getattr(desired, f) for f in fields}))
        log.info("stream %s updated: %s", name, _show(changes))
        return "updated"
    except nats.errors.Error as exc:
        raise ProvisionError(
            f"could not create or update stream {name}: {_describe(exc, desired.num_replicas)}"
        ) from exc


async def _ensure_consumer(js: JetStreamContext, stream: str, desired: api.ConsumerConfig) -> str:
    durable = desired.durable_name
    assert durable is not None
    try:
        try:
            info = await js.consumer_info(stream, durable)
        except nats.js.errors.NotFoundError:
            await js.add_consumer(stream, desired)
            log.info("consumer %s/%s created", stream, durable)
            return "created"
        changes = diff(desired, info.config, _CONSUMER_FIELDS)
        if not changes:
            return "unchanged"
        # add_consumer on an existing durable is the server's create-or-update.
        update = info.config.evolve(**{f: getattr(desired, f) for f in _CONSUMER_FIELDS})
        await js.add_consumer(stream, update)
        log.info("consumer %s/%s updated: %s", stream, durable, _show(changes))
        return "updated"
    except nats.errors.Error as exc:
        raise ProvisionError(
            f"could not create or update consumer {durable} on stream {stream}: {_describe(exc)}"
        ) from exc


async def retire_partitions(js: JetStreamContext, config: LabConfig) -> tuple[list[str], list[str]]:
    """Settle the durables of telemetry partitions beyond ``config.telemetry_partitions`` (the count
    was lowered since an earlier run of this data directory); call it after :func:`provision`.

    The stream transform already maps into the new partitions, so nothing new reaches them: a
    durable with nothing pending and nothing unacknowledged is deleted (it can strand nothing);
    one that still has messages is kept, for the lab to consume until it is drained (a later
    boot deletes it). Per-entity order across the change is kept by the state cursors (a message
    older than the live state is history only), not by the partitions.

    Returns:
        (durables kept, to be consumed too; durables deleted).

    Raises:
        ProvisionError: the consumers could not be listed, read or deleted.
    """
    kept: list[str] = []
    deleted: list[str] = []
    try:
        for info in await js.consumers_info(s.STREAM_TELEMETRY):
            durable = info.name
            k = s.partition_of_durable(durable)
            if k is None or k < config.telemetry_partitions:
                continue
            if info.num_pending or info.num_ack_pending:
                log.warning(
                    "telemetry partition durable %s is beyond the %d partitions but holds %d pending and "
                    "%d unacknowledged messages: consumed until drained",
                    durable, config.telemetry_partitions, info.num_pending, info.num_ack_pending,
                )  # fmt: skip
                kept.append(durable)
            else:
                await js.delete_consumer(s.STREAM_TELEMETRY, durable)
                log.info("telemetry partition durable %s deleted: drained, beyond the partitions", durable)
                deleted.append(durable)
    except nats.errors.Error as exc:
        raise ProvisionError(
            f"could not settle the telemetry partition durables of {s.STREAM_TELEMETRY}: {_describe(exc)}"
        ) from exc
    return sorted(kept, key=lambda d: s.partition_of_durable(d) or 0), deleted


async def _ensure_kv(js: JetStreamContext, history: int, replicas: int | None = None) -> str:
    try:
        try:
            info = await js.stream_info(KV_STREAM)
        except nats.js.errors.NotFoundError:
            await js.create_key_value(
                bucket=s.KV_GLOBAL_STATE,
                history=history,
                ttl=None,
                storage=api.StorageType.FILE,
                direct=True,
                replicas=replicas or 1,
                description="overwatch-lab entity state: one JSON document per entity",
            )
            log.info("KV bucket %s created (history %d, R%d)", s.KV_GLOBAL_STATE, history, replicas or 1)
            return "created"
        want, fields = rep.kv_want(info.config, replicas, max_msgs_per_subject=history, max_age=0.0)
        changes = diff(want, info.config, fields)
        if not changes:
            return "unchanged"
        await js.update_stream(want)
        log.info("KV bucket %s updated: %s", s.KV_GLOBAL_STATE, _show(changes))
        return "updated"
    except nats.errors.Error as exc:
        raise ProvisionError(
            f"could not create or update KV bucket {s.KV_GLOBAL_STATE}: {_describe(exc, replicas)}"
        ) from exc


def _show(changes: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items())
