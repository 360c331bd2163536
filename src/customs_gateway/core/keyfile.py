"""Private keys at rest: argon2id (parameters stored beside the ciphertext) + XChaCha20-Poly1305.

The file is one JSON object. Everything but the ciphertext is bound as AEAD associated data, so a
changed kid, algorithm or KDF parameter fails exactly like a wrong passphrase does. This module
only turns bytes into bytes; writing the file with mode 0600 is the key store's job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Final

import nacl.bindings
import nacl.exceptions
import nacl.pwhash

from .encoding import b64url, json_bytes, json_object, unb64url
from .errors import DecodeError, KeyFileError
from .keys import RandBytes

FORMAT: Final = "customs-gateway/v1 private-key"

#: Defaults: argon2id with 3 passes over 64 MiB (about 0.2 s here), stronger than libsodium's
#: "interactive" preset; stored per file so they can be raised later without breaking old files.
DEFAULT_OPSLIMIT: Final = 3
DEFAULT_MEMLIMIT: Final = 64 * 1024 * 1024
_MIN_OPSLIMIT: Final = 1
_MIN_MEMLIMIT: Final = 8 * 1024
_MAX_MEMLIMIT: Final = 4 * 1024 * 1024 * 1024


@dataclass(frozen=True)
class KeyFileMeta:
    """What a key file says about its key, authenticated by the AEAD."""

    kid: str
    use: str  # "signing" | "encryption" | "witness" | "tls"
    alg: str


def _derive(passphrase: bytes, salt: bytes, ops: int, mem: int) -> bytes:
    return bytes(
        nacl.pwhash.argon2id.kdf(
            nacl.bindings.crypto_aead_xchacha20poly1305_ietf_KEYBYTES,
            passphrase,
            salt,
            opslimit=ops,
            memlimit=mem,
        )
    )


def seal_private_key(
    seed: bytes,
    meta: KeyFileMeta,
    passphrase: bytes,
    *,
    opslimit: int = DEFAULT_OPSLIMIT,
    memlimit: int = DEFAULT_MEMLIMIT,
    randbytes: RandBytes = os.urandom,
) -> bytes:
    """Encrypt a private key seed under a passphrase; returns the key file bytes."""
    if not passphrase:
        raise KeyFileError("passphrase must not be empty", code="keyfile.passphrase_empty", field="passphrase")
    salt = randbytes(nacl.pwhash.argon2id.SALTBYTES)
    nonce = randbytes(nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES)
    header: dict[str, Any] = {
        "format": FORMAT,
        "kid": meta.kid,
        "use": meta.use,
        "alg": meta.alg,
        "kdf": {"name": "argon2id", "opslimit": opslimit, "memlimit": memlimit, "salt": b64url(salt)},
        "aead": {"name": "xchacha20poly1305-ietf", "nonce": b64url(nonce)},
    }
    key = _derive(passphrase, salt, opslimit, memlimit)
    ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(seed, json_bytes(header), nonce, key)
    return json_bytes({**header, "ciphertext": b64url(ct)}) + b"\n"


def read_meta(data: bytes) -> KeyFileMeta:
    """The unauthenticated metadata of a key file (for listing); use `open_private_key` to trust it."""
    obj = _parse(data)
    return KeyFileMeta(kid=obj["kid"], use=obj["use"], alg=obj["alg"])


def _parse(data: bytes) -> dict[str, Any]:
    try:
        obj = json_object(data, field="key file")
    except DecodeError as e:
        raise KeyFileError(f"key file is not valid: {e.detail}", code="keyfile.malformed") from e
    if obj.get("format") != FORMAT:
        raise KeyFileError("not a customs-gateway private key file", code="keyfile.malformed", field="format")
    for name in ("kid", "use", "alg", "ciphertext"):
        if not isinstance(obj.get(name), str):
            raise KeyFileError(f"key file field {name!r} missing", code="keyfile.malformed", field=name)
    kdf, aead = obj.get("kdf"), obj.get("aead")
    if not isinstance(kdf, dict) or kdf.get("name") != "argon2id":
        raise KeyFileError("key file KDF must be argon2id", code="keyfile.malformed", field="kdf")
    if not isinstance(aead, dict) or aead.get("name") != "xchacha20poly1305-ietf":
        raise KeyFileError("key file AEAD must be xchacha20poly1305-ietf", code="keyfile.malformed", field="aead")
    ops, mem = kdf.get("opslimit"), kdf.get("memlimit")
    if not (isinstance(ops, int) and isinstance(mem, int)) or isinstance(ops, bool) or isinstance(mem, bool):
        raise KeyFileError("key file KDF limits must be integers", code="keyfile.malformed", field="kdf")
    if not (_MIN_OPSLIMIT <= ops <= 64 and _MIN_MEMLIMIT <= mem <= _MAX_MEMLIMIT):
        raise KeyFileError("key file KDF limits out of range", code="keyfile.malformed", field="kdf")
    if not isinstance(kdf.get("salt"), str) or not isinstance(aead.get("nonce"), str):
        raise KeyFileError("key file salt and nonce must be base64url text", code="keyfile.malformed", field="kdf")
    return obj


def open_private_key(data: bytes, passphrase: bytes) -> tuple[KeyFileMeta, bytes]:
    """Decrypt a key file; raises KeyFileError for a wrong passphrase, tampering or bad format."""
    obj = _parse(data)
    kdf, aead = obj["kdf"], obj["aead"]
    try:
        salt = unb64url(kdf.get("salt", ""), field="kdf.salt")
        nonce = unb64url(aead.get("nonce", ""), field="aead.nonce")
        ct = unb64url(obj["ciphertext"], field="ciphertext")
    except DecodeError as e:
        raise KeyFileError(f"key file is not valid: {e.detail}", code="keyfile.malformed", field=e.field) from e
    if len(salt) != nacl.pwhash.argon2id.SALTBYTES or len(nonce) != 24:
        raise KeyFileError("key file salt or nonce has the wrong length", code="keyfile.malformed")
    if len(ct) < nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES:
        raise KeyFileError("key file ciphertext is shorter than its tag", code="keyfile.malformed", field="ciphertext")
    header = {k: v for k, v in obj.items() if k != "ciphertext"}
    key = _derive(passphrase, salt, kdf["opslimit"], kdf["memlimit"])
    try:
        seed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(ct, json_bytes(header), nonce, key)
    except nacl.exceptions.CryptoError as e:
        raise KeyFileError(
            f"cannot open private key {obj['kid']}: wrong passphrase, or the key file was modified",
            code="keyfile.passphrase_or_tampered",
        ) from e
    return KeyFileMeta(kid=obj["kid"], use=obj["use"], alg=obj["alg"]), bytes(seed)
