"""Key rotation and revocation rules: how a bundle may change, on both sides of the exchange.

The owner builds the next bundle (`rotate`, `revoke`, `retire`); the peer accepts it only if it is
a continuation of the bundle it trusts (`check_update`): same identity, a higher serial, signed by
a signing key the peer already trusts, every new signing key proves possession by signing too,
and no history is rewritten (keys are never dropped, revocations never withdrawn, validity only
ever shortened). Old verification keys therefore stay usable for the evidence they signed. New
keys may carry any later expiry (renewal, DESIGN §11); a new TLS certificate may replace the pinned
one, which stays pinned beside it until the overlap ends (decision 0008).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import replace
from typing import Annotated, Final, Literal

import msgspec

from .bundle import MAX_TLS_PREVIOUS, KeyBundle, KeyRecord, SignedBundle
from .errors import DecodeError, KeyStateError, NotFound
from .tlscert import cert_info

#: Signing/encryption keys rotated out stay accepted (retiring) this long before they retire.
DEFAULT_OVERLAP: Final = dt.timedelta(days=8)
#: The longest signed bundle a key announcement carries (base64url characters).
MAX_ANNOUNCED_BUNDLE: Final = 256 * 1024


class KeyAnnouncementBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The body of a `key-announcement` control message."""

    event: Literal["rotate", "renew", "revoke", "retire", "profile"]
    bundle: Annotated[str, msgspec.Meta(max_length=MAX_ANNOUNCED_BUNDLE)]  # b64url of SignedBundle.to_bytes()
    kids: Annotated[list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(max_length=16)]
    reason: Annotated[str, msgspec.Meta(max_length=2000)] | None = None
    #: b64url ECDSA signature by a newly announced TLS certificate's key over the bundle bytes
    #: (`core.tlscert.possession_proof`); required when the certificate changes.
    tls_proof: Annotated[str, msgspec.Meta(max_length=512)] | None = None


def _refuse(detail: str, code: str) -> KeyStateError:
    return KeyStateError(detail, code=code, field="body.bundle", status=403)


def rotate(current: KeyBundle, new_records: list[KeyRecord], use: str, now: dt.datetime) -> KeyBundle:
    """Next bundle: the active keys of `use` become `retiring`, `new_records` join as `active`."""
    if not new_records or any(r.use != use for r in new_records):
        raise ValueError("new records must all have the rotated use")
    keys = tuple(replace(k, state="retiring") if k.use == use and k.state == "active" else k for k in current.keys)
    return current.with_keys((*keys, *new_records), now)


def renew_tls(current: KeyBundle, certificate: str, overlap_until: dt.datetime, now: dt.datetime) -> KeyBundle:
    """Next bundle presenting `certificate`; the current one stays pinned until `overlap_until`,
    previous certificates whose overlap has ended are dropped.

    A bundle pins at most `MAX_TLS_PREVIOUS` earlier certificates. Past that (more renewals
    within one overlap), the pins that end first are dropped: certificates replaced several
    renewals ago, which this gateway no longer presents (it switches only after the peer's
    receipt, one change at a time). The one it presents until the switch is always kept."""
    kept = [(pem, until) for pem, until in current.tls_previous if until > now]
    if len(kept) >= MAX_TLS_PREVIOUS:
        ending_last = sorted(range(len(kept)), key=lambda i: kept[i][1])[len(kept) - MAX_TLS_PREVIOUS + 1 :]
        kept = [kept[i] for i in sorted(ending_last)]
    return replace(
        current,
        tls_certificate=certificate,
        tls_previous=(*kept, (current.tls_certificate, overlap_until)),
        issued_at=now,
        serial=current.serial + 1,
    )


def revoke(current: KeyBundle, kid: str, reason: str, now: dt.datetime) -> KeyBundle:
    """Next bundle with `kid` revoked from `now` on; raises NotFound / KeyStateError."""
    rec = current.key(kid)
    if rec is None:
        raise NotFound(f"no key {kid} in the bundle", code="key.unknown", field="kid")
    if rec.revoked_at is not None:
        raise KeyStateError(f"key {kid} is already revoked", code="key.already_revoked", field="kid", status=409)
    keys = tuple(
        replace(k, state="revoked", revoked_at=now, revocation_reason=reason) if k.kid == kid else k
        for k in current.keys
    )
    return current.with_keys(keys, now)


def retire(current: KeyBundle, kids: set[str], now: dt.datetime) -> KeyBundle:
    """Next bundle with `kids` retired: valid for history up to `now`, never after."""
    keys = tuple(
        replace(k, state="retired", not_after=min(k.not_after, now)) if k.kid in kids else k for k in current.keys
    )
    return current.with_keys(keys, now)


