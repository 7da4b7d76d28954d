"""A tab closed before Bokeh attached a session to its websocket: a debug line, not a traceback."""

from __future__ import annotations

from types import SimpleNamespace

from bokeh.server.views.ws import WSHandler

from overwatch_lab.dashboard.sockets import tolerate_sessionless_close


class _Connection:
    _session = None  # the handshake had not attached one yet

    def detach_session(self) -> None:
        self._session = None


def test_a_sessionless_close_is_tolerated_and_the_client_released():
    tolerate_sessionless_close()
    tolerate_sessionless_close()  # twice is a no-op
    lost: list[object] = []
    conn = _Connection()
    handler = SimpleNamespace(connection=conn, application=SimpleNamespace(client_lost=lost.append))
    WSHandler.on_close(handler)  # type: ignore[arg-type]  # Bokeh's own asserted and raised here
    assert lost == [conn] and handler.connection is None
    assert getattr(WSHandler.on_close, "tolerates_sessionless", False)
