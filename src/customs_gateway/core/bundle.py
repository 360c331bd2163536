"""Key bundles: an identity's public keys with validity, suites and TLS pin, self-signed.

One administration exports its bundle; the other imports it after comparing the fingerprint
out of band. `PeerKeys` answers the one question the receiver asks (G1): which key, valid at
which time, may have signed this.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
from dataclasses import dataclass, replace
from typing import Any, Final

from .encoding import b64url, format_ts, is_version, json_bytes, json_object, parse_ts, unb64url
from .errors import DecodeError, KeyStateError, SignatureError, SuiteError
from .keys import (
    ALG_ED25519,
    ALG_MLKEM768_X25519,
    ALG_X25519,
    SUITES,
    EncryptionKey,
    SigningKey,
    VerifyKey,
    key_id,
)
from .schemas import refuse_duplicate_keys_in

BUNDLE_FORMAT: Final = "customs-gateway/v1 key-bundle"
USES: Final = ("signing", "encryption", "witness")
STATES: Final = ("active", "retiring", "retired", "revoked")
#: Identities name files (`peers/<identity>.bundle.json`) and are space-separated in the HPKE info
#: (`customs-gateway/v1 FROM TO ID`), so they must be short and free of spaces and slashes.
IDENTITY_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)
_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")
_ALGS_FOR_USE: Final = {
    "signing": (ALG_ED25519,),
    "witness": (ALG_ED25519,),
    "encryption": (ALG_MLKEM768_X25519, ALG_X25519),
}


@dataclass(frozen=True)
class KeyRecord:
    """One public key with its lifecycle: validity window, state and revocation time."""

    kid: str
    use: str
    alg: str
    public: bytes
    not_before: dt.datetime
    not_after: dt.datetime
    state: str = "active"
    revoked_at: dt.datetime | None = None
    revocation_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kid": self.kid,
            "use": self.use,
            "alg": self.alg,
            "public": b64url(self.public),
            "not_before": format_ts(self.not_before),
            "not_after": format_ts(self.not_after),
            "state": self.state,
        }
        if self.revoked_at is not None:
            d["revoked_at"] = format_ts(self.revoked_at)
            d["revocation_reason"] = self.revocation_reason or ""
        return d

    @classmethod
    def from_dict(cls, d: object, *, where: str = "keys[]") -> KeyRecord:
        if not isinstance(d, dict):
            raise DecodeError(f"{where} must be an object", field=where)
        try:
            use, alg, kid, state = d["use"], d["alg"], d["kid"], d.get("state", "active")
            if not isinstance(d["public"], str):
                raise DecodeError(f"{where}.public must be base64url text", field=f"{where}.public")
            public = unb64url(d["public"], field=f"{where}.public")
            nb = parse_ts(d["not_before"], field=f"{where}.not_before")
            na = parse_ts(d["not_after"], field=f"{where}.not_after")
            revoked = d.get("revoked_at")
            rev_at = parse_ts(revoked, field=f"{where}.revoked_at") if revoked is not None else None
            reason = d.get("revocation_reason")
        except KeyError as e:
            raise DecodeError(f"{where} is missing {e.args[0]!r}", field=f"{where}.{e.args[0]}") from e
        if use not in USES or alg not in _ALGS_FOR_USE[use]:
            raise SuiteError(f"{where}: algorithm {alg!r} not allowed for use {use!r}", field=f"{where}.alg")
        if state not in STATES:
            raise DecodeError(f"{where}.state must be one of {', '.join(STATES)}", field=f"{where}.state")
        if key_id(public) != kid:
            raise DecodeError(
                f"{where}.kid does not match its public key", field=f"{where}.kid", code="key.kid_mismatch"
            )
        if reason is not None and not isinstance(reason, str):
            raise DecodeError(f"{where}.revocation_reason must be a string", field=f"{where}.revocation_reason")
        rec = cls(kid, use, alg, public, nb, na, state, rev_at, reason)
        rec.load()  # validate the key bytes now, not on first use
        return rec

    def load(self) -> VerifyKey | EncryptionKey:
        return VerifyKey(self.public) if self.use in ("signing", "witness") else EncryptionKey(self.alg, self.public)

    def valid_at(self, when: dt.datetime) -> str | None:
        """None if the key may be used for something made at `when`, else the refusal code.

        A key revoked at a known time still verifies what was made before that time; a key whose
        state is `revoked` without a time verifies nothing.
        """
        if self.revoked_at is not None and when >= self.revoked_at:
            return "key.revoked"
        if self.state == "revoked" and self.revoked_at is None:
            return "key.revoked"
        if when < self.not_before:
            return "key.not_yet_valid"
        if when > self.not_after:
            return "key.expired"
        return None


#: A bundle pins at most this many earlier TLS certificates (`tls_previous`); a peer refuses more.
MAX_TLS_PREVIOUS = 8


@dataclass(frozen=True)
class KeyBundle:
    """An identity's public keys, suites in preference order, and its pinned TLS certificate."""

    identity: str
    issued_at: dt.datetime
    keys: tuple[KeyRecord, ...]
    suites: tuple[str, ...]
    tls_certificate: str  # PEM; the peer pins it for mutual TLS
    endpoint: str | None = None
    serial: int = 1
    #: Certificates this identity presented before a TLS renewal, each still pinned until its
    #: `until` (the overlap: the peer accepts old and new while both sides switch).
    tls_previous: tuple[tuple[str, dt.datetime], ...] = ()
    #: SHA-256 (hex) of the agreement profile this identity applies (DESIGN §12); absent in
    #: bundles from before profiles, so their bytes stay as they were.
    agreement_profile: str | None = None

    def tls_pins(self, at: dt.datetime) -> tuple[str, ...]:
        """The certificates (PEM) the peer may present at `at`: the current one and any previous
        one whose overlap has not ended."""
        return (self.tls_certificate, *(pem for pem, until in self.tls_previous if at < until))

    def to_bytes(self) -> bytes:
        d: dict[str, Any] = {
            "format": BUNDLE_FORMAT,
            "identity": self.identity,
            "issued_at": format_ts(self.issued_at),
            "serial": self.serial,
            "keys": [k.to_dict() for k in self.keys],
            "suites": list(self.suites),
            "tls_certificate": self.tls_certificate,
        }
        if self.endpoint is not None:
            d["endpoint"] = self.endpoint
        if self.tls_previous:  # absent when empty: bundles from before renewals keep their bytes
            d["tls_previous"] = [{"certificate": pem, "until": format_ts(until)} for pem, until in self.tls_previous]
        if self.agreement_profile is not None:
            d["agreement_profile"] = self.agreement_profile
        return json_bytes(d)

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyBundle:
        d = json_object(data, field="bundle")
        refuse_duplicate_keys_in(data, json_bytes(d), "bundle")  # signed: one reading only (I-JSON)
        if d.get("format") != BUNDLE_FORMAT:
            raise DecodeError("not a customs-gateway key bundle", field="bundle.format")
        try:
            identity, keys, suites, cert = d["identity"], d["keys"], d["suites"], d["tls_certificate"]
            issued = parse_ts(d["issued_at"], field="bundle.issued_at")
        except KeyError as e:
            raise DecodeError(f"bundle is missing {e.args[0]!r}", field=f"bundle.{e.args[0]}") from e
        serial = d.get("serial", 1)
        if not isinstance(identity, str) or not is_valid_identity(identity):
            raise DecodeError(
                "bundle.identity must be 1-64 of A-Z a-z 0-9 . _ - and start with a letter or digit",
                field="bundle.identity",
            )
        if not isinstance(keys, list) or not keys:
            raise DecodeError("bundle.keys must be a non-empty list", field="bundle.keys")
        if not isinstance(suites, list) or not all(isinstance(s, str) for s in suites):
            raise DecodeError("bundle.suites must be a list of strings", field="bundle.suites")
        if not isinstance(cert, str):
            raise DecodeError("bundle.tls_certificate must be PEM text", field="bundle.tls_certificate")
        if not isinstance(serial, int) or isinstance(serial, bool) or serial < 1:
            raise DecodeError("bundle.serial must be a positive integer", field="bundle.serial")
        endpoint = d.get("endpoint")
        if endpoint is not None and not isinstance(endpoint, str):
            raise DecodeError("bundle.endpoint must be a string", field="bundle.endpoint")
        records = tuple(KeyRecord.from_dict(k, where=f"bundle.keys[{i}]") for i, k in enumerate(keys))
        if len({r.kid for r in records}) != len(records):
            raise DecodeError("bundle lists a key twice", field="bundle.keys")
        previous = _tls_previous(d.get("tls_previous", []))
        profile = d.get("agreement_profile")
        if profile is not None and not (isinstance(profile, str) and _SHA256_HEX.fullmatch(profile)):
            raise DecodeError(
                "bundle.agreement_profile must be a SHA-256 in lower-case hex", field="bundle.agreement_profile"
            )
        return cls(identity, issued, records, tuple(suites), cert, endpoint, serial, previous, profile)

    def key(self, kid: str) -> KeyRecord | None:
        for k in self.keys:
            if k.kid == kid:
                return k
        return None

    def with_keys(self, keys: tuple[KeyRecord, ...], issued_at: dt.datetime) -> KeyBundle:
        return replace(self, keys=keys, issued_at=issued_at, serial=self.serial + 1)


