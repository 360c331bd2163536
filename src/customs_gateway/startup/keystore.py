"""The key store: one administration's identity on disk (encrypted private keys, own bundle, TLS).

Layout (all under the configured directories)::

    keys/<kid>.key      private keys (signing, encryption, witness) and the store key
                        (`core.storekey`), argon2id key files, mode 0600
    keys/bundle.json    own signed key bundle (public)
    tls/key.key         TLS private key (ECDSA P-256, PKCS#8 DER as the "seed"), same key-file format
    tls/cert.pem        self-signed TLS certificate (public; pinned by the peer through the bundle)
    tls/next.key, tls/next.pem
                        a renewed TLS key and certificate, until the peer has receipted them

Every file is written atomically (temporary file in the same directory, fsync, rename, fsync of
the directory). A passphrase change stages every re-encrypted file, records them in a journal
(the commit point) and then renames them; `load` finishes an interrupted change, so the store never
mixes two passphrases.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import secrets
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..core.bundle import KeyBundle, KeyRecord, PeerKeys, SignedBundle, is_valid_identity, sign_bundle
from ..core.encoding import json_bytes, json_object
from ..core.errors import (
    ConfigError,
    Conflict,
    DecodeError,
    GatewayError,
    KeyFileError,
    KeyStateError,
    SuiteError,
)
from ..core.keyfile import (
    DEFAULT_MEMLIMIT,
    DEFAULT_OPSLIMIT,
    KeyFileMeta,
    open_private_key,
    seal_private_key,
)
from ..core.keys import (
    ALG_ED25519,
    ALG_MLKEM768_X25519,
    ALG_X25519,
    SUITE_FOR_ALG,
    DecryptionKey,
    RandBytes,
    SigningKey,
    VerifyKey,
    held_decryption_key,
    key_id,
)
from ..core.rotation import expiry
from ..core.storekey import ALG_STORE, USE_STORE, StoreKey
from ..core.tlscert import cert_info
from ..service import tls
from .agreement import builtin_profile

USE_SIGNING: Final = "signing"
USE_ENCRYPTION: Final = "encryption"
USE_WITNESS: Final = "witness"
USE_TLS: Final = "tls"
ALG_ECDSA_P256: Final = "ecdsa-p256"

BUNDLE_FILE: Final = "bundle.json"
SERVE_LOCK: Final = "serve.lock"  # flock held by a running gateway (`KeyStore.hold_serve_lock`)
TLS_CERT_FILE: Final = "cert.pem"
TLS_KEY_FILE: Final = "key.key"
TLS_NEXT_CERT_FILE: Final = "next.pem"  # a renewed certificate until the peer has receipted it
TLS_NEXT_KEY_FILE: Final = "next.key"
_JOURNAL: Final = ".passphrase-change.json"
_KEY_SUFFIX: Final = ".key"
_P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_PRIVATE: Final = 0o600
_PUBLIC: Final = 0o644


# --- the loaded identity -------------------------------------------------------------------


@dataclass
class Identity:
    """One administration's loaded keys: private keys by kid, own bundle, TLS material."""

    name: str
    signing: dict[str, SigningKey]
    decryption: dict[str, DecryptionKey]
    witnesses: dict[str, SigningKey]
    bundle: SignedBundle = field(repr=False)
    #: TLS private keys (PEM, decrypted, in memory only) by the certificate PEM of the bundle.
    tls: dict[str, bytes] = field(repr=False)
    #: Keys (kids; for TLS the certificate fingerprint) announced to the peer but not yet
    #: receipted: never used until then (signing, witness) or never presented (TLS).
    pending: set[str] = field(default_factory=set)
    #: The local secret for what the gateway keeps about its own data (never sent to the peer).
    store_key: StoreKey | None = field(default=None, repr=False)
    _public: tuple[bytes, PeerKeys] | None = field(default=None, init=False, repr=False, compare=False)

    def public_keys(self) -> PeerKeys:
        """Our own bundle as the peer sees it."""
        if self._public is None or self._public[0] is not self.bundle.bundle_bytes:
            self._public = (self.bundle.bundle_bytes, PeerKeys(self.bundle.bundle))
        return self._public[1]

    def _newest_usable(self, use: str, held: dict[str, SigningKey], at: dt.datetime | None) -> SigningKey | None:
        usable = [
            r
            for r in self.public_keys().records()
            if r.use == use
            and (at is None or r.valid_at(at) is None)
            and r.kid in held
            and r.kid not in self.pending
            and r.state in ("active", "retiring")
        ]
        candidates = [r for r in usable if r.state == "active"] or usable
        return held[max(candidates, key=lambda r: r.not_before).kid] if candidates else None

    def active_signing_key(self, at: dt.datetime) -> SigningKey:
        """The newest active signing key valid at `at` whose private key is loaded and whose
        announcement the peer has receipted; during a rotation, the retiring key until then."""
        key = self._newest_usable(USE_SIGNING, self.signing, at)
        if key is None:
            raise KeyStateError(f"{self.name} has no active signing key valid now", code="key.no_active_signing")
        return key

    def active_witness_key(self, at: dt.datetime) -> SigningKey:
        """The witness key to cosign with at `at` (as `active_signing_key`, for witness keys)."""
        key = self._newest_usable(USE_WITNESS, self.witnesses, at)
        if key is None:
            raise KeyStateError(f"{self.name} has no witness key valid now", code="key.no_active_witness")
        return key

    @property
    def witness(self) -> SigningKey:
        """The newest usable witness key, whatever the time (for tools and tests)."""
        key = self._newest_usable(USE_WITNESS, self.witnesses, None)
        assert key is not None, "the key store loads at least one witness key"
        return key

    def presented_tls(self) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) to present to the peer: the bundle's current certificate
        once the peer has receipted it, else the newest previous one we still hold."""
        b = self.bundle.bundle
        for pem in (b.tls_certificate, *reversed([p for p, _ in b.tls_previous])):
            key = self.tls.get(pem)
            if key is not None and cert_info(pem).fingerprint not in self.pending:
                return pem.encode("ascii"), key
        pem = b.tls_certificate
        if pem in self.tls:  # a pending certificate is still better than none
            return pem.encode("ascii"), self.tls[pem]
        raise KeyStateError(f"{self.name} holds no key for a certificate of its bundle", code="keyfile.tls_mismatch")

    def expiry(self) -> dict[str, dt.datetime]:
        """When each key kind, and the certificate presented, stops working unless renewed."""
        try:
            presented: str | None = self.tls_cert_pem.decode("ascii")
        except GatewayError:
            presented = None
        return expiry(self.bundle.bundle, presented)

    @property
    def tls_cert_pem(self) -> bytes:
        return self.presented_tls()[0]

    @property
    def tls_key_pem(self) -> bytes:
        return self.presented_tls()[1]

    def decryption_key(self, kid: str) -> DecryptionKey:
        """Our HPKE private key `kid`; raises KeyStateError if we do not hold it (any more)."""
        return held_decryption_key(self.decryption, kid, self.name)

    def verify_key(self, kid: str, at: dt.datetime) -> VerifyKey:
        """One of our own public signing keys, valid at `at` (as PeerKeys.verify_key)."""
        return self.public_keys().verify_key(kid, at)


# --- files ---------------------------------------------------------------------------------


def fsync_dir(path: Path) -> None:
    """Make a directory's entries durable (after a create, rename or unlink in it)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _stage(path: Path, data: bytes, mode: int) -> Path:
    """Write `data` to a new temporary file next to `path` (created with `mode`) and fsync it."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        os.fchmod(fd, mode)  # exact mode whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def write_atomic(path: Path, data: bytes, mode: int = _PRIVATE) -> None:
    """Replace `path` with `data` atomically and durably; the file never exists with another mode."""
    tmp = _stage(path, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def create_exclusive(path: Path, data: bytes, mode: int = _PRIVATE) -> bool:
    """Create `path` holding `data`, whole and durable, only if it does not exist yet (a hard link
    of a staged file: never a partial file, and of two processes creating it at once exactly one
    wins). False if it already existed (then it is left as it was)."""
    tmp = _stage(path, data, mode)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return True


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as e:
        raise KeyFileError(f"{what} {path} does not exist", code="keyfile.missing", field=str(path)) from e
    except OSError as e:
        raise KeyFileError(f"{what} {path} cannot be read: {e.strerror}", code="keyfile.unreadable") from e


def _in_file(e: GatewayError, path: Path) -> GatewayError:
    """The same refusal, with the file named in front of its detail."""
    return type(e)(f"{path}: {e.detail}", code=e.code, field=e.field)


def read_signed_bundle(path: Path) -> SignedBundle:
    """Read a signed bundle file (not yet verified); errors name the file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise ConfigError(f"key bundle {path} does not exist", code="bundle.missing", field=str(path)) from e
    except OSError as e:
        raise ConfigError(f"key bundle {path} cannot be read: {e.strerror}", code="bundle.unreadable") from e
    try:
        return SignedBundle.from_bytes(data)
    except GatewayError as e:
        raise _in_file(e, path) from e


