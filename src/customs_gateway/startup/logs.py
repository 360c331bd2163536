"""Logging, configured once: JSON lines in production, key=value on a terminal (structlog).

Request ids and message ids are bound through contextvars by the HTTP middleware. Nothing here
ever renders a key, token, passphrase or message body: call sites log ids and codes only.

Every request logs, so the pipeline is kept cheap: msgspec renders the JSON (ASCII-only, one
object per line, as the stdlib renderer wrote it), one sink object writes each line in one call,
and bound loggers are cached on first use. Reconfiguring still takes effect on cached loggers:
the processor list is updated in place, the sink follows the new stream, and the level is a
processor rather than a property of the cached logger class.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
from typing import Any

import msgspec
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# structlog's method names (log.warn, log.exception, log.critical...) and their levels.
_METHOD_LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "err": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
    "failure": logging.CRITICAL,
}


def _fallback(obj: Any) -> Any:
    """Values JSON has no form for: as structlog's JSONRenderer does, `__structlog__()` or repr()."""
    try:
        return obj.__structlog__()
    except AttributeError:
        return repr(obj)


_encode = msgspec.json.Encoder(enc_hook=_fallback).encode


def render_json(logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
    """One compact JSON object, keys in event order; ASCII only (non-ASCII is \\u-escaped)."""
    try:
        out = _encode(event_dict).decode("ascii")  # ASCII: nothing to escape, the common case
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
        # Non-ASCII text (escaped like json.dumps does), lone surrogates, unencodable keys. An
        # infinity or NaN is null here too: json.dumps would write `Infinity`, which is not JSON.
        out = json.dumps(_finite(event_dict), default=_fallback, separators=(",", ":"))
    return out


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class _Sink:
    """The one wrapped logger: writes each rendered line, in one call, to the configured stream.

    Flushes after each line unless the stream is line-buffered (stderr is), where the write of a
    line has already flushed it.
    """

    __slots__ = ("_flush", "_lock", "_write")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.use(sys.stderr)

    def use(self, stream: Any) -> None:
        with self._lock:
            self._write = stream.write
            self._flush = None if getattr(stream, "line_buffering", False) else stream.flush

    def msg(self, message: str) -> None:
        with self._lock:
            self._write(message + "\n")
            if self._flush is not None:
                self._flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


_SINK = _Sink()
_PROCESSORS: list[Processor] = []  # the one list every (cached) bound logger holds; updated in place
_min_level = logging.INFO


def _filter_level(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    if _METHOD_LEVELS.get(method_name, logging.CRITICAL) < _min_level:
        raise structlog.DropEvent
    return event_dict


def configure_logging(fmt: str = "auto", level: str = "info", stream: Any = None) -> None:
    """Configure structlog and stdlib logging. `fmt`: auto (console on a TTY), json, console."""
    global _min_level  # noqa: PLW0603  (read by _filter_level, so cached loggers see a new level)
    out = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if getattr(out, "isatty", lambda: False)() else "json"
    renderer: Processor = render_json if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    _min_level = _LEVELS.get(level, logging.INFO)
    _SINK.use(out)
    _PROCESSORS[:] = [
        _filter_level,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        renderer,
    ]
    structlog.configure(
        processors=_PROCESSORS,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),  # _filter_level filters
        logger_factory=_sink_factory,
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING, stream=out)
    for name in ("aiohttp", "asyncio"):
        logging.getLogger(name).addFilter(_drop_tracebacks)


def _sink_factory(*args: Any) -> _Sink:
    return _SINK


def _drop_tracebacks(record: logging.LogRecord) -> bool:
    """Library tracebacks can quote raw request bytes (headers with bearer tokens): keep the
    message, drop the exception text. Our own code logs error codes, never payloads."""
    if record.exc_info:
        record.msg = f"{record.getMessage()} ({record.exc_info[0].__name__ if record.exc_info[0] else 'error'})"
        record.args = ()
        record.exc_info = None
        record.exc_text = None
    return True
