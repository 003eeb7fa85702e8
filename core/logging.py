"""structlog set-up: JSON lines on stdout, console on a TTY, journald priorities.

* ``format="json"``: one JSON object per line on unbuffered stdout; when
  stdout is the journal (``$JOURNAL_STREAM`` names stdout's device:inode) each
  line starts with a ``<N>`` syslog priority, which journald's
  ``SyslogLevelPrefix=`` (on by default) turns into the entry's priority.
* ``format="console"``: readable key=value lines (the default on a TTY).
* stdlib ``logging`` records are routed through the same processors.

Event names are snake_case (``source_started``); packets are counted, never
logged one by one.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

import structlog

_PRIORITY = {"critical": 2, "exception": 3, "error": 3, "warning": 4, "warn": 4, "info": 6, "debug": 7}


def stdout_is_journal(stream: TextIO | None = None, environ: dict | None = None) -> bool:
    env = os.environ if environ is None else environ
    js = env.get("JOURNAL_STREAM")
    if not js:
        return False
    try:
        dev, ino = (int(x) for x in js.split(":"))
        st = os.fstat((stream or sys.stdout).fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return st.st_dev == dev and st.st_ino == ino


class JournalPriorityPrefix:
    """Processor after the JSON renderer: prepend ``<N>`` for journald."""

    def __call__(self, logger: Any, method: str, event: str) -> str:
        return f"<{_PRIORITY.get(method, 6)}>{event}"


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog and stdlib logging for the process."""
    stream = stream or sys.stdout
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    lvl = getattr(logging, level.upper(), logging.INFO)
    shared: list = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "json":
        tail: list = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
        if stdout_is_journal(stream):
            tail.append(JournalPriorityPrefix())
    else:
        tail = [structlog.dev.ConsoleRenderer(colors=getattr(stream, "isatty", lambda: False)())]
    structlog.configure(
        processors=[*shared, structlog.processors.StackInfoRenderer(), *tail],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(processors=[
        structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail], foreign_pre_chain=shared))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(lvl)
