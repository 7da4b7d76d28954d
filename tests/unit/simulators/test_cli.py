"""``overwatch-lab sim``: argument handling, dry runs, and where it finds the broker."""

from __future__ import annotations

import argparse
import json

import pytest

from overwatch_lab.errors import ConfigError
from overwatch_lab.nats_auth import NatsAuth
from simulators.catalog import list_scenarios, load_scenario
from simulators.cli import build_parser, main, resolve_nats
from simulators.dry_run import telemetry_hash


def test_dry_run_prints_counts_and_the_content_hash(capsys):
    assert main(["small-isr-patrol", "--dry-run", "--duration", "5", "--seed", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    sc = load_scenario("small-isr-patrol").replace(seed=3)
    assert out["sha256"] == telemetry_hash(sc, 5.0)
    assert out["devices"] == sc.device_count and out["seed"] == 3
    assert out["messages"] == sum(out["by_type"].values())


def test_dry_run_start_changes_the_hash(capsys):
    main(["small-isr-patrol", "--dry-run", "--duration", "2", "--start", "2027-05-01T00:00:00Z"])
    a = json.loads(capsys.readouterr().out)
    main(["small-isr-patrol", "--dry-run", "--duration", "2", "--start", "1809129600"])
    b = json.loads(capsys.readouterr().out)
    assert a["start"] == b["start"] == "2027-05-01T00:00:00.000000Z"
    assert a["sha256"] == b["sha256"] != telemetry_hash(load_scenario("small-isr-patrol"), 2.0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["no-such-scenario", "--dry-run"], "unknown scenario 'no-such-scenario'"),
        (["small-isr-patrol", "--dry-run", "--duration", "-1"], "--duration must be > 0"),
        (["small-isr-patrol", "--speed", "-2", "--nats-url", "nats://127.0.0.1:1"], "--speed must be > 0"),
        (["small-isr-patrol", "--speed", "nan", "--nats-url", "nats://127.0.0.1:1"], "--speed must be > 0"),
        (["small-isr-patrol", "--dry-run", "--duration", "inf"], "--duration must be > 0"),
        (["small-isr-patrol", "--dry-run", "--start", "noon"], "is not an RFC 3339 time"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_list_names_every_scenario_with_its_line(capsys):
    assert main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(list_scenarios())
    assert all(
        description in line for line, description in zip(lines, list_scenarios().values(), strict=True)
    )


def test_no_scenario_exits_2_pointing_at_list(capsys):
    assert main(["--dry-run"]) == 2
    assert "give a SCENARIO" in capsys.readouterr().err


def test_no_running_lab_exits_2(tmp_path, capsys):
    assert main(["small-isr-patrol", "--data-dir", str(tmp_path)]) == 2
    assert "no running lab" in capsys.readouterr().err


def test_nats_comes_from_lab_json_or_the_flags(tmp_path, monkeypatch):
    monkeypatch.delenv("OVERWATCH_LAB_NATS_TOKEN", raising=False)
    (tmp_path / "lab.json").write_text(json.dumps({"nats_url": "nats://127.0.0.1:4999", "nats_token": "t0k"}))
    args = build_parser().parse_args(["x", "--data-dir", str(tmp_path)])
    assert resolve_nats(args) == ("nats://127.0.0.1:4999", NatsAuth(token="t0k"))
    args = build_parser().parse_args(["x", "--data-dir", str(tmp_path), "--token", "other"])
    assert resolve_nats(args) == ("nats://127.0.0.1:4999", NatsAuth(token="other"))
    monkeypatch.setenv("OVERWATCH_LAB_DATA_DIR", str(tmp_path))
    assert resolve_nats(build_parser().parse_args(["x"]))[0] == "nats://127.0.0.1:4999"
    assert resolve_nats(argparse.Namespace(nats_url="nats://h:1", token=None, data_dir=None)) == (
        "nats://h:1",
        NatsAuth(),
    )
    # a lab with users: its own identity from lab.json, or a device's connection file
    internal = {"user": "overwatch-lab", "password": "pw"}
    (tmp_path / "lab.json").write_text(json.dumps({"nats_url": "nats://127.0.0.1:4999", "nats_auth": internal}))
    assert resolve_nats(build_parser().parse_args(["x"]))[1] == NatsAuth(**internal)
    device = {"nkey_seed_file": "/d/credentials/e1.nk", "inbox_prefix": "_INBOX.device.e1"}
    (tmp_path / "e1.json").write_text(json.dumps({"role": "device", "auth": device}))
    args = build_parser().parse_args(["x", "--credentials", str(tmp_path / "e1.json")])
    assert resolve_nats(args)[1] == NatsAuth(**device)
    (tmp_path / "lab.json").write_text("{broken")
    with pytest.raises(ConfigError, match="cannot read"):
        resolve_nats(build_parser().parse_args(["x", "--data-dir", str(tmp_path)]))


def test_lab_is_a_deprecated_alias_of_data_dir(tmp_path, capsys):
    assert main(["small-isr-patrol", "--lab", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--lab is deprecated; use --data-dir" in err and f"{tmp_path}/lab.json does not exist" in err
    assert "--lab" not in build_parser().format_help()  # hidden
