"""``overwatch-lab loadtest``: ramp or hold simulated devices against a lab and name the bottleneck.

From Python::

    from overwatch_lab.loadtest import LoadPlan, run_loadtest, write_report
    result = await run_loadtest(LoadPlan.ramp([100, 250, 500], step_s=20))   # boots a lab
    result = await run_loadtest(LoadPlan.hold(1000, 600), lab=lab)           # a lab you hold
    paths = write_report(result, "loadtest-results")                         # JSON, PNG, HTML

Modules: ``plan`` (what runs), ``runner`` (steps, sampling), ``losscheck`` (the final check
by message_uid against libSQL), ``probes``
(latency, write-lock, CPU/RSS samplers), ``verdict`` (held or not, the bottleneck, the knee:
pure), ``report`` (JSON, PNG, offline HTML, text), ``command`` (the CLI arguments).
"""

from __future__ import annotations

from overwatch_lab.loadtest.plan import LoadPlan
from overwatch_lab.loadtest.report import summary, write_report
from overwatch_lab.loadtest.runner import run_loadtest

__all__ = ["LoadPlan", "run_loadtest", "summary", "write_report"]
