"""Flow control (decision 0018): while delivery is behind and the link works, a submission waits
(bounded) until the worker has caught up; a failing link never holds one; nothing is refused."""

from __future__ import annotations

import asyncio

import msgspec

from customs_gateway.core.backlog import Backlog

from .conftest import US, Pair


def _wait(pair: Pair, seconds: float) -> None:
    gw = pair.gw(US)
    delivery = msgspec.structs.replace(gw.config.delivery, backlog_wait_seconds=seconds)
    gw.config = msgspec.structs.replace(gw.config, delivery=delivery)


async def test_submissions_wait_while_delivery_is_behind_and_never_while_the_link_fails(pair: Pair) -> None:
    gw, api = pair.gw(US), pair.apis[US]
    worker = pair.lp.servers[US].worker
    await worker.stop()  # nothing is planned meanwhile: the backlog only grows
    gw.backlog = Backlog(3)
    _wait(pair, 60.0)
    ids = []
    for _ in range(4):  # the fourth takes it over 3
        status, res = await api.submit("seizure-share")
        assert status == 202, res
        ids.append(res["id"])
    assert gw.backlog.over and gw.counters.paced == 0
    status, res = await asyncio.wait_for(api.submit("seizure-share"), 10)  # not the 60 s wait:
    assert status == 202 and gw.counters.paced == 0, res  # a worker that is not planning holds nothing
    ids.append(res["id"])
    gw.planned(0, full=True)  # the worker plans again (a full batch: more is due)

    held = asyncio.create_task(api.submit("seizure-share"))
    await asyncio.sleep(0.3)
    assert not held.done() and gw.counters.paced == 1  # waiting for delivery to catch up
    status, prob = await asyncio.wait_for(api.submit("seizure-share", body={"x": 1}), 10)  # not the 60 s wait
    assert status == 422 and gw.counters.paced == 1, prob  # bad input is answered at once, never held
    gw.planned(4, full=True)  # as the worker does: 5 - 4 = 1, at or below half of 3
    status, res = await asyncio.wait_for(held, 10)
    assert status == 202, res
    ids.append(res["id"])

    gw.backlog.submitted(10)
    assert gw.backlog.over
    gw.link.failed(gw.clock.now(), "test: the peer is down")
    status, res = await asyncio.wait_for(api.submit("seizure-share"), 10)  # not the 60 s wait
    assert status == 202 and gw.counters.paced == 1, res  # a failing link holds nothing
    ids.append(res["id"])

    gw.link.answered(gw.clock.now())
    _wait(pair, 0.2)
    gw.planned(0, full=True)
    status, res = await asyncio.wait_for(api.submit("seizure-share"), 10)  # the wait is bounded
    assert status == 202 and gw.counters.paced == 2, res
    ids.append(res["id"])

    await worker.start()
    for mid in ids:
        m = await api.wait_status(mid, {"delivered"}, timeout=30)
        assert m["status"] == "delivered"
    assert not gw.backlog.over  # the worker's batches brought it down
    async with api.session.get(pair.lp.homes[US].local_url + "/metrics") as r:
        metrics = await r.text()
    assert "customs_gateway_submissions_paced_total 2.0" in metrics
