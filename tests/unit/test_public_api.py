"""The public surface is what ``__all__`` says, and every name in it exists."""

from __future__ import annotations

import overwatch_lab


def test_all_names_exist_and_are_sorted():
    for name in overwatch_lab.__all__:
        assert hasattr(overwatch_lab, name), name
    assert sorted(overwatch_lab.__all__) == overwatch_lab.__all__


def test_public_classes_are_exported():
    assert {"Lab", "LabConfig", "LabState", "OverwatchError"} <= set(overwatch_lab.__all__)


def test_the_labs_parts_are_exported_as_the_types_it_returns():
    """``lab.commands``, ``lab.frames``, ``lab.fleet`` and what they hand out are public types."""
    assert {"CommandHandle", "Commands", "EntityState", "Fleet", "Frames", "Simulation"} <= set(
        overwatch_lab.__all__
    )
    lab = overwatch_lab.Lab(data_dir="never-started")  # building a Lab starts nothing
    assert isinstance(lab.commands, overwatch_lab.Commands)
    assert isinstance(lab.frames, overwatch_lab.Frames)
    assert isinstance(lab.fleet, overwatch_lab.Fleet)
    assert lab.fleet.running == []


def test_the_old_lab_methods_are_gone():
    """One way to do each thing: the parts replaced these (issue 7)."""
    old = ["send_command", "broadcast_command", "command", "commands_frame", "command_history_frame",
           "telemetry_frame", "entities_frame", "device_events_frame", "quarantine_frame", "states",
           "simulate"]  # fmt: skip
    assert [name for name in old if hasattr(overwatch_lab.Lab, name)] == []


def test_every_error_derives_from_overwatch_error():
    from overwatch_lab import errors

    for name in dir(errors):
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and obj.__module__ == errors.__name__:
            assert issubclass(obj, errors.OverwatchError), name
