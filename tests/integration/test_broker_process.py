"""The embedded nats-server child: start, readiness, logs, stop, parent death, restart, connect."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import stat
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from overwatch_lab.broker.connect import connect
from overwatch_lab.broker.monitor import server_monitor
from overwatch_lab.broker.process import NatsServer, parse_log_line
from overwatch_lab.errors import BrokerError, BrokerStartError
from tests.integration.conftest import wait_for

NATS_LOGGER = "overwatch_lab.broker.nats"
REPO = Path(__file__).resolve().parents[2]


def process_gone(pid: int) -> bool:
    """True if ``pid`` no longer runs (absent, or a zombie nobody has reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


async def monitor(server: NatsServer, endpoint: str) -> dict:
    """One monitoring endpoint of ``server``, asked as its system account."""
    nc = await connect(server.url, auth=server.system_auth)
    try:
        return await server_monitor(nc, endpoint)
    finally:
        await nc.close()


def test_parse_log_line_maps_levels():
    line = "[123] 2026/01/01 00:00:00.000000 [{}] hello world"
    expected = {
        "INF": logging.INFO,
        "WRN": logging.WARNING,
        "ERR": logging.ERROR,
        "FTL": logging.CRITICAL,
        "DBG": logging.DEBUG,
        "TRC": logging.DEBUG,
    }
    for tag, level in expected.items():
        assert parse_log_line(line.format(tag)) == (level, "hello world")
    assert parse_log_line("panic: boom") == (logging.WARNING, "panic: boom")


async def test_start_ready_stop_leaves_no_process(tmp_path):
    server = NatsServer(tmp_path / "nats", password="t0ken-for-test")
    await server.start()
    try:
        pid = server.pid
        assert pid is not None and server.is_running() and server.returncode is None
        assert server.url.startswith("nats://127.0.0.1:")
        client_port = int(server.url.rsplit(":", 1)[1])
        assert client_port > 0 and server.password == "t0ken-for-test"
        # The port is real: it speaks NATS, with JetStream on.
        reader, writer = await asyncio.open_connection("127.0.0.1", client_port)
        line = await reader.readline()
        assert line.startswith(b"INFO {") and json.loads(line[5:])["jetstream"] is True
        writer.close()
        await writer.wait_closed()
        # No HTTP monitoring port: the system account answers the same questions.
        ports = json.loads((server.ports_dir / f"nats-server_{pid}.ports").read_text())
        assert set(ports) == {"nats"}
        sys_nc = await connect(server.url, auth=server.system_auth)
        try:
            assert (await server_monitor(sys_nc, "healthz"))["status"] == "ok"
            assert (await server_monitor(sys_nc, "varz"))["port"] == client_port  # this server's
        finally:
            await sys_nc.close()
        # The config files hold the lab's password: owner-only.
        for path in (server.config_path, server.auth_config_path):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert "t0ken-for-test" in server.auth_config_path.read_text()
    finally:
        await server.stop()
    assert server.returncode == 0  # graceful SIGTERM shutdown
    assert not server.is_running()
    with pytest.raises(ProcessLookupError):  # reaped, not a zombie
        os.kill(pid, 0)
    assert not (server.ports_dir / f"nats-server_{pid}.ports").exists()
    await server.stop()  # idempotent
    assert await server.wait_exited() == 0


async def test_a_binary_not_named_nats_server_starts_and_cleans_its_ports_file(tmp_path):
    # $OVERWATCH_LAB_NATS_SERVER may name any copy (nats-server-2.10, say): the server names its
    # ports file after its own executable, so a fixed "nats-server_" prefix was never found.
    from overwatch_lab.broker.process import find_nats_server

    binary = tmp_path / "my-nats"
    binary.symlink_to(find_nats_server())
    server = NatsServer(tmp_path / "nats", binary=binary, ready_timeout_s=8.0)
    await server.start()
    try:
        pid = server.pid
        assert server.is_running() and (server.ports_dir / f"my-nats_{pid}.ports").exists()
    finally:
        await server.stop()
    assert server.returncode == 0 and not list(server.ports_dir.glob("*.ports"))


async def test_password_is_generated_per_store_and_required(tmp_path, nats_server):
    assert len(nats_server.password) == 64
    other = NatsServer(tmp_path / "other")
    await other.start()
    try:
        assert other.password != nats_server.password
        assert other.url != nats_server.url
    finally:
        await other.stop()

    started = time.monotonic()
    with pytest.raises(BrokerError, match="requires credentials and none were given") as no_token:
        await connect(nats_server.url)
    with pytest.raises(BrokerError, match="rejected the credentials") as bad_token:
        await connect(nats_server.url, token="wrong-token-value")
    assert time.monotonic() - started < 2.0  # an auth failure aborts at once, no retry loop
    for exc in (no_token.value, bad_token.value):
        assert nats_server.url in str(exc)
        assert nats_server.password not in str(exc) and "wrong-token-value" not in str(exc)

    nc = await connect(nats_server.url, auth=nats_server.auth)
    try:
        assert nc.is_connected
        assert nc.max_payload > 0
    finally:
        await nc.close()


async def test_connect_to_nothing_fails_fast_with_reason():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on that port any more.
    started = time.monotonic()
    with pytest.raises(BrokerError, match="connection refused") as info:
        await connect(f"nats://127.0.0.1:{port}", token="x", initial_attempts=2, connect_timeout_s=3.0)
    assert time.monotonic() - started < 3.0
    assert f"127.0.0.1:{port}" in str(info.value)


async def test_server_log_lines_reach_the_logger(nats_server, caplog):
    caplog.set_level(logging.DEBUG, logger=NATS_LOGGER)
    with pytest.raises(BrokerError):
        await connect(nats_server.url, token="bad")
    # The server logs the failed login as [ERR]: it must arrive at ERROR level, token redacted.
    record = await wait_for(
        lambda: next(
            (r for r in caplog.records if r.name == NATS_LOGGER and "authentication error" in r.getMessage()),
            None,
        ),
        what="the server's authentication error in the log",
    )
    assert record.levelno == logging.ERROR
    assert not record.getMessage().startswith("[")  # pid / time / level prefix stripped


async def test_startup_lines_logged_at_info(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=NATS_LOGGER)
    server = NatsServer(tmp_path / "nats")
    await server.start()
    try:
        await wait_for(
            lambda: any(
                r.name == NATS_LOGGER and r.levelno == logging.INFO and r.getMessage() == "Server is ready"
                for r in caplog.records
            ),
            what="'Server is ready' logged at INFO",
        )
    finally:
        await server.stop()
    assert any(r.name == NATS_LOGGER and "Server Exiting" in r.getMessage() for r in caplog.records)


async def test_bad_config_fails_with_stderr_in_message(tmp_path):
    server = NatsServer(tmp_path / "nats", sync_interval="bogus", ready_timeout_s=5.0)
    with pytest.raises(BrokerStartError, match="exited with code 1 before it was ready") as info:
        await server.start()
    assert "sync_interval" in str(info.value)  # nats-server's own words reach the error
    assert not server.is_running()
    with pytest.raises(BrokerStartError, match="already started"):
        await server.start()


async def test_wait_exited_reports_an_unexpected_death(nats_server):
    pid = nats_server.pid
    assert pid is not None
    waiter = asyncio.ensure_future(nats_server.wait_exited())
    await asyncio.sleep(0)
    assert not waiter.done()
    os.kill(pid, signal.SIGKILL)
    async with asyncio.timeout(5):
        code = await waiter
    assert code == -signal.SIGKILL
    assert not nats_server.is_running() and nats_server.returncode == -signal.SIGKILL
    await nats_server.stop()  # nothing left to stop: returns quietly


def test_runs_on_a_background_thread_loop(tmp_path):
    """The lab starts and stops the server from its own loop thread, not the main thread."""
    seen: dict[str, object] = {}

    async def use_and_stop() -> None:
        server = NatsServer(tmp_path / "nats")
        await server.start()
        seen["health"] = (await monitor(server, "healthz"))["status_code"]
        await server.stop()
        seen["code"] = server.returncode

    thread = threading.Thread(target=asyncio.run, args=(use_and_stop(),), name="lab-loop")
    thread.start()
    thread.join(20)
    assert not thread.is_alive()
    assert seen == {"health": 200, "code": 0}


THREAD_CHILD = textwrap.dedent(
    """
    import asyncio, sys, threading, time
    from pathlib import Path
    from overwatch_lab.broker.process import NatsServer

    async def start_and_leave():
        server = NatsServer(Path(sys.argv[1]))
        await server.start()
        print(server.pid, flush=True)

    thread = threading.Thread(target=asyncio.run, args=(start_and_leave(),))
    thread.start()
    thread.join()
    print("thread gone", flush=True)
    time.sleep(60)  # the process lives on; only the forking thread is gone
    """
)


async def test_server_dies_with_the_thread_that_started_it(tmp_path):
    """PDEATHSIG follows the forking *thread*: why the lab's loop thread must outlive the server."""
    child = await spawn_python(THREAD_CHILD, str(tmp_path / "nats"))
    try:
        async with asyncio.timeout(30):
            server_pid = int(await child.stdout.readline())
            assert (await child.stdout.readline()).strip() == b"thread gone"
        await wait_for(lambda: process_gone(server_pid), timeout=5.0, what=f"nats-server {server_pid} exit")
        assert child.returncode is None  # while its parent process is still alive
    finally:
        child.kill()
        await child.wait()


async def spawn_python(code: str, *args: str) -> asyncio.subprocess.Process:
    """Start ``python -c code args`` with the repository importable, stdout piped."""
    paths = [str(REPO), os.environ.get("PYTHONPATH", "")]
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p)),
    )


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from overwatch_lab.broker.process import NatsServer

    async def main():
        server = NatsServer(Path(sys.argv[1]))
        await server.start()
        print(server.pid, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


async def test_server_dies_with_its_sigkilled_parent(tmp_path):
    child = await spawn_python(CHILD, str(tmp_path / "nats"))
    try:
        async with asyncio.timeout(30):
            line = await child.stdout.readline()
        assert line.strip().isdigit(), f"child printed {line!r}"
        server_pid = int(line)
        assert not process_gone(server_pid)
        child.kill()  # SIGKILL: no cleanup code runs in the parent
        await child.wait()
        await wait_for(lambda: process_gone(server_pid), timeout=5.0, what=f"nats-server {server_pid} exit")
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()


@pytest.mark.parametrize("how", ["stop", "sigkill"])
@pytest.mark.parametrize("sync_interval", ["always", "2m"])
async def test_restart_on_same_dir_keeps_stream_data(tmp_path, sync_interval, how):
    """A graceful stop or a broker crash (SIGKILL, data still in the OS page cache) loses no ack."""
    store = tmp_path / "nats"
    first = NatsServer(store, sync_interval=sync_interval)
    await first.start()
    try:
        assert f'sync_interval: "{sync_interval}"' in first.config_path.read_text()
        js_config = (await monitor(first, "varz"))["jetstream"]["config"]
        assert js_config.get("sync_always", False) is (sync_interval == "always")
        nc = await connect(first.url, auth=first.auth)
        js = nc.jetstream()
        await js.add_stream(name="KEEP", subjects=["keep.>"])
        ack = await js.publish("keep.one", b"survives a restart")
        await nc.close()
        if how == "sigkill":
            os.kill(first.pid, signal.SIGKILL)
            assert await first.wait_exited() == -signal.SIGKILL
    finally:
        await first.stop()
    first_secrets = (first.password, first.system_auth)

    second = NatsServer(store, sync_interval=sync_interval)
    await second.start()
    try:
        # The store dir is the broker's identity: same URL and secrets (identity.json).
        assert ((second.password, second.system_auth), second.url) == (first_secrets, first.url)
        nc = await connect(second.url, auth=second.auth)
        try:
            msg = await nc.jetstream().get_msg("KEEP", ack.seq)
            assert msg.data == b"survives a restart" and msg.subject == "keep.one"
        finally:
            await nc.close()
    finally:
        await second.stop()
