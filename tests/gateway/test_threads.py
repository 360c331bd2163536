"""Threads (DESIGN §12, issue 17): a business document may answer a message both sides know
(`in_reply_to`, signed with it); a port-visit reply answers an invitation the receiver sent. The
sender refuses what the receiver could not know (422); a receiver refuses it anyway if it comes
(a signed `schema.reference` refusal), and nothing of it reaches the inbox."""

from __future__ import annotations

import datetime as dt
from typing import Any

from customs_gateway.core.audit import AuditEntry
from customs_gateway.core.bundle import PeerKeys
from customs_gateway.core.envelope import Document, SignedDocument
from customs_gateway.core.receipt import Statement, verify_refusal

from .conftest import CN, US, Pair, sample

UNKNOWN = "01950000-0000-7000-8000-00000000beef"


async def _signed(pair: Pair, side: str, message_id: str) -> Document:
    m = await pair.gw(side).store.get_message(message_id)
    assert m is not None
    return Document.from_bytes(SignedDocument.from_bytes(m.signed_document).document_bytes)


async def _submit(pair: Pair, side: str, msg_type: str, body: dict[str, Any], **extra: Any) -> tuple[int, Any]:
    api = pair.apis[side]
    status, res, _ = await api.call(
        "POST", "/v1/messages", json_body={"type": msg_type, "to": api.peer, "body": body, **extra}
    )
    return status, res


async def test_replies_name_messages_both_sides_know(pair: Pair) -> None:
    us, cn = pair.apis[US], pair.apis[CN]
    status, first = await us.submit("seizure-share")
    assert status == 202
    await us.wait_status(first["id"], {"delivered"})
    # CN answers US's message; US answers CN's answer; either side may answer its own earlier one.
    status, answer = await _submit(pair, CN, "seizure-share", sample("seizure-share"), in_reply_to=first["id"])
    assert status == 202, answer
    await cn.wait_status(answer["id"], {"delivered"})
    status, again = await _submit(pair, US, "seizure-share", sample("seizure-share"), in_reply_to=answer["id"])
    assert status == 202, again
    status, own = await _submit(pair, US, "seizure-share", sample("seizure-share"), in_reply_to=again["id"])
    assert status == 202, own  # queued before it: the peer has it by the time this one arrives
    for mid in (again["id"], own["id"]):
        await us.wait_status(mid, {"delivered"})
    # Signed with the document; stored beside it on both sides.
    assert (await _signed(pair, CN, answer["id"])).in_reply_to == first["id"]
    assert (await _signed(pair, US, first["id"])).in_reply_to is None
    assert b"in_reply_to" not in (await pair.gw(US).store.get_message(first["id"])).signed_document  # type: ignore[union-attr]
    held = await pair.gw(US).store.inbox_item(answer["id"])
    assert held is not None and held.in_reply_to == first["id"]
    held = await pair.gw(CN).store.inbox_item(own["id"])
    assert held is not None and held.in_reply_to == again["id"]
    # The thread, from any of its messages, both ways, oldest first.
    for side, start in ((US, own["id"]), (CN, first["id"]), (US, answer["id"])):
        found = await pair.gw(side).store.thread(start)
        assert found is not None
        root, items, cut = found
        assert root == first["id"] and not cut
        assert [t.id for t in items] == [first["id"], answer["id"], again["id"], own["id"]]
    items = (await pair.gw(CN).store.thread(first["id"]))[1]  # type: ignore[index]
    assert [t.direction for t in items] == ["inbound", "outbound", "inbound", "inbound"]
    assert await pair.gw(US).store.thread(UNKNOWN) is None


