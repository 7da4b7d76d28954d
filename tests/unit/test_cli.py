"""``overwatch-lab`` argument handling: flags from LabConfig, checks before boot, status text (no lab)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from overwatch_lab import LabConfig
from overwatch_lab.cli import (
    _data_dir,
    _lab_config,
    build_parser,
    check_dashboard_port,
    load_fleet,
    main,
    no_lab_note,
)
from overwatch_lab.cli_flags import UP_CONFIG_FLAGS, check_data_dir, config_help
from overwatch_lab.cli_status import format_status, lab_status
from overwatch_lab.errors import ConfigError, ScenarioError
from simulators.catalog import list_scenarios


def _actions(parser: argparse.ArgumentParser, path: str = "overwatch-lab"):
    """Every (command path, action) of ``parser`` and its subcommands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{path} {name}")
        else:
            yield path, action


def test_every_flag_has_a_help_text():
    missing = [
        f"{path} {action.option_strings or action.dest}"
        for path, action in _actions(build_parser())
        if not action.help
    ]
    assert missing == []


def test_config_flags_take_help_and_default_from_labconfig():
    fields = {f.name: f for f in dataclasses.fields(LabConfig)}
    up = build_parser().parse_args(["up"])
    for flag in UP_CONFIG_FLAGS:
        assert getattr(up, flag.field) is None  # unset: LabConfig's default applies
        assert config_help(flag.field).startswith(fields[flag.field].metadata["help"])
    assert "(default: 5.0)" in config_help("stale_after_s")  # the field's value, not a copy
    assert _lab_config(up) == LabConfig()
    given = build_parser().parse_args(["up", "--stale-after", "3", "--sync-interval", "always"])
    assert (_lab_config(given).stale_after_s, _lab_config(given).sync_interval) == (3.0, "always")


@pytest.mark.parametrize(
    "command", [["up"], ["status"], ["dashboard"], ["command", "e", "rtl"], ["sim", "x"]]
)
def test_every_command_uses_the_data_dir_of_the_environment(command, tmp_path, monkeypatch):
    monkeypatch.setenv("OVERWATCH_LAB_DATA_DIR", str(tmp_path))
    args = build_parser().parse_args(command)
    assert args.data_dir is None
    expected = LabConfig().data_dir
    assert expected == tmp_path.resolve()
    if command == ["up"]:
        assert _lab_config(args).data_dir == expected
    elif command == ["sim", "x"]:
        from simulators.cli import resolve_nats

        with pytest.raises(ConfigError, match=str(tmp_path / "lab.json")):
            resolve_nats(args)
    else:
        assert _data_dir(args).resolve() == expected


def test_a_bad_config_flag_names_the_flag():
    with pytest.raises(ConfigError, match=r"stale_after_s must be > 0.*\(from --stale-after\)"):
        _lab_config(build_parser().parse_args(["up", "--stale-after", "-1"]))
    with pytest.raises(ConfigError, match=r"stale_after_s must be a finite number.*\(from --stale-after\)"):
        _lab_config(build_parser().parse_args(["up", "--stale-after", "nan"]))


def test_unknown_fleet_lists_the_known_ones():
    with pytest.raises(ScenarioError) as err:
        load_fleet("nosuch", None)
    assert all(name in str(err.value) for name in list_scenarios())
    assert load_fleet("none", None) is None


