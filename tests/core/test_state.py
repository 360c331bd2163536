"""The outbound message state machine and the ack rule, driven directly (one place per rule)."""

from __future__ import annotations

import hashlib

import pytest

from customs_gateway.core.errors import Conflict
from customs_gateway.core.state import PENDING, STATUSES, TERMINAL, check_ack, next_status

EVENTS = ("attempt", "receipt", "ack", "refusal", "expire")
ALLOWED = {
    ("queued", "attempt"): "retrying",
    ("retrying", "attempt"): "retrying",
    ("queued", "receipt"): "delivered",
    ("retrying", "receipt"): "delivered",
    ("delivered", "receipt"): "delivered",  # a duplicate receipt changes nothing
    ("acknowledged", "receipt"): "acknowledged",  # nor does a late one
    ("delivered", "ack"): "acknowledged",
    ("queued", "refusal"): "refused",
    ("retrying", "refusal"): "refused",
    ("queued", "expire"): "expired",
    ("retrying", "expire"): "expired",
}


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("event", EVENTS)
def test_every_transition_is_in_the_table_and_nothing_else(status: str, event: str) -> None:
    want = ALLOWED.get((status, event))
    if want is None:
        with pytest.raises(Conflict) as info:
            next_status(status, event)
        assert info.value.code == "state.transition"
    else:
        assert next_status(status, event) == want


def test_terminal_states_never_leave() -> None:
    for status in TERMINAL:
        for event in EVENTS:
            if (status, event) in ALLOWED:
                assert ALLOWED[(status, event)] == status
    assert {"queued", "retrying"} == PENDING and not PENDING & TERMINAL


def test_unknown_event() -> None:
    with pytest.raises(ValueError):
        next_status("queued", "teleport")


DOC = hashlib.sha256(b"the delivered document").digest()


@pytest.mark.parametrize(
    ("status", "digest", "code"),
    [
        (None, DOC.hex(), "ack.unknown_message"),
        ("queued", DOC.hex(), "ack.not_yet_delivered"),
        ("retrying", DOC.hex(), "ack.not_yet_delivered"),
        ("acknowledged", DOC.hex(), "ack.wrong_state"),
        ("refused", DOC.hex(), "ack.wrong_state"),
        ("expired", DOC.hex(), "ack.wrong_state"),
        ("delivered", "00" * 32, "ack.digest_mismatch"),
        ("delivered", DOC.hex().upper(), "ack.digest_mismatch"),
    ],
)
def test_check_ack_refusals(status: str | None, digest: str, code: str) -> None:
    with pytest.raises(Conflict) as info:
        check_ack(status, DOC, digest)
    assert info.value.code == code


def test_check_ack_admits_only_the_delivered_document() -> None:
    check_ack("delivered", DOC, DOC.hex())
