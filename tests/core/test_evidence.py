"""Evidence for one message: the valid file verifies; each forgery a log owner could try fails
with its own code (mutate the pieces, re-sign what the forger can sign, re-emit the file)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from customs_gateway.core.audit import AuditEntry
from customs_gateway.core.audit_bundle import BundleError
from customs_gateway.core.encoding import b64url, unb64url
from customs_gateway.core.errors import GatewayError
from customs_gateway.core.evidence import FAILURE_CODES, LogPart, decode_log_part, verify_evidence
from customs_gateway.core.receipt import make_receipt

from .evidence_builder import (
    CN,
    CN_SIG,
    CN_WIT,
    STRANGER,
    STRANGER_WIT,
    T0,
    US,
    US_SIG,
    US_WIT,
    M,
    Pieces,
    Side,
    build,
    enc,
    filler,
    forged_bundle,
    key,
    rec,
)

VECTOR = Path(__file__).resolve().parent.parent / "vectors" / "evidence.jsonl"
DISPOSED_VECTOR = VECTOR.with_name("evidence-disposed.jsonl")


def lines(raw: bytes) -> list[bytes]:
    return raw.splitlines(keepends=True)


def refused(raw: bytes, code: str, **kw: object) -> BundleError:
    with pytest.raises(BundleError) as info:
        verify_evidence(lines(raw), **kw)  # type: ignore[arg-type]
    assert info.value.code == code, str(info.value)
    assert code in FAILURE_CODES
    return info.value


def test_the_vector_is_what_the_builder_makes_and_it_verifies() -> None:
    raw = build().raw()
    assert VECTOR.read_bytes() == raw, "run scripts/make_evidence_vectors.py"
    report = verify_evidence(lines(raw))
    assert (report.sender, report.receiver, report.type) == (US, CN, "seizure-share")
    assert report.document == "included" and report.ack_status == "processed"
    assert report.received_at == "2026-03-01T12:00:01.000Z"
    assert [lp.owner for lp in report.logs] == [US, CN]
    assert [lp.cosigned_by for lp in report.logs] == [
        "customs-gateway/CN-GACC/witness",
        "customs-gateway/US-CBP/witness",
    ]
    assert {(e.owner, e.kind) for e in report.entries} >= {(US, "submitted"), (US, "acknowledged"), (CN, "received")}
    assert [a[1] for a in report.anchors] == [1, 1] and not report.trusted_by_anchor_file


def test_the_disposed_vector_verifies_with_its_document_withheld() -> None:
    raw = build(disposed=True).raw()
    assert DISPOSED_VECTOR.read_bytes() == raw, "run scripts/make_evidence_vectors.py"
    report = verify_evidence(lines(raw))
    assert report.document == "withheld: disposed"
    assert report.document_sha256 == build().parts[0].document_sha256
    assert report.received_at == "2026-03-01T12:00:01.000Z" and report.ack_status == "processed"
    assert (US, "disposed") in {(e.owner, e.kind) for e in report.entries}
    # The receipt still binds the digest: another digest for the withheld document fails.
    forged = build(disposed=True).replace_part(0, document_sha256="22" * 32)
    refused(forged.raw(), "evidence.receipt")


def test_trust_file_fingerprints() -> None:
    p = build()
    prints = {owner: signed.fingerprint() for owner, signed in p.bundles}
    assert verify_evidence(lines(p.raw()), trust=prints).trusted_by_anchor_file
    # Spacing and case as a person types them do not matter.
    typed = {o: f.replace(" ", "").lower() for o, f in prints.items()}
    verify_evidence(lines(p.raw()), trust=typed)
    wrong = dict(prints, **{CN: "AAAA " * 16})
    err = refused(p.raw(), "audit.trust_anchor", trust=wrong)
    assert "CN-GACC" in err.detail
    refused(p.raw(), "audit.trust_anchor", trust={US: prints[US]})


# --- forged key bundles -------------------------------------------------------------------------


def _forged_cn_serial_2() -> tuple[str, object]:
    """A CN-GACC 'serial 2' the log owner made up: self-signed by keys CN-GACC never had."""
    records = (rec(STRANGER, "signing"), enc(12), rec(STRANGER_WIT, "witness"))
    return CN, forged_bundle(CN, 2, [STRANGER], records)


def test_forged_peer_bundle_and_receipt_refused_with_its_line() -> None:
    owner, forged = _forged_cn_serial_2()
    p = build(extra_bundles=[(owner, forged)], receipt_signer=STRANGER)  # type: ignore[list-item]
    err = refused(p.raw(), "audit.bundle_chain")
    assert err.line == 4  # header, US bundle, CN bundle, the forgery


def test_forged_peer_bundle_and_forged_cosignature_refused() -> None:
    owner, forged = _forged_cn_serial_2()
    p = build(extra_bundles=[(owner, forged)], us_cosigner=STRANGER_WIT)  # type: ignore[list-item]
    refused(p.raw(), "audit.bundle_chain")
    # Anchored at the real CN bundle the forgery is still off the chain.
    prints = {o: s.fingerprint() for o, s in build().bundles}
    refused(p.raw(), "audit.bundle_chain", trust=prints)


def test_a_forged_receipt_without_a_forged_bundle_fails_its_signature() -> None:
    refused(build(receipt_signer=STRANGER).raw(), "evidence.receipt")


def test_a_revocation_cannot_be_withdrawn_by_a_higher_serial() -> None:
    revoked_at = T0 + dt.timedelta(minutes=2)
    cn2 = (
        rec(CN_SIG, "signing"),
        rec(key(40), "signing", nb=T0),
        enc(12),
        rec(CN_WIT, "witness", state="revoked", revoked_at=revoked_at, revocation_reason="lost"),
    )
    v2 = forged_bundle(CN, 2, [CN_SIG, key(40)], cn2)
    v3 = forged_bundle(
        CN, 3, [CN_SIG], (rec(CN_SIG, "signing"), rec(key(40), "signing", nb=T0), enc(12), rec(CN_WIT, "witness"))
    )
    # Serial 2 alone (a real revocation of CN's witness key before the cosignature) fails the cosignature.
    refused(build(extra_bundles=[(CN, v2)]).raw(), "evidence.cosignature")
    # Serial 3 "un-revoking" it is off the chain.
    err = refused(build(extra_bundles=[(CN, v2), (CN, v3)]).raw(), "audit.bundle_chain")
    assert err.line == 5


def test_a_checkpoint_signed_by_a_revoked_key_is_refused() -> None:
    revoked_at = T0 + dt.timedelta(minutes=2)  # before the cosignature at T0+5 min
    us2 = (
        rec(US_SIG, "signing", state="revoked", revoked_at=revoked_at, revocation_reason="compromised"),
        rec(key(41), "signing", nb=T0),
        enc(11),
        rec(US_WIT, "witness"),
    )
    v2 = forged_bundle(US, 2, [US_SIG, key(41)], us2)
    err = refused(build(extra_bundles=[(US, v2)]).raw(), "evidence.checkpoint")
    assert "key.revoked" in err.detail


def test_a_checkpoint_signed_by_a_key_not_yet_valid_is_refused() -> None:
    late, later = key(42), T0 + dt.timedelta(hours=1)
    us2 = (rec(US_SIG, "signing"), rec(late, "signing", nb=later), enc(11), rec(US_WIT, "witness"))
    v2 = forged_bundle(US, 2, [US_SIG, late], us2, issued_at=later)
    refused(build(extra_bundles=[(US, v2)], us_log_signer=late).raw(), "evidence.checkpoint")


# --- cosignatures ---------------------------------------------------------------------------


def test_cosignatures_are_required_unless_allowed() -> None:
    raw = build(us_cosigner=None).raw()
    refused(raw, "evidence.cosignature_missing")
    report = verify_evidence(lines(raw), allow_uncosigned=True)
    assert report.uncosigned_allowed and report.logs[0].cosigned_by is None
    refused(build(cn_cosigner=None).raw(), "evidence.cosignature_missing")


def test_a_log_cosigned_by_its_own_witness_is_not_cosigned() -> None:
    # US-CBP "cosigning" its own checkpoint with its own witness key: not the peer's witness name.
    refused(build(us_cosigner=US_WIT).raw(), "evidence.cosignature_missing")


# --- entries, proofs, parts -----------------------------------------------------------------


def _with_log(p: Pieces, i: int, lp: LogPart) -> Pieces:
    logs = list(p.logs)
    logs[i] = lp
    return dataclasses.replace(p, logs=logs)


def test_an_entry_moved_to_another_index_fails_its_proof() -> None:
    p = build()
    lp = p.logs[0]
    moved = [replace(lp.entries[0], index=lp.entries[0].index - 1), *lp.entries[1:]]
    refused(_with_log(p, 0, replace(lp, entries=moved)).raw(), "evidence.proof")


def test_an_entry_changed_fails_its_proof() -> None:
    p = build()
    lp = p.logs[1]
    e = AuditEntry.from_bytes(unb64url(lp.entries[0].entry))
    changed = dataclasses.replace(e, detail={"type": "seizure-share", "seq": 2}).to_bytes()
    entries = [replace(lp.entries[0], entry=b64url(changed)), *lp.entries[1:]]
    refused(_with_log(p, 1, replace(lp, entries=entries)).raw(), "evidence.proof")


def test_an_ack_for_another_document_is_refused() -> None:
    other = {"message_id": build().parts[0].id, "document_sha256": "00" * 32, "status": "processed"}
    refused(build(ack_body=other).raw(), "evidence.ack")


def test_a_receipt_for_another_document_is_refused() -> None:
    p = build()
    wrong = make_receipt(
        message_id=p.parts[0].id,
        sender=US,
        receiver=CN,
        document_sha256=hashlib.sha256(b"another").digest(),
        received_at=T0,
        key=CN_SIG,
    ).to_bytes()
    refused(p.replace_part(0, receipt=b64url(wrong)).raw(), "evidence.receipt")


def test_a_receipt_swapped_for_a_valid_other_one_contradicts_the_entries() -> None:
    p = build()
    again = make_receipt(
        message_id=p.parts[0].id,
        sender=US,
        receiver=CN,
        document_sha256=bytes.fromhex(p.parts[0].document_sha256),
        received_at=T0 + dt.timedelta(seconds=7),
        key=CN_SIG,
    ).to_bytes()
    refused(p.replace_part(0, receipt=b64url(again)).raw(), "evidence.entry")


def test_a_document_signed_by_the_receiver_is_refused() -> None:
    p = build()
    from customs_gateway.core.envelope import Document, SignedDocument

    doc = SignedDocument.create(Document(p.parts[0].id, US, CN, "seizure-share", T0, {"x": 1}), CN_SIG)
    forged = p.replace_part(0, signed_document=b64url(doc.raw), document_sha256=doc.digest.hex())
    refused(forged.raw(), "evidence.document")


def test_a_withheld_document_is_vouched_for_by_the_entries_only() -> None:
    p = build().replace_part(0, signed_document=None, withheld="disposed")
    report = verify_evidence(lines(p.raw()))
    assert report.document == "withheld: disposed"
    refused(build().replace_part(0, signed_document=None, withheld=None).raw(), "evidence.document")
    # A made-up digest for the withheld document contradicts the entries and the receipt.
    refused(
        build().replace_part(0, signed_document=None, withheld="disposed", document_sha256="11" * 32).raw(),
        "evidence.receipt",
    )


def test_a_withheld_document_needs_an_entry_that_names_its_digest() -> None:
    """An entry merely about the message (a legal hold names no digest) does not vouch for a
    withheld document: a forger who picks which proven entries to carry could otherwise claim any
    digest for it."""
    p = build()
    at = T0 + dt.timedelta(minutes=2)
    us, cn = Side(US), Side(CN)
    for n in range(3):
        us.add(filler(US, n, T0), about=False)
        cn.add(filler(CN, n, T0), about=False)
    us.add(AuditEntry(at, "hold_placed", "token:abc", M, CN, detail={"reason": "case pending"}))
    cosigned_at = T0 + dt.timedelta(minutes=5)
    logs = [us.part(US_SIG, CN_WIT, cosigned_at), cn.part(CN_SIG, US_WIT, cosigned_at)]
    part = replace(p.parts[0], signed_document=None, withheld="disposed", document_sha256="11" * 32, receipt=None)
    forged = dataclasses.replace(p, parts=[part], logs=logs)
    err = refused(forged.raw(), "evidence.document")
    assert "no log entry names its digest" in err.detail
    # With an entry that names it, the same withheld part verifies.
    us.add(
        AuditEntry(at, "disposed", "system", M, CN, digests={"document": "11" * 32}, detail={"direction": "outbound"})
    )
    logs = [us.part(US_SIG, CN_WIT, cosigned_at), cn.part(CN_SIG, US_WIT, cosigned_at)]
    report = verify_evidence(lines(dataclasses.replace(forged, logs=logs).raw()))
    assert report.document == "withheld: disposed" and report.document_sha256 == "11" * 32


def test_header_must_name_sender_or_receiver_as_maker() -> None:
    p = build()
    refused(dataclasses.replace(p, header=dict(p.header, made_by="XX-OTHER")).raw(), "evidence.header")


def test_log_parts_in_order_and_both_present() -> None:
    p = build()
    refused(dataclasses.replace(p, logs=list(reversed(p.logs))).raw(), "audit.order")
    refused(dataclasses.replace(p, logs=p.logs[:1]).raw(), "evidence.log")


# --- every byte counts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda raw: raw[:-1] + b"\r\n", "audit.malformed"),
        (lambda raw: raw[: raw.rindex(b"{")] + raw[raw.rindex(b"{") :].replace(b",", b", ", 1), "audit.digest"),
        (lambda raw: raw[:-1], "audit.truncated"),
        (lambda raw: raw + b"\n", "audit.order"),
        (lambda raw: raw + raw.splitlines(keepends=True)[-1], "audit.order"),
    ],
    ids=["cr-before-final-lf", "space-after-comma-in-end-line", "no-final-lf", "extra-newline", "end-line-twice"],
)
def test_end_line_mutations_are_refused(mutate: object, code: str) -> None:
    raw = build().raw()
    refused(mutate(raw), code)  # type: ignore[operator]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_single_byte_change_is_detected(data: st.DataObject) -> None:
    raw = VECTOR.read_bytes()
    pos = data.draw(st.integers(0, len(raw) - 1), label="position")
    new = data.draw(st.integers(0, 255).filter(lambda b: b != raw[pos]), label="byte")
    mutated = raw[:pos] + bytes([new]) + raw[pos + 1 :]
    with pytest.raises(BundleError):
        verify_evidence(lines(mutated))


def test_unrelated_bundle_owner_is_refused() -> None:
    p = build()
    stranger = forged_bundle(
        "XX-OTHER", 1, [STRANGER], (rec(STRANGER, "signing"), enc(13), rec(STRANGER_WIT, "witness"))
    )
    refused(dataclasses.replace(p, bundles=[*p.bundles, ("XX-OTHER", stranger)]).raw(), "audit.bundle")


def test_a_withheld_document_cannot_change_its_type_or_time() -> None:
    p = build().replace_part(0, signed_document=None, withheld="disposed", type="seminar-notice")
    refused(p.raw(), "evidence.entry")
    p = build().replace_part(0, signed_document=None, withheld="disposed", created_at="2026-03-01T11:00:00.000Z")
    refused(p.raw(), "evidence.entry")


def _resealed(ls: list[bytes]) -> bytes:
    """The lines with the end line computed again over them, as a forger would."""
    body = ls[:-1]
    end = b'{"t":"end","lines":%d,"sha256":"%s"}\n' % (len(body), hashlib.sha256(b"".join(body)).hexdigest().encode())
    return b"".join([*body, end])


def test_a_line_with_a_key_twice_is_refused_even_resealed() -> None:
    """I-JSON for the file's own lines: a message part naming another receipt first (read by a
    parser that keeps the first) and the genuine one last (kept by msgspec) is one file showing
    two auditors two things. The same line without the first copy verifies."""
    p = build()
    ls = lines(p.raw())
    i = next(n for n, ln in enumerate(ls) if ln.startswith(b'{"t":"message","role":"message"'))
    other = next(n for n, ln in enumerate(ls) if ln.startswith(b'{"t":"message","role":"ack"'))
    theirs = ls[other][ls[other].index(b'"receipt":') :].split(b",", 1)[0]
    assert theirs not in ls[i]
    ls[i] = ls[i].replace(b'"receipt":', theirs + b',"receipt":', 1)
    err = refused(_resealed(ls), "audit.malformed")
    assert "line.receipt appears twice" in str(err) and f"line {i + 1}" in str(err), err
    assert verify_evidence(lines(_resealed(lines(p.raw()))))  # resealing alone changes nothing


def test_a_line_not_in_its_written_form_but_without_a_key_twice_still_verifies() -> None:
    """Only a key twice is refused: a line with other spacing is read as before (the second,
    slower parse that looks for a repeated key runs for it)."""
    ls = lines(build().raw())
    ls[3] = ls[3].replace(b'","', b'", "', 1)
    assert verify_evidence(lines(_resealed(ls)))


def test_a_peer_log_part_with_a_key_twice_is_refused() -> None:
    p = build()
    raw = lines(p.raw())[5].rstrip(b"\n")
    part = decode_log_part(raw)
    assert part.owner == US
    with pytest.raises(GatewayError) as ei:
        decode_log_part(raw.replace(b'"owner":', b'"owner":"CN-GACC","owner":', 1))
    assert ei.value.code == "evidence.log" and "log_part.owner" in str(ei.value), ei.value
