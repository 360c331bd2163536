"""G4 on real servers: replayed envelopes get the original receipt; stale ones are refused."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from customs_gateway.core.encoding import b64url, json_bytes
from customs_gateway.core.envelope import (
    Document,
    Envelope,
    Header,
    SignedDocument,
    build_envelope,
    seal_document,
    sign_envelope,
)
from customs_gateway.core.receipt import Statement, verify_refusal

from .conftest import CN, US, Pair, peer_post, sample, terms


def _forge(
    pair: Pair, *, sent_at: dt.datetime, seq: int, body: dict[str, Any] | None = None, mid: str | None = None
) -> dict[str, Any]:
    us = pair.gw(US)
    now = us.clock.now()
    doc = Document(
        mid or us.ids.new_id(),
        US,
        CN,
        "seizure-share",
        now if sent_at >= now else sent_at,
        body or sample("seizure-share"),
        handling=terms("seizure-share", now),
    )
    env, _, _ = build_envelope(
        doc,
        seq=seq,
        sent_at=sent_at,
        attempt=1,
        signing_key=us.identity.active_signing_key(now),
        recipient_key=us.peer.encryption_key(now),
    )
    return env.to_dict()


async def _post(pair: Pair, payload: Any) -> tuple[int, Any]:
    status, _, raw = await peer_post(pair, "/peer/v1/envelopes", json.dumps(payload).encode(), "application/json")
    return status, json.loads(raw)


async def test_replayed_envelope_gets_original_receipt_flagged_duplicate(pair: Pair) -> None:
    now = pair.gw(US).clock.now()
    env = _forge(pair, sent_at=now, seq=1)
    s1, r1 = await _post(pair, env)
    s2, r2 = await _post(pair, env)
    s3, r3 = await _post(pair, {"envelopes": [env, env]})
    assert (s1, s2, s3) == (200, 200, 200)
    assert r1["results"][0]["status"] == "accepted"
    assert r2["results"][0]["status"] == "duplicate"
    assert [x["status"] for x in r3["results"]] == ["duplicate", "duplicate"]
    # Byte-identical original receipt every time.
    assert r2["results"][0]["receipt"] == r1["results"][0]["receipt"] == r3["results"][1]["receipt"]
    _, inbox, _ = await pair.apis[CN].call("GET", "/v1/inbox")
    assert len(inbox["messages"]) == 1


async def test_same_id_with_a_different_document_is_refused(pair: Pair) -> None:
    now = pair.gw(US).clock.now()
    first = _forge(pair, sent_at=now, seq=1)
    mid = pair.gw(US).ids.new_id()
    a = _forge(pair, sent_at=now, seq=2, mid=mid)
    other = sample("seizure-share")
    other["case_reference"] = "TAMPERED"
    b = _forge(pair, sent_at=now, seq=3, mid=mid, body=other)
    _, r = await _post(pair, {"envelopes": [first, a, b]})
    assert [x["status"] for x in r["results"]] == ["accepted", "accepted", "refused"]
    assert r["results"][2]["code"] == "replay.conflict"
    rf = verify_refusal(
        Statement.from_dict("refusal", r["results"][2]["refusal"]),
        message_id=mid,
        sender=US,
        receiver=CN,
        key_for=pair.gw(US).peer.verify_key,
        envelope_sha256=Envelope.from_dict(b).digest,  # the conflicting envelope, not the accepted one
    )
    assert rf.code == "replay.conflict" and not rf.retryable
    entries = [
        e["entry"]
        for e in (await pair.apis[CN].call("GET", "/v1/audit/entries?limit=1000", role="auditor"))[1]["entries"]
    ]
    assert any(e["kind"] == "refused" and e.get("code") == "replay.conflict" for e in entries)


async def test_envelope_outside_skew_window_is_refused_and_logged(pair: Pair) -> None:
    now = pair.gw(US).clock.now()
    for delta in (-400, 400):
        env = _forge(pair, sent_at=now + dt.timedelta(seconds=delta), seq=1)
        status, r = await _post(pair, env)
        assert status == 200
        res = r["results"][0]
        assert res["status"] == "refused"
        assert res["code"] == "replay.skew"
    _, inbox, _ = await pair.apis[CN].call("GET", "/v1/inbox")
    assert inbox["messages"] == []
    _, entries, _ = await pair.apis[CN].call("GET", "/v1/audit/entries", role="auditor")
    assert [e["entry"]["code"] for e in entries["entries"] if e["entry"]["kind"] == "refused"] == [
        "replay.skew",
        "replay.skew",
    ]


async def test_sequence_gaps_are_reported(pair: Pair) -> None:
    now = pair.gw(US).clock.now()
    _, r = await _post(pair, {"envelopes": [_forge(pair, sent_at=now, seq=1), _forge(pair, sent_at=now, seq=4)]})
    assert [x["status"] for x in r["results"]] == ["accepted", "accepted"]
    _, peers, _ = await pair.apis[CN].call("GET", "/v1/admin/peers", role="admin")
    p = peers["peers"][0]
    assert p["sequence_gaps"] == 1
    assert p["recent_gaps"] == [{"from": 2, "to": 3}]
    assert p["received_high_water"] == 4


async def test_tampered_envelope_is_refused_not_stored(pair: Pair) -> None:
    now = pair.gw(US).clock.now()
    env = _forge(pair, sent_at=now, seq=1)
    sig = bytearray(env["signature"].encode())
    sig[5] = ord("A") if sig[5] != ord("A") else ord("B")
    env["signature"] = sig.decode()
    _, r = await _post(pair, env)
    assert r["results"][0]["status"] == "refused"
    assert r["results"][0]["code"] == "signature.invalid"
    _, inbox, _ = await pair.apis[CN].call("GET", "/v1/inbox")
    assert inbox["messages"] == []


async def test_a_document_with_a_key_twice_is_refused_signed_logged_and_not_stored(pair: Pair) -> None:
    """The sender's own keys sign a document whose body says `health_safety_risk` twice, once
    true and once false: parsers disagree on which one counts, so the receiver refuses it (I-JSON)
    with a signed, final refusal naming the key, logs it, and stores nothing."""
    us = pair.gw(US)
    now = us.clock.now()
    key, enc = us.identity.active_signing_key(now), us.peer.encryption_key(now)
    body = {**sample("seizure-share"), "health_safety_risk": False}
    doc = Document(us.ids.new_id(), US, CN, "seizure-share", now, body, handling=terms("seizure-share", now))
    data = doc.to_bytes()
    assert data.count(b'"health_safety_risk":false') == 1
    data = data.replace(b'"health_safety_risk":false', b'"health_safety_risk":true,"health_safety_risk":false')
    wrapper = json_bytes({"document": b64url(data), "kid": key.kid, "signature": b64url(key.sign("document", data))})
    signed = SignedDocument.from_bytes(wrapper)
    header = Header(doc.id, 1, US, CN, doc.type, now, now, 1, enc.suite_name, key.kid, enc.kid)
    env = sign_envelope(header, seal_document(signed, doc.id, US, CN, enc), key).to_dict()
    _, r = await _post(pair, env)
    [res] = r["results"]
    assert (res["status"], res["code"], res["retryable"]) == ("refused", "schema.duplicate_key", False), res
    rf = verify_refusal(
        Statement.from_dict("refusal", res["refusal"]),
        message_id=doc.id,
        sender=US,
        receiver=CN,
        key_for=us.peer.verify_key,
        envelope_sha256=Envelope.from_dict(env).digest,
    )
    assert (rf.code, rf.retryable) == ("schema.duplicate_key", False)
    _, inbox, _ = await pair.apis[CN].call("GET", "/v1/inbox")
    assert inbox["messages"] == []
    _, entries, _ = await pair.apis[CN].call("GET", "/v1/audit/entries?limit=1000", role="auditor")
    [logged] = [e["entry"] for e in entries["entries"] if e["entry"].get("code") == "schema.duplicate_key"]
    assert (logged["message_id"], logged["detail"]["field"]) == (doc.id, "document.body.health_safety_risk")


async def test_garbage_to_peer_api_is_a_problem_not_a_500(pair: Pair) -> None:
    for payload in ([1, 2], {"envelopes": []}, {"envelopes": "x"}, {"v": 2}, "text"):
        status, body = await _post(pair, payload)
        assert 400 <= status < 500 or (status == 200 and body["results"][0]["status"] == "refused"), (
            payload,
            status,
            body,
        )


async def test_a_reused_sequence_number_is_refused_logged_and_alerted(pair: Pair) -> None:
    now = pair.gw(US).clock.now()
    first, again = _forge(pair, sent_at=now, seq=7), _forge(pair, sent_at=now, seq=7)
    _, r = await _post(pair, {"envelopes": [first, again]})
    assert [x["status"] for x in r["results"]] == ["accepted", "refused"]
    assert r["results"][1]["code"] == "replay.seq_reused"
    rf = verify_refusal(
        Statement.from_dict("refusal", r["results"][1]["refusal"]),
        message_id=r["results"][1]["id"],
        sender=US,
        receiver=CN,
        key_for=pair.gw(US).peer.verify_key,
        envelope_sha256=Envelope.from_dict(again).digest,
    )
    assert rf.code == "replay.seq_reused" and not rf.retryable
    _, entries, _ = await pair.apis[CN].call("GET", "/v1/audit/entries?limit=1000", role="auditor")
    assert any(
        e["entry"]["kind"] == "refused" and e["entry"].get("code") == "replay.seq_reused" for e in entries["entries"]
    )
