"""What `import overwatch_lab` loads: never the simulators (they are reached lazily, when a fleet starts).

The import contracts in pyproject.toml keep every module but ``overwatch_lab.simulation`` from
importing ``simulators``; only a fresh interpreter can tell whether the Lab imports that part at
import time or when it is used.
"""

from __future__ import annotations

import json
import subprocess
import sys


def simulator_modules_after_import(module: str) -> list[str]:
    """Import ``module`` in a fresh interpreter; return the ``simulators`` modules it loaded."""
    probe = (
        f"import json, sys, {module}; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'simulators')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(out.stdout)


def test_import_overwatch_lab_loads_no_simulator() -> None:
    assert simulator_modules_after_import("overwatch_lab") == []
