"""Applying a change of the credential registry to the running embedded broker, without a restart.

:func:`apply_credentials` rewrites ``<store_dir>/auth.conf`` from the lab's recorded secrets
(``identity.json``) and the registry, sends SIGHUP to the nats-server recorded as running on the
store (checked to be that server, not a reused pid) and waits until the server says it loaded
the new configuration: its ``varz`` ``config_load_time`` moves (asked as the system account,
``monitor.py``). nats-server applies the changed users at once: a removed user's connections are
closed, every other connection stays. Any process holding the data directory's files may call
it (the lab, or ``overwatch-lab device ...`` next to a running lab); a broker that is not running
reads the same files when it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from pathlib import Path

from nats.aio.client import Client as NATS

from overwatch_lab.broker.credentials import CredentialStore, write_private
from overwatch_lab.broker.identity import IDENTITY_NAME, is_our_server, load_identity
from overwatch_lab.broker.monitor import server_monitor
from overwatch_lab.broker.permissions import render_authorization
from overwatch_lab.broker.process import AUTH_CONFIG_NAME, CONFIG_NAME
from overwatch_lab.errors import BrokerError

log = logging.getLogger(__name__)

_POLL_S = 0.02


def write_auth_config(store_dir: Path, store: CredentialStore) -> None:
    """Rewrite ``auth.conf`` from ``identity.json`` and the registry.

    Raises:
        BrokerError: the broker has no recorded identity yet (it never started).
    """
    ident = load_identity(store_dir / IDENTITY_NAME)
    if ident is None:
        raise BrokerError(f"no broker identity in {store_dir}: start the lab once first")
    write_private(
        store_dir / AUTH_CONFIG_NAME, render_authorization(ident.token, ident.system_password, store.grants())
    )


async def apply_credentials(
    store_dir: Path, store: CredentialStore, system_nc: NATS | None, *, timeout_s: float = 10.0
) -> bool:
    """Write the registry into the broker's config and reload the running broker.

    Args:
        store_dir: The broker's store dir (``<data_dir>/broker``).
        store: The credential registry.
        system_nc: A connection of the system account, to see the reload happen (None: send
            the signal and do not wait).
        timeout_s: How long the reload may take.

    Returns:
        True if a running broker reloaded, False if none runs (it reads the files at its start).

    Raises:
        BrokerError: the broker did not reload within ``timeout_s`` (its log says why).
    """
    write_auth_config(store_dir, store)
    ident = load_identity(store_dir / IDENTITY_NAME)
    pid = ident.pid if ident is not None else None
    if pid is None or not is_our_server(pid, store_dir / CONFIG_NAME):
        log.info("no broker runs on %s: the credentials apply at its next start", store_dir)
        return False
    before = None
    if system_nc is not None:
        before = (await server_monitor(system_nc, "varz", timeout_s=timeout_s)).get("config_load_time")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGHUP)
    if system_nc is None:
        return True
    deadline = time.monotonic() + timeout_s
    while True:
        now = (await server_monitor(system_nc, "varz", timeout_s=timeout_s)).get("config_load_time")
        if now != before:
            log.info("broker (pid %s) reloaded its credentials", pid)
            return True
        if time.monotonic() > deadline:
            raise BrokerError(
                f"the broker (pid {pid}) did not reload {store_dir / AUTH_CONFIG_NAME} within "
                f"{timeout_s} s; see its log ('Failed to reload server configuration')"
            )
        await asyncio.sleep(_POLL_S)
