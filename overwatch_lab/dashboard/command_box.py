"""CommandBox: send a simple command to the selected entity, if the session's role allows it.

Only an operator (see :mod:`~.access`) may send: for a viewer the box says so, its button is
disabled, and a send that arrives anyway (a crafted event) is refused on the server and logged
with the user's name. Sending runs on a short-lived thread (``source.commands.send``), never on
the page's event loop; the outcome comes back through the document (``add_next_tick_callback``).
"""

from __future__ import annotations

import html
import logging
import threading
from functools import partial
from typing import Any

import panel as pn
import param

from overwatch_lab.dashboard.access import OPERATOR, can_command
from overwatch_lab.dashboard.datastore import DataStore, _deliver_to_doc

log = logging.getLogger(__name__)

ACTIONS: tuple[str, ...] = ("hold", "rtl", "land", "arm", "disarm")
"""Commands without parameters the box offers."""


class CommandBox(pn.viewable.Viewer):
    """Action picker and Send button for ``data_store.selected``; enabled only for commanding roles."""

    data_store = param.ClassSelector(class_=DataStore, doc="Where the selection and the source come from.")
    role = param.String(default=OPERATOR, doc="The session's role (viewer: read-only).")
    user = param.String(default=None, allow_None=True, doc="The session's user, for the log.")
    sent = param.Integer(default=0, doc="Commands sent from this box.")
    refused = param.Integer(default=0, doc="Sends refused because the role may not command.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        allowed = can_command(self.role)
        self.action = pn.widgets.Select(label="Command", options=list(ACTIONS), value="hold", width=110)
        self.send = pn.widgets.Button(
            label="Send", color="primary", disabled=not allowed, width=80, css_classes=["ow-send"]
        )
        note = "" if allowed else f"{html.escape(self.role)}: sees, cannot command"
        self.status = pn.pane.HTML(
            f'<span class="ow-command-status" style="color:#57606a">{note}</span>',
            sizing_mode="stretch_width",
            margin=(5, 10),
        )
        self.send.on_click(self._on_send)

    def _say(self, text: str, color: str = "#57606a") -> None:
        self.status.object = (
            f'<span class="ow-command-status" style="color:{color}">{html.escape(text)}</span>'
        )

    def _on_send(self, _event: Any = None) -> None:
        if not can_command(self.role):
            self.refused += 1
            log.warning("dashboard: user %r (role %s) may not send commands; refused", self.user, self.role)
            self._say(f"refused: the {self.role} role cannot send commands", "#cf222e")
            return
        store = self.data_store
        entity = None if store is None else store.selected
        if store is None or not entity:
            self._say("select an entity first", "#bf8700")
            return
        commands = getattr(store.source, "commands", None)
        if commands is None:
            self._say("this dashboard's source cannot send commands", "#cf222e")
            return
        action = str(self.action.value)
        doc = pn.state.curdoc
        self._say(f"sending {action} to {entity}…")
        threading.Thread(
            target=self._send,
            args=(commands, entity, action, doc),
            name="overwatch-dashboard-command",
            daemon=True,
        ).start()

    def _send(self, commands: Any, entity: str, action: str, doc: Any) -> None:
        try:
            handle = commands.send(entity, action, source=f"dashboard:{self.user or 'local'}")
        except Exception as exc:  # shown to the operator; the dashboard keeps running
            text, color = f"{action} to {entity} failed: {type(exc).__name__}: {exc}", "#cf222e"
        else:
            self.sent += 1
            log.info("dashboard: %r sent %s to %s (%s)", self.user, action, entity, handle.command_id)
            text, color = f"{action} sent to {entity}: {handle.command_id}", "#1a7f37"
        if doc is not None and doc.session_context is not None:
            try:
                _deliver_to_doc(doc, partial(self._say, text, color))
            except Exception as exc:  # the session closed meanwhile
                log.debug("command outcome not shown: %r", exc)
        else:
            self._say(text, color)

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.Row(self.action, self.send, align="end"),
            self.status,
            sizing_mode="stretch_width",
        )
