"""Write tests/vectors/tls-renewal.json: a TLS certificate renewal announced in a key bundle.

Everything is deterministic: keys come from SHA-256 of fixed labels, Ed25519 and the ECDSA
possession proof (RFC 6979) are deterministic, and the certificates are signed deterministically
with fixed serials. `valid` holds the current bundle, the renewed signed bundle and the proof,
which `check_update` and `check_possession` must accept; each `invalid` case names the GatewayError
code the peer must answer with.

Usage: .venv/bin/python scripts/make_tls_vectors.py [--check]
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from customs_gateway.core.bundle import KeyBundle, KeyRecord, sign_bundle
from customs_gateway.core.encoding import b64url
from customs_gateway.core.keys import ALG_ED25519, ALG_X25519, SUITE_X25519, DecryptionKey, SigningKey
from customs_gateway.core.rotation import renew_tls
from customs_gateway.core.tlscert import cert_info, possession_proof
from customs_gateway.service.tls import make_self_signed

OUT = Path(__file__).resolve().parent.parent / "tests" / "vectors" / "tls-renewal.json"
UTC = dt.UTC
T0 = dt.datetime(2026, 1, 1, tzinfo=UTC)
T1 = dt.datetime(2026, 11, 1, tzinfo=UTC)
OVERLAP_END = T1 + dt.timedelta(days=8)
_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def seed(label: str) -> bytes:
    return hashlib.sha256(f"customs-gateway test vector {label}".encode()).digest()


def p256(label: str) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(seed(label), "big") % (_ORDER - 1) + 1, ec.SECP256R1())


def cert(label: str, when: dt.datetime, days: int, serial: int) -> str:
    return make_self_signed(
        "US-CBP", ["127.0.0.1", "gateway.cbp.example"], when, days, p256(label), serial=serial
    ).decode()


def build() -> dict[str, Any]:
    signing = SigningKey(seed("us signing"))
    witness = SigningKey(seed("us witness"))
    enc = DecryptionKey(ALG_X25519, seed("us encryption"))
    until = T0 + dt.timedelta(days=400)
    records = (
        KeyRecord(signing.kid, "signing", ALG_ED25519, signing.public_raw, T0, until),
        KeyRecord(enc.kid, "encryption", ALG_X25519, enc.public.raw, T0, until),
        KeyRecord(witness.kid, "witness", ALG_ED25519, witness.public_raw, T0, until),
    )
    old_cert = cert("us tls 1", T0, 400, 1)
    new_cert = cert("us tls 2", T1, 730, 2)
    current = KeyBundle("US-CBP", T0, records, (SUITE_X25519,), old_cert)
    renewed = renew_tls(current, new_cert, OVERLAP_END, T1)
    signed = sign_bundle(renewed, [signing])
    proof = possession_proof(p256("us tls 2"), signed.bundle_bytes)

    def resigned(b: KeyBundle) -> str:
        return b64url(sign_bundle(b, [signing]).to_bytes())

    invalid = [
        {
            "comment": "no proof",
            "bundle": b64url(signed.to_bytes()),
            "proof": None,
            "code": "key.announcement_possession",
        },
        {
            "comment": "proof by the old certificate's key",
            "bundle": b64url(signed.to_bytes()),
            "proof": b64url(possession_proof(p256("us tls 1"), signed.bundle_bytes)),
            "code": "key.announcement_possession",
        },
        {
            "comment": "proof over other bytes (a different bundle)",
            "bundle": b64url(signed.to_bytes()),
            "proof": b64url(possession_proof(p256("us tls 2"), current.to_bytes())),
            "code": "key.announcement_possession",
        },
        {
            "comment": "proof truncated",
            "bundle": b64url(signed.to_bytes()),
            "proof": b64url(proof[:-1]),
            "code": "key.announcement_possession",
        },
        {
            "comment": "overlap of a previous certificate extended later",
            "previous": b64url(signed.to_bytes()),
            "bundle": resigned(
                dataclasses.replace(renewed, serial=3, tls_previous=((old_cert, OVERLAP_END + dt.timedelta(days=1)),))
            ),
            "proof": None,
            "code": "key.announcement_tls",
        },
        {
            "comment": "the replaced certificate made current again",
            "previous": b64url(signed.to_bytes()),
            "bundle": resigned(
                dataclasses.replace(renewed, serial=3, tls_certificate=old_cert, tls_previous=((new_cert, T1),))
            ),
            "proof": b64url(possession_proof(p256("us tls 1"), b"")),
            "code": "key.announcement_tls",
        },
        {
            "comment": "new certificate is not a certificate",
            "bundle": resigned(
                dataclasses.replace(
                    renewed, tls_certificate="-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"
                )
            ),
            "proof": None,
            "code": "key.announcement_tls",
        },
    ]
    return {
        "description": "TLS certificate renewal in a key bundle (DESIGN §11, decision 0008). proof = deterministic "
        "ECDSA P-256/SHA-256 by the new certificate's key over 'customs-gateway/v1 tls-possession\\n' || bundle bytes.",
        "valid": {
            "now": "2026-11-01T00:00:00.000Z",
            "current_bundle": b64url(sign_bundle(current, [signing]).to_bytes()),
            "renewed_bundle": b64url(signed.to_bytes()),
            "proof": b64url(proof),
            "old_certificate_sha256": cert_info(old_cert).fingerprint,
            "new_certificate_sha256": cert_info(new_cert).fingerprint,
            "overlap_until": "2026-11-09T00:00:00.000Z",
        },
        "invalid": invalid,
    }


def main() -> int:
    text = json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
    if "--check" in sys.argv:
        return 0 if OUT.read_text(encoding="utf-8") == text else 1
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
