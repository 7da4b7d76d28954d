"""Re-provisioning: notice a stream, consumer or KV bucket of the lab's own that disappeared, and recreate it.

Someone deleting ``telemetry-processor`` on the broker (``nats consumer rm``), or the KV bucket,
used to stop ingest silently or make every synchronizer pass fail. :class:`Reprovisioner` runs
the lab's own idempotent provisioning (:func:`~overwatch_lab.broker.provision.provision` and
:func:`~overwatch_lab.broker.provision.provision_commands`) again:

- at once when a part of the lab reports a symptom (:meth:`Reprovisioner.kick`): a pull request
  answered "409 Consumer Deleted" or "503 no responders", a failed synchronizer pass;
- otherwise every ``broker_check_period_s``, and after every reconnect (a restarted broker).

An unchanged fabric costs a dozen JetStream API requests and logs nothing above DEBUG. Whatever
was recreated is logged as a WARNING naming it. A recreated consumer delivers its whole stream
again (deliver all): the workers are idempotent (history by ``message_uid``, events by id), so
replayed messages are not stored twice. A recreated stream or bucket starts empty.

If the server refuses to recreate something (it answered with an API error) on
``MAX_FAILED_CHECKS`` checks in a row, :meth:`Reprovisioner.run` raises the
:class:`~overwatch_lab.errors.ProvisionError` and the lab fails loudly. Checks are skipped while
the connection is down: reconnecting is the client's and the broker supervisor's business.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from overwatch_lab.broker.provision import ProvisionReport, provision, provision_commands
from overwatch_lab.config import LabConfig
from overwatch_lab.errors import ProvisionError

log = logging.getLogger(__name__)

MAX_FAILED_CHECKS = 3


@dataclass(slots=True)
class RepairStats:
    """What the re-provisioner did, for ``lab.stats()["provision"]``."""

    checks: int = 0
    recreated: int = 0  # objects recreated (cumulative)
    reset: int = 0  # objects whose config had been changed on the broker and was set back
    last_recreated: list[str] = field(default_factory=list)
    last_repair_at: float | None = None
    failed_checks: int = 0
    last_error: str | None = None

    def snapshot(self) -> dict[str, Any]:
        """Return a plain dict copy."""
        return asdict(self)


class Reprovisioner:
    """Keeps the lab's streams, consumers and KV buckets in place; see the module docstring.

    Args:
        nc: The lab's connection (checks are skipped while it is not connected).
        js: Its JetStream context.
        config: The lab's config (what to provision; ``broker_check_period_s``).
        on_repaired: Called with the report after anything was recreated or reset (the lab
            kicks its synchronizer to rebuild a recreated KV bucket at once).
    """

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        config: LabConfig,
        *,
        on_repaired: Callable[[ProvisionReport], None] | None = None,
    ) -> None:
        self.nc = nc
        self.js = js
        self.config = config
        self.on_repaired = on_repaired
        self.stats = RepairStats()
        self._kick = asyncio.Event()
        self._stopping = asyncio.Event()
        self._reasons: list[str] = []
        self._consecutive_failures = 0

    def kick(self, reason: str) -> None:
        """Check now (from the lab's loop): ``reason`` is the symptom seen, quoted in the log."""
        if len(self._reasons) < 8:
            self._reasons.append(reason)
        self._kick.set()

    def request_stop(self) -> None:
        """Ask :meth:`run` to return."""
        self._stopping.set()
        self._kick.set()

    async def run(self, ready: asyncio.Event) -> None:
        """Check on kicks, after reconnects and every ``broker_check_period_s`` until stopped.

        Raises:
            ProvisionError: the broker refused to recreate an object ``MAX_FAILED_CHECKS``
                times in a row.
        """
        ready.set()
        seen_reconnects = self.nc.stats["reconnects"]
        while not self._stopping.is_set():
            try:
                async with asyncio.timeout(self.config.broker_check_period_s):
                    await self._kick.wait()
            except TimeoutError:
                pass
            self._kick.clear()
            if self._stopping.is_set():
                return
            reasons, self._reasons = self._reasons, []
            if self.nc.stats["reconnects"] != seen_reconnects:
                seen_reconnects = self.nc.stats["reconnects"]
                reasons.append("reconnected to the broker")
            await self.check("; ".join(dict.fromkeys(reasons)) or "periodic check")

    async def check(self, reason: str = "check") -> ProvisionReport | None:
        """Provision again and report what had to be recreated; None if it could not run now.

        Raises:
            ProvisionError: as :meth:`run`.
        """
        if not self.nc.is_connected:
            return None
        st = self.stats
        st.checks += 1
        try:
            main = await provision(self.js, self.config)
            cmds = await provision_commands(self.js, self.config)
        except ProvisionError as exc:
            st.failed_checks += 1
            st.last_error = str(exc)
            cause = exc.__cause__
            refused = isinstance(cause, nats.js.errors.APIError) and not isinstance(
                cause, nats.js.errors.ServiceUnavailableError
            )
            if not refused:
                # No answer (timeout, no responders, the connection went away): not a refusal.
                log.warning("re-provisioning check did not complete (noticed: %s): %s", reason, exc)
                return None
            self._consecutive_failures += 1
            log.error(
                "re-provisioning failed (%d of %d in a row; noticed: %s): %s",
                self._consecutive_failures,
                MAX_FAILED_CHECKS,
                reason,
                exc,
            )
            if self._consecutive_failures >= MAX_FAILED_CHECKS:
                raise
            return None
        self._consecutive_failures = 0
        report = ProvisionReport(
            main.created + cmds.created,
            main.updated + cmds.updated,
            main.unchanged + cmds.unchanged,
            main.elapsed_s + cmds.elapsed_s,
        )
        if report.changed:
            self._report(report, reason)
        return report

    def _report(self, report: ProvisionReport, reason: str) -> None:
        st = self.stats
        st.recreated += len(report.created)
        st.reset += len(report.updated)
        st.last_recreated = list(report.created)
        st.last_repair_at = time.time()
        if report.created:
            notes = []
            if any("/" in name for name in report.created):
                notes.append(
                    "a recreated consumer delivers its whole stream again (deliver all); the workers "
                    "are idempotent by message_uid / event id, so nothing is stored twice"
                )
            if any(not name.startswith("kv:") and "/" not in name for name in report.created):
                notes.append("a recreated stream starts empty")
            if any(name.startswith("kv:") for name in report.created):
                notes.append("a recreated KV bucket starts empty; the synchronizer rebuilds entity documents")
            log.warning(
                "re-provisioned %s: it had disappeared from the broker (noticed: %s); %s",
                ", ".join(report.created),
                reason,
                "; ".join(notes),
            )
        if report.updated:
            log.warning(
                "reset %s to the lab's configuration: it had been changed on the broker (noticed: %s)",
                ", ".join(report.updated),
                reason,
            )
        if self.on_repaired is not None:
            self.on_repaired(report)
