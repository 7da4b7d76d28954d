"""The data directory's owner lock: one owning Lab per data directory.

The owning Lab takes an exclusive ``flock`` on ``<data_dir>/lab.lock`` before anything else
touches the directory and holds it for its whole life; the file records the owner's pid (and
the kernel's start time of that pid, so a reused pid is not mistaken for the owner). A second
would-be owner is refused with :class:`~overwatch_lab.errors.DataDirInUse` naming that pid.
Attaching (``Lab.attach``) never takes the lock.

The kernel drops a ``flock`` when the last file descriptor of the locked open file is closed,
so the lock dies with its holders, whatever kills them. The lab passes its lock descriptor to
the embedded nats-server (``NatsServer(pass_fds=...)``): after a SIGKILL of the lab, its broker
lives on for a moment (PDEATHSIG SIGTERM, then a graceful shutdown that still writes the
JetStream store) and keeps the lock meanwhile. A new owner that finds the lock held while the
recorded pid is dead therefore waits for it (bounded, and says so in the log) instead of
starting a second nats-server on the same store.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from overwatch_lab.errors import ConfigError, DataDirInUse, LabStateError

log = logging.getLogger(__name__)

LOCK_NAME = "lab.lock"
_POLL_INTERVAL_S = 0.05


@dataclass(frozen=True, slots=True)
class LockOwner:
    """Who a ``lab.lock`` file says holds it."""

    pid: int
    """Process id of the owning lab."""
    proc_start: int | None
    """Start time of that process in clock ticks after boot (``/proc/<pid>/stat``), if known."""

    def alive(self) -> bool:
        """True while this very process runs (not a later process that reuses the pid)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return self.proc_start is None or process_start(self.pid) in (None, self.proc_start)


def process_start(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks after boot, or None where /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name may hold spaces
    except (OSError, ValueError, IndexError):
        return None


def read_owner(path: Path) -> LockOwner | None:
    """The owner recorded in a lock file, or None when it is absent, empty or unreadable."""
    try:
        record = json.loads(path.read_text())
        pid = record["pid"]
        start = record.get("proc_start")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not isinstance(pid, int) or not (start is None or isinstance(start, int)):
        return None
    return LockOwner(pid, start)


class DataDirLock:
    """An exclusive, process-lifetime lock on one data directory (``<data_dir>/lab.lock``).

    Args:
        data_dir: the lab's data directory (must exist).
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_NAME
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"<DataDirLock {'held' if self.held else 'free'} {self.path}>"

    @property
    def held(self) -> bool:
        """True between a successful :meth:`acquire` and :meth:`release`."""
        return self._fd is not None

    @property
    def fd(self) -> int:
        """The locked file descriptor: pass it to children that must hold the lock too."""
        if self._fd is None:
            raise LabStateError(f"{self.path} is not held by this lab")
        return self._fd

    async def acquire(self, wait_s: float) -> None:
        """Take the lock, and record this process as its owner.

        When the lock is held and the recorded owner is a live process, refuse at once. When
        the recorded owner is dead (or not recorded yet), what holds the lock is a leftover of
        it, normally its nats-server finishing a graceful shutdown: wait up to ``wait_s`` for
        it, logging a warning.

        Raises:
            DataDirInUse: a live lab owns the directory (the message names its pid), or the lock
                was still held after ``wait_s``.
            ConfigError: the lock file cannot be opened (e.g. the directory is not writable).
        """
        if self._fd is not None:
            raise LabStateError(f"{self.path} is already held by this lab")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot open the data directory's lock {self.path}: {exc}") from exc
        try:
            waited = await self._lock(fd, wait_s)
            record = json.dumps({"pid": os.getpid(), "proc_start": process_start(os.getpid())})
            os.pwrite(fd, (record + "\n").encode(), 0)
            os.ftruncate(fd, len(record) + 1)
        except BaseException:
            os.close(fd)  # also drops the lock if we had it
            raise
        self._fd = fd
        if waited is not None:
            log.warning("%s acquired after waiting %.1f s", self.path, waited)

    def release(self) -> None:
        """Close the lock descriptor (idempotent).

        The lock itself ends when every holder has closed it: a child given :attr:`fd` (the
        broker) keeps it until it exits. The descriptor is closed rather than unlocked because
        ``LOCK_UN`` would drop the lock for those children too.
        """
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    async def _lock(self, fd: int, wait_s: float) -> float | None:
        """Lock ``fd``; return None when it was free at once, else the seconds waited."""
        started = time.monotonic()
        warned = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass
            else:
                return time.monotonic() - started if warned else None
            owner = read_owner(self.path)
            if owner is not None and owner.alive():
                raise DataDirInUse(
                    f"data directory {self.data_dir} is in use by the lab with pid {owner.pid}"
                    f"{' (this process)' if owner.pid == os.getpid() else ''}; stop it first, "
                    "or attach to it (Lab.attach, overwatch-lab status)"
                )
            who = f"its lab (pid {owner.pid}) is gone" if owner is not None else "no owner is recorded"
            if time.monotonic() - started >= wait_s:
                raise DataDirInUse(
                    f"{self.path} is still locked {wait_s:.1f} s after {who}: a leftover process "
                    "(its nats-server?) still uses the data directory"
                )
            if not warned:
                warned = True
                log.warning(
                    "%s is held although %s: waiting up to %.1f s for its leftovers "
                    "(normally its nats-server finishing its shutdown)",
                    self.path,
                    who,
                    wait_s,
                )
            await asyncio.sleep(_POLL_INTERVAL_S)
