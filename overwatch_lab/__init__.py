"""overwatch-lab: a Python workbench for edge-device fleet data over NATS JetStream and libSQL.

Public names are listed in ``__all__``; everything else is internal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from overwatch_lab.config import LabConfig, StreamLimits
from overwatch_lab.errors import (
    BrokerError,
    BrokerExited,
    BrokerStartError,
    CommandError,
    CommandRejected,
    CommandTimeout,
    ConfigError,
    DatabaseError,
    DatabaseUnavailable,
    DataDirError,
    DataDirInUse,
    EnvelopeError,
    FrameError,
    LabStateError,
    OverwatchError,
    ProtocolError,
    ScenarioError,
    SubjectError,
    SyncError,
)
from overwatch_lab.protocol.commands import CommandStatus
from overwatch_lab.version import __version__

if TYPE_CHECKING:
    from overwatch_lab.commands.api import CommandHandle
    from overwatch_lab.commands.client import Commands
    from overwatch_lab.fleet import Fleet
    from overwatch_lab.frames import Frames
    from overwatch_lab.frames import open as open  # noqa: A004 - overwatch_lab.open(data_dir)
    from overwatch_lab.lab import Lab, LabState
    from overwatch_lab.notebook.entity import EntityState
    from overwatch_lab.simulation import Simulation

# The Lab and its parts pull in pandas, numpy and nats-py (~0.7 s): imported on first use, so
# that `overwatch-lab` arms its signal handlers before the heavy imports (a Ctrl-C that lands in
# a C extension's module init can be swallowed) and config/errors stay cheap to import.
_LAZY = {
    "CommandHandle": "overwatch_lab.commands.api",
    "Commands": "overwatch_lab.commands.client",
    "EntityState": "overwatch_lab.notebook.entity",
    "Fleet": "overwatch_lab.fleet",
    "Frames": "overwatch_lab.frames",
    "Lab": "overwatch_lab.lab",
    "LabState": "overwatch_lab.lab",
    "Simulation": "overwatch_lab.simulation",
    "open": "overwatch_lab.frames",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'overwatch_lab' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "BrokerError",
    "BrokerExited",
    "BrokerStartError",
    "CommandError",
    "CommandHandle",
    "CommandRejected",
    "CommandStatus",
    "CommandTimeout",
    "Commands",
    "ConfigError",
    "DataDirError",
    "DataDirInUse",
    "DatabaseError",
    "DatabaseUnavailable",
    "EntityState",
    "EnvelopeError",
    "Fleet",
    "FrameError",
    "Frames",
    "Lab",
    "LabConfig",
    "LabState",
    "LabStateError",
    "OverwatchError",
    "ProtocolError",
    "ScenarioError",
    "Simulation",
    "StreamLimits",
    "SubjectError",
    "SyncError",
    "__version__",
    "open",
]
