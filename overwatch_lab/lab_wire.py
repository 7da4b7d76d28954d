"""Lab helpers that go through the wire, as a device would: publish, register, read state.

Mixed into :class:`overwatch_lab.lab.Lab`; every method is a blocking call, safe from any thread
but the lab's own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import pandas as pd

from overwatch_lab.kvstate import Doc
from overwatch_lab.protocol import envelopes, lifecycle
from overwatch_lab.protocol import subjects as s
from overwatch_lab.store import queries

T = TypeVar("T")


class WireHelpers:
    """Publishing, registration and state reads (see the module docstring)."""

    def publish(self, subject: str, payload: bytes | dict[str, Any], *, msg_id: str | None = None) -> int:
        """Publish one message to JetStream and return its stream sequence (raw bytes are sent as-is)."""
        data = payload if isinstance(payload, bytes) else envelopes.encode(payload)
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        f = self._require()

        async def go() -> int:
            ack = await f.js.publish(subject, data, headers=headers)
            return ack.seq

        return self.call(go())

    def publish_many(self, items: list[tuple[str, bytes, str | None]]) -> int:
        """Publish many (subject, payload, msg_id) to JetStream with pipelined acks; returns the count."""
        f = self._require()

        async def go() -> int:
            for subject, data, msg_id in items:
                await f.js.publish_async(subject, data, headers={"Nats-Msg-Id": msg_id} if msg_id else None)
            await f.js.publish_async_completed()
            return len(items)

        return self.call(go(), timeout=None)

    def register_org(
        self, org_id: str, name: str | None = None, org_type: str = "civilian", *, timeout: float = 10.0
    ) -> None:
        """Register (or update) an organisation through the wire and wait until the lab has it."""
        event = lifecycle.make_org_event("created", org_id, name or org_id, org_type)
        self.publish(s.organization_subject("created"), event, msg_id=event["id"])
        self.wait_for(lambda: self._org_known(org_id), timeout=timeout, what=f"organization {org_id!r}")

    def register_entity(
        self,
        org_id: str,
        entity_id: str,
        entity_type: str,
        *,
        name: str | None = None,
        status: str = "active",
        priority: str = "normal",
        timeout: float = 10.0,
        **fields: Any,
    ) -> Doc:
        """Register an entity through the wire (an entity ``created`` event) and return its KV document.

        The organisation must exist (``register_org``). Waits until the document is in KV, so
        telemetry can follow at once.
        """
        record = {
            "entity_id": entity_id,
            "org_id": org_id,
            "name": name or entity_id,
            "entity_type": entity_type,
            "status": status,
            "priority": priority,
            **fields,
        }
        event = lifecycle.make_entity_event("created", record)
        self.publish(s.entity_subject(org_id, "created"), event, msg_id=event["id"])
        return self.wait_for(
            lambda: self.state_of(entity_id), timeout=timeout, what=f"entity {entity_id!r} in KV"
        )

    def register_entities(self, records: list[dict[str, Any]], *, timeout: float = 60.0) -> int:
        """Register many entities at once (records as for ``register_entity``, each with ``org_id``).

        Publishes every ``created`` event with pipelined acks, then waits until every entity has
        its KV document. Returns the number registered.
        """
        items = []
        for rec in records:
            record = {"name": rec["entity_id"], "status": "active", "priority": "normal", **rec}
            event = lifecycle.make_entity_event("created", record)
            items.append(
                (s.entity_subject(record["org_id"], "created"), envelopes.encode(event), event["id"])
            )
        self.publish_many(items)
        wanted = {r["entity_id"] for r in records}
        f = self._require()

        def all_there() -> bool:
            docs = self.call(f.ekv.all())
            return wanted <= docs.keys()

        self.wait_for(all_there, timeout=timeout, interval=0.1, what=f"{len(wanted)} entities in KV")
        return len(wanted)

    def publish_telemetry(
        self,
        org_id: str,
        entity_id: str,
        message_type: str,
        data: dict[str, Any],
        *,
        timestamp: str | float | None = None,
        message_uid: str | None = None,
    ) -> str:
        """Publish one telemetry v1 envelope (as a device would) and return its message_uid."""
        env = envelopes.make_telemetry(
            org_id, entity_id, message_type, data, timestamp=timestamp, message_uid=message_uid
        )
        self.publish(s.telemetry_subject(org_id, entity_id), env, msg_id=env["message_uid"])
        return str(env["message_uid"])

    def state_of(self, entity_id: str) -> Doc | None:
        """Return the entity's live KV document, or None."""
        s.check_token(entity_id, "entity_id")
        f = self._require()
        return self.call(f.ekv.read(entity_id))[1]

    def states(self) -> pd.DataFrame:
        """Every entity document, flattened into one row per entity (columns like ``position.global.latitude``)."""
        f = self._require()
        docs = self.call(f.ekv.all())
        if not docs:
            return pd.DataFrame()
        frame = pd.json_normalize([d for _, d in docs.values()], max_level=3)
        return frame.set_index("entity_id", drop=False).sort_index()

    def wait_for(
        self,
        predicate: Callable[[], T],
        *,
        timeout: float = 10.0,
        interval: float = 0.02,
        what: str = "condition",
    ) -> T:
        """Poll ``predicate`` until it returns something truthy, and return that; TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if _truthy(value):
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not reached within {timeout:.1f} s")
            time.sleep(interval)

    def _org_known(self, org_id: str) -> bool:
        f = self._require()
        if self._owner:
            return org_id in f.registry.orgs
        return not queries.read_frame(
            self.db_url, "SELECT 1 FROM organizations WHERE org_id = ?", (org_id,)
        ).empty


def _truthy(value: object) -> bool:
    if isinstance(value, pd.DataFrame | pd.Series):
        return not value.empty
    return bool(value)
