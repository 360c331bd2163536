"""tests/vectors/filecrypt.json: the file STREAM construction recomputed byte for byte, and each
vector's ciphertext decrypted back, whole and cut at arbitrary piece boundaries."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from customs_gateway.core import filecrypt

V = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "filecrypt.json").read_text(encoding="utf-8"))
KEY = bytes.fromhex(V["key"])


def _plain(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


@pytest.mark.parametrize("tc", V["tests"], ids=lambda t: str(t["tcId"]))
def test_file_vector(tc: dict[str, Any]) -> None:
    assert V["chunk"] == filecrypt.CHUNK
    plain = _plain(tc["size"])
    assert hashlib.sha256(plain).hexdigest() == tc["plaintext_sha256"]
    enc = filecrypt.Encryptor(KEY)
    chunks = [*enc.feed(plain), enc.finish()]
    ct = b"".join(chunks)
    assert len(ct) == tc["ciphertext_size"] == filecrypt.ciphertext_size(tc["size"])
    assert hashlib.sha256(ct).hexdigest() == tc["ciphertext_sha256"]
    assert chunks[0][:48].hex() == tc["first_chunk_head"] and chunks[-1][-48:].hex() == tc["last_chunk_tail"]
    assert [filecrypt.nonce(i, i == len(chunks) - 1).hex() for i in range(len(chunks))] == tc["nonces"]
    for step in (len(ct) or 1, 7, 65_000):
        dec = filecrypt.Decryptor(KEY)
        out = b"".join(b"".join(dec.feed(ct[i : i + step])) for i in range(0, len(ct), step)) + dec.finish()
        assert out == plain, step
