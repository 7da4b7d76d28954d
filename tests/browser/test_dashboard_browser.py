"""The served dashboard in a real headless chromium: rows appear, update live, nothing leaves 127.0.0.1.

Every page here also records the browser's console errors and uncaught page errors, and the
server's log (warnings and up, tracebacks included): a page load, a row click and closing the
tab must leave both empty. Screenshots are kept in the test's tmp_path (pytest keeps the last
three runs' folders under its basetemp).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.builders import FLEET, fly, register_fleet
from tests.polling import wait_until

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOCAL_PREFIXES = ("http://127.0.0.1:", "ws://127.0.0.1:", "blob:http://127.0.0.1:", "data:")
APP = Path(__file__).resolve().parents[2] / "overwatch_lab" / "dashboard" / "app.py"


class ServerLog(logging.Handler):
    """Every record of WARNING and up logged in this process (the in-process server's thread included)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def problems(self) -> list[str]:
        """The records that are errors or tracebacks, formatted."""
        formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
        return [
            formatter.format(r)
            for r in self.records
            if r.levelno >= logging.ERROR or r.exc_info or "Traceback" in r.getMessage()
        ]

    def text(self) -> str:
        """Everything recorded, formatted with tracebacks (to look for leaked secrets)."""
        formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
        return "\n".join(formatter.format(r) for r in self.records)


@pytest.fixture
def server_log():
    """Records the process's warnings and errors while the test runs."""
    handler = ServerLog()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


def watch_console(page) -> list[str]:
    """Collect the page's console errors and uncaught exceptions (and Bokeh's warnings) into a list."""
    seen: list[str] = []

    def on_console(message) -> None:
        if message.type == "error" or (message.type == "warning" and "bokeh" in message.text):
            seen.append(f"console {message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: seen.append(f"page error: {exc}"))
    return seen


@pytest.fixture
def browser():
    """A headless Debian chromium driven by Playwright (skipped when either is missing)."""
    executable = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if executable is None:
        pytest.skip(f"no chromium at {CHROMIUM} or on PATH (apt install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (PyPI) is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def test_served_dashboard_shows_the_fleet_live_and_offline(lab, browser, tmp_path, server_log):
    from overwatch_lab.dashboard import serve

    register_fleet(lab)
    fly(lab)
    # A closed tab's session is destroyed after 4 s (Bokeh's default is 15 s) so the test can
    # see its refresh stop. Not much less: a session whose page has not opened its websocket
    # within that time (a loaded machine) is discarded, and the websocket then gets a new
    # session built without the page, whose stylesheets point at Panel's CDN.
    server = serve(
        lab,
        period_s=0.5,
        unused_session_lifetime_milliseconds=4000,
        check_unused_sessions_milliseconds=500,
    )
    requests: list[str] = []
    try:
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        console = watch_console(page)
        page.on("request", lambda r: requests.append(r.url))
        page.goto(server.url)
        page.wait_for_selector(".tabulator-row", timeout=40_000)  # a loaded machine renders slowly
        table = page.locator(".tabulator").first
        for _, entity_id, _, _ in FLEET:
            page.wait_for_selector(f".tabulator-row >> text={entity_id}", timeout=10_000)
        assert table.locator(".tabulator-row").count() == len(FLEET)

        # Live: a new entity and a mode change reach the open page through the periodic refresh.
        lab.register_entity("org-b", "usv-9", "surface_vessel_usv", name="Skiff")
        lab.publish_telemetry("org-b", "usv-9", "HEARTBEAT", {"custom_mode": 6, "base_mode": 1, "type": 10})
        page.wait_for_selector(".tabulator-row >> text=usv-9", timeout=10_000)
        page.wait_for_selector(".tabulator-row >> text=RTL", timeout=10_000)
        assert table.locator(".tabulator-row").count() == len(FLEET) + 1

        # The map and the telemetry plots rendered (Bokeh canvases), the overview counted the fleet.
        assert page.locator("canvas").count() >= 4
        page.wait_for_selector(f"text=Entities >> xpath=.. >> text={len(FLEET) + 1}", timeout=10_000)

        dashboards = server.dashboards
        assert len(dashboards) == 1 and dashboards[0].data_store.running
        assert dashboards[0].data_store.refreshes >= 2 and dashboards[0].data_store.errors == 0

        # A row click selects the entity everywhere, with no server traceback (the map's trail
        # used to be set outside the document lock).
        page.locator(".tabulator-row", has_text="ugv-1").first.click()
        wait_until(lambda: dashboards[0].data_store.selected == "ugv-1", timeout=10, what="ugv-1 selected")
        wait_until(
            lambda: len(dashboards[0].fleet_map.trail.data["x"]) == 3, timeout=10, what="ugv-1's trail drawn"
        )
        page.wait_for_selector(".tabulator-row.tabulator-selected >> text=ugv-1", timeout=10_000)

        # At 1,600 px every column fits: the last one's header is inside the table's box.
        box = table.bounding_box()
        last = page.locator(".tabulator-col", has_text="Seen (s ago)").first.bounding_box()
        assert box is not None and last is not None
        assert last["x"] + last["width"] <= box["x"] + box["width"] + 1, (last, box)

        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 20_000
        page.close()

        outside = [u for u in requests if not u.startswith(LOCAL_PREFIXES)]
        assert requests and not outside, f"requests outside 127.0.0.1: {outside}"

        # Closing the tab destroys its session, and that stops its periodic refresh.
        wait_until(
            lambda: not any(d.data_store.running for d in dashboards),
            timeout=10,
            what="session refresh stopped",
        )
    finally:
        started = time.monotonic()
        server.stop()
    assert not server.running
    assert time.monotonic() - started < 5
    assert not console, console
    assert not server_log.problems(), "\n".join(server_log.problems())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_panel_serve_attaches_to_the_lab_in_its_data_dir(lab, browser, tmp_path):
    """``panel serve overwatch_lab/dashboard/app.py`` in another process finds the lab by folder."""
    register_fleet(lab)
    fly(lab, steps=1)
    port = _free_port()
    env = dict(os.environ, OVERWATCH_LAB_DATA_DIR=str(lab.config.data_dir))
    cmd = [sys.executable, "-m", "panel", "serve", str(APP), "--address", "127.0.0.1", "--port", str(port),
           "--allow-websocket-origin", f"127.0.0.1:{port}"]  # fmt: skip
    log_path = tmp_path / "panel-serve.log"
    log = log_path.open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/app"
    try:

        def up() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    return response.status == 200
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                assert proc.poll() is None, log_path.read_text()
                return False

        wait_until(up, timeout=30, what="panel serve answering")
        page = browser.new_page()
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(url)
        for _, entity_id, _, _ in FLEET:
            page.wait_for_selector(f".tabulator-row >> text={entity_id}", timeout=20_000)
        assert not [u for u in requests if not u.startswith(LOCAL_PREFIXES)]
        page.close()
        # The first Ctrl-C stops it (with an attached lab and a session's refresh running).
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0, log_path.read_text()
        assert "Traceback" not in log_path.read_text(), log_path.read_text()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


VIEWER_PASSWORD = "viewer-pass-7f3a"
OPERATOR_PASSWORD = "operator-pass-91c2"


def _log_in(browser, url: str, user: str, password: str, requests: list[str]):
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.on("request", lambda r: requests.append(r.url))
    console = watch_console(page)
    page.goto(url)
    page.wait_for_selector("#login-form", timeout=20_000)  # no dashboard before a login
    assert page.locator(".tabulator-row").count() == 0
    page.fill("#username", user)
    page.fill("#password", password)
    page.click("#login-submit")
    page.wait_for_selector(".tabulator-row", timeout=40_000)
    return page, console


def test_beyond_loopback_a_login_is_required_and_a_viewer_cannot_command(lab, browser, tmp_path, server_log):
    """Bound to 127.0.0.1 with the beyond-loopback mode forced (no other address is ever used)."""
    from overwatch_lab.dashboard import serve
    from overwatch_lab.dashboard.access import Users
    from overwatch_lab.errors import ConfigError

    register_fleet(lab)
    fly(lab, steps=1)
    with pytest.raises(ConfigError, match="without authentication"):
        serve(lab, beyond_loopback=True)  # refused before anything listens

    users_file = tmp_path / "users.json"
    users = {
        "vic": {"password": VIEWER_PASSWORD, "role": "viewer"},
        "ola": {"password": OPERATOR_PASSWORD, "role": "operator"},
    }
    users_file.write_text(json.dumps(users))
    server = serve(lab, users=Users.load(users_file), beyond_loopback=True, period_s=0.5)
    requests: list[str] = []
    try:
        page, console = _log_in(browser, server.url, "vic", VIEWER_PASSWORD, requests)
        viewer = next(d for d in server.dashboards if d.user == "vic")
        assert viewer.role == "viewer"
        page.wait_for_selector("text=viewer: sees, cannot command", timeout=10_000)
        assert page.locator(".ow-send button").first.is_disabled()
        assert VIEWER_PASSWORD not in page.content()
        page.screenshot(path=str(tmp_path / "viewer.png"), full_page=True)
        # A send that reaches the server anyway (a crafted event) is refused there.
        viewer.data_store.selected = "uav-1"
        viewer.command_box._on_send()
        assert viewer.command_box.refused == 1 and viewer.command_box.sent == 0
        page.close()

        page, console2 = _log_in(browser, server.url, "ola", OPERATOR_PASSWORD, requests)
        operator = next(d for d in server.dashboards if d.user == "ola")
        assert operator.role == "operator"
        page.locator(".tabulator-row", has_text="uav-2").first.click()
        wait_until(lambda: operator.data_store.selected == "uav-2", timeout=10, what="uav-2 selected")
        send = page.locator(".ow-send button").first
        assert send.is_enabled()
        send.click()
        page.wait_for_selector("text=hold sent to uav-2", timeout=15_000)
        assert operator.command_box.sent == 1
        page.screenshot(path=str(tmp_path / "operator.png"), full_page=True)
        page.close()
    finally:
        server.stop()
    outside = [u for u in requests if not u.startswith(LOCAL_PREFIXES)]
    assert not outside, f"requests outside 127.0.0.1: {outside}"
    assert not console and not console2, console + console2
    assert not server_log.problems(), "\n".join(server_log.problems())
    logged = server_log.text()
    assert VIEWER_PASSWORD not in logged and OPERATOR_PASSWORD not in logged
