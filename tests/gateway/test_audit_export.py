"""Audit export of two real gateways after a real exchange: both sides' bundles verify offline.

Messages go both ways with receipts and a business ack, each side checkpoints its log and gets it
cosigned by the other, then each log is exported with `export_bundle` and checked with
`verify_bundle` and with the `audit verify` command (exit 0; exit 1 once a byte is changed).
"""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from customs_gateway.cli.main import main
from customs_gateway.core.audit_bundle import verify_bundle
from customs_gateway.service.audit_export import NoCheckpoint, export_bundle
from customs_gateway.service.pair import EXAMPLE_PASSPHRASE
from customs_gateway.startup.config import PASSPHRASE_ENV
from customs_gateway.store.base import CheckpointRecord

from .conftest import CN, US, Pair


def _json_out(capsys: pytest.CaptureFixture[str]) -> Any:
    """The one JSON document the command printed; the gateways' own log lines share stdout here."""
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln in ("{", "[", "[]"))
    if lines[start] == "[]":
        return []
    end = next(i for i in range(start, len(lines)) if lines[i] == ("}" if lines[start] == "{" else "]"))
    return json.loads("\n".join(lines[start : end + 1]))


async def _exchange(pair: Pair) -> dict[str, list[str]]:
    """US sends two messages, CN one; CN acks one of US's. Returns sent message ids per side."""
    us, cn = pair.apis[US], pair.apis[CN]
    sent: dict[str, list[str]] = {US: [], CN: []}
    for api, name, msg_type in (
        (us, US, "seizure-share"),
        (us, US, "seminar-notice"),
        (cn, CN, "port-visit-invitation"),
    ):
        status, res = await api.submit(msg_type)
        assert status == 202, res
        sent[name].append(res["id"])
    for api, name in ((us, US), (cn, CN)):
        for mid in sent[name]:
            await api.wait_status(mid, {"delivered"})
    status, ack, _ = await cn.call("POST", f"/v1/inbox/{sent[US][0]}/ack", json_body={"status": "processed"})
    assert status == 202, ack
    await us.wait_status(sent[US][0], {"acknowledged"})
    # Acks are control messages, not listed by the local API: watch the store for the receipt.
    for _ in range(400):
        m = await pair.gw(CN).store.get_message(ack["ack_id"])
        if m is not None and m.status == "delivered":
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the ack was never delivered")
    sent[CN].append(ack["ack_id"])
    return sent


async def _checkpoint(pair: Pair, name: str) -> CheckpointRecord:
    checkpointer = pair.lp.servers[name].checkpointer
    assert checkpointer is not None
    cp = await checkpointer.checkpoint_now()
    assert cp is not None
    # The background loop may be cosigning at the same moment; the witness then answers one of
    # the two requests with a conflict, so ask again until our checkpoint is cosigned.
    for _ in range(100):
        if await checkpointer.cosign_latest():
            return cp
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name}'s checkpoint was never cosigned: {checkpointer.status.last_error}")


async def _export(pair: Pair, name: str, path: Path) -> Any:
    gw = pair.gw(name)
    config = pair.lp.configs[name]
    with path.open("wb") as out:
        return await export_bundle(
            gw.store,
            log=name,
            peer=gw.peer.identity,
            own_bundle=gw.identity.bundle.to_bytes(),
            peer_bundle=config.path(config.peer.bundle).read_bytes(),
            out=out,
            now=gw.clock.now(),
        )


