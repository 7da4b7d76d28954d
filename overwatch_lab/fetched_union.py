"""The union of stream sequences fetched by every durable of one stream, and its true gaps (pure).

A stream read by several durables with disjoint filters that together cover it (the telemetry
partitions plus ``telemetry-processor``, docs/wire.md) delivers every stream sequence to exactly
one of them. A gap in one durable's sequences is mostly other partitions' messages; a gap in the
*union* of what all of them fetched is a message no durable received. :class:`FetchedUnion` keeps
that union as ranges above a ``floor`` (every sequence ``<= floor`` is accounted for: fetched, or
counted as discarded) and confirms a missing sequence ``s`` as discarded only when

- ``s < first_seq``: the stream no longer holds it, so it can never be delivered later; and
- every source's ``horizon`` is at least ``s``: each durable has reported everything it was
  delivered up to ``s``, so a late report (a worker process's stats line still in its pipe)
  cannot fill the gap afterwards.

A source's horizon moves with what it reports fetched (first deliveries come in stream order,
so the highest fetched sequence bounds everything it will still report below it), and with
:meth:`FetchedUnion.caught_up` from the stream-watch pass (stream info read *before* consumer
info): when a durable's ``delivered.stream_seq`` is one it already reported, everything of its
filter below the stream's ``first_seq`` was reported or removed, and if it has nothing pending,
everything up to the stream's ``last_seq``.

The baseline (the first :meth:`FetchedUnion.baseline`, at boot before any worker runs) is the
highest ``delivered.stream_seq`` of the durables: what an earlier run delivered is not in this
run's union, so sequences between the lowest and the highest durable position at boot are not
counted even when one of them was removed while the lab was down (an undercount in that window,
never a false loss); beyond the highest position every removed sequence is counted exactly.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable, Sequence

from nats.aio.msg import Msg

log = logging.getLogger(__name__)

MAX_RANGES = 200_000  # fetched ranges kept above the floor; beyond, the oldest are let go uncounted


def stream_seq(msg: Msg) -> int:
    """The stream sequence of a JetStream message, from its ack subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream_seq>.<consumer_seq>.<ts>.<pending>``: a
    split is ~6x cheaper than nats-py's ``metadata`` (which parses every field), and this runs
    for every message on the hot path. Other forms (with a domain) go through ``metadata``.
    """
    parts = (msg.reply or "").split(".")
    if len(parts) == 9 and parts[1] == "ACK":
        return int(parts[5])
    return msg.metadata.sequence.stream


def runs(seqs: Iterable[int]) -> list[int]:
    """Compress sequences (in any order) to a flat ``[start, end, start, end, ...]`` of runs."""
    out: list[int] = []
    for seq in sorted(seqs):
        if out and seq <= out[-1] + 1:
            if seq > out[-1]:
                out[-1] = seq
        else:
            out += (seq, seq)
    return out


class FetchedUnion:
    """See the module docstring.

    Args:
        sources: the durables that read the stream (more may be added by :meth:`add_source`).
    """

    def __init__(self, sources: Iterable[str]) -> None:
        self.floor: int | None = None
        self._starts: list[int] = []  # fetched ranges above the floor: sorted, disjoint, not adjacent
        self._ends: list[int] = []
        self.horizon: dict[str, int] = {}  # per source: everything up to it was reported
        self.reported: dict[str, int] = {}  # per source: the highest sequence it reported
        self.overflowed = 0  # sequences let go uncounted because of MAX_RANGES
        for src in sources:
            self.add_source(src)

    def add_source(self, source: str) -> None:
        """One more durable (known from the start: a source never reported holds the view back)."""
        self.horizon.setdefault(source, 0)
        self.reported.setdefault(source, 0)

    @property
    def unconfirmed(self) -> int:
        """Sequences missing between the floor and the highest fetched one (not confirmed yet)."""
        if self.floor is None or not self._starts:
            return 0
        covered = sum(e - s + 1 for s, e in zip(self._starts, self._ends, strict=True))
        return self._ends[-1] - self.floor - covered

    def baseline(self, delivered: dict[str, int]) -> None:
        """Start at the highest durable position if nothing was set yet (see the module docstring)."""
        if self.floor is not None:
            return
        self.floor = max(delivered.values(), default=0)
        for src, seq in delivered.items():
            self.add_source(src)
            self.reported[src] = max(self.reported[src], seq)
            self.horizon[src] = max(self.horizon[src], seq)
        self._drop_below_floor()

    def reset(self, delivered: dict[str, int]) -> None:
        """Forget everything (the stream was recreated: its sequences started again)."""
        self.floor = None
        self._starts.clear()
        self._ends.clear()
        for src in self.horizon:
            self.horizon[src] = self.reported[src] = 0
        self.baseline(delivered)

    def add(self, source: str, flat: Sequence[int]) -> None:
        """Record what ``source`` fetched, as flat runs (:func:`runs`)."""
        self.add_source(source)
        if not flat:
            return
        top = max(flat[1::2])
        if top > self.reported[source]:
            self.reported[source] = top
        if top > self.horizon[source]:
            self.horizon[source] = top
        for i in range(0, len(flat), 2):
            self._insert(flat[i], flat[i + 1])
        while len(self._starts) > MAX_RANGES and self.floor is not None:  # let the oldest go
            self.overflowed += self._starts[0] - self.floor - 1
            self.floor = self._ends[0]
            del self._starts[0], self._ends[0]
            log.warning(
                "fetched-union view over %d ranges: %d sequences let go uncounted",
                MAX_RANGES,
                self.overflowed,
            )

    def caught_up(self, source: str, first_seq: int, last_seq: int, delivered: int, pending: int) -> None:
        """Move ``source``'s horizon from a stream-watch pass (stream info read before consumer info)."""
        self.add_source(source)
        if delivered > self.reported[source]:
            return  # it was delivered more than it reported: a report is still on its way
        mark = last_seq if pending == 0 else first_seq - 1
        if mark > self.horizon[source]:
            self.horizon[source] = mark

    def confirm(self, first_seq: int) -> int:
        """Count (and forget) missing sequences below ``first_seq`` and every source's horizon."""
        if self.floor is None:
            return 0
        limit = min(first_seq - 1, min(self.horizon.values(), default=first_seq - 1))
        counted = 0
        while self.floor < limit:
            if self._starts and self._starts[0] <= limit:
                counted += self._starts[0] - self.floor - 1
                self.floor = max(self.floor, self._ends[0])
                del self._starts[0], self._ends[0]
            else:
                counted += limit - self.floor
                self.floor = limit
        self._absorb()
        return counted

    def _insert(self, start: int, end: int) -> None:
        if self.floor is not None:
            if end <= self.floor:
                return
            start = max(start, self.floor + 1)
        starts, ends = self._starts, self._ends
        i = bisect.bisect_left(ends, start - 1)  # first range that ends at or after start - 1
        j = i
        while j < len(starts) and starts[j] <= end + 1:  # overlapping or adjacent: merge
            start, end = min(start, starts[j]), max(end, ends[j])
            j += 1
        starts[i:j] = [start]
        ends[i:j] = [end]
        if i == 0:
            self._absorb()

    def _absorb(self) -> None:
        """A range that starts right above the floor becomes part of it."""
        if self.floor is not None and self._starts and self._starts[0] <= self.floor + 1:
            self.floor = max(self.floor, self._ends[0])
            del self._starts[0], self._ends[0]

    def _drop_below_floor(self) -> None:
        assert self.floor is not None
        while self._starts and self._ends[0] <= self.floor:
            del self._starts[0], self._ends[0]
        if self._starts and self._starts[0] <= self.floor:
            self._starts[0] = self.floor + 1
        self._absorb()
