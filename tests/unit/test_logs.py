"""EscapingFormatter: one record is one line whatever its text; tracebacks keep their lines, indented."""

from __future__ import annotations

import io
import logging

from overwatch_lab import logs

FORGED = "2026-01-01 00:00:00,000 ERROR overwatch_lab.lab: lab failed: forged"
FMT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _record(msg: str, *args: object, exc_info: object = None) -> logging.LogRecord:
    return logging.LogRecord("overwatch_lab.test", logging.WARNING, __file__, 1, msg, args, exc_info)  # type: ignore[arg-type]


def test_message_and_args_are_escaped_into_one_line():
    out = logs.EscapingFormatter(FMT).format(_record("quarantined: %s", f"x\n{FORGED}\x1b[2J\r"))
    assert "\n" not in out and "\x1b" not in out and "\r" not in out
    assert out.endswith(f"quarantined: x\\n{FORGED}\\x1b[2J\\r")


def test_a_traceback_keeps_its_lines_but_only_the_first_line_starts_in_column_0():
    try:
        raise ValueError(f"bad field x\n{FORGED}\x1b[31m")
    except ValueError:
        import sys

        out = logs.EscapingFormatter(FMT).format(_record("batch failed", exc_info=sys.exc_info()))
    first, *rest = out.split("\n")
    assert first.endswith("batch failed")
    assert rest and all(line.startswith(logs.CONTINUATION) for line in rest)
    assert any("Traceback (most recent call last):" in line for line in rest)
    assert not any(line.startswith("2026-01-01") for line in out.split("\n"))
    assert "\x1b" not in out and "\\x1b[31m" in out


def test_configure_installs_the_formatter_on_a_fresh_root(monkeypatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    stream = io.StringIO()
    logs.configure(logging.INFO, FMT, stream)
    try:
        logging.getLogger("overwatch_lab.test").warning("a %s", "b\nc")
    finally:
        handlers = list(root.handlers)
        for h in handlers:
            root.removeHandler(h)
    assert isinstance(handlers[0].formatter, logs.EscapingFormatter)
    assert stream.getvalue().count("\n") == 1 and "a b\\nc" in stream.getvalue()
