"""Stream health for the dashboard: fill, consumer lag and its trend, and what was lost unseen.

Pure functions over ``lab.stats()["streams"]`` (see :mod:`overwatch_lab.streamwatch`): one
row per stream, and a banner that is empty while nothing was lost and red as soon as a stream
discarded a message before a worker saw it (or the quarantine dropped a record).
"""

from __future__ import annotations

import html
import math
from typing import Any

import pandas as pd

STREAM_COLUMNS: tuple[str, ...] = (
    "stream",
    "consumer",
    "messages",
    "fill_pct",
    "lag",
    "lag_rate",
    "overflow_in_s",
    "lost",
    "discarded",
    "dropped",
)
"""Columns of :func:`stream_frame`."""

_FLOATS = ("fill_pct", "lag_rate", "overflow_in_s")
BEHIND_WARN_S = 300.0  # s: warn when undelivered messages would fill a stream within this


def _streams(stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    streams = stats.get("streams")
    return {k: v for k, v in streams.items() if isinstance(v, dict)} if isinstance(streams, dict) else {}


def _num(value: object) -> float:
    return float(value) if isinstance(value, int | float) else math.nan


def stream_frame(stats: dict[str, Any]) -> pd.DataFrame:
    """One row per stream of ``lab.stats()["streams"]``.

    Returns:
        :data:`STREAM_COLUMNS`: ``fill_pct`` of the closer msgs/bytes limit (%), ``lag``
        (undelivered + unacknowledged), ``lag_rate`` its trend (msg/s, > 0: falling behind),
        ``overflow_in_s`` (when, at that rate, the stream starts discarding unseen messages),
        ``lost`` = ``discarded`` (removed before delivery) + ``dropped`` (quarantine limits).
        Numbers the stream does not have (a consumer-less stream's lag) are NaN.
    """
    rows = [
        {
            "stream": name,
            "consumer": c.get("consumer") or "",
            "messages": int(c.get("messages") or 0),
            "fill_pct": _num(c.get("fill_pct")),
            "lag": _num(c.get("lag")),
            "lag_rate": _num(c.get("lag_rate_per_s")),
            "overflow_in_s": _num(c.get("overflow_in_s")),
            "lost": int(c.get("lost") or 0),
            "discarded": int(c.get("discarded") or 0),
            "dropped": int(c.get("dropped") or 0),
        }
        for name, c in sorted(_streams(stats).items())
    ]
    frame = pd.DataFrame(rows, columns=list(STREAM_COLUMNS))
    return frame.astype(
        {"stream": object, "consumer": object, "lag": "float64", **dict.fromkeys(_FLOATS, "float64")}
    )


def lost_total(stats: dict[str, Any]) -> int:
    """Messages every stream lost unseen (``discarded`` + ``dropped``) in this lab run."""
    return sum(int(c.get("lost") or 0) for c in _streams(stats).values())


def loss_banner(stats: dict[str, Any]) -> str:
    """HTML that marks loss (red) and a stream about to overflow (amber); ``""`` when all is well."""
    lost, behind = [], []
    for name, c in sorted(_streams(stats).items()):
        if int(c.get("discarded") or 0):
            lost.append(
                f"{int(c['discarded']):,} discarded by {html.escape(name)} before any worker saw them"
            )
        if int(c.get("dropped") or 0):
            lost.append(f"{int(c['dropped']):,} records dropped by {html.escape(name)} at its limits")
        eta = c.get("overflow_in_s")
        if isinstance(eta, int | float) and eta < BEHIND_WARN_S:
            behind.append(
                f"{html.escape(name)} is falling behind ({_num(c.get('lag_rate_per_s')):+,.0f} msg/s): "
                f"full of undelivered messages in ~{eta:,.0f} s"
            )
    parts = []
    style = "padding:6px 10px;border-radius:6px;margin:4px 0;font-weight:600"
    if lost:
        parts.append(
            f'<div style="{style};background:#ffebe9;color:#cf222e;border:1px solid #cf222e">'
            f"&#9888; Messages lost: {'; '.join(lost)}.</div>"
        )
    if behind:
        parts.append(
            f'<div style="{style};background:#fff8c5;color:#7d4e00;border:1px solid #bf8700">'
            f"&#9888; {'; '.join(behind)}.</div>"
        )
    return "".join(parts)
