"""Witness rules, driven directly: what a gateway cosigns of its peer's log, and what it refuses
(C2SP tlog-witness): a checkpoint by a key of the log valid now, consistent with the last one
cosigned; each refusal with its own code."""

from __future__ import annotations

import datetime as dt

import pytest

from customs_gateway.core.audit import NoteSigner, log_origin
from customs_gateway.core.bundle import KeyRecord
from customs_gateway.core.checkpoint import Checkpoint, sign_note
from customs_gateway.core.errors import Conflict, DecodeError, GatewayError
from customs_gateway.core.keys import ALG_ED25519, SigningKey
from customs_gateway.core.merkle import ProofError, consistency_proof, leaf_hash, root_from_leaves
from customs_gateway.core.witness import ForkError, check_advance, encode_request, parse_request

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 6, 1, tzinfo=UTC)
ORIGIN = log_origin("US-CBP")
KEY, OTHER = SigningKey(b"\x01" * 32), SigningKey(b"\x02" * 32)
LEAVES = [leaf_hash(b"entry %d" % i) for i in range(20)]


def rec(k: SigningKey, **kw: object) -> KeyRecord:
    nb, na = dt.datetime(2026, 1, 1, tzinfo=UTC), dt.datetime(2027, 1, 1, tzinfo=UTC)
    return KeyRecord(k.kid, "signing", ALG_ED25519, k.public_raw, nb, na, **kw)  # type: ignore[arg-type]


def note(size: int, key: SigningKey = KEY, origin: str = ORIGIN, root: bytes | None = None) -> bytes:
    body = Checkpoint(origin, size, root or root_from_leaves(LEAVES[:size])).body()
    return sign_note(body, origin, NoteSigner(key))


def request(old: int, size: int, **kw: object) -> bytes:
    proof = consistency_proof(LEAVES, old, size) if 0 < old < size else []
    return encode_request(old, proof, note(size, **kw))  # type: ignore[arg-type]


def code_of(raw: bytes, keys: list[KeyRecord], now: dt.datetime = NOW) -> str:
    with pytest.raises(GatewayError) as info:
        parse_request(raw, ORIGIN, keys, now)
    return info.value.code


def test_a_request_by_a_valid_key_parses() -> None:
    req = parse_request(request(5, 9), ORIGIN, [rec(KEY)], NOW)
    assert (req.old_size, req.checkpoint.size, len(req.proof)) == (5, 9, len(consistency_proof(LEAVES, 5, 9)))


def test_a_checkpoint_by_a_revoked_or_expired_key_is_not_cosigned() -> None:
    assert code_of(request(0, 4), [rec(KEY, state="revoked", revoked_at=NOW - dt.timedelta(days=1))]) == (
        "audit.signature_invalid"
    )
    assert code_of(request(0, 4), [rec(KEY)], now=dt.datetime(2027, 2, 1, tzinfo=UTC)) == "audit.signature_invalid"
    # Revoked later than now: still good now.
    parse_request(request(0, 4), ORIGIN, [rec(KEY, revoked_at=NOW + dt.timedelta(days=1))], NOW)


def test_a_stranger_or_another_log_is_refused() -> None:
    assert code_of(request(0, 4, key=OTHER), [rec(KEY)]) == "audit.signature_invalid"
    other_origin = encode_request(0, [], note(4, origin=log_origin("CN-GACC")))
    assert code_of(other_origin, [rec(KEY)]) == "audit.signature_invalid"  # signed under another name


@pytest.mark.parametrize(
    "raw",
    [b"old 1\n" + note(4), b"new 1\n\n" + note(4), b"old 01\n\n" + note(4), b"old -1\n\n" + note(4)],
    ids=["no-blank-line", "not-old", "leading-zero", "negative"],
)
def test_malformed_requests(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_request(raw, ORIGIN, [rec(KEY)], NOW)


def test_too_long_a_proof() -> None:
    raw = b"old 1\n" + b"AAAA\n" * 65 + b"\n" + note(4)
    with pytest.raises(DecodeError) as info:
        parse_request(raw, ORIGIN, [rec(KEY)], NOW)
    assert info.value.field == "proof"


def _advance(old: int, size: int, stored_root: bytes | None, **kw: object) -> None:
    check_advance(parse_request(request(old, size, **kw), ORIGIN, [rec(KEY)], NOW), old, stored_root)


def test_advance_rules() -> None:
    _advance(0, 4, None)  # first checkpoint
    _advance(4, 9, root_from_leaves(LEAVES[:4]))  # consistent
    _advance(9, 9, root_from_leaves(LEAVES[:9]))  # the same checkpoint again
    req = parse_request(request(4, 9), ORIGIN, [rec(KEY)], NOW)
    with pytest.raises(Conflict) as held_other:
        check_advance(req, 5, root_from_leaves(LEAVES[:5]))
    assert held_other.value.code == "witness.size_mismatch"
    older = parse_request(encode_request(4, [], note(3)), ORIGIN, [rec(KEY)], NOW)
    with pytest.raises(Conflict) as rollback:
        check_advance(older, 4, root_from_leaves(LEAVES[:4]))
    assert rollback.value.code == "witness.size_mismatch"


def test_a_second_root_for_a_size_is_a_fork() -> None:
    forked = note(9, root=b"\x07" * 32)
    req = parse_request(encode_request(9, [], forked), ORIGIN, [rec(KEY)], NOW)
    with pytest.raises(ForkError) as info:
        check_advance(req, 9, root_from_leaves(LEAVES[:9]))
    assert info.value.code == "witness.fork"


def test_an_inconsistent_proof_is_refused() -> None:
    rewritten = [*LEAVES[:3], leaf_hash(b"rewritten"), *LEAVES[4:]]
    body = Checkpoint(ORIGIN, 9, root_from_leaves(rewritten[:9])).body()
    raw = encode_request(4, consistency_proof(rewritten, 4, 9), sign_note(body, ORIGIN, NoteSigner(KEY)))
    req = parse_request(raw, ORIGIN, [rec(KEY)], NOW)
    with pytest.raises(ProofError) as info:
        check_advance(req, 4, root_from_leaves(LEAVES[:4]))
    assert info.value.code == "audit.proof_invalid"


def test_proofs_where_none_belong() -> None:
    proof = consistency_proof(LEAVES, 2, 4)
    for old, stored in ((0, None), (4, root_from_leaves(LEAVES[:4]))):
        req = parse_request(encode_request(old, proof, note(4)), ORIGIN, [rec(KEY)], NOW)
        with pytest.raises(ProofError):
            check_advance(req, old, stored)
