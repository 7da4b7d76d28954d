"""Dashboard access: users files, roles, loopback, the refusal to serve beyond loopback unauthenticated."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from overwatch_lab.dashboard.access import (
    OPERATOR,
    VIEWER,
    Users,
    can_command,
    check_exposure,
    cookie_secret,
    is_loopback,
)
from overwatch_lab.dashboard.attached import AttachedLab
from overwatch_lab.dashboard.command_box import CommandBox
from overwatch_lab.dashboard.datastore import DataStore
from overwatch_lab.dashboard.server import serve
from overwatch_lab.errors import ConfigError

SECRET = "s3cret-password-never-shown"


@pytest.mark.parametrize(
    ("address", "loopback"),
    [("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("", False), ("::", False), ("192.168.1.5", False), ("dash.example", False)],
)  # fmt: skip
def test_is_loopback(address, loopback):
    assert is_loopback(address) is loopback


def test_users_file_roles_and_defaults(tmp_path):
    path = tmp_path / "users.json"
    path.write_text(json.dumps({"ola": {"password": SECRET, "role": "operator"}, "vic": SECRET}))
    users = Users.load(path)
    assert users.role_of("ola") == OPERATOR and users.role_of("vic") == VIEWER  # a bare password: viewer
    assert users.role_of("nobody") is None and users.role_of(None) is None
    assert (
        can_command(users.role_of("ola")) and not can_command(users.role_of("vic")) and not can_command(None)
    )
    assert SECRET not in repr(users)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[]", "expected a JSON object"),
        ("{}", "expected a JSON object"),
        ('{"a": {"password": "short"}}', "8 or more characters"),
        (json.dumps({"a": {"password": SECRET, "role": "admin"}}), "role must be one of"),
        ('{"a": 5}', "expected a password or an object"),
        (json.dumps({"a": SECRET})[:-1] + ",", "is not JSON"),
    ],
)
def test_bad_users_files_are_refused_without_quoting_a_password(tmp_path, content, message):
    path = tmp_path / "users.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        Users.load(path)
    assert SECRET not in str(info.value)


def test_a_missing_users_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        Users.load(tmp_path / "absent.json")


def test_serving_beyond_loopback_needs_users(source):
    users = Users.from_mapping({"ola": {"password": SECRET, "role": "operator"}})
    assert check_exposure("127.0.0.1", None) is False  # loopback: no login
    assert check_exposure("127.0.0.1", users) is True
    with pytest.raises(ConfigError, match="without authentication"):
        check_exposure("0.0.0.0", None)
    with pytest.raises(ConfigError, match="without authentication"):
        check_exposure("127.0.0.1", None, beyond_loopback=True)
    with pytest.raises(ConfigError, match="without authentication"):
        serve(source, address="0.0.0.0")  # refused before binding anything
    with pytest.raises(ConfigError, match="16 or more"):
        cookie_secret("short")
    assert len(cookie_secret()) >= 32 and cookie_secret() != cookie_secret()


class _Commands:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send(self, entity_id: str, action: str, **_: object) -> object:
        self.sent.append((entity_id, action))
        return type("Handle", (), {"command_id": "cmd-1"})()


def test_a_viewer_cannot_send_and_an_operator_can(source):
    source.commands = _Commands()
    store = DataStore(source=source)
    store.refresh()
    store.selected = "uav-1"
    viewer = CommandBox(data_store=store, role=VIEWER, user="vic")
    assert viewer.send.disabled and "cannot command" in viewer.status.object
    viewer._on_send()  # as if the click arrived anyway
    assert viewer.refused == 1 and source.commands.sent == []

    operator = CommandBox(data_store=store, role=OPERATOR, user="ola")
    assert not operator.send.disabled
    operator.action.value = "rtl"
    thread_count = operator.sent
    operator._on_send()
    from tests.polling import wait_until

    wait_until(lambda: operator.sent == thread_count + 1, timeout=5, what="the command sent")
    assert source.commands.sent == [("uav-1", "rtl")]
    wait_until(lambda: "rtl sent to uav-1" in operator.status.object, timeout=5, what="the outcome shown")


def test_attached_lab_gives_up_on_a_lab_whose_owner_died(tmp_path):
    """A lab.json left by a killed owner: no attach to the old broker, a clear error instead."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "lab.json").write_text(json.dumps({"nats_url": "nats://127.0.0.1:9", "pid": dead.pid}))
    (tmp_path / "lab.lock").write_text(json.dumps({"pid": dead.pid, "proc_start": None}))
    source = AttachedLab(tmp_path, timeout=1.0)
    with pytest.raises(ConfigError, match="is gone"):
        source.frames.states()


@pytest.mark.parametrize(
    ("client", "expected"),
    [("127.0.0.1", ("local", OPERATOR)), ("::1", ("local", OPERATOR)), ("192.0.2.7", (None, None))],
)
def test_panel_serve_without_auth_serves_only_this_machine(client, expected):
    """``served_identity`` judges the client's address (a test double of Bokeh's request)."""
    from types import SimpleNamespace

    from bokeh.document import Document
    from panel.io.state import set_curdoc

    from overwatch_lab.dashboard.app import served_identity

    doc = Document()
    context = SimpleNamespace(request=SimpleNamespace(remote_ip=client))
    doc._session_context = lambda: context  # what Bokeh sets for a served session
    with set_curdoc(doc):
        assert served_identity() == expected