#: Expiry inside this many days is warned about (log daily, `/readyz`, `keys list`).
EXPIRY_WARNING_DAYS: Final = 30


def expiry(bundle: KeyBundle, presented_cert: str | None = None) -> dict[str, dt.datetime]:
    """When each kind stops working unless renewed: per key use, the earliest end of validity of
    its active (unrevoked) keys; `tls`, the end of the certificate presented (default: the
    bundle's current one)."""
    out: dict[str, dt.datetime] = {}
    for rec in bundle.keys:
        if rec.state == "active" and rec.revoked_at is None:
            out[rec.use] = min(out.get(rec.use, rec.not_after), rec.not_after)
    with contextlib.suppress(DecodeError):  # not a certificate: reported where it is used
        out["tls"] = cert_info(presented_cert or bundle.tls_certificate).not_after
    return out


def due_for_retirement(bundle: KeyBundle, now: dt.datetime, overlap: dt.timedelta) -> set[str]:
    """Retiring keys whose overlap window (counted from the bundle that retired them) is over."""
    return {k.kid for k in bundle.keys if k.state == "retiring" and now - _retiring_since(bundle, k) >= overlap}


def _retiring_since(bundle: KeyBundle, rec: KeyRecord) -> dt.datetime:
    # The successor's not_before is when this key started retiring.
    successors = [k.not_before for k in bundle.keys if k.use == rec.use and k.not_before > rec.not_before]
    return min(successors) if successors else bundle.issued_at


def check_update(current: KeyBundle, signed: SignedBundle, now: dt.datetime) -> KeyBundle:
    """The peer's bundle after an announcement, or KeyStateError (code `key.announcement_*`).

    Idempotent: the bundle we already hold is returned unchanged (a re-sent announcement).
    """
    new = signed.verify_self_signed()
    if new.identity != current.identity:
        raise _refuse(f"bundle is for {new.identity!r}, not {current.identity!r}", "key.announcement_identity")
    if new.serial == current.serial and new.to_bytes() == current.to_bytes():
        return current
    if new.serial <= current.serial:
        raise _refuse(f"bundle serial {new.serial} is not newer than {current.serial}", "key.announcement_stale")
    signers = {kid for kid, _ in signed.signatures}
    trusted = [
        kid
        for kid in signers
        if (old := current.key(kid)) is not None
        and old.use == "signing"
        and old.valid_at(now) is None
        and (rec := new.key(kid)) is not None
        and rec.public == old.public
    ]
    if not trusted:
        raise _refuse("bundle is not signed by a signing key we already trust", "key.announcement_untrusted")
    for rec in new.keys:
        if current.key(rec.kid) is None and rec.use == "signing" and rec.kid not in signers:
            raise _refuse(f"new signing key {rec.kid} did not sign the bundle", "key.announcement_possession")
    for old in current.keys:
        rec = new.key(old.kid)
        if rec is None:
            raise _refuse(f"key {old.kid} was dropped from the bundle", "key.announcement_history")
        same = (rec.use, rec.alg, rec.public, rec.not_before) == (old.use, old.alg, old.public, old.not_before)
        if not same or rec.not_after > old.not_after:
            raise _refuse(f"key {old.kid} was changed, not just retired or revoked", "key.announcement_history")
        if old.revoked_at is not None and rec.revoked_at != old.revoked_at:
            raise _refuse(f"revocation of key {old.kid} was withdrawn or moved", "key.announcement_history")
    _check_tls(current, new)
    return new


def _check_tls(current: KeyBundle, new: KeyBundle) -> None:
    """A new certificate may replace the current one (which may stay pinned for an overlap);
    previous certificates may only be dropped or their overlap shortened, never brought back."""
    if new.tls_certificate != current.tls_certificate:
        try:
            cert_info(new.tls_certificate)
        except DecodeError as e:
            raise _refuse(f"the new TLS certificate is not usable: {e.detail}", "key.announcement_tls") from e
    before = dict(current.tls_previous)
    if new.tls_certificate != current.tls_certificate and (
        new.tls_certificate in before or new.tls_certificate in {p for p, _ in new.tls_previous}
    ):
        raise _refuse("a previous TLS certificate cannot become current again", "key.announcement_tls")
    for pem, until in new.tls_previous:
        if pem == current.tls_certificate and pem != new.tls_certificate:
            continue  # the certificate being replaced: pinned beside the new one for the overlap
        if pem not in before:
            raise _refuse("tls_previous names a certificate that was never current", "key.announcement_tls")
        if until > before[pem]:
            raise _refuse("the overlap of a previous TLS certificate was extended", "key.announcement_tls")
