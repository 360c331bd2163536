"""Audit time never runs backwards (DESIGN §11): entries the clock stamped earlier than the last
one are stamped with the last time and keep their own reading in `detail.clock_at`."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from customs_gateway.core.audit import AuditEntry, in_time_order

T = dt.datetime(2026, 6, 1, 15, 24, 53, tzinfo=dt.timezone.utc)


def entry(at: dt.datetime) -> AuditEntry:
    return AuditEntry(at=at, kind="sent", actor="system", message_id="m")


def test_a_clock_that_ran_back_is_stamped_forward_and_flagged() -> None:
    back = T - dt.timedelta(minutes=9, seconds=8)
    out, last = in_time_order([entry(T), entry(back), entry(T + dt.timedelta(seconds=1))], None)
    assert [e.at for e in out] == [T, T, T + dt.timedelta(seconds=1)]
    assert out[1].detail == {"clock_at": "2026-06-01T15:15:45.000Z"}
    assert "clock_at" not in out[0].detail and "clock_at" not in out[2].detail
    assert last == T + dt.timedelta(seconds=1)


def test_the_last_time_of_the_log_counts_across_appends() -> None:
    out, last = in_time_order([entry(T - dt.timedelta(seconds=1))], T)
    assert out[0].at == T and last == T


def test_sub_millisecond_differences_are_not_reordering() -> None:
    # Entries are written to the millisecond: 12.3456 and 12.3451 are the same written time.
    a = T.replace(microsecond=345_600)
    b = T.replace(microsecond=345_100)
    out, _ = in_time_order([entry(a), entry(b)], None)
    assert "clock_at" not in out[1].detail


@given(st.lists(st.integers(-(10**9), 10**9), min_size=1, max_size=40))
def test_written_times_never_decrease(offsets_ms: list[int]) -> None:
    entries = [entry(T + dt.timedelta(milliseconds=o)) for o in offsets_ms]
    out, last = in_time_order(entries, None)
    times = [AuditEntry.from_bytes(e.to_bytes()).at for e in out]
    assert times == sorted(times) and last == times[-1]
