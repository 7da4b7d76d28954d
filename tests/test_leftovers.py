"""The end-of-run check (tests/leftovers.py): new folders are reported, old or foreign ones are not."""

from __future__ import annotations

import subprocess
import sys

from tests import leftovers


def test_a_new_folder_is_reported_and_an_old_or_foreign_one_is_not(tmp_path):
    old = tmp_path / "overwatch-old"
    old.mkdir()
    run = leftovers.Run("marker-of-this-test", (tmp_path,), frozenset({old}))
    assert leftovers.check(run) == []
    (tmp_path / "pytest-of-someone").mkdir()  # not ours to judge
    new = tmp_path / "overwatch-new"
    new.mkdir()
    assert leftovers.check(run) == [f"{new} was created during this run and is still there"]
    busy = tmp_path / "overwatch-busy"  # another run's lab, still working in its folder
    busy.mkdir()
    other = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], cwd=busy, stdin=subprocess.PIPE
    )
    try:
        assert leftovers.check(run) == [f"{new} was created during this run and is still there"]
    finally:
        other.stdin.close()
        other.wait(10)
    assert len(leftovers.check(run)) == 2  # once it is gone, the folder is a leftover like any other


def test_the_run_marker_reaches_children():
    marker = leftovers.start().marker
    out = subprocess.run(
        [sys.executable, "-c", f"import os; print(os.environ[{leftovers.MARKER!r}])"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == marker
