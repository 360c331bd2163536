"""Key rotation and revocation on running gateways, with traffic flowing (issue: key lifecycle)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from typing import Any

import pytest

from customs_gateway.core.bundle import SignedBundle, sign_bundle
from customs_gateway.core.encoding import b64url
from customs_gateway.core.envelope import Document, SignedDocument, build_envelope
from customs_gateway.core.keys import SigningKey

from .conftest import CN, US, Pair, sample, terms
from .test_replay import _post


class Stream:
    """Submits a message every `interval` seconds from both sides until stopped."""

    def __init__(self, pair: Pair, interval: float = 0.03) -> None:
        self.pair, self.interval = pair, interval
        self.ids: dict[str, list[str]] = {US: [], CN: []}
        self.failures: list[Any] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            for side in (US, CN):
                body = sample("seizure-share")
                body["case_reference"] = f"STREAM-{side}-{i:04d}"
                status, r = await self.pair.apis[side].submit("seizure-share", body=body)
                if status != 202:
                    self.failures.append((status, r))
                else:
                    self.ids[side].append(r["id"])
            i += 1
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop_and_drain(self, at_least: int = 0) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + 60
        while min(len(v) for v in self.ids.values()) < at_least and loop.time() < end and not self.failures:
            await asyncio.sleep(0.05)
        self._stop.set()
        assert self._task is not None
        await self._task
        for side, ids in self.ids.items():
            for mid in ids:
                m = await self.pair.apis[side].wait_status(mid, {"delivered", "refused", "expired"}, timeout=30)
                if m["status"] != "delivered":
                    self.failures.append(m)
        for side, other in ((US, CN), (CN, US)):
            _, inbox, _ = await self.pair.apis[other].call("GET", "/v1/inbox?limit=500")
            got = [m["id"] for m in inbox["messages"] if m["from"] == side]
            assert got == self.ids[side], f"{other}'s inbox differs from what {side} sent"


async def _delivered(pair: Pair, side: str, mid: str, timeout: float = 30) -> None:
    store = pair.gw(side).store
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        m = await store.get_message(mid)
        assert m is not None
        if m.status == "delivered":
            return
        assert loop.time() < end, f"{mid} stayed {m.status}: {m.last_error}"
        await asyncio.sleep(0.05)


async def _wait(pred: Any, timeout: float = 20) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, "condition not reached"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("kind", ["signing", "encryption"])
async def test_rotation_under_steady_traffic_loses_nothing(pair: Pair, kind: str) -> None:
    us, cn = pair.gw(US), pair.gw(CN)
    old_sig = us.identity.active_signing_key(us.clock.now()).kid
    old_enc = cn.peer.encryption_key(cn.clock.now()).kid
    stream = Stream(pair)
    stream.start()
    try:
        await asyncio.sleep(0.4)
        status, res, _ = await pair.apis[US].call(
            "POST", "/v1/admin/keys/rotate", role="admin", json_body={"kind": kind}
        )
        assert status == 202, res
    except BaseException:
        await stream.stop_and_drain()
        raise
    new_kids = res["kids"]
    await _delivered(pair, US, res["announcement_id"])
    # Keep traffic flowing past the switch: at least 20 messages each way in all.
    await stream.stop_and_drain(at_least=20)
    assert stream.failures == []
    assert len(stream.ids[US]) >= 20 and len(stream.ids[CN]) >= 20
    # The peer trusts the new bundle; it was persisted where the config says.
    assert cn.peer.bundle.serial == 2
    assert all(cn.peer.bundle.key(k) is not None for k in new_kids)
    peer_file = cn.config.path(cn.config.peer.bundle)
    assert SignedBundle.from_bytes(peer_file.read_bytes()).bundle.serial == 2
    if kind == "signing":
        await _wait(lambda: us.identity.active_signing_key(us.clock.now()).kid == new_kids[0])
        assert not us.identity.pending
        assert cn.peer.bundle.key(old_sig).state == "retiring"  # type: ignore[union-attr]
    else:
        assert cn.peer.encryption_key(cn.clock.now()).kid in new_kids
        assert cn.peer.encryption_key(cn.clock.now()).kid != old_enc
    # Audit: the rotation is recorded on our side, the announcement on the peer's.
    _, ours, _ = await pair.apis[US].call("GET", "/v1/audit/entries?limit=1000", role="auditor")
    _, theirs, _ = await pair.apis[CN].call("GET", "/v1/audit/entries?limit=1000", role="auditor")
    assert any(e["entry"]["kind"] == "key_rotated" for e in ours["entries"])
    assert any(e["entry"]["kind"] == "key_announced" for e in theirs["entries"])


async def test_signing_key_is_held_back_until_the_peer_receipts_the_announcement(pair: Pair) -> None:
    us = pair.gw(US)
    old = us.identity.active_signing_key(us.clock.now()).kid
    await pair.lp.stop(CN)
    status, res, _ = await pair.apis[US].call(
        "POST", "/v1/admin/keys/rotate", role="admin", json_body={"kind": "signing"}
    )
    assert status == 202
    _, r = await pair.apis[US].submit("seminar-notice")
    await asyncio.sleep(0.3)
    assert us.identity.active_signing_key(us.clock.now()).kid == old  # peer has not receipted yet
    status, again, _ = await pair.apis[US].call(
        "POST", "/v1/admin/keys/rotate", role="admin", json_body={"kind": "signing"}
    )
    assert status == 409 and again["code"] == "key.rotation_pending"
    await pair.lp.start(CN)
    await _delivered(pair, US, res["announcement_id"])
    await pair.apis[US].wait_status(r["id"], {"delivered"}, timeout=30)
    await _wait(lambda: us.identity.active_signing_key(us.clock.now()).kid == res["kids"][0])


def _announce(pair: Pair, signed: SignedBundle, seq: int, **extra: Any) -> dict[str, Any]:
    """A `key-announcement` envelope from US to CN carrying `signed` (and any `extra` body members)."""
    us = pair.gw(US)
    now = us.clock.now()
    body = {"event": "rotate", "bundle": b64url(signed.to_bytes()), "kids": [], **extra}
    doc = Document(us.ids.new_id(), US, CN, "key-announcement", now, body)
    env, _, _ = build_envelope(
        doc,
        seq=seq,
        sent_at=now,
        attempt=1,
        signing_key=us.identity.active_signing_key(now),
        recipient_key=us.peer.encryption_key(now),
    )
    return env.to_dict()


async def test_announcements_that_fail_verification_are_refused(pair: Pair) -> None:
    us, cn = pair.gw(US), pair.gw(CN)
    now = us.clock.now()
    current = us.identity.bundle.bundle
    signer = us.identity.active_signing_key(now)
    intruder = SigningKey(bytes(range(100, 132)))
    rec = dataclasses.replace(
        current.keys[0], kid=intruder.kid, public=intruder.public_raw, state="active", not_before=now
    )
    # 1. A new signing key that did not sign (no proof of possession).
    no_pop = sign_bundle(current.with_keys((*current.keys, rec), now), [signer])
    # 2. Signed only by a key the peer does not trust.
    untrusted = sign_bundle(current.with_keys((*current.keys, rec), now), [intruder])
    # 3. History rewritten: a key dropped.
    dropped = sign_bundle(current.with_keys(tuple(k for k in current.keys if k.use != "witness"), now), [signer])
    # 4. Not newer than what the peer holds.
    stale = sign_bundle(dataclasses.replace(current, serial=1, issued_at=now), [signer])
    _, r = await _post(
        pair, {"envelopes": [_announce(pair, b, i + 1) for i, b in enumerate((no_pop, untrusted, dropped, stale))]}
    )
    codes = [x.get("code") for x in r["results"]]
    assert codes[0] == "key.announcement_possession"
    assert codes[1] in ("key.announcement_untrusted", "signature.invalid")
    assert codes[2] == "key.announcement_history"
    assert codes[3] == "key.announcement_stale"
    assert all(x["status"] == "refused" and not x["retryable"] for x in r["results"])
    assert cn.peer.bundle.serial == 1


async def test_revoked_key_later_envelopes_are_refused_history_still_verifies(pair: Pair) -> None:
    us, cn = pair.gw(US), pair.gw(CN)
    _, first = await pair.apis[US].submit("seizure-share")
    m1 = await pair.apis[US].wait_status(first["id"], {"delivered"})
    old_key = us.identity.active_signing_key(us.clock.now())
    status, rot, _ = await pair.apis[US].call(
        "POST", "/v1/admin/keys/rotate", role="admin", json_body={"kind": "signing"}
    )
    await _delivered(pair, US, rot["announcement_id"])
    await _wait(lambda: us.identity.active_signing_key(us.clock.now()).kid == rot["kids"][0])
    status, prob, _ = await pair.apis[US].call(
        "POST", f"/v1/admin/keys/{rot['kids'][0]}/revoke", role="admin", json_body={"reason": "drill"}
    )
    assert status == 409 and prob["code"] == "key.revoke_active"
    status, rev, _ = await pair.apis[US].call(
        "POST", f"/v1/admin/keys/{old_key.kid}/revoke", role="admin", json_body={"reason": "compromise drill"}
    )
    assert status == 202, rev
    await _delivered(pair, US, rev["announcement_id"])
    assert cn.peer.bundle.key(old_key.kid).revoked_at is not None  # type: ignore[union-attr]
    assert old_key.kid not in us.identity.signing  # the private key is destroyed
    # An attacker holding the revoked key signs a fresh envelope: refused.
    now = us.clock.now()
    doc = Document(
        us.ids.new_id(), US, CN, "seizure-share", now, sample("seizure-share"), handling=terms("seizure-share", now)
    )
    env, _, _ = build_envelope(
        doc, seq=99, sent_at=now, attempt=1, signing_key=old_key, recipient_key=us.peer.encryption_key(now)
    )
    _, r = await _post(pair, env.to_dict())
    assert r["results"][0]["status"] == "refused"
    assert r["results"][0]["code"] == "key.revoked"
    # Traffic goes on with the new key, and evidence signed before the revocation still verifies.
    _, after = await pair.apis[US].submit("seizure-share")
    await pair.apis[US].wait_status(after["id"], {"delivered"})
    signed = SignedDocument.from_bytes((await us.store.get_message(first["id"])).signed_document)  # type: ignore[union-attr]
    doc_time = dt.datetime.fromisoformat(m1["created_at"].replace("Z", "+00:00"))
    cn.peer.verify_key(signed.kid, doc_time).verify("document", signed.document_bytes, signed.signature)
    status, keys, _ = await pair.apis[US].call("GET", "/v1/admin/keys", role="admin")
    states = {k["kid"]: k["state"] for k in keys["keys"]}
    assert states[old_key.kid] == "revoked" and states[rot["kids"][0]] == "active"


async def test_old_evidence_still_verifies_after_two_rotations(pair: Pair, tmp_path: Any) -> None:
    """Export after rotating the signing key twice and the encryption keys once: every document and
    receipt, signed under whichever key was valid at its time, verifies offline."""
    from customs_gateway.core.audit_bundle import verify_bundle
    from customs_gateway.service.audit_export import export_bundle

    us = pair.gw(US)
    first_kid = us.identity.active_signing_key(us.clock.now()).kid
    for kind in ("signing", "encryption", "signing"):
        _, r = await pair.apis[US].submit("seizure-share")
        await pair.apis[US].wait_status(r["id"], {"delivered"})
        status, res, _ = await pair.apis[US].call(
            "POST", "/v1/admin/keys/rotate", role="admin", json_body={"kind": kind}
        )
        assert status == 202, res
        await _delivered(pair, US, res["announcement_id"])
        await _wait(lambda: not us.identity.pending)
    _, r = await pair.apis[US].submit("seizure-share")
    await pair.apis[US].wait_status(r["id"], {"delivered"})
    assert us.identity.active_signing_key(us.clock.now()).kid != first_kid
    assert us.identity.bundle.bundle.serial == 4
    cpr = pair.lp.servers[US].checkpointer
    assert cpr is not None
    await cpr.checkpoint_now()
    assert await cpr.cosign_latest()
    path = tmp_path / "audit.jsonl"
    with path.open("wb") as f:
        await export_bundle(
            us.store,
            log=US,
            peer=CN,
            own_bundle=us.identity.bundle.to_bytes(),
            peer_bundle=us.config.path(us.config.peer.bundle).read_bytes(),
            out=f,
            now=us.clock.now(),
        )
    with path.open("rb") as f:
        report = verify_bundle(f, require_cosigned=True)
    assert report.documents >= 7 and report.receipts >= 7
    assert first_kid in report.key_ids
