"""A fleet's connections to the lab: one for everything, or one per organisation (each a relay).

A simulated fleet is held to what real devices may do: when the lab issues it credentials
(``lab.fleet``: one *relay* identity per organisation, ``overwatch_lab/broker/permissions.py``),
each organisation's devices speak on a connection of that organisation's relay, which may
publish only their telemetry, events, acks and the organisation's entity lifecycle, and
subscribe only to their command subjects and its own inbox. :class:`Uplink` routes every
emission to the connection of its device's organisation.

Without scoped credentials (a bare NATS server, an outside deployment's token, the simulator
benchmark) one connection carries everything (:meth:`Uplink.single`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import nats.errors

from overwatch_lab.errors import ScenarioError

if TYPE_CHECKING:
    from nats.aio.client import Client

log = logging.getLogger(__name__)


class Uplink:
    """The connections a fleet publishes on (see the module docstring).

    Args:
        default: the connection for every organisation without one of its own (None: none).
        by_org: a connection per organisation (each with that organisation's relay identity).
    """

    def __init__(self, default: Client | None = None, by_org: Mapping[str, Client] | None = None) -> None:
        self.default = default
        self.by_org = dict(by_org or {})
        self._by_entity: dict[str, Client] = {}
        if default is None and not self.by_org:
            raise ScenarioError("an uplink needs at least one connection")

    @classmethod
    def single(cls, nc: Client) -> Uplink:
        """One connection for every organisation (full rights, or a bare NATS server)."""
        return cls(nc)

    def __repr__(self) -> str:
        return f"<Uplink default={self.default is not None} orgs={sorted(self.by_org)}>"

    @property
    def scoped(self) -> bool:
        """True when the organisations have connections of their own (relay identities).

        A scoped fleet sends only what a device may: no organisation events and no KV reads
        (the lab registered the organisations before it issued the relays).
        """
        return bool(self.by_org)

    @property
    def connections(self) -> list[Client]:
        """Every distinct connection (the default first)."""
        out = [self.default] if self.default is not None else []
        out += [nc for nc in self.by_org.values() if all(nc is not o for o in out)]
        return out

    def for_org(self, org_id: str) -> Client:
        """The connection of ``org_id``'s devices.

        Raises:
            ScenarioError: the organisation has no connection and there is no default.
        """
        nc = self.by_org.get(org_id, self.default)
        if nc is None:
            raise ScenarioError(f"no credentials for organisation {org_id!r} (have {sorted(self.by_org)})")
        return nc

    def bind(self, devices: Iterable[tuple[str, str]]) -> None:
        """Learn which organisation each entity is of (``(entity_id, org_id)`` pairs).

        Raises:
            ScenarioError: an organisation has no connection.
        """
        for entity_id, org_id in devices:
            self._by_entity[entity_id] = self.for_org(org_id)

    def for_entity(self, entity_id: str) -> Client:
        """The connection of a device bound with :meth:`bind` ("" or unknown: the default, else the first)."""
        nc = self._by_entity.get(entity_id)
        if nc is not None:
            return nc
        return self.default if self.default is not None else next(iter(self.by_org.values()))

    @property
    def is_closed(self) -> bool:
        """True once every connection is closed."""
        return all(nc.is_closed for nc in self.connections)

    async def flush(self, timeout_s: float) -> None:
        """Flush every connection (a PING/PONG round trip each, ``timeout_s`` each).

        Raises:
            nats.errors.Error / TimeoutError: as ``Client.flush``.
        """
        for nc in self.connections:
            if not nc.is_closed:
                await nc.flush(timeout=timeout_s)  # type: ignore[arg-type]  # nats-py annotates int; it is asyncio.wait_for's float

    async def close(self) -> None:
        """Close every connection (what was published is flushed first; errors logged)."""
        for nc in self.connections:
            if not nc.is_closed:
                try:
                    await nc.close()
                except (nats.errors.Error, OSError, TimeoutError) as exc:
                    log.warning("closing %s: %r", nc, exc)

    async def drain(self) -> None:
        """Drain and close every connection (errors logged: the run is over)."""
        for nc in self.connections:
            if nc.is_closed:
                continue
            try:
                await nc.drain()
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                log.warning("draining %s: %r", nc, exc)
                with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                    await nc.close()
