"""TLS certificates as the key bundle carries them: identity, validity, proof of possession.

Peer TLS is pinned to exact certificates named in the bundle (`KeyBundle.tls_pins`), so the
gateway, not a CA, decides which certificate is acceptable and until when: a pinned certificate
counts only inside its own X.509 validity, read against the gateway's (injectable) clock. A
renewal announces a new certificate in-band; `possession_proof` shows that the announcer holds
its private key (an ECDSA P-256 signature over the new bundle's exact bytes, domain-separated).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .errors import DecodeError, KeyStateError, SignatureError

#: Prefix of what a new TLS key signs to prove possession when it is announced.
POSSESSION_CONTEXT: Final = b"customs-gateway/v1 tls-possession\n"


@dataclass(frozen=True)
class CertInfo:
    """What the gateway needs of one pinned certificate."""

    fingerprint: str  # SHA-256 of the DER, lower-case hex (what a handshake shows)
    not_before: dt.datetime
    not_after: dt.datetime
    public_key: ec.EllipticCurvePublicKey

    def valid_at(self, at: dt.datetime) -> bool:
        return self.not_before <= at <= self.not_after


@functools.lru_cache(maxsize=64)
def cert_info(pem: str) -> CertInfo:
    """Parse a PEM certificate (cached: bundles are re-read often); DecodeError if it is not one."""
    try:
        cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as e:
        raise DecodeError("not a PEM X.509 certificate", field="bundle.tls_certificate") from e
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise DecodeError("the TLS certificate must carry an ECDSA P-256 key", field="bundle.tls_certificate")
    der = cert.public_bytes(serialization.Encoding.DER)
    return CertInfo(hashlib.sha256(der).hexdigest(), cert.not_valid_before_utc, cert.not_valid_after_utc, key)


NOT_A_CERTIFICATE: Final = "(not a valid certificate)"


def describe(pem: str) -> tuple[str, dt.datetime | None]:
    """(fingerprint, end of validity) of a bundle's certificate for people and listings; a text
    that is not a usable certificate says so instead of a fingerprint."""
    try:
        info = cert_info(pem)
    except DecodeError:
        return NOT_A_CERTIFICATE, None
    return info.fingerprint, info.not_after


def pinned_fingerprints(pins: tuple[str, ...], at: dt.datetime) -> frozenset[str]:
    """Fingerprints of the pinned certificates that are inside their X.509 validity at `at`."""
    out: set[str] = set()
    for pem in pins:
        try:
            info = cert_info(pem)
        except DecodeError:
            continue
        if info.valid_at(at):
            out.add(info.fingerprint)
    return frozenset(out)


def possession_proof(private_key: ec.EllipticCurvePrivateKey, bundle_bytes: bytes) -> bytes:
    """The new TLS key's signature over the bundle that announces its certificate."""
    # Deterministic (RFC 6979): the same bundle and key give the same proof (test vectors).
    return private_key.sign(POSSESSION_CONTEXT + bundle_bytes, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))


def check_possession(cert_pem: str, bundle_bytes: bytes, proof: bytes | None) -> None:
    """Raise KeyStateError unless `proof` is the announced certificate's key signing the bundle."""
    if proof is None:
        raise KeyStateError(
            "a new TLS certificate must come with proof that its key signed the bundle",
            code="key.announcement_possession",
            field="body.tls_proof",
            status=403,
        )
    try:
        cert_info(cert_pem).public_key.verify(proof, POSSESSION_CONTEXT + bundle_bytes, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as e:
        raise SignatureError(
            "the TLS possession proof does not verify under the new certificate's key",
            code="key.announcement_possession",
            field="body.tls_proof",
        ) from e
