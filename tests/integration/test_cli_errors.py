"""``overwatch-lab up`` with input it cannot use: one line on stderr, exit 2, nothing left running."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest


def _up(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "overwatch_lab.cli", "up", "--fleet", "none", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _one_line(proc: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: data directory") or lines[0].startswith("error: dashboard port")
    assert all(text in lines[0] for text in expected), lines[0]
    assert "overwatch-lab is up" not in proc.stdout


@pytest.mark.parametrize(
    ("data_dir", "expected"),
    [
        ("FILE", "is not a directory"),
        ("/proc/overwatch-lab-test", "cannot be created: No such file or directory"),
        ("/sys", "is not writable: Permission denied"),  # sysfs refuses new files, even to root
    ],
)
def test_unusable_data_dir_is_one_line(tmp_path, data_dir, expected):
    if data_dir == "FILE":
        (tmp_path / "file").write_text("not a folder")
        data_dir = str(tmp_path / "file")
    _one_line(_up("--data-dir", data_dir, "--no-dashboard"), data_dir, expected)


def test_a_read_only_data_dir_is_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.geteuid() == 0:
            pytest.skip("root ignores file modes; /sys above covers 'not writable'")
        _one_line(_up("--data-dir", str(ro), "--no-dashboard"), "is not writable")
    finally:
        ro.chmod(0o700)


def test_a_busy_dashboard_port_is_one_line_before_anything_boots(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _up("--data-dir", str(tmp_path / "d"), "--dashboard-port", str(port))
    _one_line(proc, f"dashboard port {port} on 127.0.0.1 is in use", "--dashboard-port")
    assert not (tmp_path / "d" / "lab.json").exists() and not (tmp_path / "d" / "broker").exists()


def test_a_dashboard_beyond_loopback_without_users_is_one_line_before_anything_boots(tmp_path):
    """Checked, never bound: no address but 127.0.0.1 is ever listened on in the tests."""
    proc = _up("--data-dir", str(tmp_path / "d"), "--dashboard-address", "0.0.0.0")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "without authentication" in lines[0] and "--dashboard-users" in lines[0], lines
    assert not (tmp_path / "d" / "lab.json").exists()
    users = tmp_path / "users.json"
    users.write_text('{"ola": {"password": "short", "role": "operator"}}')
    proc = _up("--data-dir", str(tmp_path / "d"), "--dashboard-users", str(users))
    assert proc.returncode == 2 and "8 or more characters" in proc.stderr and "short" not in proc.stderr
