"""Where the database is and how to reach it: locations, redaction, ``connect``, row and JSON helpers.

The location is a local file path (the default; created with its parent folder by the store) or a
libSQL server URL (``libsql://``, ``ws://``, ``wss://``; an auth token goes in the URL as
``?authToken=...``). Both go through ``libsql_client.dbapi2.connect``: a path gives a stdlib
``sqlite3.Connection``, a URL a Hrana connection with the same DB-API, so there is one code
path. **The URL path is not exercised by the test suite**: no libSQL server (sqld) can be
installed on the development machine. Differences that matter there: the Hrana connection has
no ``total_changes`` (row counts come from ``cursor.rowcount``, which both implement) and the
local-only pragmas (WAL, synchronous, busy_timeout) are skipped.

Nothing here translates errors: :func:`connect` raises the driver's own, and its callers (the
store's writer thread, :mod:`.queries`) translate every one of :data:`DB_ERRORS` into
:class:`~overwatch_lab.errors.DatabaseError`.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

from libsql_client import LibsqlError, dbapi2

from overwatch_lab.errors import DatabaseError
from overwatch_lab.store.schema import BUSY_TIMEOUT_MS

__all__ = [
    "DB_ERRORS",
    "REMOTE_SCHEMES",
    "connect",
    "decode_json",
    "encode_json",
    "is_remote",
    "normalise_location",
    "redact",
    "rows_as_dicts",
]

REMOTE_SCHEMES: tuple[str, ...] = ("libsql://", "ws://", "wss://")
"""URL prefixes that name a libSQL server (``libsql://`` means ``wss://``)."""

_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_TOKEN_RE = re.compile(r"(authToken=)[^&]*")

DB_ERRORS: tuple[type[Exception], ...] = (
    sqlite3.Error,
    OSError,
    LibsqlError,
    OverflowError,
    UnicodeEncodeError,
)
"""Errors a database call can raise; the store and :mod:`.queries` translate each to ``DatabaseError``.

Hrana's errors subclass ``sqlite3.Error``; ``OSError`` covers the parent folder and the
``TimeoutError`` of a Hrana call that took longer than its timeout. sqlite3 refuses a value it
cannot bind with a builtin error instead: ``OverflowError`` for an int beyond 64 bits,
``UnicodeEncodeError`` for a str holding a lone surrogate (what the JSON escape ``\\ud800``
decodes to). Both are the data's fault, so :mod:`.faults` does not count them as infrastructure.
"""


def is_remote(location: str) -> bool:
    """Return True if ``location`` is a libSQL server URL rather than a local file."""
    return location.startswith(REMOTE_SCHEMES)


def redact(location: str) -> str:
    """Return ``location`` with any ``authToken`` value hidden, for messages and logs."""
    return _TOKEN_RE.sub(r"\1***", location)


def normalise_location(location: str) -> str:
    """Return the location to connect to (``file:`` prefix removed, ``~`` expanded).

    Raises:
        DatabaseError: empty, or a URL scheme other than a file or a libSQL server.
    """
    if not isinstance(location, str) or not location:
        raise DatabaseError(f"database location must be a non-empty string, got {location!r}")
    if location.startswith("file:"):
        location = location.removeprefix("file:").removeprefix("//")
    if _SCHEME_RE.match(location) and not is_remote(location):
        raise DatabaseError(
            f"unsupported database URL {redact(location)!r}: use a file path or a libSQL server URL "
            f"({', '.join(REMOTE_SCHEMES)}); http(s):// has no interactive transactions"
        )
    if not is_remote(location) and location.startswith("~"):
        location = str(Path(location).expanduser())
    return location


def connect(location: str, *, read_only: bool = False) -> Any:
    """Open a DB-API connection with explicit transactions (``isolation_level=None``).

    Args:
        location: a file path or a libSQL server URL.
        read_only: for a local file, open it read-only (``mode=ro``): a missing file is an
            error instead of being created. Ignored for a URL.

    Returns:
        A ``sqlite3.Connection`` (file) or a Hrana connection (URL) bound to the calling thread.

    Raises:
        sqlite3.Error, OSError, LibsqlError: the caller translates them.
    """
    timeout = BUSY_TIMEOUT_MS / 1000
    if is_remote(location):
        return dbapi2.connect(location, timeout=timeout, isolation_level=None)
    if read_only and location != ":memory:":
        uri = Path(location).expanduser().resolve().as_uri() + "?mode=ro"
        return dbapi2.connect(uri, timeout=timeout, isolation_level=None, uri=True)
    return dbapi2.connect(location, timeout=timeout, isolation_level=None)


def rows_as_dicts(cursor: Any) -> list[dict[str, Any]]:
    """Return a cursor's remaining rows as dicts keyed by column name."""
    if cursor.description is None:
        return []
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def decode_json(value: Any) -> Any:
    """Decode a JSON text column; None and non-JSON text come back unchanged."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:  # written by another tool as plain text: hand it back unchanged
        return value


def encode_json(value: Any) -> str | None:
    """Encode a value for a JSON text column; None and str are stored as they are.

    Raises:
        ValueError: ``value`` holds NaN or an infinity (their text is not JSON).
    """
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), allow_nan=False)
