"""A gateway restored from an older backup (DESIGN §11): it finds itself behind its peer, sends
nothing until `recover`, and then neither re-uses a sequence number nor re-sends what the peer
has; what it lost is named. On both stores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from customs_gateway.core.audit import AuditEntry, NoteSigner
from customs_gateway.core.audit_bundle import verify_bundle
from customs_gateway.core.checkpoint import Checkpoint, sign_note
from customs_gateway.core.encoding import b64url, json_bytes, json_object
from customs_gateway.core.epoch import EpochStart, epoch_detail, epoch_origin
from customs_gateway.core.merkle import leaf_hash
from customs_gateway.core.receipt import Statement, verify_receipt
from customs_gateway.core.witness import encode_request

from .conftest import CN, US, Pair, peer_post
from .restore_helpers import backup, restore
from .test_audit_export import _checkpoint, _export
from .test_key_lifecycle import _wait


async def _send(pair: Pair, side: str, n: int, tag: str) -> list[str]:
    ids = []
    for i in range(n):
        status, r = await pair.apis[side].submit("seizure-share", body=_body(f"{tag}-{i}"))
        assert status == 202, r
        ids.append(r["id"])
    return ids


def _body(ref: str) -> dict[str, Any]:
    from .conftest import sample

    b = sample("seizure-share")
    b["case_reference"] = ref
    return b


async def _delivered(pair: Pair, side: str, ids: list[str]) -> None:
    for mid in ids:
        m = await pair.apis[side].wait_status(mid, {"delivered", "refused", "expired"}, timeout=30)
        assert m["status"] == "delivered", m


async def _restart_restored(pair: Pair, tmp_path: Path) -> None:
    """Stop US, put the backup back, start US again (CN keeps running)."""
    await pair.lp.stop(US)
    restore(pair.lp.configs[US], tmp_path / "us.backup")
    pair.lp._identities.pop(US, None)
    await pair.lp.start(US)


async def test_restored_gateway_waits_for_recover_then_reuses_nothing(pair: Pair, tmp_path: Path) -> None:
    before = await _send(pair, US, 2, "BEFORE")
    await _delivered(pair, US, before)
    # Two messages queued while the peer is away: in the backup as `queued`, delivered afterwards.
    await pair.lp.stop(CN)
    in_flight = await _send(pair, US, 2, "IN-FLIGHT")
    backup(pair.lp.configs[US], tmp_path / "us.backup")
    await pair.lp.start(CN)
    await _delivered(pair, US, in_flight)
    after = await _send(pair, US, 3, "AFTER")  # accepted after the backup: the restore loses them
    await _delivered(pair, US, after)
    cosigned = await _checkpoint(pair, US)  # the peer has cosigned entries the restore will lose
    cn = pair.gw(CN)
    high = (await cn.store.peer_state(US)).recv_high_water
    assert high == 7

    await _restart_restored(pair, tmp_path)
    us = pair.gw(US)
    # The restored store would hand out 5 again: it notices and holds everything back.
    fresh = await _send(pair, US, 1, "FRESH")
    await _wait(lambda: us.recovery is not None and us.recovery.needed, timeout=20)
    _, ready, _ = await pair.apis[US].call("GET", "/readyz", role=None)
    assert ready["recovery"]["needed"] and ready["status"] == "ready"
    _, peers, _ = await pair.apis[US].call("GET", "/v1/admin/peers", role="admin")
    assert peers["peers"][0]["recovery"]["needed"]
    status, m, _ = await pair.apis[US].call("GET", f"/v1/messages/{fresh[0]}")
    assert m["status"] in ("queued", "retrying") and m["seq"] == 5
    assert (await cn.store.peer_state(US)).recv_high_water == 7  # nothing reached the peer

    status, bad, _ = await pair.apis[US].call("POST", "/v1/admin/recover", role="admin", json_body={"reason": " "})
    assert status == 422 and bad["field"] == "$.reason"
    status, res, _ = await pair.apis[US].call(
        "POST", "/v1/admin/recover", role="admin", json_body={"reason": "restored from last night's backup"}
    )
    assert status == 200, res
    assert res["next_seq"] == 8 and res["renumbered"] == 1
    assert sorted(res["marked_delivered"]) == sorted(in_flight)
    assert [x["id"] for x in res["lost"]] == after
    # The in-flight ones carry the peer's original receipts, which verify.
    for mid in in_flight:
        msg = await us.store.get_message(mid)
        assert msg is not None and msg.status == "delivered" and msg.receipt is not None
        verify_receipt(
            Statement.from_dict("receipt", json_object(msg.receipt)),
            message_id=mid,
            sender=US,
            receiver=CN,
            document_sha256=msg.document_sha256,
            key_for=us.peer.verify_key,
        )
    await _delivered(pair, US, fresh)
    m = await us.store.get_message(fresh[0])
    assert m is not None and m.seq == 8
    more = await _send(pair, US, 2, "LATER")
    await _delivered(pair, US, more)
    # The peer saw each message once, no number twice, nothing refused for reuse.
    _, inbox, _ = await pair.apis[CN].call("GET", "/v1/inbox?limit=500")
    got = [x["id"] for x in inbox["messages"] if x["from"] == US]
    assert got == before + in_flight + after + fresh + more
    _, entries, _ = await pair.apis[CN].call("GET", "/v1/audit/entries?limit=1000", role="auditor")
    assert not [e for e in entries["entries"] if e["entry"].get("code") == "replay.seq_reused"]
    _, ours, _ = await pair.apis[US].call("GET", "/v1/audit/entries?limit=1000", role="auditor")
    recovered = [e["entry"] for e in ours["entries"] if e["entry"]["kind"] == "recovered"]
    assert len(recovered) == 1
    detail = recovered[0]["detail"]
    assert detail["lost_count"] == 3 and detail["marked_delivered_count"] == 2 and detail["next_seq"] == 8
    assert recovered[0]["actor"].startswith("token:")
    # Nothing left to recover.
    status, again, _ = await pair.apis[US].call("POST", "/v1/admin/recover", role="admin", json_body={"reason": "x"})
    assert status == 409 and again["code"] == "recovery.not_needed"
    assert detail["peer_cosigned"]["size"] == cosigned.size > res["restored_log_size"]
    await _new_epoch_verifies(pair, res, tmp_path, cosigned_before=detail["peer_cosigned"])
    await _forgeries_are_refused(pair)


async def _new_epoch_verifies(pair: Pair, res: dict[str, Any], tmp_path: Path, cosigned_before: Any) -> None:
    """The log goes on under a new epoch the peer's witness accepted once; both logs verify."""
    assert res["log_origin"] == "customs-gateway/US-CBP/audit/epoch-1" and res["epoch_witnessed"]
    await _checkpoint(pair, US)  # later checkpoints of the new epoch are cosigned as usual
    await _checkpoint(pair, CN)
    _, theirs, _ = await pair.apis[CN].call("GET", "/v1/audit/entries?limit=1000", role="auditor")
    kinds = [e["entry"]["kind"] for e in theirs["entries"]]
    assert kinds.count("peer_epoch") == 1 and "fork_detected" not in kinds
    for side in (US, CN):
        path = tmp_path / f"{side}.jsonl"
        await _export(pair, side, path)
        with path.open("rb") as f:
            report = verify_bundle(f)
        assert report.latest_cosigned
        if side == US:
            ((index, origin, previous, prev_size, restored, reason),) = report.epochs
            assert origin == res["log_origin"] and previous == "customs-gateway/US-CBP/audit"
            assert prev_size == (cosigned_before["size"] if cosigned_before else 0)
            assert restored == res["restored_log_size"] <= index and reason == "restored from last night's backup"
        else:
            assert report.epochs == ()


