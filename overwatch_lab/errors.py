"""Every exception overwatch-lab raises, in one place.

Hierarchy::

    OverwatchError
    ├── ConfigError            bad LabConfig value or lab.json
    ├── ProtocolError          a message that breaks docs/wire.md (never retried)
    │   ├── SubjectError       bad subject or identifier token
    │   └── EnvelopeError      bad JSON body / envelope field
    ├── BrokerError            NATS side (nats-py's errors are translated to these in broker/ and kvstate)
    │   ├── BrokerStartError   nats-server did not become ready
    │   ├── BrokerExited       nats-server died while the lab needed it
    │   ├── ProvisionError     streams / consumers / KV could not be created
    │   ├── BrokerUnavailable  no server to talk to now (reconnecting, no responders, buffer full)
    │   │   └── BrokerConnectionClosed  our client connection is closed or draining
    │   ├── BrokerTimeout      a request got no answer in time (also a TimeoutError)
    │   ├── BrokerApiError     JetStream answered a request with an error
    │   │   └── BrokerNotFound the stream, consumer or message asked for does not exist
    │   └── KvError            a KV read or write failed
    │       └── KvConflictError  a compare-and-set write kept conflicting
    ├── DatabaseError          libSQL side (translated from sqlite3 / libsql errors)
    │   └── DatabaseUnavailable  an infrastructure fault (full, read-only, locked, unreachable)
    ├── SyncError              a synchronizer pass could not complete (a KV step failed)
    ├── WorkerProcessError     a telemetry worker process would not start or kept dying
    ├── FrameError             a frame query or replay that names nothing known or makes no sense
    ├── DataDirError           overwatch_lab.open(): no lab data there, or written by newer code
    ├── LabStateError          lab used in the wrong lifecycle state
    │   └── DataDirInUse       another live lab owns the data directory (lab.lock)
    ├── CommandError           command API (issue 4)
    │   ├── CommandRejected
    │   └── CommandTimeout
    └── ScenarioError          bad scenario file or parameters (simulators)

Messages carry the values involved so a notebook user can act on them.
"""

from __future__ import annotations


class OverwatchError(Exception):
    """Base class of every error raised by overwatch-lab."""


class ConfigError(OverwatchError, ValueError):
    """Raised when a configuration value (LabConfig, CLI flag, lab.json) is invalid."""


class ProtocolError(OverwatchError, ValueError):
    """Raised when a message breaks the wire contract; such a message can never succeed."""


class SubjectError(ProtocolError):
    """Raised for a malformed subject or an identifier token that breaks the token rule."""


class EnvelopeError(ProtocolError):
    """Raised for a malformed JSON body or envelope field (names the field when it can)."""


class BrokerError(OverwatchError):
    """Raised for NATS-side failures."""


class BrokerStartError(BrokerError):
    """Raised when the embedded nats-server does not start or become ready in time."""


class BrokerExited(BrokerError):
    """Raised when the embedded nats-server exits while the lab still needs it."""


class ProvisionError(BrokerError):
    """Raised when a stream, consumer or KV bucket cannot be created or updated."""


class BrokerUnavailable(BrokerError):
    """Raised by a call through the broker seam (``broker/jetstream.py``) when no server can take
    it now: the client is reconnecting, its outbound buffer is full, the connection went stale,
    or nothing answered the request (no responders: JetStream or the consumer is gone).

    Infrastructure, not the message's fault: callers hold or retry later.
    """


class BrokerConnectionClosed(BrokerUnavailable):
    """Raised by a call through the broker seam when our client connection is closed or draining
    (the lab is stopping, or it gave up reconnecting)."""


class BrokerTimeout(BrokerError, TimeoutError):
    """Raised by a call through the broker seam when a request, flush or JetStream publish got no
    answer within its timeout (the server may still have done it)."""


class BrokerApiError(BrokerError):
    """Raised by a call through the broker seam when the JetStream API answers with an error.

    ``code`` (HTTP-like status), ``err_code`` (JetStream's own number) and ``description`` are the
    server's, when it sent them.
    """

    code: int | None = None
    err_code: int | None = None
    description: str | None = None


class BrokerNotFound(BrokerApiError):
    """Raised by a call through the broker seam when the stream, consumer or stored message it
    names does not exist (JetStream's 404)."""


