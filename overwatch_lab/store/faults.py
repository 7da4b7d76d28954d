"""Which database failures are infrastructure faults, and which are caused by the data.

The store translates every sqlite3 / libSQL / OS error at its seam (:mod:`.writer`); this
module decides the kind. An **infrastructure fault** is a property of the lab's own plumbing,
not of the rows being written: the disk is full, the file or its file system is read-only,
another process holds the lock past the busy timeout, an I/O error, the file cannot be opened
or is damaged, the libSQL server is unreachable or dropped the connection. Retrying the very
same call succeeds once the fault clears, so it becomes
:class:`~overwatch_lab.errors.DatabaseUnavailable` and workers hold instead of quarantining.
Everything else (a constraint or type violation, an SQL error: bad data or a bug) stays a plain
:class:`~overwatch_lab.errors.DatabaseError`.

The decision uses the SQLite result code (``sqlite_errorname``, set by sqlite3 on Python 3.11+
and by libsql_client's Hrana connection, which also uses it for its own transport codes), then
the exception type (``OSError`` covers the file system, aiohttp's connection errors and
timeouts), then the message text for errors that carry no code.
"""

from __future__ import annotations

UNAVAILABLE_CODES: frozenset[str] = frozenset(
    {
        "SQLITE_FULL",  # database or disk is full
        "SQLITE_READONLY",  # read-only file or file system (and its extended codes)
        "SQLITE_BUSY",  # locked by another connection beyond the busy timeout
        "SQLITE_LOCKED",
        "SQLITE_IOERR",  # disk I/O error (EIO, EROFS on write, ...)
        "SQLITE_CANTOPEN",  # unable to open the file; Hrana: server unreachable
        "SQLITE_PERM",
        "SQLITE_PROTOCOL",
        "SQLITE_NOLFS",
        "SQLITE_NOMEM",
        "SQLITE_CORRUPT",  # damaged file: no message can fix it, an operator must
        "SQLITE_NOTADB",
    }
)
"""Primary SQLite result codes of infrastructure faults (extended codes match by prefix)."""

HRANA_UNAVAILABLE_CODES: frozenset[str] = frozenset({"CLIENT_CLOSED", "STREAM_CLOSED", "TRANSACTION_CLOSED"})
"""libsql_client transport codes meaning the connection to the server is gone (and ``HRANA_*``)."""

UNAVAILABLE_TEXTS: tuple[str, ...] = (
    "database or disk is full",
    "no space left on device",
    "readonly database",
    "read-only file system",
    "database is locked",
    "database table is locked",
    "disk i/o error",
    "unable to open",
    "websocket was closed",
)
"""Lower-case message fragments of infrastructure faults, for errors without a result code."""

SCHEMA_GONE_TEXTS: tuple[str, ...] = ("no such table",)
"""SQLITE_ERROR texts that mean the lab's schema was damaged (a table dropped): no message can
fix it and an operator can, so they hold like any other fault of the plumbing."""


def _code_is_unavailable(code: str) -> bool:
    if code in HRANA_UNAVAILABLE_CODES or code.startswith("HRANA_"):
        return True
    return any(code == c or code.startswith(c + "_") for c in UNAVAILABLE_CODES)


def is_unavailable(exc: BaseException) -> bool:
    """Return True if ``exc`` (or an exception it was raised from) is an infrastructure fault.

    Args:
        exc: an error raised by sqlite3, libsql_client or the OS during a database call.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError):  # file system, aiohttp connection errors, TimeoutError
            return True
        code = getattr(current, "sqlite_errorname", None) or getattr(current, "code", None)
        text = str(current).lower()
        if any(fragment in text for fragment in SCHEMA_GONE_TEXTS):
            return True
        if isinstance(code, str) and code:
            if _code_is_unavailable(code):
                return True
            if code.startswith("SQLITE_"):  # a definite code of another kind: the data's fault
                return False
        if any(fragment in text for fragment in UNAVAILABLE_TEXTS):
            return True
        current = current.__cause__
    return False
