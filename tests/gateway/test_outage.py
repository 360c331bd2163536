"""Peer outages, expiry and permanent refusals: the queue drains, nothing lost or duplicated."""

from __future__ import annotations

import asyncio
import datetime as dt

from customs_gateway.core.audit import AuditEntry
from customs_gateway.core.encoding import format_ts

from .conftest import CN, US, Pair, sample


async def test_peer_down_then_up_queue_drains_in_order(pair: Pair) -> None:
    us = pair.apis[US]
    await pair.lp.stop(CN)
    ids = []
    for i in range(30):
        body = sample("seizure-share")
        body["case_reference"] = f"OUTAGE-{i:03d}"
        status, r = await us.submit("seizure-share", body=body)
        assert status == 202
        ids.append(r["id"])
    await asyncio.sleep(0.6)
    m = await us.wait_status(ids[0], {"retrying"})
    assert m["attempts"] >= 1 and "unreachable" in (m["last_error"] or "")
    _, peers, _ = await us.call("GET", "/v1/admin/peers", role="admin")
    assert peers["peers"][0]["queue_depth"] == 30
    # Ready is about the local API: still 200, with the failing link beside it.
    status, ready, _ = await us.call("GET", "/readyz", role=None)
    assert status == 200 and ready["status"] == "ready"
    assert ready["peer"]["status"] == "failing" and "unreachable" in ready["peer"]["last_failure"]
    await pair.lp.start(CN)
    for mid in ids:
        done = await us.wait_status(mid, {"delivered"}, timeout=30)
        assert done["last_error"] is None  # delivered: the earlier attempts' error no longer stands
    status, ready, _ = await us.call("GET", "/readyz", role=None)
    assert ready["peer"]["status"] == "reachable" and ready["peer"]["last_failure"] is None
    session = us.session
    cn_url = pair.lp.homes[CN].local_url
    from customs_gateway.service.gateway import issue_token

    gw = pair.gw(CN)
    _, tok = await issue_token(gw.store, gw.clock, "agency", "t", "test")
    async with session.get(cn_url + "/v1/inbox?limit=500", headers={"Authorization": f"Bearer {tok}"}) as r:
        inbox = await r.json()
    got = [m["id"] for m in inbox["messages"]]
    assert got == ids  # exactly once each, in submission order
    _, peers, _ = await us.call("GET", "/v1/admin/peers", role="admin")
    assert peers["peers"][0]["queue_depth"] == 0


async def test_undelivered_message_expires(pair: Pair) -> None:
    us = pair.apis[US]
    await pair.lp.stop(CN)
    expires = format_ts(dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1))
    status, r, _ = await us.call(
        "POST",
        "/v1/messages",
        json_body={
            "type": "seminar-notice",
            "to": CN,
            "body": sample("seminar-notice"),
            "expires_at": expires,
        },
    )
    assert status == 202, r
    m = await us.wait_status(r["id"], {"expired"}, timeout=10)
    assert m["history"][-1]["status"] == "expired"


async def test_permanent_refusal_is_not_retried(pair: Pair) -> None:
    """A sender with an older, laxer schema queues a body the receiver refuses for good."""
    gw = pair.gw(US)
    body = sample("seizure-share")
    body["container_numbers"] = ["CSQU3054384"]  # wrong ISO 6346 check digit
    now = gw.clock.now()
    msg = gw._new_message("seizure-share", body, now, now + dt.timedelta(hours=1), None)
    await gw.store.submit(msg, AuditEntry(at=now, kind="submitted", actor="test", message_id=msg.id))
    gw.outbox_changed.set()
    m = await pair.apis[US].wait_status(msg.id, {"refused"})
    assert m["refusal"] is not None
    assert m["last_error"].startswith("schema.container_check_digit")
    assert m["attempts"] == 1
    await asyncio.sleep(0.5)
    m2 = await pair.apis[US].wait_status(msg.id, {"refused"})
    assert m2["attempts"] == 1
    _, inbox, _ = await pair.apis[CN].call("GET", "/v1/inbox")
    assert inbox["messages"] == []


async def test_a_peer_down_longer_than_configured_is_reported_unreachable_and_warned_once_a_minute(
    pair: Pair,
) -> None:
    from structlog.testing import capture_logs

    gw = pair.gw(US)
    us = pair.apis[US]
    with capture_logs() as logs:
        await pair.lp.stop(CN)
        status, r = await us.submit("seizure-share")
        assert status == 202
        await us.wait_status(r["id"], {"retrying"})
        for _ in range(400):  # several failed attempts (retry_cap 0.5 s in these tests)
            if (await us.wait_status(r["id"], {"retrying"}))["attempts"] >= 3:
                break
            await asyncio.sleep(0.05)
    warnings = [e for e in logs if e["event"] == "delivery.failing"]
    assert len(warnings) == 1 and warnings[0]["peer"] == CN and "unreachable" in warnings[0]["reason"]
    # Move the failure start back past the configured limit (900 s): the link is now unreachable.
    assert gw.link.failing_since is not None
    gw.link.failing_since -= dt.timedelta(seconds=gw.config.delivery.peer_unreachable_after_seconds + 1)
    status, ready, _ = await us.call("GET", "/readyz", role=None)
    assert status == 200 and ready["peer"]["status"] == "unreachable"
    assert ready["peer"]["failing_for_seconds"] > gw.config.delivery.peer_unreachable_after_seconds
