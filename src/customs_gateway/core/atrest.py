"""Data at rest (DESIGN §12 "At rest", issue 18): sealed under a key per retention day.

Every sensitive column a gateway stores (bodies, signed documents, ciphertexts) is sealed with
XChaCha20-Poly1305 under the **day key** of the day its message is to be disposed of. Day keys are
random, 32 bytes, one per calendar day, kept in the key store wrapped under a subkey of the store
key (`core.storekey`); destroying a day's key is how disposal reaches every copy of that day's data,
backups of the database included.

Sealed value (bytes, in the database)::

    0x01 ‖ day (uint32 big-endian, days since 1970-01-01) ‖ nonce (24) ‖ AEAD ciphertext ‖ tag (16)
    associated data = "customs-gateway/v1 at-rest\\n" ‖ context ‖ 0x00 ‖ day (4)

The context names the row and the column (e.g. `inbox.body` ‖ 0x00 ‖ message id), so a sealed
value moved to another row, column or day does not open. A wrapped day key (file bytes) is JSON
`{format, day, nonce, ciphertext}` whose ciphertext is the day key sealed with the wrap key and
associated data `format ‖ 0x0A ‖ day`, so a file renamed to another day does not open either.

Pure functions: randomness (nonces, new keys) is passed in by the caller.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

import nacl.bindings
import nacl.exceptions

from .encoding import b64url, json_bytes, json_object, unb64url
from .errors import DecodeError, GatewayError

VERSION: Final = 1
KEY_BYTES: Final = 32
NONCE_BYTES: Final = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES  # 24
TAG_BYTES: Final = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES  # 16
HEADER_BYTES: Final = 1 + 4 + NONCE_BYTES
#: The store key's label for the key that wraps day keys (`StoreKey.derive`).
WRAP_KEY_LABEL: Final = "customs-gateway/v1 day-key wrap"
DAY_KEY_FORMAT: Final = "customs-gateway/v1 day-key"
_AAD_PREFIX: Final = b"customs-gateway/v1 at-rest\n"
_EPOCH: Final = dt.date(1970, 1, 1)


class AtRestError(GatewayError):
    """Sealed data or a wrapped day key that does not open: tampered, moved, or the wrong key."""

    code = "atrest.invalid"
    status = 500


class Disposed(AtRestError):
    """The day key is gone: the data was disposed of and can never be read again."""

    code = "atrest.disposed"
    status = 410


def day_number(day: dt.date) -> int:
    return (day - _EPOCH).days


def _day_bytes(day: dt.date) -> bytes:
    n = day_number(day)
    if not 0 <= n < 2**32:
        raise ValueError("day out of range")
    return n.to_bytes(4, "big")


def _aad(context: bytes, day4: bytes) -> bytes:
    return _AAD_PREFIX + context + b"\x00" + day4


def seal(day_key: bytes, day: dt.date, context: bytes, plaintext: bytes, nonce: bytes) -> bytes:
    """Seal `plaintext` for `context` (row and column) under the key of `day`."""
    if len(day_key) != KEY_BYTES or len(nonce) != NONCE_BYTES:
        raise ValueError("a day key is 32 bytes and a nonce 24")
    day4 = _day_bytes(day)
    ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, _aad(context, day4), nonce, day_key)
    return bytes([VERSION]) + day4 + nonce + ct


def sealed_day(blob: bytes) -> dt.date:
    """The day whose key opens `blob` (read from its header, authenticated only when opened)."""
    if len(blob) < HEADER_BYTES + TAG_BYTES:
        raise AtRestError("sealed value is shorter than its header and tag", code="atrest.malformed")
    if blob[0] != VERSION:
        raise AtRestError(f"sealed value has unknown version {blob[0]}", code="atrest.malformed")
    return _EPOCH + dt.timedelta(days=int.from_bytes(blob[1:5], "big"))


def open_sealed(day_key: bytes, context: bytes, blob: bytes) -> bytes:
    """The plaintext of `blob` sealed for `context`; AtRestError if anything differs."""
    sealed_day(blob)  # version and length
    day4, nonce, ct = blob[1:5], blob[5:HEADER_BYTES], blob[HEADER_BYTES:]
    try:
        return bytes(nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(ct, _aad(context, day4), nonce, day_key))
    except nacl.exceptions.CryptoError as e:
        raise AtRestError(
            "sealed value does not open: modified, moved to another row or day, or another day key",
            code="atrest.auth_failed",
        ) from e


def wrap_day_key(wrap_key: bytes, day: dt.date, day_key: bytes, nonce: bytes) -> bytes:
    """The file bytes that keep `day_key` for `day`, wrapped under `wrap_key`."""
    if len(day_key) != KEY_BYTES or len(nonce) != NONCE_BYTES:
        raise ValueError("a day key is 32 bytes and a nonce 24")
    aad = DAY_KEY_FORMAT.encode() + b"\n" + day.isoformat().encode()
    ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(day_key, aad, nonce, wrap_key)
    doc = {"format": DAY_KEY_FORMAT, "day": day.isoformat(), "nonce": b64url(nonce), "ciphertext": b64url(ct)}
    return json_bytes(doc) + b"\n"


def unwrap_day_key(wrap_key: bytes, day: dt.date, data: bytes) -> bytes:
    """The day key kept in `data` for `day`; AtRestError for another day, another wrap key or
    any change to the file."""
    try:
        obj = json_object(data, field="day key")
        nonce = unb64url(str(obj.get("nonce", "")), field="nonce")
        ct = unb64url(str(obj.get("ciphertext", "")), field="ciphertext")
    except DecodeError as e:
        raise AtRestError(f"day key file is not valid: {e.detail}", code="atrest.malformed") from e
    if obj.get("format") != DAY_KEY_FORMAT or obj.get("day") != day.isoformat() or len(nonce) != NONCE_BYTES:
        raise AtRestError(f"not the day key of {day.isoformat()}", code="atrest.malformed")
    aad = DAY_KEY_FORMAT.encode() + b"\n" + day.isoformat().encode()
    try:
        key = bytes(nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(ct, aad, nonce, wrap_key))
    except nacl.exceptions.CryptoError as e:
        raise AtRestError(
            f"day key of {day.isoformat()} does not open: another store key, or the file was modified",
            code="atrest.auth_failed",
        ) from e
    if len(key) != KEY_BYTES:
        raise AtRestError("day key has the wrong length", code="atrest.malformed")
    return key
