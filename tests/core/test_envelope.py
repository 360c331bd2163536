"""Envelope build/open: vectors byte by byte, then every tamper, binding and time rule (G1-G4).

Every negative test asserts a GatewayError subclass with a specific code; the property tests
assert that nothing an attacker can send ever opens or raises anything but a GatewayError.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from customs_gateway.core.bundle import KeyBundle, KeyRecord, PeerKeys
from customs_gateway.core.encoding import b64url, json_bytes, parse_ts
from customs_gateway.core.envelope import (
    Document,
    Envelope,
    Header,
    OpenedEnvelope,
    SignedDocument,
    build_envelope,
    hpke_info,
    open_envelope,
    sign_envelope,
)
from customs_gateway.core.errors import (
    BindingError,
    DecodeError,
    DecryptError,
    GatewayError,
    KeyStateError,
    ReplayError,
    SignatureError,
    SuiteError,
)
from customs_gateway.core.keys import (
    ALG_ED25519,
    ALG_MLKEM768_X25519,
    ALG_X25519,
    SUITE_HYBRID,
    SUITE_X25519,
    DecryptionKey,
    SigningKey,
    domain,
)
from tests.ijson import twice

V = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "envelope.json").read_text(encoding="utf-8"))
VALID = [t for t in V["tests"] if t["result"] == "valid"]
INVALID = [t for t in V["tests"] if t["result"] == "invalid"]
US, CN, EU = "US-CBP", "CN-GACC", "EU-OLAF"
SKEW = 300.0
UTC = dt.UTC

# --- the vector keys ---------------------------------------------------------------------------

V_PEER = PeerKeys(KeyBundle.from_bytes(V["sender"]["bundle_bytes"].encode()))
V_SIGNERS = {name: SigningKey(bytes.fromhex(h)) for name, h in V["sender"]["signing_seeds"].items()}
V_RKEYS = {k["kid"]: DecryptionKey(k["alg"], bytes.fromhex(k["seed"])) for k in V["recipient"]["keys"]}


def keys_of(*keys: DecryptionKey) -> Callable[[str], DecryptionKey]:
    by_kid = {k.kid: k for k in keys}

    def lookup(kid: str) -> DecryptionKey:
        if kid not in by_kid:
            raise KeyStateError(f"unknown key {kid}", code="key.unknown", field="header.enc_kid")
        return by_kid[kid]

    return lookup


V_LOOKUP = keys_of(*V_RKEYS.values())


def _ids(tc: dict[str, Any]) -> str:
    return f"tc{tc['tcId']}"


@pytest.mark.parametrize("tc", VALID, ids=_ids)
def test_valid_vector_opens_and_every_byte_matches(tc: dict[str, Any]) -> None:
    raw = tc["envelope"].encode()
    env = Envelope.from_bytes(raw)
    assert env.to_bytes() == raw
    opened = open_envelope(
        env, me=tc["me"], peer=V_PEER, decryption_key=V_LOOKUP, now=parse_ts(tc["now"]), skew_seconds=SKEW
    )

    # header
    assert env.header_bytes == tc["header_bytes"].encode()
    assert json.loads(env.header_bytes) == tc["header"]
    # envelope signature: D("envelope") || header bytes || SHA-256(ciphertext), checked with raw Ed25519
    sig_input = bytes.fromhex(tc["envelope_signature_input_hex"])
    assert hashlib.sha256(env.ciphertext).hexdigest() == tc["ciphertext_sha256"]
    assert sig_input == b"customs-gateway/v1 envelope\n" + env.header_bytes + hashlib.sha256(env.ciphertext).digest()
    assert sig_input == domain("envelope") + env.signed_bytes()
    assert env.signature.hex() == tc["envelope_signature"]
    current = V_SIGNERS["current"]
    nacl.signing.VerifyKey(current.public_raw).verify(sig_input, env.signature)
    # HPKE: enc || ct, info binds from, to and id
    info = tc["hpke_info"].encode()
    assert (
        info
        == f"customs-gateway/v1 {US} {CN} {tc['document']['id']}".encode()
        == hpke_info(US, CN, tc["document"]["id"])
    )
    dk = V_RKEYS[tc["header"]["enc_kid"]]
    plaintext = dk.open(env.ciphertext, info)
    assert plaintext == tc["signed_document_bytes"].encode() == opened.signed_document.raw
    assert len(env.ciphertext) == tc["hpke_enc_len"] + len(plaintext) + tc["hpke_tag_len"]
    # signed document and its digest (what receipts bind)
    assert hashlib.sha256(plaintext).hexdigest() == tc["signed_document_sha256"] == opened.signed_document.digest.hex()
    assert json.loads(plaintext) == {
        "document": b64url(tc["document_bytes"].encode()),
        "kid": current.kid,
        "signature": b64url(bytes.fromhex(tc["document_signature"])),
    }
    # document and its signature: D("document") || document bytes
    doc_bytes = tc["document_bytes"].encode()
    assert opened.signed_document.document_bytes == doc_bytes
    doc_input = bytes.fromhex(tc["document_signature_input_hex"])
    assert doc_input == b"customs-gateway/v1 document\n" + doc_bytes
    nacl.signing.VerifyKey(current.public_raw).verify(doc_input, bytes.fromhex(tc["document_signature"]))
    assert json.loads(doc_bytes) == tc["document"]

    # rebuilding the deterministic parts gives the same bytes
    d = tc["document"]
    doc = Document(d["id"], d["from"], d["to"], d["type"], parse_ts(d["created_at"]), d["body"])
    assert doc == opened.document
    assert doc.to_bytes() == doc_bytes
    assert SignedDocument.create(doc, current).raw == plaintext
    h = tc["header"]
    header = Header(
        h["id"], h["seq"], h["from"], h["to"], h["type"], parse_ts(h["created_at"]), parse_ts(h["sent_at"]),
        h["attempt"], h["suite"], h["sig_kid"], h["enc_kid"],
    )  # fmt: skip
    assert header == opened.header
    assert header.to_bytes() == env.header_bytes
    assert sign_envelope(header, env.ciphertext, current).to_bytes() == raw


@pytest.mark.parametrize("tc", INVALID, ids=lambda tc: f"tc{tc['tcId']}-{tc['comment'][:40]}")
def test_invalid_vectors_are_refused_with_their_code(tc: dict[str, Any]) -> None:
    with pytest.raises(GatewayError) as ei:
        env = Envelope.from_bytes(tc["envelope"].encode())
        open_envelope(
            env, me=tc["me"], peer=V_PEER, decryption_key=V_LOOKUP, now=parse_ts(tc["now"]), skew_seconds=SKEW
        )
    assert ei.value.code == tc["error"], ei.value.detail


# --- a fresh pair of gateways for the property and rule tests ---------------------------------

T0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
NB, NA = dt.datetime(2026, 1, 1, tzinfo=UTC), dt.datetime(2027, 1, 1, tzinfo=UTC)
US_SIGN = SigningKey(hashlib.sha256(b"test us signing").digest())
CN_SIGN = SigningKey(hashlib.sha256(b"test cn signing").digest())
CN_HYBRID = DecryptionKey(ALG_MLKEM768_X25519, hashlib.sha512(b"test cn hybrid").digest()[:64] + bytes(32))
CN_X25519 = DecryptionKey(ALG_X25519, hashlib.sha256(b"test cn x25519").digest())
EU_X25519 = DecryptionKey(ALG_X25519, hashlib.sha256(b"test eu x25519").digest())


def rec(key: SigningKey | DecryptionKey, nb: dt.datetime = NB, na: dt.datetime = NA, **kw: Any) -> KeyRecord:
    if isinstance(key, SigningKey):
        return KeyRecord(key.kid, "signing", ALG_ED25519, key.public_raw, nb, na, **kw)
    return KeyRecord(key.kid, "encryption", key.alg, key.public.raw, nb, na, **kw)


def peer_keys(identity: str, *records: KeyRecord, suites: tuple[str, ...] = (SUITE_HYBRID, SUITE_X25519)) -> PeerKeys:
    return PeerKeys(KeyBundle(identity, NB, records, suites, "PEM"))


US_PEER = peer_keys(US, rec(US_SIGN))
CN_PEER = peer_keys(CN, rec(CN_SIGN), rec(CN_HYBRID), rec(CN_X25519))
CN_LOOKUP = keys_of(CN_HYBRID, CN_X25519)


def make(
    *,
    msg_id: str = "01950000-0000-7000-8000-000000000001",
    key: SigningKey = US_SIGN,
    to_key: DecryptionKey = CN_HYBRID,
    sender: str = US,
    recipient: str = CN,
    created_at: dt.datetime = T0,
    sent_at: dt.datetime = T0,
    body: dict[str, Any] | None = None,
    msg_type: str = "seizure-share",
) -> Envelope:
    doc = Document(msg_id, sender, recipient, msg_type, created_at, body if body is not None else {"n": 1})
    env, _, _ = build_envelope(doc, seq=1, sent_at=sent_at, attempt=1, signing_key=key, recipient_key=to_key.public)
    return env


def open_cn(
    env: Envelope,
    *,
    now: dt.datetime = T0,
    peer: PeerKeys = US_PEER,
    me: str = CN,
    lookup: Callable[[str], DecryptionKey] = CN_LOOKUP,
) -> OpenedEnvelope:
    return open_envelope(env, me=me, peer=peer, decryption_key=lookup, now=now, skew_seconds=SKEW)


def resign(env: Envelope, key: SigningKey = US_SIGN, *, ciphertext: bytes | None = None, **changes: Any) -> Envelope:
    header = dataclasses.replace(Header.from_bytes(env.header_bytes), **{"sig_kid": key.kid, **changes})
    return sign_envelope(header, env.ciphertext if ciphertext is None else ciphertext, key)


def refused(fn: Callable[[], object]) -> GatewayError:
    """Run an open that must fail: only a GatewayError is acceptable, success is a failure."""
    try:
        fn()
    except GatewayError as e:
        return e
    pytest.fail("a tampered or invalid envelope was accepted")


def flip_bit(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


HYBRID_ENV = make()
X25519_ENV = make(to_key=CN_X25519, msg_id="01950000-0000-7000-8000-000000000002")


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("to_key", [CN_HYBRID, CN_X25519], ids=["hybrid", "x25519"])
def test_round_trip_with_both_suites(to_key: DecryptionKey) -> None:
    body = {"notes": "假冒商品 counterfeit", "lines": [{"qty": 3}]}
    env = make(to_key=to_key, body=body)
    opened = open_cn(Envelope.from_bytes(env.to_bytes()))
    assert opened.document.body == body
    assert opened.header.suite == to_key.public.suite_name
    assert opened.header.enc_kid == to_key.kid
    assert opened.document.sender == US and opened.document.recipient == CN


def test_recipient_key_choice_follows_the_announced_suites() -> None:
    assert CN_PEER.encryption_key(T0).kid == CN_HYBRID.kid
    assert CN_PEER.encryption_key(T0, supported=(SUITE_X25519,)).kid == CN_X25519.kid
    x_first = peer_keys(CN, rec(CN_SIGN), rec(CN_HYBRID), rec(CN_X25519), suites=(SUITE_X25519, SUITE_HYBRID))
    assert x_first.encryption_key(T0).kid == CN_X25519.kid
    with pytest.raises(SuiteError) as ei:
        peer_keys(CN, rec(CN_SIGN), rec(CN_HYBRID), suites=(SUITE_HYBRID,)).encryption_key(
            T0, supported=(SUITE_X25519,)
        )
    assert ei.value.code == "suite.none_shared"


def test_inner_key_may_differ_after_rotation_if_valid_at_creation() -> None:
    new = SigningKey(hashlib.sha256(b"rotated").digest())
    peer = peer_keys(US, rec(US_SIGN, na=T0 - dt.timedelta(seconds=10)), rec(new, nb=T0 - dt.timedelta(seconds=20)))
    doc = Document("01950000-0000-7000-8000-000000000003", US, CN, "seizure-share", T0 - dt.timedelta(seconds=30), {})
    signed = SignedDocument.create(doc, US_SIGN)  # signed before the old key expired, sent after
    env, _, _ = build_envelope(
        doc, seq=1, sent_at=T0, attempt=2, signing_key=new, recipient_key=CN_HYBRID.public, signed=signed
    )
    assert open_cn(env, peer=peer).signed_document.kid == US_SIGN.kid


# --- tampering ----------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(part=st.sampled_from(["header", "ciphertext", "signature"]), data=st.data(), hybrid=st.booleans())
def test_any_flipped_bit_is_refused(part: str, data: st.DataObject, hybrid: bool) -> None:
    env = HYBRID_ENV if hybrid else X25519_ENV
    fields = {"header": env.header_bytes, "ciphertext": env.ciphertext, "signature": env.signature}
    bit = data.draw(st.integers(0, len(fields[part]) * 8 - 1), label="bit")
    fields[part] = flip_bit(fields[part], bit)
    bad = Envelope(fields["header"], fields["ciphertext"], fields["signature"])
    refused(lambda: open_cn(bad))
    refused(lambda: open_cn(Envelope.from_bytes(bad.to_bytes())))


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_flipped_bit_in_the_wire_bytes_is_refused(data: st.DataObject) -> None:
    raw = X25519_ENV.to_bytes()
    bit = data.draw(st.integers(0, len(raw) * 8 - 1), label="bit")
    refused(lambda: open_cn(Envelope.from_bytes(flip_bit(raw, bit))))


@pytest.mark.parametrize("env", [HYBRID_ENV, X25519_ENV], ids=["hybrid", "x25519"])
def test_every_flipped_ciphertext_byte_re_signed_by_the_sender_fails_decryption(env: Envelope) -> None:
    # The outer signature no longer protects the ciphertext here: HPKE's AEAD must.
    for i in range(0, len(env.ciphertext), 7):
        ct = bytearray(env.ciphertext)
        ct[i] ^= 0x01
        assert refused(lambda ct=bytes(ct): open_cn(resign(env, ciphertext=ct))).code == "decrypt.failed"


def test_truncated_wire_bytes_at_every_length_are_refused() -> None:
    raw = X25519_ENV.to_bytes()
    for n in range(len(raw)):
        e = refused(lambda n=n: open_cn(Envelope.from_bytes(raw[:n])))
        assert isinstance(e, DecodeError)


@pytest.mark.parametrize("env", [HYBRID_ENV, X25519_ENV], ids=["hybrid", "x25519"])
def test_ciphertext_truncated_at_every_length_and_re_signed_is_refused(env: Envelope) -> None:
    for n in range(len(env.ciphertext)):
        e = refused(lambda n=n: open_cn(resign(env, ciphertext=env.ciphertext[:n])))
        assert isinstance(e, DecryptError)


def test_signature_truncated_at_every_length_is_refused() -> None:
    for n in range(64):
        bad = Envelope(HYBRID_ENV.header_bytes, HYBRID_ENV.ciphertext, HYBRID_ENV.signature[:n])
        assert isinstance(refused(lambda bad=bad: open_cn(bad)), SignatureError)


# --- binding (G3) -----------------------------------------------------------------------------


def test_wrong_recipient_refuses() -> None:
    e = refused(lambda: open_cn(HYBRID_ENV, me=EU))
    assert isinstance(e, BindingError) and e.code == "binding.recipient"


def test_documents_swapped_between_envelopes_fail_binding_or_decryption() -> None:
    a = make(msg_id="01950000-0000-7000-8000-00000000000a")
    b = make(msg_id="01950000-0000-7000-8000-00000000000b", body={"other": True})
    for header_of, ct_of in ((a, b), (b, a)):
        swapped = sign_envelope(Header.from_bytes(header_of.header_bytes), ct_of.ciphertext, US_SIGN)
        e = refused(lambda swapped=swapped: open_cn(swapped))
        assert e.code == "decrypt.failed" or e.code.startswith("binding.")


def test_sender_cannot_seal_one_id_under_another() -> None:
    doc = Document("01950000-0000-7000-8000-0000000000aa", US, CN, "seizure-share", T0, {})
    signed = SignedDocument.create(doc, US_SIGN)
    header_id = "01950000-0000-7000-8000-0000000000bb"
    ct = CN_HYBRID.public.seal(signed.raw, hpke_info(US, CN, header_id))
    header = Header(header_id, 1, US, CN, "seizure-share", T0, T0, 1, SUITE_HYBRID, US_SIGN.kid, CN_HYBRID.kid)
    assert refused(lambda: open_cn(sign_envelope(header, ct, US_SIGN))).code == "binding.id"


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("recipient", EU, "binding.to"),
        ("type", "seminar-notice", "binding.type"),
        ("created_at", T0 - dt.timedelta(seconds=1), "binding.created_at"),
    ],
)
def test_inner_document_must_match_the_header(field: str, value: Any, code: str) -> None:
    doc = dataclasses.replace(
        Document("01950000-0000-7000-8000-0000000000cc", US, CN, "seizure-share", T0, {}), **{field: value}
    )
    signed = SignedDocument.create(doc, US_SIGN)
    header = Header(doc.id, 1, US, CN, "seizure-share", T0, T0, 1, SUITE_HYBRID, US_SIGN.kid, CN_HYBRID.kid)
    ct = CN_HYBRID.public.seal(signed.raw, hpke_info(US, CN, doc.id))
    assert refused(lambda: open_cn(sign_envelope(header, ct, US_SIGN))).code == code


# --- a key twice in signed JSON (I-JSON, RFC 7493 §2.3) ----------------------------------------

DUP_ID = "01950000-0000-7000-8000-0000000000dd"
DUP_DOC = Document(DUP_ID, US, CN, "seizure-share", T0, {"n": 1, "m": {"a": "x"}})
DUP_HEADER = Header(DUP_ID, 1, US, CN, "seizure-share", T0, T0, 1, SUITE_HYBRID, US_SIGN.kid, CN_HYBRID.kid)


def signed_envelope(header_bytes: bytes, document_bytes: bytes, wrapper: bytes | None = None) -> Envelope:
    """An envelope the sender really signed (outer and inner signatures valid) around exact bytes."""
    inner = wrapper
    if inner is None:
        sig = US_SIGN.sign("document", document_bytes)
        inner = json_bytes({"document": b64url(document_bytes), "kid": US_SIGN.kid, "signature": b64url(sig)})
    ct = CN_HYBRID.public.seal(inner, hpke_info(US, CN, DUP_ID))
    return Envelope(header_bytes, ct, US_SIGN.sign("envelope", header_bytes + hashlib.sha256(ct).digest()))


@pytest.mark.parametrize(
    ("part", "pair", "field"),
    [
        ("document", b'"n":1', "document.body.n"),
        ("document", b'"a":"x"', "document.body.m.a"),
        ("document", b'"type":"seizure-share"', "document.type"),  # even with the same value
        ("header", b'"attempt":1', "header.attempt"),
        ("header", b'"enc_kid":"' + CN_HYBRID.kid.encode() + b'"', "header.enc_kid"),
        ("wrapper", b'"kid":"' + US_SIGN.kid.encode() + b'"', "signed_document.kid"),
    ],
)
def test_a_key_twice_in_any_signed_json_is_refused_naming_it(part: str, pair: bytes, field: str) -> None:
    header, document = DUP_HEADER.to_bytes(), DUP_DOC.to_bytes()
    wrapper = None
    if part == "document":
        document = twice(document, pair)
    elif part == "header":
        header = twice(header, pair)
    else:
        sig = b64url(US_SIGN.sign("document", document))
        wrapper = twice(json_bytes({"document": b64url(document), "kid": US_SIGN.kid, "signature": sig}), pair)
    e = refused(lambda: open_cn(signed_envelope(header, document, wrapper)))
    assert (e.code, e.field) == ("schema.duplicate_key", field)


def test_signed_json_need_not_be_canonical_to_open() -> None:
    """Key order and whitespace carry no meaning (docs/wire-format.md): bytes another sender
    writes differently open, and read the same as the canonical ones."""
    header = json.dumps(json.loads(DUP_HEADER.to_bytes()), indent=1).encode()
    doc_dict = json.loads(DUP_DOC.to_bytes())
    document = json.dumps(dict(reversed(list(doc_dict.items()))), indent=2).encode()
    sig = b64url(US_SIGN.sign("document", document))
    wrapper = json.dumps({"signature": sig, "kid": US_SIGN.kid, "document": b64url(document)}, indent=1).encode()
    assert header != DUP_HEADER.to_bytes() and document != DUP_DOC.to_bytes()
    opened = open_cn(signed_envelope(header, document, wrapper))
    assert opened.document == DUP_DOC and opened.header == DUP_HEADER
    assert opened.signed_document.document_bytes == document  # the bytes signed, never re-serialised


def test_surreptitious_forwarding_is_refused() -> None:
    # CN-GACC receives a US-CBP document, then forwards it as its own to EU-OLAF.
    opened = open_cn(HYBRID_ENV)
    eu_sees_cn = peer_keys(CN, rec(CN_SIGN))
    header = dataclasses.replace(
        opened.header, sender=CN, recipient=EU, sig_kid=CN_SIGN.kid, enc_kid=EU_X25519.kid, suite=SUITE_X25519
    )
    ct = EU_X25519.public.seal(opened.signed_document.raw, hpke_info(CN, EU, header.id))
    fwd = sign_envelope(header, ct, CN_SIGN)
    e = refused(
        lambda: open_envelope(fwd, me=EU, peer=eu_sees_cn, decryption_key=keys_of(EU_X25519), now=T0, skew_seconds=SKEW)
    )
    assert e.code == "key.unknown"  # the inner signature is US-CBP's, not CN-GACC's
    # ...and re-signing the inner document does not help: it still names US-CBP -> CN-GACC.
    resigned_doc = SignedDocument.create(opened.document, CN_SIGN)
    ct2 = EU_X25519.public.seal(resigned_doc.raw, hpke_info(CN, EU, header.id))
    fwd2 = sign_envelope(header, ct2, CN_SIGN)
    e2 = refused(
        lambda: open_envelope(
            fwd2, me=EU, peer=eu_sees_cn, decryption_key=keys_of(EU_X25519), now=T0, skew_seconds=SKEW
        )
    )
    assert e2.code == "binding.from"


def test_claimed_sender_must_be_the_peer() -> None:
    e = refused(lambda: open_cn(resign(HYBRID_ENV, sender=EU)))
    assert e.code == "binding.sender"


# --- keys (G1) --------------------------------------------------------------------------------


def test_wrong_decryption_key_refuses() -> None:
    other = DecryptionKey(ALG_MLKEM768_X25519, bytes(96))
    e = refused(lambda: open_cn(HYBRID_ENV, lookup=lambda kid: other))
    assert isinstance(e, DecryptError)
    e = refused(lambda: open_cn(HYBRID_ENV, lookup=lambda kid: CN_X25519))
    assert e.code == "suite.mismatch"


def test_wrong_sender_key_refuses() -> None:
    impostor = SigningKey(hashlib.sha256(b"impostor").digest())
    e = refused(lambda: open_cn(make(key=impostor)))
    assert isinstance(e, KeyStateError) and e.code == "key.unknown"
    # the same identity announcing only the impostor's key cannot open the real one either
    e = refused(lambda: open_cn(HYBRID_ENV, peer=peer_keys(US, rec(impostor))))
    assert e.code == "key.unknown"
    # a signature by a key of the right identity but over other bytes
    forged = Envelope(
        HYBRID_ENV.header_bytes, HYBRID_ENV.ciphertext, impostor.sign("envelope", HYBRID_ENV.signed_bytes())
    )
    assert isinstance(refused(lambda: open_cn(forged)), SignatureError)


def test_unknown_suite_and_unknown_key_id() -> None:
    assert isinstance(refused(lambda: open_cn(resign(HYBRID_ENV, suite="x448-hkdfsha512-aes256gcm"))), SuiteError)
    assert refused(lambda: open_cn(resign(HYBRID_ENV, enc_kid="ff" * 16))).code == "key.unknown"
    header = dataclasses.replace(Header.from_bytes(HYBRID_ENV.header_bytes), sig_kid="ff" * 16).to_bytes()
    ct = HYBRID_ENV.ciphertext
    no_such_kid = Envelope(header, ct, US_SIGN.sign("envelope", header + hashlib.sha256(ct).digest()))
    assert refused(lambda: open_cn(no_such_kid)).code == "key.unknown"


@pytest.mark.parametrize(
    ("record", "code"),
    [
        (dict(na=T0 - dt.timedelta(milliseconds=1)), "key.expired"),
        (dict(nb=T0 + dt.timedelta(milliseconds=1)), "key.not_yet_valid"),
        (dict(state="revoked", revoked_at=T0), "key.revoked"),
        (dict(state="revoked", revoked_at=T0 - dt.timedelta(days=1), revocation_reason="compromise"), "key.revoked"),
        (dict(state="revoked"), "key.revoked"),  # revoked without a time: verifies nothing
    ],
)
def test_signing_key_must_be_valid_at_sent_at(record: dict[str, Any], code: str) -> None:
    e = refused(lambda: open_cn(HYBRID_ENV, peer=peer_keys(US, rec(US_SIGN, **record))))
    assert isinstance(e, KeyStateError) and e.code == code


def test_validity_bounds_are_inclusive_and_revocation_is_not_retroactive() -> None:
    assert open_cn(HYBRID_ENV, peer=peer_keys(US, rec(US_SIGN, nb=T0, na=T0)))
    revoked_later = rec(US_SIGN, state="revoked", revoked_at=T0 + dt.timedelta(milliseconds=1))
    assert open_cn(HYBRID_ENV, peer=peer_keys(US, revoked_later))


def test_signing_key_with_another_use_is_refused() -> None:
    as_witness = KeyRecord(US_SIGN.kid, "witness", ALG_ED25519, US_SIGN.public_raw, NB, NA)
    assert refused(lambda: open_cn(HYBRID_ENV, peer=peer_keys(US, as_witness))).code == "key.wrong_use"


# --- time (G4) --------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", [1, -1], ids=["ahead", "behind"])
def test_skew_window_both_directions(direction: int) -> None:
    edge = T0 + direction * dt.timedelta(seconds=SKEW)
    assert open_cn(HYBRID_ENV, now=edge)  # exactly at the window edge: accepted
    for beyond in (dt.timedelta(milliseconds=1), dt.timedelta(hours=5)):
        e = refused(lambda beyond=beyond: open_cn(HYBRID_ENV, now=edge + direction * beyond))
        assert isinstance(e, ReplayError) and e.code == "replay.skew" and e.field == "header.sent_at"


def test_created_after_sent_is_refused() -> None:
    env = make(created_at=T0 + dt.timedelta(seconds=1), sent_at=T0)
    e = refused(lambda: open_cn(env))
    assert isinstance(e, BindingError) and e.code == "binding.created_at"


def test_old_document_sent_now_is_accepted() -> None:
    env = make(created_at=T0 - dt.timedelta(days=3), sent_at=T0)
    assert open_cn(env).document.created_at == T0 - dt.timedelta(days=3)


# --- garbage ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
b64 = st.binary(max_size=300).map(b64url)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_are_only_ever_decode_errors(data: bytes) -> None:
    with pytest.raises(DecodeError):
        Envelope.from_bytes(data)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_random_json_is_only_ever_decode_errors(value: Any) -> None:
    with pytest.raises(DecodeError):
        Envelope.from_bytes(json_bytes(value))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header=st.one_of(b64, st.fixed_dictionaries({}, optional={
        "id": st.text(max_size=70), "seq": st.integers(), "from": st.sampled_from([US, CN, ""]),
        "to": st.sampled_from([CN, US]), "type": st.sampled_from(["seizure-share", "x"]),
        "created_at": st.sampled_from(["2026-03-01T12:00:00.000Z", "2026-13-01T12:00:00.000Z", 5]),
        "sent_at": st.sampled_from(["2026-03-01T12:00:00.000Z", "2026-02-30T12:00:00.000Z"]),
        "attempt": st.integers(), "suite": st.sampled_from([SUITE_HYBRID, "nope"]),
        "sig_kid": st.sampled_from([US_SIGN.kid, "x"]), "enc_kid": st.sampled_from([CN_HYBRID.kid, ""]),
        "extra": json_values,
    }).map(lambda d: b64url(json_bytes(d)))),
    ciphertext=b64,
    signature=b64,
    v=st.sampled_from([1, 1, 2, "1", None]),
)  # fmt: skip
def test_random_envelopes_never_open_and_only_raise_gateway_errors(
    header: str, ciphertext: str, signature: str, v: Any
) -> None:
    raw = json_bytes({"v": v, "header": header, "ciphertext": ciphertext, "signature": signature})
    refused(lambda: open_cn(Envelope.from_bytes(raw)))


@settings(max_examples=200, deadline=None)
@given(plaintext=st.one_of(st.binary(max_size=300), json_values.map(json_bytes)))
def test_authenticated_garbage_plaintext_only_raises_gateway_errors(plaintext: bytes) -> None:
    # The peer itself (valid outer signature, correct HPKE info) sends a nonsense plaintext.
    header = Header.from_bytes(HYBRID_ENV.header_bytes)
    ct = CN_X25519.public.seal(plaintext, hpke_info(US, CN, header.id))
    env = sign_envelope(dataclasses.replace(header, suite=SUITE_X25519, enc_kid=CN_X25519.kid), ct, US_SIGN)
    refused(lambda: open_cn(env))


@settings(max_examples=200, deadline=None)
@given(document=json_values, kid=st.sampled_from([US_SIGN.kid, "", "zz"]))
def test_authenticated_garbage_documents_only_raise_gateway_errors(document: Any, kid: str) -> None:
    # Even a validly signed inner document with nonsense content is refused cleanly.
    doc_bytes = json_bytes(document)
    inner = json_bytes(
        {"document": b64url(doc_bytes), "kid": kid, "signature": b64url(US_SIGN.sign("document", doc_bytes))}
    )
    header = dataclasses.replace(Header.from_bytes(HYBRID_ENV.header_bytes), suite=SUITE_X25519, enc_kid=CN_X25519.kid)
    env = sign_envelope(header, CN_X25519.public.seal(inner, hpke_info(US, CN, header.id)), US_SIGN)
    refused(lambda: open_cn(env))


# --- hostile JSON and timestamps (regressions for core/encoding.py) -----------------------------


def test_deeply_nested_json_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        Envelope.from_bytes(b"[" * 100_000 + b"]" * 100_000)


def test_timestamps_with_non_ascii_digits_are_refused() -> None:
    with pytest.raises(DecodeError):
        parse_ts("\u0662\u0660\u0662\u0666-03-01T12:00:00.000Z")  # Arabic-Indic digits for 2026
