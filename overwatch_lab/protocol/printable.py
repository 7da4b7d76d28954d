"""Device text made safe to show: control characters escaped, never interpreted.

Whatever a device sends (a field name, an id that breaks the token rule, an ack's reason) can
end up in an error message, a quarantine reason, a log line or the dashboard. There a raw
newline forges a log record, an ANSI escape repaints the operator's terminal, a bidi override
reorders what they read. :func:`printable` shows each such character as its Python escape
(``\\n``, ``\\x1b``, ``\\u202e``), the way ``repr`` shows it, and leaves everything else,
backslashes included, as it is: so it is idempotent (its output is printable), and text that was
already escaped (a ``repr``) is not escaped twice. HTML escaping is the dashboard's business.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(c: str) -> str:
    named = _NAMED.get(c)
    if named is not None:
        return named
    n = ord(c)
    if n < 0x100:
        return f"\\x{n:02x}"
    if n < 0x10000:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def printable(text: object, limit: int | None = None) -> str:
    """Return ``text`` with every non-printable character escaped, optionally shortened.

    Non-printable is ``str.isprintable``'s rule: control characters (C0, DEL, C1), line and
    paragraph separators, format characters such as bidi overrides, lone surrogates, and every
    space but the plain one. They come out as ``\\n``, ``\\r``, ``\\t``, ``\\xNN``, ``\\uNNNN``
    or ``\\UNNNNNNNN``.

    Args:
        text: the text to show (anything else is shown as its ``str``).
        limit: when given, an escaped text longer than this is cut to ``limit`` characters,
            the last three being ``...``.

    Returns:
        A string for which ``str.isprintable()`` is true.
    """
    s = text if type(text) is str else str(text)
    if not s.isprintable():
        s = "".join(c if c.isprintable() else _escape_char(c) for c in s)
    if limit is not None and len(s) > limit:
        s = s[: max(limit - 3, 0)] + "..."
    return s


def printable_names(names: Iterable[object], limit: int = 60) -> str:
    """Show a set of device-chosen names (e.g. unknown field names), sorted, comma-separated.

    Each name is shown with :func:`printable` and cut at ``limit`` characters, so a hostile key
    can neither break a line nor flood the message.
    """
    return ", ".join(sorted(printable(n, limit) for n in names))


__all__ = ["printable", "printable_names"]
