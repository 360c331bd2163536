"""Renewal on running gateways (DESIGN §11): every key kind and the TLS certificate get a later
expiry without a restart and without losing traffic; the peer accepts only what it can prove."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from customs_gateway.core.bundle import sign_bundle
from customs_gateway.core.clock import JumpClock
from customs_gateway.core.encoding import b64url
from customs_gateway.core.rotation import MAX_TLS_PREVIOUS, renew_tls
from customs_gateway.core.tlscert import cert_info, possession_proof
from customs_gateway.service import lifecycle, tls
from customs_gateway.startup.keystore import KeyStore, new_tls_key

from .conftest import CN, US, Pair, _homes_on, running_pair
from .test_key_lifecycle import Stream, _announce, _delivered, _wait
from .test_replay import _post


@pytest.fixture
async def sqlite_pair(tmp_path: Path) -> AsyncIterator[Pair]:
    with _homes_on("sqlite", tmp_path) as homes:
        async with running_pair(homes) as p:
            yield p


async def _renew(pair: Pair, side: str, kind: str, days: int = 400) -> dict[str, Any]:
    status, res, _ = await pair.apis[side].call(
        "POST", "/v1/admin/keys/renew", role="admin", json_body={"kind": kind, "valid_days": days}
    )
    assert status == 202, res
    return dict(res)


@pytest.mark.parametrize("kind", ["signing", "encryption", "witness", "tls"])
async def test_renewal_under_traffic_gives_a_later_expiry_and_loses_nothing(sqlite_pair: Pair, kind: str) -> None:
    pair = sqlite_pair
    us, cn = pair.gw(US), pair.gw(CN)
    before = {r.kid: r.not_after for r in us.identity.bundle.bundle.keys}
    old_cert = us.identity.tls_cert_pem
    stream = Stream(pair)
    stream.start()
    try:
        await asyncio.sleep(0.3)
        res = await _renew(pair, US, kind, days=3000)
    except BaseException:
        await stream.stop_and_drain()
        raise
    await _delivered(pair, US, res["announcement_id"])
    await _wait(lambda: not us.identity.pending)
    await stream.stop_and_drain(at_least=15)
    assert stream.failures == []
    now = us.clock.now()
    later = now + dt.timedelta(days=2999)
    bundle = us.identity.bundle.bundle
    assert cn.peer.bundle.serial == bundle.serial  # the peer accepted the renewal in-band
    if kind == "tls":
        new_cert = us.identity.tls_cert_pem
        assert new_cert != old_cert and cert_info(new_cert.decode()).not_after > later
        assert bundle.tls_previous[0][0] == old_cert.decode()  # pinned beside the new one for the overlap
        assert cn.tls.pinned() == {cert_info(new_cert.decode()).fingerprint, cert_info(old_cert.decode()).fingerprint}
        store = KeyStore(us.config.path(us.config.keys_dir), us.config.path(us.config.tls_dir))
        assert store.cert_path.read_bytes() == new_cert and not (store.tls_dir / "next.key").exists()
        _, keys, _ = await pair.apis[CN].call("GET", "/v1/admin/keys", role="admin")
        pins = keys["peer"]["tls"]
        assert pins["certificate_sha256"] == cert_info(new_cert.decode()).fingerprint
        assert [x["certificate_sha256"] for x in pins["previous"]] == [cert_info(old_cert.decode()).fingerprint]
    else:
        new = [bundle.key(k) for k in res["kids"]]
        assert all(r is not None and r.not_after > later and r.kid not in before for r in new)
        if kind == "signing":
            assert us.identity.active_signing_key(now).kid == res["kids"][0]
        if kind == "witness":
            assert us.identity.active_witness_key(now).kid == res["kids"][0]
            # The peer's next checkpoint is cosigned with the new witness key, and it verifies.
            assert pair.lp.servers[CN].checkpointer is not None
            await pair.lp.servers[CN].checkpointer.checkpoint_now()
            assert await pair.lp.servers[CN].checkpointer.cosign_latest()
    # Both gateways restart from their files with the renewed material and keep exchanging.
    await pair.lp.stop_all()
    pair.lp._identities.clear()
    await pair.lp.start_all()
    _, r = await pair.apis[US].submit("seizure-share")
    await pair.apis[US].wait_status(r["id"], {"delivered"}, timeout=30)
    _, r = await pair.apis[CN].submit("seizure-share")
    await pair.apis[CN].wait_status(r["id"], {"delivered"}, timeout=30)
    if kind == "tls":
        assert pair.gw(US).identity.tls_cert_pem == new_cert
    _, ours, _ = await pair.apis[US].call("GET", "/v1/audit/entries?limit=1000", role="auditor")
    assert any(e["entry"]["kind"] == "key_renewed" for e in ours["entries"])


async def test_bad_renewal_requests_are_clear_4xx_and_change_nothing(sqlite_pair: Pair) -> None:
    pair = sqlite_pair
    us = pair.gw(US)
    serial = us.identity.bundle.bundle.serial
    for body, code, field in (
        ({"kind": "everything"}, "schema.enum", "$.kind"),
        ({"kind": "tls", "valid_days": 0}, "schema.range", "$.valid_days"),
        ({"kind": "tls", "valid_days": 99999}, "schema.range", "$.valid_days"),
        ({"kind": "tls", "valid_days": "30"}, "schema.range", "$.valid_days"),
        ({"kind": "tls", "extra": 1}, None, None),
    ):
        status, p, headers = await pair.apis[US].call("POST", "/v1/admin/keys/renew", role="admin", json_body=body)
        assert 400 <= status < 500 and headers["Content-Type"].startswith("application/problem+json"), p
        if code is not None:
            assert (p["code"], p["field"]) == (code, field)
    status, p, _ = await pair.apis[US].call("POST", "/v1/admin/keys/renew", role="agency", json_body={"kind": "tls"})
    assert status == 403
    assert us.identity.bundle.bundle.serial == serial
    # One change at a time: a second renewal while the first waits for the peer's receipt is a 409.
    await pair.lp.stop(CN)
    await _renew(pair, US, "witness")
    status, p, _ = await pair.apis[US].call("POST", "/v1/admin/keys/renew", role="admin", json_body={"kind": "tls"})
    assert status == 409 and p["code"] == "key.rotation_pending"


async def test_a_new_certificate_needs_proof_of_possession(sqlite_pair: Pair) -> None:
    pair = sqlite_pair
    us, cn = pair.gw(US), pair.gw(CN)
    now = us.clock.now()
    signer = us.identity.active_signing_key(now)
    current = us.identity.bundle.bundle
    key, other = new_tls_key(lambda n: bytes([7]) * n), new_tls_key(lambda n: bytes([8]) * n)
    cert = tls.make_self_signed(US, ["127.0.0.1"], now, 30, key).decode()
    signed = sign_bundle(renew_tls(current, cert, now + dt.timedelta(days=8), now), [signer])
    good = b64url(possession_proof(key, signed.bundle_bytes))
    envs = [
        _announce(pair, signed, 1, event="renew"),  # no proof
        _announce(pair, signed, 2, tls_proof=b64url(possession_proof(other, signed.bundle_bytes))),
        _announce(pair, signed, 3, tls_proof=b64url(possession_proof(key, signed.bundle_bytes + b" "))),
        _announce(pair, signed, 4, tls_proof="!!"),
    ]
    _, r = await _post(pair, {"envelopes": envs})
    assert [x["status"] for x in r["results"]] == ["refused"] * 4
    assert [x["code"] for x in r["results"]][:3] == ["key.announcement_possession"] * 3
    assert cn.peer.bundle.serial == current.serial
    # A certificate that had been replaced cannot be brought back, even with a good proof.
    back = dataclasses.replace(renew_tls(current, cert, now + dt.timedelta(days=8), now), serial=current.serial + 1)
    back = dataclasses.replace(back, tls_certificate=current.tls_certificate, tls_previous=((cert, now),))
    _, r = await _post(pair, {"envelopes": [_announce(pair, sign_bundle(back, [signer]), 5)]})
    assert r["results"][0]["code"] == "key.announcement_tls"
    # The well-formed one is accepted; the peer pins both certificates.
    _, r = await _post(pair, {"envelopes": [_announce(pair, signed, 6, tls_proof=good)]})
    assert r["results"][0]["status"] == "accepted", r
    assert cn.peer.bundle.tls_certificate == cert
    assert cert_info(cert).fingerprint in cn.tls.pinned()


async def test_old_certificate_is_refused_after_the_overlap(jump_pair: tuple[Pair, JumpClock]) -> None:
    pair, clock = jump_pair
    us = pair.gw(US)
    old_cert, old_key = us.identity.tls_cert_pem, us.identity.tls_key_pem
    res = await _renew(pair, US, "tls")
    await _delivered(pair, US, res["announcement_id"])
    await _wait(lambda: us.identity.tls_cert_pem != old_cert)
    url = f"https://127.0.0.1:{pair.lp.homes[CN].peer_port}/peer/v1/keys"
    pin = us.peer.bundle.tls_certificate.encode()

    async def get_with(cert: bytes, key: bytes) -> int:
        ctx = tls.client_context(cert, key, pin)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s, s.get(url) as r:
            return r.status

    assert await get_with(old_cert, old_key) == 200  # inside the overlap
    assert await get_with(us.identity.tls_cert_pem, us.identity.tls_key_pem) == 200
    clock.jump(dt.timedelta(days=9))
    assert await get_with(old_cert, old_key) == 403  # overlap over: refused by the pin check
    assert await get_with(us.identity.tls_cert_pem, us.identity.tls_key_pem) == 200
    _, r = await pair.apis[US].submit("seizure-share")
    await pair.apis[US].wait_status(r["id"], {"delivered"}, timeout=30)


async def test_expiry_is_visible_days_ahead_and_warned_once_a_day(jump_pair: tuple[Pair, JumpClock]) -> None:
    pair, clock = jump_pair
    us = pair.gw(US)
    server = pair.lp.servers[US]
    _, ready, _ = await pair.apis[US].call("GET", "/readyz", role=None)
    assert not any(v["renew_soon"] for v in ready["expiry"].values())
    with capture_logs() as logs:
        await server.maintain_once()
    assert not [e for e in logs if e["event"] == "keys.expiring"]
    # Move to 20 days before the example keys (and certificate) end.
    end = min(us.identity.expiry().values())
    clock.jump(end - dt.timedelta(days=20) - clock.now())
    _, ready, _ = await pair.apis[US].call("GET", "/readyz", role=None)
    assert ready["status"] == "ready"
    assert ready["expiry"]["signing"]["renew_soon"] and 19 < ready["expiry"]["signing"]["days_left"] <= 20
    assert ready["expiry"]["tls"]["renew_soon"]
    api = pair.apis[US]
    headers = {"Authorization": f"Bearer {api.tokens['admin']}"}
    async with api.session.get(api.url + "/metrics", headers=headers) as r:
        metrics = await r.text()
    assert 'customs_gateway_key_expiry_seconds{use="tls"}' in metrics
    assert "customs_gateway_key_not_after_timestamp_seconds{kid=" in metrics
    with capture_logs() as logs:
        await server.maintain_once()
        await server.maintain_once()  # the same day: not again
        clock.jump(dt.timedelta(days=1))
        await server.maintain_once()  # the next day: again
    warned = [e["kind"] for e in logs if e["event"] == "keys.expiring"]
    assert sorted(warned) == sorted(2 * ["signing", "encryption", "witness", "tls"])
    # Renewing the certificate ends its warnings.
    res = await _renew(pair, US, "tls", days=365)
    await _delivered(pair, US, res["announcement_id"])
    await _wait(lambda: not us.identity.pending)
    _, ready, _ = await pair.apis[US].call("GET", "/readyz", role=None)
    assert not ready["expiry"]["tls"]["renew_soon"] and ready["expiry"]["tls"]["days_left"] > 364


async def test_more_renewals_than_pins_within_the_overlap_drop_the_oldest_pins(sqlite_pair: Pair) -> None:
    """A bundle pins at most `MAX_TLS_PREVIOUS` earlier certificates (the peer refuses more). A
    renewal beyond that within the overlap goes through: the oldest pins end early, never the
    certificate presented until the switch; the peer follows every bundle; traffic flows."""
    pair = sqlite_pair
    us, cn = pair.gw(US), pair.gw(CN)
    certs = [us.identity.tls_cert_pem.decode()]
    for _ in range(MAX_TLS_PREVIOUS + 2):
        res = await _renew(pair, US, "tls")
        await _delivered(pair, US, res["announcement_id"])
        await _wait(lambda: not us.identity.pending)
        certs.append(us.identity.tls_cert_pem.decode())
    bundle = us.identity.bundle.bundle
    assert bundle.tls_certificate == certs[-1]
    assert [pem for pem, _ in bundle.tls_previous] == certs[-1 - MAX_TLS_PREVIOUS : -1]
    assert cn.peer.bundle.serial == bundle.serial
    assert cn.tls.pinned() == {cert_info(c).fingerprint for c in certs[-1 - MAX_TLS_PREVIOUS :]}
    _, r = await pair.apis[US].submit("seizure-share")
    await pair.apis[US].wait_status(r["id"], {"delivered"}, timeout=30)
    _, r = await pair.apis[CN].submit("seizure-share")
    await pair.apis[CN].wait_status(r["id"], {"delivered"}, timeout=30)


async def test_a_change_whose_bundle_could_not_be_announced_writes_nothing(
    sqlite_pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next bundle is checked before any key file, pending switch or intent is written: a
    refused change (here, a bundle too large for its announcement) leaves the gateway as it was,
    and the next change goes through."""
    pair = sqlite_pair
    us = pair.gw(US)
    home = Path(us.config.path(us.config.keys_dir)).parent

    def files() -> dict[str, bytes]:
        return {
            str(p.relative_to(home)): p.read_bytes()
            for p in sorted(home.rglob("*"))
            if p.is_file() and p.parts[len(home.parts)] in ("keys", "tls")
        }

    before, serial, tls_before = files(), us.identity.bundle.bundle.serial, dict(us.identity.tls)
    monkeypatch.setattr(lifecycle, "MAX_ANNOUNCED_BUNDLE", 100)
    for kind, route in (("tls", "renew"), ("signing", "renew"), ("encryption", "renew"), ("signing", "rotate")):
        path = "/v1/admin/keys/renew" if route == "renew" else "/v1/admin/keys/rotate"
        status, p, _ = await pair.apis[US].call("POST", path, role="admin", json_body={"kind": kind})
        assert (status, p["code"]) == (409, "key.bundle_too_large"), (kind, route, p)
        assert files() == before and us.identity.bundle.bundle.serial == serial
        assert not us.identity.pending and us.identity.tls == tls_before
    monkeypatch.undo()
    res = await _renew(pair, US, "tls")
    await _delivered(pair, US, res["announcement_id"])
    await _wait(lambda: not us.identity.pending)
    assert us.identity.bundle.bundle.serial == serial + 1
