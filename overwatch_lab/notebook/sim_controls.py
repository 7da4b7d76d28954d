"""``sim.controls()``: ipywidgets to play, pause, set the speed and inject a fault into a simulation.

Each control calls the simulation's own blocking methods (``pause``, ``play``, ``set_speed``,
``inject``), which hand the change to the lab's loop thread and return within milliseconds, so a
callback never holds the kernel for long. Widget callbacks run on the kernel's thread, never on
the lab's loop, so those calls cannot deadlock. A failing call shows its error under the controls;
nothing is raised into the frontend, where it would be lost.

Below the controls, the simulation's card (state, speed, faults) is redrawn after every action.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

from overwatch_lab.notebook.html import Safe, badge, esc

SPEED_EXP_MIN = -1.0
SPEED_EXP_MAX = 2.0
"""The speed slider is logarithmic: 10**-1 = 0.1× to 10**2 = 100× real time."""
DEFAULT_FAULT_S = 20.0  # simulated seconds a fault lasts unless changed
ALL_DEVICES = "*"


class Controllable(Protocol):
    """What the controls drive (a :class:`~overwatch_lab.simulation.Simulation` is one)."""

    @property
    def state(self) -> str:
        """new, running, paused, finished, stopped or failed."""
        ...

    @property
    def speed(self) -> float:
        """Simulated seconds per wall second."""
        ...

    @property
    def entity_ids(self) -> list[str]:
        """The devices a fault may target."""
        ...

    @property
    def fault_kinds(self) -> list[str]:
        """The fault kinds ``inject`` takes."""
        ...

    def play(self) -> None:
        """Resume."""
        ...

    def pause(self) -> None:
        """Freeze simulated time."""
        ...

    def set_speed(self, speed: float) -> None:
        """Change the speed factor."""
        ...

    def inject(self, kind: Any, duration_s: float, targets: Any = "*", **params: Any) -> Any:
        """Inject a fault now; returns it."""
        ...

    def _repr_html_(self) -> str: ...


class SimulationControls:
    """Play/pause, speed, fault injection and the simulation's card, as one ipywidgets box.

    Attributes:
        widget: the box to display (displaying this object displays it).
        paused: ToggleButton, down while paused.
        speed: FloatLogSlider, simulated seconds per wall second.
        kind / target / duration: the fault to inject, on which device, for how many simulated s.
        inject: Button that injects it.
        message: HTML, what the last action did or why it failed.
        card: HTML, the simulation's card after the last action.
    """

    def __init__(self, sim: Controllable) -> None:
        import ipywidgets as w

        self.sim = sim
        self._syncing = False
        self.paused = w.ToggleButton(description="Pause", icon="pause", tooltip="pause / resume the fleet")
        self.speed = w.FloatLogSlider(
            value=_clamp(sim.speed),
            base=10,
            min=SPEED_EXP_MIN,
            max=SPEED_EXP_MAX,
            step=0.05,
            description="speed ×",
            continuous_update=False,
            readout_format=".2g",
        )
        self.kind = w.Dropdown(options=list(sim.fault_kinds), description="fault")
        self.target = w.Dropdown(
            options=[("every device", ALL_DEVICES), *((e, e) for e in sim.entity_ids)], description="on"
        )
        self.duration = w.BoundedFloatText(
            value=DEFAULT_FAULT_S, min=0.1, max=86_400.0, step=1.0, description="for (sim s)"
        )
        self.inject = w.Button(description="Inject", icon="bolt", button_style="warning")
        self.message = w.HTML()
        self.card = w.HTML()
        self.paused.observe(self._on_paused, names="value")
        self.speed.observe(self._on_speed, names="value")
        self.inject.on_click(self._on_inject)
        self.widget = w.VBox(
            [
                w.HBox([self.paused, self.speed]),
                w.HBox([self.kind, self.target, self.duration, self.inject]),
                self.message,
                self.card,
            ]
        )
        self._sync()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    # ------------------------------------------------------------------ callbacks (kernel thread)
    def _on_paused(self, change: dict[str, Any]) -> None:
        if self._syncing:
            return
        if change["new"]:
            self._do("paused", self.sim.pause)
        else:
            self._do("resumed", self.sim.play)

    def _on_speed(self, change: dict[str, Any]) -> None:
        if self._syncing:
            return
        speed = float(change["new"])
        self._do(f"speed {speed:.2g}× real time", lambda: self.sim.set_speed(speed))

    def _on_inject(self, _button: object) -> None:
        kind, target, duration = self.kind.value, self.target.value, float(self.duration.value)
        where = "every device" if target == ALL_DEVICES else target
        result: list[Any] = []

        def go() -> None:
            result.append(self.sim.inject(kind, duration, target))

        self._do(f"injected {kind} on {where} for {duration:g} simulated s", go)
        if result:
            fault_id = getattr(result[0], "fault_id", None)
            if fault_id:
                self._say(f"injected {kind} on {where} for {duration:g} simulated s ({fault_id})")

    # ------------------------------------------------------------------ helpers
    def _do(self, done: str, action: Callable[[], object]) -> None:
        """Run ``action``; say ``done`` or the error; then show the simulation as it is now."""
        try:
            action()
        except Exception as exc:  # shown under the controls: a widget callback has nowhere to raise to
            self._say(f"{type(exc).__name__}: {exc}", bad=True)
        else:
            self._say(done)
        self._sync()

    def _say(self, text: str, *, bad: bool = False) -> None:
        self.message.value = Safe(f"{badge('error', 'bad')} {esc(text, 600)}") if bad else esc(text, 600)

    def _sync(self) -> None:
        """Make the controls show the simulation's real state (a finished run cannot be paused)."""
        self._syncing = True
        try:
            try:
                state, speed = self.sim.state, self.sim.speed
            except Exception as exc:  # the card says why; the controls keep their values
                self._say(f"{type(exc).__name__}: {exc}", bad=True)
            else:
                self.paused.value = state == "paused"
                self.paused.description = "Resume" if state == "paused" else "Pause"
                self.paused.icon = "play" if state == "paused" else "pause"
                done = state in ("finished", "stopped", "failed")
                for control in (self.paused, self.speed, self.inject):
                    control.disabled = done
                if speed > 0 and not math.isclose(self.speed.value, _clamp(speed), rel_tol=1e-3):
                    self.speed.value = _clamp(speed)
            self.card.value = self.sim._repr_html_()
        finally:
            self._syncing = False


def _clamp(speed: float) -> float:
    """``speed`` within the slider's range (a manual run, speed 0, shows the slowest)."""
    lo, hi = 10**SPEED_EXP_MIN, 10**SPEED_EXP_MAX
    return min(max(speed, lo), hi) if math.isfinite(speed) else hi
