"""The CoT sender: live entity state out to TAK clients, at a bounded rate, on a thread of its own.

:class:`CotSender` reads what changed in the lab's entity state bucket (its one watcher-backed
KV cache, through ``source.entity_changes(version)``: a :class:`~overwatch_lab.lab.Lab`, owner
or attached, is such a source), turns each changed document into a CoT event
(:mod:`overwatch_lab.cot.events`) and sends it (:mod:`overwatch_lab.cot.transport`)::

    with CotSender(lab, to="udp://239.2.3.1:6969", rate_hz=1) as tak:
        ...                       # the fleet shows on ATAK/WinTAK/WebTAK
    tak.stats()                   # sent, unchanged, capped, no_position, send_errors, …

What is sent, and when (every tick, ``tick_s``):

- an entity whose document changed is sent when its event says something new (position,
  course, name, mode …) or when the last one sent is older than half the stale time (so a TAK
  client never greys out an entity the lab still hears from);
- at most one event per entity per ``1 / rate_hz`` s, and at most ``max_events_per_s`` for all
  of them (:class:`~overwatch_lab.cot.pacing.Pacer`); the latest state waits, never a queue;
- an entity is first sent when it is live and has a position; one that goes not live (the
  lab's ``stale_after_s`` without a word) or is deleted after that is sent once more, already
  stale, so TAK clients drop it; an entity that was never live is not sent at all;
- an event that could not be sent (TCP server down) stays due and goes out once it can.

Stopping: :meth:`CotSender.stop` (or leaving the ``with``) ends the thread within one tick and
closes the socket. A failure of the thread itself (a bug) ends it: :attr:`CotSender.failure`
says what and :meth:`CotSender.ended` resolves.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

from overwatch_lab.config import LabConfig
from overwatch_lab.cot.events import CotEvent, affiliation_letter, entity_event
from overwatch_lab.cot.pacing import MAX_EVENTS_PER_S, RATE_HZ, Pacer
from overwatch_lab.cot.transport import MULTICAST_TTL, Transport, open_transport, parse_target
from overwatch_lab.errors import ConfigError, LabStateError, OverwatchError
from overwatch_lab.frames import ChangeSource
from overwatch_lab.kvcache import Changes

log = logging.getLogger(__name__)


_DEFAULT_STALE_AFTER_S: float = next(
    f.default for f in dataclasses.fields(LabConfig) if f.name == "stale_after_s"
)  # type: ignore[assignment]


@runtime_checkable
class _HasConfig(Protocol):
    config: LabConfig

    def connection_info(self) -> dict[str, Any]: ...


def stale_after_of(source: object) -> float:
    """The stale time of the lab behind ``source``: the owner's ``stale_after_s`` from its
    ``lab.json`` (an attached lab), else its config's, else LabConfig's default."""
    if isinstance(source, _HasConfig):
        with contextlib.suppress(OverwatchError):
            value = source.connection_info().get("stale_after_s")
            if isinstance(value, int | float) and value > 0:
                return float(value)
        return source.config.stale_after_s
    return _DEFAULT_STALE_AFTER_S


@dataclass(slots=True)
class CotStats:
    """What the sender did, cumulative (see :meth:`CotSender.stats`)."""

    sent: int = 0  # events sent
    bytes: int = 0
    offline_sent: int = 0  # of them, already stale (not live or deleted)
    unchanged: int = 0  # changed documents whose event said nothing new
    no_position: int = 0  # changed documents with no usable position (not sent)
    capped: int = 0  # times an entity was due but the global cap held it back
    waiting: int = 0  # entities with an event due now (rate limit, cap or transport)
    tracked: int = 0  # entities a TAK client holds as live (sent live, not yet sent stale)
    send_errors: int = 0
    connects: int = 0
    read_errors: int = 0  # failed reads of the lab's state
    last_error: str | None = None


class CotSender:
    """Sends the lab's live entity state as CoT events (see the module docstring).

    Args:
        source: where the state comes from: a Lab, or anything with ``entity_changes(since)``.
        to: ``udp://HOST:PORT`` (unicast or multicast) or ``tcp://HOST:PORT`` (a TAK server).
        rate_hz: events per second per entity, at most.
        max_events_per_s: events per second in all, at most.
        stale_after_s: seconds a TAK client keeps an entity fresh; default: the lab's.
        affiliations: org_id → affiliation (a name of ``events.AFFILIATIONS`` or its letter);
            organisations not listed get ``default_affiliation``.
        default_affiliation: friendly unless told otherwise.
        group: the TAK team (``__group`` name) of every entity.
        role: the TAK role (``__group`` role).
        multicast_ttl: TTL of multicast datagrams (1: this link only).
        multicast_interface: IPv4 address of the interface multicast leaves by (default: the
            system's choice).
        tick_s: seconds between two looks at the state (default: a fraction of ``1 / rate_hz``).

    Raises:
        ConfigError: a bad destination, rate or affiliation.
    """

    def __init__(
        self,
        source: ChangeSource,
        to: str,
        *,
        rate_hz: float = RATE_HZ,
        max_events_per_s: float = MAX_EVENTS_PER_S,
        stale_after_s: float | None = None,
        affiliations: Mapping[str, str] | None = None,
        default_affiliation: str = "friendly",
        group: str = "Cyan",
        role: str = "Team Member",
        multicast_ttl: int = MULTICAST_TTL,
        multicast_interface: str | None = None,
        tick_s: float | None = None,
    ) -> None:
        if not isinstance(source, ChangeSource):
            raise ConfigError(
                f"a CoT source needs entity_changes(since) (a Lab is one), got {type(source).__name__}"
            )
        self.source = source
        self.target = parse_target(to)
        self.pacer = Pacer(rate_hz, max_events_per_s)
        self.stale_after_s = stale_after_of(source) if stale_after_s is None else float(stale_after_s)
        if not (0 < self.stale_after_s < math.inf):
            raise ConfigError(f"CoT stale_after_s must be > 0 and finite, got {stale_after_s!r}")
        self.refresh_s = self.stale_after_s / 2
        self._affiliations = {org: affiliation_letter(a) for org, a in (affiliations or {}).items()}
        self._default_affiliation = affiliation_letter(default_affiliation)
        self.group, self.role = group, role
        self.tick_s = tick_s if tick_s is not None else min(0.1, self.pacer.interval_s / 4)
        if not (0 < self.tick_s < math.inf):
            raise ConfigError(f"CoT tick_s must be > 0 and finite, got {tick_s!r}")
        self.multicast_ttl, self.multicast_interface = multicast_ttl, multicast_interface
        self._transport: Transport | None = None
        self._stats = CotStats()
        self._version = 0
        self._revisions: dict[str, int] = {}  # entity_id -> revision of its document last seen
        self._due: dict[str, CotEvent] = {}  # entity_id -> the event it has to send
        self._sent: dict[str, CotEvent] = {}  # entity_id -> last event sent live
        self._reading_failed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ended: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.failure: BaseException | None = None
        """What ended the thread on its own (a bug), else None."""

    def __repr__(self) -> str:
        return f"<CotSender to={self.target} rate_hz={1 / self.pacer.interval_s:g}>"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> CotSender:
        """Open the socket and start the sending thread; returns self.

        Raises:
            LabStateError: started before.
            ConfigError: the destination does not resolve, or a bad multicast option.
        """
        if self._thread is not None:
            raise LabStateError("a CotSender starts once; build a new one")
        self._open()
        self._thread = threading.Thread(target=self._run, name=f"cot-sender:{self.target}", daemon=True)
        self._thread.start()
        log.info("CoT: sending to %s (%s)", self.target, self)
        return self

    def _open(self) -> Transport:
        if self._transport is None:
            self._transport = open_transport(
                self.target, multicast_ttl=self.multicast_ttl, multicast_interface=self.multicast_interface
            )
        return self._transport

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (within one tick) and close the socket (idempotent)."""
        self._stop.set()
        thread = self._thread
        if thread is None and self._transport is not None:  # ticked by hand, never started
            self._transport.close()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("CoT sender did not stop within %g s", timeout)

    def ended(self) -> concurrent.futures.Future[None]:
        """A future that resolves when the thread has ended (stopped, or failed: see ``failure``)."""
        return self._ended

    @property
    def running(self) -> bool:
        """True while the thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> CotSender:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        """The counters now (see :class:`CotStats`)."""
        st = self._stats
        st.capped = self.pacer.capped
        st.waiting = len(self._due)
        st.tracked = len(self._sent)
        t = self._transport
        if t is not None:
            st.send_errors, st.connects = t.errors, t.connects
            st.last_error = t.last_error or st.last_error
        return asdict(st)

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.tick(time.monotonic(), time.time())
                self._stop.wait(self.tick_s)
        except Exception as exc:  # a bug: recorded (failure, ended()), not raised into threading's hook
            self.failure = exc
            log.exception("CoT sender failed")
        finally:
            if self._transport is not None:
                self._transport.close()
            self._ended.set_result(None)

    def tick(self, mono: float, now: float) -> int:
        """Read what changed, then send what is due; returns the number of events sent.

        The thread calls it every ``tick_s``; ``mono`` is monotonic time (pacing), ``now`` Unix
        time (the events' times). Called by hand (tests), it opens the socket on first use.
        """
        changes = self._read()
        if changes is not None:
            self._apply(changes, mono)
        transport = self._open()
        transport.poll()
        sent = 0
        for eid in self.pacer.due(self._due, mono):
            event = self._due[eid]
            data = event.xml(now, self.stale_after_s)
            if not transport.send(data):
                break  # the transport is down: everything stays due
            del self._due[eid]
            self.pacer.sent(eid, mono)
            if event.live:
                self._sent[eid] = event
            else:
                self._sent.pop(eid, None)
                self._stats.offline_sent += 1
            self._stats.sent += 1
            self._stats.bytes += len(data)
            sent += 1
        return sent

    def _read(self) -> Changes | None:
        try:
            changes = self.source.entity_changes(self._version)
        except (OverwatchError, TimeoutError) as exc:  # the lab is stopping, restarting, unreachable
            self._stats.read_errors += 1
            self._stats.last_error = f"reading the lab's state: {exc}"
            if not self._reading_failed:
                log.warning("CoT: cannot read the lab's state (%s); retrying every %g s", exc, self.tick_s)
            self._reading_failed = True
            return None
        if self._reading_failed:
            log.info("CoT: reading the lab's state again")
        self._reading_failed = False
        return changes

    def _apply(self, changes: Changes, mono: float) -> None:
        self._version = changes.version
        gone = set(changes.deleted)
        if changes.full:
            gone |= self._revisions.keys() - changes.changed.keys()
        for eid in gone:
            self._revisions.pop(eid, None)
            last = self._sent.get(eid)
            if last is not None:  # TAK holds it as live: say it is gone
                self._due[eid] = CotEvent(last.uid, False, last.body)
            else:
                self._due.pop(eid, None)
        for eid, (revision, doc) in changes.changed.items():
            if self._revisions.get(eid) == revision:
                continue
            self._revisions[eid] = revision
            org = doc.get("org_id")
            affiliation = (
                self._affiliations.get(org, self._default_affiliation)
                if isinstance(org, str)
                else self._default_affiliation
            )
            event = entity_event(eid, doc, affiliation=affiliation, group=self.group, role=self.role)
            if event is None:
                self._stats.no_position += 1
                continue
            last = self._sent.get(eid)
            if not event.live and last is None:
                self._due.pop(eid, None)  # never shown live: nothing to take back
                continue
            if event == last and eid not in self._due:
                sent_at = self.pacer.last(eid)
                if sent_at is not None and mono - sent_at < self.refresh_s:
                    self._stats.unchanged += 1
                    continue
            self._due[eid] = event
