"""Exports and per-message evidence still verify after disposal (DESIGN §10, §12; issue 18).

On a pair whose shared clock the test moves, US shares a seizure retained one day and CN acks
it; two days later both sides dispose of it. Each side's export then carries that message's
evidence line without its document (`withheld: "disposed"`, after the `disposed` entry) and
verifies offline with `audit verify`, which counts it; a forged export that withholds another
message's document, or gives another reason, fails naming the line. The message's evidence file,
made by either side, verifies and shows the document as withheld: disposed, also when only one
side has disposed of it (the other keeps it under a legal hold).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from customs_gateway.cli.main import main
from customs_gateway.core.audit_bundle import verify_bundle
from customs_gateway.core.clock import JumpClock
from customs_gateway.core.evidence import verify_evidence
from customs_gateway.service.pair import EXAMPLE_PASSPHRASE
from customs_gateway.startup.config import PASSPHRASE_ENV

from .conftest import CN, US, Pair
from .test_audit_export import _checkpoint, _export, _json_out
from .test_disposal import _share
from .test_evidence import _evidence, _lines


async def _ack(pair: Pair, mid: str) -> str:
    """CN acknowledges `mid`; returns the ack's id once US has it and CN holds its receipt."""
    status, ack, _ = await pair.apis[CN].call("POST", f"/v1/inbox/{mid}/ack", json_body={"status": "processed"})
    assert status == 202, ack
    await pair.apis[US].wait_status(mid, {"acknowledged"})
    for _ in range(400):
        m = await pair.gw(CN).store.get_message(ack["ack_id"])
        if m is not None and m.status == "delivered":
            return str(ack["ack_id"])
        await asyncio.sleep(0.05)
    raise AssertionError("the ack was never delivered")


async def _dispose(pair: Pair, clock: JumpClock, sides: tuple[str, ...], expected: list[str]) -> None:
    clock.jump(dt.timedelta(days=2))
    for side in sides:
        run = await pair.gw(side).disposal.run_once()
        assert run.disposed == expected, side
    for side in (US, CN):  # the disposed entries (and the hold notice) under a cosigned checkpoint
        await _checkpoint(pair, side)


def _reseal(lines: list[bytes]) -> bytes:
    body = lines[:-1]
    end = {"t": "end", "lines": len(body), "sha256": hashlib.sha256(b"".join(body)).hexdigest()}
    return b"".join(body) + json.dumps(end, separators=(",", ":")).encode() + b"\n"


def _evidence_line(lines: list[bytes], mid: str) -> int:
    return next(i for i, ln in enumerate(lines) if b'"t":"evidence"' in ln and json.loads(ln)["message_id"] == mid)


def _edited(lines: list[bytes], mid: str, **change: Any) -> tuple[bytes, int]:
    out = list(lines)
    i = _evidence_line(out, mid)
    out[i] = json.dumps({**json.loads(out[i]), **change}, separators=(",", ":")).encode() + b"\n"
    return _reseal(out), i + 1


