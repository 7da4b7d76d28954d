"""``lab.commands.widget()``: ipywidgets to send a command to an entity and watch its ladder live.

Pick an entity and an action; the panel shows one field per parameter of that action (required
ones marked ``*``, the unit and range as placeholder). Values are read as JSON where they parse
(``32.9``, ``true``, ``[[32.9, -96.8]]``) and as text otherwise (``LOITER``), then checked with
the wire contract's own :func:`~overwatch_lab.protocol.command_actions.validate_params` before
anything is sent: a bad value is reported under the panel and nothing leaves.

Send publishes through ``lab.commands.send`` (a blocking call of a few milliseconds) and then
watches the command with :meth:`~overwatch_lab.commands.api.CommandHandle.watch`, which runs on the
lab's loop: every transition redraws the ladder from there, so the kernel is never held while
the command travels. Sending again stops watching the previous command. Errors show in the panel.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from overwatch_lab.notebook.cards import ladder_card
from overwatch_lab.notebook.html import Safe, badge, esc
from overwatch_lab.protocol.command_actions import PARAM_DOCS, Action, action_params, validate_params

log = logging.getLogger(__name__)

FOLLOW_S = 120.0
"""Seconds the panel watches a command before it stops redrawing (the handle keeps working)."""

Transition = Callable[[str, str, str, "str | None"], None]


class Watchable(Protocol):
    """What the panel needs of a sent command (a :class:`~overwatch_lab.commands.api.CommandHandle`)."""

    command_id: str

    def watch(self, on_transition: Transition, timeout: float = 60.0) -> concurrent.futures.Future[Any]:
        """Report transitions as they happen, on the lab's loop; a future of the final status."""
        ...


Send = Callable[..., Watchable]
"""``send(entity_id, action, ttl_s=..., **params)``: ``lab.commands.send``."""


