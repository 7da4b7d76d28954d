"""A dashboard source that follows the lab running in a folder: the source of ``panel serve``.

:class:`AttachedLab` attaches to the lab running in a data directory (by default
:func:`default_data_dir`) and re-attaches when that lab restarts; while none runs, each read
raises ConfigError, which the DataStore shows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from overwatch_lab.config import default_data_dir as config_default_data_dir

if TYPE_CHECKING:
    from overwatch_lab.lab import Lab

log = logging.getLogger(__name__)


class AttachedLab:
    """A FleetSource that attaches to the lab running in ``data_dir`` and follows its restarts.

    Each call checks ``<data_dir>/lab.json``: while it is unchanged the same attached Lab is used;
    when it changed (the lab restarted) the old attachment is closed and a new one made; when it
    is gone (the lab stopped) the call raises ConfigError, which the DataStore shows. A lab.json
    left behind by an owner that died (killed, the machine rebooted) is recognised by its
    ``lab.lock`` naming a process that no longer runs: the attachment to the old broker is closed
    (it stops reconnecting to the old address) and the call raises ConfigError until a new lab
    writes its lab.json.
    Thread-safe: one instance serves every session of a ``panel serve`` process.
    """

    def __init__(
        self, data_dir: str | os.PathLike[str], *, identity: str = "observer", timeout: float = 5.0
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.identity = identity  # observer: reads only; operator: may also send commands
        self.timeout = timeout
        self._lock = threading.Lock()
        self._lab: Lab | None = None
        self._stamp: bytes | None = None
        self._frames = _AttachedFrames(self)

    def __repr__(self) -> str:
        return f"<AttachedLab data_dir={str(self.data_dir)!r}>"

    def lab(self) -> Lab:
        """Return the attached Lab, attaching (again) when ``lab.json`` changed."""
        from overwatch_lab.datadir_lock import LOCK_NAME, read_owner
        from overwatch_lab.errors import ConfigError
        from overwatch_lab.lab import LAB_JSON, Lab, LabState

        try:
            stamp: bytes | None = (self.data_dir / LAB_JSON).read_bytes()
        except FileNotFoundError:
            stamp = None
        owner = read_owner(self.data_dir / LOCK_NAME) if stamp is not None else None
        if owner is not None and not owner.alive():
            with self._lock:
                self._close_locked()
            raise ConfigError(
                f"the lab in {self.data_dir} is gone (its owner, pid {owner.pid}, no longer runs; "
                f"{LAB_JSON} is stale); waiting for a new lab there"
            )
        with self._lock:
            if self._lab is not None and stamp == self._stamp and self._lab.state is LabState.RUNNING:
                return self._lab
            self._close_locked()
            if stamp is None:
                raise ConfigError(
                    f"no running lab in {self.data_dir} ({LAB_JSON} not found); start one with `overwatch-lab up`"
                )
            self._lab = Lab.attach(self.data_dir, identity=self.identity, timeout=self.timeout)
            self._stamp = stamp
            log.info("dashboard attached to the lab in %s", self.data_dir)
            return self._lab

    def close(self) -> None:
        """Close the attachment (the lab itself keeps running)."""
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        lab, self._lab, self._stamp = self._lab, None, None
        if lab is not None:
            with contextlib.suppress(Exception):
                lab.down(timeout=self.timeout)

    @property
    def frames(self) -> _AttachedFrames:
        """The attached lab's ``frames`` (each read attaches first when needed)."""
        return self._frames

    def stats(self) -> dict[str, dict[str, Any]]:
        """See ``Lab.stats``."""
        return self.lab().stats()

    @property
    def commands(self) -> Any:
        """The attached lab's ``commands`` (sending needs ``identity="operator"``)."""
        return self.lab().commands


class _AttachedFrames:
    """``lab.frames`` of whatever lab :class:`AttachedLab` is attached to at the time of the read."""

    def __init__(self, source: AttachedLab) -> None:
        self._source = source

    def states(self) -> pd.DataFrame:
        """See ``Frames.states``."""
        return self._source.lab().frames.states()

    def telemetry(self, **filters: Any) -> pd.DataFrame:
        """See ``Frames.telemetry``."""
        return self._source.lab().frames.telemetry(**filters)

    def quarantine(self) -> pd.DataFrame:
        """See ``Frames.quarantine``."""
        return self._source.lab().frames.quarantine()


def default_data_dir() -> Path:
    """LabConfig's default data dir (``$OVERWATCH_LAB_DATA_DIR``, else ``./overwatch-data``), resolved."""
    return config_default_data_dir().expanduser().resolve()
