"""Key ids, key loading and domain-separated signatures against tests/vectors/keyid.json."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from customs_gateway.core.errors import GatewayError, SignatureError
from customs_gateway.core.keys import (
    ALG_ED25519,
    LABELS,
    DecryptionKey,
    EncryptionKey,
    SigningKey,
    VerifyKey,
    domain,
    key_id,
)

V = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "keyid.json").read_text(encoding="utf-8"))
VALID = [t for t in V["tests"] if t["result"] == "valid"]
INVALID = [t for t in V["tests"] if t["result"] == "invalid"]


def _ids(tc: dict[str, Any]) -> str:
    return f"tc{tc['tcId']}-{tc.get('comment', tc['alg'])}"


@pytest.mark.parametrize("tc", VALID, ids=_ids)
def test_key_id_vectors(tc: dict[str, Any]) -> None:
    seed, public = bytes.fromhex(tc["seed"]), bytes.fromhex(tc["public"])
    assert len(public) == tc["public_len"]
    assert hashlib.sha256(public).hexdigest() == tc["sha256_public"]
    assert key_id(public) == tc["kid"] == tc["sha256_public"][:32]
    if tc["alg"] == ALG_ED25519:
        sk = SigningKey(seed)
        assert sk.public_raw == public and sk.kid == tc["kid"]
        assert VerifyKey(public).kid == tc["kid"]
    else:
        dk = DecryptionKey(tc["alg"], seed)
        assert dk.public.raw == public and dk.kid == tc["kid"]
        assert EncryptionKey(tc["alg"], public).kid == tc["kid"]


@pytest.mark.parametrize("tc", INVALID, ids=_ids)
def test_invalid_public_keys_are_refused(tc: dict[str, Any]) -> None:
    public = bytes.fromhex(tc["public"])
    with pytest.raises(GatewayError) as ei:
        VerifyKey(public) if tc["alg"] == ALG_ED25519 else EncryptionKey(tc["alg"], public)
    assert ei.value.code == tc["error"]


def test_domain_prefixes_are_exact_bytes() -> None:
    assert {d["label"] for d in V["domains"]} == set(LABELS)
    for d in V["domains"]:
        assert domain(d["label"]) == bytes.fromhex(d["prefix_hex"]) == f"customs-gateway/v1 {d['label']}\n".encode()
    with pytest.raises(ValueError):
        domain("anything-else")


def test_signature_is_over_domain_prefix_and_exact_bytes() -> None:
    sk = SigningKey(bytes(range(32)))
    sig = sk.sign("receipt", b"payload")
    nacl.signing.VerifyKey(sk.public_raw).verify(b"customs-gateway/v1 receipt\npayload", sig)
    sk.public.verify("receipt", b"payload", sig)
    for label in sorted(LABELS - {"receipt"}):  # a signature for one purpose never passes as another
        with pytest.raises(SignatureError):
            sk.public.verify(label, b"payload", sig)
    with pytest.raises(SignatureError):
        sk.public.verify("receipt", b"payload", sk.sign_raw(b"payload"))
    with pytest.raises(SignatureError, match="64 bytes"):
        sk.public.verify("receipt", b"payload", sig[:63])


def test_private_keys_never_show_their_seed() -> None:
    sk = SigningKey(bytes(range(32)))
    dk = DecryptionKey("x25519", bytes(range(32)))
    for text in (repr(sk), str(sk), repr(dk), str(dk)):
        assert bytes(range(32)).hex() not in text
        assert "seed" not in text


def test_bad_seed_lengths() -> None:
    with pytest.raises(ValueError):
        SigningKey(bytes(31))
    with pytest.raises(ValueError):
        DecryptionKey("x25519", bytes(31))
    with pytest.raises(ValueError):
        DecryptionKey("mlkem768-x25519", bytes(95))
    with pytest.raises(GatewayError):
        DecryptionKey("rsa", bytes(32))


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=2000))
def test_decryption_of_garbage_is_always_decrypt_error(data: bytes) -> None:
    for dk in (DecryptionKey("x25519", bytes(32)), DecryptionKey("mlkem768-x25519", bytes(96))):
        with pytest.raises(GatewayError) as ei:
            dk.open(data, b"info")
        assert ei.value.code == "decrypt.failed"
