"""The push's parts (service.peer_files.PartMaker): the file's STREAM ciphertext cut anywhere,
from any offset a resume starts at, byte for byte the ciphertext of the whole file."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from customs_gateway.core import filecrypt
from customs_gateway.core.errors import GatewayError
from customs_gateway.service.peer_files import PartMaker

KEY = bytes(range(32))
KEY_B64 = base64.urlsafe_b64encode(KEY).decode().rstrip("=")
SIZES = [0, 1, filecrypt.CHUNK - 1, filecrypt.CHUNK, filecrypt.CHUNK + 1, 3 * filecrypt.CHUNK + 17]
BYTES = bytes(i % 251 for i in range(max(SIZES)))


def whole(plain: bytes) -> bytes:
    enc = filecrypt.Encryptor(KEY)
    return b"".join(enc.feed(plain)) + enc.finish()


def source(plain: bytes, *, drop_last: bool = False) -> object:
    def chunks(first: int) -> Iterator[bytes]:
        n = filecrypt.chunk_count(len(plain)) - (1 if drop_last else 0)
        for i in range(first, n):
            yield plain[i * filecrypt.CHUNK : (i + 1) * filecrypt.CHUNK]

    return chunks


@settings(max_examples=60, deadline=None)
@given(
    size=st.sampled_from(SIZES),
    data=st.data(),
)
def test_parts_from_any_offset_are_the_files_ciphertext(size: int, data: st.DataObject) -> None:
    plain = BYTES[:size]
    cipher = whole(plain)
    offset = data.draw(st.integers(0, len(cipher) - 1), label="offset")
    parts = PartMaker(source(plain), KEY_B64, size, offset)  # type: ignore[arg-type]
    inside = st.lists(st.integers(offset + 1, len(cipher) - 1), max_size=6)
    cuts = data.draw(inside if offset + 1 < len(cipher) else st.just([]), label="cuts")
    got = bytearray()
    for start, end in zip([offset, *sorted(set(cuts))], [*sorted(set(cuts)), len(cipher)], strict=True):
        got += parts.take(end - start)
    assert parts.left == 0 and bytes(got) == cipher[offset:]


def test_a_part_longer_than_what_is_left_is_refused() -> None:
    parts = PartMaker(source(b"x" * 10), KEY_B64, 10, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"1\.\.left"):
        parts.take(27)


def test_a_file_shorter_than_its_size_fails_the_push() -> None:
    plain = bytes(3 * filecrypt.CHUNK)
    parts = PartMaker(source(plain, drop_last=True), KEY_B64, len(plain), 0)  # type: ignore[arg-type]
    with pytest.raises(GatewayError) as e:
        parts.take(parts.left)
    assert e.value.code == "file.push_failed"