class CommandPanel:
    """Entity, action, parameters, Send, and the live ladder of the last command, as one box.

    Attributes:
        widget: the box to display (displaying this object displays it).
        entity / action: Dropdowns.
        params: name → Text field of the selected action's parameters.
        ttl: Text, optional seconds the device has to acknowledge.
        send: the Send button.
        message: HTML, what the last Send did or why nothing was sent.
        ladder: HTML, the last command's ladder, redrawn on every transition.
        handle: the last command sent (None before the first).
    """

    def __init__(
        self, send: Send, entities: Sequence[tuple[str, str]], *, follow_s: float = FOLLOW_S
    ) -> None:
        """Build the panel.

        Args:
            send: sends one command (``lab.commands.send``).
            entities: (label, entity_id) choices, in the order shown.
            follow_s: how long each command's ladder is redrawn.
        """
        import ipywidgets as w

        self._send = send
        self._follow_s = follow_s
        self._watching: concurrent.futures.Future[Any] | None = None
        self._history: dict[str, list[dict[str, Any]]] = {}
        self.handle: Watchable | None = None
        self.entity = w.Dropdown(options=list(entities), description="entity")
        self.action = w.Dropdown(
            options=[str(a) for a in Action], value=str(Action.RTL), description="action"
        )
        self.ttl = w.Text(placeholder="default", description="ttl_s")
        self.params: dict[str, Any] = {}
        self._params_box = w.VBox()
        self.send = w.Button(description="Send", icon="paper-plane", button_style="primary")
        self.message = w.HTML()
        self.ladder = w.HTML()
        self.action.observe(lambda _change: self._build_fields(), names="value")
        self.send.on_click(self._on_send)
        self.widget = w.VBox(
            [
                w.HBox([self.entity, self.action]),
                self._params_box,
                w.HBox([self.ttl, self.send]),
                self.message,
                self.ladder,
            ]
        )
        self._build_fields()
        if not entities:
            self.send.disabled = True
            self._say("no entity registered yet: register one (or start a fleet), then build the panel again")

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def _build_fields(self) -> None:
        import ipywidgets as w

        allowed, required = action_params(Action(self.action.value))
        self.params = {
            name: w.Text(
                description=f"{name}{' *' if name in required else ''}",
                placeholder=PARAM_DOCS.get(name, ""),
                layout=w.Layout(width="460px"),
                style={"description_width": "110px"},
            )
            for name in sorted(allowed, key=lambda n: (n not in required, n))
        }
        self._params_box.children = tuple(self.params.values())

    # ------------------------------------------------------------------ reading the form
    def values(self) -> tuple[str, str, dict[str, Any], float | None]:
        """(entity_id, action, params, ttl_s) as the form holds them, validated.

        Raises:
            EnvelopeError: a parameter the wire contract refuses (the message names it).
            ValueError: no entity chosen, or a ttl_s that is not a positive number.
        """
        entity_id = self.entity.value
        if not entity_id:
            raise ValueError("choose an entity")
        action = str(self.action.value)
        params = {name: _parse(field.value) for name, field in self.params.items() if field.value.strip()}
        validate_params(Action(action), params)  # the lab's own rules: refused here, nothing is sent
        ttl_text = self.ttl.value.strip()
        ttl: float | None = None
        if ttl_text:
            try:
                ttl = float(ttl_text)
            except ValueError:
                raise ValueError(f"ttl_s must be a number of seconds, got {ttl_text!r}") from None
            if not ttl > 0:
                raise ValueError(f"ttl_s must be > 0, got {ttl_text!r}")
        return entity_id, action, params, ttl

    # ------------------------------------------------------------------ callbacks (kernel thread)
    def _on_send(self, _button: object) -> None:
        try:
            entity_id, action, params, ttl = self.values()
        except Exception as exc:  # shown in the panel: nothing was sent
            self._say(f"not sent: {exc}", bad=True)
            return
        try:
            handle = self._send(entity_id, action, ttl_s=ttl, **params)
        except Exception as exc:  # idem: the lab refused to queue it
            self._say(f"not sent: {type(exc).__name__}: {exc}", bad=True)
            return
        if self._watching is not None:
            self._watching.cancel()
        self.handle = handle
        self._history = {}
        self._say(f"sent {action} to {entity_id} as {handle.command_id}")
        self.ladder.value = ladder_card(handle.command_id, entity_id, {}, action=action)
        try:
            self._watching = handle.watch(self._transition_of(handle, entity_id, action), self._follow_s)
        except Exception as exc:  # the command is queued; only its live ladder is missing
            self._say(f"sent as {handle.command_id}, but its status cannot be watched: {exc}", bad=True)

    def _transition_of(self, handle: Watchable, target: str, action: str) -> Transition:
        """The callback that redraws ``handle``'s ladder (runs on the lab's loop: never raises)."""

        def on_transition(entity_id: str, status: str, at: str, reason: str | None) -> None:
            if handle is not self.handle:
                return  # a newer command took the panel
            try:
                self._history.setdefault(entity_id, []).append({"status": status, "at": at, "reason": reason})
                deliveries = {
                    e: {"status": h[-1]["status"], "reason": h[-1]["reason"], "history": h}
                    for e, h in self._history.items()
                }
                self.ladder.value = ladder_card(handle.command_id, target, deliveries, action=action)
            except Exception:  # a redraw must not end the watch
                log.exception("redrawing the ladder of %s failed", handle.command_id)

        return on_transition

    def _say(self, text: str, *, bad: bool = False) -> None:
        self.message.value = Safe(f"{badge('error', 'bad')} {esc(text, 600)}") if bad else esc(text, 600)

    def close(self) -> None:
        """Stop watching the last command (the widget stays)."""
        if self._watching is not None:
            self._watching.cancel()


def _parse(text: str) -> Any:
    """A field's value: JSON where it parses (numbers, true/false, lists), else the text itself."""
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        return text
