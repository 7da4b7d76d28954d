"""overwatch-lab: a Python workbench for edge-device fleet data over NATS JetStream and libSQL.

Public names are listed in ``__all__``; everything else is internal.
"""

from __future__ import annotations

__version__ = "0.1.0"

from overwatch_lab.commands.api import CommandHandle  # noqa: E402
from overwatch_lab.config import LabConfig, StreamLimits  # noqa: E402
from overwatch_lab.errors import (  # noqa: E402
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
from overwatch_lab.lab import Lab, LabState  # noqa: E402
from overwatch_lab.protocol.commands import CommandStatus  # noqa: E402

__all__ = [
    "BrokerError",
    "BrokerExited",
    "BrokerStartError",
    "CommandError",
    "CommandHandle",
    "CommandRejected",
    "CommandStatus",
    "CommandTimeout",
    "ConfigError",
    "DataDirInUse",
    "DatabaseError",
    "DatabaseUnavailable",
    "EnvelopeError",
    "Lab",
    "LabConfig",
    "LabState",
    "LabStateError",
    "OverwatchError",
    "ProtocolError",
    "ScenarioError",
    "StreamLimits",
    "SubjectError",
    "SyncError",
    "__version__",
]
