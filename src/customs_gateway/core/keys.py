"""Key material: Ed25519 signing keys, HPKE encryption keys, key ids and domain-separated signing.

Private keys are built from seeds so that tests and vectors are deterministic; key ids are the
first 16 bytes of SHA-256 over the raw public key, in hex (DESIGN §4). Every signature is over
`customs-gateway/v1 <label>\\n` followed by exact bytes, so a signature made for one purpose can
never be replayed as another.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

import nacl.exceptions
import nacl.signing
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from .errors import DecryptError, KeyStateError, SignatureError, SuiteError

RandBytes = Callable[[int], bytes]

DOMAIN_PREFIX: Final = b"customs-gateway/v1 "

#: Every label a signature may be made for; `domain()` refuses anything else.
LABELS: Final = frozenset(
    {"envelope", "document", "receipt", "refusal", "key-bundle", "key-announcement", "audit-entry", "peer-state"}
)

ALG_ED25519: Final = "ed25519"
ALG_MLKEM768_X25519: Final = "mlkem768-x25519"
ALG_X25519: Final = "x25519"

SUITE_HYBRID: Final = "mlkem768x25519-hkdfsha256-chacha20poly1305"
SUITE_X25519: Final = "x25519-hkdfsha256-chacha20poly1305"

#: Suite name -> (encryption key algorithm, HPKE suite). Order is preference order.
SUITES: Final[dict[str, tuple[str, hpke.Suite]]] = {
    SUITE_HYBRID: (
        ALG_MLKEM768_X25519,
        hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305),
    ),
    SUITE_X25519: (
        ALG_X25519,
        hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305),
    ),
}
SUITE_FOR_ALG: Final = {alg: name for name, (alg, _) in SUITES.items()}

_MLKEM768_PUB_LEN: Final = 1184
_MLKEM_SEED_LEN: Final = 64
_X25519_LEN: Final = 32


def domain(label: str) -> bytes:
    """The domain-separation prefix for one signature purpose."""
    if label not in LABELS:
        raise ValueError(f"unknown signature label {label!r}")
    return DOMAIN_PREFIX + label.encode("ascii") + b"\n"


def key_id(raw_public: bytes) -> str:
    """First 16 bytes of SHA-256 over the raw public key, hex (32 characters)."""
    return hashlib.sha256(raw_public).digest()[:16].hex()


# --- signing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyKey:
    """An Ed25519 public key, known by its key id."""

    raw: bytes
    kid: str = field(init=False)
    _nacl: nacl.signing.VerifyKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise SuiteError("Ed25519 public key must be 32 bytes", code="key.malformed")
        object.__setattr__(self, "kid", key_id(self.raw))
        object.__setattr__(self, "_nacl", nacl.signing.VerifyKey(self.raw))

    def verify(self, label: str, message: bytes, signature: bytes) -> None:
        """Verify a domain-separated signature; raises SignatureError naming the label."""
        if len(signature) != 64:
            raise SignatureError(f"{label} signature must be 64 bytes", field="signature")
        try:
            self._nacl.verify(domain(label) + message, signature)
        except nacl.exceptions.BadSignatureError as e:
            raise SignatureError(f"{label} signature does not verify under key {self.kid}") from e


class SigningKey:
    """An Ed25519 private key (from a 32-byte seed). Never printed, never logged."""

    __slots__ = ("_nacl", "public", "seed")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("Ed25519 seed must be 32 bytes")
        self.seed = seed
        self._nacl = nacl.signing.SigningKey(seed)
        self.public = VerifyKey(bytes(self._nacl.verify_key))

    @classmethod
    def generate(cls, randbytes: RandBytes = os.urandom) -> SigningKey:
        return cls(randbytes(32))

    @property
    def kid(self) -> str:
        return self.public.kid

    def sign(self, label: str, message: bytes) -> bytes:
        """Sign `domain(label) || message`."""
        return bytes(self._nacl.sign(domain(label) + message).signature)

    def sign_raw(self, message: bytes) -> bytes:
        """Sign exact bytes with no domain prefix: only for formats that define their own
        (C2SP signed notes and cosignatures)."""
        return bytes(self._nacl.sign(message).signature)

    @property
    def public_raw(self) -> bytes:
        return self.public.raw

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r})"


# --- encryption ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EncryptionKey:
    """A recipient's HPKE public key (hybrid ML-KEM-768+X25519 or classic X25519)."""

    alg: str
    raw: bytes
    kid: str = field(init=False)
    _key: object = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kid", key_id(self.raw))
        object.__setattr__(self, "_key", _load_public(self.alg, self.raw))

    @property
    def suite_name(self) -> str:
        return SUITE_FOR_ALG[self.alg]

    def seal(self, plaintext: bytes, info: bytes) -> bytes:
        """HPKE base-mode single-shot encryption: returns enc || ct."""
        _, suite = SUITES[self.suite_name]
        return suite.encrypt(plaintext, self._key, info=info)  # type: ignore[arg-type]


