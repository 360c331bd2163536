"""File STREAM encryption (core.filecrypt): round trips, sizes, and one negative test per attack."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from customs_gateway.core import filecrypt as fc

KEY = bytes(range(32))
OTHER = bytes(32)


def seal(data: bytes, key: bytes = KEY) -> list[bytes]:
    enc = fc.Encryptor(key)
    return [*enc.feed(data), enc.finish()]


def open_all(chunks: list[bytes], key: bytes = KEY) -> bytes:
    dec = fc.Decryptor(key)
    out = [p for c in chunks for p in dec.feed(c)]
    return b"".join([*out, dec.finish()])


def code(chunks: list[bytes], key: bytes = KEY) -> str:
    with pytest.raises(fc.FileError) as e:
        open_all(chunks, key)
    return e.value.code


DATA = bytes(i % 251 for i in range(3 * fc.CHUNK + 5))


@pytest.mark.parametrize("n", [0, 1, fc.CHUNK - 1, fc.CHUNK, fc.CHUNK + 1, 3 * fc.CHUNK])
def test_round_trip_and_sizes(n: int) -> None:
    chunks = seal(DATA[:n])
    assert len(chunks) == fc.chunk_count(n)
    assert all(len(c) == fc.SEALED for c in chunks[:-1])
    assert sum(map(len, chunks)) == fc.ciphertext_size(n)
    assert fc.plaintext_size(fc.ciphertext_size(n)) == n
    assert open_all(chunks) == DATA[:n]


def test_impossible_ciphertext_sizes() -> None:
    for size in (0, 15, fc.SEALED + fc.TAG):
        with pytest.raises(fc.FileError, match="encrypts"):
            fc.plaintext_size(size)


def test_every_attack_is_refused() -> None:
    c = seal(DATA)
    assert code([c[1], c[0], *c[2:]]) == "file.auth_failed"  # reordered
    assert code([c[0], *c[2:]]) == "file.auth_failed"  # dropped
    assert code([c[0], c[0], *c[1:]]) == "file.auth_failed"  # duplicated
    assert code(c[:-1]) == "file.truncated"  # final chunk removed
    assert code([*c[:-1], c[-1][:-1]]) == "file.auth_failed"  # last bytes cut
    assert code([*c, b"x"]) == "file.auth_failed"  # extended: a short final chunk no longer opens
    full = seal(DATA[: 2 * fc.CHUNK])
    assert code([*full, b"x"]) == "file.trailing_data"  # a full final chunk followed by data
    assert code(c, OTHER) == "file.auth_failed"  # wrong key
    flipped = bytearray(c[1])
    flipped[7] ^= 1
    assert code([c[0], bytes(flipped), *c[2:]]) == "file.auth_failed"


def test_digest_checks_size_and_sha256() -> None:
    d = fc.FileDigest()
    d.update(DATA)
    d.finish(len(DATA), hashlib.sha256(DATA).digest())
    with pytest.raises(fc.FileError) as e:
        d.finish(len(DATA) + 1, hashlib.sha256(DATA).digest())
    assert e.value.code == "file.size_mismatch"
    with pytest.raises(fc.FileError) as e:
        d.finish(len(DATA), bytes(32))
    assert e.value.code == "file.digest_mismatch"


def test_random_access() -> None:
    c = seal(DATA)
    i = fc.chunk_index_for_offset(2 * fc.CHUNK + 3)
    start, end = fc.ciphertext_range(i, len(DATA))
    assert b"".join(c)[start:end] == c[i]
    assert fc.decrypt_chunk(KEY, i, c[i], last=False) == DATA[i * fc.CHUNK : (i + 1) * fc.CHUNK]


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=3 * fc.CHUNK // 2), st.lists(st.integers(1, 70000), max_size=8))
def test_round_trip_at_any_piece_boundaries(data: bytes, cuts: list[int]) -> None:
    enc, pos, sealed = fc.Encryptor(KEY), 0, []
    for n in cuts:
        sealed += enc.feed(data[pos : pos + n])
        pos += n
    sealed += [*enc.feed(data[pos:]), enc.finish()]
    blob, dec, out, pos = b"".join(sealed), fc.Decryptor(KEY), [], 0
    for n in reversed(cuts):
        out += dec.feed(blob[pos : pos + n])
        pos += n
    out += [*dec.feed(blob[pos:]), dec.finish()]
    assert b"".join(out) == data


def test_a_chunk_sealed_into_a_buffer_is_the_chunk_sealed() -> None:
    key = bytes(range(32))
    sealer = fc.ChunkSealer(key)
    plain = bytes(range(256)) * 256
    out = bytearray(fc.SEALED)
    sealer.seal_into(3, memoryview(plain), True, memoryview(out))
    assert bytes(out) == sealer.seal(3, plain, True) == fc.encrypt_chunk(key, 3, plain, True)
    with pytest.raises(ValueError, match="TAG"):
        sealer.seal_into(3, plain, True, memoryview(out)[:-1])


def decrypt_chunks_code(chunks: list[bytes], size: int, index: int = 0) -> str | None:
    """The refusal of `decrypt_chunks` over `chunks` laid out as a `size`-byte file's (None: opens)."""
    try:
        fc.decrypt_chunks(KEY, index, b"".join(chunks), size)
    except fc.FileError as e:
        return e.code
    return None


def test_decrypt_chunks_refuses_as_the_stream_decryptor_does() -> None:
    c = seal(DATA)
    n = len(DATA)
    assert b"".join(fc.decrypt_chunks(KEY, 0, b"".join(c), n)) == DATA
    assert fc.decrypt_chunks(KEY, 1, b"".join(c[1:3]), n) == [
        DATA[fc.CHUNK : 2 * fc.CHUNK],
        DATA[2 * fc.CHUNK : 3 * fc.CHUNK],
    ]
    assert fc.decrypt_chunks(KEY, 0, b"", n) == []
    empty = seal(b"")
    assert fc.decrypt_chunks(KEY, 0, empty[0], 0) == [b""]
    flipped = bytearray(c[2])
    flipped[7] ^= 1
    for chunks in ([c[1], c[0], *c[2:]], [c[0], c[1], bytes(flipped), c[3]], [c[0], c[0], *c[2:]]):
        assert decrypt_chunks_code(chunks, n) == code(chunks) == "file.auth_failed"
    with pytest.raises(fc.FileError) as e:
        fc.decrypt_chunks(OTHER, 0, b"".join(c), n)
    assert e.value.code == "file.auth_failed"
    # The final chunk dropped, read as a file one chunk shorter (what `check` sees).
    short = 3 * fc.CHUNK
    assert decrypt_chunks_code(c[:-1], short) == code(c[:-1]) == "file.truncated"
    # A file's final chunk where a chunk before the last belongs: data after the final chunk.
    full = seal(DATA[: 2 * fc.CHUNK])
    longer = [*full, seal(b"x")[0]]
    assert decrypt_chunks_code(longer, 2 * fc.CHUNK + 1) == code(longer) == "file.trailing_data"
    with pytest.raises(ValueError, match="inside a chunk"):
        fc.decrypt_chunks(KEY, 0, b"".join(c)[:-1], n)
