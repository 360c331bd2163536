"""Private key files at rest: vectors, and every way a file can be wrong is a KeyFileError.

Tests use argon2id at its minimum cost (opslimit=1, memlimit=8 KiB) for speed; one test runs
the defaults.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nacl.bindings
import nacl.pwhash
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from customs_gateway.core.encoding import b64url, json_bytes, unb64url
from customs_gateway.core.errors import KeyFileError
from customs_gateway.core.keyfile import (
    DEFAULT_MEMLIMIT,
    DEFAULT_OPSLIMIT,
    FORMAT,
    KeyFileMeta,
    open_private_key,
    read_meta,
    seal_private_key,
)

V = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "keyfile.json").read_text(encoding="utf-8"))
FAST = {"opslimit": 1, "memlimit": 8192}
META = KeyFileMeta("0123456789abcdef0123456789abcdef", "signing", "ed25519")
SEED = bytes(range(32))
PASS = b"test passphrase"
FILE = seal_private_key(SEED, META, PASS, **FAST)


@pytest.mark.parametrize("tc", [t for t in V["tests"] if t["result"] == "valid"], ids=lambda t: f"tc{t['tcId']}")
def test_valid_vector_byte_by_byte(tc: dict[str, Any]) -> None:
    data = tc["file"].encode()
    obj = json.loads(data)
    assert data.endswith(b"\n") and data == json_bytes(obj) + b"\n"
    kdf = obj["kdf"]
    salt, nonce = bytes.fromhex(tc["salt_hex"]), bytes.fromhex(tc["nonce_hex"])
    assert unb64url(kdf["salt"]) == salt and unb64url(obj["aead"]["nonce"]) == nonce
    key = nacl.pwhash.argon2id.kdf(
        32, tc["passphrase"].encode(), salt, opslimit=kdf["opslimit"], memlimit=kdf["memlimit"]
    )
    assert bytes(key).hex() == tc["derived_key_hex"]
    aad = json_bytes({k: v for k, v in obj.items() if k != "ciphertext"})
    assert aad == tc["aad"].encode()
    ct = bytes.fromhex(tc["ciphertext_hex"])
    assert len(ct) == 32 + 16
    seed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(ct, aad, nonce, key)
    assert seed.hex() == tc["seed"]
    meta, seed2 = open_private_key(data, tc["passphrase"].encode())
    assert (meta, seed2.hex()) == (KeyFileMeta(tc["kid"], tc["use"], tc["alg"]), tc["seed"])
    # sealing with the same salt and nonce reproduces the file exactly
    stream = iter([salt, nonce])
    again = seal_private_key(
        seed2,
        meta,
        tc["passphrase"].encode(),
        opslimit=kdf["opslimit"],
        memlimit=kdf["memlimit"],
        randbytes=lambda n: next(stream),
    )
    assert again == data


@pytest.mark.parametrize(
    "tc", [t for t in V["tests"] if t["result"] == "invalid"], ids=lambda t: f"tc{t['tcId']}-{t['comment'][:40]}"
)
def test_invalid_vectors(tc: dict[str, Any]) -> None:
    with pytest.raises(KeyFileError) as ei:
        open_private_key(tc["file"].encode(), tc["passphrase"].encode())
    assert ei.value.code == tc["error"], ei.value.detail


def test_round_trip_and_metadata() -> None:
    assert open_private_key(FILE, PASS) == (META, SEED)
    assert read_meta(FILE) == META
    obj = json.loads(FILE)
    assert obj["format"] == FORMAT and obj["kdf"]["name"] == "argon2id"
    assert SEED.hex() not in FILE.decode() and b64url(SEED) not in FILE.decode()


def test_default_cost_round_trip() -> None:
    data = seal_private_key(SEED, META, PASS)
    kdf = json.loads(data)["kdf"]
    assert (kdf["opslimit"], kdf["memlimit"]) == (DEFAULT_OPSLIMIT, DEFAULT_MEMLIMIT)
    assert open_private_key(data, PASS) == (META, SEED)


def test_wrong_passphrase() -> None:
    for wrong in (b"test passphrase ", b"Test passphrase", b"x", PASS + b"\x00"):
        with pytest.raises(KeyFileError) as ei:
            open_private_key(FILE, wrong)
        assert ei.value.code == "keyfile.passphrase_or_tampered"
        assert wrong.decode() not in ei.value.detail


def test_empty_passphrase_refused_when_sealing() -> None:
    with pytest.raises(KeyFileError) as ei:
        seal_private_key(SEED, META, b"", **FAST)
    assert ei.value.code == "keyfile.passphrase_empty"


def _edit(path: tuple[str, ...], value: Any) -> bytes:
    obj = json.loads(FILE)
    node = obj
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return json_bytes(obj) + b"\n"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("kid",), "fedcba9876543210fedcba9876543210"),
        (("use",), "encryption"),
        (("use",), "tls"),
        (("alg",), "x25519"),
        (("format",), "customs-gateway/v0 private-key"),
        (("kdf", "name"), "argon2i"),
        (("kdf", "opslimit"), 2),
        (("kdf", "memlimit"), 16384),
        (("kdf", "salt"), b64url(bytes(16))),
        (("kdf", "salt"), 12345),
        (("kdf", "extra"), 1),
        (("aead", "name"), "xchacha20poly1305"),
        (("aead", "nonce"), b64url(bytes(24))),
        (("aead", "nonce"), ["not", "text"]),
        (("aead", "extra"), 1),
        (("comment",), "added later"),
        (("kdf",), "argon2id"),
        (("aead",), None),
    ],
    ids=lambda v: "-".join(v) if isinstance(v, tuple) else None,
)
def test_every_header_field_is_authenticated(path: tuple[str, ...], value: Any) -> None:
    with pytest.raises(KeyFileError):
        open_private_key(_edit(path, value), PASS)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_any_flipped_ciphertext_bit_is_refused(data: st.DataObject) -> None:
    ct = bytearray(unb64url(json.loads(FILE)["ciphertext"]))
    bit = data.draw(st.integers(0, len(ct) * 8 - 1))
    ct[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(KeyFileError) as ei:
        open_private_key(_edit(("ciphertext",), b64url(bytes(ct))), PASS)
    assert ei.value.code == "keyfile.passphrase_or_tampered"


def test_truncated_at_every_length() -> None:
    for n in range(len(FILE) - 1):  # the last byte is the newline
        with pytest.raises(KeyFileError):
            open_private_key(FILE[:n], PASS)


def test_ciphertext_truncated_at_every_length() -> None:
    ct = unb64url(json.loads(FILE)["ciphertext"])
    for n in range(len(ct)):
        with pytest.raises(KeyFileError):
            open_private_key(_edit(("ciphertext",), b64url(ct[:n])), PASS)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_malformed_bytes_are_key_file_errors(data: bytes) -> None:
    with pytest.raises(KeyFileError):
        open_private_key(data, PASS)
    with pytest.raises(KeyFileError):
        read_meta(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from(["format", "kid", "use", "alg", "kdf", "aead", "ciphertext", "kdf.salt", "kdf.opslimit"]),
    value=json_values,
)
def test_malformed_fields_are_key_file_errors(field: str, value: Any) -> None:
    obj = json.loads(FILE)
    if "." in field:
        outer, inner = field.split(".")
        obj[outer][inner] = value
    else:
        obj[field] = value
    with pytest.raises(KeyFileError):
        open_private_key(json_bytes(obj), PASS)
