"""The fast `format_ts` / `parse_ts` agree with the straightforward implementations they replaced."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from customs_gateway.core.encoding import format_ts, parse_ts
from customs_gateway.core.errors import DecodeError

UTC = dt.timezone.utc
_REF_TS_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", re.ASCII)


def ref_format_ts(when: dt.datetime) -> str:
    """The previous implementation, with the year padded to four digits (glibc's %Y is not)."""
    if when.tzinfo is None:
        raise ValueError("naive datetime")
    w = when.astimezone(UTC)
    return f"{w.year:04d}" + w.strftime("-%m-%dT%H:%M:%S.") + f"{w.microsecond // 1000:03d}Z"


def ref_parse_ts(text: object, *, field: str = "timestamp") -> dt.datetime:
    """The previous implementation: regex, then slicing into datetime()."""
    if not isinstance(text, str) or not _REF_TS_RE.fullmatch(text):
        raise DecodeError(
            f"{field} must be an RFC 3339 UTC timestamp like 2026-11-24T10:00:00.000Z",
            field=field,
            code="decode.timestamp",
        )
    try:
        return dt.datetime(
            int(text[0:4]),
            int(text[5:7]),
            int(text[8:10]),
            int(text[11:13]),
            int(text[14:16]),
            int(text[17:19]),
            int(text[20:23]) * 1000,
            tzinfo=UTC,
        )
    except ValueError as e:
        raise DecodeError(f"{field} is not a valid date/time", field=field, code="decode.timestamp") from e


def _outcome(fn: object, text: object) -> tuple[str, object]:
    assert callable(fn)
    try:
        return "ok", fn(text, field="f")
    except DecodeError as e:
        return "error", (type(e), e.code, e.field, str(e))


offsets = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
    lambda m: dt.timezone(dt.timedelta(minutes=m))
)
zones = st.one_of(st.just(UTC), offsets, st.timezones())
aware = st.datetimes(
    min_value=dt.datetime(2, 1, 1), max_value=dt.datetime(9998, 12, 31), timezones=zones, allow_imaginary=False
)


@given(aware)
@example(dt.datetime(2026, 11, 24, 10, 0, 0, 999999, tzinfo=UTC))
@example(dt.datetime(2026, 11, 24, 10, 0, 0, 999, tzinfo=dt.timezone(dt.timedelta(hours=8))))
@example(dt.datetime(2026, 1, 1, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=1))))  # crosses the year back
def test_format_ts_matches_reference(when: dt.datetime) -> None:
    assert format_ts(when) == ref_format_ts(when)


@given(aware)
def test_format_then_parse_round_trips_to_the_millisecond(when: dt.datetime) -> None:
    text = format_ts(when)
    back = parse_ts(text)
    assert back.tzinfo is UTC
    assert back == when.astimezone(UTC).replace(microsecond=when.microsecond // 1000 * 1000)
    assert format_ts(back) == text


@given(st.datetimes(min_value=dt.datetime(1000, 1, 1), timezones=st.just(UTC)))
def test_format_ts_matches_strftime_for_four_digit_years(when: dt.datetime) -> None:
    old = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    assert format_ts(when) == old


def test_format_ts_refuses_naive() -> None:
    with pytest.raises(ValueError, match="naive"):
        format_ts(dt.datetime(2026, 1, 1))


def test_format_ts_pads_small_years() -> None:
    assert format_ts(dt.datetime(5, 3, 4, 1, 2, 3, 4567, tzinfo=UTC)) == "0005-03-04T01:02:03.004Z"


# Strings in the right shape with any digits (so out-of-range fields), mutations of valid ones, and anything.
_digits = st.text(alphabet="0123456789", min_size=1, max_size=1)


@st.composite
def shaped(draw: st.DrawFn) -> str:
    template = "dddd-dd-ddTdd:dd:dd.dddZ"
    return "".join(draw(_digits) if c == "d" else c for c in template)


@st.composite
def plausible(draw: st.DrawFn) -> str:
    base = format_ts(draw(aware))
    i = draw(st.integers(0, len(base)))
    op = draw(st.sampled_from(["insert", "replace", "delete", "keep"]))
    ch = draw(st.characters())
    if op == "insert":
        return base[:i] + ch + base[i:]
    if op == "replace":
        return base[:i] + ch + base[i + 1 :]
    if op == "delete":
        return base[:i] + base[i + 1 :]
    return base


@given(st.one_of(shaped(), plausible(), st.text(max_size=30), st.none(), st.integers(), st.binary(max_size=30)))
@example("2026-11-24T24:00:00.000Z")
@example("2026-11-24T24:00:00.001Z")
@example("2026-02-29T00:00:00.000Z")
@example("2024-02-29T00:00:00.000Z")
@example("0000-01-01T00:00:00.000Z")
@example("9999-12-31T23:59:59.999Z")
@example("2026-12-31T23:59:60.000Z")
@example("2026-11-24T10:00:00.000Z\n")
@example("2026-11-24T10:00:00.000z")
@example("2026-11-24T10:00:00.000+00:00")
@example("2026-11-24 10:00:00.000Z")
@example("\u0662\u0660\u0662\u0666-03-01T12:00:00.000Z")
def test_parse_ts_matches_reference(text: object) -> None:
    new, old = _outcome(parse_ts, text), _outcome(ref_parse_ts, text)
    assert new == old
    if new[0] == "ok":
        assert isinstance(new[1], dt.datetime)
        assert new[1].tzinfo is UTC
        assert type(new[1]) is dt.datetime


def test_parse_ts_refuses_hour_24() -> None:
    with pytest.raises(DecodeError) as info:
        parse_ts("2026-11-24T24:00:00.000Z", field="since")
    assert (info.value.code, info.value.field) == ("decode.timestamp", "since")
