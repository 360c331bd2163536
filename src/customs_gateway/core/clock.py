"""Injected time and identifiers, so tests are deterministic without monkeypatching."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
import uuid
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


class IdSource(Protocol):
    """Source of message ids (UUIDv7 strings)."""

    def new_id(self) -> str: ...


def uuid7(unix_ms: int, rand: bytes) -> str:
    """Build a UUIDv7 (RFC 9562) from a millisecond timestamp and 10 random bytes."""
    if len(rand) < 10:
        raise ValueError("uuid7 needs 10 random bytes")
    value = (unix_ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= (int.from_bytes(rand[0:2], "big") & 0x0FFF) << 64
    value |= 0b10 << 62
    value |= int.from_bytes(rand[2:10], "big") & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


class UUID7Source:
    """UUIDv7 ids from a clock and a random source; monotonic within this process."""

    def __init__(self, clock: Clock, randbytes: RandomSource | None = None) -> None:
        self._clock = clock
        self._rand = randbytes or os.urandom
        self._last_ms = 0
        self._lock = threading.Lock()

    def new_id(self) -> str:
        with self._lock:
            ms = int(self._clock.now().timestamp() * 1000)
            # Keep ids sortable even if the clock stalls or steps back.
            ms = max(ms, self._last_ms + 1) if ms <= self._last_ms else ms
            self._last_ms = ms
            return uuid7(ms, self._rand(10))


class RandomSource(Protocol):
    def __call__(self, n: int, /) -> bytes: ...


def monotonic() -> float:
    """Monotonic seconds, for durations only."""
    return time.monotonic()
