"""The multi-row ``INSERT OR IGNORE`` of the history tables (telemetry, device events).

It runs on the store's writer thread, inside the caller's transaction; see :class:`BulkInsert`.
"""

from __future__ import annotations

import itertools
import operator
import sqlite3
from collections.abc import Sequence
from typing import Any

from overwatch_lab.errors import DatabaseError
from overwatch_lab.store.connection import rows_as_dicts

__all__ = ["MAX_PARAMS_PER_STATEMENT", "MAX_ROWS_PER_STATEMENT", "BulkInsert"]

MAX_PARAMS_PER_STATEMENT = 999
"""Bound parameters per statement: SQLite's historic limit, safe on every build and on sqld.

A local connection uses its own limit instead (``SQLITE_LIMIT_VARIABLE_NUMBER``, 250,000 on
Debian's build; 32,766 is the default since SQLite 3.32)."""

MAX_ROWS_PER_STATEMENT = 512
"""Rows in the largest statement. A compiled statement costs about 10 kB and 25 µs per row of its
``VALUES`` (measured for telemetry's 30 columns), once per connection (sqlite3's statement cache
keeps it); 512 rows is ~5 MB and ~12 ms."""

_CLASS_RATIO = 4  # each statement size is this many times the next smaller one


class BulkInsert:
    """``INSERT OR IGNORE`` of many rows (a duplicate id is skipped), several rows per statement.

    Binding dominates the cost of a wide row in ``executemany``; a multi-row ``VALUES`` of
    ``per`` rows cuts the per-statement overhead (measured +15-25 % for telemetry's 29
    columns) and releases the GIL for longer stretches of SQLite work.

    The GIL is what matters most: sqlite3 releases it for every step of a statement and the
    writer thread must take it back afterwards, which costs up to the interpreter's switch
    interval (5 ms) while the event loop is busy, per statement (measured: with a busy loop thread,
    a batch of 1,000 telemetry rows took 194 µs/row as one-row statements, 144 as 33-row ones, 42
    as one 1,000-row one; 16-20 µs/row of CPU in every case). So a batch is cut into as few
    statements as possible, of a few fixed sizes (``sizes``: ``per``, ``per / 4``, …, 1, each
    compiled once): 1,000 rows are 4 statements instead of 30 + 10 single rows.

    OR IGNORE also skips a row that breaks NOT NULL, silently. So the NOT NULL columns (read
    from the live schema) are checked here first, at C speed (about 2 % of the insert); a
    ``None`` there fails the whole batch. ``ON CONFLICT(id) DO NOTHING`` would need no check
    but measured 15 % slower. The history tables have no CHECK constraints (a schema test
    guards this), so nothing else can be ignored.
    """

    def __init__(
        self,
        table: str,
        columns: tuple[str, ...],
        not_null: Sequence[str],
        *,
        max_params: int = MAX_PARAMS_PER_STATEMENT,
    ) -> None:
        self.table = table
        self.columns = columns
        self.width = len(columns)
        self.per = max(1, min(MAX_ROWS_PER_STATEMENT, max_params // self.width))
        sizes = [self.per]
        while sizes[-1] > 1:
            sizes.append(max(1, sizes[-1] // _CLASS_RATIO))
        self.sizes: tuple[int, ...] = tuple(sizes)
        self._required = [i for i, c in enumerate(columns) if c in not_null]
        one = f"({', '.join('?' * self.width)})"
        head = f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES "
        self._sql = {size: head + ", ".join([one] * size) for size in self.sizes}
        self.sql_one = self._sql[1]
        self.sql_full = self._sql[self.per]

    @classmethod
    def for_table(cls, conn: Any, table: str, columns: tuple[str, ...]) -> BulkInsert:
        """Build the insert, reading the table's NOT NULL columns (and, for a local connection,
        its bound-parameter limit) from the database."""
        info = rows_as_dicts(conn.execute(f"PRAGMA table_info({table})"))
        max_params = MAX_PARAMS_PER_STATEMENT
        if isinstance(conn, sqlite3.Connection):  # a Hrana connection has no getlimit
            max_params = max(max_params, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
        return cls(table, columns, [r["name"] for r in info if r["notnull"]], max_params=max_params)

    def check(self, rows: Sequence[Sequence[Any]]) -> None:
        """Raise DatabaseError if a row has the wrong width or a None in a NOT NULL column."""
        widths = set(map(len, rows))
        if widths != {self.width}:
            raise DatabaseError(
                f"{self.table} rows must have {self.width} values in the order {self.columns}; "
                f"got rows of {sorted(widths)} values"
            )
        required = self._required
        if len(required) > 1:
            has_null = any(
                map(operator.contains, map(operator.itemgetter(*required), rows), itertools.repeat(None))
            )
        else:
            has_null = bool(required) and any(row[required[0]] is None for row in rows)
        if not has_null:
            return
        for n, row in enumerate(rows):
            for i in required:
                if row[i] is None:
                    raise DatabaseError(
                        f"{self.table} row {n}: {self.columns[i]} is None but the column is NOT NULL"
                    )

    def run(self, conn: Any, rows: Sequence[Sequence[Any]]) -> int:
        """Insert ``rows`` on ``conn`` (inside the caller's transaction); return rows inserted.

        Raises:
            DatabaseError: a bad row (see :meth:`check`); packing rows would otherwise shift
                values of a short row silently into the wrong columns.
        """
        self.check(rows)
        chain = itertools.chain.from_iterable
        n = len(rows)
        done = inserted = 0
        for size in self.sizes:
            end = done + (n - done) // size * size
            if end == done:
                continue
            if size == 1:
                inserted += conn.executemany(self._sql[1], rows[done:end]).rowcount
            elif end - done == size:
                inserted += conn.execute(self._sql[size], tuple(chain(rows[done:end]))).rowcount
            else:
                packed = (tuple(chain(rows[i : i + size])) for i in range(done, end, size))
                inserted += conn.executemany(self._sql[size], packed).rowcount
            done = end
        return int(inserted)

    def run_groups(self, conn: Any, groups: Sequence[Sequence[Sequence[Any]]]) -> list[int]:
        """Insert each group in order (inside the caller's transaction); return rows inserted per group.

        A row already inserted by an earlier group is ignored in a later one, so it is counted once.
        """
        return [self.run(conn, rows) if rows else 0 for rows in groups]
