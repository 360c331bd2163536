"""core.xchacha: XChaCha20-Poly1305 on cryptography's ChaCha20-Poly1305, byte for byte libsodium's."""

from __future__ import annotations

import nacl.bindings
import nacl.exceptions
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from customs_gateway.core import xchacha

KEY = bytes(range(32))


def test_hchacha20_matches_the_drafts_vector() -> None:
    # draft-irtf-cfrg-xchacha-03, section 2.2.1
    subkey = xchacha.hchacha20(KEY, bytes.fromhex("000000090000004a0000000031415927"))
    assert subkey.hex() == "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc"


@settings(max_examples=200, deadline=None)
@given(
    key=st.binary(min_size=32, max_size=32),
    nonce=st.binary(min_size=24, max_size=24),
    plain=st.binary(max_size=3000),
    aad=st.binary(max_size=64),
)
def test_same_bytes_as_libsodium_both_ways(key: bytes, nonce: bytes, plain: bytes, aad: bytes) -> None:
    ours = xchacha.encrypt(key, nonce, plain, aad)
    assert ours == nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, aad, nonce, key)
    assert nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(ours, aad, nonce, key) == plain
    assert xchacha.decrypt(key, nonce, ours, aad) == plain


def test_a_full_chunk_matches_libsodium() -> None:
    plain = bytes(range(256)) * 256  # 64 KiB
    nonce = bytes(range(100, 124))
    assert xchacha.encrypt(KEY, nonce, plain, b"ad") == nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plain, b"ad", nonce, KEY
    )


def _sealed() -> tuple[bytes, bytes]:
    nonce = bytes(24)
    return nonce, xchacha.encrypt(KEY, nonce, b"seizure report", b"aad")


@pytest.mark.parametrize(
    "change",
    ["key", "nonce_prefix", "nonce_suffix", "aad", "flip_ciphertext", "flip_tag", "truncated", "extended"],
)
def test_every_change_fails_to_open(change: str) -> None:
    nonce, ct = _sealed()
    key, aad = KEY, b"aad"
    if change == "key":
        key = bytes(31) + b"\x01"
    elif change == "nonce_prefix":  # the part that makes the subkey
        nonce = b"\x01" + nonce[1:]
    elif change == "nonce_suffix":  # the part that is ChaCha20-Poly1305's nonce
        nonce = nonce[:23] + b"\x01"
    elif change == "aad":
        aad = b"aae"
    elif change == "flip_ciphertext":
        ct = bytes([ct[0] ^ 1]) + ct[1:]
    elif change == "flip_tag":
        ct = ct[:-1] + bytes([ct[-1] ^ 1])
    elif change == "truncated":
        ct = ct[:-1]
    else:
        ct += b"\x00"
    with pytest.raises(xchacha.XChaChaError):
        xchacha.decrypt(key, nonce, ct, aad)
    with pytest.raises(nacl.exceptions.CryptoError):  # libsodium agrees
        nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(ct, aad, nonce, key)


@pytest.mark.parametrize(("key", "nonce"), [(bytes(31), bytes(24)), (bytes(32), bytes(12)), (bytes(33), bytes(24))])
def test_wrong_lengths_are_refused(key: bytes, nonce: bytes) -> None:
    with pytest.raises(ValueError, match="XChaCha20-Poly1305 takes"):
        xchacha.encrypt(key, nonce, b"x", b"")
    with pytest.raises(ValueError):
        xchacha.hchacha20(key, nonce[:16] if len(key) != 32 else bytes(15))
