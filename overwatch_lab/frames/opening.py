"""``overwatch_lab.open(data_dir)``: the frames of a lab's data directory, read-only, no broker.

It opens the directory's libSQL file (``overwatch.db``) read-only (SQLite ``mode=ro``: nothing
can be written, a missing file is not created) and checks it before handing back a
:class:`~overwatch_lab.frames.facade.Frames`: the directory must exist, hold a lab database
with a schema this code knows. A lab may be running on the directory meanwhile (in this
process or another): the database is in WAL mode, so readers see every committed write and
never block the lab's writer, and no lock of the directory is taken.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from overwatch_lab.errors import DatabaseError, DataDirError
from overwatch_lab.frames.facade import DEFAULT_STALE_AFTER_S, Frames
from overwatch_lab.frames.reader import Reader
from overwatch_lab.store.schema import SCHEMA_VERSION

log = logging.getLogger(__name__)

DB_FILE = "overwatch.db"
"""The database's name in a data directory (``LabConfig.db_path`` when ``db_url`` is None)."""


def open_data_dir(data_dir: str | Path, *, stale_after_s: float | None = None) -> Frames:
    """Return the frames of a data directory left by a lab (or in use by one), read-only.

    Args:
        data_dir: the lab's ``data_dir`` (the folder holding ``overwatch.db``).
        stale_after_s: for ``is_live`` in as-of pictures; default the ``stale_after_s`` the
            lab recorded in its ``lab.json`` when there is one, else 5 s.

    Raises:
        DataDirError: the folder does not exist, holds no lab database (or an empty one), or
            the database's schema is newer than this code knows.
    """
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise DataDirError(
            f"no data directory at {str(folder)!r}" + (" (it is a file)" if folder.exists() else "")
        )
    db = folder / DB_FILE
    if not db.is_file():
        raise DataDirError(
            f"{str(folder)!r} holds no lab database ({DB_FILE} is missing): is it a lab's data_dir?"
        )
    reader = Reader(str(db))
    try:
        rows = reader.rows("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'")
        version = int(reader.rows("SELECT version FROM schema_version WHERE id = 1")[0][0]) if rows else 0
    except (DatabaseError, IndexError) as exc:
        raise DataDirError(f"{str(db)!r} is not a readable lab database: {exc}") from exc
    if version == 0:
        raise DataDirError(f"{str(db)!r} is empty: no lab has written its schema there yet")
    if version > SCHEMA_VERSION:
        raise DataDirError(
            f"{str(db)!r} has schema version {version}, newer than this overwatch-lab knows ({SCHEMA_VERSION}): "
            "upgrade overwatch-lab to read it"
        )
    if version < SCHEMA_VERSION:
        log.info("%s has schema version %d (current %d); frames that need newer tables may be slower or empty",
                 db, version, SCHEMA_VERSION)  # fmt: skip
    stale = stale_after_s if stale_after_s is not None else _recorded_stale_after(folder)
    return Frames(str(db), stale_after_s=stale)


def _recorded_stale_after(folder: Path) -> float:
    try:
        info = json.loads((folder / "lab.json").read_text())
    except (OSError, ValueError):
        return DEFAULT_STALE_AFTER_S
    value = info.get("stale_after_s") if isinstance(info, dict) else None
    return (
        float(value)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0
        else DEFAULT_STALE_AFTER_S
    )
