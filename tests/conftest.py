"""Shared fixtures, and the end-of-run check that a test run leaves nothing behind.

When the run ends, :mod:`tests.leftovers` looks for nats-server processes this run started and
new ``overwatch-*`` folders in the temporary directory; if it finds any, the run fails with a
report naming them (even when every test passed).
"""

from __future__ import annotations

import pytest

from tests import leftovers

pytest_plugins = ["tests.lab_fixtures", "tests.fault_fixtures", "tests.cluster"]

_RUN = pytest.StashKey[leftovers.Run]()


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controlling process only (not an xdist worker)
        config.stash[_RUN] = leftovers.start()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    run = session.config.stash.get(_RUN, None)
    if run is None:
        return
    problems = leftovers.check(run)
    if not problems:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [
        "this test run left things behind (a test or notebook that does not clean up, or a broker",
        "nobody stopped; if another run used the same machine meanwhile, check whether they are its):",
        *(f"  {p}" for p in problems),
    ]
    if reporter is not None:
        reporter.write_sep("!", "LEFTOVERS", red=True, bold=True)
        for line in lines:
            reporter.write_line(line, red=True)
    else:
        print("\n".join(lines))  # noqa: T201 - no terminal reporter (e.g. -p no:terminal)
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
