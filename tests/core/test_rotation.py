"""Key rotation rules, driven directly: a valid continuation is accepted; every way a bundle can
fail to follow from the one trusted is refused with its own code (mutate, re-sign, assert)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from customs_gateway.core.bundle import KeyBundle, KeyRecord, SignedBundle, sign_bundle
from customs_gateway.core.errors import KeyStateError, NotFound
from customs_gateway.core.keys import ALG_ED25519, ALG_X25519, SUITE_X25519, DecryptionKey, SigningKey
from customs_gateway.core.rotation import check_update, due_for_retirement, retire, revoke, rotate

UTC = dt.timezone.utc
NB, NA = dt.datetime(2026, 1, 1, tzinfo=UTC), dt.datetime(2028, 1, 1, tzinfo=UTC)
T = dt.datetime(2026, 6, 1, tzinfo=UTC)
CERT = "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n"
OLD, NEW, STRANGER, WIT = (SigningKey(bytes([n]) * 32) for n in (1, 2, 3, 4))


def rec(k: SigningKey, use: str = "signing", nb: dt.datetime = NB, **kw: object) -> KeyRecord:
    return KeyRecord(k.kid, use, ALG_ED25519, k.public_raw, nb, NA, **kw)  # type: ignore[arg-type]


def enc() -> KeyRecord:
    dk = DecryptionKey(ALG_X25519, bytes([9]) * 32)
    return KeyRecord(dk.kid, "encryption", ALG_X25519, dk.public.raw, NB, NA)


CURRENT = KeyBundle("CN-GACC", NB, (rec(OLD), enc(), rec(WIT, "witness")), (SUITE_X25519,), CERT)


def rotated() -> KeyBundle:
    return rotate(CURRENT, [rec(NEW, nb=T)], "signing", T)


def refused(signed: SignedBundle, code: str) -> None:
    with pytest.raises(KeyStateError) as info:
        check_update(CURRENT, signed, T)
    assert info.value.code == code, info.value.detail


def test_a_rotation_signed_by_old_and_new_is_accepted() -> None:
    new = check_update(CURRENT, sign_bundle(rotated(), [OLD, NEW]), T)
    assert new.serial == 2
    assert new.key(OLD.kid).state == "retiring"  # type: ignore[union-attr]
    assert new.key(NEW.kid).state == "active"  # type: ignore[union-attr]


def test_the_same_bundle_again_is_idempotent() -> None:
    assert check_update(CURRENT, sign_bundle(CURRENT, [OLD]), T) == CURRENT


def test_identity() -> None:
    other = dataclasses.replace(rotated(), identity="XX-OTHER")
    refused(sign_bundle(other, [OLD, NEW]), "key.announcement_identity")


def test_stale_serial() -> None:
    same_serial = dataclasses.replace(rotated(), serial=1)
    refused(sign_bundle(same_serial, [OLD, NEW]), "key.announcement_stale")


def test_untrusted_signer() -> None:
    forged = rotate(CURRENT, [rec(STRANGER, nb=T)], "signing", T)
    refused(sign_bundle(forged, [STRANGER]), "key.announcement_untrusted")


def test_a_signer_trusted_once_but_revoked_now_is_untrusted() -> None:
    revoked_then = dataclasses.replace(CURRENT, keys=(rec(OLD, revoked_at=T - dt.timedelta(days=1)), enc()))
    with pytest.raises(KeyStateError) as info:
        # The new version lists OLD unrevoked (so its self-signature holds); we no longer trust OLD.
        check_update(revoked_then, sign_bundle(rotated(), [OLD, NEW]), T)
    assert info.value.code == "key.announcement_untrusted"


def test_possession() -> None:
    refused(sign_bundle(rotated(), [OLD]), "key.announcement_possession")


def test_history_key_dropped() -> None:
    dropped = dataclasses.replace(rotated(), keys=tuple(k for k in rotated().keys if k.use != "witness"))
    refused(sign_bundle(dropped, [OLD, NEW]), "key.announcement_history")


def test_history_key_changed_or_extended() -> None:
    later = tuple(
        dataclasses.replace(k, not_after=NA + dt.timedelta(days=1)) if k.kid == WIT.kid else k for k in rotated().keys
    )
    refused(sign_bundle(dataclasses.replace(rotated(), keys=later), [OLD, NEW]), "key.announcement_history")
    moved = tuple(
        dataclasses.replace(k, not_before=NB - dt.timedelta(days=1)) if k.kid == WIT.kid else k for k in rotated().keys
    )
    refused(sign_bundle(dataclasses.replace(rotated(), keys=moved), [OLD, NEW]), "key.announcement_history")


def test_history_revocation_withdrawn() -> None:
    trusted = check_update(CURRENT, sign_bundle(revoke(CURRENT, WIT.kid, "lost", T), [OLD]), T)
    unrevoked = dataclasses.replace(
        trusted,
        serial=3,
        keys=tuple(
            dataclasses.replace(k, state="active", revoked_at=None, revocation_reason=None) if k.kid == WIT.kid else k
            for k in trusted.keys
        ),
    )
    with pytest.raises(KeyStateError) as info:
        check_update(trusted, sign_bundle(unrevoked, [OLD]), T)
    assert info.value.code == "key.announcement_history"


def test_tls_change_to_something_that_is_not_a_certificate() -> None:
    # A real certificate change (renewal) is covered by tests/core/test_tlscert.py and its vectors.
    other_cert = dataclasses.replace(rotated(), tls_certificate=CERT.replace("A", "B"))
    refused(sign_bundle(other_cert, [OLD, NEW]), "key.announcement_tls")


def test_revoke_rules() -> None:
    with pytest.raises(NotFound) as nf:
        revoke(CURRENT, "f" * 32, "why", T)
    assert nf.value.code == "key.unknown"
    once = revoke(CURRENT, WIT.kid, "lost", T)
    with pytest.raises(KeyStateError) as again:
        revoke(once, WIT.kid, "lost", T)
    assert again.value.code == "key.already_revoked"


def test_retirement_after_the_overlap() -> None:
    r = rotated()
    assert due_for_retirement(r, T + dt.timedelta(days=7), dt.timedelta(days=8)) == set()
    assert due_for_retirement(r, T + dt.timedelta(days=8), dt.timedelta(days=8)) == {OLD.kid}
    retired = retire(r, {OLD.kid}, T + dt.timedelta(days=8))
    old = retired.key(OLD.kid)
    assert old is not None and old.state == "retired" and old.not_after == T + dt.timedelta(days=8)
