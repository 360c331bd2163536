"""Receipts and refusals (G4, G6): vectors, binding to exactly one message, key validity in time."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from customs_gateway.core.bundle import KeyBundle, KeyRecord, PeerKeys
from customs_gateway.core.encoding import b64url, json_object, parse_ts
from customs_gateway.core.errors import (
    BindingError,
    DecodeError,
    GatewayError,
    KeyStateError,
    SchemaError,
    SignatureError,
)
from customs_gateway.core.keys import ALG_ED25519, SigningKey, VerifyKey
from customs_gateway.core.receipt import (
    Statement,
    make_receipt,
    make_refusal,
    verify_receipt,
    verify_refusal,
)
from tests.ijson import twice

V = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "receipt.json").read_text(encoding="utf-8"))
PEER = PeerKeys(KeyBundle.from_bytes(V["receiver"]["bundle_bytes"].encode()))
KEY = SigningKey(bytes.fromhex(V["receiver"]["seed"]))
US, CN = "US-CBP", "CN-GACC"
T0 = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
MSG = "01950000-0000-7000-8000-000000000001"
DIGEST = hashlib.sha256(b"a signed document").digest()


def _statement(tc: dict[str, Any]) -> Statement:
    return Statement.from_dict(tc["label"], json_object(tc["statement"].encode()))


def _verify(tc: dict[str, Any], st_: Statement) -> object:
    exp = dict(tc["expect"])
    if tc["label"] == "receipt":
        exp["document_sha256"] = bytes.fromhex(exp["document_sha256"])
        return verify_receipt(st_, key_for=PEER.verify_key, **exp)
    exp["envelope_sha256"] = bytes.fromhex(exp["envelope_sha256"])
    return verify_refusal(st_, key_for=PEER.verify_key, **exp)


@pytest.mark.parametrize("tc", [t for t in V["tests"] if t["result"] == "valid"], ids=lambda t: t["comment"])
def test_valid_vectors(tc: dict[str, Any]) -> None:
    st_ = _statement(tc)
    payload = tc["payload_bytes"].encode()
    assert st_.payload == payload
    assert st_.to_bytes() == tc["statement"].encode()
    sig_input = bytes.fromhex(tc["signature_input_hex"])
    assert sig_input == f"customs-gateway/v1 {tc['label']}\n".encode() + payload
    nacl.signing.VerifyKey(KEY.public_raw).verify(sig_input, bytes.fromhex(tc["signature"]))
    assert json.loads(tc["statement"]) == {
        tc["label"]: b64url(payload),
        "kid": KEY.kid,
        "signature": b64url(st_.signature),
    }
    result = _verify(tc, st_)
    if tc["label"] == "receipt":
        assert result == verify_receipt(
            make_receipt(
                message_id=tc["expect"]["message_id"],
                sender=tc["expect"]["sender"],
                receiver=tc["expect"]["receiver"],
                document_sha256=bytes.fromhex(tc["expect"]["document_sha256"]),
                received_at=parse_ts(tc["received_at"]),
                key=KEY,
            ),
            key_for=PEER.verify_key,
            message_id=tc["expect"]["message_id"],
            sender=tc["expect"]["sender"],
            receiver=tc["expect"]["receiver"],
            document_sha256=bytes.fromhex(tc["expect"]["document_sha256"]),
        )


@pytest.mark.parametrize(
    "tc", [t for t in V["tests"] if t["result"] == "invalid"], ids=lambda t: f"tc{t['tcId']}-{t['comment'][:40]}"
)
def test_invalid_vectors(tc: dict[str, Any]) -> None:
    with pytest.raises(GatewayError) as ei:
        _verify(tc, _statement(tc))
    assert ei.value.code == tc["error"], ei.value.detail


# --- rules --------------------------------------------------------------------------------------

OLD = SigningKey(hashlib.sha256(b"old receiver key").digest())
NEW = SigningKey(hashlib.sha256(b"new receiver key").digest())
ROTATION = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
ROTATED = PeerKeys(
    KeyBundle(
        CN,
        T0,
        (
            KeyRecord(
                OLD.kid, "signing", ALG_ED25519, OLD.public_raw, dt.datetime(2025, 1, 1, tzinfo=dt.UTC), ROTATION
            ),
            KeyRecord(
                NEW.kid, "signing", ALG_ED25519, NEW.public_raw, ROTATION, dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
            ),
        ),
        (),
        "PEM",
    )
)


def receipt(key: SigningKey = NEW, received_at: dt.datetime = T0, **kw: Any) -> Statement:
    args: dict[str, Any] = {"message_id": MSG, "sender": US, "receiver": CN, "document_sha256": DIGEST}
    args.update(kw)
    return make_receipt(received_at=received_at, key=key, **args)


def check(st_: Statement, key_for: Callable[[str, dt.datetime], VerifyKey] = ROTATED.verify_key) -> object:
    return verify_receipt(st_, message_id=MSG, sender=US, receiver=CN, document_sha256=DIGEST, key_for=key_for)


def test_round_trip_through_the_wire_form() -> None:
    st_ = receipt()
    again = Statement.from_dict("receipt", json_object(st_.to_bytes()))
    r = check(again)
    assert r == check(st_)
    assert r.received_at == T0 and r.kid == NEW.kid and r.document_sha256 == DIGEST  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("pair", "field"),
    [(b'"message_id":"' + MSG.encode() + b'"', "receipt.message_id"), (b'"to":"' + CN.encode() + b'"', "receipt.to")],
)
def test_a_receipt_with_a_key_twice_is_refused(pair: bytes, field: str) -> None:
    """I-JSON: signed bytes naming the document twice would prove receipt of whichever one the
    verifying parser keeps."""
    payload = twice(receipt().payload, pair)
    st_ = Statement("receipt", payload, NEW.kid, NEW.sign("receipt", payload))
    with pytest.raises(SchemaError) as ei:
        check(st_)
    assert (ei.value.code, ei.value.field) == ("schema.duplicate_key", field)


def test_a_receipt_written_another_way_still_verifies() -> None:
    payload = json.dumps(json.loads(receipt().payload), indent=1).encode()
    assert check(Statement("receipt", payload, NEW.kid, NEW.sign("receipt", payload)))


def test_old_receipts_stay_verifiable_after_rotation() -> None:
    assert check(receipt(OLD, ROTATION - dt.timedelta(days=1)))
    with pytest.raises(KeyStateError) as ei:
        check(receipt(OLD, ROTATION + dt.timedelta(seconds=1)))
    assert ei.value.code == "key.expired"
    with pytest.raises(KeyStateError) as ei:
        check(receipt(NEW, ROTATION - dt.timedelta(seconds=1)))
    assert ei.value.code == "key.not_yet_valid"


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"message_id": "01950000-0000-7000-8000-0000000000ff"}, "receipt.message_id"),
        ({"sender": "EU-OLAF"}, "receipt.from"),
        ({"receiver": "EU-OLAF"}, "receipt.to"),
        ({"document_sha256": bytes(32)}, "receipt.document_sha256"),
    ],
)
def test_receipt_about_another_message_is_refused(kw: dict[str, Any], code: str) -> None:
    with pytest.raises(BindingError) as ei:
        check(receipt(**kw))
    assert ei.value.code == code


def test_refusal_round_trip_and_binding() -> None:
    env = hashlib.sha256(b"the refused envelope").digest()
    st_ = make_refusal(
        message_id=MSG,
        sender=US,
        receiver=CN,
        code="replay.skew",
        detail="sent_at is 400 s behind",
        retryable=False,
        refused_at=T0,
        envelope_sha256=env,
        key=NEW,
    )
    ok = {"message_id": MSG, "sender": US, "receiver": CN, "key_for": ROTATED.verify_key}
    r = verify_refusal(Statement.from_dict("refusal", json_object(st_.to_bytes())), envelope_sha256=env, **ok)
    assert (r.code, r.retryable, r.refused_at) == ("replay.skew", False, T0)
    verify_refusal(st_, **ok)  # an auditor, who never saw the envelope
    for changed, code in (
        ({"message_id": "other"}, "refusal.message_id"),
        ({"sender": "EU-OLAF"}, "refusal.from"),
        ({"receiver": "EU-OLAF"}, "refusal.to"),
        ({"envelope_sha256": hashlib.sha256(b"another envelope").digest()}, "refusal.envelope_sha256"),
    ):
        with pytest.raises(BindingError) as info:
            verify_refusal(st_, **{**ok, "envelope_sha256": env, **changed})  # type: ignore[arg-type]
        assert info.value.code == code
    with pytest.raises(DecodeError):
        verify_refusal(receipt(), **ok)
    with pytest.raises(DecodeError):
        check(st_)


@settings(max_examples=200, deadline=None)
@given(part=st.sampled_from(["payload", "signature"]), data=st.data())
def test_any_flipped_bit_is_refused(part: str, data: st.DataObject) -> None:
    st_ = receipt()
    target = st_.payload if part == "payload" else st_.signature
    bit = data.draw(st.integers(0, len(target) * 8 - 1))
    flipped = bytearray(target)
    flipped[bit // 8] ^= 1 << (bit % 8)
    bad = (
        Statement("receipt", bytes(flipped), st_.kid, st_.signature)
        if part == "payload"
        else Statement("receipt", st_.payload, st_.kid, bytes(flipped))
    )
    with pytest.raises(GatewayError):
        check(bad)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["receipt", "kid", "signature", "x"]),
        st.one_of(st.text(max_size=40), st.integers(), st.none(), st.binary(max_size=40).map(b64url)),
    )
)
def test_garbage_statements_only_raise_gateway_errors(d: dict[str, Any]) -> None:
    with pytest.raises(GatewayError):
        check(Statement.from_dict("receipt", d))


def test_wrong_signature_is_signature_error() -> None:
    st_ = receipt()
    with pytest.raises(SignatureError):
        check(Statement("receipt", st_.payload, st_.kid, OLD.sign("receipt", st_.payload)))
