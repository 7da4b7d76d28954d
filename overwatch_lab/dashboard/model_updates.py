"""ModelUpdates: Bokeh model changes made where Bokeh allows them, in the model's document.

A served Bokeh document may only be changed while its lock is held. Panel takes care of that
for its own widgets and panes, but a view that changes Bokeh models itself (a
``ColumnDataSource``'s ``data``, a selection, a range) from a param watcher runs wherever the
watcher fired: inside Panel's handling of a browser event (a table row clicked), which does not
hold the lock, or on a refresh thread. Changing a model there raises ``RuntimeError:
_pending_writes should be non-None when we have a document lock``.

Panel's documented remedy (how-to "Modify Bokeh Models") is to schedule the change on the
document's event loop (``pn.state.execute`` / ``Document.add_next_tick_callback``), where the
lock is held. :class:`ModelUpdates` does that for one view: each change is named, a change
asked for again before it ran replaces the queued one (so a burst of refreshes costs one
update), and outside a server session (a notebook, a unit test, a model not yet displayed)
the change runs at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class ModelUpdates:
    """Applies named changes to the Bokeh models under ``root`` inside ``root``'s document lock.

    Args:
        root: a Bokeh model (a figure) whose document the changes belong to.
    """

    def __init__(self, root: Any) -> None:
        self._root = root
        self._lock = threading.Lock()
        self._pending: dict[str, Callable[[], None]] = {}
        self.applied = 0  # changes run (immediately or from the document's loop)
        self.coalesced = 0  # changes replaced by a newer one before they ran

    def apply(self, name: str, change: Callable[[], None]) -> None:
        """Run ``change`` now when no server session holds the model, else on its document's next tick.

        Args:
            name: what the change updates; a queued change of the same name is replaced.
            change: changes Bokeh models; it reads the view's current state when it runs.
        """
        doc = self._root.document
        if doc is None or doc.session_context is None:
            self.applied += 1
            change()
            return
        with self._lock:
            schedule = not self._pending
            if name in self._pending:
                self.coalesced += 1
            self._pending[name] = change
        if schedule:
            try:
                doc.add_next_tick_callback(lambda: self._flush(doc))
            except Exception as exc:  # the session was destroyed: nothing left to update
                log.debug("bokeh model change dropped (%s): %r", name, exc)
                with self._lock:
                    self._pending.clear()

    def _flush(self, doc: Any) -> None:
        from panel.io.state import set_curdoc

        with self._lock:
            pending, self._pending = self._pending, {}
        with set_curdoc(doc):
            for name, change in pending.items():
                self.applied += 1
                try:
                    change()
                except Exception:  # one view's bug must not stop the others' updates
                    log.exception("dashboard: updating %s failed", name)
