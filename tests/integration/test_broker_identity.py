"""The embedded broker's identity: port and secrets kept across restarts, busy ports, orphans."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import time

import pytest

from overwatch_lab.broker.connect import connect
from overwatch_lab.broker.process import NatsServer
from overwatch_lab.errors import BrokerStartError
from tests.integration.conftest import wait_for
from tests.integration.test_broker_process import CHILD, process_gone, spawn_python


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def test_port_and_secrets_are_recorded_and_reused(tmp_path):
    store = tmp_path / "nats"
    first = NatsServer(store)
    await first.start()
    try:
        ident = json.loads(first.identity_path.read_text())
        assert stat.S_IMODE(first.identity_path.stat().st_mode) == 0o600  # it holds secrets
        assert ident == {
            "client_port": port_of(first.url),
            "token": first.password,
            "system_password": first.system_auth.password,
            "pid": first.pid,
        }
    finally:
        await first.stop()
    assert json.loads(first.identity_path.read_text())["pid"] is None  # nothing runs on the store

    second = NatsServer(store)
    await second.start()
    try:
        assert (second.url, second.auth, second.system_auth) == (first.url, first.auth, first.system_auth)
        assert second.pid != first.pid
        nc = await connect(first.url, auth=first.auth)  # what a device was given still works
        await nc.close()
    finally:
        await second.stop()

    fresh = NatsServer(store, keep_identity=False)
    await fresh.start()
    try:
        assert fresh.password != first.password
    finally:
        await fresh.stop()


async def test_a_busy_recorded_port_is_waited_for_then_named(tmp_path):
    store = tmp_path / "nats"
    first = NatsServer(store)
    await first.start()
    await first.stop()
    port = port_of(first.url)

    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", port))
    squatter.listen()
    try:
        started = time.monotonic()
        with pytest.raises(BrokerStartError) as info:
            await NatsServer(store, ready_timeout_s=1.0).start()
        assert time.monotonic() - started >= 0.9  # it retried within ready_timeout_s
        text = str(info.value)
        assert f"port {port} " in text and "client port" in text and "\n" not in text
        # Released while the next start waits: it comes up on exactly that port.
        asyncio.get_running_loop().call_later(0.3, squatter.close)
        again = NatsServer(store, ready_timeout_s=5.0)
        await again.start()
        try:
            assert again.url == first.url and again.password == first.password
        finally:
            await again.stop()
    finally:
        squatter.close()


async def test_an_orphaned_broker_on_the_store_is_retired_before_a_new_one_starts(tmp_path):
    """A SIGKILLed lab leaves a broker behind (stopped here, so PDEATHSIG's SIGTERM can't end it)."""
    store = tmp_path / "nats"
    child = await spawn_python(CHILD, str(store))
    orphan: int | None = None
    try:
        async with asyncio.timeout(30):
            orphan = int(await child.stdout.readline())
        recorded = json.loads((store / "identity.json").read_text())
        assert recorded["pid"] == orphan
        os.kill(orphan, signal.SIGSTOP)  # a wedged broker: it will not exit by itself
        child.kill()
        await child.wait()
        assert not process_gone(orphan)

        server = NatsServer(store, stop_timeout_s=0.5)
        await server.start()  # waits 0.5 s for the orphan, kills it, then takes its ports
        try:
            assert process_gone(orphan)
            assert port_of(server.url) == recorded["client_port"] and server.password == recorded["token"]
            assert json.loads(server.identity_path.read_text())["pid"] == server.pid
        finally:
            await server.stop()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        if orphan is not None and not process_gone(orphan):
            os.kill(orphan, signal.SIGKILL)
            await wait_for(lambda: process_gone(orphan), what="orphan gone")
