"""UUIDv7 ids: RFC 9562 layout, strictly increasing, and the embedded time stays the clock's."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid

from hypothesis import given
from hypothesis import strategies as st

from customs_gateway.core.clock import FixedClock, UUID7Source, uuid7

T0 = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.timezone.utc)
T0_MS = int(T0.timestamp() * 1000)


def _ms(u: str) -> int:
    return uuid.UUID(u).int >> 80


@given(st.integers(0, 2**48 - 1), st.binary(min_size=10, max_size=10), st.none() | st.integers(0, 0xFFF))
def test_layout_matches_the_uuid_module(ms: int, rand: bytes, counter: int | None) -> None:
    u = uuid7(ms, rand, counter)
    parsed = uuid.UUID(u)
    assert str(parsed) == u and parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert _ms(u) == ms
    rand_a = (parsed.int >> 64) & 0xFFF
    assert rand_a == (int.from_bytes(rand[:2], "big") & 0xFFF if counter is None else counter)
    assert parsed.int & ((1 << 62) - 1) == int.from_bytes(rand[2:], "big") & ((1 << 62) - 1)


def test_ids_in_one_millisecond_count_up_without_running_ahead() -> None:
    # The worst case for ordering: every random draw is all ones.
    src = UUID7Source(FixedClock(T0), randbytes=lambda n: b"\xff" * n)
    ids = [src.new_id() for _ in range(5000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # 2,049 fit in the first millisecond (counter 0x7FF..0xFFF), then 0x7FF+1 per extra ms.
    assert _ms(ids[0]) == T0_MS and _ms(ids[2048]) == T0_MS and _ms(ids[2049]) == T0_MS + 1
    assert _ms(ids[-1]) <= T0_MS + 2


def test_a_clock_stepping_back_keeps_order_and_a_new_millisecond_resets() -> None:
    clock = FixedClock(T0)
    src = UUID7Source(clock)
    a = [src.new_id() for _ in range(3)]
    clock.set(T0 - dt.timedelta(seconds=5))
    b = [src.new_id() for _ in range(3)]
    clock.set(T0 + dt.timedelta(milliseconds=7))
    c = src.new_id()
    ids = [*a, *b, c]
    assert ids == sorted(ids) and len(set(ids)) == 7
    assert {_ms(x) for x in a + b} == {T0_MS} and _ms(c) == T0_MS + 7
    assert (uuid.UUID(c).int >> 64) & 0xFFF <= 0x7FF


def test_ids_from_a_real_clock_are_strictly_increasing() -> None:
    from customs_gateway.core.clock import SystemClock

    src = UUID7Source(SystemClock())
    ids = [src.new_id() for _ in range(20000)]
    assert all(x < y for x, y in itertools.pairwise(ids))


def test_peer_clock_offset_is_a_smoothed_mean_of_signed_readings() -> None:
    from customs_gateway.core.clock import PeerClockOffset

    t = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)
    pc = PeerClockOffset()
    assert pc.offset_seconds is None and pc.measured_at is None
    assert pc.observe(t + dt.timedelta(seconds=120), t) == 120.0
    for i in range(60):
        pc.observe(t + dt.timedelta(seconds=i + 10), t + dt.timedelta(seconds=i))
    assert pc.offset_seconds is not None and abs(pc.offset_seconds - 10.0) < 0.01
    assert pc.measured_at == t + dt.timedelta(seconds=59) and pc.samples == 61


def test_peer_link_state() -> None:
    from customs_gateway.core.state import PeerLink

    t = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)
    link = PeerLink()
    assert link.unreachable_for(t) == 0.0 and link.last_contact_at is None
    link.failed(t, "peer unreachable: ClientConnectorError")
    link.failed(t + dt.timedelta(seconds=30), "peer answered HTTP 503")
    assert link.unreachable_for(t + dt.timedelta(seconds=90)) == 90.0  # since the first failure
    assert link.last_failure == "peer answered HTTP 503"
    link.answered(t + dt.timedelta(seconds=95))
    assert link.unreachable_for(t + dt.timedelta(seconds=100)) == 0.0
    assert (link.failing_since, link.last_failure, link.last_contact_at) == (None, None, t + dt.timedelta(seconds=95))
