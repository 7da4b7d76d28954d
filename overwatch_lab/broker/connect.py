"""Connecting to NATS: one long-lived, reconnecting client with a fail-fast first connect.

nats-py retries the *initial* connect forever when ``max_reconnect_attempts`` is -1, and only
reports each failure to ``error_cb``. A notebook user who mistyped a URL or a token must get an
error within seconds instead, naming the reason. So :func:`connect` runs the client's connect
while watching its failures: an authentication failure aborts at once, any other failure
aborts after ``initial_attempts`` tries, and the whole first connect is bounded by
``connect_timeout_s``. Once connected, the client reconnects forever, waiting
``RECONNECT_WAIT_S`` between attempts on the same server. Callbacks log; nothing prints.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import nats.errors
from nats.aio.client import Client as NATS

from overwatch_lab.errors import BrokerError
from overwatch_lab.nats_auth import NatsAuth

log = logging.getLogger(__name__)

MiB = 1024 * 1024
PENDING_SIZE = 64 * MiB  # outgoing buffer: room for a ~100k msgs/s burst of ~200 B messages
RECONNECT_WAIT_S = 1.0
PING_INTERVAL_S = 20
MAX_OUTSTANDING_PINGS = 5
DEFAULT_INITIAL_ATTEMPTS = 3

_AUTH_MARKERS = ("authorization", "authentication")


def is_auth_error(exc: BaseException) -> bool:
    """True if ``exc`` is a NATS authentication/authorization failure of a connect attempt."""
    if isinstance(exc, nats.errors.AuthorizationError):
        return True
    text = str(exc).lower()
    return isinstance(exc, nats.errors.Error) and any(m in text for m in _AUTH_MARKERS)


def redact_url(url: str) -> str:
    """Return ``url`` (or comma-separated URLs) with any ``user:password@`` part masked."""
    parts = []
    for one in url.split(","):
        scheme, sep, rest = one.strip().partition("://")
        if sep and "@" in rest:
            rest = "***@" + rest.split("@", 1)[1]
        parts.append(f"{scheme}{sep}{rest}")
    return ",".join(parts)


async def connect(
    url: str,
    *,
    auth: NatsAuth | None = None,
    token: str | None = None,
    user: str | None = None,
    password: str | None = None,
    creds: Path | None = None,
    nkey_seed: str | None = None,
    nkey_seed_file: Path | None = None,
    name: str = "overwatch-lab",
    connect_timeout_s: float = 5.0,
    initial_attempts: int = DEFAULT_INITIAL_ATTEMPTS,
) -> NATS:
    """Connect a long-lived, forever-reconnecting NATS client, failing fast on the first connect.

    Args:
        url: Server URL, or comma-separated URLs of a cluster.
        auth: Authentication (token, user and password, NKey seed file or ``.creds`` file, and
            the inbox prefix a scoped identity must use); merged with the four below, which
            take precedence when set.
        token / user / password / creds: Authentication (a ``.creds`` file for creds).
        nkey_seed / nkey_seed_file: NKey authentication: the user seed (``SU…``) itself, or a
            file holding it.
        name: Client name shown by the server's monitoring endpoints.
        connect_timeout_s: Bound on the whole initial connect (and on each attempt).
        initial_attempts: Failed attempts (other than an auth failure, which aborts at once)
            after which the initial connect gives up.

    Returns:
        The connected client. Close it with ``await nc.close()`` (or ``drain()``).

    Raises:
        BrokerError: the server refused the credentials, or could not be reached in time. The
            message names the URL (credentials masked) and the reason, never the token.
    """
    shown = redact_url(url)
    auth = NatsAuth(
        token=token or (auth.token if auth else None),
        user=user or (auth.user if auth else None),
        password=password or (auth.password if auth else None),
        nkey_seed_file=auth.nkey_seed_file if auth else None,
        nkey_seed=auth.nkey_seed if auth else None,
        creds=str(creds) if creds is not None else (auth.creds if auth else None),
        inbox_prefix=auth.inbox_prefix if auth else None,
    )
    servers = [u.strip() for u in url.split(",") if u.strip()]
    if not servers:
        raise BrokerError("no NATS URL given")
    failures: list[BaseException] = []
    give_up = asyncio.Event()
    connected = False

    async def on_error(exc: Exception) -> None:
        if not connected:
            failures.append(exc)
            if is_auth_error(exc) or len(failures) >= initial_attempts:
                give_up.set()
            return
        if isinstance(exc, nats.errors.SlowConsumerError):
            log.warning("NATS slow consumer on %s (sid %s): messages dropped", exc.subject, exc.sid)
        else:
            log.warning("NATS error on %s: %r", shown, exc)

    async def on_disconnected() -> None:
        if connected and not nc.is_closed:
            log.warning("NATS disconnected from %s; reconnecting", shown)

    async def on_reconnected() -> None:
        log.info("NATS reconnected to %s", nc.connected_url.netloc if nc.connected_url else shown)

    async def on_closed() -> None:
        log.debug("NATS connection to %s closed", shown)

    nc = NATS()
    # Two local tasks, both settled before this function returns (success, failure or cancel).
    attempt = asyncio.ensure_future(
        nc.connect(
            servers=servers,
            name=name,
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
            closed_cb=on_closed,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            # nats-py annotates these two as int but only sleeps and times out on them: a float works.
            reconnect_time_wait=RECONNECT_WAIT_S,  # type: ignore[arg-type]
            connect_timeout=connect_timeout_s,  # type: ignore[arg-type]
            ping_interval=PING_INTERVAL_S,
            max_outstanding_pings=MAX_OUTSTANDING_PINGS,
            pending_size=PENDING_SIZE,
            # token, user, password, nkeys_seed, user_credentials (files read by nats-py: a
            # missing file fails the connect), inbox_prefix
            **auth.kwargs(),
        )
    )
    watcher = asyncio.ensure_future(give_up.wait())
    ok = False
    try:
        done, _ = await asyncio.wait(
            {attempt, watcher}, timeout=connect_timeout_s, return_when="FIRST_COMPLETED"
        )
        ok = attempt in done and attempt.exception() is None
    finally:
        for fut in (attempt, watcher):
            if not fut.done():
                fut.cancel()
        await asyncio.wait({attempt, watcher})
        if not ok:
            await nc.close()
    if ok:
        connected = True
        log.info(
            "connected to NATS at %s as %r", nc.connected_url.netloc if nc.connected_url else shown, name
        )
        return nc
    if attempt in done and not attempt.cancelled() and (exc := attempt.exception()) is not None:
        failures.append(exc)
    last = failures[-1] if failures else None
    raise _connect_error(
        shown, failures, connect_timeout_s, timed_out=not done, anonymous=auth.anonymous
    ) from last


def _connect_error(
    shown: str, failures: list[BaseException], timeout_s: float, *, timed_out: bool, anonymous: bool
) -> BrokerError:
    last = failures[-1] if failures else None
    if any(is_auth_error(f) for f in failures):
        if anonymous:
            return BrokerError(
                f"NATS server at {shown} requires credentials and none were given (authorization violation)"
            )
        return BrokerError(f"NATS server at {shown} rejected the credentials (authorization violation)")
    if last is None:
        return BrokerError(f"could not connect to NATS at {shown} within {timeout_s} s (no answer)")
    if isinstance(last, ConnectionRefusedError | nats.errors.NoServersError):
        reason = "no server is listening there (connection refused)"
    elif isinstance(last, TimeoutError | nats.errors.TimeoutError):
        reason = "the server did not answer in time"
    else:
        reason = f"{type(last).__name__}: {last}"
    when = f"within {timeout_s} s" if timed_out else f"after {len(failures)} attempt(s)"
    return BrokerError(f"could not connect to NATS at {shown} {when}: {reason}")
