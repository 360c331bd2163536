"""tests/vectors/filerest.json: uploaded files at rest (`core.filerest`) — each chunk record and
the wrapped upload key recomputed byte for byte, and one refusal per way a record can be wrong:
another key, another index, another upload, cut short, a byte changed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from customs_gateway.core import filerest
from customs_gateway.core.filecrypt import CHUNK
from customs_gateway.core.storekey import StoreKey

V = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "filerest.json").read_text(encoding="utf-8"))
KEY = bytes.fromhex(V["key"])
FILE_ID = V["file_id"]


def _plain(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


@pytest.mark.parametrize("tc", [t for t in V["tests"] if t["result"] == "valid"], ids=lambda t: str(t["tcId"]))
def test_a_chunk_record_is_recomputed_byte_for_byte(tc: dict[str, Any]) -> None:
    assert V["chunk"] == CHUNK
    plain = _plain(tc["size"])
    assert filerest.chunk_aad(FILE_ID, tc["index"]).hex() == tc["aad_hex"]
    record = filerest.seal_chunk(KEY, FILE_ID, tc["index"], plain, bytes.fromhex(tc["nonce"]))
    assert len(record) == tc["size"] + filerest.OVERHEAD
    if "record" in tc:
        assert record.hex() == tc["record"]
    else:
        assert hashlib.sha256(record).hexdigest() == tc["record_sha256"] and record[-48:].hex() == tc["record_tail"]
        assert len(record) == filerest.RECORD
    assert filerest.open_chunk(KEY, FILE_ID, tc["index"], record) == plain


@pytest.mark.parametrize("tc", [t for t in V["tests"] if t["result"] == "invalid"], ids=lambda t: t["comment"])
def test_a_wrong_record_does_not_open(tc: dict[str, Any]) -> None:
    key = bytes.fromhex(tc.get("key", V["key"]))
    with pytest.raises(filerest.FileRestError) as e:
        filerest.open_chunk(key, tc.get("file_id", FILE_ID), tc["index"], bytes.fromhex(tc["record"]))
    assert e.value.code == tc["code"]


def test_the_wrapped_upload_key_is_recomputed_and_bound_to_its_upload() -> None:
    w = V["wrap"]
    wrap_key = StoreKey(bytes.fromhex(w["store_key"])).derive(w["wrap_key_label"])
    assert wrap_key.hex() == w["wrap_key"] and w["wrap_key_label"] == filerest.WRAP_KEY_LABEL
    wrapped = filerest.wrap_upload_key(wrap_key, FILE_ID, KEY, bytes.fromhex(w["nonce"]))
    assert wrapped.hex() == w["wrapped"]
    assert filerest.unwrap_upload_key(wrap_key, FILE_ID, wrapped) == KEY
    for args in (
        (bytes(32), FILE_ID, wrapped),  # another store key
        (wrap_key, "01950000-0000-7000-8000-0000000000f2", wrapped),  # another upload's record
        (wrap_key, FILE_ID, wrapped[:-1]),  # cut short
        (wrap_key, FILE_ID, wrapped[:-1] + bytes([wrapped[-1] ^ 1])),  # a byte changed
        (wrap_key, FILE_ID, b""),
    ):
        with pytest.raises(filerest.FileRestError):
            filerest.unwrap_upload_key(*args)


def test_sizes_and_bounds() -> None:
    assert filerest.RECORD == CHUNK + 40
    assert [filerest.data_size(n) for n in (0, 1, CHUNK - 1, CHUNK, 3 * CHUNK + 5)] == [
        0,
        0,
        0,
        40 + CHUNK,
        3 * (CHUNK + 40),
    ]
    with pytest.raises(ValueError):
        filerest.seal_chunk(KEY, FILE_ID, 0, bytes(CHUNK + 1), bytes(24))
    with pytest.raises(ValueError):
        filerest.seal_chunk(KEY, FILE_ID, 0, b"", bytes(12))
    with pytest.raises(filerest.FileRestError):
        filerest.open_chunk(KEY, FILE_ID, 0, bytes(filerest.RECORD + 1))


def test_sealing_into_a_buffer_makes_the_same_record() -> None:
    key, nonce = bytes(range(32)), bytes(range(24))
    plain = bytes(range(256)) * 256
    out = bytearray(filerest.RECORD)
    filerest.seal_chunk_into(key, FILE_ID, 3, memoryview(plain), nonce, memoryview(out))
    assert bytes(out) == filerest.seal_chunk(key, FILE_ID, 3, plain, nonce)
    assert filerest.open_chunk(key, FILE_ID, 3, bytes(out)) == plain
    with pytest.raises(ValueError, match="OVERHEAD"):
        filerest.seal_chunk_into(key, FILE_ID, 3, plain, nonce, memoryview(out)[:-1])
