"""A peer's key announcement and its `key_announced` audit entry commit together (DESIGN §10):
if writing the peer bundle file fails (or the gateway dies before it), the store still holds the
bundle beside its entry, and the next start trusts it and writes the file; the entry is never
lost and never written twice."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from customs_gateway.core.bundle import SignedBundle
from customs_gateway.service import gateway as gateway_module

from .conftest import CN, US, Pair


async def _kinds(pair: Pair, name: str) -> list[str]:
    _, res, _ = await pair.apis[name].call("GET", "/v1/audit/entries?limit=1000", role="auditor")
    return [e["entry"]["kind"] for e in res["entries"]]


async def test_bundle_and_entry_commit_together_and_a_lost_file_write_is_mended_at_start(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_gone(*_: Any, **__: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gateway_module, "write_atomic", disk_gone)
    status, res, _ = await pair.apis[US].call(
        "POST", "/v1/admin/keys/rotate", role="admin", json_body={"kind": "signing"}
    )
    assert status == 202, res
    cn = pair.gw(CN)
    for _ in range(400):
        if cn.peer.bundle.serial == 2:
            break
        await asyncio.sleep(0.05)
    assert cn.peer.bundle.serial == 2  # trusted in memory, from what the store committed
    peer_file = cn.config.path(cn.config.peer.bundle)
    assert SignedBundle.from_bytes(peer_file.read_bytes()).bundle.serial == 1  # the file write failed
    assert (await _kinds(pair, CN)).count("key_announced") == 1
    stored = [SignedBundle.from_bytes(raw).bundle.serial for owner, raw in await cn.store.bundles() if owner == US]
    assert 2 in stored

    # The disk is back; CN restarts (as after a crash between commit and file write).
    monkeypatch.undo()
    await pair.lp.stop(CN)
    await pair.lp.start(CN)
    cn = pair.gw(CN)
    assert cn.peer.bundle.serial == 2
    assert SignedBundle.from_bytes(peer_file.read_bytes()).bundle.serial == 2
    assert (await _kinds(pair, CN)).count("key_announced") == 1
    # Traffic signed by US's new key flows.
    status, msg = await pair.apis[US].submit("seizure-share")
    assert status == 202
    await pair.apis[US].wait_status(msg["id"], {"delivered"}, timeout=30)


async def test_a_local_change_cut_short_before_its_announcement_is_finished_at_start(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    from customs_gateway.service.lifecycle import KeyLifecycle

    us_api = pair.apis[US]
    status, res, _ = await us_api.call("POST", "/v1/admin/keys/rotate", role="admin", json_body={"kind": "encryption"})
    assert status == 202, res
    for _ in range(400):
        if pair.gw(CN).peer.bundle.serial == 2:
            break
        await asyncio.sleep(0.05)
    old = next(
        r.kid for r in pair.gw(US).identity.bundle.bundle.keys if r.use == "encryption" and r.state == "retiring"
    )

    async def crash(*_: Any, **__: Any) -> Any:
        raise RuntimeError("the process died here")

    monkeypatch.setattr(KeyLifecycle, "_announce", crash)
    status, _, _ = await us_api.call(
        "POST", f"/v1/admin/keys/{old}/revoke", role="admin", json_body={"reason": "laptop lost"}
    )
    assert status == 500
    assert pair.gw(US).identity.bundle.bundle.serial == 3  # installed on disk, not announced
    assert "key_revoked" not in await _kinds(pair, US)
    monkeypatch.undo()
    await pair.lp.stop(US)
    await pair.lp.start(US)
    assert (await _kinds(pair, US)).count("key_revoked") == 1
    for _ in range(400):
        if pair.gw(CN).peer.bundle.serial == 3:
            break
        await asyncio.sleep(0.05)
    revoked = pair.gw(CN).peer.bundle.key(old)
    assert revoked is not None and revoked.revoked_at is not None
    assert (await _kinds(pair, CN)).count("key_announced") == 2
