"""JSON logging: one ASCII JSON object per line with the keys the stdlib renderer wrote, any value
renders, and reconfiguring reaches loggers cached on first use."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from customs_gateway.startup.logs import configure_logging, render_json

TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?Z")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()
    for h in root.handlers[:]:
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert text.isascii()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_json_lines_carry_event_level_timestamp_and_context() -> None:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    log = structlog.get_logger("test")
    structlog.contextvars.bind_contextvars(request_id="r-1")
    log.info("message.submitted", type="seizure-share", seq=7, name="海关")
    log.debug("hidden")
    log.warning("request.unavailable", code="store.busy")
    first, second = lines(out)
    assert set(first) == {"event", "level", "timestamp", "request_id", "type", "seq", "name"}
    assert first["event"] == "message.submitted" and first["level"] == "info" and first["seq"] == 7
    assert first["name"] == "海关" and "\\u6d77" in out.getvalue()  # escaped, as json.dumps did
    assert TIMESTAMP.fullmatch(first["timestamp"])
    assert (second["level"], second["code"], second["request_id"]) == ("warning", "store.busy", "r-1")


def test_exceptions_are_rendered() -> None:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    log = structlog.get_logger("test")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("request.failed", path="/v1/messages")
    (line,) = lines(out)
    assert line["level"] == "error"
    assert "RuntimeError: boom" in line["exception"]


def test_values_json_has_no_form_for_still_render() -> None:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)

    class Custom:
        def __structlog__(self) -> str:
            return "custom!"

    structlog.get_logger("test").info(
        "odd", path=Path("/x"), obj=Custom(), err=ValueError("v"), lone="\ud800", big=2**80, tup=(1, "a")
    )
    (line,) = lines(out)
    assert line["path"] == repr(Path("/x")) and line["obj"] == "custom!" and line["err"] == "ValueError('v')"
    assert line["lone"] == "\ud800" and line["big"] == 2**80 and line["tup"] == [1, "a"]


# JSON has no infinity (the stdlib renderer writes `Infinity`, which is not JSON): see below.
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_render_json_says_what_the_stdlib_renderer_said(event_dict: dict[str, Any]) -> None:
    new = render_json(None, "info", dict(event_dict))
    old = structlog.processors.JSONRenderer()(None, "info", dict(event_dict))
    assert isinstance(old, str)
    assert new.isascii() and "\n" not in new
    assert json.loads(new) == json.loads(old)
    assert list(json.loads(new)) == list(event_dict)  # keys in event order


@pytest.mark.parametrize("event", ["x", "é", "\ud800"], ids=["ascii", "non-ascii", "lone-surrogate"])
def test_render_json_writes_an_infinity_or_nan_as_null_and_stays_json(event: str) -> None:
    values = {"ratio": float("inf"), "low": [float("-inf"), 1.5], "nan": {"n": float("nan")}}
    line = render_json(None, "info", {"event": event, **values})
    assert line.isascii()
    assert json.loads(line, parse_constant=pytest.fail) == {
        "event": event,
        "ratio": None,
        "low": [None, 1.5],
        "nan": {"n": None},
    }


def test_reconfiguring_reaches_cached_loggers() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("json", "info", stream=first)
    log = structlog.get_logger("test")
    log.info("one")
    log.debug("not at info")
    configure_logging("console", "debug", stream=second)
    log.debug("two")
    configure_logging("json", "warning", stream=second)
    log.info("not at warning")
    log.warning("three")
    assert [d["event"] for d in lines(first)] == ["one"]
    console, json_line = second.getvalue().splitlines()
    assert "two" in console and not console.startswith("{")
    assert json.loads(json_line)["event"] == "three"


def test_auto_is_console_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, pipe = Tty(), io.StringIO()
    configure_logging("auto", "info", stream=tty)
    structlog.get_logger("test").info("hello", k=1)
    configure_logging("auto", "info", stream=pipe)
    structlog.get_logger("test").info("hello", k=1)
    assert "hello" in tty.getvalue() and "k=1" in tty.getvalue() and not tty.getvalue().startswith("{")
    assert lines(pipe)[0]["k"] == 1


def test_a_file_gets_every_line_flushed(tmp_path: Path) -> None:
    path = tmp_path / "gateway.log"
    with path.open("w", encoding="utf-8") as f:
        configure_logging("json", "info", stream=f)
        structlog.get_logger("test").info("flushed")
        assert json.loads(path.read_text(encoding="utf-8"))["event"] == "flushed"  # before close