def _verified(signed: SignedBundle, path: Path) -> KeyBundle:
    try:
        return signed.verify_self_signed()
    except GatewayError as e:
        raise _in_file(e, path) from e


def load_peer(path: Path) -> PeerKeys:
    """The peer's keys from its imported bundle file, self-signature checked."""
    return PeerKeys(_verified(read_signed_bundle(path), path))


def import_peer_bundle(
    data: bytes, dest: Path, *, own_identity: str | None = None, replace: bool = False
) -> SignedBundle:
    """Verify a peer's signed bundle and store it at `dest` (public, mode 0644).

    Refuses (Conflict) our own identity, a file at `dest` for another identity, or an older serial
    than the one stored, unless `replace` is set. The fingerprint must still be compared out of band.
    """
    signed = SignedBundle.from_bytes(data)
    bundle = signed.verify_self_signed()
    if own_identity is not None and bundle.identity == own_identity:
        raise Conflict(
            f"this bundle is {own_identity}'s own bundle, not the peer's",
            code="bundle.own_identity",
            field="identity",
        )
    if dest.exists() and not replace:
        current = _verified(read_signed_bundle(dest), dest)
        if current.identity != bundle.identity:
            raise Conflict(
                f"{dest} holds the bundle of {current.identity}, not {bundle.identity}; not replacing it",
                code="bundle.identity_changed",
                field="identity",
            )
        if bundle.serial < current.serial:
            raise Conflict(
                f"bundle serial {bundle.serial} is older than the stored serial {current.serial}",
                code="bundle.rollback",
                field="serial",
            )
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(dest, signed.to_bytes(), _PUBLIC)
    return signed


