"""File encryption: ChaCha20-Poly1305 in the STREAM construction over 64 KiB chunks (DESIGN §13).

The plaintext is cut into chunks of `CHUNK` bytes; chunk i is sealed with nonce = i as an 11-byte
big-endian counter ‖ one flag byte (0x01 on the final chunk only, else 0x00) and empty associated
data, so a chunk moved, dropped, repeated, cut off or appended to fails authentication (the STREAM
construction of Hoang, Reyhanitabar, Rogaway and Vizár, as in age's internal/stream). Every chunk
but the last is full; the last holds 1..CHUNK bytes, or 0 bytes only when the file is empty.

The 32-byte key is random per file and keys ChaCha20-Poly1305 directly, with no HKDF step: it is
made for one file, used for one stream and travels only inside the HPKE-sealed signed document,
so there is no second use to separate (age derives a payload key because its file key is wrapped
for recipients and reused as a header MAC key; ours is not). The file is bound to the document by
its plaintext size and SHA-256 (`FileDigest`), not by associated data here.

Everything is sans-I/O and constant-memory: `Encryptor` and `Decryptor` take pieces of any size
and hold at most one chunk; random access (`decrypt_chunk`, `decrypt_chunks`,
`chunk_index_for_offset`, `ciphertext_range`) serves resumable transfer, HTTP Range, and
checking a file a block of chunks at a time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .errors import GatewayError

CHUNK: Final = 65536
TAG: Final = 16
SEALED: Final = CHUNK + TAG
KEY_SIZE: Final = 32
_LAST: Final = b"\x01"
_MORE: Final = b"\x00"


class FileError(GatewayError):
    """A file's ciphertext or plaintext is not the one the document names."""

    code = "file.auth_failed"
    status = 422


def new_file_key(rng: Callable[[int], bytes]) -> bytes:
    """A fresh 32-byte file key from the injected randomness source (e.g. `os.urandom`)."""
    key = rng(KEY_SIZE)
    if len(key) != KEY_SIZE:
        raise ValueError("the randomness source returned the wrong number of bytes")
    return key


def nonce(index: int, last: bool) -> bytes:
    """The 12-byte nonce of chunk `index`: 11-byte big-endian counter ‖ last-chunk flag."""
    return index.to_bytes(11, "big") + (_LAST if last else _MORE)


def _aead(key: bytes) -> ChaCha20Poly1305:
    if len(key) != KEY_SIZE:
        raise FileError("a file key is 32 bytes", code="file.key_invalid")
    return ChaCha20Poly1305(key)


