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

A value of a message under **legal hold** is sealed instead under that hold's own key (version
2), so the day key can be destroyed on time for every other message of the day while the held one
stays readable; releasing the hold and disposing of the message destroys the hold key::

    0x02 ‖ hold id (16) ‖ nonce (24) ‖ AEAD ciphertext ‖ tag (16)
    associated data = "customs-gateway/v1 at-rest\\n" ‖ context ‖ 0x00 ‖ 0x02 ‖ hold id

A wrapped hold key is the same JSON as a day key's with `format` "customs-gateway/v1 hold-key" and
`hold` (the id in hex) instead of `day`.

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
HOLD_VERSION: Final = 2
HOLD_ID_BYTES: Final = 16
KEY_BYTES: Final = 32
NONCE_BYTES: Final = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES  # 24
TAG_BYTES: Final = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES  # 16
HEADER_BYTES: Final = 1 + 4 + NONCE_BYTES
HOLD_HEADER_BYTES: Final = 1 + HOLD_ID_BYTES + NONCE_BYTES
#: The store key's label for the key that wraps day keys (`StoreKey.derive`).
WRAP_KEY_LABEL: Final = "customs-gateway/v1 day-key wrap"
DAY_KEY_FORMAT: Final = "customs-gateway/v1 day-key"
HOLD_KEY_FORMAT: Final = "customs-gateway/v1 hold-key"
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


def sealed_ref(blob: bytes) -> dt.date | bytes:
    """The key that opens `blob`: its day (version 1) or its hold id (version 2, 16 bytes); read
    from the header, authenticated only when opened."""
    if len(blob) < 1 or blob[0] not in (VERSION, HOLD_VERSION):
        version = blob[0] if blob else "none"
        raise AtRestError(f"sealed value has unknown version {version}", code="atrest.malformed")
    header = HEADER_BYTES if blob[0] == VERSION else HOLD_HEADER_BYTES
    if len(blob) < header + TAG_BYTES:
        raise AtRestError("sealed value is shorter than its header and tag", code="atrest.malformed")
    if blob[0] == HOLD_VERSION:
        return blob[1 : 1 + HOLD_ID_BYTES]
    return _EPOCH + dt.timedelta(days=int.from_bytes(blob[1:5], "big"))


def sealed_day(blob: bytes) -> dt.date:
    """The day whose key opens `blob`; AtRestError for a value sealed under a hold key."""
    ref = sealed_ref(blob)
    if not isinstance(ref, dt.date):
        raise AtRestError("sealed value is under a hold key, not a day key", code="atrest.malformed")
    return ref


def seal_hold(hold_key: bytes, hold_id: bytes, context: bytes, plaintext: bytes, nonce: bytes) -> bytes:
    """Seal `plaintext` for `context` under the key of the legal hold `hold_id`."""
    if len(hold_key) != KEY_BYTES or len(nonce) != NONCE_BYTES or len(hold_id) != HOLD_ID_BYTES:
        raise ValueError("a hold key is 32 bytes, a hold id 16 and a nonce 24")
    ref = bytes([HOLD_VERSION]) + hold_id
    ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, _aad(context, ref), nonce, hold_key)
    return ref + nonce + ct


def open_sealed(key: bytes, context: bytes, blob: bytes) -> bytes:
    """The plaintext of `blob` sealed for `context` under `key` (its day's or its hold's);
    AtRestError if anything differs."""
    ref = sealed_ref(blob)  # version and length
    if isinstance(ref, dt.date):
        bound, nonce, ct = blob[1:5], blob[5:HEADER_BYTES], blob[HEADER_BYTES:]
    else:
        bound, nonce, ct = (
            blob[: HOLD_ID_BYTES + 1],
            blob[HOLD_ID_BYTES + 1 : HOLD_HEADER_BYTES],
            blob[HOLD_HEADER_BYTES:],
        )
    try:
        return bytes(nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(ct, _aad(context, bound), nonce, key))
    except nacl.exceptions.CryptoError as e:
        raise AtRestError(
            "sealed value does not open: modified, moved to another row or day, or another key",
            code="atrest.auth_failed",
        ) from e


def _wrap(wrap_key: bytes, fmt: str, name: str, value: str, key: bytes, nonce: bytes) -> bytes:
    if len(key) != KEY_BYTES or len(nonce) != NONCE_BYTES:
        raise ValueError("a key is 32 bytes and a nonce 24")
    aad = fmt.encode() + b"\n" + value.encode()
    ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(key, aad, nonce, wrap_key)
    doc = {"format": fmt, name: value, "nonce": b64url(nonce), "ciphertext": b64url(ct)}
    return json_bytes(doc) + b"\n"


def _unwrap(wrap_key: bytes, fmt: str, name: str, value: str, what: str, data: bytes) -> bytes:
    try:
        obj = json_object(data, field=what)
        nonce = unb64url(str(obj.get("nonce", "")), field="nonce")
        ct = unb64url(str(obj.get("ciphertext", "")), field="ciphertext")
    except DecodeError as e:
        raise AtRestError(f"{what} file is not valid: {e.detail}", code="atrest.malformed") from e
    if obj.get("format") != fmt or obj.get(name) != value or len(nonce) != NONCE_BYTES:
        raise AtRestError(f"not the {what} of {value}", code="atrest.malformed")
    aad = fmt.encode() + b"\n" + value.encode()
    try:
        key = bytes(nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(ct, aad, nonce, wrap_key))
    except nacl.exceptions.CryptoError as e:
        raise AtRestError(
            f"{what} of {value} does not open: another store key, or the file was modified",
            code="atrest.auth_failed",
        ) from e
    if len(key) != KEY_BYTES:
        raise AtRestError(f"{what} has the wrong length", code="atrest.malformed")
    return key


def wrap_day_key(wrap_key: bytes, day: dt.date, day_key: bytes, nonce: bytes) -> bytes:
    """The file bytes that keep `day_key` for `day`, wrapped under `wrap_key`."""
    return _wrap(wrap_key, DAY_KEY_FORMAT, "day", day.isoformat(), day_key, nonce)


def unwrap_day_key(wrap_key: bytes, day: dt.date, data: bytes) -> bytes:
    """The day key kept in `data` for `day`; AtRestError for another day, another wrap key or
    any change to the file."""
    return _unwrap(wrap_key, DAY_KEY_FORMAT, "day", day.isoformat(), "day key", data)


def wrap_hold_key(wrap_key: bytes, hold_id: bytes, hold_key: bytes, nonce: bytes) -> bytes:
    """The file bytes that keep the key of hold `hold_id`, wrapped under `wrap_key`."""
    return _wrap(wrap_key, HOLD_KEY_FORMAT, "hold", hold_id.hex(), hold_key, nonce)


def unwrap_hold_key(wrap_key: bytes, hold_id: bytes, data: bytes) -> bytes:
    """The key of hold `hold_id` kept in `data`; AtRestError for another hold, another wrap key
    or any change to the file."""
    return _unwrap(wrap_key, HOLD_KEY_FORMAT, "hold", hold_id.hex(), "hold key", data)