@pytest.mark.parametrize("homes", ["sqlite"], indirect=True)
async def test_a_gateway_that_is_not_behind_starts_normally(pair: Pair, tmp_path: Path) -> None:
    ids = await _send(pair, US, 2, "OK")
    await _delivered(pair, US, ids)
    us = pair.gw(US)
    assert us.recovery is not None and us.recovery.checked and not us.recovery.needed
    status, p, _ = await pair.apis[US].call("POST", "/v1/admin/recover", role="admin", json_body={"reason": "test"})
    assert status == 409 and p["code"] == "recovery.not_needed"


async def test_at_start_the_origin_is_read_from_an_epoch_entry_far_behind_the_last_checkpoint(pair: Pair) -> None:
    # `load_origins` reads what follows the newest checkpoint a page at a time (a million entries
    # after a crash or a bulk load cost 550 MiB read at once) and parses only epoch entries: one
    # 7,000 entries in, with entries around it that merely mention the kind, must still be found.
    us = pair.gw(US)
    now = us.clock.now()
    await us.load_origins()
    assert us.log_origin == "customs-gateway/US-CBP/audit"

    def filler(n: int) -> list[AuditEntry]:
        mention = {"note": "log_epoch", "kind": "log_epoch"}  # in the detail only: not an epoch
        return [AuditEntry(at=now, kind="refused", actor="t", code="schema.type", detail=mention) for _ in range(n)]

    start = EpochStart(
        origin=epoch_origin(US, 1),
        previous_origin=us.log_origin,
        previous_size=0,
        previous_root="",
        restored_size=0,
        reason="test",
    )
    await us.store.append_audit(filler(7000))
    await us.load_origins()
    assert us.log_origin == "customs-gateway/US-CBP/audit"  # mentions of the kind are not epochs
    epoch = AuditEntry(at=now, kind="log_epoch", actor="t", peer=CN, detail=epoch_detail(start))
    await us.store.append_audit([epoch, *filler(6000)])
    us.log_origin = "not read yet"
    await us.load_origins()
    assert us.log_origin == epoch_origin(US, 1)


