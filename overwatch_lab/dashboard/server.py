"""Serving the dashboard: an in-process Panel server.

:func:`serve` (the CLI's ``dashboard`` command) runs a Panel server on a thread of this process
and returns a :class:`DashboardServer` with ``.port``, ``.url`` and ``.stop()``. (The source
that follows a lab by folder, for ``panel serve``, is :mod:`overwatch_lab.dashboard.attached`.)

Each browser session gets its own :class:`~overwatch_lab.dashboard.app.Dashboard`; its
periodic refresh stops when the session is destroyed and when :meth:`DashboardServer.stop` runs.

Served beyond loopback, :func:`serve` refuses to start without ``users`` (see
:mod:`~overwatch_lab.dashboard.access`); with users, every page asks for a login (Panel's basic
auth, an offline login page, a signed cookie) and each session gets its user's role.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import logging
import socket
import threading
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import panel as pn

from overwatch_lab.dashboard.access import LOCAL_USER, OPERATOR, VIEWER, Users, check_exposure, cookie_secret
from overwatch_lab.dashboard.app import TITLE, Dashboard
from overwatch_lab.dashboard.datastore import FleetSource
from overwatch_lab.dashboard.sockets import quiet_closed_websockets, tolerate_sessionless_close

log = logging.getLogger(__name__)

LOGIN_TEMPLATE = Path(__file__).with_name("login.html")
"""The login page (offline: Panel's own loads CSS and a logo from its CDN)."""


# ---------------------------------------------------------------------------------------------- server
def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def check_port(address: str, port: int) -> None:
    """Raise ConfigError unless ``address:port`` can be bound now (port 0, any free one, always can).

    Binds with SO_REUSEADDR, as the server does, so a port in TIME_WAIT counts as free. Checked
    before the server is built: a failed bind inside Tornado leaks its socket.
    """
    from overwatch_lab.errors import ConfigError

    if not 0 <= port <= 65535:
        raise ConfigError(f"dashboard port must be in 0..65535, got {port}")
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError as exc:
            why = "in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
            raise ConfigError(f"dashboard port {port} on {address} is {why}") from None


_WRITE_TASKS = ("write_message", "_dispatch_msgs")
"""Bokeh's and Panel's websocket writes (the coroutines' names): pending ones are finished at stop."""


def _finish_tasks(loop: asyncio.AbstractEventLoop, timeout: float = 2.0) -> None:
    """Let the websocket writes still pending on the stopped server loop end (cancelled if they must).

    Closing a loop with pending tasks makes asyncio log "Task was destroyed but it is pending!"
    for each when it is garbage-collected. Only writes are touched: cancelling a websocket's
    receive loop would run Bokeh's close handler on a session already detached.
    """
    writes = [
        t
        for t in asyncio.all_tasks(loop)
        if not t.done() and any(n in getattr(t.get_coro(), "__qualname__", "") for n in _WRITE_TASKS)
    ]
    if not writes:
        return
    _, late = loop.run_until_complete(asyncio.wait(writes, timeout=timeout / 2))
    for task in late:
        task.cancel()
    if late:
        loop.run_until_complete(asyncio.wait(late, timeout=timeout / 2))


class DashboardServer:
    """A Panel server running the dashboard on a thread of this process.

    Build it with :func:`serve`. ``port`` and ``url`` are known once it is returned;
    ``stop()`` stops every session's refresh, the server and its thread.
    """

    def __init__(
        self,
        app: Callable[..., Any],
        *,
        port: int,
        address: str,
        show: bool,
        websocket_origin: list[str] | None,
        title: str,
        server_options: dict[str, Any] | None = None,
        users: Users | None = None,
        secret: str | None = None,
    ) -> None:
        self._app = app
        self.users = users
        self._secret = secret
        self._options = dict(server_options or {})
        self.address = address
        self.port = port
        self._show = show
        self._origins = websocket_origin
        self._title = title
        self._dashboards: weakref.WeakSet[Dashboard] = weakref.WeakSet()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._server: Any = None
        self._io_loop: Any = None
        self._server_id = uuid.uuid4().hex
        self._thread = threading.Thread(target=self._run, name=f"overwatch-dashboard:{port}", daemon=True)

    def __repr__(self) -> str:
        return f"<DashboardServer {self.url} {'running' if self.running else 'stopped'}>"

    @property
    def url(self) -> str:
        """The page's URL."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}/"

    @property
    def running(self) -> bool:
        """True while the server thread runs."""
        return self._thread.is_alive()

    @property
    def dashboards(self) -> list[Dashboard]:
        """The Dashboard of every browser session not yet garbage-collected (stopped ones included)."""
        return list(self._dashboards)

    def _session_identity(self) -> tuple[str, str]:
        """(user, role) of the session being built: the logged-in user's role, else the local operator."""
        if self.users is None:
            return LOCAL_USER, OPERATOR
        user = pn.state.user
        return (user or "?"), (self.users.role_of(user) or VIEWER)

    def _make_session(self) -> Any:
        user, role = self._session_identity()
        takes_identity = "role" in inspect.signature(self._app).parameters
        dashboard = self._app(user=user, role=role) if takes_identity else self._app()
        if isinstance(dashboard, Dashboard):
            self._dashboards.add(dashboard)
            dashboard.start()
            return dashboard.template()
        return dashboard

    def start(self, timeout: float = 15.0) -> DashboardServer:
        """Start the server thread and return once it accepts connections."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(
                f"dashboard server on {self.address}:{self.port} not ready within {timeout:.0f} s"
            )
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        from panel.io.server import get_server
        from tornado.ioloop import IOLoop

        io_loop = IOLoop(make_current=False)
        asyncio.set_event_loop(io_loop.asyncio_loop)
        quiet_closed_websockets(io_loop.asyncio_loop)
        tolerate_sessionless_close()
        origins = self._origins or [f"{self.address}:{self.port}", f"localhost:{self.port}"]
        auth: dict[str, Any] = {}
        if self.users is not None:  # the passwords go to Panel's login handler, nowhere else
            auth = {
                "basic_auth": dict(self.users.passwords),
                "cookie_secret": self._secret,
                "login_template": str(LOGIN_TEMPLATE),
            }
        try:
            self._server = get_server(
                self._make_session,
                port=self.port,
                address=self.address,
                websocket_origin=origins,
                loop=io_loop,
                show=self._show,
                start=False,
                title=self._title,
                verbose=False,
                server_id=self._server_id,
                **auth,
                **self._options,
            )
            self._server.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            io_loop.close(all_fds=True)
            return
        self._io_loop = io_loop
        log.info("dashboard serving at %s", self.url)
        self._ready.set()
        try:
            io_loop.start()
        finally:
            _finish_tasks(io_loop.asyncio_loop)
            io_loop.close(all_fds=True)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every session's refresh, then the server and its thread (idempotent)."""
        for dashboard in list(self._dashboards):
            dashboard.stop()
        io_loop = self._io_loop
        if io_loop is None or not self._thread.is_alive():
            return

        async def shutdown() -> None:
            try:
                await self._destroy_sessions()
            except Exception:  # shutting down regardless; say why the sessions were not closed
                log.exception("could not destroy the dashboard's sessions cleanly")
            finally:
                try:
                    self._server.stop()
                finally:
                    io_loop.stop()

        io_loop.add_callback(shutdown)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("dashboard server thread did not stop within %.1f s", timeout)
        # Panel keeps every server it built in a module-level registry; drop ours.
        with contextlib.suppress(Exception):
            pn.state._servers.pop(self._server_id, None)

    async def _destroy_sessions(self) -> None:
        """Destroy every session as Bokeh does for an expired one, so its hooks run.

        Bokeh's ``Server.stop`` leaves sessions alive; Panel then keeps each page template's
        busy indicator in a process-wide list, and the next busy change anywhere in the process
        (a notebook's callback) would write into a document whose server is gone. Uses Bokeh
        internals (``_clients``, ``_applications``, ``_cleanup_sessions``), guarded by the caller.
        """
        tornado_app = self._server._tornado
        for connection in list(tornado_app._clients):
            connection.detach_session()
        for context in list(tornado_app._applications.values()):
            for session in list(context.sessions):
                session.request_expiration()
            await context._cleanup_sessions(0)

    def __enter__(self) -> DashboardServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    source: FleetSource,
    *,
    port: int = 0,
    address: str = "127.0.0.1",
    show: bool = False,
    period_s: float = 1.0,
    tile_url: str | None = None,
    title: str = TITLE,
    websocket_origin: list[str] | None = None,
    users: Users | str | Path | None = None,
    cookie_secret_value: str | None = None,
    beyond_loopback: bool | None = None,
    **server_options: Any,
) -> DashboardServer:
    """Serve the dashboard for ``source`` from this process, on a thread, and return the running server.

    Args:
        source: a Lab or any FleetSource (shared by every browser session).
        port: TCP port; 0 picks a free one (read it back from ``.port``).
        address: interface to listen on (loopback by default).
        show: open a browser tab.
        period_s: seconds between refreshes, per session.
        tile_url: optional local XYZ tile URL for the map.
        title: page title.
        websocket_origin: hosts allowed to open the page's websocket (default: the address
            and localhost at this port); needed when serving on 0.0.0.0.
        **server_options: passed to ``panel.io.server.get_server`` (e.g.
            ``unused_session_lifetime_milliseconds``: how long a closed tab's session lingers
            before it is destroyed and its refresh stops; Bokeh's default is 15 s).
        users: who may log in (a :class:`~.access.Users` or the path of a users file); with
            users every page needs a login and each session gets its user's role.
        cookie_secret_value: the secret signing login cookies (default: a random one per run).
        beyond_loopback: treat the server as reachable from elsewhere (True) or not (False)
            whatever ``address`` says; None: decided by ``address``.

    Returns:
        A :class:`DashboardServer` (``.port``, ``.url``, ``.stop()``; also a context manager).

    Raises:
        ConfigError: ``port`` is taken (or cannot be bound on ``address``), see :func:`check_port`;
            or the server would be reachable beyond loopback without ``users``.
    """
    from overwatch_lab.errors import ConfigError

    def app(user: str | None = None, role: str = OPERATOR) -> Dashboard:
        return Dashboard(
            source=source, period_s=period_s, tile_url=tile_url, title=title, user=user, role=role
        )

    known = Users.load(users) if isinstance(users, str | Path) else users
    secret = cookie_secret(cookie_secret_value) if known is not None else None
    check_exposure(address, known, beyond_loopback=beyond_loopback)
    check_port(address, port)
    attempts = 1 if port else 3  # a picked port can be taken before the server binds it
    for attempt in range(attempts):
        server = DashboardServer(
            app,
            port=port or _free_port(address),
            address=address,
            show=show,
            websocket_origin=websocket_origin,
            title=title,
            server_options=server_options,
            users=known,
            secret=secret,
        )
        try:
            return server.start()
        except OSError as exc:
            if attempt == attempts - 1:
                why = "in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
                raise ConfigError(f"dashboard port {server.port} on {address} is {why}") from exc
    raise AssertionError("unreachable")