class KvError(BrokerError):
    """Raised by :class:`~overwatch_lab.kvstate.EntityKV` when a KV read, write, delete or replay
    fails (timeout, lost connection, an API error); the message names the key and the cause is
    chained. Infrastructure: workers hold the message instead of quarantining it."""


class KvConflictError(KvError):
    """Raised by :meth:`~overwatch_lab.kvstate.EntityKV.mutate` when a compare-and-set write still
    conflicts after the configured number of attempts (other writers kept winning)."""


class DatabaseError(OverwatchError):
    """Raised when the libSQL store fails (open, migrate, write or query).

    A plain ``DatabaseError`` is caused by the call itself (a constraint, a bad row, a bug):
    retrying the same data fails the same way. Infrastructure faults raise the subclass
    :class:`DatabaseUnavailable`.
    """


class DatabaseUnavailable(DatabaseError):
    """Raised when the store cannot do its work for a reason outside the data: the disk is full,
    the file or file system is read-only, the database is locked by another process beyond the
    busy timeout, an I/O error, the file cannot be opened, or the libSQL server is unreachable.

    Not the message's fault: workers hold (no ack, backoff, alarm) and retry until the fault
    clears, and never quarantine for it. The store drops its connection when it raises this and
    opens a new one on its next call.
    """


class SyncError(OverwatchError):
    """Raised by ``Synchronizer.run_pass`` when a pass cannot complete because one of its KV
    steps failed (reading every document, creating, repairing or removing one); the message names
    the step and the entity, the :class:`KvError` is chained. The sync loop counts it in
    ``failed_passes`` and logs one warning per outage. A store outage is not wrapped: the pass
    raises the store's :class:`DatabaseUnavailable` as it is."""


class WorkerProcessError(OverwatchError):
    """Raised (as the lab's failure) when a telemetry worker process did not become ready within
    ``ready_timeout_s``, or exited unexpectedly more than ``worker_restart_attempts`` times within
    ``broker_restart_window_s``; the message names the process, its exit code and its last
    stderr line."""


class FrameError(OverwatchError, ValueError):
    """Raised by ``lab.frames`` / ``overwatch_lab.open(...)`` / replay for a query that cannot be answered as asked.

    An unknown entity, organisation, entity type, message type or column (the message names it
    and what is known), a time window whose start is after its end, a value that is not a
    time, a bad resampling interval or aggregation, a replay speed that is not a positive
    number, or a re-publish that the target would drop as duplicates (same lab, unchanged
    ``message_uid``). A query that is well formed but matches nothing (an empty window, a known
    entity that sent nothing) is not an error: it returns an empty frame with the usual columns
    and dtypes.
    """


class DataDirError(OverwatchError):
    """Raised by ``overwatch_lab.open(data_dir)`` when there is no lab data to read there.

    The folder does not exist, holds no lab database (``overwatch.db``) or an empty one, or the
    database was written by a newer overwatch-lab (a schema version this code does not know).
    """


class LabStateError(OverwatchError, RuntimeError):
    """Raised when a Lab is used in the wrong lifecycle state (e.g. started twice)."""


class DataDirInUse(LabStateError):
    """Raised when a Lab would own a data directory whose ``lab.lock`` another lab holds.

    Raised by ``Lab.start()`` / ``Lab.up()`` / ``overwatch-lab up`` when a live lab owns the
    directory (the message names its pid; attach to it instead), or when the lock stays held
    longer than ``stop_timeout_s`` after its lab died (its nats-server still shutting down).
    """


class CommandError(OverwatchError):
    """Raised by the command API.

    When a delivery ended in a status other than the one awaited, ``status`` (a
    ``CommandStatus``), ``reason`` and ``entity_id`` say which one and why; otherwise None.
    """

    status: str | None = None
    reason: str | None = None
    entity_id: str | None = None


class CommandRejected(CommandError):
    """Raised when a command is rejected (by the lab or by the device)."""


class CommandTimeout(CommandError, TimeoutError):
    """Raised when a command does not reach the awaited status in time."""


class ScenarioError(OverwatchError, ValueError):
    """Raised for an invalid scenario (names the offending field)."""