def ciphertext_size(plain_size: int) -> int:
    """The ciphertext length of a `plain_size`-byte file (an empty file is one 16-byte chunk)."""
    if plain_size < 0:
        raise ValueError("negative size")
    chunks = max(1, -(-plain_size // CHUNK))
    return plain_size + chunks * TAG


def plaintext_size(cipher_size: int) -> int:
    """The plaintext length of a `cipher_size`-byte ciphertext; raises FileError (file.size_mismatch)
    for a length no file encrypts to."""
    chunks = max(1, -(-cipher_size // SEALED))
    plain = cipher_size - chunks * TAG
    if plain < 0 or ciphertext_size(plain) != cipher_size:
        raise FileError(f"no file encrypts to {cipher_size} bytes", code="file.size_mismatch")
    return plain


def chunk_count(plain_size: int) -> int:
    """How many chunks a `plain_size`-byte file has (at least one)."""
    return max(1, -(-plain_size // CHUNK))


def chunk_index_for_offset(plain_offset: int) -> int:
    """The index of the chunk that holds plaintext byte `plain_offset`."""
    if plain_offset < 0:
        raise ValueError("negative offset")
    return plain_offset // CHUNK


def ciphertext_range(index: int, plain_size: int) -> tuple[int, int]:
    """The ciphertext bytes [start, end) of chunk `index` of a `plain_size`-byte file."""
    if not 0 <= index < chunk_count(plain_size):
        raise ValueError("chunk index out of range")
    start = index * SEALED
    return start, min(start + SEALED, ciphertext_size(plain_size))


def encrypt_chunk(key: bytes, index: int, plaintext: bytes, last: bool) -> bytes:
    """Seal one chunk (at most CHUNK bytes) at position `index`."""
    return ChunkSealer(key).seal(index, plaintext, last)


class ChunkSealer:
    """Seals chunks of one file at given positions (one AEAD for the file; random access, for a
    push that resumes at any chunk)."""

    def __init__(self, key: bytes) -> None:
        self._aead = _aead(key)

    def seal(self, index: int, plaintext: bytes | memoryview, last: bool) -> bytes:
        if len(plaintext) > CHUNK:
            raise ValueError("a chunk holds at most CHUNK bytes")
        return self._aead.encrypt(nonce(index, last), plaintext, None)

    def seal_into(self, index: int, plaintext: bytes | memoryview, last: bool, out: memoryview) -> None:
        """`seal`, written into `out` (exactly len(plaintext) + TAG bytes): no copy made."""
        if len(plaintext) > CHUNK or len(out) != len(plaintext) + TAG:
            raise ValueError("a chunk holds at most CHUNK bytes, its sealed form TAG more")
        self._aead.encrypt_into(nonce(index, last), plaintext, None, out)


def decrypt_chunk(key: bytes, index: int, data: bytes, last: bool) -> bytes:
    """Open one sealed chunk; raises FileError (file.auth_failed) if it is not chunk `index` with
    that last flag under `key`."""
    return _open(_aead(key), index, data, last)


def decrypt_chunks(key: bytes, index: int, data: bytes | memoryview, plain_size: int) -> list[bytes]:
    """Open the consecutive sealed chunks of a `plain_size`-byte file, from chunk `index`, that
    `data` holds whole (as `ciphertext_range` lays them out): their plaintexts, in order. Raises
    FileError as `Decryptor` does at the first that does not open: `file.trailing_data` (a chunk
    before the last sealed as the final one), `file.truncated` (the last chunk sealed as not the
    final one), else `file.auth_failed`; ValueError if `data` is not whole chunks of the file."""
    aead = _aead(key)
    n = chunk_count(plain_size)
    view = memoryview(data)
    out: list[bytes] = []
    while view:
        start, end = ciphertext_range(index, plain_size)
        if len(view) < end - start:
            raise ValueError("data ends inside a chunk")
        out.append(_open_at(aead, index, view[: end - start], index == n - 1))
        view = view[end - start :]
        index += 1
    return out


def _open(aead: ChaCha20Poly1305, index: int, data: bytes | memoryview, last: bool) -> bytes:
    try:
        return aead.decrypt(nonce(index, last), data, None)
    except InvalidTag:
        raise FileError(f"chunk {index} does not authenticate") from None


def _open_at(aead: ChaCha20Poly1305, index: int, data: bytes | memoryview, last: bool) -> bytes:
    """Open chunk `index`, which must (`last`) or must not be the final one. A chunk sealed with
    the other flag says why it fails: sealed as final before the end, `file.trailing_data`; the
    last one sealed as not final, `file.truncated` (the final chunk was cut off); anything else
    `file.auth_failed`."""
    try:
        return _open(aead, index, data, last)
    except FileError:
        if _opens(aead, index, data, not last):
            if last:
                raise FileError("the file ends before its final chunk", code="file.truncated") from None
            raise FileError("data after the final chunk", code="file.trailing_data") from None
        raise


def _opens(aead: ChaCha20Poly1305, index: int, data: bytes | memoryview, last: bool) -> bool:
    try:
        aead.decrypt(nonce(index, last), data, None)
    except InvalidTag:
        return False
    return True


class _Stream:
    """State shared by both directions: the cipher, at most one buffered chunk, the next index."""

    def __init__(self, key: bytes) -> None:
        self._aead = _aead(key)
        self._buf = bytearray()
        self._index = 0
        self._done = False


class Encryptor(_Stream):
    """Feed plaintext pieces of any size; get sealed chunks back. `finish()` seals the final one."""

    def feed(self, piece: bytes) -> list[bytes]:
        """Sealed full chunks now known not to be the last (a full buffer waits for more or finish)."""
        if self._done:
            raise RuntimeError("the stream is finished")
        self._buf += piece
        out: list[bytes] = []
        # A chunk is sealed only once a byte beyond it exists, so the final chunk is never empty
        # unless the whole file is.
        while len(self._buf) > CHUNK:
            out.append(self._seal(bytes(self._buf[:CHUNK]), last=False))
            del self._buf[:CHUNK]
        return out

    def finish(self) -> bytes:
        """The final chunk (0..CHUNK plaintext bytes + TAG)."""
        if self._done:
            raise RuntimeError("the stream is finished")
        self._done = True
        last = self._seal(bytes(self._buf), last=True)
        self._buf.clear()
        return last

    def _seal(self, chunk: bytes, last: bool) -> bytes:
        sealed = self._aead.encrypt(nonce(self._index, last), chunk, None)
        self._index += 1
        return sealed


class Decryptor(_Stream):
    """Feed ciphertext pieces split anywhere; get authenticated plaintext back, chunk by chunk.

    Raises FileError: `file.auth_failed` (a chunk moved, dropped, repeated, altered, or the wrong
    key), `file.trailing_data` (bytes after the final chunk), `file.truncated` (`finish()` before
    the final chunk). Plaintext returned before an error is authenticated but the file is not whole.
    """

    def feed(self, piece: bytes) -> list[bytes]:
        """Plaintext of every chunk now known not to be the last."""
        if self._done:
            if piece:
                raise FileError("data after the final chunk", code="file.trailing_data")
            return []
        self._buf += piece
        out: list[bytes] = []
        while len(self._buf) > SEALED:
            sealed = bytes(self._buf[:SEALED])
            try:
                out.append(_open_at(self._aead, self._index, sealed, last=False))
            except FileError as e:
                self._done = e.code == "file.trailing_data"
                raise
            del self._buf[:SEALED]
            self._index += 1
        return out

    def finish(self) -> bytes:
        """Plaintext of the final chunk; raises unless the buffered bytes are exactly that chunk."""
        if self._done:
            raise RuntimeError("the stream is finished")
        self._done = True
        sealed = bytes(self._buf)
        self._buf.clear()
        empty_final = len(sealed) == TAG and self._index > 0  # only an empty file has one
        if len(sealed) < TAG or empty_final:
            raise FileError("the file ends before its final chunk", code="file.truncated")
        return _open_at(self._aead, self._index, sealed, last=True)


class FileDigest:
    """Running size and SHA-256 of a file's plaintext, checked against what the document names."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.size = 0

    def update(self, plaintext: bytes) -> None:
        self._sha.update(plaintext)
        self.size += len(plaintext)

    def digest(self) -> bytes:
        return self._sha.digest()

    def finish(self, expected_size: int, expected_sha256: bytes) -> None:
        """Raises FileError `file.size_mismatch` or `file.digest_mismatch`; returns None if both match."""
        if self.size != expected_size:
            raise FileError(
                f"the file is {self.size} bytes, the document says {expected_size}", code="file.size_mismatch"
            )
        if not hmac.compare_digest(self._sha.digest(), expected_sha256):
            raise FileError("the file's SHA-256 is not the document's", code="file.digest_mismatch")