def _load_public(alg: str, raw: bytes) -> object:
    try:
        if alg == ALG_MLKEM768_X25519:
            if len(raw) != _MLKEM768_PUB_LEN + _X25519_LEN:
                raise ValueError("length")
            return hpke.MLKEM768X25519PublicKey(
                mlkem.MLKEM768PublicKey.from_public_bytes(raw[:_MLKEM768_PUB_LEN]),
                x25519.X25519PublicKey.from_public_bytes(raw[_MLKEM768_PUB_LEN:]),
            )
        if alg == ALG_X25519:
            return x25519.X25519PublicKey.from_public_bytes(raw)
    except ValueError as e:
        raise SuiteError(f"malformed {alg} public key", code="key.malformed") from e
    raise SuiteError(f"unsupported encryption algorithm {alg!r}", code="suite.unsupported")


class DecryptionKey:
    """An HPKE private key from its seed: 64-byte ML-KEM seed || 32-byte X25519 key, or 32 bytes."""

    __slots__ = ("_key", "alg", "public", "seed")

    def __init__(self, alg: str, seed: bytes) -> None:
        self.alg = alg
        self.seed = seed
        if alg == ALG_MLKEM768_X25519:
            if len(seed) != _MLKEM_SEED_LEN + _X25519_LEN:
                raise ValueError("hybrid seed must be 96 bytes")
            m = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed[:_MLKEM_SEED_LEN])
            x = x25519.X25519PrivateKey.from_private_bytes(seed[_MLKEM_SEED_LEN:])
            self._key: object = hpke.MLKEM768X25519PrivateKey(m, x)
            raw = m.public_key().public_bytes_raw() + x.public_key().public_bytes_raw()
        elif alg == ALG_X25519:
            if len(seed) != _X25519_LEN:
                raise ValueError("x25519 seed must be 32 bytes")
            xk = x25519.X25519PrivateKey.from_private_bytes(seed)
            self._key = xk
            raw = xk.public_key().public_bytes_raw()
        else:
            raise SuiteError(f"unsupported encryption algorithm {alg!r}", code="suite.unsupported")
        self.public = EncryptionKey(alg, raw)

    @classmethod
    def generate(cls, alg: str = ALG_MLKEM768_X25519, randbytes: RandBytes = os.urandom) -> DecryptionKey:
        n = _MLKEM_SEED_LEN + _X25519_LEN if alg == ALG_MLKEM768_X25519 else _X25519_LEN
        return cls(alg, randbytes(n))

    @property
    def kid(self) -> str:
        return self.public.kid

    def open(self, ciphertext: bytes, info: bytes) -> bytes:
        """HPKE open; any failure (tamper, wrong key, wrong info, truncation) is DecryptError."""
        _, suite = SUITES[self.public.suite_name]
        try:
            return suite.decrypt(ciphertext, self._key, info=info)  # type: ignore[arg-type]
        except (InvalidTag, ValueError) as e:
            raise DecryptError("HPKE open failed: wrong key, wrong context or modified ciphertext") from e

    def __repr__(self) -> str:
        return f"DecryptionKey(alg={self.alg!r}, kid={self.kid!r})"


def held_decryption_key(keys: Mapping[str, DecryptionKey], kid: str, holder: str) -> DecryptionKey:
    """The HPKE private key `kid` among `keys`; KeyStateError (`key.unknown`) if `holder` does not
    hold it (any more): what an envelope naming another or a destroyed key gets."""
    key = keys.get(kid)
    if key is None:
        raise KeyStateError(f"encryption key {kid} is not held by {holder}", code="key.unknown", field="header.enc_kid")
    return key
