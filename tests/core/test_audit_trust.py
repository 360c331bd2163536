"""What a log owner forging an export would try, and how `verify_bundle` refuses it: bundles that
do not follow from the trust anchor, keys used outside their validity, a latest checkpoint the
peer never cosigned, and any change to the file's last line."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from customs_gateway.core.audit import NoteSigner, log_origin, witness_name
from customs_gateway.core.audit_bundle import BundleError, BundleWriter, verify_bundle
from customs_gateway.core.bundle import KeyBundle, SignedBundle, sign_bundle
from customs_gateway.core.checkpoint import cosign, sign_note
from customs_gateway.core.keys import SUITE_X25519

from .test_audit_bundle import (
    CERT,
    CN,
    CN_SIG,
    CN_WIT,
    STRANGER,
    T0,
    US,
    US_SIG_B,
    _edit_note,
    _enc,
    _key,
    _rec,
    _sig_lines,
    big,
    build_log,
    export_lines,
    fails,
    obj,
    reseal,
    small,
    where,
)

STRANGER_WIT = _key(7)


def with_bundles(lines: list[bytes], *extra: tuple[str, SignedBundle]) -> tuple[list[bytes], int]:
    """Insert bundle versions after the exported ones; returns the lines (resealed) and the
    1-based line number of the first inserted one."""
    i = where(lines, "bundle")[-1] + 1
    w = BundleWriter()
    lines[i:i] = [w.bundle(owner, signed) for owner, signed in extra]
    return reseal(lines), i + 1


def recosign_all(lines: list[bytes], witness_key: object) -> list[bytes]:
    """Every checkpoint's cosignature replaced by one made with `witness_key` under CN's witness name."""

    def swap(note: bytes) -> bytes:
        head, sigs = _sig_lines(note)
        return head + sigs[0] + cosign(head[:-1], witness_name(CN), NoteSigner(witness_key), int(T0.timestamp()))  # type: ignore[arg-type]

    for n in range(len(where(lines, "checkpoint"))):
        lines = _edit_note(lines, n, swap)
    return lines


def forged_cn(serial: int, signers: list[object], *records: object, issued: dt.datetime = T0) -> SignedBundle:
    b = KeyBundle(CN, issued, tuple(records), (SUITE_X25519,), CERT, serial=serial)  # type: ignore[arg-type]
    return sign_bundle(b, signers)  # type: ignore[arg-type]


def test_a_fabricated_peer_serial_2_and_its_cosignatures_are_refused_by_line() -> None:
    fake = forged_cn(2, [STRANGER], _rec(STRANGER, "signing"), _enc(12), _rec(STRANGER_WIT, "witness"))
    lines, line = with_bundles(list(big()), (CN, fake))
    lines = recosign_all(lines, STRANGER_WIT)
    err = fails(lines)
    assert (err.code, err.line) == ("audit.bundle_chain", line)
    assert "serial 2" in err.detail
    # Even keeping every real key beside the fabricated witness key: not signed by a key CN had.
    fake2 = forged_cn(
        2, [STRANGER], _rec(CN_SIG, "signing"), _rec(STRANGER, "signing"), _enc(12), _rec(STRANGER_WIT, "witness")
    )
    lines2, line2 = with_bundles(list(big()), (CN, fake2))
    err2 = fails(recosign_all(lines2, STRANGER_WIT))
    assert (err2.code, err2.line) == ("audit.bundle_chain", line2)


def test_forged_inbound_documents_and_receipts_need_a_key_the_chain_never_reached() -> None:
    # CN's inbound message 2 signed by a stranger the forged bundle names as CN's signing key.
    log = build_log(16, checkpoint_every=10, doc_key={2: STRANGER})
    fake = forged_cn(2, [STRANGER], _rec(STRANGER, "signing"), _enc(12), _rec(CN_WIT, "witness"))
    lines, line = with_bundles(export_lines(log, chunk=7), (CN, fake))
    assert (fails(lines).code, fails(lines).line) == ("audit.bundle_chain", line)
    # Without the forged bundle the document itself fails.
    assert fails(export_lines(log, chunk=7)).code == "audit.document_signature"


def test_a_revocation_is_never_withdrawn_by_a_higher_serial() -> None:
    revoked = dataclasses.replace(_rec(CN_WIT, "witness"), state="revoked", revoked_at=T0, revocation_reason="lost")
    v2 = forged_cn(2, [CN_SIG], _rec(CN_SIG, "signing"), _enc(12), revoked)
    v3 = forged_cn(3, [CN_SIG], _rec(CN_SIG, "signing"), _enc(12), _rec(CN_WIT, "witness"))
    lines, line = with_bundles(list(big()), (CN, v2), (CN, v3))
    err = fails(lines)
    assert (err.code, err.line) == ("audit.bundle_chain", line + 1)


ROTATED_AT = T0 + dt.timedelta(seconds=110 * 2)  # build_log(110) rotates US's key here


def _us_version(serial: int, signers: list[object], *extra: object, issued: dt.datetime) -> SignedBundle:
    """A later US bundle version after the rotation in `big()`, with `extra` key records."""
    keys = (
        dataclasses.replace(_rec(_key(1), "signing", na=ROTATED_AT + dt.timedelta(days=1)), state="retiring"),
        _rec(US_SIG_B, "signing", nb=ROTATED_AT),
        _enc(11),
        _rec(_key(3), "witness"),
        *extra,
    )
    b = KeyBundle(US, issued, keys, (SUITE_X25519,), CERT, serial=serial)  # type: ignore[arg-type]
    return sign_bundle(b, signers)  # type: ignore[arg-type]


def _resign_last_checkpoint(lines: list[bytes], key: object) -> list[bytes]:
    def resign(note: bytes) -> bytes:
        head, sigs = _sig_lines(note)
        return sign_note(head[:-1], log_origin(US), NoteSigner(key)) + b"".join(sigs[1:])  # type: ignore[arg-type]

    return _edit_note(lines, len(where(lines, "checkpoint")) - 1, resign)


def test_a_checkpoint_signed_by_a_revoked_key_is_refused() -> None:
    issued = ROTATED_AT + dt.timedelta(seconds=1)
    c = _rec(_key(20), "signing", nb=T0)
    revoked = dataclasses.replace(
        c, state="revoked", revoked_at=T0 + dt.timedelta(seconds=5), revocation_reason="stolen"
    )
    v3 = _us_version(3, [US_SIG_B, _key(20)], c, issued=issued)  # C joins, proving possession
    v4 = _us_version(4, [US_SIG_B], revoked, issued=issued + dt.timedelta(seconds=1))  # and is revoked, backdated
    lines, _ = with_bundles(list(big()), (US, v3), (US, v4))
    assert verify_bundle(lines).checkpoints > 0  # the chain itself holds
    err = fails(_resign_last_checkpoint(lines, _key(20)))
    assert err.code == "audit.checkpoint_signature" and "revoked" in err.detail


def test_a_checkpoint_signed_before_its_key_was_valid_is_refused() -> None:
    nb = T0 + dt.timedelta(days=10)  # long after every cosignature in big()
    late = _rec(_key(21), "signing", nb=nb)
    lines, _ = with_bundles(list(big()), (US, _us_version(3, [US_SIG_B, _key(21)], late, issued=nb)))
    err = fails(_resign_last_checkpoint(lines, _key(21)))
    assert err.code == "audit.checkpoint_signature" and "not_yet_valid" in err.detail


def _drop_last_cosignature(lines: list[bytes]) -> list[bytes]:
    def drop(note: bytes) -> bytes:
        head, sigs = _sig_lines(note)
        return head + sigs[0]

    return _edit_note(lines, len(where(lines, "checkpoint")) - 1, drop)


def test_the_latest_checkpoint_must_be_cosigned_unless_allowed() -> None:
    lines = _drop_last_cosignature(list(big()))
    err = fails(lines)
    assert err.code == "audit.cosignature_missing" and err.line == where(lines, "checkpoint")[-1] + 1
    rep = verify_bundle(lines, allow_uncosigned=True)
    assert rep.uncosigned_allowed and not rep.latest_cosigned
    assert rep.to_dict()["latest_cosigned"] is False
    # --require-cosigned is stricter still, and wins over allow.
    assert fails(lines, require_cosigned=True, allow_uncosigned=True).code == "audit.cosignature_missing"


def test_trust_anchors() -> None:
    lines = list(big())
    rep = verify_bundle(lines)
    assert [(a[0], a[1]) for a in rep.anchors] == [(US, 1), (CN, 1)] and not rep.trusted_by_anchor_file
    prints = {owner: fp for owner, serial, fp in rep.fingerprints if serial == 1}
    assert verify_bundle(lines, trust=prints).trusted_by_anchor_file
    # Anchored at US's serial 2 (the version after the rotation): serial 1 is not needed.
    serial2 = next(fp for owner, serial, fp in rep.fingerprints if (owner, serial) == (US, 2))
    assert verify_bundle(lines, trust={US: serial2.replace(" ", "").lower(), CN: prints[CN]}).anchors[0][1] == 2
    wrong = fails(lines, trust={US: prints[US], CN: "0000 " * 16})
    assert wrong.code == "audit.trust_anchor" and CN in wrong.detail
    assert fails(lines, trust={US: prints[US]}).code == "audit.trust_anchor"


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda b: b[:-1] + b"\r\n", "audit.malformed"),
        (lambda b: b.replace(b",", b", ", 1), "audit.digest"),
        (lambda b: b.replace(b'{"t"', b'{ "t"', 1), "audit.digest"),
        (lambda b: b[:-1], "audit.truncated"),
    ],
    ids=["cr-before-lf", "space-after-comma", "space-after-brace", "no-final-lf"],
)
def test_end_line_changes_are_refused(mutate: object, code: str) -> None:
    lines = list(small())
    lines[-1] = mutate(lines[-1])  # type: ignore[operator]
    err = fails(lines)
    assert err.code == code and err.line == len(lines)


def test_anything_after_the_end_line_is_refused() -> None:
    lines = list(small())
    assert fails([*lines, b"\n"]).code == "audit.order"
    assert fails([*lines, lines[-1]]).code == "audit.order"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_single_byte_change_anywhere_is_detected(data: st.DataObject) -> None:
    raw = b"".join(small())
    pos = data.draw(st.integers(0, len(raw) - 1), label="position")
    new = data.draw(st.integers(0, 255).filter(lambda b: b != raw[pos]), label="byte")
    mutated = raw[:pos] + bytes([new]) + raw[pos + 1 :]
    with pytest.raises(BundleError):
        verify_bundle(mutated.splitlines(keepends=True))


def test_the_header_is_what_the_export_says() -> None:
    assert obj(small()[0])["format"] == "customs-gateway/v1 audit-export"
