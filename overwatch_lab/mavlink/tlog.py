"""Telemetry logs (``.tlog``): what QGroundControl, Mission Planner and MAVProxy record.

A tlog is a sequence of records, each an 8-byte big-endian timestamp (microseconds since the
Unix epoch) followed by one MAVLink packet (v1: ``0xFE``, v2: ``0xFD``; a signed v2 packet
carries 13 more bytes). :func:`read_records` walks a file record by record without decoding:
the length of each packet comes from its header, so a corrupt record costs one resync (scan for
the next plausible timestamp + marker), counted in :class:`TlogStats`, never the rest of the file.
:func:`write_record` is the writer side (what ``mavutil.mavlogfile.write`` is given).

Pure apart from reading the file object it is handed.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

V1_MARKER = 0xFE
V2_MARKER = 0xFD
V1_OVERHEAD = 8  # 6 header + 2 CRC
V2_OVERHEAD = 12  # 10 header + 2 CRC
V2_SIGNATURE = 13
V2_SIGNED_FLAG = 0x01
MAX_CLOCK_JUMP_US = 3 * 24 * 3600 * 1_000_000  # pymavlink's own sanity bound between two records
_TS = struct.Struct(">Q")


@dataclass(slots=True)
class TlogStats:
    """What reading one log found."""

    records: int = 0
    resyncs: int = 0  # places where a record did not parse and the reader scanned forward
    skipped_bytes: int = 0
    truncated: bool = False  # the file ended inside a record


def write_record(timestamp_us: int, packet: bytes) -> bytes:
    """Return one tlog record: the 8-byte timestamp, then the packet."""
    return _TS.pack(timestamp_us) + packet


def _packet_len(buf: bytes | memoryview, at: int) -> int | None:
    """Length of the packet starting at ``at`` from its header, or None when it is not one."""
    if at + 3 > len(buf):
        return None
    marker = buf[at]
    if marker == V2_MARKER:
        return V2_OVERHEAD + buf[at + 1] + (V2_SIGNATURE if buf[at + 2] & V2_SIGNED_FLAG else 0)
    if marker == V1_MARKER:
        return V1_OVERHEAD + buf[at + 1]
    return None


def read_records(f: BinaryIO, stats: TlogStats | None = None) -> Iterator[tuple[int, bytes]]:
    """Yield (timestamp_us, packet bytes) for each record of a tlog.

    A record whose marker is wrong, or whose timestamp jumps by more than three days from the
    previous one, starts a resync: the reader moves one byte on and looks for the next
    timestamp + marker that fits. The packets themselves are not checked here (the parser's CRC
    check does that).
    """
    st = stats if stats is not None else TlogStats()
    buf = f.read()
    view = memoryview(buf)
    n = len(buf)
    at = 0
    last: int | None = None
    resyncing = False
    while at + 8 < n:
        ts = _TS.unpack_from(buf, at)[0]
        length = _packet_len(view, at + 8)
        ok = length is not None and (last is None or abs(ts - last) <= MAX_CLOCK_JUMP_US)
        if not ok:
            if not resyncing:
                st.resyncs += 1
                resyncing = True
            st.skipped_bytes += 1
            at += 1
            continue
        assert length is not None
        end = at + 8 + length
        if end > n:
            st.truncated = True
            st.skipped_bytes += n - at
            return
        resyncing = False
        last = ts
        st.records += 1
        yield ts, bytes(view[at + 8 : end])
        at = end
    if at < n:
        st.truncated = True
        st.skipped_bytes += n - at


__all__ = ["TlogStats", "read_records", "write_record"]
