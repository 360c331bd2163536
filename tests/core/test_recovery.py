"""The peer-state statement and recovery planning (core.recovery): a forged, misaddressed or
altered answer is refused; receipts must bind the message; the plan never re-uses a number."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from customs_gateway.core.encoding import b64url, json_bytes, json_object, unb64url
from customs_gateway.core.errors import GatewayError
from customs_gateway.core.keys import SigningKey, VerifyKey
from customs_gateway.core.receipt import make_receipt
from customs_gateway.core.recovery import Cosigned, assess, make_state, plan, read_state

US, CN = "US-CBP", "CN-GACC"
T = dt.datetime(2026, 12, 1, 12, tzinfo=dt.timezone.utc)
CN_KEY, OTHER = SigningKey(bytes([5]) * 32), SigningKey(bytes([6]) * 32)
DOC = {f"m{i}": bytes([i]) * 32 for i in range(1, 6)}


def key_for(kid: str, at: dt.datetime) -> VerifyKey:
    if kid != CN_KEY.kid:
        raise GatewayError("unknown key", code="key.unknown")
    return CN_KEY.public


def receipt(mid: str, digest: bytes | None = None, key: SigningKey = CN_KEY) -> bytes:
    st = make_receipt(
        message_id=mid, sender=US, receiver=CN, document_sha256=digest or DOC[mid], received_at=T, key=key
    )
    return st.to_bytes()


def state(key: SigningKey = CN_KEY, *, signer: str = CN, subject: str = US, held: list[str] | None = None) -> bytes:
    return make_state(
        signer=signer,
        subject=subject,
        at=T,
        received_high_seq=5,
        after_seq=0,
        held=[(m, i + 1, DOC[m], receipt(m)) for i, m in enumerate(held or list(DOC))],
        more=False,
        cosigned=Cosigned("customs-gateway/US-CBP/audit", 40, bytes(32)),
        key=key,
    ).to_bytes()


def test_a_faithful_answer_reads_back() -> None:
    s = read_state(state(), signer=CN, subject=US, key_for=key_for)
    assert s.received_high_seq == 5 and [h.id for h in s.held] == list(DOC) and s.cosigned is not None
    assert assess(s, next_seq=3, log_size=30, origin="customs-gateway/US-CBP/audit") != []
    assert assess(s, next_seq=6, log_size=40, origin="customs-gateway/US-CBP/audit") == []


@pytest.mark.parametrize(
    "raw",
    [
        state(OTHER),  # signed by a key we do not trust for the peer
        state(signer=US),  # claims another signer
        state(subject="XX-OTHER"),  # about someone else
    ],
)
def test_forged_or_misaddressed_answers_are_refused(raw: bytes) -> None:
    with pytest.raises(GatewayError):
        read_state(raw, signer=CN, subject=US, key_for=key_for)


def test_an_altered_answer_is_refused() -> None:
    d = json_object(state())
    payload = json_object(unb64url(d["peer-state"]))
    payload["received_high_seq"] = 2  # hide how far the peer got
    d["peer-state"] = b64url(json_bytes(payload))
    with pytest.raises(GatewayError):
        read_state(json_bytes(d), signer=CN, subject=US, key_for=key_for)


def test_plan_marks_delivered_names_lost_and_continues_after_the_peer() -> None:
    s = read_state(state(), signer=CN, subject=US, key_for=key_for)
    ours = {"m1": (DOC["m1"], False), "m2": (DOC["m2"], True), "m3": (DOC["m3"], True)}
    p = plan(list(s.held), ours=ours, me=US, peer=CN, received_high_seq=5, key_for=key_for)
    assert [mid for mid, _ in p.delivered] == ["m2", "m3"]  # pending ones the peer already holds
    assert [h.id for h in p.lost] == ["m4", "m5"]  # the peer holds them; this store does not
    assert p.next_seq == 6


def test_plan_refuses_a_receipt_for_another_document() -> None:
    s = read_state(state(), signer=CN, subject=US, key_for=key_for)
    ours = {"m2": (bytes(32), True)}  # our m2 is another document than the one the peer receipted
    with pytest.raises(GatewayError) as info:
        plan(list(s.held), ours=ours, me=US, peer=CN, received_high_seq=5, key_for=key_for)
    assert info.value.code == "recovery.receipt_invalid"
    forged = dataclasses.replace(s.held[0], receipt=s.held[1].receipt)  # m2's receipt filed as m1's
    with pytest.raises(GatewayError):
        plan([forged], ours={}, me=US, peer=CN, received_high_seq=5, key_for=key_for)
