"""Logging, configured once: JSON lines in production, key=value on a terminal (structlog).

Request ids and message ids are bound through contextvars by the HTTP middleware. Nothing here
ever renders a key, token, passphrase or message body: call sites log ids and codes only.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(fmt: str = "auto", level: str = "info", stream: Any = None) -> None:
    """Configure structlog and stdlib logging. `fmt`: auto (console on a TTY), json, console."""
    out = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if getattr(out, "isatty", lambda: False)() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=logging.WARNING, stream=out)
    for name in ("aiohttp", "asyncio"):
        logging.getLogger(name).addFilter(_drop_tracebacks)


def _drop_tracebacks(record: logging.LogRecord) -> bool:
    """Library tracebacks can quote raw request bytes (headers with bearer tokens): keep the
    message, drop the exception text. Our own code logs error codes, never payloads."""
    if record.exc_info:
        record.msg = f"{record.getMessage()} ({record.exc_info[0].__name__ if record.exc_info[0] else 'error'})"
        record.args = ()
        record.exc_info = None
        record.exc_text = None
    return True
