"""HTML building blocks for the notebook reprs: escaped, inline-styled, offline, never raising.

Every value that reaches the page goes through :func:`esc` (``html.escape``, quotes too): a
device names itself, so a name may hold ``<script>`` or an unclosed tag. Markup built here is
wrapped in :class:`Safe` so that it is not escaped twice. Styles are inline attributes only: a
``<style>`` block in a notebook output applies to the whole page, and nothing may load from a
CDN, a font service or a tile server (the lab works offline).

:func:`guarded` is how every ``_repr_html_`` renders: a rich view that fails falls back to the
plain text of the object with the error, so displaying an object never raises.

Pure: no I/O, standard library only.
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

log = logging.getLogger(__name__)

MAX_TEXT = 120
"""Characters of one value shown; longer ones are cut with an ellipsis (the full value is in the data)."""

TONES: dict[str, str] = {
    "ok": "#1a7f37",
    "warn": "#9a6700",
    "bad": "#cf222e",
    "idle": "#57606a",
    "info": "#0969da",
}
"""Badge colours by meaning: ok (running, live, succeeded), warn (paused, holding), bad (failed,
rejected, stale), idle (stopped, not reached), info (in progress)."""

BOX = (
    "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;font-size:13px;line-height:1.45;"
    "border:1px solid #d0d7de;border-radius:6px;padding:8px 12px;margin:2px 0;display:inline-block;"
    "max-width:100%;overflow-x:auto;color:inherit"
)
TITLE = "font-size:14px;font-weight:600;margin:0 0 6px 0"
TABLE = "border-collapse:collapse;margin:4px 0"
TH = (
    "text-align:left;font-weight:600;padding:1px 10px 1px 0;white-space:nowrap;vertical-align:top;opacity:.75"
)
TD = "text-align:left;padding:1px 10px 1px 0;vertical-align:top"
HEAD = "text-align:left;font-weight:600;padding:2px 10px 2px 0;border-bottom:1px solid #d0d7de;white-space:nowrap"
SECTION = "font-weight:600;margin:8px 0 2px 0"
NOTE = "opacity:.7;font-size:12px;margin-top:4px"


class Safe(str):
    """Markup built by this module (already escaped): :func:`esc` passes it through unchanged."""

    __slots__ = ()


def text_of(value: object) -> str:
    """The plain text a value is shown as (None as an em dash, floats with 6 significant digits)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.6g}"
    return value if isinstance(value, str) else str(value)


def esc(value: object, limit: int = MAX_TEXT) -> Safe:
    """``value`` as escaped text, cut at ``limit`` characters; :class:`Safe` markup passes as it is."""
    if isinstance(value, Safe):
        return value
    text = text_of(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return Safe(html.escape(text, quote=True))


def badge(text: object, tone: str = "idle") -> Safe:
    """A small coloured label (``tone`` one of :data:`TONES`)."""
    colour = TONES.get(tone, TONES["idle"])
    return Safe(
        f'<span style="display:inline-block;padding:0 7px;border-radius:9px;font-size:11px;font-weight:600;'
        f'color:#fff;background:{colour};white-space:nowrap">{esc(text, 40)}</span>'
    )


def link(url: str | None, text: object | None = None) -> Safe:
    """A link to an http(s) URL (anything else is shown as text, never as an href)."""
    if not url:
        return esc(None)
    label = esc(url if text is None else text)
    if not url.startswith(("http://", "https://")):
        return label
    return Safe(f'<a href="{esc(url, 2000)}" target="_blank" rel="noopener noreferrer">{label}</a>')


def fields(rows: Iterable[tuple[str, object]]) -> Safe:
    """A two-column table of (label, value); rows whose value is :data:`SKIP` are left out."""
    body = "".join(
        f'<tr><th style="{TH}">{esc(k)}</th><td style="{TD}">{esc(v)}</td></tr>'
        for k, v in rows
        if v is not SKIP
    )
    return Safe(f'<table style="{TABLE}">{body}</table>')


SKIP = object()
"""A :func:`fields` value that leaves its row out."""


def grid(headers: Sequence[object], rows: Iterable[Sequence[object]], *, empty: str = "none") -> Safe:
    """A table with a header row; ``empty`` is shown when there are no rows."""
    head = "".join(f'<th style="{HEAD}">{esc(h)}</th>' for h in headers)
    body = "".join("<tr>" + "".join(f'<td style="{TD}">{esc(c)}</td>' for c in row) + "</tr>" for row in rows)
    if not body:
        return Safe(f'<div style="{NOTE}">{esc(empty)}</div>')
    return Safe(f'<table style="{TABLE}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')


def section(title: str, content: object) -> Safe:
    """A titled block inside a card."""
    return Safe(f'<div style="{SECTION}">{esc(title)}</div>{esc(content, 10**9)}')


def note(text: object) -> Safe:
    """A small, dimmed line (what was left out, what could not be read)."""
    return Safe(f'<div style="{NOTE}">{esc(text, 400)}</div>')


def card(title: object, *parts: object, tag: object | None = None) -> Safe:
    """A bordered box with a bold title (and a badge ``tag`` after it) over ``parts``."""
    head = f"{esc(title)} {esc(tag, 10**6)}" if tag is not None else esc(title)
    body = "".join(esc(p, 10**9) for p in parts)
    return Safe(f'<div style="{BOX}"><div style="{TITLE}">{head}</div>{body}</div>')


def guarded(render: Callable[[], str], plain: Callable[[], str]) -> str:
    """``render()``, or when it raises, ``plain()`` and the error as preformatted text.

    A ``_repr_html_`` returns this: showing an object must never raise (IPython would print a
    traceback in place of the object, and a widget callback would lose it).
    """
    try:
        return render()
    except Exception as exc:  # a repr never raises: show what we can, and why the rest is missing
        log.debug("rich repr failed", exc_info=True)
        return (
            f'<pre style="margin:0">{esc(safe_text(plain), 2000)}\n'
            f"(rich view unavailable: {esc(f'{type(exc).__name__}: {exc}', 400)})</pre>"
        )


def safe_text(plain: Callable[[], str]) -> str:
    """``plain()``, or a placeholder naming the error (for ``__repr__``, which must not raise either)."""
    try:
        return plain()
    except Exception as exc:  # a repr never raises
        return f"<unprintable: {type(exc).__name__}: {exc}>"


def redact_url(url: str) -> str:
    """``url`` without user, password or token (``nats://tok@host:4222`` → ``nats://host:4222``)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, path = rest.partition("/")
    return f"{scheme}://{netloc.rpartition('@')[2]}{slash}{path}"


def clock(ts: float | None) -> str:
    """Epoch seconds as ``HH:MM:SS.mmm`` UTC (— when unknown)."""
    if ts is None or not math.isfinite(ts):
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S.%f")[:-3]


def epoch(value: object) -> float | None:
    """Epoch seconds from a float or an RFC 3339 string (as the KV documents hold), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None
