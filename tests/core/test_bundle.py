"""Key bundles: vectors, self-signature rules, validity windows and PeerKeys answers (G1)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from customs_gateway.core.bundle import (
    KeyBundle,
    KeyRecord,
    PeerKeys,
    SignedBundle,
    is_valid_identity,
    sign_bundle,
)
from customs_gateway.core.encoding import b64url, json_bytes, parse_ts
from customs_gateway.core.errors import DecodeError, GatewayError, KeyStateError, SchemaError, SignatureError
from customs_gateway.core.keys import ALG_ED25519, ALG_X25519, SUITE_X25519, DecryptionKey, SigningKey
from tests.ijson import twice

V = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "bundle.json").read_text(encoding="utf-8"))
VALID = [t for t in V["tests"] if t["result"] == "valid"]
INVALID = [t for t in V["tests"] if t["result"] == "invalid"]
UTC = dt.UTC
NB, NA = dt.datetime(2026, 1, 1, tzinfo=UTC), dt.datetime(2028, 1, 1, tzinfo=UTC)
T0 = dt.datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize("tc", VALID, ids=lambda tc: f"tc{tc['tcId']}")
def test_valid_vector(tc: dict[str, Any]) -> None:
    signed = SignedBundle.from_bytes(tc["signed_bundle"].encode())
    data = tc["bundle_bytes"].encode()
    assert signed.bundle_bytes == data
    assert signed.to_bytes() == tc["signed_bundle"].encode()
    bundle = signed.verify_self_signed()
    assert bundle.identity == tc["identity"]
    assert [r.kid for r in bundle.keys] == tc["kids"]
    assert bundle.to_bytes() == data  # canonical: re-encoding the parsed bundle gives the same bytes
    sig_input = bytes.fromhex(tc["signature_input_hex"])
    assert sig_input == b"customs-gateway/v1 key-bundle\n" + data
    sk = SigningKey(bytes.fromhex(tc["signing_seed"]))
    nacl.signing.VerifyKey(sk.public_raw).verify(sig_input, bytes.fromhex(tc["signature"]))
    assert sign_bundle(bundle, [sk]) == signed  # Ed25519 is deterministic
    fp = hashlib.sha256(data).hexdigest().upper()
    assert tc["fingerprint"] == signed.fingerprint() == " ".join(fp[i : i + 4] for i in range(0, 64, 4))


@pytest.mark.parametrize("tc", INVALID, ids=lambda tc: f"tc{tc['tcId']}-{tc['comment'][:40]}")
def test_invalid_vectors(tc: dict[str, Any]) -> None:
    with pytest.raises(GatewayError) as ei:
        SignedBundle.from_bytes(tc["signed_bundle"].encode()).verify_self_signed()
    assert ei.value.code == tc["error"], ei.value.detail


# --- building and rules -------------------------------------------------------------------------

SK = SigningKey(hashlib.sha256(b"bundle test signing").digest())
SK2 = SigningKey(hashlib.sha256(b"bundle test signing 2").digest())
WK = SigningKey(hashlib.sha256(b"bundle test witness").digest())
EK = DecryptionKey(ALG_X25519, hashlib.sha256(b"bundle test x25519").digest())


def records(**kw: Any) -> tuple[KeyRecord, ...]:
    return (
        KeyRecord(SK.kid, "signing", ALG_ED25519, SK.public_raw, NB, NA, **kw),
        KeyRecord(EK.kid, "encryption", ALG_X25519, EK.public.raw, NB, NA),
        KeyRecord(WK.kid, "witness", ALG_ED25519, WK.public_raw, NB, NA),
    )


def bundle(**kw: Any) -> KeyBundle:
    return KeyBundle("US-CBP", T0, kw.pop("keys", records()), (SUITE_X25519,), "PEM", **kw)


def test_round_trip_through_bytes() -> None:
    b = bundle(endpoint="https://gw.example:8443", serial=7)
    assert KeyBundle.from_bytes(b.to_bytes()) == b
    s = sign_bundle(b, [SK])
    assert SignedBundle.from_bytes(s.to_bytes()) == s
    assert s.verify_self_signed() == b


def test_a_signed_bundle_is_parsed_once() -> None:
    """The delivery worker reads our bundle for every request (the TLS certificate to present)."""
    s = SignedBundle.from_bytes(sign_bundle(bundle(serial=3), [SK]).to_bytes())
    assert s.bundle is s.bundle and s.bundle.serial == 3
    bad = SignedBundle(b'{"format":"nope"}', s.signatures)  # an error is not remembered: raised each time
    for _ in range(2):
        with pytest.raises(DecodeError):
            _ = bad.bundle


@pytest.mark.parametrize(
    ("part", "pair", "field"),
    [
        ("bundle", b'"serial":7', "bundle.serial"),
        ("bundle", b'"identity":"US-CBP"', "bundle.identity"),
        ("bundle", b'"use":"witness"', "bundle.keys[2].use"),
        ("signed", b'"v":1', "signed_bundle.v"),
    ],
)
def test_a_key_twice_in_a_signed_bundle_is_refused(part: str, pair: bytes, field: str) -> None:
    """I-JSON: a bundle its own keys sign, read one way here and another by a peer or an auditor,
    would be two bundles under one signature."""
    data = bundle(serial=7).to_bytes()
    if part == "bundle":
        data = twice(data, pair)
        sig = b64url(SK.sign("key-bundle", data))
        raw = json_bytes({"v": 1, "bundle": b64url(data), "signatures": [{"kid": SK.kid, "signature": sig}]})
    else:
        raw = twice(sign_bundle(bundle(serial=7), [SK]).to_bytes(), pair)
    with pytest.raises(SchemaError) as ei:
        SignedBundle.from_bytes(raw).verify_self_signed()
    assert (ei.value.code, ei.value.field) == ("schema.duplicate_key", field)


def test_a_bundle_written_another_way_still_reads() -> None:
    b = bundle(serial=7)
    data = json.dumps(json.loads(b.to_bytes()), indent=2).encode()
    raw = json.dumps(
        {
            "signatures": [{"signature": b64url(SK.sign("key-bundle", data)), "kid": SK.kid}],
            "bundle": b64url(data),
            "v": 1,
        }
    ).encode()
    assert SignedBundle.from_bytes(raw).verify_self_signed() == b


def test_rotation_bundle_signed_by_two_keys_needs_both_valid() -> None:
    recs = (*records(), KeyRecord(SK2.kid, "signing", ALG_ED25519, SK2.public_raw, T0, NA))
    b = bundle(keys=recs)
    assert sign_bundle(b, [SK, SK2]).verify_self_signed() == b
    s = sign_bundle(b, [SK, SK2])
    broken = SignedBundle(s.bundle_bytes, (s.signatures[0], (SK2.kid, bytes(64))))
    with pytest.raises(SignatureError):
        broken.verify_self_signed()
    with pytest.raises(ValueError):
        sign_bundle(b, [])


def test_with_keys_bumps_the_serial() -> None:
    b = bundle()
    later = T0 + dt.timedelta(days=1)
    b2 = b.with_keys(records(state="retiring"), later)
    assert (b2.serial, b2.issued_at, b2.keys[0].state) == (2, later, "retiring")


def test_peer_keys_answers() -> None:
    peer = PeerKeys(bundle())
    assert peer.verify_key(SK.kid, T0).raw == SK.public_raw
    assert peer.verify_key(WK.kid, T0, use="witness").raw == WK.public_raw
    cases = [
        (lambda: peer.verify_key("00" * 16, T0), "key.unknown"),
        (lambda: peer.verify_key(WK.kid, T0), "key.wrong_use"),
        (lambda: peer.verify_key(EK.kid, T0), "key.wrong_use"),
        (lambda: peer.verify_key(SK.kid, NA + dt.timedelta(milliseconds=1)), "key.expired"),
        (lambda: peer.verify_key(SK.kid, NB - dt.timedelta(milliseconds=1)), "key.not_yet_valid"),
    ]
    for fn, code in cases:
        with pytest.raises(KeyStateError) as ei:
            fn()
        assert ei.value.code == code
    assert peer.encryption_key(T0).kid == EK.kid


@pytest.mark.parametrize(
    ("kw", "at", "expected"),
    [
        ({}, NB, None),
        ({}, NA, None),
        ({"state": "revoked", "revoked_at": T0}, T0 - dt.timedelta(milliseconds=1), None),
        ({"state": "revoked", "revoked_at": T0}, T0, "key.revoked"),
        ({"state": "revoked"}, T0, "key.revoked"),
        ({"state": "retiring"}, T0, None),
        ({"state": "retired"}, T0, None),  # history stays verifiable (validity periods decide)
    ],
)
def test_valid_at(kw: dict[str, Any], at: dt.datetime, expected: str | None) -> None:
    assert records(**kw)[0].valid_at(at) == expected


def test_encryption_key_skips_inactive_and_expired() -> None:
    newer = DecryptionKey(ALG_X25519, hashlib.sha256(b"newer").digest())
    recs = (
        *records(),
        KeyRecord(newer.kid, "encryption", ALG_X25519, newer.public.raw, T0 - dt.timedelta(days=1), NA),
    )
    assert PeerKeys(bundle(keys=recs)).encryption_key(T0).kid == newer.kid
    retiring = dataclasses.replace(recs[-1], state="retiring")
    assert PeerKeys(bundle(keys=(*recs[:-1], retiring))).encryption_key(T0).kid == EK.kid
    with pytest.raises(GatewayError) as ei:
        PeerKeys(bundle()).encryption_key(NA + dt.timedelta(days=1))
    assert ei.value.code == "suite.none_shared"


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("US-CBP", True),
        ("CN-GACC", True),
        ("eu.olaf_2", True),
        ("A" * 64, True),
        ("A" * 65, False),
        ("", False),
        ("US CBP", False),
        ("../x", False),
        ("-x", False),
        ("US/CBP", False),
        ("US-CBP\n", False),
        ("海关", False),
    ],
)
def test_identity_names(name: str, ok: bool) -> None:
    assert is_valid_identity(name) is ok


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1000))
def test_random_bytes_are_decode_errors(data: bytes) -> None:
    with pytest.raises(DecodeError):
        SignedBundle.from_bytes(data)
    with pytest.raises(DecodeError):
        KeyBundle.from_bytes(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from(
        ["identity", "issued_at", "serial", "keys", "suites", "tls_certificate", "endpoint", "format"]
    ),
    value=json_values,
    key_field=st.sampled_from(["kid", "use", "alg", "public", "not_before", "not_after", "state", "revoked_at"]),
)
def test_mutated_bundles_only_raise_gateway_errors(field: str, value: Any, key_field: str) -> None:
    base = json.loads(bundle().to_bytes())
    for mutated in ({**base, field: value}, {**base, "keys": [{**base["keys"][0], key_field: value}]}):
        data = json_bytes(mutated)
        signed = SignedBundle(data, ((SK.kid, SK.sign("key-bundle", data)),))
        with contextlib.suppress(GatewayError):  # refusing is fine; anything else is a bug
            signed.verify_self_signed()


def test_parsed_timestamps_are_exact() -> None:
    rec = KeyRecord.from_dict(records()[0].to_dict())
    assert rec.not_before == parse_ts("2026-01-01T00:00:00.000Z")
