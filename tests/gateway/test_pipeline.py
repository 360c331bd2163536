"""The pipelined delivery worker: the next batch is built while one is at the peer, sent only after
that one's answer, and never past a message that must be retried (order, exactly once)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from customs_gateway.core.encoding import unb64url
from customs_gateway.core.errors import StoreUnavailable
from customs_gateway.service.gateway import issue_token
from customs_gateway.service.pair import LocalPair, prepare_pair
from customs_gateway.service.server import GatewayServer
from tests.gateway.conftest import CN, US, Api

BATCH = 10


async def test_batches_overlap_and_a_failed_batch_is_not_overtaken(tmp_path: Path) -> None:
    homes = prepare_pair(
        tmp_path,
        overrides={"delivery": {"batch_max": BATCH, "retry_base_seconds": 0.05, "retry_cap_seconds": 0.2}},
    )
    lp = LocalPair(homes)
    await lp.start(US)
    session = aiohttp.ClientSession()
    try:
        _, secret = await issue_token(lp.servers[US].gateway.store, lp.servers[US].gateway.clock, "agency", "t", "t")
        us = Api(session, homes[US].local_url, {"agency": secret}, CN)
        ids = []
        for _ in range(4 * BATCH + 3):  # queued while the peer is down: several full batches
            status, res = await us.submit("seminar-notice")
            assert status == 202, res
            ids.append(res["id"])

        # The receiver's gateway is patched before its listener opens: the sender, retrying every
        # 50 ms, would otherwise deliver a first batch in between.
        cn_server = GatewayServer(lp.configs[CN], lp.identity(CN), passphrase=lp.passphrase)
        gw = cn_server.gateway
        real = gw.receive
        requests: list[list[int]] = []

        async def receive(raw: bytes) -> list[dict[str, Any]]:
            seqs = [json.loads(unb64url(e["header"]))["seq"] for e in json.loads(raw)["envelopes"]]
            requests.append(seqs)
            if len(requests) == 2:  # the second batch fails once, retryably, as a whole
                raise StoreUnavailable("injected: database briefly unavailable")
            return await real(raw)

        gw.receive = receive  # type: ignore[method-assign]
        await cn_server.start()
        lp.servers[CN] = cn_server
        for mid in ids:
            await us.wait_status(mid, {"delivered"})

        # Exactly once and in order in the peer's inbox.
        _, secret_cn = await issue_token(gw.store, gw.clock, "agency", "t", "t")
        cn = Api(session, homes[CN].local_url, {"agency": secret_cn}, US)
        status, inbox, _ = await cn.call("GET", "/v1/inbox?limit=100")
        assert status == 200
        assert [m["id"] for m in inbox["messages"]] == ids

        # The request after the failed one starts again at the failed batch's head: the batch
        # built ahead of it was given up, never sent past it.
        assert requests[1] == list(range(BATCH + 1, 2 * BATCH + 1))
        assert requests[2][0] == BATCH + 1
        sent_once_accepted = [s for i, r in enumerate(requests) if i != 1 for s in r]
        assert sent_once_accepted == list(range(1, len(ids) + 1))
        # ...and batches did overlap: some went out straight after the answer to the one before.
        worker = lp.servers[US].worker
        assert worker is not None and worker.pipelined >= 2
    finally:
        await session.close()
        await lp.stop_all()


async def test_a_message_submitted_during_a_round_trip_joins_the_next_request(tmp_path: Path) -> None:
    """The batch planned ahead is topped up until the answer comes: a message submitted while a
    request is at the peer goes out in the next request, not one round trip later."""
    homes = prepare_pair(
        tmp_path,
        overrides={"delivery": {"batch_max": 2, "retry_base_seconds": 0.05, "retry_cap_seconds": 0.2}},
    )
    lp = LocalPair(homes)
    await lp.start(US)
    session = aiohttp.ClientSession()
    try:
        sender = lp.servers[US].gateway
        _, secret = await issue_token(sender.store, sender.clock, "agency", "t", "t")
        us = Api(session, homes[US].local_url, {"agency": secret}, CN)
        ids = []
        for _ in range(3):  # queued while the peer is down: the first request takes two
            status, res = await us.submit("seminar-notice")
            assert status == 202, res
            ids.append(res["id"])

        planned: set[str] = set()  # every message the sender's `due` has handed out
        real_due = sender.store.due

        async def due(*a: Any, **kw: Any) -> Any:
            got = await real_due(*a, **kw)
            planned.update(m.id for m in got)
            return got

        sender.store.due = due
        cn_server = GatewayServer(lp.configs[CN], lp.identity(CN), passphrase=lp.passphrase)
        gw = cn_server.gateway
        real = gw.receive
        requests: list[list[int]] = []
        first_arrived, release = asyncio.Event(), asyncio.Event()

        async def receive(raw: bytes) -> list[dict[str, Any]]:
            requests.append([json.loads(unb64url(e["header"]))["seq"] for e in json.loads(raw)["envelopes"]])
            if len(requests) == 1:
                first_arrived.set()
                await release.wait()  # the first request stays at the peer until the test says
            return await real(raw)

        gw.receive = receive  # type: ignore[method-assign]
        await cn_server.start()
        lp.servers[CN] = cn_server
        await asyncio.wait_for(first_arrived.wait(), 20)
        status, res = await us.submit("seminar-notice")  # while [1, 2] is at the peer
        assert status == 202, res
        ids.append(res["id"])
        async with asyncio.timeout(20):  # planned while the first request is still out
            while ids[3] not in planned:
                await asyncio.sleep(0.01)
        release.set()
        for mid in ids:
            await us.wait_status(mid, {"delivered"})
        assert requests[:2] == [[1, 2], [3, 4]]
    finally:
        await session.close()
        await lp.stop_all()
