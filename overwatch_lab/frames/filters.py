"""The filters every history frame shares, checked once and turned into one SQL ``WHERE``.

:class:`Filters` holds what a call asked for (organisation, entities, entity types, message
types, the time window), already validated (:mod:`.validation`). :meth:`Filters.where` writes
the clause so that SQLite uses the telemetry indexes: ``entity_id IN (...)`` with a ``ts``
range seeks ``idx_telemetry_entity_ts``; a window alone ranges over ``idx_telemetry_ts``.
An entity type is resolved through the ``entities`` table (history rows do not carry it).
:func:`check_known` asks the database whether the named entities and organisations exist.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from overwatch_lab.errors import FrameError
from overwatch_lab.frames import validation as v
from overwatch_lab.frames.reader import Reader


@dataclass(frozen=True, slots=True)
class Filters:
    """What a history query keeps (None: no filter on that).

    Attributes:
        org: organisation ids.
        entities: entity ids.
        entity_types: entity types (resolved through ``entities``).
        message_types: MAVLink message names.
        since: keep ``ts >= since`` (epoch s).
        until: keep ``ts < until`` (epoch s).
    """

    org: tuple[str, ...] | None = None
    entities: tuple[str, ...] | None = None
    entity_types: tuple[str, ...] | None = None
    message_types: tuple[str, ...] | None = None
    since: float | None = None
    until: float | None = None

    @classmethod
    def of(
        cls,
        *,
        org: str | Iterable[str] | None = None,
        entity: str | Iterable[str] | None = None,
        entity_type: str | Iterable[str] | None = None,
        message_type: str | Iterable[str] | None = None,
        since: v.TimeLike | None = None,
        until: v.TimeLike | None = None,
    ) -> Filters:
        """Validate the arguments of a frame call (see :mod:`.validation`).

        Raises:
            FrameError: a bad id, type or time, or ``since`` after ``until``.
        """
        lo, hi = v.window(since, until)
        return cls(
            org=v.ids(org, "org"),
            entities=v.ids(entity, "entity"),
            entity_types=v.entity_types(entity_type),
            message_types=v.message_types(message_type),
            since=lo,
            until=hi,
        )

    def where(self, *, time: bool = True, ts: str = "ts", alias: str = "") -> tuple[str, list[Any]]:
        """Return ``(" WHERE ...", params)`` for the ``telemetry`` table ("" when nothing is filtered).

        Args:
            time: include the time window.
            ts: the time column's name.
            alias: a table alias prefix (``"t."``).
        """
        clauses: list[str] = []
        params: list[Any] = []

        def in_(column: str, values: tuple[str, ...]) -> None:
            clauses.append(f"{alias}{column} IN ({', '.join('?' * len(values))})")
            params.extend(values)

        if self.entities is not None:
            in_("entity_id", self.entities)
        if self.entity_types is not None:
            marks = ", ".join("?" * len(self.entity_types))
            clauses.append(
                f"{alias}entity_id IN (SELECT entity_id FROM entities WHERE entity_type IN ({marks}))"
            )
            params.extend(self.entity_types)
        if self.org is not None:
            in_("org_id", self.org)
        if self.message_types is not None:
            in_("message_type", self.message_types)
        if time and self.since is not None:
            clauses.append(f"{alias}{ts} >= ?")
            params.append(self.since)
        if time and self.until is not None:
            clauses.append(f"{alias}{ts} < ?")
            params.append(self.until)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    @property
    def empty_window(self) -> bool:
        """True when the window selects nothing (``since == until``)."""
        return self.since is not None and self.until is not None and self.since >= self.until


def check_known(reader: Reader, filters: Filters, seen: pd.DataFrame | None = None) -> None:
    """Raise if an entity or organisation named in ``filters`` is unknown to the database.

    ``seen``: a result already read; ids that appear in its ``entity_id`` / ``org_id`` columns
    are known without asking (a query that found rows costs no lookup).

    An entity is known when it is registered (``entities``) or has history (history outlives a
    deleted entity); an organisation when it is registered or one of its entities is. Both are
    index lookups, so an unknown name never scans the history.

    Raises:
        FrameError: naming the unknown ids.
    """
    if filters.entities:
        marks = ", ".join("?" * len(filters.entities))
        found = {
            r[0]
            for r in reader.rows(
                f"SELECT entity_id FROM entities WHERE entity_id IN ({marks})", filters.entities
            )
        }
        for eid in filters.entities:
            if eid not in found and not reader.rows(
                "SELECT 1 FROM telemetry WHERE entity_id = ? LIMIT 1", (eid,)
            ):
                raise FrameError(f"unknown entity {eid!r}: not registered and no telemetry history")
    if filters.org:
        marks = ", ".join("?" * len(filters.org))
        found = {
            r[0]
            for r in reader.rows(f"SELECT org_id FROM organizations WHERE org_id IN ({marks})", filters.org)
        }
        found |= {
            r[0]
            for r in reader.rows(
                f"SELECT DISTINCT org_id FROM entities WHERE org_id IN ({marks})", filters.org
            )
        }
        unknown = [o for o in filters.org if o not in found]
        if unknown:
            raise FrameError(
                f"unknown organisation {', '.join(map(repr, unknown))}: no such org_id registered"
            )
