"""Restore from backup (DESIGN §11): what the peer has seen of us, signed, and what follows from it.

A gateway restored from an older backup must never reuse a sequence number or a log position its
peer has already seen. The peer answers `GET /peer/v1/state` with a signed statement: the highest
sequence number it received from us, the messages of ours it holds above a number we name (each
with the receipt it issued), and the last checkpoint of our log it cosigned. `assess` compares
that with what the restored store holds; `plan` says what `customs-gateway recover` must do:
which of our messages are already delivered (with the peer's original receipts), which messages
the peer holds that we lost, and where our sequence numbers continue.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from .encoding import b64url, format_ts, json_object, parse_ts, unb64url
from .errors import BindingError, DecodeError, GatewayError
from .keys import SigningKey, VerifyKey
from .receipt import Receipt, Statement, verify_receipt

FORMAT: Final = "customs-gateway/v1 peer-state"
LABEL: Final = "peer-state"
#: At most this many held messages per answer; the asker pages with `after_seq`.
MAX_HELD: Final = 2000


@dataclass(frozen=True)
class Held:
    """One message of the asker's that the answering peer holds, with the receipt it issued."""

    id: str
    seq: int
    document_sha256: bytes
    receipt: Statement


@dataclass(frozen=True)
class Cosigned:
    """The last checkpoint of the asker's log that the peer cosigned."""

    origin: str
    size: int
    root: bytes


@dataclass(frozen=True)
class PeerState:
    """The peer's signed account of what it has seen from us (`subject`)."""

    signer: str
    subject: str
    at: dt.datetime
    received_high_seq: int
    after_seq: int
    held: tuple[Held, ...]
    more: bool
    cosigned: Cosigned | None
    statement: Statement


def make_state(
    *,
    signer: str,
    subject: str,
    at: dt.datetime,
    received_high_seq: int,
    after_seq: int,
    held: list[tuple[str, int, bytes, bytes]],
    more: bool,
    cosigned: Cosigned | None,
    key: SigningKey,
) -> Statement:
    """Sign the answer; `held` holds (id, seq, document SHA-256, stored receipt bytes)."""
    payload: dict[str, Any] = {
        "format": FORMAT,
        "from": signer,
        "to": subject,
        "at": format_ts(at),
        "received_high_seq": received_high_seq,
        "after_seq": after_seq,
        "held": [{"id": i, "seq": s, "document_sha256": d.hex(), "receipt": b64url(r)} for i, s, d, r in held],
        "more": more,
        "cosigned": None
        if cosigned is None
        else {"origin": cosigned.origin, "size": cosigned.size, "root": cosigned.root.hex()},
    }
    return Statement.sign(LABEL, payload, key)


def read_state(raw: bytes, *, signer: str, subject: str, key_for: Callable[[str, dt.datetime], VerifyKey]) -> PeerState:
    """Verify a signed answer (the peer's signing key valid at its `at`) and decode it; it must
    be from `signer` about `subject`. Raises DecodeError / SignatureError / KeyStateError."""
    st = Statement.from_dict(LABEL, json_object(raw, field="peer state"))
    d = st.verify(key_for, "at")
    if d.get("format") != FORMAT:
        raise DecodeError("not a peer-state statement", field="format")
    if d.get("from") != signer or d.get("to") != subject:
        raise BindingError(
            f"peer state is from {d.get('from')!r} about {d.get('to')!r}, not from {signer!r} about {subject!r}",
            code="recovery.state_binding",
        )
    try:
        held = tuple(
            Held(
                str(h["id"]),
                _nat(h["seq"], "held[].seq"),
                bytes.fromhex(str(h["document_sha256"])),
                Statement.from_dict("receipt", json_object(unb64url(str(h["receipt"])), field="receipt")),
            )
            for h in d["held"]
        )
        c = d.get("cosigned")
        cosigned = None if c is None else Cosigned(str(c["origin"]), _nat(c["size"], "size"), bytes.fromhex(c["root"]))
        return PeerState(
            signer,
            subject,
            parse_ts(d["at"], field="at"),
            _nat(d["received_high_seq"], "received_high_seq"),
            _nat(d["after_seq"], "after_seq"),
            held,
            d.get("more") is True,
            cosigned,
            st,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise DecodeError(f"peer state is malformed: {e}", field="state") from e


def _nat(v: object, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise DecodeError(f"{name} must be a whole number", field=name)
    return v


def assess(state: PeerState, *, next_seq: int, log_size: int, origin: str) -> list[str]:
    """Why this gateway is behind its peer (empty: it is not): the peer has received sequence
    numbers we would hand out again, or cosigned more of our log than we hold."""
    reasons = []
    if state.received_high_seq >= next_seq:
        reasons.append(
            f"the peer has received our sequence numbers up to {state.received_high_seq}; "
            f"this store would hand out {next_seq} again"
        )
    if state.cosigned is not None and state.cosigned.origin == origin and state.cosigned.size > log_size:
        reasons.append(
            f"the peer cosigned our log {origin} at size {state.cosigned.size}; this store holds {log_size} entries"
        )
    return reasons


@dataclass(frozen=True)
class Plan:
    """What recovery does with the peer's account."""

    delivered: tuple[tuple[str, Receipt], ...]  # our pending messages the peer already holds
    lost: tuple[Held, ...]  # messages of ours the peer holds that this store does not know
    next_seq: int  # where our sequence numbers continue


def plan(
    held: list[Held],
    *,
    ours: dict[str, tuple[bytes, bool]],
    me: str,
    peer: str,
    received_high_seq: int,
    key_for: Callable[[str, dt.datetime], VerifyKey],
) -> Plan:
    """`ours` maps the ids of our messages in `held` that this store knows to (document SHA-256,
    still pending). Each receipt is verified and must bind the message's id and digest; a message
    we know with another digest is a conflict we cannot resolve (GatewayError)."""
    delivered: list[tuple[str, Receipt]] = []
    lost: list[Held] = []
    for h in held:
        known = ours.get(h.id)
        digest = known[0] if known is not None else h.document_sha256
        try:
            receipt = verify_receipt(
                h.receipt, message_id=h.id, sender=me, receiver=peer, document_sha256=digest, key_for=key_for
            )
        except GatewayError as e:
            raise GatewayError(
                f"the peer's receipt for {h.id} does not verify ({e.code}): {e.detail}",
                code="recovery.receipt_invalid",
                status=502,
            ) from e
        if known is None:
            lost.append(h)
        elif known[1]:
            delivered.append((h.id, receipt))
    return Plan(tuple(delivered), tuple(lost), received_high_seq + 1)
