"""``overwatch-lab cot`` refuses bad values in one line, before it attaches to anything."""

from __future__ import annotations

import pytest

from overwatch_lab.cli import main


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--to", "ssl://127.0.0.1:8089"],
            "error: bad CoT destination 'ssl://127.0.0.1:8089': the scheme must be",
        ),
        (
            ["--to", "udp://127.0.0.1:4242", "--rate", "0"],
            "error: CoT rate_hz must be > 0 and finite, got 0.0",
        ),
        (
            ["--to", "udp://127.0.0.1:4242", "--affiliation", "org-a=enemy"],
            "error: unknown CoT affiliation 'enemy'",
        ),
        (
            ["--to", "udp://127.0.0.1:4242", "--default-affiliation", "x"],
            "error: unknown CoT affiliation 'x'",
        ),
    ],
)
def test_bad_values_are_one_line_and_exit_2(tmp_path, capsys, args, message):
    rc = main(["cot", "--data-dir", str(tmp_path / "no-lab-here"), *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip().splitlines() == [err.strip()] and err.startswith(message)


def test_no_running_lab_is_one_line(tmp_path, capsys):
    rc = main(["cot", "--data-dir", str(tmp_path), "--to", "udp://127.0.0.1:4242"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: no running lab at {tmp_path}")


def test_an_affiliation_must_be_org_equals_value(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["cot", "--to", "udp://127.0.0.1:4242", "--affiliation", "hostile"])
    assert exc.value.code == 2 and "must be ORG=AFFILIATION" in capsys.readouterr().err
