"""Uploaded files at rest (DESIGN §12 "At rest", §13; decision 0016): chunk records under a key per upload.

A back-end's upload never touches the sender's disk in clear. Each upload has a random 32-byte
**upload key**; its plaintext is cut into chunks of `CHUNK` (64 KiB, as `core.filecrypt`) and
each chunk is kept as one record::

    record = nonce (24, random per write) ‖ XChaCha20-Poly1305 ciphertext ‖ tag (16)
    associated data = "customs-gateway/v1 upload chunk\\n" ‖ file id ‖ 0x00 ‖ index (uint64 big-endian)

so a record moved to another index or another upload, cut short, altered, or opened with
another key does not open. Full chunks sit one after another in the data file (`RECORD` bytes
each, so chunk i is at i·RECORD and a `Range` maps to the records it spans); the last, partial
chunk sits in the upload's JSON record and is written again, with a new nonce, as the next part
grows it (so parts may end anywhere, and a part's bytes never overwrite bytes already counted).

The upload key itself is kept wrapped: under `wrap_upload_key` (a subkey of the store key,
`WRAP_KEY_LABEL`) while no message names the upload, and under the day key of the message's
retention day (`startup.daykeys.DayKeys.seal`, context `key_context`) once one does, so destroying
that day key (disposal) leaves every copy of the file unreadable, backups included.

Pure: keys, nonces and bytes are the caller's.
"""

from __future__ import annotations

from typing import Final

import nacl.bindings
import nacl.exceptions

from . import xchacha
from .errors import GatewayError
from .filecrypt import CHUNK

KEY_BYTES: Final = 32
NONCE_BYTES: Final = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES  # 24
TAG_BYTES: Final = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES  # 16
OVERHEAD: Final = NONCE_BYTES + TAG_BYTES
RECORD: Final = CHUNK + OVERHEAD  # a full chunk's record
#: The store key's label for the key that wraps unclaimed upload keys (`StoreKey.derive`).
WRAP_KEY_LABEL: Final = "customs-gateway/v1 upload-key wrap"
_CHUNK_AAD: Final = b"customs-gateway/v1 upload chunk\n"
_WRAP_AAD: Final = b"customs-gateway/v1 upload key\n"


class FileRestError(GatewayError):
    """A chunk record or wrapped key that does not open: altered, cut short, moved, or another key."""

    code = "file.at_rest_invalid"
    status = 500


def chunk_aad(file_id: str, index: int) -> bytes:
    """The associated data of chunk `index` of upload `file_id`."""
    if index < 0:
        raise ValueError("negative chunk index")
    return _CHUNK_AAD + file_id.encode("ascii") + b"\x00" + index.to_bytes(8, "big")


def seal_chunk(key: bytes, file_id: str, index: int, plaintext: bytes, nonce: bytes) -> bytes:
    """The record of chunk `index` (at most CHUNK bytes) of `file_id`, sealed with a fresh `nonce`."""
    if len(key) != KEY_BYTES or len(nonce) != NONCE_BYTES:
        raise ValueError("an upload key is 32 bytes and a nonce 24")
    if len(plaintext) > CHUNK:
        raise ValueError("a chunk holds at most CHUNK bytes")
    return nonce + xchacha.encrypt(key, nonce, plaintext, chunk_aad(file_id, index))


def seal_chunk_into(
    key: bytes, file_id: str, index: int, plaintext: xchacha.Buffer, nonce: bytes, out: memoryview
) -> None:
    """`seal_chunk`, written into `out` (exactly OVERHEAD + len(plaintext) bytes): no copy made."""
    if len(key) != KEY_BYTES or len(nonce) != NONCE_BYTES:
        raise ValueError("an upload key is 32 bytes and a nonce 24")
    if len(plaintext) > CHUNK or len(out) != len(plaintext) + OVERHEAD:
        raise ValueError("a chunk holds at most CHUNK bytes, its record OVERHEAD more")
    out[:NONCE_BYTES] = nonce
    xchacha.encrypt_into(key, nonce, plaintext, chunk_aad(file_id, index), out[NONCE_BYTES:])


def open_chunk(key: bytes, file_id: str, index: int, record: bytes) -> bytes:
    """The plaintext of chunk `index` of `file_id`; FileRestError if the record is not that chunk
    of that upload under `key`, or was cut short or altered."""
    if len(record) < OVERHEAD or len(record) > RECORD:
        raise FileRestError(
            f"chunk record {index} of upload {file_id} has {len(record)} bytes", code="file.at_rest_truncated"
        )
    nonce, ct = record[:NONCE_BYTES], record[NONCE_BYTES:]
    try:
        return xchacha.decrypt(key, nonce, ct, chunk_aad(file_id, index))
    except xchacha.XChaChaError as e:
        raise FileRestError(
            f"chunk record {index} of upload {file_id} does not open: altered, moved, or another key",
            code="file.at_rest_auth_failed",
        ) from e


def full_chunks(offset: int) -> int:
    """How many full chunks `offset` plaintext bytes hold (the rest is the partial tail)."""
    return offset // CHUNK


def data_size(offset: int) -> int:
    """The data file's size for `offset` plaintext bytes held: full chunk records only."""
    return full_chunks(offset) * RECORD


def key_context(file_id: str) -> bytes:
    """The at-rest context (`DayKeys.seal`) of an upload key kept under a day key."""
    return b"files.upload_key\x00" + file_id.encode("ascii")


def wrap_upload_key(wrap_key: bytes, file_id: str, key: bytes, nonce: bytes) -> bytes:
    """`key` wrapped under the store-derived `wrap_key`: nonce ‖ ciphertext ‖ tag, bound to `file_id`."""
    if len(key) != KEY_BYTES or len(nonce) != NONCE_BYTES:
        raise ValueError("an upload key is 32 bytes and a nonce 24")
    aad = _WRAP_AAD + file_id.encode("ascii")
    return nonce + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(key, aad, nonce, wrap_key)


def unwrap_upload_key(wrap_key: bytes, file_id: str, blob: bytes) -> bytes:
    """The upload key of `file_id` kept in `blob`; FileRestError for another upload, another wrap
    key, or any change."""
    aad = _WRAP_AAD + file_id.encode("ascii")
    try:
        key = bytes(
            nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                blob[NONCE_BYTES:], aad, blob[:NONCE_BYTES], wrap_key
            )
        )
    except (nacl.exceptions.CryptoError, ValueError) as e:
        raise FileRestError(
            f"the key of upload {file_id} does not open: another store key, or the record was modified",
            code="file.at_rest_auth_failed",
        ) from e
    if len(key) != KEY_BYTES:
        raise FileRestError("an upload key has the wrong length", code="file.at_rest_invalid")
    return key