def test_up_flies_the_fleet_until_stopped_unless_given_a_duration():
    assert load_fleet("small-isr-patrol", None).duration_s is None  # the scenario says 600 s
    assert load_fleet("small_isr_patrol", 30.0).duration_s == 30.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["up", "--speed", "-1"], "--speed must be > 0"),
        (["up", "--speed", "0"], "--speed must be > 0"),
        (["up", "--speed", "nan"], "--speed must be > 0 and finite"),  # booted, then the fleet crashed
        (["up", "--speed", "inf"], "--speed must be > 0 and finite"),
        (["up", "--duration", "nan"], "--duration must be > 0 and finite"),
        (["up", "--duration", "0"], "--duration must be > 0"),
        (["up", "--fleet", "nosuch"], "unknown fleet 'nosuch'; known fleets: small-isr-patrol"),
        (["up", "--dashboard-port", "70000"], "dashboard port must be in 0..65535"),
    ],
)
def test_up_rejects_bad_values_in_one_line_before_booting(argv, message, tmp_path, capsys):
    data_dir = tmp_path / "d"
    assert main([*argv, "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not data_dir.exists()  # nothing made, nothing booted


def test_data_dir_checks(tmp_path):
    check_data_dir(tmp_path / "new" / "deeper")  # made
    assert (tmp_path / "new" / "deeper").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is not a directory"):
        check_data_dir(tmp_path / "file")
    with pytest.raises(ConfigError, match="cannot be created"):
        check_data_dir(Path("/proc/overwatch-lab-test"))
    with pytest.raises(ConfigError, match="is not writable"):
        check_data_dir(Path("/sys"))  # sysfs: read-only even for root


def test_dashboard_notes_a_data_dir_without_a_lab(tmp_path):
    note = no_lab_note(tmp_path / "typo")
    assert note is not None and "no running lab in" in note and "typo" in note and "\n" not in note
    (tmp_path / "lab.json").write_text("{}")
    assert no_lab_note(tmp_path) is None


def test_a_busy_dashboard_port_names_the_flags():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(
            ConfigError, match=f"port {port} on 127.0.0.1 is in use; pick another with --dashboard-port"
        ):
            check_dashboard_port(argparse.Namespace(dashboard_address="127.0.0.1", dashboard_port=port))


def test_help_action_prints_the_parameters(capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["command", "--help-action", "goto"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("goto: MAVLink relay") and "lat" in out and "required" in out
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["command", "--help-action", "fly"])
    assert done.value.code == 2 and "unknown action 'fly'" in capsys.readouterr().err


def test_command_rejects_an_unknown_action(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["command", "uav-1", "fly"])
    assert "invalid choice: 'fly'" in capsys.readouterr().err


INFO = {
    "nats_url": "nats://127.0.0.1:4222", "nats_token": "s3cret", "db_url": "/d/overwatch.db",
    "monitor_url": "http://127.0.0.1:8222", "pid": 4242, "data_dir": "/d", "embedded": True,
    "version": "0.1.0", "started_at": "2026-01-01T00:00:00Z",
}  # fmt: skip
STATS = {
    "telemetry-worker": {"handled": 10, "acked": 9, "quarantined": 1, "retried": 0, "holding": False,
                         "held": 0, "lag": 3, "last_error": "entity 'x' not registered"},
    "entity-worker": {"handled": 2, "acked": 2, "quarantined": 0, "retried": 0, "holding": True,
                      "held": 2, "lag": 0, "last_error": None},
    "streams": {"CONSTELLATION_QUARANTINE": {"messages": 5, "discarded": 0, "dropped": 0, "lost": 0,
                                             "lag": None},
                "CONSTELLATION_TELEMETRY": {"messages": 9, "discarded": 7, "dropped": 0, "lost": 7,
                                            "lag": 4000, "lag_rate_per_s": 123.4}},
    "broker": {"state": "running", "pid": 4343, "restarts": 2, "failed_attempts": 0},
}  # fmt: skip


def test_status_reports_the_labs_own_info_state_and_counters():
    states = pd.DataFrame({"entity_id": ["a", "b"], "is_live": [True, False]})
    report = lab_status(INFO, STATS, states)
    assert report["lab"]["pid"] == 4242 and report["lab"]["started_at"] == INFO["started_at"]
    assert "nats_token" not in report["lab"]
    assert report["lab"]["state"] == "holding (entity-worker)"
    assert report["entities"] == {"total": 2, "live": 1}
    assert report["workers"]["telemetry-worker"]["quarantined"] == 1
    assert report["streams"]["CONSTELLATION_QUARANTINE"]["messages"] == 5
    assert report["broker"]["restarts"] == 2
    text = format_status(report)
    assert "s3cret" not in text and "pid          4242" in text and "2 restarts" in text
    assert "entity 'x' not registered" in text
    assert "lag_rate_per_s" in text and "+123" in text  # the lag's trend, not only the lag
    assert lab_status(INFO, {}, pd.DataFrame())["lab"]["state"].startswith("starting")


def test_a_closed_stdout_ends_without_a_traceback():  # e.g. `overwatch-lab status --json | head -1`
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails with EPIPE
    try:
        done = subprocess.run(
            [sys.executable, "-m", "overwatch_lab.cli", "command", "--help-action", "goto"],
            stdout=write_end, stderr=subprocess.PIPE, timeout=30, check=False,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert done.returncode == 1
    assert b"Traceback" not in done.stderr and b"BrokenPipeError" not in done.stderr, done.stderr
