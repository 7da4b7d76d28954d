"""A small tmpfs per test, for real file-system faults under the database: full, read-only.

Mounting needs root (or CAP_SYS_ADMIN): the suite runs as root here and in CI. Elsewhere the
tests that use :func:`tmpfs` are skipped with the reason. Only what a test puts on the tmpfs
(the database) sees the fault; the broker's store stays on ``tmp_path``.

A read-only remount is refused (EBUSY) while any file on it is open for writing, so a test
can make the database's file system read-only only while the store holds no connection, e.g.
after a fault made it drop the connection (see ``Store``); :meth:`Tmpfs.try_read_only` says
whether it worked.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

log = logging.getLogger(__name__)

TMPFS_SIZE = "16m"
_CHUNK = b"\0" * (256 * 1024)


class Tmpfs:
    """One mounted tmpfs, with the faults a test can put on it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"
        self.read_only = False

    def free_bytes(self) -> int:
        """Bytes still free for an unprivileged writer."""
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self) -> int:
        """Write the filler file until the file system is full; return its size in bytes."""
        written = 0
        with open(self.filler, "ab", buffering=0) as fh:
            for chunk in (_CHUNK, _CHUNK[:4096]):
                while True:
                    try:
                        written += fh.write(chunk)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        return written

    def free_filler(self) -> None:
        """Delete the filler file: the space is free again."""
        self.filler.unlink(missing_ok=True)

    def _mount(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["mount", *args, str(self.path)], capture_output=True, text=True, check=False)

    def try_read_only(self) -> bool:
        """Remount read-only; False while a file on it is open for writing (EBUSY)."""
        result = self._mount("-o", "remount,ro")
        if result.returncode == 0:
            self.read_only = True
        return result.returncode == 0

    def read_write(self) -> None:
        """Remount read-write."""
        result = self._mount("-o", "remount,rw")
        if result.returncode != 0:
            raise RuntimeError(f"remount rw of {self.path} failed: {result.stderr.strip()}")
        self.read_only = False


def _mount_failure(path: Path) -> str | None:
    if os.geteuid() != 0:
        return "needs root to mount a tmpfs for file-system faults"
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0755", "overwatch-test", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        return f"cannot mount a tmpfs for file-system faults: {result.stderr.strip()}"
    return None


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Tmpfs]:
    """A fresh tmpfs of ``TMPFS_SIZE`` at ``tmp_path/dbfs``, unmounted after the test.

    Request it before any fixture that opens files on it (e.g. ``lab_factory``), so that those
    are torn down first.
    """
    path = tmp_path / "dbfs"
    path.mkdir()
    reason = _mount_failure(path)
    if reason is not None:
        pytest.skip(reason)
    fs = Tmpfs(path)
    try:
        yield fs
    finally:
        if fs.read_only:
            with contextlib.suppress(RuntimeError):
                fs.read_write()
        result = subprocess.run(["umount", str(path)], capture_output=True, text=True, check=False)
        if result.returncode != 0:  # something still has a file open: detach it anyway
            log.warning("umount %s failed (%s); detaching lazily", path, result.stderr.strip())
            subprocess.run(["umount", "-l", str(path)], check=False)
