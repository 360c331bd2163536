"""State changes stay consistent (DESIGN §10), on two real gateways: a business ack moves only a
delivered message and only naming the delivered document; refusals name exactly the envelope
they refuse; no signed refusal can be had for an id already receipted."""

from __future__ import annotations

from typing import Any

import aiohttp

from customs_gateway.core.bundle import PeerKeys
from customs_gateway.core.envelope import Document, Envelope, build_envelope
from customs_gateway.core.receipt import Statement, verify_refusal
from customs_gateway.service import tls

from .conftest import CN, US, Pair, sample, terms

SEQ_BASE = 10_000  # forged envelopes use sequence numbers far from the real traffic's


async def _as_cn(pair: Pair, envelope: dict[str, Any]) -> dict[str, Any]:
    """POST one envelope to US-CBP's peer API over mutual TLS, as CN-GACC."""
    cn, us = pair.lp.identity(CN), pair.lp.identity(US)
    ctx = tls.client_context(cn.tls_cert_pem, cn.tls_key_pem, us.bundle.bundle.tls_certificate.encode())
    url = f"https://127.0.0.1:{pair.lp.homes[US].peer_port}/peer/v1/envelopes"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s, s.post(url, json=envelope) as r:
        assert r.status == 200, await r.text()
        body: dict[str, Any] = await r.json(content_type=None)
    [result] = body["results"]
    return dict(result)


def _ack_from_cn(pair: Pair, acked: str, digest_hex: str, seq: int) -> dict[str, Any]:
    cn, us = pair.lp.identity(CN), pair.lp.identity(US)
    now = pair.gw(US).clock.now()
    body = {"message_id": acked, "document_sha256": digest_hex, "status": "processed"}
    doc = Document(pair.gw(US).ids.new_id(), CN, US, "ack", now, body)
    env, _, _ = build_envelope(
        doc,
        seq=seq,
        sent_at=now,
        attempt=1,
        signing_key=cn.active_signing_key(now),
        recipient_key=PeerKeys(us.bundle.bundle).encryption_key(now),
    )
    return env.to_dict()


def _refusal(pair: Pair, result: dict[str, Any], envelope: dict[str, Any]) -> Any:
    return verify_refusal(
        Statement.from_dict("refusal", result["refusal"]),
        message_id=result["id"],
        sender=CN,
        receiver=US,
        key_for=PeerKeys(pair.lp.identity(US).bundle.bundle).verify_key,
        envelope_sha256=Envelope.from_dict(envelope).digest,
    )


async def _entries(pair: Pair, name: str) -> list[dict[str, Any]]:
    _, res, _ = await pair.apis[name].call("GET", "/v1/audit/entries?limit=1000", role="auditor")
    return [e["entry"] for e in res["entries"]]


async def test_an_ack_naming_another_document_is_refused_and_changes_nothing(pair: Pair) -> None:
    us = pair.apis[US]
    status, res = await us.submit("seizure-share")
    assert status == 202
    mid = res["id"]
    await us.wait_status(mid, {"delivered"})
    forged = _ack_from_cn(pair, mid, "00" * 32, SEQ_BASE)
    result = await _as_cn(pair, forged)
    assert (result["status"], result["code"], result["retryable"]) == ("refused", "ack.digest_mismatch", False)
    assert _refusal(pair, result, forged).code == "ack.digest_mismatch"
    assert (await us.wait_status(mid, {"delivered"}))["status"] == "delivered"
    refused = [e for e in await _entries(pair, US) if e["kind"] == "refused" and e.get("code") == "ack.digest_mismatch"]
    assert len(refused) == 1
    # The real ack, naming the delivered document, still moves it.
    status, ack, _ = await pair.apis[CN].call("POST", f"/v1/inbox/{mid}/ack", json_body={"status": "processed"})
    assert status == 202, ack
    assert (await us.wait_status(mid, {"acknowledged"}))["status"] == "acknowledged"


async def test_an_ack_before_the_receipt_is_refused_retryably_and_the_message_is_still_delivered(
    pair: Pair,
) -> None:
    await pair.lp.stop(CN)  # nothing reaches CN: the message stays queued / sent, retried
    us = pair.apis[US]
    status, res = await us.submit("seizure-share")
    assert status == 202
    mid = res["id"]
    msg = await pair.gw(US).store.get_message(mid)
    assert msg is not None
    forged = _ack_from_cn(pair, mid, msg.document_sha256.hex(), SEQ_BASE + 1)
    result = await _as_cn(pair, forged)
    assert (result["status"], result["code"], result["retryable"]) == ("refused", "ack.not_yet_delivered", True)
    _refusal(pair, result, forged)
    still = await pair.gw(US).store.get_message(mid)
    assert still is not None and still.status in ("queued", "retrying")
    await pair.lp.start(CN)
    assert (await us.wait_status(mid, {"delivered"}, timeout=30))["receipt"] is not None


async def test_no_signed_refusal_for_an_id_already_receipted(pair: Pair) -> None:
    cn_api = pair.apis[CN]
    status, res = await cn_api.submit("seizure-share")
    assert status == 202
    mid = res["id"]
    await cn_api.wait_status(mid, {"delivered"})
    stored = await pair.gw(US).store.receipts_held(CN, [mid])
    # Envelopes under that id that fail their checks: a broken signature, a wrong recipient key.
    cn, us = pair.lp.identity(CN), pair.lp.identity(US)
    now = pair.gw(US).clock.now()
    doc = Document(mid, CN, US, "seizure-share", now, sample("seizure-share"), handling=terms("seizure-share", now))
    env, _, _ = build_envelope(
        doc,
        seq=SEQ_BASE + 2,
        sent_at=now,
        attempt=1,
        signing_key=cn.active_signing_key(now),
        recipient_key=PeerKeys(us.bundle.bundle).encryption_key(now),
    )
    broken = env.to_dict()
    broken["signature"] = broken["signature"][:-4] + ("AAAA" if not broken["signature"].endswith("AAAA") else "BBBB")
    result = await _as_cn(pair, broken)
    assert result["status"] == "duplicate" and "refusal" not in result, result
    assert Statement.from_dict("receipt", result["receipt"]).to_bytes() == stored[mid]
    # One that cannot even be read names no id at all: its refusal is about "unknown", never mid.
    result = await _as_cn(pair, {**env.to_dict(), "v": True})
    assert (result["status"], result["id"], result["code"]) == ("refused", "unknown", "decode.version")
    # A broken envelope under an id we do not hold is refused, and the refusal names that envelope.
    doc2 = Document(
        pair.gw(US).ids.new_id(),
        CN,
        US,
        "seizure-share",
        now,
        sample("seizure-share"),
        handling=terms("seizure-share", now),
    )
    env2, _, _ = build_envelope(
        doc2,
        seq=SEQ_BASE + 3,
        sent_at=now,
        attempt=1,
        signing_key=cn.active_signing_key(now),
        recipient_key=PeerKeys(us.bundle.bundle).encryption_key(now),
    )
    broken2 = {**env2.to_dict(), "signature": broken["signature"]}
    result = await _as_cn(pair, broken2)
    assert result["status"] == "refused" and result["id"] == doc2.id
    assert _refusal(pair, result, broken2).code == "signature.invalid"
