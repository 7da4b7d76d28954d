"""TAK / Cursor-on-Target out: the lab's live entity state as CoT events for ATAK, WinTAK, WebTAK.

- :mod:`~overwatch_lab.cot.events`: entity document → CoT XML (types, uid, times, point, detail); pure.
- :mod:`~overwatch_lab.cot.pacing`: per-entity and global rate limits; pure.
- :mod:`~overwatch_lab.cot.transport`: ``udp://`` (unicast, multicast) and ``tcp://`` destinations.
- :mod:`~overwatch_lab.cot.sender`: :class:`CotSender`, the thread that ties them together.
- :mod:`~overwatch_lab.cot.command`: ``overwatch-lab cot``.

Usage::

    from overwatch_lab.cot import CotSender
    with CotSender(lab, to="udp://239.2.3.1:6969", rate_hz=1):
        ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from overwatch_lab.cot.events import AFFILIATIONS, COT_TYPES, entity_event
from overwatch_lab.cot.transport import CotTarget, parse_target

if TYPE_CHECKING:
    from overwatch_lab.cot.sender import CotSender, CotStats

# The sender pulls in the lab's frames (pandas) and nats-py: imported on first use, so that
# building the CLI's parser (which imports `cot.command`) stays cheap.
_LAZY = {"CotSender": "overwatch_lab.cot.sender", "CotStats": "overwatch_lab.cot.sender"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'overwatch_lab.cot' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["AFFILIATIONS", "COT_TYPES", "CotSender", "CotStats", "CotTarget", "entity_event", "parse_target"]
