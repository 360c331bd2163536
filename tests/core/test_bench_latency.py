"""The latency row's open loop: arrivals of the warm-up are waited for but summarized apart.

A fake submitter and a fake store stand in for the gateways (no process, no socket is opened:
the load client connects only on a request, and the fake never makes one)."""

from __future__ import annotations

import time
from typing import Any

from customs_gateway.bench import benchmark as bm
from customs_gateway.bench.loadclient import LoadClient

SLOW = 0.3  # how late the fake store reports the first messages delivered


class FakeSubmitter(bm.Submitter):
    """Accepts every submission at once and remembers when; the first `slow_for` seconds' worth
    are delivered `SLOW` seconds late, the rest as soon as they are asked about."""

    def __init__(self, slow_for: float) -> None:
        super().__init__("http://127.0.0.1:9", "token", b"{}")
        self.accepted: dict[str, float] = {}
        self.slow_for = slow_for
        self.first: float | None = None

    async def submit(self, client: LoadClient) -> str | None:
        now = time.time()
        self.first = self.first if self.first is not None else now
        mid = f"m{len(self.accepted):06d}"
        self.accepted[mid] = now
        return mid

    def done_at(self, mid: str) -> float:
        at = self.accepted[mid]
        assert self.first is not None
        return at + SLOW if at - self.first < self.slow_for else at


class FakeProbe(bm.OutboxProbe):
    def __init__(self, sub: FakeSubmitter) -> None:  # no SQLite file behind it
        self.sub = sub

    def close(self) -> None:
        pass

    def finished_among(self, ids: list[str]) -> list[tuple[str, str]]:
        now = time.time()
        return [(m, "delivered") for m in ids if self.sub.done_at(m) <= now]

    def delivered_history(self, ids: list[str]) -> dict[str, float]:
        return {m: self.sub.done_at(m) for m in ids}


async def test_the_warm_up_is_waited_for_and_summarized_apart() -> None:
    sub = FakeSubmitter(slow_for=0.1)
    res: dict[str, Any] = await bm.open_loop_latency(
        sub, FakeProbe(sub), rate=400, duration=0.6, warmup=0.5, drain_timeout=10, seed=3
    )
    assert res["warmup_seconds"] == 0.5 and res["submit_failures"] == 0
    assert res["warmup_arrivals"] > 0 and res["samples"] > 0
    # every accepted message is in exactly one of the two summaries
    assert res["warmup_arrivals"] + res["samples"] == len(sub.accepted)
    assert res["arrivals"] == res["samples"]
    # the slow start shows in the warm-up's figures only
    assert res["warmup_delivered"]["max_ms"] >= SLOW * 1000
    assert res["delivered"]["max_ms"] < SLOW * 1000
    assert res["delivered_history"]["max_ms"] < SLOW * 1000


async def test_without_a_warm_up_every_arrival_counts() -> None:
    sub = FakeSubmitter(slow_for=0.1)
    res = await bm.open_loop_latency(sub, FakeProbe(sub), rate=400, duration=0.6, drain_timeout=10, seed=3)
    assert res["warmup_arrivals"] == 0 and res["warmup_delivered"] == {}
    assert res["samples"] == len(sub.accepted)
    assert res["delivered"]["max_ms"] >= SLOW * 1000


class FlakySubmitter(FakeSubmitter):
    """Fails every fifth submission (an error, not an answer), as a busy gateway's socket might."""

    def __init__(self) -> None:
        super().__init__(slow_for=0.0)
        self.calls = 0

    async def submit(self, client: LoadClient) -> str | None:
        self.calls += 1
        if self.calls % 5 == 0:
            raise TimeoutError("no answer")
        return await super().submit(client)


class RefusingProbe(FakeProbe):
    """Reports every seventh accepted message refused by the peer."""

    def finished_among(self, ids: list[str]) -> list[tuple[str, str]]:
        return [(m, "refused" if int(m[1:]) % 7 == 0 else st) for m, st in super().finished_among(ids)]


async def test_failures_and_refusals_are_counted_in_the_warm_up_too() -> None:
    sub = FlakySubmitter()
    res = await bm.open_loop_latency(
        sub, RefusingProbe(sub), rate=400, duration=0.5, warmup=0.5, drain_timeout=10, seed=5
    )
    failed = res["submit_failures"] + res["warmup_submit_failures"]
    assert failed == sub.calls // 5 and res["warmup_submit_failures"] > 0 and res["submit_failures"] > 0
    refused = res["not_delivered"] + res["warmup_not_delivered"]
    assert refused == sum(1 for m in sub.accepted if int(m[1:]) % 7 == 0)
    assert res["warmup_not_delivered"] > 0 and res["not_delivered"] > 0
    assert res["warmup_arrivals"] + res["samples"] + res["not_delivered"] == len(sub.accepted)
