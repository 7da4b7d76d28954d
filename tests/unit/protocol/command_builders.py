"""What the command tests share: the decoder's limits and a decode shortcut (a helper, not a test)."""

from __future__ import annotations

import json
from typing import Any

from overwatch_lab.protocol import commands as c

NOW = 1_800_000_000.0
LIMITS: dict[str, Any] = {
    "now_ts": NOW,
    "fallback_id": "cmd-7",
    "default_ttl_s": 60.0,
    "max_ttl_s": 900.0,
    "max_bytes": 4096,
}


def decode(
    body: dict[str, Any] | bytes, subject: tuple[str, str | None] = ("org-a", "uav-1"), **kw: Any
) -> Any:
    """Decode a command body (a dict is JSON-encoded first) with :data:`LIMITS`, overridable by ``kw``."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return c.decode_command(raw, subject, **(LIMITS | kw))
