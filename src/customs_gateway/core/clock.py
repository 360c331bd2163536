"""Injected time and identifiers, so tests are deterministic without monkeypatching."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Source of the current time (UTC, timezone-aware)."""

    def now(self) -> dt.datetime: ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc)


class FixedClock:
    """A clock that only moves when told to (tests)."""

    def __init__(self, start: dt.datetime) -> None:
        self._now = start

    def now(self) -> dt.datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += dt.timedelta(seconds=seconds)

    def set(self, when: dt.datetime) -> None:
        self._now = when


class JumpClock:
    """The wall clock shifted by an offset that only grows (drills: years pass in seconds while
    time still runs between the jumps, so timeouts and retries behave as in production)."""

    def __init__(self, offset: dt.timedelta = dt.timedelta(0)) -> None:
        self.offset = offset

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc) + self.offset

    def jump(self, by: dt.timedelta) -> None:
        if by < dt.timedelta(0):
            raise ValueError("a JumpClock only moves forward")
        self.offset += by


class PeerClockOffset:
    """How far the peer's clock is from ours, measured from timestamps the peer signed: the
    `sent_at` of its envelopes and the `received_at` of its receipts, each against our clock when
    we saw it (DESIGN §11). Positive: the peer is ahead. Network delay makes each reading a little
    low for envelopes and a little high for receipts; the estimate is a smoothed mean of both."""

    SMOOTHING = 0.2

    def __init__(self) -> None:
        self.offset_seconds: float | None = None
        self.measured_at: dt.datetime | None = None
        self.samples = 0

    def observe(self, peer_time: dt.datetime, our_time: dt.datetime) -> float:
        """Record one reading; returns the new estimate."""
        reading = (peer_time - our_time).total_seconds()
        if self.offset_seconds is None:
            self.offset_seconds = reading
        else:
            self.offset_seconds += self.SMOOTHING * (reading - self.offset_seconds)
        self.measured_at = our_time
        self.samples += 1
        return self.offset_seconds


class IdSource(Protocol):
    """Source of message ids (UUIDv7 strings)."""

    def new_id(self) -> str: ...


def uuid7(unix_ms: int, rand: bytes, counter: int | None = None) -> str:
    """Build a UUIDv7 (RFC 9562) from a millisecond timestamp and 10 random bytes.

    `counter` (12 bits), when given, fills `rand_a` instead of random bits (RFC 9562 §6.2,
    method 1: ids made in the same millisecond stay in order)."""
    if len(rand) < 10:
        raise ValueError("uuid7 needs 10 random bytes")
    rand_a = (int.from_bytes(rand[0:2], "big") if counter is None else counter) & 0x0FFF
    value = (unix_ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= rand_a << 64
    value |= 0b10 << 62
    value |= int.from_bytes(rand[2:10], "big") & ((1 << 62) - 1)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_COUNTER_MAX = 0x0FFF
_COUNTER_START = 0x07FF  # a new millisecond starts its counter in the lower half: room to count up


class UUID7Source:
    """UUIDv7 ids from a clock and a random source; strictly increasing within this process.

    Within one millisecond (or while the clock stalls or steps back) the 12-bit `rand_a` field
    counts up; only after 2,048+ ids in one millisecond does the timestamp run ahead of the clock
    by a millisecond, so at any real rate the embedded time stays the clock's."""

    def __init__(self, clock: Clock, randbytes: RandomSource | None = None) -> None:
        self._clock = clock
        self._rand = randbytes or os.urandom
        self._last_ms = 0
        self._counter = 0
        self._lock = threading.Lock()

    def new_id(self) -> str:
        with self._lock:
            ms = int(self._clock.now().timestamp() * 1000)
            rand = self._rand(10)
            if ms > self._last_ms:
                counter = int.from_bytes(rand[0:2], "big") & _COUNTER_START
            else:
                ms, counter = self._last_ms, self._counter + 1
                if counter > _COUNTER_MAX:
                    ms, counter = ms + 1, int.from_bytes(rand[0:2], "big") & _COUNTER_START
            self._last_ms, self._counter = ms, counter
            return uuid7(ms, rand, counter)


class RandomSource(Protocol):
    def __call__(self, n: int, /) -> bytes: ...


def monotonic() -> float:
    """Monotonic seconds, for durations only."""
    return time.monotonic()