async def test_the_sender_refuses_a_reply_the_peer_could_not_know(pair: Pair) -> None:
    us = pair.apis[US]
    status, prob = await _submit(pair, US, "seizure-share", sample("seizure-share"), in_reply_to=UNKNOWN)
    assert status == 422 and prob["code"] == "schema.reference" and prob["field"] == "$.in_reply_to", prob
    for bad in ("not-a-uuid", 42, "01950000-0000-7000-8000-00000000BEEF"):
        status, prob = await _submit(pair, US, "seizure-share", sample("seizure-share"), in_reply_to=bad)
        assert status == 422 and prob["code"] == "schema.uuid" and prob["field"] == "$.in_reply_to", (bad, prob)
    # A message of ours that failed never reached the peer: nothing can answer it.
    gw = pair.gw(US)
    body = sample("seizure-share")
    body["container_numbers"] = ["CSQU3054384"]  # wrong check digit: the peer refuses it
    now = gw.clock.now()
    bad = gw._new_message("seizure-share", body, now, now + dt.timedelta(hours=1), None)
    await gw.store.submit(bad, AuditEntry(at=now, kind="submitted", actor="test", message_id=bad.id))
    gw.outbox_changed.set()
    await us.wait_status(bad.id, {"refused"})
    status, prob = await _submit(pair, US, "seizure-share", sample("seizure-share"), in_reply_to=bad.id)
    assert status == 422 and prob["code"] == "schema.reference", prob
    # Control messages are not part of any thread.
    status, first = await us.submit("seizure-share")
    await us.wait_status(first["id"], {"delivered"})
    status, acked, _ = await pair.apis[CN].call(
        "POST", f"/v1/inbox/{first['id']}/ack", json_body={"status": "processed"}
    )
    assert status == 202
    status, prob = await _submit(pair, CN, "seizure-share", sample("seizure-share"), in_reply_to=acked["ack_id"])
    assert status == 422 and prob["code"] == "schema.reference", prob
    # Idempotency covers in_reply_to: the same key with another in_reply_to is a conflict.
    key = {"Idempotency-Key": "thread-1"}
    body = {"type": "seizure-share", "to": CN, "body": sample("seizure-share")}
    status, _, _ = await us.call("POST", "/v1/messages", json_body=body, headers=key)
    assert status == 202
    status, prob, _ = await us.call("POST", "/v1/messages", json_body={**body, "in_reply_to": first["id"]}, headers=key)
    assert status == 409 and prob["code"] == "idempotency.conflict", prob


async def test_a_port_visit_reply_answers_its_invitation(pair: Pair) -> None:
    us, cn = pair.apis[US], pair.apis[CN]
    status, inv = await us.submit("port-visit-invitation")
    await us.wait_status(inv["id"], {"delivered"})
    reply = sample("port-visit-reply")
    reply["invitation_id"] = inv["id"]
    status, res = await cn.submit("port-visit-reply", body=reply)
    assert status == 202, res
    await cn.wait_status(res["id"], {"delivered"})
    assert (await _signed(pair, CN, res["id"])).in_reply_to == inv["id"]  # filled in from invitation_id


async def test_the_receiver_refuses_what_it_does_not_know_with_a_signed_refusal(pair: Pair) -> None:
    """A sender that skips its own check (an older or a hostile gateway) gets a signed refusal."""
    us = pair.apis[US]
    gw = pair.gw(US)
    now = gw.clock.now()
    unknown = gw._new_message(
        "seizure-share", sample("seizure-share"), now, now + dt.timedelta(hours=1), None, in_reply_to=UNKNOWN
    )
    reply = sample("port-visit-reply")
    reply["invitation_id"] = UNKNOWN
    no_invitation = gw._new_message("port-visit-reply", reply, now, now + dt.timedelta(hours=1), None)
    # US's own invitation is not one US's reply may name: only an invitation the receiver sent.
    _, ours = await us.submit("port-visit-invitation")
    await us.wait_status(ours["id"], {"delivered"})
    reply2 = sample("port-visit-reply")
    reply2["invitation_id"] = ours["id"]
    wrong_way = gw._new_message("port-visit-reply", reply2, now, now + dt.timedelta(hours=1), None)
    cases = (
        (unknown, "document.in_reply_to"),
        (no_invitation, "body.invitation_id"),
        (wrong_way, "body.invitation_id"),
    )
    for msg, _ in cases:
        await gw.store.submit(msg, AuditEntry(at=now, kind="submitted", actor="test", message_id=msg.id))
    gw.outbox_changed.set()
    for msg, field in cases:
        m = await us.wait_status(msg.id, {"refused"})
        refusal = verify_refusal(
            Statement.from_dict("refusal", m["refusal"]),
            message_id=msg.id,
            sender=US,
            receiver=CN,
            key_for=PeerKeys(pair.lp.identity(CN).bundle.bundle).verify_key,
        )
        assert refusal.code == "schema.reference" and not refusal.retryable, refusal
        assert m["last_error"].startswith("schema.reference") and field.split(".")[-1] in refusal.detail, m
        assert await pair.gw(CN).store.inbox_item(msg.id) is None


