"""Which database failures are infrastructure faults: real sqlite3 errors, libsql codes, OS errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from libsql_client import LibsqlError
from libsql_client.dbapi2 import OperationalError

from overwatch_lab.store.faults import is_unavailable


def _error_of(fn) -> sqlite3.Error:
    with pytest.raises(sqlite3.Error) as info:
        fn()
    return info.value


def test_constraint_and_sql_errors_are_the_datas_fault():
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER NOT NULL CHECK (n > 0))")
    conn.execute("INSERT INTO t VALUES ('a', 1)")
    for sql in (
        "INSERT INTO t VALUES ('a', 2)",  # UNIQUE
        "INSERT INTO t VALUES ('b', NULL)",  # NOT NULL
        "INSERT INTO t VALUES ('c', -1)",  # CHECK
        "INSERT INTO t VALUES (1, 2, 3)",  # SQL error: a bug
    ):
        exc = _error_of(lambda sql=sql: conn.execute(sql))
        assert not is_unavailable(exc), (sql, exc)


def test_a_dropped_table_is_the_plumbings_fault():
    """The lab's schema damaged under it: no message can fix that and an operator can, so hold."""
    conn = sqlite3.connect(":memory:")
    exc = _error_of(lambda: conn.execute("INSERT INTO telemetry VALUES (1)"))
    assert is_unavailable(exc), exc


def test_read_only_locked_and_unopenable_files_are_infrastructure(tmp_path: Path):
    path = tmp_path / "db.sqlite"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("CREATE TABLE t (n INTEGER)")
    ro = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    readonly = _error_of(lambda: ro.execute("INSERT INTO t VALUES (1)"))
    assert readonly.sqlite_errorname.startswith("SQLITE_READONLY")
    writer.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    locked = _error_of(lambda: other.execute("INSERT INTO t VALUES (1)"))
    assert locked.sqlite_errorname.startswith("SQLITE_BUSY")
    writer.execute("ROLLBACK")
    cantopen = _error_of(lambda: sqlite3.connect(tmp_path / "no" / "such" / "dir.db"))
    for exc in (readonly, locked, cantopen):
        assert is_unavailable(exc), exc


def test_messages_without_a_code_are_classified_by_their_text():
    assert is_unavailable(sqlite3.OperationalError("database or disk is full"))
    assert is_unavailable(sqlite3.OperationalError("attempt to write a readonly database"))
    assert not is_unavailable(sqlite3.OperationalError("near 'SELEC': syntax error"))


def test_os_errors_and_libsql_transport_errors_are_infrastructure():
    assert is_unavailable(OSError(28, "No space left on device"))
    assert is_unavailable(TimeoutError("Hrana call took too long"))  # an OSError subclass
    assert is_unavailable(ConnectionRefusedError(111, "Connection refused"))
    assert is_unavailable(LibsqlError("WebSocket was closed", "HRANA_WEBSOCKET_ERROR"))
    assert is_unavailable(LibsqlError("The client is closed", "CLIENT_CLOSED"))
    assert not is_unavailable(LibsqlError("UNIQUE constraint failed", "SQLITE_CONSTRAINT_UNIQUE"))
    # libsql_client's dbapi2 converts aiohttp connection errors like this (server unreachable)
    converted = OperationalError("Cannot connect to host 127.0.0.1:1")
    converted.sqlite_errorname = "SQLITE_CANTOPEN"
    assert is_unavailable(converted)


def test_the_cause_chain_is_followed():
    try:
        try:
            raise LibsqlError("Stream was manually closed", "STREAM_CLOSED")
        except LibsqlError as inner:
            raise sqlite3.DatabaseError("stream error") from inner
    except sqlite3.DatabaseError as outer:
        assert is_unavailable(outer)
