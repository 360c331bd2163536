"""Resource limits on real servers: rate limits, long-poll caps, peer concurrency, slow clients."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from customs_gateway.service.pair import prepare_pair

from .conftest import CN, US, Pair, running_pair


@pytest.fixture
async def tight(tmp_path: Path) -> AsyncIterator[Pair]:
    homes = prepare_pair(
        tmp_path,
        overrides={
            "security": {
                "rate_limit_per_second": 5.0,
                "rate_limit_burst": 10,
                "max_long_polls_per_token": 2,
                "body_read_timeout_seconds": 1.0,
            }
        },
    )
    async with running_pair(homes) as p:
        yield p


async def test_per_token_rate_limit_is_429_with_retry_after(tight: Pair) -> None:
    api = tight.apis[US]
    statuses: list[int] = []
    headers: Any = None
    for _ in range(15):
        status, prob, h = await api.call("GET", "/v1/messages")
        statuses.append(status)
        if status == 429:
            headers, body = h, prob
    assert statuses[:10] == [200] * 10
    assert 429 in statuses
    assert headers["Content-Type"].startswith("application/problem+json")
    assert int(headers["Retry-After"]) >= 1
    assert body["code"] == "rate.limited"
    # Another token of the same gateway is not affected.
    status, _, _ = await api.call("GET", "/v1/admin/peers", role="admin")
    assert status == 200


async def test_long_poll_cap_per_token(tight: Pair) -> None:
    api = tight.apis[CN]
    polls = [asyncio.create_task(api.call("GET", "/v1/inbox?wait=3")) for _ in range(2)]
    await asyncio.sleep(0.3)
    status, prob, h = await api.call("GET", "/v1/inbox?wait=3")
    assert status == 429 and prob["code"] == "rate.long_polls" and "Retry-After" in h
    status, prob, _ = await api.call("GET", "/v1/inbox?wait=31")
    assert status == 422 and prob["field"] == "wait"
    for p in polls:
        p.cancel()
    await asyncio.gather(*polls, return_exceptions=True)


async def test_slow_body_is_408_and_slow_clients_do_not_block_others(tight: Pair) -> None:
    port = tight.lp.homes[US].local_port
    token = tight.apis[US].tokens["agency"]
    # Many slowloris connections: headers trickled one byte at a time.
    slow: list[asyncio.StreamWriter] = []
    for _ in range(100):
        _, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /v1/messages HTTP/1.1\r\nHost: x\r\n")
        slow.append(w)
    # A body announced but never finished: the handler gives up after the read timeout.
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + token.encode()
        + b'\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"type":'
    )
    await w.drain()
    # Meanwhile an honest client is served promptly.
    t0 = time.monotonic()
    status, _, _ = await tight.apis[US].call("GET", "/healthz", role=None)
    assert status == 200 and time.monotonic() - t0 < 1.0
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 408")
    for sw in [*slow, w]:
        sw.close()
    _, listing, _ = await tight.apis[US].call("GET", "/v1/messages", role="agency")
    assert listing["messages"] == []


async def test_peer_api_caps_concurrent_requests(tight: Pair) -> None:
    from .test_replay import _post

    gw = tight.gw(CN)
    gate = asyncio.Event()
    original = gw.receive

    async def slow_receive(raw: bytes) -> list[dict[str, Any]]:
        await gate.wait()
        return await original(raw)

    gw.receive = slow_receive  # type: ignore[method-assign]
    try:
        first = [
            asyncio.create_task(_post(tight, {"envelopes": "x"})) for _ in range(gw.config.security.max_peer_requests)
        ]
        await asyncio.sleep(0.5)
        status, body = await _post(tight, {"envelopes": "x"})
        assert status == 503
        assert body["code"] == "peer.busy"
    finally:
        gate.set()
        gw.receive = original  # type: ignore[method-assign]
    await asyncio.gather(*first, return_exceptions=True)