async def test_exports_of_both_sides_verify_after_disposal(
    jump_pair: tuple[Pair, JumpClock], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pair, clock = jump_pair
    soon = await _share(pair, clock, 1, days=1)
    later = await _share(pair, clock, 2, days=30)
    await _ack(pair, soon)
    await _dispose(pair, clock, (US, CN), [soon])

    for name in (US, CN):
        path = tmp_path / f"{name}.audit.jsonl"
        summary = await _export(pair, name, path)
        assert summary.missing_evidence == 0
        lines = path.read_bytes().splitlines(keepends=True)
        gone = json.loads(lines[_evidence_line(lines, soon)])
        assert gone["signed_document"] is None and gone["withheld"] == "disposed"
        assert gone["receipt"] is not None  # the receipt stays, bound to the logged digest
        kept = json.loads(lines[_evidence_line(lines, later)])
        assert kept["signed_document"] is not None and "withheld" not in kept
        report = verify_bundle(iter(lines), require_cosigned=True)
        assert report.disposed == 1 and report.kinds["disposed"] == 1
        assert report.receipts == report.documents + 1  # every message has its receipt, one its document no more

        # Offline, as an auditor runs it: verified, and the report counts the disposed message.
        capsys.readouterr()
        assert await asyncio.to_thread(main, ["audit", "verify", str(path), "--json"]) == 0
        out = _json_out(capsys)
        assert out["verified"] is True and out["disposed"] == 1 and out["documents"] == report.documents
        assert await asyncio.to_thread(main, ["audit", "verify", str(path)]) == 0
        assert "disposed" in capsys.readouterr().out

        # Forged: another message's document stripped and said to be disposed of.
        forged, line = _edited(lines, later, signed_document=None, withheld="disposed")
        bad = tmp_path / f"{name}.forged.jsonl"
        bad.write_bytes(forged)
        assert await asyncio.to_thread(main, ["audit", "verify", str(bad), "--json"]) == 1
        failure = _json_out(capsys)
        assert (failure["code"], failure["line"]) == ("audit.withheld", line)
        assert later in failure["detail"] and "no disposed entry" in failure["detail"]
        # Forged: the disposed message's document withheld for another reason, or none.
        for reason in ("sealed", None):
            forged, line = _edited(lines, soon, withheld=reason)
            bad.write_bytes(forged)
            assert await asyncio.to_thread(main, ["audit", "verify", str(bad), "--json"]) == 1
            failure = _json_out(capsys)
            assert (failure["code"], failure["line"]) == ("audit.withheld", line)


async def test_evidence_of_a_disposed_message_verifies_from_either_side(jump_pair: tuple[Pair, JumpClock]) -> None:
    pair, clock = jump_pair
    soon = await _share(pair, clock, 1, days=1)
    ack_id = await _ack(pair, soon)
    digest = (await pair.gw(US).store.get_message(soon)).document_sha256.hex()  # type: ignore[union-attr]
    await _dispose(pair, clock, (US, CN), [soon])
    for made_by in (US, CN):
        status, raw = await _evidence(pair, made_by, soon)
        assert status == 200, raw
        part = json.loads(raw.splitlines()[[b'"t":"message"' in ln for ln in raw.splitlines()].index(True)])
        assert part["signed_document"] is None and part["withheld"] == "disposed"
        report = verify_evidence(_lines(raw))
        assert report.document == "withheld: disposed" and report.document_sha256 == digest
        assert (report.sender, report.receiver, report.type) == (US, CN, "seizure-share")
        assert report.received_at is not None and report.ack_status == "processed" and report.ack_id == ack_id
        kinds = {(e.owner, e.kind, e.message_id) for e in report.entries}
        assert {(US, "disposed", soon), (CN, "disposed", soon), (US, "submitted", soon)} <= kinds


async def test_evidence_and_exports_when_only_one_side_disposed(
    jump_pair: tuple[Pair, JumpClock], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pair, clock = jump_pair
    soon = await _share(pair, clock, 1, days=1)
    status, hold, _ = await pair.apis[CN].call(
        "POST", "/v1/admin/holds", role="admin", json_body={"message_id": soon, "reason": "court case 2026-17"}
    )
    assert status == 201, hold
    for _ in range(400):  # US records CN's notice (information only: US still disposes on time)
        if (await pair.apis[US].call("GET", f"/v1/messages/{soon}"))[1]["legal_holds"]:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("CN's legal-hold notice never reached US")
    clock.jump(dt.timedelta(days=2))
    assert (await pair.gw(CN).disposal.run_once()).disposed == []
    assert (await pair.gw(US).disposal.run_once()).disposed == [soon]
    for side in (US, CN):
        await _checkpoint(pair, side)

    documents = {}
    for made_by in (US, CN):
        status, raw = await _evidence(pair, made_by, soon)
        assert status == 200, raw
        report = verify_evidence(_lines(raw))
        documents[made_by] = report.document
        # Whichever side made the file, US's log part names the disposal and CN's does not (CN's
        # is fetched by US over the peer API, and US's by CN): both verify.
        disposals = {e.owner for e in report.entries if e.kind == "disposed"}
        assert disposals == {US}, made_by
    assert documents == {US: "withheld: disposed", CN: "included"}

    for name, disposed in ((US, 1), (CN, 0)):
        path = tmp_path / f"{name}.audit.jsonl"
        await _export(pair, name, path)
        capsys.readouterr()
        assert await asyncio.to_thread(main, ["audit", "verify", str(path), "--json"]) == 0
        assert _json_out(capsys)["disposed"] == disposed


async def test_an_export_made_right_after_a_disposal_round_verifies(
    jump_pair: tuple[Pair, JumpClock],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No waiting for the checkpointer's next tick: the round has its entries checkpointed and
    cosigned before it returns, so an auditor's export taken at once covers the `disposed`
    entries its withheld lines rely on."""
    monkeypatch.setenv(PASSPHRASE_ENV, EXAMPLE_PASSPHRASE.decode())
    pair, clock = jump_pair
    soon = await _share(pair, clock, 3, days=1)
    clock.jump(dt.timedelta(days=2))
    for side in (US, CN):
        assert (await pair.gw(side).disposal.run_once()).disposed == [soon]
    for side in (US, CN):
        config = str(pair.lp.homes[side].config_path)
        path = tmp_path / f"{side}.now.jsonl"
        code = await asyncio.to_thread(main, ["audit", "export", "--config", config, "--out", str(path)])
        assert code == 0
        capsys.readouterr()
        assert await asyncio.to_thread(main, ["audit", "verify", str(path), "--json"]) == 0
        out = _json_out(capsys)
        assert out["verified"] is True and out["disposed"] == 1, out