# --- TLS key -------------------------------------------------------------------------------


def _p256_from(randbytes: RandBytes) -> ec.EllipticCurvePrivateKey:
    # 384 random bits reduced modulo the group order: bias below 2^-128.
    scalar = int.from_bytes(randbytes(48), "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def _tls_kid(key: ec.EllipticCurvePrivateKey) -> str:
    point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return key_id(point)


def _tls_key_from_der(der: bytes, path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise KeyFileError(f"{path}: not a PKCS#8 private key", code="keyfile.malformed") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyFileError(f"{path}: TLS key must be ECDSA P-256", code="keyfile.malformed")
    return key


def new_tls_key(randbytes: RandBytes) -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 TLS key from the injected randomness."""
    return _p256_from(randbytes)


def tls_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A TLS private key as unencrypted PKCS#8 PEM (kept in memory only)."""
    return _pem(key)


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


# --- the store -----------------------------------------------------------------------------

_Loaded = SigningKey | DecryptionKey | StoreKey | ec.EllipticCurvePrivateKey


class KeyStore:
    """Reads and writes one identity's key files; the only code that touches them."""

    def __init__(self, keys_dir: Path, tls_dir: Path) -> None:
        self.keys_dir = Path(keys_dir)
        self.tls_dir = Path(tls_dir)

    @property
    def bundle_path(self) -> Path:
        return self.keys_dir / BUNDLE_FILE

    @property
    def lock_path(self) -> Path:
        return self.keys_dir / SERVE_LOCK

    def hold_serve_lock(self) -> int:
        """Mark these keys as in use by a running gateway until the returned descriptor is
        closed (or the process dies): a shared `flock`, so replicas on one home may share it and
        a crash never leaves it held. Raises KeyStateError while the keys are being rewritten."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            raise KeyStateError(
                f"the keys in {self.keys_dir} are being changed (keys passphrase): try again when it is done",
                code="keys.in_use",
                status=409,
            ) from e
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    def running_pid(self) -> int | None:
        """The pid of a gateway running with these keys, or None when none is."""
        if not self.lock_path.exists():
            return None
        fd = os.open(self.lock_path, os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pids = self.lock_path.read_text(encoding="ascii", errors="replace").split()
                return int(pids[-1]) if pids and pids[-1].isdigit() else -1
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    @property
    def cert_path(self) -> Path:
        return self.tls_dir / TLS_CERT_FILE

    @property
    def tls_key_path(self) -> Path:
        return self.tls_dir / TLS_KEY_FILE

    @property
    def _tls_key_paths(self) -> list[Path]:
        nxt = self.tls_dir / TLS_NEXT_KEY_FILE
        return [self.tls_key_path, nxt] if nxt.exists() else [self.tls_key_path]

    def _key_files(self) -> list[Path]:
        if not self.keys_dir.is_dir():
            return []
        return sorted(p for p in self.keys_dir.glob(f"*{_KEY_SUFFIX}") if not p.name.startswith("."))

    def exists(self) -> bool:
        """Whether any part of an identity is already here."""
        return (
            self.bundle_path.exists()
            or self.tls_key_path.exists()
            or self.cert_path.exists()
            or bool(self._key_files())
        )

    def permission_problems(self) -> list[Path]:
        """Private key files that group or others may read (worth a warning at start-up)."""
        files = [*self._key_files(), self.tls_key_path, self.tls_dir / TLS_NEXT_KEY_FILE]
        return [p for p in files if p.exists() and p.stat().st_mode & 0o077]

    def read_bundle(self) -> SignedBundle:
        """Our own signed bundle (public; no passphrase needed)."""
        return read_signed_bundle(self.bundle_path)

    # -- create -------------------------------------------------------------------------

    def create(
        self,
        identity: str,
        passphrase: bytes,
        *,
        hosts: list[str],
        now: dt.datetime,
        validity_days: int = 730,
        endpoint: str | None = None,
        enc_algs: tuple[str, ...] = (ALG_MLKEM768_X25519, ALG_X25519),
        randbytes: RandBytes = os.urandom,
        opslimit: int = DEFAULT_OPSLIMIT,
        memlimit: int = DEFAULT_MEMLIMIT,
        agreement_profile: str | None = None,
    ) -> Identity:
        """Generate a new identity and write it; refuses (Conflict) if one exists here.

        `agreement_profile` is the SHA-256 of the profile the bundle states (default: the worked
        example's, shipped with the software, which a configuration without a profile loads).

        Keys: one Ed25519 signing key, one HPKE key per `enc_algs` entry (suites announced in that
        order), one Ed25519 witness key, an ECDSA P-256 TLS key with a self-signed certificate.
        """
        if self.exists():
            raise Conflict(
                f"an identity already exists in {self.keys_dir} / {self.tls_dir}; refusing to overwrite it",
                code="keystore.exists",
            )
        if not is_valid_identity(identity):
            raise ConfigError("identity must be 1-64 characters of A-Z a-z 0-9 . _ - (e.g. US-CBP)", field="identity")
        if validity_days < 1:
            raise ConfigError("validity must be at least one day", field="validity_days")
        if not enc_algs or len(set(enc_algs)) != len(enc_algs) or any(a not in SUITE_FOR_ALG for a in enc_algs):
            raise SuiteError(f"encryption algorithms must be distinct, from {', '.join(SUITE_FOR_ALG)}")
        if not passphrase:
            raise KeyFileError("passphrase must not be empty", code="keyfile.passphrase_empty", field="passphrase")
        now = now.astimezone(dt.UTC).replace(microsecond=0)
        until = now + dt.timedelta(days=validity_days)

        signing = SigningKey.generate(randbytes)
        decryption = [DecryptionKey.generate(alg, randbytes) for alg in enc_algs]
        witness = SigningKey.generate(randbytes)
        tls_key = _p256_from(randbytes)
        serial = int.from_bytes(randbytes(16), "big") >> 1 or 1
        cert_pem = tls.make_self_signed(identity, hosts, now, validity_days, tls_key, serial=serial)

        records = (
            KeyRecord(signing.kid, USE_SIGNING, ALG_ED25519, signing.public_raw, now, until),
            *(KeyRecord(d.kid, USE_ENCRYPTION, d.alg, d.public.raw, now, until) for d in decryption),
            KeyRecord(witness.kid, USE_WITNESS, ALG_ED25519, witness.public_raw, now, until),
        )
        suites = tuple(SUITE_FOR_ALG[a] for a in enc_algs)
        profile_sha = agreement_profile if agreement_profile is not None else builtin_profile().sha256
        bundle = KeyBundle(
            identity, now, records, suites, cert_pem.decode("ascii"), endpoint, serial=1, agreement_profile=profile_sha
        )
        signed = sign_bundle(bundle, [signing])

        seal = _sealer(passphrase, opslimit, memlimit, randbytes)
        key_files = [
            (signing.kid, USE_SIGNING, ALG_ED25519, signing.seed),
            *((d.kid, USE_ENCRYPTION, d.alg, d.seed) for d in decryption),
            (witness.kid, USE_WITNESS, ALG_ED25519, witness.seed),
        ]
        tls_der = tls_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        for d in (self.keys_dir, self.tls_dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        for kid, use, alg, seed in key_files:
            write_atomic(self.keys_dir / f"{kid}{_KEY_SUFFIX}", seal(seed, KeyFileMeta(kid, use, alg)))
        write_atomic(self.tls_key_path, seal(tls_der, KeyFileMeta(_tls_kid(tls_key), USE_TLS, ALG_ECDSA_P256)))
        store_key = StoreKey.generate(randbytes)  # drawn last: the other files stay as before it existed
        write_atomic(
            self.keys_dir / f"{store_key.kid}{_KEY_SUFFIX}",
            seal(store_key.seed, KeyFileMeta(store_key.kid, USE_STORE, ALG_STORE)),
        )
        write_atomic(self.cert_path, cert_pem, _PUBLIC)
        write_atomic(self.bundle_path, signed.to_bytes(), _PUBLIC)  # last: marks a complete identity
        return Identity(
            name=identity,
            signing={signing.kid: signing},
            decryption={d.kid: d for d in decryption},
            witnesses={witness.kid: witness},
            bundle=signed,
            tls={bundle.tls_certificate: _pem(tls_key)},
            store_key=store_key,
        )

    # -- load ---------------------------------------------------------------------------

    def load(self, passphrase: bytes) -> Identity:
        """Decrypt every key and check it against the own bundle and the TLS certificate.

        Raises KeyFileError naming the file for a wrong passphrase, a modified or malformed key
        file, or keys that do not match the bundle or certificate.
        """
        self._recover()
        signed = self.read_bundle()
        bundle = _verified(signed, self.bundle_path)
        tls_paths = self._tls_key_paths
        paths = [*self._key_files(), *tls_paths]
        loaded = _open_all(paths, passphrase, set(tls_paths))

        signing: dict[str, SigningKey] = {}
        decryption: dict[str, DecryptionKey] = {}
        witnesses: dict[str, SigningKey] = {}
        store_keys: list[StoreKey] = []
        tls_keys: list[bytes] = []
        for path, (meta, key, _) in zip(paths, loaded, strict=True):
            if path in tls_paths:
                if meta.use != USE_TLS or not isinstance(key, ec.EllipticCurvePrivateKey):
                    raise KeyFileError(f"{path}: not a TLS key file", code="keyfile.wrong_use")
                tls_keys.append(_pem(key))
            elif meta.use == USE_SIGNING and isinstance(key, SigningKey):
                signing[key.kid] = key
            elif meta.use == USE_WITNESS and isinstance(key, SigningKey):
                witnesses[key.kid] = key
            elif meta.use == USE_ENCRYPTION and isinstance(key, DecryptionKey):
                decryption[key.kid] = key
            elif meta.use == USE_STORE and isinstance(key, StoreKey):
                store_keys.append(key)
            else:
                raise KeyFileError(
                    f"{path}: key use {meta.use!r} does not belong in {self.keys_dir}",
                    code="keyfile.wrong_use",
                )
        tls_held = self._pair_tls(bundle, tls_keys)
        if not any(r.use == USE_WITNESS and r.kid in witnesses for r in bundle.keys):
            raise KeyFileError(
                f"no witness key of {bundle.identity} in {self.keys_dir} is announced in its bundle",
                code="keyfile.missing",
            )
        return Identity(
            name=bundle.identity,
            signing=signing,
            decryption=decryption,
            witnesses=witnesses,
            bundle=signed,
            tls=tls_held,
            store_key=self._store_key(store_keys, passphrase),
        )

    def _store_key(self, found: list[StoreKey], passphrase: bytes) -> StoreKey:
        """The one store key; an identity made before store keys existed gets one now."""
        if len(found) > 1:
            raise KeyFileError(
                f"{self.keys_dir} holds {len(found)} store keys; keep the one the database was written with",
                code="keyfile.store_key_ambiguous",
            )
        if found:
            return found[0]
        key = StoreKey.generate(os.urandom)
        write_atomic(
            self.keys_dir / f"{key.kid}{_KEY_SUFFIX}",
            seal_private_key(key.seed, KeyFileMeta(key.kid, USE_STORE, ALG_STORE), passphrase),
        )
        return key

    def _pair_tls(self, bundle: KeyBundle, tls_keys: list[bytes]) -> dict[str, bytes]:
        """The bundle's certificates (current and previous) whose certificate file and key we
        hold, paired by public key (so a crash between the renames of a renewal is harmless)."""
        cert_files = [p for p in (self.cert_path, self.tls_dir / TLS_NEXT_CERT_FILE) if p.exists()]
        if self.cert_path not in cert_files:
            _read(self.cert_path, "TLS certificate")  # raises the usual missing-file error
        certs = [_read(p, "TLS certificate") for p in cert_files]
        held: dict[str, bytes] = {}
        for pem in (bundle.tls_certificate, *(p for p, _ in bundle.tls_previous)):
            data = pem.encode("ascii", "replace").strip()
            if not any(c.strip() == data for c in certs):
                continue
            for key_pem in tls_keys:
                if tls.certificate_public_key_matches(data, key_pem):
                    held[pem] = key_pem
                    break
        if bundle.tls_certificate not in held and not held:
            raise KeyFileError(
                f"{self.cert_path} and {self.tls_key_path} are not a certificate and key announced in "
                f"{self.bundle_path}",
                code="keyfile.tls_mismatch",
            )
        return held

    def add_tls_identity(
        self,
        cert_pem: bytes,
        key: ec.EllipticCurvePrivateKey,
        passphrase: bytes,
        *,
        opslimit: int = DEFAULT_OPSLIMIT,
        memlimit: int = DEFAULT_MEMLIMIT,
    ) -> None:
        """Store a renewed TLS key and certificate beside the current ones (tls/next.*)."""
        _open_all([self.tls_key_path], passphrase, {self.tls_key_path})  # the same passphrase as the store
        der = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        meta = KeyFileMeta(_tls_kid(key), USE_TLS, ALG_ECDSA_P256)
        data = seal_private_key(der, meta, passphrase, opslimit=opslimit, memlimit=memlimit)
        write_atomic(self.tls_dir / TLS_NEXT_KEY_FILE, data)
        write_atomic(self.tls_dir / TLS_NEXT_CERT_FILE, cert_pem, _PUBLIC)

    def promote_tls(self) -> None:
        """Make the renewed TLS key and certificate the current files (the old key is destroyed)."""
        nkey, ncert = self.tls_dir / TLS_NEXT_KEY_FILE, self.tls_dir / TLS_NEXT_CERT_FILE
        if not (nkey.exists() and ncert.exists()):
            return
        write_atomic(self.tls_key_path, nkey.read_bytes())
        write_atomic(self.cert_path, ncert.read_bytes(), _PUBLIC)
        nkey.unlink()
        ncert.unlink()
        fsync_dir(self.tls_dir)

    # -- change ---------------------------------------------------------------------------

    def add_private_key(
        self,
        key: SigningKey | DecryptionKey,
        use: str,
        passphrase: bytes,
        *,
        opslimit: int = DEFAULT_OPSLIMIT,
        memlimit: int = DEFAULT_MEMLIMIT,
    ) -> None:
        """Store a new private key (rotation). The passphrase must open the existing keys."""
        if use in (USE_SIGNING, USE_WITNESS) and isinstance(key, SigningKey):
            alg = ALG_ED25519
        elif use == USE_ENCRYPTION and isinstance(key, DecryptionKey):
            alg = key.alg
        else:
            raise KeyStateError(f"a {type(key).__name__} cannot be stored for use {use!r}", code="key.wrong_use")
        existing = self._key_files()
        if existing:  # never leave a store whose files need two different passphrases
            _open_all(existing[:1], passphrase, set())
        self.keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = seal_private_key(
            key.seed, KeyFileMeta(key.kid, use, alg), passphrase, opslimit=opslimit, memlimit=memlimit
        )
        write_atomic(self.keys_dir / f"{key.kid}{_KEY_SUFFIX}", data)

    def save_bundle(self, signed: SignedBundle) -> None:
        """Replace our own bundle; it must verify and keep the identity."""
        bundle = signed.verify_self_signed()
        if self.bundle_path.exists():
            current = self.read_bundle().bundle
            if current.identity != bundle.identity:
                raise Conflict(
                    f"bundle is for {bundle.identity}, this store holds {current.identity}",
                    code="bundle.identity_changed",
                )
        write_atomic(self.bundle_path, signed.to_bytes(), _PUBLIC)

    def change_passphrase(
        self,
        old: bytes,
        new: bytes,
        *,
        opslimit: int = DEFAULT_OPSLIMIT,
        memlimit: int = DEFAULT_MEMLIMIT,
    ) -> None:
        """Re-encrypt every key file under `new`, all or nothing (see the module docstring)."""
        if not new:
            raise KeyFileError("passphrase must not be empty", code="keyfile.passphrase_empty", field="passphrase")
        self._recover()
        for d in (self.keys_dir, self.tls_dir):
            for stale in _temporaries(d):  # staged by a change that never reached its journal
                stale.unlink(missing_ok=True)
        tls_paths = self._tls_key_paths
        paths = [*self._key_files(), *tls_paths]
        opened = _open_all(paths, old, set(tls_paths))
        seal = _sealer(new, opslimit, memlimit, os.urandom)
        staged: list[tuple[Path, Path]] = []
        try:
            for path, (meta, _, seed) in zip(paths, opened, strict=True):
                staged.append((_stage(path, seal(seed, meta), _PRIVATE), path))
            for d in {self.keys_dir, self.tls_dir}:
                fsync_dir(d)
            journal = [[self._tag(path), tmp.name, path.name] for tmp, path in staged]
            write_atomic(self.keys_dir / _JOURNAL, json_bytes({"rename": journal}))  # the commit point
        except BaseException:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
            raise
        self._recover()

    def _tag(self, path: Path) -> str:
        return "tls" if path.parent == self.tls_dir else "keys"

    def _dir(self, tag: object) -> Path:
        if tag == "tls":
            return self.tls_dir
        if tag == "keys":
            return self.keys_dir
        raise ValueError("unknown directory tag")

    def _recover(self) -> None:
        """Finish a passphrase change whose journal was committed (roll forward)."""
        journal = self.keys_dir / _JOURNAL
        if not journal.exists():
            return
        try:
            entries = json_object(journal.read_bytes(), field="passphrase-change journal")["rename"]
            moves = [(self._dir(tag) / tmp, self._dir(tag) / name) for tag, tmp, name in entries]
            if any(not tmp.name.endswith(".tmp") for tmp, _ in moves):
                raise ValueError("not a staged file")
        except (DecodeError, KeyError, TypeError, ValueError) as e:
            raise KeyFileError(
                f"{journal} is damaged; restore the key directories from backup", code="keyfile.journal"
            ) from e
        for tmp, path in moves:
            with contextlib.suppress(FileNotFoundError):  # renamed already, before a crash
                os.replace(tmp, path)
        for d in {self.keys_dir, self.tls_dir}:
            fsync_dir(d)
        journal.unlink()
        fsync_dir(self.keys_dir)


def _temporaries(d: Path) -> Iterator[Path]:
    if d.is_dir():
        yield from (p for p in d.glob(".*.tmp") if p.is_file())


def _sealer(
    passphrase: bytes, opslimit: int, memlimit: int, randbytes: RandBytes
) -> Callable[[bytes, KeyFileMeta], bytes]:
    def seal(seed: bytes, meta: KeyFileMeta) -> bytes:
        return seal_private_key(seed, meta, passphrase, opslimit=opslimit, memlimit=memlimit, randbytes=randbytes)

    return seal


def _open_all(paths: list[Path], passphrase: bytes, tls_paths: set[Path]) -> list[tuple[KeyFileMeta, _Loaded, bytes]]:
    """Open key files; argon2id releases the GIL, so a few threads shorten start-up several-fold."""
    datas = [_read(p, "key file") for p in paths]
    workers = max(1, min(4, os.cpu_count() or 1, len(paths)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="keyfile") as pool:
        return list(pool.map(lambda p, d: _open_key(p, d, passphrase, p in tls_paths), paths, datas))


def _open_key(path: Path, data: bytes, passphrase: bytes, is_tls: bool) -> tuple[KeyFileMeta, _Loaded, bytes]:
    """Decrypt one key file and rebuild its key; KeyFileError names the file, never the secret."""
    try:
        meta, seed = open_private_key(data, passphrase)
    except KeyFileError as e:
        raise KeyFileError(f"{path}: {e.detail}", code=e.code, field=str(path)) from e
    if is_tls != (meta.use == USE_TLS):
        raise KeyFileError(f"{path}: key use {meta.use!r} does not belong here", code="keyfile.wrong_use")
    key: _Loaded
    try:
        if meta.use == USE_TLS and meta.alg == ALG_ECDSA_P256:
            key = _tls_key_from_der(seed, path)
            kid = _tls_kid(key)
        elif meta.use in (USE_SIGNING, USE_WITNESS) and meta.alg == ALG_ED25519:
            key = SigningKey(seed)
            kid = key.kid
        elif meta.use == USE_ENCRYPTION:
            key = DecryptionKey(meta.alg, seed)
            kid = key.kid
        elif meta.use == USE_STORE and meta.alg == ALG_STORE:
            key = StoreKey(seed)
            kid = key.kid
        else:
            raise KeyFileError(
                f"{path}: unsupported key use {meta.use!r} with algorithm {meta.alg!r}",
                code="keyfile.malformed",
            )
    except (ValueError, SuiteError) as e:
        raise KeyFileError(f"{path}: the decrypted key is malformed", code="keyfile.malformed") from e
    if kid != meta.kid:
        raise KeyFileError(f"{path}: key does not match its key id {meta.kid}", code="keyfile.kid_mismatch")
    if not is_tls and path.stem != meta.kid:
        raise KeyFileError(f"{path}: file name does not match its key id {meta.kid}", code="keyfile.kid_mismatch")
    return meta, key, seed
