"""The broker's monitoring endpoints, asked as the system account instead of over HTTP.

nats-server answers ``$SYS.REQ.SERVER.PING.{VARZ,CONNZ,JSZ,HEALTHZ,...}`` (every server) and
``$SYS.REQ.SERVER.{id}.{...}`` with the same JSON its HTTP monitor serves, to a client of the
system account only. The embedded broker opens no HTTP port (any local user could read who is
connected and every stream); the lab asks here with its system user (``broker/permissions.py``).
"""

from __future__ import annotations

import json
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS

from overwatch_lab.errors import BrokerError

ENDPOINTS = ("varz", "connz", "routez", "gatewayz", "leafz", "subsz", "jsz", "accountz", "healthz")
"""What :func:`server_monitor` can ask for (the HTTP monitor's paths without the slash)."""


async def server_monitor(
    nc: NATS, endpoint: str, options: dict[str, Any] | None = None, *, timeout_s: float = 2.0
) -> dict[str, Any]:
    """One monitoring endpoint of the broker ``nc`` is connected to, as a dict.

    Args:
        nc: A connection of the system account.
        endpoint: One of :data:`ENDPOINTS`, e.g. ``"connz"``.
        options: The endpoint's options as JSON fields, e.g. ``{"subscriptions": True}`` for
            connz or ``{"streams": True}`` for jsz (the HTTP query parameters' long names).
        timeout_s: How long to wait for the answer.

    Returns:
        The endpoint's ``data`` object (what ``GET /{endpoint}`` returns).

    Raises:
        BrokerError: an unknown endpoint, no answer in time (not a system-account connection?),
            or the server answered with an error.
    """
    if endpoint not in ENDPOINTS:
        raise BrokerError(f"unknown monitoring endpoint {endpoint!r}; expected one of {', '.join(ENDPOINTS)}")
    subject = f"$SYS.REQ.SERVER.PING.{endpoint.upper()}"
    payload = json.dumps(options or {}).encode()
    try:
        msg = await nc.request(subject, payload, timeout=timeout_s)
    except (nats.errors.Error, TimeoutError) as exc:
        raise BrokerError(
            f"the broker did not answer {subject} within {timeout_s} s ({exc!r}); "
            "monitoring requests need the system account's user"
        ) from exc
    try:
        body = json.loads(msg.data)
    except ValueError as exc:
        raise BrokerError(f"the broker's answer to {subject} is not JSON: {msg.data[:80]!r}") from exc
    if not isinstance(body, dict) or "error" in body or not isinstance(body.get("data"), dict):
        raise BrokerError(f"the broker answered {subject} with an error: {str(body)[:200]}")
    data: dict[str, Any] = body["data"]
    return data
