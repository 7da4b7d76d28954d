"""``lab.devices``: the credentials the embedded broker accepts from devices, relays and people.

    cred = lab.devices.add("org-a", "drone-7", entity_type="aircraft_multirotor")
    cred.file            # the connection file to hand to the device (0600)
    cred.auth            # NatsAuth: nats.connect(lab.nats_url, **cred.auth.kwargs())
    lab.devices.relay("relay-1", "org-a", ["drone-7", "drone-8"])
    lab.devices.list()   # every identity: name, role, org, entities, public key, file
    lab.devices.revoke("drone-7")   # the broker reloads; that device is disconnected at once

Each identity is an NKey user of the broker with subject permissions (``broker/permissions.py``):
the broker itself refuses whatever its role does not allow. Adding a device also registers its
organisation and entity through the wire (the lab's own identity), so it can stream at once.
Changes are applied by a config reload of the running broker, never a restart.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import pandas as pd

from overwatch_lab.broker.credentials import Credential, CredentialStore
from overwatch_lab.errors import ConfigError
from overwatch_lab.kvstate import Doc
from overwatch_lab.protocol import lifecycle
from overwatch_lab.protocol import subjects as s
from overwatch_lab.protocol.envelopes import encode
from overwatch_lab.runtime import Runner

DEFAULT_ENTITY_TYPE = "aircraft_multirotor"
_POLL_S = 0.02


class DevicesCore(Protocol):
    """What the devices part needs of a lab's core."""

    @property
    def nats_url(self) -> str:
        """URL of the broker."""
        ...

    @property
    def credentials(self) -> CredentialStore:
        """The registry of scoped identities."""
        ...

    async def apply_credentials(self) -> bool:
        """Write the registry into the broker's config and reload it."""
        ...

    async def publish(self, subject: str, data: bytes, msg_id: str | None = None) -> int:
        """Publish one message to JetStream."""
        ...

    async def org_known(self, org_id: str) -> bool:
        """True once the lab has the organisation."""
        ...

    async def org_of(self, entity_id: str) -> str | None:
        """The organisation of a registered entity, or None."""
        ...

    async def entity_doc(self, entity_id: str) -> Doc | None:
        """The entity's live KV document, or None."""
        ...


