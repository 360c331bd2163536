"""Token bucket and concurrency limits, with time passed in."""

from __future__ import annotations

import pytest

from customs_gateway.core.ratelimit import ConcurrencyLimit, RateLimited, RateLimiter


def test_burst_then_refusal_with_retry_after_then_refill() -> None:
    rl = RateLimiter(rate=2.0, burst=3)
    for _ in range(3):
        rl.take("t1", 100.0)
    with pytest.raises(RateLimited) as e:
        rl.take("t1", 100.0)
    assert e.value.status == 429 and e.value.retry_after == 1
    rl.take("t2", 100.0)  # other callers are unaffected
    rl.take("t1", 100.5)  # half a second refills one token at 2/s
    with pytest.raises(RateLimited):
        rl.take("t1", 100.5)


def test_slow_rate_asks_for_a_longer_wait() -> None:
    rl = RateLimiter(rate=0.1, burst=1)
    rl.take("k", 0.0)
    with pytest.raises(RateLimited) as e:
        rl.take("k", 0.0)
    assert e.value.retry_after == 10


def test_concurrency_limit() -> None:
    cl = ConcurrencyLimit(2)
    cl.acquire("a")
    cl.acquire("a")
    with pytest.raises(RateLimited) as e:
        cl.acquire("a")
    assert e.value.code == "rate.long_polls"
    cl.acquire("b")
    cl.release("a")
    cl.acquire("a")
