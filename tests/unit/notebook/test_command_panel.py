"""The command panel's form: fields per action, validation before sending, the ladder redrawn per
transition (a recording stand-in for ``lab.commands.send``; the real path is in
tests/integration/test_notebook_reprs.py)."""

from __future__ import annotations

import concurrent.futures
from typing import Any

from overwatch_lab.notebook.command_panel import CommandPanel


class Handle:
    def __init__(self, command_id: str) -> None:
        self.command_id = command_id
        self.on_transition: Any = None
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def watch(self, on_transition: Any, timeout: float = 60.0) -> concurrent.futures.Future[Any]:
        self.on_transition = on_transition
        return self.future


class Sender:
    def __init__(self, refuse: Exception | None = None) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.handles: list[Handle] = []
        self.refuse = refuse

    def __call__(self, entity_id: str, action: str, **params: Any) -> Handle:
        if self.refuse:
            raise self.refuse
        self.sent.append((entity_id, action, params))
        self.handles.append(Handle(f"cmd-{len(self.handles) + 1}"))
        return self.handles[-1]


ENTITIES = [("Quad <one> (uav-1)", "uav-1"), ("uav-2", "uav-2")]


def test_each_action_gets_its_own_fields_required_first():
    panel = CommandPanel(Sender(), ENTITIES)
    assert panel.action.value == "rtl" and panel.params == {}
    panel.action.value = "goto"
    assert list(panel.params)[:2] == ["lat", "lon"] and set(panel.params) == {
        "lat", "lon", "alt_m", "alt_msl_m", "speed_mps"}  # fmt: skip
    assert panel.params["lat"].description == "lat *" and "-90..90" in panel.params["lat"].placeholder


def test_a_bad_parameter_is_refused_before_anything_is_sent():
    send = Sender()
    panel = CommandPanel(send, ENTITIES)
    panel.action.value = "goto"
    panel.params["lat"].value = "95"
    panel.params["lon"].value = "-96.8"
    panel.send.click()
    assert send.sent == [] and "not sent" in panel.message.value and "outside -90..90" in panel.message.value
    panel.params["lat"].value = ""
    panel.send.click()
    assert send.sent == [] and "lat" in panel.message.value
    panel.params["lat"].value, panel.ttl.value = "32.9", "-1"
    panel.send.click()
    assert send.sent == [] and "ttl_s must be &gt; 0" in panel.message.value


def test_values_are_read_as_json_or_text_and_sent():
    send = Sender()
    panel = CommandPanel(send, ENTITIES)
    panel.entity.value = "uav-2"
    panel.action.value = "follow_route"
    panel.params["waypoints"].value = "[[32.9, -96.8], [32.91, -96.8, 40]]"
    panel.params["loop"].value = "true"
    panel.ttl.value = "15"
    panel.send.click()
    assert send.sent == [
        (
            "uav-2",
            "follow_route",
            {"ttl_s": 15.0, "waypoints": [[32.9, -96.8], [32.91, -96.8, 40]], "loop": True},
        )
    ]
    panel.action.value = "set_mode"
    panel.params["mode"].value = "LOITER"
    panel.ttl.value = ""
    panel.send.click()
    assert send.sent[-1] == ("uav-2", "set_mode", {"ttl_s": None, "mode": "LOITER"})


def test_every_transition_redraws_the_ladder_and_a_new_command_takes_over():
    send = Sender()
    panel = CommandPanel(send, ENTITIES)
    panel.send.click()
    first = send.handles[0]
    assert panel.handle is first and "sent rtl to uav-1 as cmd-1" in panel.message.value
    assert "not recorded yet" in panel.ladder.value
    first.on_transition("uav-1", "QUEUED", "2026-01-01T00:00:00Z", None)
    first.on_transition("uav-1", "SENT", "2026-01-01T00:00:00.020Z", None)
    assert "+20 ms" in panel.ladder.value and "not recorded" not in panel.ladder.value
    panel.send.click()
    assert first.future.cancelled()  # the panel stopped watching the first command
    first.on_transition("uav-1", "SUCCEEDED", "2026-01-01T00:00:00.050Z", None)
    assert "cmd-2" in panel.ladder.value and "SUCCEEDED" not in panel.ladder.value


def test_a_refused_send_is_shown_not_raised():
    panel = CommandPanel(Sender(refuse=RuntimeError("commands stream <full>")), ENTITIES)
    panel.send.click()
    assert "RuntimeError: commands stream &lt;full&gt;" in panel.message.value and panel.handle is None


def test_without_entities_the_panel_says_what_to_do():
    panel = CommandPanel(Sender(), [])
    assert panel.send.disabled and "no entity registered yet" in panel.message.value
