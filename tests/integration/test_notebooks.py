"""Notebooks run headless, top to bottom, against a real lab, and leave no folder behind."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path):
    tmpdir = tmp_path / "tmp"  # the kernel's temporary folder: what the notebook leaves shows here
    tmpdir.mkdir()
    nb = nbformat.read(path, as_version=4)
    first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "Lab.up(" in c.source)
    nb.cells.insert(first + 1, nbformat.v4.new_code_cell("print('data dir:', lab.config.data_dir)"))
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute(env={**os.environ, "TMPDIR": str(tmpdir)})
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"
    ]
    assert not errors
    last = nb.cells[-1]
    assert "STOPPED" in "".join(o.get("data", {}).get("text/plain", "") for o in last.outputs)
    (probe,) = nb.cells[first + 1].outputs
    assert probe.text.startswith(f"data dir: {tmpdir}/overwatch-")  # the lab lived in the kernel's tmp
    assert not list(tmpdir.glob("overwatch-*")), "the notebook left its lab's folder behind"
