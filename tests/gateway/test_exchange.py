"""Two real gateways exchange every message type both ways, with receipts and business acks."""

from __future__ import annotations

import asyncio

import pytest

from customs_gateway.core.envelope import BUSINESS_TYPES
from customs_gateway.core.receipt import Statement, verify_receipt

from .conftest import CN, US, Pair, sample


@pytest.mark.parametrize("sender,receiver", [(US, CN), (CN, US)])
async def test_every_type_is_delivered_and_lands_once_in_the_inbox(pair: Pair, sender: str, receiver: str) -> None:
    api, peer_api = pair.apis[sender], pair.apis[receiver]
    # What a body names must be a message the receiver sent: it invites first, and asks for
    # consent about a message it was sent, so the sender can reply and decide.
    status, inv = await peer_api.submit("port-visit-invitation")
    assert status == 202, inv
    await peer_api.wait_status(inv["id"], {"delivered"})
    _, share = await api.submit("seizure-share")
    await api.wait_status(share["id"], {"delivered"})
    status, req = await peer_api.submit("consent-request", body=dict(sample("consent-request"), message_id=share["id"]))
    assert status == 202, req
    await peer_api.wait_status(req["id"], {"delivered"})
    names = {
        "port-visit-reply": {"invitation_id": inv["id"]},
        "consent-request": {"message_id": inv["id"]},
        "consent-decision": {"request_id": req["id"]},
    }
    ids, bodies = {}, {}
    for t in BUSINESS_TYPES:
        bodies[t] = await api.with_files(t, {**sample(t), **names.get(t, {})})
        status, res = await api.submit(t, body=bodies[t])
        assert status == 202, res
        assert res["status"] == "queued"
        ids[t] = res["id"]
    for mid in ids.values():
        m = await api.wait_status(mid, {"delivered"})
        # The stored receipt verifies under the receiver's key and binds this exact document.
        st = Statement.from_dict("receipt", m["receipt"])
        rc = verify_receipt(
            st,
            message_id=mid,
            sender=sender,
            receiver=receiver,
            document_sha256=bytes.fromhex(m["document_sha256"]),
            key_for=pair.gw(sender).peer.verify_key,
        )
        assert rc.kid == st.kid
        assert m["history"][0]["status"] == "queued"
        assert m["history"][-1]["status"] == "delivered"
    status, inbox, _ = await peer_api.call("GET", "/v1/inbox")
    assert status == 200
    got = {m["id"]: m for m in inbox["messages"] if m["id"] != share["id"]}
    assert set(got) == set(ids.values())
    for t, mid in ids.items():
        assert got[mid]["type"] == t
        assert got[mid]["from"] == sender
        body = dict(got[mid]["body"])
        # The gateway wrote each file's size and digest; the key stays inside the sealed document.
        files = body.pop("files", [])
        assert [{k: v for k, v in f.items() if k not in ("size", "sha256")} for f in files] == bodies[t].get(
            "files", []
        )
        assert all(f["size"] > 0 and len(f["sha256"]) == 64 for f in files)
        assert body == {k: v for k, v in bodies[t].items() if k != "files"}


async def test_business_ack_travels_back_and_marks_acknowledged(pair: Pair) -> None:
    us, cn = pair.apis[US], pair.apis[CN]
    _, res = await us.submit("seizure-share")
    await us.wait_status(res["id"], {"delivered"})
    status, ack, _ = await cn.call(
        "POST", f"/v1/inbox/{res['id']}/ack", json_body={"status": "processed", "reason": "已处理"}
    )
    assert status == 202, ack
    m = await us.wait_status(res["id"], {"acknowledged"})
    assert m["ack"]["status"] == "processed"
    assert m["ack"]["reason"] == "已处理"
    # A second ack of the same message is a conflict, and changes nothing.
    status, prob, headers = await cn.call("POST", f"/v1/inbox/{res['id']}/ack", json_body={"status": "rejected"})
    assert status == 409
    assert prob["code"] == "ack.already"
    assert headers["Content-Type"].startswith("application/problem+json")
    # The ack itself is delivered (receipted) on the CN side too.
    await asyncio.sleep(0.2)
    _, cn_inbox, _ = await cn.call("GET", "/v1/inbox")
    assert [m["ack_status"] for m in cn_inbox["messages"]] == ["processed"]


async def test_idempotent_submit(pair: Pair) -> None:
    us = pair.apis[US]
    h = {"Idempotency-Key": "case-2026-0042"}
    s1, r1 = await us.submit("seizure-share", headers=h)
    s2, r2 = await us.submit("seizure-share", headers=h)
    assert (s1, s2) == (202, 202)
    assert r1["id"] == r2["id"]
    body = sample("seizure-share")
    body["case_reference"] = "OTHER-CASE"
    s3, r3 = await us.submit("seizure-share", body=body, headers=h)
    assert s3 == 409
    assert r3["code"] == "idempotency.conflict"
    assert r3["field"] == "Idempotency-Key"
    _, listing, _ = await us.call("GET", "/v1/messages")
    assert [m["id"] for m in listing["messages"]] == [r1["id"]]


async def test_list_filters_and_cursor_pagination(pair: Pair) -> None:
    us = pair.apis[US]
    ids = []
    for t in ("seizure-share", "seminar-notice", "seizure-share"):
        _, r = await us.submit(t)
        ids.append(r["id"])
    _, page1, _ = await us.call("GET", "/v1/messages?limit=2")
    assert [m["id"] for m in page1["messages"]] == ids[:2]
    _, page2, _ = await us.call("GET", f"/v1/messages?limit=2&cursor={page1['next_cursor']}")
    assert [m["id"] for m in page2["messages"]] == ids[2:]
    _, seizures, _ = await us.call("GET", "/v1/messages?type=seizure-share")
    assert [m["id"] for m in seizures["messages"]] == [ids[0], ids[2]]
    status, prob, _ = await us.call("GET", "/v1/messages?status=bogus")
    assert status == 422 and prob["field"] == "status"


async def test_inbox_long_poll_wakes_on_arrival(pair: Pair) -> None:
    us, cn = pair.apis[US], pair.apis[CN]
    poll = asyncio.create_task(cn.call("GET", "/v1/inbox?wait=10"))
    await asyncio.sleep(0.2)
    assert not poll.done()
    _, r = await us.submit("port-visit-invitation")
    status, inbox, _ = await asyncio.wait_for(poll, 10)
    assert status == 200
    assert [m["id"] for m in inbox["messages"]] == [r["id"]]
    # The cursor moves on: a poll after it with no wait returns nothing.
    _, empty, _ = await cn.call("GET", f"/v1/inbox?after={inbox['next_cursor']}")
    assert empty["messages"] == []
