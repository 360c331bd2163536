"""Per-caller limits: a token bucket for request rate and a counter for concurrent long-polls.

Time is passed in (monotonic seconds), so the rules are testable without sleeping. A refusal says
how long to wait, which the HTTP edge turns into `429` with `Retry-After`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .errors import GatewayError


class RateLimited(GatewayError):
    """Too many requests for this caller; `retry_after` is in whole seconds (at least 1)."""

    code = "rate.limited"
    status = 429

    def __init__(self, detail: str, retry_after: float, *, code: str | None = None) -> None:
        super().__init__(detail, code=code)
        self.retry_after = max(1, math.ceil(retry_after))


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class RateLimiter:
    """A token bucket per key: `rate` requests/s sustained, `burst` at once."""

    rate: float
    burst: int
    max_keys: int = 100_000
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def take(self, key: str, now: float) -> None:
        """Spend one token for `key`; raises RateLimited when the bucket is empty."""
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.clear()  # bounded memory; a reset only ever lets callers through
            b = self._buckets[key] = _Bucket(float(self.burst), now)
        b.tokens = min(float(self.burst), b.tokens + (now - b.at) * self.rate)
        b.at = now
        if b.tokens < 1.0:
            wait = (1.0 - b.tokens) / self.rate if self.rate > 0 else 60.0
            raise RateLimited(f"more than {self.rate:g} requests per second for this token", wait)
        b.tokens -= 1.0


@dataclass
class ConcurrencyLimit:
    """At most `limit` concurrent holders per key (long-polls per token)."""

    limit: int
    _held: dict[str, int] = field(default_factory=dict)

    def acquire(self, key: str) -> None:
        n = self._held.get(key, 0)
        if n >= self.limit:
            raise RateLimited(f"at most {self.limit} concurrent long-polls per token", 1.0, code="rate.long_polls")
        self._held[key] = n + 1

    def release(self, key: str) -> None:
        n = self._held.get(key, 0) - 1
        if n <= 0:
            self._held.pop(key, None)
        else:
            self._held[key] = n
