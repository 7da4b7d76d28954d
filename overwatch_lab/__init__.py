"""overwatch-lab: a Python workbench for edge-device fleet data over NATS JetStream and libSQL.

Public names are listed in ``__all__``; everything else is internal.
"""

from __future__ import annotations

from overwatch_lab.commands.api import CommandHandle
from overwatch_lab.commands.client import Commands
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
    DataDirInUse,
    EnvelopeError,
    LabStateError,
    OverwatchError,
    ProtocolError,
    ScenarioError,
    SubjectError,
    SyncError,
)
from overwatch_lab.fleet import Fleet
from overwatch_lab.frames import Frames
from overwatch_lab.lab import Lab, LabState
from overwatch_lab.protocol.commands import CommandStatus
from overwatch_lab.simulation import Simulation
from overwatch_lab.version import __version__

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
    "DataDirInUse",
    "DatabaseError",
    "DatabaseUnavailable",
    "EnvelopeError",
    "Fleet",
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
]
