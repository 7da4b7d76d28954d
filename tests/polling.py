"""The one way a test waits: poll a condition until it holds, under a deadline.

Tests never sleep to synchronise. They wait for the condition they need, with a deadline, and
fail with what they waited for and the last value seen:

- :func:`wait_for` (async): in ``async def`` tests, on the test's own event loop; the
  predicate may be a plain function or return an awaitable (``lambda: js.stream_info(...)``).
- :func:`wait_until` (sync): its blocking twin, for sync tests with no lab at hand (a child
  process writing a file, a served page answering). With a lab, ``lab.wait_for`` (product API,
  the same idea for notebooks) does the same.

Both return the truthy value the predicate returned (a DataFrame counts when it has rows), so a
test can wait for a value and use it::

    frame = wait_until(lambda: (f := read()).shape[0] >= 3 and f, what="3 rows")
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any


def _truthy(value: Any) -> bool:
    empty = getattr(value, "empty", None)  # a DataFrame or Series: truthy when it has rows
    return not empty if isinstance(empty, bool) else bool(value)


def _timed_out(what: str, timeout: float, last: Any) -> AssertionError:
    return AssertionError(f"timed out after {timeout} s waiting for {what} (last value: {last!r})")


async def wait_for(
    predicate: Callable[[], Any | Awaitable[Any]],
    timeout: float = 5.0,  # noqa: ASYNC109 - the deadline is part of the failure message
    *,
    interval: float = 0.01,
    what: str = "condition",
) -> Any:
    """Poll a sync or async ``predicate`` until it returns something truthy, and return that.

    Args:
        predicate: called every ``interval`` seconds; may return an awaitable, which is awaited.
        timeout: seconds before the test fails.
        interval: seconds between two calls.
        what: the condition in words, for the failure message.

    Raises:
        AssertionError: the predicate stayed falsy for ``timeout`` seconds (names ``what`` and
            the last value seen).
    """
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if inspect.isawaitable(last):
            last = await last
        if _truthy(last):
            return last
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, last)
        await asyncio.sleep(interval)


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    *,
    interval: float = 0.02,
    what: str = "condition",
) -> Any:
    """Blocking twin of :func:`wait_for`: poll ``predicate`` until truthy, and return that.

    Never call it from a coroutine (it blocks the loop): use :func:`wait_for` there.

    Raises:
        AssertionError: the predicate stayed falsy for ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if _truthy(last):
            return last
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, last)
        time.sleep(interval)
