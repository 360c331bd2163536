"""Replay and ordering rules (G4), driven directly: the skew window, dedupe decisions, gaps."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from customs_gateway.core.errors import ReplayError
from customs_gateway.core.replay import Arrival, advance_sequence, check_skew, classify, conflict_error

NOW = dt.datetime(2026, 6, 1, 12, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("offset", [-300.0, -0.001, 0.0, 0.001, 300.0])
def test_inside_the_window_inclusive(offset: float) -> None:
    check_skew(NOW + dt.timedelta(seconds=offset), NOW, 300.0)


@pytest.mark.parametrize("offset", [-300.001, 300.001, -86400 * 3650, 86400 * 3650])
def test_outside_the_window_is_refused_both_ways(offset: float) -> None:
    with pytest.raises(ReplayError) as info:
        check_skew(NOW + dt.timedelta(seconds=offset), NOW, 300.0)
    assert info.value.code == "replay.skew" and info.value.field == "header.sent_at"
    assert ("ahead of" if offset > 0 else "behind") in info.value.detail


@pytest.mark.parametrize("window", [float("nan"), -1.0])
def test_a_window_that_is_not_a_number_admits_nothing(window: float) -> None:
    # A misconfigured window (NaN compares false with everything) must not accept a ten-year-old envelope.
    with pytest.raises(ReplayError):
        check_skew(NOW - dt.timedelta(days=3650), NOW, window)
    with pytest.raises(ReplayError):
        check_skew(NOW, NOW, window)


def test_classify() -> None:
    a, b = b"\x01" * 32, b"\x02" * 32
    assert classify(None, a) is Arrival.NEW
    assert classify(a, a) is Arrival.DUPLICATE
    assert classify(a, b) is Arrival.CONFLICT
    err = conflict_error()
    assert err.code == "replay.conflict" and err.status == 409 and err.field == "header.id"


def test_sequence_gaps() -> None:
    assert advance_sequence(0, 1).high_water == 1
    assert advance_sequence(5, 6) == advance_sequence(5, 6)
    gap = advance_sequence(5, 9)
    assert (gap.high_water, gap.gap_from, gap.gap_to) == (9, 6, 8)
    late = advance_sequence(9, 7)
    assert (late.high_water, late.gap_from) == (9, None)


@given(st.lists(st.integers(1, 200), min_size=1, max_size=60))
def test_high_water_is_the_maximum_and_gaps_cover_exactly_what_never_came_in_order(seqs: list[int]) -> None:
    hw, gaps = 0, set()
    for s in seqs:
        u = advance_sequence(hw, s)
        if u.gap_from is not None:
            assert u.gap_to is not None
            gaps |= set(range(u.gap_from, u.gap_to + 1))
        hw = u.high_water
    assert hw == max(seqs)
    # Every number below the high-water mark either arrived before it was passed or is in a gap.
    assert set(range(1, hw + 1)) <= gaps | set(seqs)
