"""Listing and paging refuse what would silently mislead a back-end: a cursor beyond the end, a
cursor that is not one, a filter that does not apply; times take any RFC 3339 form."""

from __future__ import annotations

import datetime as dt

from .conftest import CN, US, Pair


async def test_cursors_filters_and_times(pair: Pair) -> None:
    us, cn = pair.apis[US], pair.apis[CN]
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    ids = []
    for _ in range(3):
        status, res = await us.submit("seizure-share")
        assert status == 202
        ids.append(res["id"])
    for mid in ids:
        await us.wait_status(mid, {"delivered"})

    status, page, _ = await cn.call("GET", "/v1/inbox?limit=100")
    assert status == 200 and [m["id"] for m in page["messages"]][-3:] == ids
    last = page["next_cursor"]
    status, empty, _ = await cn.call("GET", f"/v1/inbox?after={last}")
    assert status == 200 and empty == {"messages": [], "next_cursor": last}
    status, prob, _ = await cn.call("GET", f"/v1/inbox?after={last + 99999}")
    assert status == 422 and prob["code"] == "schema.cursor" and prob["field"] == "after"
    status, prob, _ = await cn.call("GET", f"/v1/messages?direction=inbound&cursor={last + 5}")
    assert status == 422 and prob["field"] == "cursor"

    for bad in ("nonsense", "01", "../../etc"):
        status, prob, _ = await us.call("GET", f"/v1/messages?cursor={bad}")
        assert status == 422 and prob["code"] == "schema.cursor", bad
    status, page1, _ = await us.call("GET", "/v1/messages?limit=2")
    status, page2, _ = await us.call("GET", f"/v1/messages?limit=2&cursor={page1['next_cursor']}")
    assert status == 200 and page2["messages"][0]["id"] not in {m["id"] for m in page1["messages"]}

    status, prob, _ = await cn.call("GET", "/v1/messages?direction=inbound&status=delivered")
    assert status == 422 and prob["code"] == "schema.combination" and prob["field"] == "status"

    z = before.strftime("%Y-%m-%dT%H:%M:%SZ")
    plus8 = before.astimezone(dt.timezone(dt.timedelta(hours=8))).isoformat()
    for since in (z, plus8, before.isoformat(timespec="microseconds")):
        status, res, _ = await us.call("GET", f"/v1/messages?since={since.replace('+', '%2B')}&limit=100")
        assert status == 200, (since, res)
        assert set(ids) <= {m["id"] for m in res["messages"]}, since
    for bad in ("2026-12-03", "2026-12-03T15:07:20", "yesterday"):
        status, prob, _ = await us.call("GET", f"/v1/messages?since={bad}")
        assert status == 422 and prob["code"] == "schema.date" and prob["field"] == "since", bad


async def test_a_future_seizure_and_a_reply_to_no_invitation_are_refused(pair: Pair) -> None:
    from .conftest import sample

    us, cn = pair.apis[US], pair.apis[CN]
    body = sample("seizure-share")
    body["seizure_date"] = "2030-01-01"
    status, prob = await us.submit("seizure-share", body=body)
    assert status == 422 and prob["code"] == "schema.date_future" and prob["field"] == "$.body.seizure_date"

    reply = sample("port-visit-reply")
    reply["invitation_id"] = "01950000-0000-7000-8000-00000000beef"
    status, prob = await cn.submit("port-visit-reply", body=reply)
    assert status == 422 and prob["code"] == "schema.reference" and prob["field"] == "$.body.invitation_id"
    # A reply to an invitation CN really received from US is accepted.
    status, inv = await us.submit("port-visit-invitation")
    assert status == 202
    await us.wait_status(inv["id"], {"delivered"})
    reply["invitation_id"] = inv["id"]
    status, res = await cn.submit("port-visit-reply", body=reply)
    assert status == 202, res
    await cn.wait_status(res["id"], {"delivered"})
