"""The public surface is what ``__all__`` says, and every name in it exists."""

from __future__ import annotations

import overwatch_lab


def test_all_names_exist_and_are_sorted():
    for name in overwatch_lab.__all__:
        assert hasattr(overwatch_lab, name), name
    assert sorted(overwatch_lab.__all__) == overwatch_lab.__all__


def test_public_classes_are_exported():
    assert {"Lab", "LabConfig", "LabState", "OverwatchError"} <= set(overwatch_lab.__all__)


def test_every_error_derives_from_overwatch_error():
    from overwatch_lab import errors

    for name in dir(errors):
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and obj.__module__ == errors.__name__:
            assert issubclass(obj, errors.OverwatchError), name
