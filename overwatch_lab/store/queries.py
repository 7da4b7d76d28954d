"""One ad-hoc read on the store, safe to call from any thread while the lab writes.

The analyst's frames (history, tracks, as-of, events, commands, entities) are
:class:`overwatch_lab.frames.Frames`; this module keeps the one helper the lab's own parts use
for a small lookup. Each call opens its own short-lived connection (a local file is opened
read-only, so a typo in the path is an error rather than a new empty database), runs one query and closes it. WAL mode
lets these readers run while the store's writer thread commits, so a notebook cell never
queues behind a large insert. A libSQL server URL works the same way (not exercised by the
test suite; see :mod:`.connection`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from overwatch_lab.errors import DatabaseError
from overwatch_lab.store.connection import (
    DB_ERRORS,
    connect,
    normalise_location,
    redact,
)

__all__ = ["read_frame"]


def read_frame(location: str, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> pd.DataFrame:
    """Run one query on a fresh read-only connection and return the rows as a DataFrame.

    Args:
        location: the store's file path or libSQL server URL (``Store.location``).
        sql: the query; ``?`` placeholders.
        params: its parameters.

    Returns:
        A DataFrame with the query's columns (also when it returned no rows).

    Raises:
        DatabaseError: the database cannot be opened or the query fails.
    """
    target = normalise_location(location)
    try:
        conn = connect(target, read_only=True)
        try:
            cursor = conn.execute(sql, params)
            columns = [d[0] for d in cursor.description] if cursor.description else []
            rows = cursor.fetchall()
        finally:
            conn.close()
    except DB_ERRORS as exc:
        raise DatabaseError(f"query failed on {redact(target)}: {exc}") from exc
    return pd.DataFrame.from_records(rows, columns=columns)
