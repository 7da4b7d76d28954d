"""Field checks for scenario data: each returns the checked value or raises naming the field path.

Every problem raises :class:`~overwatch_lab.errors.ScenarioError` whose message starts with the
field path, e.g. ``fleets[1].spacing_m: must be > 0, got -5``. Used by
:mod:`simulators.scenario_parse` (fields one by one) and :mod:`simulators.scenario` (the
cross-field checks of a built scenario).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, overload

from overwatch_lab.errors import ScenarioError, SubjectError
from overwatch_lab.protocol.subjects import check_token
from simulators.telemetry import BUILDERS


def fail(path: str, problem: str) -> ScenarioError:
    """Return the error for a bad field: ``{path}: {problem}`` (raise it)."""
    return ScenarioError(f"{path}: {problem}")


def number(
    value: object, path: str, *, lo: float | None = None, hi: float | None = None, positive: bool = False
) -> float:
    """A finite number, optionally > 0 (``positive``) and within ``lo``..``hi``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise fail(path, f"must be a finite number, got {value!r}")
    v = float(value)
    if positive and v <= 0:
        raise fail(path, f"must be > 0, got {value!r}")
    if lo is not None and v < lo:
        raise fail(path, f"must be >= {lo}, got {value!r}")
    if hi is not None and v > hi:
        raise fail(path, f"must be <= {hi}, got {value!r}")
    return v


def integer(value: object, path: str, *, lo: int = 0) -> int:
    """An integer (not a bool) >= ``lo``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(path, f"must be an integer, got {value!r}")
    if value < lo:
        raise fail(path, f"must be >= {lo}, got {value}")
    return value


def text(value: object, path: str) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        raise fail(path, f"must be a non-empty string, got {value!r}")
    return value


def token(value: object, path: str) -> str:
    """An identifier token (org, entity or fleet id) as the wire contract allows it."""
    try:
        return check_token(value, path)
    except SubjectError as exc:
        raise fail(path, str(exc).replace(f"{path} ", "", 1)) from None


def mapping(value: object, path: str) -> Mapping[str, Any]:
    """A table (mapping)."""
    if not isinstance(value, Mapping):
        raise fail(path, f"must be a table/mapping, got {type(value).__name__}")
    return value


def items(value: object, path: str) -> list[Any]:
    """A list (or tuple), returned as a list."""
    if not isinstance(value, list | tuple):
        raise fail(path, f"must be a list, got {type(value).__name__}")
    return list(value)


def unknown(obj: Mapping[str, Any], allowed: Iterable[str], path: str) -> None:
    """Raise for the first key of ``obj`` that is not ``allowed`` (naming the allowed ones)."""
    extra = set(obj) - set(allowed)
    if extra:
        name = sorted(map(str, extra))[0]
        raise fail(
            f"{path}.{name}" if path else name, f"unknown field (allowed: {', '.join(sorted(allowed))})"
        )


@overload
def latlon(value: object, path: str) -> tuple[float, float]: ...
@overload
def latlon(value: object, path: str, *, with_alt: bool) -> tuple[float, ...]: ...
def latlon(value: object, path: str, *, with_alt: bool = False) -> tuple[float, ...]:
    """``[lat, lon]`` in degrees, or ``[lat, lon, alt_m]`` when ``with_alt`` allows it."""
    values = items(value, path)
    if len(values) not in ((2, 3) if with_alt else (2,)):
        raise fail(path, f"must be [lat, lon{', alt_m' if with_alt else ''}], got {value!r}")
    lat = number(values[0], f"{path}[0]", lo=-90.0, hi=90.0)
    lon = number(values[1], f"{path}[1]", lo=-180.0, hi=180.0)
    if len(values) == 3:
        return lat, lon, number(values[2], f"{path}[2]")
    return lat, lon


def box(value: object, path: str) -> tuple[float, float, float, float]:
    """``[south, west, north, east]`` in degrees, south < north and west < east."""
    values = items(value, path)
    if len(values) != 4:
        raise fail(path, f"must be [south, west, north, east], got {value!r}")
    s = number(values[0], f"{path}[0]", lo=-90.0, hi=90.0)
    w = number(values[1], f"{path}[1]", lo=-180.0, hi=180.0)
    n = number(values[2], f"{path}[2]", lo=-90.0, hi=90.0)
    e = number(values[3], f"{path}[3]", lo=-180.0, hi=180.0)
    if not (s < n and w < e):
        raise fail(path, f"needs south < north and west < east, got {list(values)}")
    return s, w, n, e


def rates(value: object, path: str, tick_hz: float) -> MappingProxyType[str, float]:
    """Telemetry rates in Hz by message type: types the simulator sends, at most ``tick_hz``."""
    out: dict[str, float] = {}
    for mtype, rate in mapping(value, path).items():
        if mtype not in BUILDERS:
            raise fail(f"{path}.{mtype}", f"is not a message the simulator sends ({', '.join(BUILDERS)})")
        r = number(rate, f"{path}.{mtype}", lo=0.0)
        if r > tick_hz:
            raise fail(
                f"{path}.{mtype}", f"{r} Hz is above the scenario tick rate {tick_hz} Hz (raise tick_hz)"
            )
        out[mtype] = r
    return MappingProxyType(out)
