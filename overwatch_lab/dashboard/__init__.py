"""Panel dashboards over a lab: a fleet table, a map, telemetry plots and fabric health.

Importing this package is cheap; Panel (about 1.4 s to import) loads on first use of a name::

    from overwatch_lab.dashboard import build_app, serve
    build_app(lab)                 # notebook: displays inline
    server = serve(lab)            # in-process server: server.url, server.stop()

Offline notebooks need Panel's JavaScript inline, in a cell of its own before the first
dashboard: ``import panel as pn; pn.extension("tabulator", inline=True)``.
``panel serve overwatch_lab/dashboard/app.py`` serves the lab in ``$OVERWATCH_LAB_DATA_DIR``.

Parts: :class:`DataStore` (reads the lab, holds the frames), :class:`FleetTable`,
:class:`FleetMap`, :class:`TelemetryPanel`, :class:`WorkerStats`, :class:`CommandBox` (sends,
for an operator), and :class:`Dashboard` (all of them together). :class:`Users` (``access``):
who may log in, with which role; beyond loopback the server refuses to start without them.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "AttachedLab": "attached",
    "CommandBox": "command_box",
    "Users": "access",
    "Dashboard": "app",
    "DashboardServer": "server",
    "build_app": "app",
    "serve": "server",
    "DataStore": "datastore",
    "FleetSource": "datastore",
    "fleet_frame": "frames",
    "FleetTable": "fleet",
    "FleetMap": "map",
    "TelemetryPanel": "telemetry",
    "WorkerStats": "stats",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
