"""``lab.entity(entity_id)``: one entity's live state as a read-only mapping that shows itself.

:class:`EntityState` is a snapshot of the entity's KV document (the same dict
``lab.state_of(entity_id)`` returns, which stays a plain dict for every existing caller) with
a rich HTML repr for notebooks. Reading it never touches the network: call ``lab.entity`` again
for a fresh one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from overwatch_lab.notebook.cards import entity_card, get
from overwatch_lab.notebook.html import guarded, safe_text


class EntityState(Mapping[str, Any]):
    """A read-only snapshot of one entity's live KV document.

    ``state["vehicle_status"]["mode"]`` reads like the document; ``state.get_path("power.voltage")``
    reads a nested field (None where a level is missing); ``state.doc`` is a copy of the dict.
    """

    __slots__ = ("_doc",)

    def __init__(self, doc: Mapping[str, Any]) -> None:
        self._doc = dict(doc)

    def __getitem__(self, key: str) -> Any:
        return self._doc[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._doc)

    def __len__(self) -> int:
        return len(self._doc)

    @property
    def entity_id(self) -> str:
        """The entity's id."""
        return str(self._doc.get("entity_id"))

    @property
    def is_live(self) -> bool | None:
        """True while it reports within ``stale_after_s``; None if the document does not say."""
        live = self._doc.get("is_live")
        return live if isinstance(live, bool) else None

    @property
    def doc(self) -> dict[str, Any]:
        """A copy of the whole document (a plain dict, safe to change)."""
        import copy

        return copy.deepcopy(self._doc)

    def get_path(self, path: str) -> Any:
        """The nested field at ``path`` (``"position.global.latitude"``), or None."""
        return get(self._doc, path)

    def __repr__(self) -> str:
        return safe_text(self._plain)

    def _plain(self) -> str:
        d = self._doc
        live = "live" if d.get("is_live") is True else "stale" if d.get("is_live") is False else "?"
        lat, lon = get(d, "position.global.latitude"), get(d, "position.global.longitude")
        located = isinstance(lat, int | float) and isinstance(lon, int | float)
        where = f" at {lat:.5f}, {lon:.5f}" if located else ""
        return (
            f"<EntityState {d.get('entity_id')!r} {d.get('entity_type')} of {d.get('org_id')!r} {live}"
            f"{where} mode={get(d, 'vehicle_status.mode')!r} battery={get(d, 'power.battery_remaining')!r}>"
        )

    def _repr_html_(self) -> str:
        return guarded(lambda: entity_card(self._doc), self._plain)