async def test_both_sides_export_and_verify_offline(
    pair: Pair, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sent = await _exchange(pair)
    for name in (US, CN):
        cp = await _checkpoint(pair, name)
        path = tmp_path / f"{name}.audit.jsonl"
        summary = await _export(pair, name, path)
        assert summary.size == cp.size and summary.missing_evidence == 0
        with path.open("rb") as f:
            report = verify_bundle(f, require_cosigned=True)
        assert report.log == name and report.size == cp.size and report.root == cp.root
        assert report.cosigned_checkpoints == report.checkpoints >= 1
        # Own messages (submitted, delivered with the peer's receipt) and the peer's (received,
        # with our receipt); the ack travels as a message of CN's, received by US.
        other = CN if name == US else US
        assert report.documents == len(sent[name]) + len(sent[other])
        assert report.receipts == report.documents
        assert report.kinds["delivered"] == len(sent[name])
        assert report.kinds["received"] == len(sent[other])
        assert report.lines == summary.lines and report.sha256 == summary.sha256
        if name == US:
            assert report.kinds["acknowledged"] == 1

        # The command-line verifier agrees, prints JSON on request, and exits 1 on a changed byte.
        assert main(["audit", "verify", str(path), "--require-cosigned", "--json"]) == 0
        assert _json_out(capsys)["root"] == report.to_dict()["root"]
        lines = path.read_bytes().splitlines(keepends=True)
        i = next(n for n, ln in enumerate(lines) if b'"t":"entry"' in ln and n > 5)
        tampered = bytearray(lines[i])
        pos = tampered.index(b'"entry":"') + 20
        tampered[pos] = ord("A") if tampered[pos] != ord("A") else ord("B")
        bad = tmp_path / f"{name}.tampered.jsonl"
        bad.write_bytes(b"".join([*lines[:i], bytes(tampered), *lines[i + 1 :]]))
        assert main(["audit", "verify", str(bad), "--json"]) == 1
        failure = _json_out(capsys)
        assert failure["verified"] is False and failure["line"] >= i + 1
        assert main(["audit", "verify", str(tmp_path / "missing.jsonl")]) == 2


async def test_cli_export_show_and_verify(
    pair: Pair, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The documents are sealed at rest: the export opens them with the store key (passphrase).
    monkeypatch.setenv(PASSPHRASE_ENV, EXAMPLE_PASSPHRASE.decode())
    sent = await _exchange(pair)
    await _checkpoint(pair, US)
    config = str(pair.lp.homes[US].config_path)
    out = tmp_path / "us.jsonl"
    # The CLI runs its own event loop, so it runs in a thread beside the gateways' loop.
    code = await asyncio.to_thread(main, ["audit", "export", "--config", config, "--out", str(out), "--json"])
    assert code == 0
    summary = _json_out(capsys)
    assert out.exists() and summary["size"] >= 1
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # it holds every message's document
    assert main(["audit", "verify", str(out)]) == 0
    text = capsys.readouterr().out
    assert "VERIFIED" in text and "COMPARE these fingerprints" in text
    # With the fingerprints exchanged out of band, as `keys export` prints them.
    assert main(["audit", "verify", str(out), "--json"]) == 0
    anchors = _json_out(capsys)["anchors"]
    trust = tmp_path / "trust.txt"
    trust.write_text("".join(f"{a['identity']} {a['fingerprint']}\n" for a in anchors), encoding="utf-8")
    assert main(["audit", "verify", str(out), "--trust", str(trust)]) == 0
    assert "from --trust" in capsys.readouterr().out
    # A changed end line: refused, and the human output shows the stable code in brackets.
    changed = tmp_path / "changed.jsonl"
    raw = out.read_bytes()
    changed.write_bytes(raw[:-1] + b"\r\n")
    assert main(["audit", "verify", str(changed)]) == 1
    assert "[audit.malformed]" in capsys.readouterr().err
    wrong = tmp_path / "wrong-trust.txt"
    wrong.write_text(f"{US} {'0' * 64}\n{CN} {'0' * 64}\n", encoding="utf-8")
    assert main(["audit", "verify", str(out), "--trust", str(wrong), "--json"]) == 1
    assert _json_out(capsys)["code"] == "audit.trust_anchor"

    mid = sent[US][0]
    assert main(["audit", "show", "--bundle", str(out), "--message-id", mid, "--json"]) == 0
    rows = _json_out(capsys)
    assert {"submitted", "delivered", "acknowledged"} <= {r["kind"] for r in rows}
    assert all(mid in (r["message_id"], r["detail"].get("ack_id")) for r in rows)
    code = await asyncio.to_thread(main, ["audit", "show", "--config", config, "--kind", "delivered", "--json"])
    assert code == 0
    rows = _json_out(capsys)
    assert {r["message_id"] for r in rows} == set(sent[US])
    code = await asyncio.to_thread(main, ["audit", "show", "--config", config, "--limit", "3"])
    assert code == 0
    assert "audit entries from store of US-CBP" in capsys.readouterr().out


async def test_export_needs_a_checkpoint(pair: Pair, tmp_path: Path) -> None:
    gw = pair.gw(US)
    if await gw.store.latest_checkpoint() is not None:
        pytest.skip("the background checkpointer was faster")
    with pytest.raises(NoCheckpoint, match="no checkpoint yet"):
        await _export(pair, US, tmp_path / "none.jsonl")


async def _until(pred: Any, timeout: float = 20) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await pred():
        assert loop.time() < end, "condition not reached"
        await asyncio.sleep(0.05)


async def test_history_verifies_across_a_key_rotation_and_a_revocation(pair: Pair, tmp_path: Path) -> None:
    us, admin = pair.gw(US), pair.apis[US]
    await _exchange(pair)
    old = us.identity.active_signing_key(us.clock.now()).kid
    await _checkpoint(pair, US)  # signed with the old key
    status, rot, _ = await admin.call("POST", "/v1/admin/keys/rotate", role="admin", json_body={"kind": "signing"})
    assert status == 202, rot
    new = rot["kids"][0]

    async def switched() -> bool:
        return bool(us.identity.active_signing_key(us.clock.now()).kid == new)

    await _until(switched)
    status, rev, _ = await admin.call(
        "POST", f"/v1/admin/keys/{old}/revoke", role="admin", json_body={"reason": "audit drill"}
    )
    assert status == 202, rev

    async def revoked_known() -> bool:
        m = await us.store.get_message(rev["announcement_id"])
        return m is not None and m.status == "delivered"

    await _until(revoked_known)
    await _exchange(pair)  # new traffic under the new key
    for name in (US, CN):
        await _checkpoint(pair, name)
        path = tmp_path / f"{name}.jsonl"
        summary = await _export(pair, name, path)
        assert summary.missing_evidence == 0
        with path.open("rb") as f:
            report = verify_bundle(f, require_cosigned=True)
        # Documents (ours on US's side, received ones on CN's) signed by the revoked key before
        # its revocation still verify from the bundle history; later ones by the new key.
        assert {old, new} <= set(report.key_ids), name
        assert max(serial for owner, serial, _ in report.fingerprints if owner == US) >= 3
        assert (report.kinds.get("key_rotated", 0) + report.kinds.get("key_revoked", 0) >= 2) == (name == US)
