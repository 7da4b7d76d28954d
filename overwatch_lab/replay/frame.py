"""The replay frame: telemetry messages re-read from JetStream, one row per message (pure).

Rows are in stream order (so each entity's messages are in the order the lab received them);
the index is the envelope's own time, a tz-aware UTC ``DatetimeIndex`` named ``time`` to the
microsecond, like the history frames, so a replay frame joins them on ``entity_id`` and ``time``.
Columns (:data:`REPLAY_FRAME_DTYPES`):

- ``stream_seq``: the message's sequence in CONSTELLATION_TELEMETRY;
- ``stored_at``: when JetStream stored it (UTC, ns; what the window selects on);
- ``org_id``, ``entity_id``, ``message_type``: categoricals;
- ``message_uid``, ``message_id``, ``system_id``, ``component_id``, ``source`` (None when absent);
- ``timestamp``: the envelope's canonical time stamp text; ``data``: its ``data`` as the JSON
  text the device sent (raw MAVLink units, like the history table's ``data`` column).

A stored message that breaks the telemetry contract (the lab quarantined it) is not a row; the
frame's ``attrs["replay"]["skipped"]`` counts them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from overwatch_lab.errors import ProtocolError
from overwatch_lab.protocol.envelopes import decode_telemetry
from overwatch_lab.protocol.subjects import parse_telemetry_subject

__all__ = ["REPLAY_FRAME_DTYPES", "StoredMsg", "build_frame", "empty_replay_frame"]

REPLAY_FRAME_DTYPES: dict[str, str] = {
    "stream_seq": "int64",
    "stored_at": "datetime64[ns, UTC]",
    "org_id": "category",
    "entity_id": "category",
    "message_type": "category",
    "message_uid": "object",
    "message_id": "int64",
    "system_id": "int64",
    "component_id": "int64",
    "source": "object",
    "timestamp": "object",
    "data": "object",
}
"""The columns of a replay frame, in order, with their dtypes (the index is ``time``)."""

StoredMsg = tuple[str, bytes, int, int]
"""One message as JetStream delivered it: (stored subject, body, stream sequence, stored time ns)."""


def _time_index(us: Any) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(np.asarray(us, dtype="int64").astype("datetime64[us]"), name="time").tz_localize(
        "UTC"
    )


def empty_replay_frame() -> pd.DataFrame:
    """A replay frame with no rows: every column of :data:`REPLAY_FRAME_DTYPES`, right dtypes."""
    frame = pd.DataFrame(
        {c: pd.Series(dtype=t) for c, t in REPLAY_FRAME_DTYPES.items()}, index=_time_index([])
    )
    frame.attrs["replay"] = {"skipped": 0}
    return frame


def build_frame(msgs: Iterable[StoredMsg], entity_ids: frozenset[str] | None = None) -> pd.DataFrame:
    """Decode stored telemetry messages (strictly, as the lab does) into a replay frame.

    Args:
        msgs: the messages in stream order.
        entity_ids: keep only these entities (None: all).

    Returns:
        The frame (see the module docstring); ``attrs["replay"]["skipped"]`` counts the
        messages that break the contract.
    """
    cols: dict[str, list[Any]] = {c: [] for c in REPLAY_FRAME_DTYPES}
    us: list[int] = []
    skipped = 0
    for subject, body, seq, stored_ns in msgs:
        try:
            t = decode_telemetry(body, parse_telemetry_subject(subject))
        except ProtocolError:
            skipped += 1
            continue
        if entity_ids is not None and t.entity_id not in entity_ids:
            continue
        us.append(round(t.ts * 1_000_000))
        cols["stream_seq"].append(seq)
        cols["stored_at"].append(stored_ns)
        cols["org_id"].append(t.org_id)
        cols["entity_id"].append(t.entity_id)
        cols["message_type"].append(t.message_type)
        cols["message_uid"].append(t.message_uid)
        cols["message_id"].append(t.message_id)
        cols["system_id"].append(t.system_id)
        cols["component_id"].append(t.component_id)
        cols["source"].append(t.source)
        cols["timestamp"].append(t.timestamp)
        cols["data"].append(t.data_json)
    if not us:
        frame = empty_replay_frame()
        frame.attrs["replay"] = {"skipped": skipped}
        return frame
    index = _time_index(us)
    data: dict[str, Any] = {c: np.asarray(v, dtype=object) for c, v in cols.items()}
    data["stored_at"] = pd.DatetimeIndex(
        np.asarray(cols["stored_at"], dtype="int64").astype("datetime64[ns]")
    )
    data["stored_at"] = data["stored_at"].tz_localize("UTC").array
    frame = pd.DataFrame(data, index=index).astype(REPLAY_FRAME_DTYPES)
    frame.attrs["replay"] = {"skipped": skipped}
    return frame
