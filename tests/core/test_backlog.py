"""Flow control's estimate (decision 0018): over with hysteresis, reset by a batch that is not full."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from customs_gateway.core.backlog import Backlog


def test_over_above_high_until_planned_down_to_half() -> None:
    b = Backlog(400)
    b.submitted(400)
    assert not b.over  # at the mark, not above it
    b.submitted()
    assert b.over and b.count == 401
    b.planned(200, full=True, at=1.0)
    assert b.over and b.count == 201  # still above half: hysteresis
    b.submitted(50)
    assert b.over
    b.planned(200, full=True, at=1.0)
    assert not b.over and b.count == 51
    b.submitted(300)
    assert not b.over  # 351: back over only above 400
    b.submitted(60)
    assert b.over


def test_a_batch_that_is_not_full_means_nothing_is_waiting() -> None:
    b = Backlog(10)
    b.submitted(50)
    assert b.over
    b.planned(3, full=False, at=1.0)  # e.g. the rest is backing off after failures, or went through another replica
    assert b.count == 0 and not b.over


def test_it_holds_only_while_the_worker_is_planning() -> None:
    b = Backlog(10)
    b.submitted(50)
    assert b.over and not b.holds(now=100.0, fresh_for=2.0)  # no batch planned yet: nothing to wait for
    b.planned(10, full=True, at=100.0)
    assert b.holds(now=101.5, fresh_for=2.0)
    assert not b.holds(now=102.5, fresh_for=2.0)  # the worker stopped planning (stopped, recovering)
    b.planned(10, full=True, at=102.5)
    assert b.holds(now=103.0, fresh_for=2.0)
    b.planned(10, full=False, at=103.0)
    assert not b.holds(now=103.0, fresh_for=2.0)  # caught up


def test_zero_turns_it_off_and_negative_is_refused() -> None:
    b = Backlog(0)
    b.submitted(1_000_000)
    assert not b.over
    with pytest.raises(ValueError):
        Backlog(-1)


@given(high=st.integers(0, 50), events=st.lists(st.tuples(st.booleans(), st.integers(0, 30), st.booleans())))
def test_the_estimate_never_goes_negative_and_over_follows_the_marks(
    high: int, events: list[tuple[bool, int, bool]]
) -> None:
    b = Backlog(high)
    for submit, n, full in events:
        was = b.over
        if submit:
            b.submitted(n)
            assert b.over == (was or (high > 0 and b.count > high))
        else:
            b.planned(n, full, at=0.0)
            assert b.over == (was and b.count > high // 2)
        assert b.count >= 0
        assert not b.over or high > 0
