"""The lab's log format: one record is one line, whatever a device put in it.

Device text reaches log lines through error messages, quarantine reasons, subjects and the
relayed output of the broker and the worker processes. The call sites escape what they quote
(:func:`~overwatch_lab.protocol.printable.printable`); :class:`EscapingFormatter` is the
safeguard for a site that forgets: it escapes every control character of the formatted message
(so a ``\\n`` can never start a forged record, an ANSI escape never reaches the terminal), and
in a traceback or stack it keeps the line breaks, escapes the rest and indents every line, so
that only a record's first line starts in column 0.

:func:`configure` is the logging setup of the lab's processes (``overwatch-lab`` and the
telemetry worker processes); a notebook or an application embedding a Lab keeps its own.
"""

from __future__ import annotations

import logging
from typing import IO

from overwatch_lab.protocol.printable import printable

CONTINUATION = "  "
"""Prefix of each traceback or stack line under a record."""


def _block(text: str) -> str:
    return "\n".join(CONTINUATION + printable(line) for line in text.split("\n"))


class EscapingFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose output cannot be forged by the text it formats.

    The message (format string and arguments, after ``%`` formatting) comes out with every
    non-printable character escaped (``\\n``, ``\\x1b``, ...); exception and stack text keep
    their line breaks, with every other control character escaped and each line indented by
    :data:`CONTINUATION`.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        """Format the record's line (prefix and message) and escape it."""
        return printable(super().formatMessage(record))

    def formatException(self, ei: logging._SysExcInfoType) -> str:
        """Format a traceback with its lines kept, escaped and indented."""
        return _block(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        """Format a stack with its lines kept, escaped and indented."""
        return _block(super().formatStack(stack_info))


def configure(level: int, fmt: str, stream: IO[str] | None = None) -> None:
    """Send the root logger's records to ``stream`` (default stderr) through an :class:`EscapingFormatter`.

    Like :func:`logging.basicConfig` (which it calls), it does nothing when the root logger
    already has a handler.
    """
    handler = logging.StreamHandler(stream)
    handler.setFormatter(EscapingFormatter(fmt))
    logging.basicConfig(level=level, handlers=[handler])


__all__ = ["CONTINUATION", "EscapingFormatter", "configure"]
