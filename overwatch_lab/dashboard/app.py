"""The fleet dashboard: layout, an offline-safe served page, and an in-process server.

Three ways to run it:

- ``panel serve overwatch_lab/dashboard/app.py`` attaches to the lab running in
  ``$OVERWATCH_LAB_DATA_DIR`` (default ``./overwatch-data``) and re-attaches when that lab
  restarts; while no lab runs, the page stays up and says so.
- ``serve(lab)`` (the CLI's ``dashboard`` command; see :mod:`overwatch_lab.dashboard.server`)
  runs a Panel server on a thread of this process and returns a handle with ``.port``, ``.url``
  and ``.stop()``.
- In a notebook, ``build_app(lab)`` displays inline. Offline, load Panel's JavaScript inline
  first, in its own cell: ``pn.extension("tabulator", inline=True)`` (without ``inline=True``
  the notebook fetches it from a CDN and shows nothing offline).

Nothing on the page comes from outside the server: the served page uses Panel's
``BootstrapTemplate`` (its CSS and JS are served by Panel; the other templates ask for web
fonts) and the map draws no tiles unless given a ``tile_url``.

Each browser session gets its own :class:`Dashboard` (a DataStore and the views over it); its
periodic refresh stops when the session is destroyed (``pn.state.on_session_destroyed``) and
when :meth:`~overwatch_lab.dashboard.server.DashboardServer.stop` runs.
"""

from __future__ import annotations

import html
import time
from typing import Any

import panel as pn
import param

from overwatch_lab.dashboard.access import OPERATOR, ROLES
from overwatch_lab.dashboard.command_box import CommandBox
from overwatch_lab.dashboard.datastore import DataStore, FleetSource
from overwatch_lab.dashboard.fleet import FleetTable
from overwatch_lab.dashboard.frames import quarantine_records
from overwatch_lab.dashboard.map import FleetMap
from overwatch_lab.dashboard.stats import WorkerStats
from overwatch_lab.dashboard.streams import lost_total
from overwatch_lab.dashboard.telemetry import TelemetryPanel

TITLE = "overwatch-lab · fleet"
HEADER_COLOR = "#24292f"
ACCENT = "#0969da"
PERIODS_S: dict[str, float] = {"0.5 s": 0.5, "1 s": 1.0, "2 s": 2.0, "5 s": 5.0, "10 s": 10.0}
"""Refresh periods offered to the operator."""

MARKER_LEGEND = (
    "&#9650; aircraft &nbsp; &#9632; ground &nbsp; &#9670; surface &nbsp; &#9660; underwater"
    " &nbsp; &#9679; sensor &nbsp; &#9733; station &nbsp; &#10005; geo"
)


# ---------------------------------------------------------------------------------------------- views
def _card(label: str, value: str, color: str = "#24292f", note: str = "") -> str:
    note_html = f'<div style="font-size:11px;color:#57606a">{html.escape(note)}</div>' if note else ""
    return (
        '<div style="flex:1 1 120px;min-width:110px;padding:8px 12px;border:1px solid #d0d7de;'
        'border-radius:6px;background:#fff">'
        f'<div style="font-size:11px;text-transform:uppercase;letter-spacing:.04em;color:#57606a">{label}</div>'
        f'<div style="font-size:22px;font-weight:600;color:{color};line-height:1.3">{value}</div>{note_html}</div>'
    )


