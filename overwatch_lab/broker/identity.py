"""What the embedded broker keeps across restarts: its port, the lab's own secrets and the pid of its process.

Devices and attached processes are handed ``nats://127.0.0.1:PORT`` and credentials once
(``lab.json``, ``lab.devices``); they reconnect by themselves after a broker restart only if the
restarted broker listens on the same port and accepts the same credentials. So the first boot lets
nats-server pick a free port (no free-port race) and records it with the password of the lab's
internal user and of its system-account user in ``<store_dir>/identity.json`` (mode 0600: it
holds secrets); every later boot asks for exactly that port. The scoped identities handed to
devices are kept apart (``credentials.py``). A file written before the system account existed
gets a system password at the next boot; its recorded monitoring port is no longer opened.

The recorded pid lets a boot find a broker left behind by a lab that was SIGKILLed (its
nats-server gets SIGTERM from PDEATHSIG and needs a moment to shut down): two servers must never
share one JetStream store, so :func:`retire_orphan` waits for it, bounded, and then kills it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import secrets
import signal
import socket
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from overwatch_lab.errors import BrokerStartError

log = logging.getLogger(__name__)

IDENTITY_NAME = "identity.json"
_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class BrokerIdentity:
    """The port and secrets a broker keeps across restarts, and the pid of its last process.

    Attributes:
        client_port: Client port on 127.0.0.1.
        token: Password of the lab's internal user (``overwatch-lab``; the key is still called
            ``token``, what it was before the broker had users).
        system_password: Password of the lab's system-account user (monitoring requests).
        pid: The nats-server process running on this store, None once it stopped cleanly.
    """

    client_port: int
    token: str
    system_password: str
    pid: int | None = None

    def with_pid(self, pid: int | None) -> BrokerIdentity:
        """Return a copy naming another process (None: no process runs)."""
        return replace(self, pid=pid)


def load_identity(path: Path) -> BrokerIdentity | None:
    """Read the recorded identity; None when there is none yet.

    Raises:
        BrokerStartError: the file exists but is not a valid identity (names the file).
    """
    try:
        raw = json.loads(path.read_text())
        ident = BrokerIdentity(
            client_port=int(raw["client_port"]),
            token=str(raw["token"]),
            system_password=str(raw.get("system_password") or secrets.token_hex(32)),
            pid=None if raw.get("pid") is None else int(raw["pid"]),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BrokerStartError(
            f"cannot read the broker identity {path}: {exc!r}; delete it to let the broker pick a new "
            "port and new secrets (devices then need the new URL from lab.json)"
        ) from exc
    if not 0 < ident.client_port < 65536:
        raise BrokerStartError(f"the broker identity {path} records an invalid port {ident.client_port}")
    return ident


def save_identity(path: Path, ident: BrokerIdentity) -> None:
    """Write the identity atomically, owner-only (it holds secrets)."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(ident), fh, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def port_in_use(port: int) -> bool:
    """True if something listens on (or holds) 127.0.0.1:port, as nats-server's own bind would see it.

    Go's listener sets SO_REUSEADDR, so connections of an earlier server still in TIME_WAIT do not
    count; the probe sets it too.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


async def wait_ports_free(ports: dict[str, int], deadline: float, where: Path) -> None:
    """Wait until every port is free, until ``deadline`` (``time.monotonic()``).

    Args:
        ports: ``{"client": port}``.
        deadline: when to give up.
        where: the identity file (named in the error).

    Raises:
        BrokerStartError: a port is still in use at the deadline (one line naming it).
    """
    logged = False
    while True:
        busy = [(name, port) for name, port in ports.items() if port_in_use(port)]
        if not busy:
            return
        if time.monotonic() >= deadline:
            name, port = busy[0]
            raise BrokerStartError(
                f"port {port} (the broker's {name} port, recorded in {where}) is in use by another process; "
                f"stop it, or delete {where.name} to let the broker pick a new port"
            )
        if not logged:
            log.warning("broker port(s) %s still in use; waiting for them to be released", busy)
            logged = True
        await asyncio.sleep(_POLL_S)


def is_our_server(pid: int, config_path: Path) -> bool:
    """True if ``pid`` is a live nats-server started with ``config_path`` (not a reused pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[:1] in (["Z"], ["X"]):
        return False  # exited, waiting for its parent to reap it: holds no store or port
    names = [os.fsdecode(a) for a in argv if a]
    return bool(names) and Path(names[0]).name == "nats-server" and str(config_path) in names


async def retire_orphan(pid: int, config_path: Path, timeout_s: float) -> bool:
    """Make sure an earlier nats-server on this store (``pid``) is gone before another one starts.

    A broker orphaned by a SIGKILLed lab has been sent SIGTERM by PDEATHSIG and exits within about
    two seconds; it is asked again (SIGTERM), waited for ``timeout_s`` and then SIGKILLed.

    Returns:
        True if such a process was found (and is now gone).
    """
    if pid == os.getpid() or not is_our_server(pid, config_path):
        return False
    log.warning(
        "an earlier nats-server (pid %s) still runs on %s; waiting up to %.1f s for it to exit",
        pid,
        config_path.parent,
        timeout_s,
    )
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    killed = False
    while is_our_server(pid, config_path):
        if time.monotonic() >= deadline:
            if killed:
                raise BrokerStartError(
                    f"an earlier nats-server (pid {pid}) on {config_path.parent} would not die"
                )
            log.warning("nats-server pid %s did not exit in %.1f s; killing it", pid, timeout_s)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            killed, deadline = True, time.monotonic() + timeout_s  # SIGKILL takes effect at once
        await asyncio.sleep(_POLL_S)
    return True
