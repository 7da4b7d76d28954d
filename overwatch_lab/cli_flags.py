"""Command-line flags made from LabConfig fields, and the checks ``up`` runs before it boots.

A :class:`ConfigFlag` names a LabConfig field; its help text is the field's
``metadata["help"]`` and its default is LabConfig's (an unset flag stays None and LabConfig
applies its default, environment included), so neither is written twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from overwatch_lab.config import LabConfig
from overwatch_lab.errors import ConfigError


@dataclass(frozen=True, slots=True)
class ConfigFlag:
    """A command-line flag that sets one LabConfig field; its help and default are the field's."""

    flag: str
    field: str
    type: Callable[[str], Any] = str
    metavar: str | None = None


DATA_DIR_FLAG = ConfigFlag("--data-dir", "data_dir", Path, "DIR")
UP_CONFIG_FLAGS: tuple[ConfigFlag, ...] = (
    DATA_DIR_FLAG,
    ConfigFlag("--nats-url", "nats_url", str, "URL"),
    ConfigFlag("--nats-token", "nats_token", str, "TOKEN"),
    ConfigFlag("--nats-user", "nats_user", str, "USER"),
    ConfigFlag("--nats-password", "nats_password", str, "PASSWORD"),
    ConfigFlag("--nats-creds", "nats_creds", Path, "FILE"),
    ConfigFlag("--db-url", "db_url", str, "URL"),
    ConfigFlag("--stale-after", "stale_after_s", float, "S"),
    ConfigFlag("--history-max-age", "history_max_age_s", float, "S"),
    ConfigFlag("--sync-interval", "sync_interval", str, "POLICY"),
    ConfigFlag("--workers", "workers", int, "N"),
    ConfigFlag("--telemetry-partitions", "telemetry_partitions", int, "P"),
    ConfigFlag("--replicas", "replicas", int, "N"),
)


def config_field(name: str) -> dataclasses.Field[Any]:
    """The LabConfig field called ``name`` (its default and ``metadata["help"]``)."""
    return {f.name: f for f in dataclasses.fields(LabConfig)}[name]


def config_help(name: str) -> str:
    """The help text of a LabConfig field (its ``metadata["help"]``), with its plain default appended."""
    f = config_field(name)
    text = str(f.metadata["help"])
    if f.default is not dataclasses.MISSING and f.default is not None:
        text += f" (default: {f.default})"
    return text


def add_config_flags(p: argparse.ArgumentParser, flags: Sequence[ConfigFlag]) -> None:
    """Add ``flags`` to ``p``. Unset flags stay None, so LabConfig's own defaults (and environment) apply."""
    for flag in flags:
        p.add_argument(
            flag.flag, dest=flag.field, type=flag.type, metavar=flag.metavar, default=None,
            help=config_help(flag.field),
        )  # fmt: skip


def check_data_dir(path: Path) -> None:
    """Fail with one line unless ``path`` is (or can be made) a writable directory.

    Raises:
        ConfigError: it is a file, cannot be created (e.g. under /proc) or is not writable.
    """
    if path.exists() and not path.is_dir():
        raise ConfigError(f"data directory {path} is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"data directory {path} cannot be created: {exc.strerror}") from None
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(f"data directory {path} is not writable: {exc.strerror}") from None