async def _peer_post(pair: Pair, path: str, body: bytes, ctype: str) -> tuple[int, Any]:
    status, got, raw = await peer_post(pair, path, body, ctype)
    return status, json.loads(raw) if "json" in got else raw


async def _forgeries_are_refused(pair: Pair) -> None:
    """From outside, with US's own log key: an epoch that hides what the witness cosigned, and a
    cosign request for the closed origin, are both refused; nothing is cosigned."""
    us = pair.gw(US)
    now = us.clock.now()
    held = await pair.gw(CN).store.witness_state(us.log_origin)
    assert held is not None
    lie = EpochStart(
        origin=epoch_origin(US, 2),
        previous_origin=us.log_origin,
        previous_size=0,  # "nothing was cosigned": hides the epoch-1 checkpoints the peer holds
        previous_root="",
        restored_size=0,
        reason="forged",
    )
    entry = AuditEntry(at=now, kind="log_epoch", actor="x", detail=epoch_detail(lie)).to_bytes()
    cp = Checkpoint(lie.origin, 1, leaf_hash(entry))
    note = sign_note(cp.body(), lie.origin, NoteSigner(us.identity.active_signing_key(now)))
    body = json_bytes({"entry": b64url(entry), "index": 0, "note": note.decode(), "proof": []})
    status, p = await _peer_post(pair, "/peer/v1/epoch", body, "application/json")
    assert status == 409 and p["code"] == "witness.epoch_invalid", p
    base = "customs-gateway/US-CBP/audit"
    old = sign_note(Checkpoint(base, 1, leaf_hash(b"x")).body(), base, NoteSigner(us.identity.active_signing_key(now)))
    status, p = await _peer_post(pair, "/peer/v1/cosign", encode_request(0, [], old), "text/x.tlog.cosign-request")
    assert status == 409 and p["code"] == "witness.epoch_closed", p
    assert (await pair.gw(CN).store.witness_state(epoch_origin(US, 2))) is None
