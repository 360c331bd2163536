"""`RecentCounts`: per-minute counts over the last hour on an injected clock (console link page)."""

from __future__ import annotations

import datetime as dt

from customs_gateway.core.state import RecentCounts

T0 = dt.datetime(2026, 12, 4, 10, 0, 30, tzinfo=dt.UTC)


def test_counts_slide_out_after_an_hour_and_the_last_is_kept() -> None:
    r = RecentCounts(T0)
    r.add("delivered", T0)
    r.add("delivered", T0 + dt.timedelta(seconds=10), 4)
    r.add("refused", T0 + dt.timedelta(minutes=30))
    r.add("delivered", T0 + dt.timedelta(minutes=59))
    assert r.last_hour("delivered", T0 + dt.timedelta(minutes=59)) == 6
    assert r.last_hour("refused", T0 + dt.timedelta(minutes=59)) == 1
    assert r.last_hour("delivered", T0 + dt.timedelta(minutes=61)) == 1  # the first minute has left the hour
    assert r.last_hour("refused", T0 + dt.timedelta(minutes=91)) == 0
    assert r.last_hour("other", T0) == 0
    assert r.last["delivered"] == T0 + dt.timedelta(minutes=59)
    r.add("delivered", T0 + dt.timedelta(minutes=5))  # a late report does not move `last` back
    assert r.last["delivered"] == T0 + dt.timedelta(minutes=59)


def test_memory_stays_bounded_over_a_long_run() -> None:
    r = RecentCounts(T0)
    for i in range(10_000):
        r.add("delivered", T0 + dt.timedelta(minutes=i))
    assert len(r._minutes["delivered"]) <= RecentCounts.WINDOW_MINUTES
    assert r.last_hour("delivered", T0 + dt.timedelta(minutes=9_999)) == 60
