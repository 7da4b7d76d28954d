"""Closed browser tabs: a write to a websocket the browser already closed is not an error.

Bokeh and Panel write to a session's websocket in tasks nobody awaits; when the tab closed in
between, asyncio reports "Task exception was never retrieved" with a ``WebSocketClosedError``
traceback. :func:`quiet_closed_websockets` logs those at debug level on the server's loop.

A tab closed while its websocket was still being accepted (before Bokeh attached a session to
the connection) made Bokeh's ``WSHandler.on_close`` fail its own ``assert self._session is not
None`` and tornado log an "Uncaught exception GET /ws" traceback (seen in the browser test that
logs in, closes the tab and logs in again). :func:`tolerate_sessionless_close` makes that case a
debug line; every other close runs Bokeh's own code.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

_CLOSED_SOCKET_ERRORS = ("WebSocketClosedError", "StreamClosedError")


def quiet_closed_websockets(loop: asyncio.AbstractEventLoop) -> None:
    """Log a write to a websocket the browser already closed (a closed tab) at debug, not as a traceback.

    Every other exception goes to the loop's previous handler. Installing it twice is a no-op.
    """
    previous = loop.get_exception_handler()
    if getattr(previous, "quiets_closed_websockets", False):
        return

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if exc is not None and type(exc).__name__ in _CLOSED_SOCKET_ERRORS:
            log.debug("dashboard: write to a closed websocket dropped: %r", exc)
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    handler.quiets_closed_websockets = True  # type: ignore[attr-defined]
    loop.set_exception_handler(handler)


def tolerate_sessionless_close() -> None:
    """Make Bokeh's websocket ``on_close`` accept a connection that never got its session (see
    the module docstring). Installing it twice is a no-op."""
    from bokeh.server.views.ws import WSHandler

    original = WSHandler.on_close
    if getattr(original, "tolerates_sessionless", False):
        return

    def on_close(self: WSHandler) -> None:
        connection = self.connection
        if connection is not None and getattr(connection, "_session", None) is None:
            log.debug("dashboard: a websocket closed before its session was attached")
            self.connection = None
            self.application.client_lost(connection)  # type: ignore[attr-defined]  # a BokehTornado
            return
        original(self)

    on_close.tolerates_sessionless = True  # type: ignore[attr-defined]
    WSHandler.on_close = on_close  # type: ignore[method-assign]
