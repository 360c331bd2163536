"""Evidence for one message, from two real gateways: built by either side, verified offline.

A seizure share goes US -> CN, CN acknowledges it, both logs are checkpointed and cosigned; the
evidence file from `GET /v1/audit/evidence/{id}` (on the sender and on the receiver) verifies
with `verify_evidence` and with `audit verify`, and names both logs' entries about the message.
"""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from customs_gateway.cli.main import main
from customs_gateway.core.evidence import verify_evidence

from .conftest import CN, US, Pair
from .test_audit_export import _checkpoint, _json_out


async def _evidence(pair: Pair, name: str, mid: str) -> tuple[int, bytes]:
    api = pair.apis[name]
    async with api.session.get(
        f"{api.url}/v1/audit/evidence/{mid}", headers={"Authorization": f"Bearer {api.tokens['auditor']}"}
    ) as r:
        return r.status, await r.read()


async def _acked_share(pair: Pair, sender: str, receiver: str) -> tuple[str, str]:
    s, r = pair.apis[sender], pair.apis[receiver]
    status, res = await s.submit("seizure-share")
    assert status == 202, res
    mid = res["id"]
    await s.wait_status(mid, {"delivered"})
    status, ack, _ = await r.call("POST", f"/v1/inbox/{mid}/ack", json_body={"status": "processed"})
    assert status == 202, ack
    await s.wait_status(mid, {"acknowledged"})
    for _ in range(400):
        m = await pair.gw(receiver).store.get_message(ack["ack_id"])
        if m is not None and m.status == "delivered":
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the ack was never delivered")
    for name in (sender, receiver):
        await _checkpoint(pair, name)
    return mid, ack["ack_id"]


def _lines(raw: bytes) -> list[bytes]:
    return raw.splitlines(keepends=True)


async def test_evidence_from_either_side_verifies_offline(pair: Pair, tmp_path: Path) -> None:
    mid, ack_id = await _acked_share(pair, US, CN)
    for made_by in (US, CN):
        status, raw = await _evidence(pair, made_by, mid)
        assert status == 200, raw
        report = verify_evidence(_lines(raw))
        assert (report.message_id, report.sender, report.receiver, report.made_by) == (mid, US, CN, made_by)
        assert report.type == "seizure-share" and report.document == "included"
        assert report.ack_status == "processed" and report.ack_id == ack_id
        assert report.received_at is not None
        kinds = {(e.owner, e.kind, e.message_id) for e in report.entries}
        assert {(US, "submitted", mid), (US, "delivered", mid), (US, "acknowledged", mid)} <= kinds
        assert {(CN, "received", mid), (CN, "submitted", ack_id)} <= kinds
        assert [lp.owner for lp in report.logs] == [US, CN]
        assert all(lp.cosigned_by is not None for lp in report.logs)


async def test_evidence_for_the_other_direction(pair: Pair) -> None:
    mid, _ = await _acked_share(pair, CN, US)
    status, raw = await _evidence(pair, US, mid)
    assert status == 200, raw
    report = verify_evidence(_lines(raw))
    assert (report.sender, report.receiver) == (CN, US)
    assert {e.owner for e in report.entries} == {CN, US}


async def test_evidence_after_a_signing_key_rotation(pair: Pair) -> None:
    first, _ = await _acked_share(pair, US, CN)
    for name in (US, CN):
        gw = pair.gw(name)
        old = gw.identity.active_signing_key(gw.clock.now()).kid
        status, res, _ = await pair.apis[name].call(
            "POST", "/v1/admin/keys/rotate", role="admin", json_body={"kind": "signing"}
        )
        assert status == 202, res
        for _ in range(400):  # the new key signs once the peer has receipted the announcement
            if gw.identity.active_signing_key(gw.clock.now()).kid != old:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"{name}'s new signing key never became active")
    second, _ = await _acked_share(pair, US, CN)
    for mid in (first, second):
        for made_by in (US, CN):
            status, raw = await _evidence(pair, made_by, mid)
            assert status == 200, raw
            assert verify_evidence(_lines(raw)).message_id == mid


async def test_unknown_and_malformed_ids_are_clear_4xx(pair: Pair) -> None:
    await _checkpoint(pair, US)
    api = pair.apis[US]
    status, body = await _evidence(pair, US, "0190f0f0-0000-7000-8000-000000000000")
    assert status == 404 and b"evidence.not_found" in body
    status, body = await _evidence(pair, US, "x" * 65)
    assert status == 422 and b"schema.pattern" in body
    status, _, _ = await api.call("GET", "/v1/audit/evidence/abc", role="agency")
    assert status == 403


async def test_nothing_cosigned_yet_is_409(pair: Pair) -> None:
    us = pair.apis[US]
    status, res = await us.submit("seizure-share")
    assert status == 202
    await us.wait_status(res["id"], {"delivered"})
    gw = pair.gw(US)
    if await gw.store.latest_checkpoint(cosigned=True) is None:
        status, body = await _evidence(pair, US, res["id"])
        assert status == 409 and b"evidence.not_cosigned" in body


async def test_cli_saves_the_evidence_0600_and_verifies_it(
    pair: Pair, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mid, _ = await _acked_share(pair, US, CN)
    api = pair.apis[CN]
    token = tmp_path / "auditor.token"
    token.write_text(api.tokens["auditor"], encoding="utf-8")
    out = tmp_path / "evidence.jsonl"
    argv = ["audit", "evidence", mid, "--out", str(out), "--url", api.url, "--token-file", str(token), "--json"]
    capsys.readouterr()
    assert await asyncio.to_thread(main, argv) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    report = _json_out(capsys)
    assert report["verified"] is True and report["message_id"] == mid and report["made_by"] == CN
    # `audit verify` takes the evidence file as it takes an export; one changed byte fails.
    assert main(["audit", "verify", str(out), "--json"]) == 0
    assert _json_out(capsys)["kind"] == "message-evidence"
    changed = tmp_path / "changed.jsonl"
    raw = out.read_bytes()
    i = raw.index(b'"type":"seizure-share"') + len(b'"type":"')
    changed.write_bytes(raw[:i] + b"S" + raw[i + 1 :])
    assert main(["audit", "verify", str(changed)]) == 1
    assert "NOT VERIFIED" in capsys.readouterr().err
    # A wrong trust anchor: one clear failure with its code.
    trust = tmp_path / "trust.txt"
    trust.write_text(f"{US} {'ABCD ' * 16}\n{CN} {'ABCD ' * 16}\n", encoding="utf-8")
    code = await asyncio.to_thread(main, [*argv, "--trust", str(trust)])
    assert code == 1 and _json_out(capsys)["code"] == "audit.trust_anchor"
    # An unknown message: one line naming the refusal, exit 3.
    code = await asyncio.to_thread(main, [*argv[:2], "0190f0f0-0000-7000-8000-000000000000", *argv[3:]])
    assert code == 3 and "evidence.not_found" in capsys.readouterr().err
