"""G7 on real servers: checkpoints are signed, cosigned by the peer, and forks are refused."""

from __future__ import annotations

import json

from customs_gateway.core.audit import NoteSigner, log_origin, witness_name
from customs_gateway.core.checkpoint import (
    Checkpoint,
    CosignatureVerifier,
    Ed25519NoteVerifier,
    open_note,
    sign_note,
)
from customs_gateway.core.encoding import unb64url
from customs_gateway.core.merkle import leaf_hash, verify_consistency, verify_inclusion
from customs_gateway.core.witness import MEDIA_TYPE, encode_request

from .conftest import CN, US, Pair, peer_post


async def _exchange(pair: Pair, n: int = 2) -> None:
    for _ in range(n):
        _, r = await pair.apis[US].submit("seizure-share")
        await pair.apis[US].wait_status(r["id"], {"delivered"})


def _verifiers(pair: Pair) -> list[object]:
    us, cn = pair.gw(US), pair.gw(CN)
    own, peer = us.identity.bundle.bundle.keys, cn.identity.bundle.bundle.keys
    log_keys = [Ed25519NoteVerifier(log_origin(US), r.public) for r in own if r.use == "signing"]
    witness = [CosignatureVerifier(witness_name(CN), r.public) for r in peer if r.use == "witness"]
    return log_keys + witness


async def test_checkpoint_is_signed_and_cosigned_and_proofs_verify(pair: Pair) -> None:
    await _exchange(pair)
    cpr = pair.lp.servers[US].checkpointer
    assert cpr is not None
    first = await cpr.checkpoint_now()
    assert first is not None
    assert await cpr.cosign_latest()
    await _exchange(pair)
    second = await cpr.checkpoint_now()
    assert second is not None and second.size > first.size
    assert await cpr.cosign_latest()  # consistency proof from the first cosigned size

    note = (await _raw(pair, "/v1/audit/checkpoint")).encode()
    verified = open_note(note, _verifiers(pair))  # type: ignore[arg-type]
    assert set(verified.names) == {log_origin(US), witness_name(CN)}
    cp = Checkpoint.parse(verified.body)
    assert cp.size == second.size

    # Inclusion of entry 0 and consistency first → second, from the auditor API.
    _, inc, _ = await pair.apis[US].call("GET", f"/v1/audit/proof/inclusion?index=0&size={cp.size}", role="auditor")
    _, entries, _ = await pair.apis[US].call("GET", "/v1/audit/entries?start=0&limit=1", role="auditor")
    proof = [unb64url(p) for p in inc["proof"]]
    verify_inclusion(unb64url(inc["leaf_hash"]), 0, cp.size, proof, cp.root)
    assert entries["entries"][0]["entry"]["kind"] in ("token_issued", "submitted")
    # The exact bytes are served too: the auditor recomputes the leaf and checks it against the root.
    raw = unb64url(entries["entries"][0]["raw"])
    verify_inclusion(leaf_hash(raw), 0, cp.size, proof, cp.root)
    assert json.loads(raw) == entries["entries"][0]["entry"]
    _, con, _ = await pair.apis[US].call(
        "GET", f"/v1/audit/proof/consistency?old={first.size}&new={cp.size}", role="auditor"
    )
    verify_consistency(first.size, cp.size, [unb64url(p) for p in con["proof"]], first.root, cp.root)
    assert leaf_hash(b"x") != cp.root


async def _raw(pair: Pair, path: str) -> str:
    api = pair.apis[US]
    async with api.session.get(api.url + path, headers={"Authorization": f"Bearer {api.tokens['auditor']}"}) as r:
        return await r.text()


async def _cosign_post(pair: Pair, body: bytes) -> tuple[int, str, str]:
    status, ctype, raw = await peer_post(pair, "/peer/v1/cosign", body, MEDIA_TYPE)
    return status, ctype, raw.decode()


async def test_forked_log_is_refused_and_logged_by_the_peer(pair: Pair) -> None:
    await _exchange(pair)
    cpr = pair.lp.servers[US].checkpointer
    assert cpr is not None
    cp = await cpr.checkpoint_now()
    assert cp is not None and await cpr.cosign_latest()
    us = pair.gw(US)
    signer = NoteSigner(us.identity.active_signing_key(us.clock.now()))
    # Same size, another root: a rewritten history signed with the real log key.
    forged = sign_note(Checkpoint(log_origin(US), cp.size, bytes(32)).body(), log_origin(US), signer)
    status, _, text = await _cosign_post(pair, encode_request(cp.size, [], forged))
    assert status == 409, text
    assert "fork" in text
    # Bigger size with a proof that does not connect to the cosigned root.
    forged2 = sign_note(Checkpoint(log_origin(US), cp.size + 3, bytes(32)).body(), log_origin(US), signer)
    status, _, text = await _cosign_post(pair, encode_request(cp.size, [bytes(32)] * 3, forged2))
    assert status == 422, text
    # The same two forks asked again and again: refused each time, logged and counted once each.
    for _ in range(5):
        assert (await _cosign_post(pair, encode_request(cp.size, [], forged)))[0] == 409
        assert (await _cosign_post(pair, encode_request(cp.size, [bytes(32)] * 3, forged2)))[0] == 422
    cn = pair.gw(CN)
    assert cn.counters.forks == 2
    _, entries, _ = await pair.apis[CN].call("GET", "/v1/audit/entries?limit=1000", role="auditor")
    kinds = [e["entry"]["kind"] for e in entries["entries"]]
    assert kinds.count("fork_detected") == 2
    # The witness still holds the honest checkpoint.
    state = await cn.store.witness_state(log_origin(US))
    assert state is not None and state.root == cp.root


async def test_cosign_request_with_stale_old_size_gets_409_with_held_size(pair: Pair) -> None:
    await _exchange(pair)
    cpr = pair.lp.servers[US].checkpointer
    assert cpr is not None
    cp = await cpr.checkpoint_now()
    assert cp is not None and await cpr.cosign_latest()
    status, ctype, text = await _cosign_post(pair, encode_request(0, [], cp.note))
    assert status == 409
    assert ctype.startswith("text/x.tlog.size")
    assert text.strip() == str(cp.size)


async def test_checkpoint_signed_by_a_stranger_is_403(pair: Pair) -> None:
    from customs_gateway.core.keys import SigningKey

    stranger = NoteSigner(SigningKey(bytes(range(32))))
    note = sign_note(Checkpoint(log_origin(US), 5, bytes(32)).body(), log_origin(US), stranger)
    status, _, text = await _cosign_post(pair, encode_request(0, [], note))
    assert status in (400, 403), text


async def test_audit_export_endpoint_streams_a_bundle_that_verifies(pair: Pair) -> None:
    import io

    from customs_gateway.core.audit_bundle import verify_bundle

    await _exchange(pair)
    api = pair.apis[US]
    status, prob, _ = await api.call("GET", "/v1/audit/export", role="auditor")
    assert 400 <= status < 500 and prob["code"] == "audit.no_checkpoint"
    cpr = pair.lp.servers[US].checkpointer
    assert cpr is not None
    await cpr.checkpoint_now()
    assert await cpr.cosign_latest()
    async with api.session.get(
        api.url + "/v1/audit/export", headers={"Authorization": f"Bearer {api.tokens['auditor']}"}
    ) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("application/x-ndjson")
        data = await r.read()
    report = verify_bundle(io.BytesIO(data), require_cosigned=True)
    assert report.entries > 0 and report.cosigned_checkpoints >= 1 and report.receipts >= 2
    status, _, _ = await api.call("GET", "/v1/audit/export", role="agency")
    assert status == 403