class Overview(pn.viewable.Viewer):
    """Headline numbers (entities, live, stale, msg/s, quarantined, lag) and the refresh status."""

    data_store = param.ClassSelector(class_=DataStore, doc="Where the numbers come from.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.cards = pn.pane.HTML("", sizing_mode="stretch_width", margin=(5, 10))
        self.status = pn.pane.HTML("", sizing_mode="stretch_width", margin=(0, 10))
        self._good_at: float | None = None
        self._sync()

    @param.depends("data_store.refreshes", "data_store.errors", watch=True)
    def _sync(self) -> None:
        store = self.data_store
        if store is None or store.fleet is None:
            return
        fleet, stats, rates = store.fleet, store.stats, store.rates
        live = int(fleet["is_live"].sum()) if not fleet.empty else 0
        workers = {k: v for k, v in stats.items() if isinstance(v, dict) and "handled" in v}
        quarantined = quarantine_records(stats)  # the stream's records: they survive a restart
        lag = max((int(v.get("lag") or 0) for v in workers.values()), default=0)
        lost = lost_total(stats)
        tel_rate = rates.get("telemetry-worker", {}).get("handled_per_s")
        total_rate = sum(r.get("handled_per_s", 0.0) for r in rates.values())
        self.cards.object = (
            '<div style="display:flex;gap:8px;flex-wrap:wrap">'
            + _card("Entities", str(len(fleet)))
            + _card("Live", str(live), "#1a7f37")
            + _card("Stale", str(len(fleet) - live), "#8c959f" if len(fleet) == live else "#bf8700")
            + _card(
                "Telemetry msg/s",
                "–" if tel_rate is None else f"{tel_rate:,.0f}",
                note=f"all workers {total_rate:,.0f}/s" if rates else "",
            )
            + _card("Quarantined", f"{quarantined:,}", "#cf222e" if quarantined else "#24292f")
            + _card("Max lag", f"{lag:,}", "#bf8700" if lag else "#24292f", note="messages behind")
            + _card("Lost", f"{lost:,}", "#cf222e" if lost else "#24292f", note="discarded unseen by streams")
            + "</div>"
        )
        self.status.object = self._status_html(store)

    def _status_html(self, store: DataStore) -> str:
        if store.healthy and store.last_refresh_at is not None:
            self._good_at = store.last_refresh_at
            stamp = time.strftime("%H:%M:%S", time.localtime(store.last_refresh_at))
            text = (
                f'<span style="color:#1a7f37">&#9679;</span> updated {stamp} · read {store.last_refresh_s * 1000:.0f} ms'
                f" · every {store.period_s:g} s · {store.refreshes} refreshes"
            )
            if store.skipped:
                text += f" · {store.skipped} ticks skipped (slow reads)"
            if store.last_error:
                text += f' · <span style="color:#bf8700">{html.escape(store.last_error)}</span>'
            return f'<div style="font-size:12px;color:#57606a">{text}</div>'
        if store.errors == 0:
            return '<div style="font-size:12px;color:#57606a">&#9675; waiting for the first refresh…</div>'
        since = f", showing data from {time.time() - self._good_at:.0f} s ago" if self._good_at else ""
        return (
            '<div style="font-size:12px;color:#cf222e">&#9679; lab unreachable'
            f" ({store.errors} failed refreshes{since}): {html.escape(store.last_error or '')}</div>"
        )

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(self.cards, self.status, sizing_mode="stretch_width")


class Dashboard(pn.viewable.Viewer):
    """One operator's dashboard: a DataStore and every view over it.

    Use :func:`build_app` (a layout) or :meth:`template` (the served page); both show the same
    objects. ``start()`` begins the periodic refresh.
    """

    source = param.Parameter(doc="A Lab, or any FleetSource.")
    period_s = param.Number(default=1.0, bounds=(0.1, 3600), doc="Seconds between refreshes.")
    tile_url = param.String(default=None, allow_None=True, doc="Optional local XYZ tile URL for the map.")
    title = param.String(default=TITLE, doc="Page title.")
    role: param.Selector[str] = param.Selector(
        default=OPERATOR, objects=list(ROLES), doc="The session's role: a viewer sees but cannot command."
    )
    user = param.String(default=None, allow_None=True, doc="The logged-in user (None: no login).")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.session_closed = False  # set when its served session is destroyed
        self.data_store = DataStore(source=self.source, period_s=self.period_s)
        self.command_box = CommandBox(data_store=self.data_store, role=self.role, user=self.user)
        self.overview = Overview(data_store=self.data_store)
        self.fleet_table = FleetTable(data_store=self.data_store)
        self.fleet_map = FleetMap(data_store=self.data_store, tile_url=self.tile_url)
        self.telemetry = TelemetryPanel(data_store=self.data_store)
        self.worker_stats = WorkerStats(data_store=self.data_store)
        self.period = pn.widgets.Select(
            label="Refresh every",
            options=PERIODS_S,
            value=min(PERIODS_S.values(), key=lambda p: abs(p - self.period_s)),
            sizing_mode="stretch_width",
        )
        self.period.param.watch(lambda e: setattr(self.data_store, "period_s", e.new), "value")
        self.color_by = pn.widgets.RadioButtonGroup.from_param(
            self.fleet_map.param.color_by, color="light", variant="outline"
        )
        self.labels = pn.widgets.Checkbox.from_param(self.fleet_map.param.show_labels, label="names on map")

    def start(self) -> Dashboard:
        """Start the periodic refresh; in a served session, stop it when the session ends.

        The first read happens now, blocking, so the page (or the notebook's output) is built
        with the fleet already in it. In a served session the periodic refresh starts once the
        page has loaded (``pn.state.onload``): a model changed while the browser is still
        rendering the page points its stylesheets at Panel's CDN instead of this server, and a
        table whose data is replaced before Tabulator finished building throws
        "Cannot read properties of null (reading 'verticalFillMode')".
        """
        doc = pn.state.curdoc
        if doc is not None and doc.session_context is not None:
            self.data_store.refresh()

            def start_refresh() -> None:
                self.data_store.start()  # which stops it when the session is destroyed

            pn.state.onload(start_refresh)
            pn.state.on_session_destroyed(self._session_destroyed)
        else:
            self.data_store.refresh()  # a notebook shows the fleet in the cell's own output
            self.data_store.start()
        return self

    def stop(self) -> None:
        """Stop the periodic refresh (idempotent)."""
        self.data_store.stop()

    def _session_destroyed(self, _context: Any) -> None:
        self.session_closed = True
        self.stop()

    def _fleet_tab(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.Row(
                pn.Column(self.fleet_map, sizing_mode="stretch_width"),
                pn.Column(self.command_box, self.telemetry, width=460),
                sizing_mode="stretch_width",
            ),
            self.fleet_table,
            sizing_mode="stretch_width",
            name="Fleet",
        )

    def _tabs(self) -> pn.Tabs:
        return pn.Tabs(
            ("Fleet", self._fleet_tab()),
            ("Fabric health", self.worker_stats),
            sizing_mode="stretch_width",
            dynamic=False,
        )

    def __panel__(self) -> pn.viewable.Viewable:
        header = pn.pane.HTML(
            f'<div style="font-size:18px;font-weight:600;color:#fff">{html.escape(self.title)}</div>',
            styles={"background": HEADER_COLOR, "padding": "8px 14px", "border-radius": "6px"},
            sizing_mode="stretch_width",
            margin=(5, 10),
        )
        controls = pn.Row(
            pn.Column(self.period, width=140),
            pn.Column(pn.pane.HTML("<small>Colour by</small>", margin=(0, 5)), self.color_by, width=160),
            self.labels,
            pn.pane.HTML(f'<small style="color:#57606a">{MARKER_LEGEND}</small>', margin=(25, 10, 0, 10)),
            sizing_mode="stretch_width",
        )
        return pn.Column(header, self.overview, controls, self._tabs(), sizing_mode="stretch_width")

    def template(self) -> pn.template.BootstrapTemplate:
        """Return the served page: header, sidebar with the controls, the views in the main area."""
        about = html.escape(_describe(self.source))
        sidebar = [
            self.period,
            pn.pane.HTML("<small>Colour map by</small>", margin=(10, 10, 0, 10)),
            self.color_by,
            self.labels,
            pn.pane.HTML(
                f'<div style="font-size:12px;color:#57606a;line-height:1.8">{MARKER_LEGEND.replace(" &nbsp; ", "<br>")}'
                "<br><i>faded = stale link</i></div>",
                margin=(10, 10),
            ),
            pn.pane.HTML(f'<div style="font-size:11px;color:#57606a;word-break:break-all">{about}</div>'),
        ]
        return pn.template.BootstrapTemplate(
            title=self.title,
            header_background=HEADER_COLOR,
            sidebar_width=230,
            sidebar=sidebar,
            main=[pn.Column(self.overview, self._tabs(), sizing_mode="stretch_width")],
        )


def _describe(source: object) -> str:
    config = getattr(source, "config", None)
    data_dir = getattr(config, "data_dir", None) or getattr(source, "data_dir", None)
    return f"source: {type(source).__name__}" + (f" · {data_dir}" if data_dir else "")


def build_app(
    source: FleetSource, *, period_s: float = 1.0, tile_url: str | None = None, start: bool = True
) -> pn.viewable.Viewable:
    """Build the whole dashboard over ``source`` as one layout.

    Displays inline in a notebook (after ``pn.extension("tabulator", inline=True)`` when
    offline) and works with ``.servable()``.

    Args:
        source: a Lab (``Lab.up()`` or ``Lab.attach(...)``) or any FleetSource.
        period_s: seconds between refreshes.
        tile_url: optional XYZ tile URL (local!) drawn under the map.
        start: begin refreshing now (in a notebook this needs the kernel's running loop).

    Returns:
        The layout; the :class:`Dashboard` behind it is its ``dashboard`` attribute.
    """
    dashboard = Dashboard(source=source, period_s=period_s, tile_url=tile_url)
    layout = dashboard.__panel__()
    # Notebooks reach the DataStore via layout.dashboard.data_store (an attribute Viewable does not declare).
    layout.dashboard = dashboard  # type: ignore[attr-defined]
    if start:
        dashboard.start()
    return layout


# ---------------------------------------------------------------------------------------------- panel serve
OPERATORS_ENV = "OVERWATCH_LAB_DASHBOARD_OPERATORS"
"""Under ``panel serve --basic-auth``: comma-separated users who may command (the others are viewers)."""


def served_identity() -> tuple[str | None, str | None]:
    """(user, role) of the ``panel serve`` session being built; role None: refuse the session.

    With Panel's authentication (``--basic-auth``, OAuth) the user is the logged-in one and an
    operator only when listed in ``$OVERWATCH_LAB_DASHBOARD_OPERATORS``. Without it only a
    browser on this machine is served (the local operator): ``panel serve`` listens on every
    interface unless given ``--address 127.0.0.1``, and a remote client gets no data unauthenticated.
    """
    import os

    from overwatch_lab.dashboard.access import LOCAL_USER, VIEWER, is_loopback

    if pn.config.basic_auth or pn.config.oauth_provider:
        user = pn.state.user
        operators = {u.strip() for u in os.environ.get(OPERATORS_ENV, "").split(",") if u.strip()}
        return user, OPERATOR if user in operators else VIEWER
    request = getattr(pn.state.curdoc.session_context, "request", None) if pn.state.curdoc else None
    client = getattr(request, "remote_ip", None) or ""
    if is_loopback(client):
        return LOCAL_USER, OPERATOR
    return None, None


if pn.state.served:
    import asyncio
    import logging

    from overwatch_lab.dashboard.attached import AttachedLab, default_data_dir
    from overwatch_lab.dashboard.sockets import quiet_closed_websockets, tolerate_sessionless_close

    quiet_closed_websockets(asyncio.get_event_loop())
    tolerate_sessionless_close()
    _user, _role = served_identity()
    if _role is None:
        logging.getLogger(__name__).warning(
            "dashboard: refused a session from another machine: no authentication configured "
            "(panel serve --basic-auth FILE --cookie-secret ..., or --address 127.0.0.1)"
        )
        pn.pane.HTML(
            "<h3>Refused</h3><p>This dashboard is served without authentication and answers only on "
            "this machine. Serve it with <code>--basic-auth</code>, or use <code>overwatch-lab dashboard"
            " --dashboard-users FILE</code>.</p>"
        ).servable(title=TITLE)
    else:
        # Panel types the factory as taking no arguments, but passes **kwargs to it (and keys the cache on them).
        _source = pn.state.as_cached(
            "overwatch-lab-attached",
            AttachedLab,  # type: ignore[arg-type]
            data_dir=str(default_data_dir()),
        )
        _dashboard = Dashboard(source=_source, user=_user, role=_role).start()
        _dashboard.template().servable(title=TITLE)
