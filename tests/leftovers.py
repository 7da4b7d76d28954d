"""What a test run must not leave behind: ``overwatch-*`` folders in the temporary directory and
nats-server processes started by the run.

:func:`start` runs when the session begins: it notes the ``overwatch-*`` folders that already
exist and puts a marker in the environment, which every child inherits (a Lab's nats-server, a
CLI subprocess's, a notebook kernel's). :func:`check` runs when the session ends and returns a
report of what is still there:

- a live nats-server whose environment carries this run's marker: a broker nobody stopped;
- a new ``overwatch-*`` folder: a test or notebook that made one outside ``tmp_path`` and did
  not remove it. A folder that a live process of *another* run still uses (its command line
  or working directory is inside it) is left out: it belongs to that run.

``tests/conftest.py`` turns a report into a failed run. Nothing here stops or deletes anything.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.polling import wait_until

MARKER = "OVERWATCH_TEST_RUN"
PATTERN = "overwatch-*"
EXIT_GRACE_S = 3.0
"""How long a nats-server may still be exiting at the end of the run (a child whose parent was
killed gets SIGTERM from the kernel and stops within about 2 s)."""


@dataclass
class Run:
    """One test run: its marker and the folders that existed before it."""

    marker: str
    roots: tuple[Path, ...]
    before: frozenset[Path] = field(default_factory=frozenset)


def _roots() -> tuple[Path, ...]:
    return tuple(
        dict.fromkeys(Path(p).resolve() for p in ("/tmp", tempfile.gettempdir()) if Path(p).is_dir())
    )


def _folders(roots: tuple[Path, ...]) -> frozenset[Path]:
    return frozenset(p for root in roots for p in root.glob(PATTERN) if p.is_dir())


def start() -> Run:
    """Mark this process's environment (inherited by children) and note the existing folders."""
    marker = os.environ.get(MARKER) or uuid.uuid4().hex
    os.environ[MARKER] = marker
    roots = _roots()
    return Run(marker, roots, _folders(roots))


@dataclass(frozen=True)
class Proc:
    pid: int
    comm: str
    cmdline: str
    cwd: str
    ours: bool


def _processes(marker: str) -> list[Proc]:
    needle = f"{MARKER}={marker}".encode()
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":  # a zombie holds nothing
                continue
            comm = (entry / "comm").read_text().strip()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            try:
                ours = needle in (entry / "environ").read_bytes().split(b"\0")
                cwd = os.readlink(entry / "cwd")
            except OSError:  # another user's process: not ours, and its cwd is private
                ours, cwd = False, ""
        except (OSError, IndexError):  # exited meanwhile
            continue
        out.append(Proc(int(entry.name), comm, cmdline, cwd, ours))
    return out


def _our_brokers(marker: str) -> list[Proc]:
    return [p for p in _processes(marker) if p.ours and p.comm == "nats-server"]


def check(run: Run) -> list[str]:
    """Return one line per thing the run left behind (empty: nothing)."""
    problems: list[str] = []
    try:
        wait_until(
            lambda: not _our_brokers(run.marker), timeout=EXIT_GRACE_S, what="the run's nats-servers to exit"
        )
    except AssertionError:
        for p in _our_brokers(run.marker):
            problems.append(f"nats-server pid {p.pid} started by this run is still running: {p.cmdline}")
    new = sorted(_folders(run.roots) - run.before)
    if new:
        foreign = [p for p in _processes(run.marker) if not p.ours]
        for folder in new:
            name = str(folder)
            in_use = any(
                name in p.cmdline or p.cwd == name or p.cwd.startswith(name + os.sep) for p in foreign
            )
            if not in_use:
                problems.append(f"{folder} was created during this run and is still there")
    return problems
