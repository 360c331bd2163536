"""XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha-03) on `cryptography`'s ChaCha20-Poly1305.

libsodium's XChaCha20-Poly1305 (PyNaCl) runs at about 1 GB/s on one core here; OpenSSL's
ChaCha20-Poly1305 behind `cryptography` at about 3 GB/s. XChaCha20-Poly1305 *is* ChaCha20-Poly1305
under a subkey: ``subkey = HChaCha20(key, nonce[:16])``, nonce ``0x00000000 ‖ nonce[16:]``. The
subkey is computed from one ChaCha20 block: the block function adds the input state to the
rounds' output, HChaCha20 does not, so subtracting the input words (the constants and the 16
nonce bytes) from words 0-3 and 12-15 of the keystream block gives HChaCha20's output. The result
is byte for byte libsodium's (`tests/core/test_xchacha.py` checks both ways, and the draft's
HChaCha20 vector).

Used where bulk data is sealed at rest (`core.filerest`); small values keep PyNaCl.
"""

from __future__ import annotations

import struct
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 24
TAG_BYTES: Final = 16
_SIGMA: Final = struct.unpack("<4I", b"expand 32-byte k")
_ZEROS: Final = bytes(64)
_MASK: Final = 0xFFFFFFFF

Buffer = bytes | bytearray | memoryview


class XChaChaError(ValueError):
    """A ciphertext that does not open: another key, nonce or associated data, or altered."""


def hchacha20(key: bytes, nonce16: bytes) -> bytes:
    """HChaCha20(key, 16-byte input): the 32-byte subkey."""
    if len(key) != KEY_BYTES or len(nonce16) != 16:
        raise ValueError("HChaCha20 takes a 32-byte key and a 16-byte input")
    block = Cipher(algorithms.ChaCha20(key, nonce16), mode=None).encryptor().update(_ZEROS)
    w = struct.unpack("<16I", block)
    n = struct.unpack("<4I", nonce16)
    return struct.pack(
        "<8I",
        *((w[i] - _SIGMA[i]) & _MASK for i in range(4)),
        *((w[12 + i] - n[i]) & _MASK for i in range(4)),
    )


def _aead(key: bytes, nonce: bytes) -> tuple[ChaCha20Poly1305, bytes]:
    if len(key) != KEY_BYTES or len(nonce) != NONCE_BYTES:
        raise ValueError("XChaCha20-Poly1305 takes a 32-byte key and a 24-byte nonce")
    return ChaCha20Poly1305(hchacha20(key, nonce[:16])), b"\x00\x00\x00\x00" + nonce[16:]


def encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """ciphertext ‖ tag, as libsodium's crypto_aead_xchacha20poly1305_ietf_encrypt."""
    aead, n12 = _aead(key, nonce)
    return aead.encrypt(n12, plaintext, aad)


def encrypt_into(key: bytes, nonce: bytes, plaintext: Buffer, aad: bytes, out: Buffer) -> None:
    """`encrypt`, written into `out` (exactly len(plaintext) + TAG_BYTES bytes): no copy made."""
    aead, n12 = _aead(key, nonce)
    aead.encrypt_into(n12, plaintext, aad, out)


def decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """The plaintext of ciphertext ‖ tag; XChaChaError if it does not open."""
    aead, n12 = _aead(key, nonce)
    try:
        return aead.decrypt(n12, ciphertext, aad)
    except InvalidTag as e:
        raise XChaChaError("the ciphertext does not open") from e