class Devices:
    """Issue, list and revoke the broker's scoped identities (see the module docstring).

    Args:
        runner: the lab's loop.
        core: returns the running lab's core.
        booted: returns the core also while the lab starts or stops (default: ``core``).
    """

    def __init__(
        self, runner: Runner, core: Callable[[], DevicesCore], booted: Callable[[], DevicesCore] | None = None
    ) -> None:
        self._runner = runner
        self._core = core
        self._booted = booted or core  # revoke_many also while the lab stops (its fleets' relays)

    def __repr__(self) -> str:
        return "<Devices>"

    def add(
        self,
        org_id: str,
        entity_id: str,
        entity_type: str | None = None,
        *,
        name: str | None = None,
        timeout: float = 10.0,
    ) -> Credential:
        """Register ``entity_id`` of ``org_id`` (and the organisation) and issue its device identity.

        The device may then publish its telemetry, device events and command acks, its
        organisation's lifecycle events, and receive its commands; nothing else. Adding a device
        that already has its identity returns that identity unchanged.

        Args:
            org_id / entity_id: who it is (token rule).
            entity_type: for a new entity (default ``aircraft_multirotor``); an entity already
                registered keeps its own.
            name: display name of a new entity (default: its id).
            timeout: how long registration and the broker's reload may take.

        Raises:
            ConfigError: a bad token, the entity belongs to another organisation, or the name is
                taken by another identity.
        """
        return self._runner.call(self._add(org_id, entity_id, entity_type, name, timeout), timeout + 5)

    def relay(self, name: str, org_id: str, entities: Sequence[str], *, timeout: float = 10.0) -> Credential:
        """Issue a relay identity: one connection speaking for several entities of one organisation.

        The entities must be registered already (``add`` or the wire). A relay may do, for each of
        its entities, what a device may do for itself.

        Raises:
            ConfigError: a bad token, an entity not registered to ``org_id``, or a taken name.
        """
        return self._runner.call(self._relay(name, org_id, tuple(entities), timeout), timeout + 5)

    def get(self, name: str) -> Credential | None:
        """The identity called ``name`` (an entity id for a device), or None."""
        return self._core().credentials.get(name)

    def list(self) -> pd.DataFrame:
        """Every issued identity: name, role, org_id, entities, public_key, file."""
        rows = [c.row() for c in self._core().credentials.credentials()]
        return pd.DataFrame(rows, columns=["name", "role", "org_id", "entities", "public_key", "file"])

    def revoke(self, name: str, *, timeout: float = 10.0) -> Credential:
        """Withdraw an identity: its files are deleted and the broker reloads; its connections close.

        Raises:
            ConfigError: there is no identity called ``name``.
        """

        async def go() -> Credential:
            core = self._core()
            cred = core.credentials.revoke(name)
            await core.apply_credentials()
            return cred

        return self._runner.call(go(), timeout + 5)

    # ------------------------------------------------------------------ on the lab's loop
    async def _add(
        self, org_id: str, entity_id: str, entity_type: str | None, name: str | None, timeout_s: float
    ) -> Credential:
        core = self._core()
        s.check_token(org_id, "org_id")
        s.check_token(entity_id, "entity_id")
        async with asyncio.timeout(timeout_s):
            await _register(core, org_id, entity_id, entity_type or DEFAULT_ENTITY_TYPE, name)
            cred = core.credentials.issue(
                entity_id, "device", org_id=org_id, entities=(entity_id,), nats_url=core.nats_url
            )
            await core.apply_credentials()
        return cred

    async def _relay(self, name: str, org_id: str, entities: tuple[str, ...], timeout_s: float) -> Credential:
        async with asyncio.timeout(timeout_s):
            return (await self.issue_relays({name: (org_id, entities)}))[name]

    async def issue_relays(self, relays: Mapping[str, tuple[str, Sequence[str]]]) -> dict[str, Credential]:
        """Issue several relays at once, with one reload of the broker (on the lab's loop).

        What :meth:`relay` does for each ``name: (org_id, entities)``; ``lab.fleet`` issues a
        simulated fleet's relays (one per organisation) with it. Bound it with a timeout.

        Raises:
            ConfigError: a relay without entities, an entity not registered to its organisation,
                a bad token or a taken name (nothing is issued then).
        """
        core = self._core()
        for org_id, entities in relays.values():
            if not entities:
                raise ConfigError("a relay needs at least one entity")
            for entity_id in entities:
                owner = await core.org_of(s.check_token(entity_id, "entity_id"))
                if owner != org_id:
                    raise ConfigError(
                        f"entity {entity_id!r} is not registered to {org_id!r} ({'of ' + repr(owner) if owner else 'unknown'}); "
                        "register it first (lab.devices.add)"
                    )
        issued: dict[str, Credential] = {}
        try:
            for name, (org_id, entities) in relays.items():
                issued[name] = core.credentials.issue(
                    name, "relay", org_id=org_id, entities=tuple(entities), nats_url=core.nats_url
                )
        except ConfigError:
            for name in issued:
                core.credentials.revoke(name)
            raise
        await core.apply_credentials()
        return issued

    async def revoke_many(self, names: Sequence[str]) -> builtins.list[Credential]:
        """Withdraw several identities with one reload of the broker (on the lab's loop); names
        already gone are skipped. Their connections are closed. Bound it with a timeout.

        Works while the lab stops too (it revokes its fleets' relays then).
        """
        core = self._booted()
        gone: builtins.list[Credential] = []
        for name in names:
            if core.credentials.get(name) is not None:
                gone.append(core.credentials.revoke(name))
        if gone:
            await core.apply_credentials()
        return gone


async def _register(core: DevicesCore, org_id: str, entity_id: str, entity_type: str, name: str | None) -> None:
    """Register the organisation (if new) and the entity (if new) through the wire and wait for them."""
    owner = await core.org_of(entity_id)
    if owner is not None and owner != org_id:
        raise ConfigError(f"entity {entity_id!r} is registered to organisation {owner!r}, not {org_id!r}")
    if not await core.org_known(org_id):
        event = lifecycle.make_org_event("created", org_id, org_id, "civilian")
        await core.publish(s.organization_subject("created"), encode(event), event["id"])
    if owner is None:
        record: dict[str, Any] = {
            "entity_id": entity_id,
            "org_id": org_id,
            "name": name or entity_id,
            "entity_type": entity_type,
            "status": "active",
            "priority": "normal",
        }
        event = lifecycle.make_entity_event("created", record)
        await core.publish(s.entity_subject(org_id, "created"), encode(event), event["id"])
    while True:  # bounded by the caller's timeout
        if await core.entity_doc(entity_id) is not None and await core.org_of(entity_id) == org_id:
            return
        await asyncio.sleep(_POLL_S)
