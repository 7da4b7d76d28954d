"""The simulation controls, driven programmatically against a recording stand-in (pure widget logic;
tests/integration/test_notebook_reprs.py drives them against a real fleet)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from overwatch_lab.errors import ScenarioError
from overwatch_lab.notebook.sim_controls import SimulationControls


@dataclass
class StandIn:
    state: str = "running"
    speed: float = 1.0
    entity_ids: list[str] = field(default_factory=lambda: ["d-1", "d-2"])
    fault_kinds: list[str] = field(default_factory=lambda: ["link_loss", "reboot"])
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    refuse: str | None = None

    def play(self) -> None:
        self.calls.append(("play",))
        if self.state == "paused":
            self.state = "running"

    def pause(self) -> None:
        self.calls.append(("pause",))
        if self.state == "running":
            self.state = "paused"

    def set_speed(self, speed: float) -> None:
        self.calls.append(("speed", speed))
        self.speed = speed

    def inject(self, kind: Any, duration_s: float, targets: Any = "*", **params: Any) -> Any:
        if self.refuse:
            raise ScenarioError(self.refuse)
        self.calls.append(("inject", kind, duration_s, targets))
        return type("Fault", (), {"fault_id": f"live-1-{kind}"})()

    def _repr_html_(self) -> str:
        return f"<div>{self.state} at {self.speed:g}</div>"


def test_the_toggle_pauses_and_resumes_and_shows_which():
    sim = StandIn()
    c = SimulationControls(sim)
    assert c.paused.value is False and c.paused.description == "Pause"
    c.paused.value = True
    assert sim.state == "paused" and c.paused.description == "Resume" and c.message.value == "paused"
    assert c.card.value == "<div>paused at 1</div>"
    c.paused.value = False
    assert sim.state == "running" and sim.calls == [("pause",), ("play",)]


def test_the_slider_sets_the_speed():
    sim = StandIn(speed=2.0)
    c = SimulationControls(sim)
    assert c.speed.value == 2.0
    c.speed.value = 10.0
    assert sim.calls == [("speed", 10.0)] and "10× real time" in c.message.value


def test_inject_sends_the_chosen_fault_and_target_and_names_the_fault():
    sim = StandIn()
    c = SimulationControls(sim)
    assert c.target.options == (("every device", "*"), ("d-1", "d-1"), ("d-2", "d-2"))
    c.kind.value, c.target.value, c.duration.value = "reboot", "d-2", 5.0
    c.inject.click()
    assert sim.calls == [("inject", "reboot", 5.0, "d-2")]
    assert c.message.value == "injected reboot on d-2 for 5 simulated s (live-1-reboot)"


def test_a_refused_fault_is_shown_escaped_not_raised():
    sim = StandIn(refuse="inject: targets ['<b>x</b>'] match no device of this run")
    c = SimulationControls(sim)
    c.inject.click()
    assert "error" in c.message.value and "ScenarioError" in c.message.value
    assert "&lt;b&gt;x&lt;/b&gt;" in c.message.value and "<b>x" not in c.message.value


def test_a_finished_run_disables_the_controls_and_cannot_be_paused():
    sim = StandIn(state="running")
    c = SimulationControls(sim)
    sim.state = "finished"
    c.paused.value = True  # pause() is a no-op on a finished run: the toggle comes back up
    assert c.paused.value is False and c.paused.disabled and c.inject.disabled and c.speed.disabled


def test_a_manual_run_shows_the_slowest_speed_without_changing_it():
    sim = StandIn(speed=0.0)
    c = SimulationControls(sim)
    assert c.speed.value == 0.1 and sim.calls == []
