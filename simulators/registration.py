"""Putting a fleet on the wire: core publishing of emissions, and the registration handshake.

:func:`publish_all` publishes emissions with core NATS and their ``Nats-Msg-Id`` header (about
10x faster than awaiting JetStream acks; JetStream stores core-published messages on its subjects
all the same). :func:`register` publishes a fleet's registration the way a careful device does,
waiting until the lab shows every device before telemetry starts (with full rights), or only
what a device may send (on relay identities). :func:`register_fleet` is the lab's side of a
fleet on relays: the organisations and entities registered with the lab's own identity first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import nats.errors
import nats.js.errors

from overwatch_lab.errors import BrokerError
from overwatch_lab.protocol.envelopes import encode
from overwatch_lab.protocol.subjects import KV_GLOBAL_STATE
from simulators.emission import Emission
from simulators.model import FleetModel
from simulators.uplink import Uplink

if TYPE_CHECKING:
    from nats.aio.client import Client

    from simulators.scenario import Scenario

log = logging.getLogger(__name__)

REGISTER_TIMEOUT_S = 10.0  # s to wait for the lab to show every device in its KV bucket
REGISTER_POLL_S = 0.2  # s between KV checks while registering
REGISTER_RESEND_S = 2.0  # s after which a device not yet registered sends its created event again
FLUSH_TIMEOUT_S = 10.0  # s a flush (PING/PONG round trip) may take


def now_epoch_ms() -> float:
    """Return the wall-clock time rounded to the millisecond: the default start of a live run."""
    return round(time.time() * 1000) / 1000.0


async def publish_all(link: Client | Uplink, items: Iterable[Emission]) -> int:
    """Publish emissions with core NATS (``Nats-Msg-Id`` header when set); return how many.

    On a scoped :class:`~simulators.uplink.Uplink` each emission goes out on the connection of
    its device's organisation (bound with ``Uplink.bind``).

    Raises:
        BrokerError: the connection is closed or the outgoing buffer is full.
    """
    n = 0
    route = link.for_entity if isinstance(link, Uplink) and link.scoped else None
    nc = link.for_entity("") if isinstance(link, Uplink) else link
    try:
        for em in items:
            headers = {"Nats-Msg-Id": em.msg_id} if em.msg_id else None
            await (route(em.entity_id) if route is not None else nc).publish(em.subject, em.payload, headers=headers)
            n += 1
    except nats.errors.Error as exc:
        raise BrokerError(f"publishing simulated telemetry failed after {n} messages: {exc!r}") from exc
    return n


async def _missing(kv: Any, entity_ids: Iterable[str]) -> set[str]:
    """Return the ids that have no document in the lab's entity-state KV bucket yet."""

    async def absent(eid: str) -> str | None:
        try:
            await kv.get(eid)
        except nats.js.errors.NotFoundError:
            return eid
        return None

    found = await asyncio.gather(*(absent(e) for e in entity_ids))
    return {e for e in found if e is not None}


def _resend(em: Emission, attempt: int) -> Emission:
    """The same entity event under a new event id and Nats-Msg-Id (the old one would be deduplicated)."""
    body = json.loads(em.payload)
    body["id"] = f"{body['id']}-r{attempt}"
    return em._replace(payload=encode(body), msg_id=body["id"])


async def register(
    link: Client | Uplink,
    model: FleetModel,
    *,
    timeout_s: float | None = REGISTER_TIMEOUT_S,
    registered: bool = False,
) -> int:
    """Publish the fleet's registration the way a careful device does; return messages sent.

    With full rights (one connection, the lab's own identity or a bare NATS server): organisation
    ``created`` events, entity ``created`` events, then (once the lab shows the devices, see
    :func:`announce`) ``bootsequence`` events. On a scoped uplink (relay identities) only what a
    device may send: its entity ``created`` event and its ``bootsequence``; the organisations
    were registered by the lab that issued the relays, and nothing is awaited (a device may not
    read the lab's KV). With ``registered`` (the lab registered the organisations and entities
    already, ``lab.fleet``) only the ``bootsequence`` events go out. Telemetry starts after this
    returns.

    Raises:
        BrokerError: publishing failed.
    """
    emissions = model.start()
    orgs = [e for e in emissions if e.kind == "org"]
    entities = [e for e in emissions if e.kind == "entity"]
    rest = [e for e in emissions if e.kind not in ("org", "entity")]
    scoped = isinstance(link, Uplink) and link.scoped
    n = 0
    if registered:
        pass
    elif scoped:
        n += await publish_all(link, entities)
        await _flush_quietly(link)
    else:
        n += await announce(link, orgs, entities, timeout_s=timeout_s)
    n += await publish_all(link, rest)
    await _flush_quietly(link)
    return n