async def test_consent_names_the_message_and_the_request_on_both_sides(pair: Pair) -> None:
    us, cn = pair.apis[US], pair.apis[CN]
    _, share = await us.submit("seizure-share")
    await us.wait_status(share["id"], {"delivered"})
    ask = {**sample("consent-request"), "message_id": share["id"]}
    status, req = await cn.submit("consent-request", body=ask)
    assert status == 202, req
    await cn.wait_status(req["id"], {"delivered"})
    assert (await _signed(pair, CN, req["id"])).in_reply_to == share["id"]  # answers what it asks about
    decide = {**sample("consent-decision"), "request_id": req["id"]}
    status, dec = await us.submit("consent-decision", body=decide)
    assert status == 202, dec
    await us.wait_status(dec["id"], {"delivered"})
    found = await pair.gw(CN).store.thread(dec["id"])
    assert found is not None and [t.id for t in found[1]] == [share["id"], req["id"], dec["id"]]
    # The sender refuses what the peer did not send it: CN cannot ask about its own message,
    # US cannot decide on something that is not a consent request.
    _, own = await cn.submit("seizure-share")
    status, prob = await cn.submit("consent-request", body={**ask, "message_id": own["id"]})
    assert status == 422 and prob["code"] == "schema.reference" and prob["field"] == "$.body.message_id", prob
    status, prob = await us.submit("consent-decision", body={**decide, "request_id": own["id"]})
    assert status == 422 and prob["code"] == "schema.reference" and prob["field"] == "$.body.request_id", prob
    # The receiver refuses a decision on a request it never sent, with a signed refusal.
    gw = pair.gw(US)
    now = gw.clock.now()
    forged = gw._new_message(
        "consent-decision", {**decide, "request_id": UNKNOWN}, now, now + dt.timedelta(hours=1), None
    )
    await gw.store.submit(forged, AuditEntry(at=now, kind="submitted", actor="test", message_id=forged.id))
    gw.outbox_changed.set()
    m = await us.wait_status(forged.id, {"refused"})
    assert m["last_error"].startswith("schema.reference") and "request_id" in m["last_error"], m
    assert await pair.gw(CN).store.inbox_item(forged.id) is None


async def test_the_thread_endpoint_and_the_views_show_what_answers_what(pair: Pair) -> None:
    us, cn = pair.apis[US], pair.apis[CN]
    _, first = await us.submit("seizure-share")
    await us.wait_status(first["id"], {"delivered"})
    status, answer = await _submit(
        pair, CN, "information-request", sample("information-request"), in_reply_to=first["id"]
    )
    assert status == 202, answer
    await cn.wait_status(answer["id"], {"delivered"})
    # The views say what each message answers.
    status, m, _ = await cn.call("GET", f"/v1/messages/{answer['id']}")
    assert status == 200 and m["in_reply_to"] == first["id"]
    status, m, _ = await us.call("GET", f"/v1/messages/{first['id']}")
    assert status == 200 and m["in_reply_to"] is None
    status, page, _ = await us.call("GET", "/v1/inbox?limit=100")
    (item,) = [x for x in page["messages"] if x["id"] == answer["id"]]
    assert item["in_reply_to"] == first["id"]
    # The thread, from either message, on either side, for an agency or an auditor.
    for api, start, role in ((us, answer["id"], "agency"), (cn, first["id"], "auditor")):
        status, t, _ = await api.call("GET", f"/v1/threads/{start}", role=role)
        assert status == 200, t
        assert t["id"] == start and t["root"] == first["id"] and t["truncated"] is False
        assert [x["id"] for x in t["messages"]] == [first["id"], answer["id"]]
        assert t["messages"][1]["in_reply_to"] == first["id"]
    status, t, _ = await us.call("GET", f"/v1/threads/{first['id']}")
    assert [x["direction"] for x in t["messages"]] == ["outbound", "inbound"]
    assert t["messages"][0]["status"] == "delivered" and t["messages"][1]["type"] == "information-request"
    status, prob, _ = await us.call("GET", f"/v1/threads/{first['id']}", role="admin")
    assert status == 403, prob
    status, prob, _ = await us.call("GET", f"/v1/threads/{UNKNOWN}")
    assert status == 404 and prob["code"] == "message.not_found", prob
    status, prob, _ = await us.call("GET", "/v1/threads/not-an-id")
    assert status == 422 and prob["code"] == "schema.uuid" and prob["field"] == "id", prob