@dataclass(frozen=True)
class SignedBundle:
    """A bundle's exact bytes with the signatures over them."""

    bundle_bytes: bytes
    signatures: tuple[tuple[str, bytes], ...]  # (kid, signature)

    @functools.cached_property
    def bundle(self) -> KeyBundle:
        """The bundle its bytes hold, parsed once: the bytes never change, and the delivery
        worker reads it for every request (the TLS certificate to present), 57 us a parse."""
        return KeyBundle.from_bytes(self.bundle_bytes)

    def fingerprint(self) -> str:
        """SHA-256 of the bundle bytes, grouped for reading aloud over the phone."""
        h = hashlib.sha256(self.bundle_bytes).hexdigest().upper()
        return " ".join(h[i : i + 4] for i in range(0, len(h), 4))

    def to_bytes(self) -> bytes:
        return (
            json_bytes(
                {
                    "v": 1,
                    "bundle": b64url(self.bundle_bytes),
                    "signatures": [{"kid": k, "signature": b64url(s)} for k, s in self.signatures],
                }
            )
            + b"\n"
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedBundle:
        d = json_object(data, field="signed bundle")
        refuse_duplicate_keys_in(data.rstrip(), json_bytes(d), "signed_bundle")  # to_bytes ends in "\n"
        if not is_version(d.get("v")):
            raise DecodeError("signed bundle version must be the integer 1", field="signed_bundle.v")
        sigs = d.get("signatures")
        if not isinstance(sigs, list) or not sigs:
            raise DecodeError("signed bundle has no signatures", field="signed_bundle.signatures")
        out: list[tuple[str, bytes]] = []
        for i, s in enumerate(sigs):
            if not isinstance(s, dict) or not isinstance(s.get("kid"), str) or not isinstance(s.get("signature"), str):
                raise DecodeError("signature entries need kid and signature", field=f"signed_bundle.signatures[{i}]")
            out.append((s["kid"], unb64url(s.get("signature", ""), field=f"signed_bundle.signatures[{i}].signature")))
        raw = d.get("bundle")
        if not isinstance(raw, str):
            raise DecodeError("signed bundle lacks the bundle", field="signed_bundle.bundle")
        return cls(unb64url(raw, field="signed_bundle.bundle"), tuple(out))

    def verify_self_signed(self) -> KeyBundle:
        """Every signature must be by a signing key listed in the bundle and valid at issue time."""
        b = self.bundle
        for kid, sig in self.signatures:
            rec = b.key(kid)
            if rec is None or rec.use != "signing":
                raise SignatureError(f"bundle signed by key {kid} that it does not list as a signing key")
            code = rec.valid_at(b.issued_at)
            if code is not None:
                raise KeyStateError(f"bundle signing key {kid} is not valid at issue time", code=code)
            VerifyKey(rec.public).verify("key-bundle", self.bundle_bytes, sig)
        return b


def sign_bundle(bundle: KeyBundle, signers: list[SigningKey]) -> SignedBundle:
    """Sign a bundle with each signer (normally the active signing key; two during rotation)."""
    if not signers:
        raise ValueError("a bundle needs at least one signature")
    data = bundle.to_bytes()
    return SignedBundle(data, tuple((k.kid, k.sign("key-bundle", data)) for k in signers))


class PeerKeys:
    """What we trust of one peer: its key records, answering G1's validity question."""

    def __init__(self, bundle: KeyBundle) -> None:
        self.bundle = bundle
        self.identity = bundle.identity
        self._by_kid = {k.kid: k for k in bundle.keys}
        self._loaded: dict[str, VerifyKey | EncryptionKey] = {k.kid: k.load() for k in bundle.keys}

    def verify_key(self, kid: str, at: dt.datetime, *, use: str = "signing") -> VerifyKey:
        """The peer's key `kid` if it has `use` and is valid at `at`; raises KeyStateError."""
        rec = self._by_kid.get(kid)
        if rec is None:
            raise KeyStateError(f"key {kid} of {self.identity} is not known", code="key.unknown", field="sig_kid")
        if rec.use != use:
            raise KeyStateError(f"key {kid} is not a {use} key", code="key.wrong_use", field="sig_kid")
        code = rec.valid_at(at)
        if code is not None:
            raise KeyStateError(
                f"key {kid} of {self.identity} is not valid at {format_ts(at)}", code=code, field="sig_kid"
            )
        key = self._loaded[kid]
        assert isinstance(key, VerifyKey)
        return key

    def encryption_key(self, at: dt.datetime, supported: tuple[str, ...] = tuple(SUITES)) -> EncryptionKey:
        """The peer's newest valid encryption key in the best suite both sides support."""
        candidates = [
            r for r in self.bundle.keys if r.use == "encryption" and r.state == "active" and r.valid_at(at) is None
        ]
        for suite in self.bundle.suites:
            if suite not in supported:
                continue
            alg = SUITES[suite][0]
            best = sorted((r for r in candidates if r.alg == alg), key=lambda r: r.not_before, reverse=True)
            if best:
                key = self._loaded[best[0].kid]
                assert isinstance(key, EncryptionKey)
                return key
        raise SuiteError(
            f"{self.identity} announces no usable encryption key in a shared suite", code="suite.none_shared"
        )

    def records(self) -> tuple[KeyRecord, ...]:
        return self.bundle.keys


def _tls_previous(raw: object) -> tuple[tuple[str, dt.datetime], ...]:
    if not isinstance(raw, list) or len(raw) > MAX_TLS_PREVIOUS:
        raise DecodeError(
            f"bundle.tls_previous must be a list of at most {MAX_TLS_PREVIOUS} entries", field="bundle.tls_previous"
        )
    out: list[tuple[str, dt.datetime]] = []
    for i, e in enumerate(raw):
        where = f"bundle.tls_previous[{i}]"
        if not isinstance(e, dict) or set(e) != {"certificate", "until"} or not isinstance(e["certificate"], str):
            raise DecodeError(f"{where} must be {{certificate: PEM, until: time}}", field=where)
        out.append((e["certificate"], parse_ts(e["until"], field=f"{where}.until")))
    return tuple(out)


def is_valid_identity(name: str) -> bool:
    """Whether `name` can be an administration's identity (see IDENTITY_RE)."""
    return IDENTITY_RE.fullmatch(name) is not None