async def announce(
    link: Client | Uplink,
    orgs: list[Emission],
    entities: list[Emission],
    *,
    timeout_s: float | None = REGISTER_TIMEOUT_S,
) -> int:
    """Publish organisation and entity ``created`` events and wait until the lab shows the entities.

    Needs full rights (organisation events, KV reads): the lab's own identity or a bare server.
    The lab processes organisations and entities on two streams with two consumers, so an
    entity can arrive before its organisation is known; a device whose entity document does not
    appear in the lab's KV bucket (``CONSTELLATION_GLOBAL_STATE``, key = entity id) sends its
    ``created`` event again every ``REGISTER_RESEND_S``, under a new id. Without that bucket (a
    bare NATS server, no lab) or with ``timeout_s=None`` nothing is awaited.

    Raises:
        BrokerError: publishing failed.
    """
    nc = link.for_entity("") if isinstance(link, Uplink) else link
    n = await publish_all(nc, orgs)
    await _flush_quietly(nc)
    n += await publish_all(nc, entities)
    await _flush_quietly(nc)
    if timeout_s is None or not entities:
        return n
    kv = None
    try:
        kv = await nc.jetstream().key_value(KV_GLOBAL_STATE)
    except (nats.errors.Error, TimeoutError) as exc:
        log.info("no %s bucket (%r): not waiting for the lab to register the fleet", KV_GLOBAL_STATE, exc)
    if kv is None:
        return n
    by_id = {e.entity_id: e for e in entities}
    pending = set(by_id)
    started = last_send = time.monotonic()
    attempt = 0
    try:
        async with asyncio.timeout(timeout_s):
            while pending := await _missing(kv, sorted(pending)):
                if time.monotonic() - last_send >= REGISTER_RESEND_S:
                    attempt += 1
                    last_send = time.monotonic()
                    n += await publish_all(nc, [_resend(by_id[e], attempt) for e in sorted(pending)])
                    await _flush_quietly(nc)
                await asyncio.sleep(REGISTER_POLL_S)
    except TimeoutError:
        log.warning(
            "%d of %d devices not registered by the lab after %.1f s (e.g. %s); starting anyway",
            len(pending),
            len(by_id),
            timeout_s,
            sorted(pending)[:3],
        )
    else:
        log.info("lab registered %d devices in %.2f s", len(by_id), time.monotonic() - started)
    return n


async def register_fleet(nc: Client, scenario: Scenario, *, timeout_s: float = REGISTER_TIMEOUT_S) -> list[str]:
    """The lab's side of a scoped fleet: register its organisations and entities, before relays exist.

    ``nc`` has the lab's own identity (devices may not publish organisation events nor read KV).
    Publishes the very ``created`` events the fleet's devices would (their records: name, type,
    first position) and waits until the lab shows every entity; returns the entity ids.

    Raises:
        BrokerError: publishing failed, or the lab did not register every entity within ``timeout_s``.
    """
    ids = [eid for eid, _fleet, _org, _kind in scenario.devices()]
    kv = await nc.jetstream().key_value(KV_GLOBAL_STATE)
    # a fleet flown before (the next step of a load test) is registered already: only what is new
    new = await _missing(kv, ids)
    if new:
        model = FleetModel(scenario, start_epoch_s=now_epoch_ms(), members=[i for i, e in enumerate(ids) if e in new])
        emissions = model.start()  # the organisations of the new devices, and their entities
        orgs = [e for e in emissions if e.kind == "org"]
        entities = [e for e in emissions if e.kind == "entity"]
        await announce(nc, orgs, entities, timeout_s=timeout_s)
    missing = await _missing(kv, ids)
    if missing:
        raise BrokerError(
            f"the lab did not register {len(missing)} of {len(ids)} simulated devices within "
            f"{timeout_s:g} s (e.g. {sorted(missing)[:3]})"
        )
    return ids


async def _flush_quietly(nc: Client | Uplink) -> None:
    try:
        if isinstance(nc, Uplink):
            await nc.flush(FLUSH_TIMEOUT_S)
        else:
            await nc.flush(timeout=FLUSH_TIMEOUT_S)  # type: ignore[arg-type]  # nats-py annotates int; it is asyncio.wait_for's float
    except (nats.errors.Error, TimeoutError) as exc:
        log.warning("flush failed: %r", exc)
