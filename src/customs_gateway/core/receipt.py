"""Receipts and refusals: the receiver's signed statements about one envelope (G4, G6).

A receipt binds message id, sender, receiver, SHA-256 of the signed document, `received_at` and
the signing key id. A refusal binds message id, refusal code and time, so a sender never marks a
message `refused` on an unsigned word. Both are signed over exact bytes with their own domain.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .encoding import b64url, format_ts, json_bytes, json_object, parse_ts, unb64url
from .errors import BindingError, DecodeError
from .keys import SigningKey, VerifyKey
from .schemas import refuse_duplicate_keys_in


def _req_str(d: dict[str, Any], name: str, where: str) -> str:
    v = d.get(name)
    if not isinstance(v, str) or not v:
        raise DecodeError(f"{where}.{name} must be a non-empty string", field=f"{where}.{name}")
    return v


@dataclass(frozen=True)
class Statement:
    """A signed statement: exact payload bytes, signing key id and signature."""

    label: str  # "receipt" | "refusal"
    payload: bytes
    kid: str
    signature: bytes

    def to_dict(self) -> dict[str, str]:
        return {self.label: b64url(self.payload), "kid": self.kid, "signature": b64url(self.signature)}

    def to_bytes(self) -> bytes:
        return json_bytes(self.to_dict())

    @classmethod
    def from_dict(cls, label: str, d: object) -> Statement:
        if not isinstance(d, dict):
            raise DecodeError(f"{label} must be an object", field=label)
        return cls(
            label,
            unb64url(_req_str(d, label, label), field=f"{label}.{label}"),
            _req_str(d, "kid", label),
            unb64url(_req_str(d, "signature", label), field=f"{label}.signature"),
        )

    @classmethod
    def sign(cls, label: str, payload: dict[str, Any], key: SigningKey) -> Statement:
        data = json_bytes({**payload, "kid": key.kid})
        return cls(label, data, key.kid, key.sign(label, data))

    def verify(self, key_for: Callable[[str, dt.datetime], VerifyKey], time_field: str) -> dict[str, Any]:
        """Verify under the key valid at the statement's own time; returns the payload."""
        d = json_object(self.payload, field=self.label)
        refuse_duplicate_keys_in(self.payload, json_bytes(d), self.label)  # signed: one reading only
        if d.get("kid") != self.kid:
            raise BindingError(
                f"{self.label} kid does not match its signature kid", code=f"{self.label}.kid", field="kid"
            )
        at = parse_ts(d.get(time_field), field=f"{self.label}.{time_field}")
        key_for(self.kid, at).verify(self.label, self.payload, self.signature)
        return d


@dataclass(frozen=True)
class Receipt:
    """A verified receipt's content."""

    message_id: str
    sender: str
    receiver: str
    document_sha256: bytes
    received_at: dt.datetime
    kid: str
    statement: Statement


def make_receipt(
    *,
    message_id: str,
    sender: str,
    receiver: str,
    document_sha256: bytes,
    received_at: dt.datetime,
    key: SigningKey,
) -> Statement:
    return Statement.sign(
        "receipt",
        {
            "message_id": message_id,
            "from": sender,
            "to": receiver,
            "document_sha256": document_sha256.hex(),
            "received_at": format_ts(received_at),
        },
        key,
    )


def verify_receipt(
    st: Statement,
    *,
    message_id: str,
    sender: str,
    receiver: str,
    document_sha256: bytes,
    key_for: Callable[[str, dt.datetime], VerifyKey],
) -> Receipt:
    """Verify a receipt and that it is about exactly this message (raises on any mismatch)."""
    if st.label != "receipt":
        raise DecodeError("not a receipt", field="receipt")
    d = st.verify(key_for, "received_at")
    expected = {
        "message_id": message_id,
        "from": sender,
        "to": receiver,
        "document_sha256": document_sha256.hex(),
    }
    for name, value in expected.items():
        if d.get(name) != value:
            raise BindingError(
                f"receipt {name} does not match the message", code=f"receipt.{name}", field=f"receipt.{name}"
            )
    return Receipt(message_id, sender, receiver, document_sha256, parse_ts(d["received_at"]), st.kid, st)


@dataclass(frozen=True)
class Refusal:
    """A verified refusal's content."""

    message_id: str
    code: str
    detail: str
    retryable: bool
    refused_at: dt.datetime
    statement: Statement


def make_refusal(
    *,
    message_id: str,
    sender: str,
    receiver: str,
    code: str,
    detail: str,
    retryable: bool,
    refused_at: dt.datetime,
    envelope_sha256: bytes,
    key: SigningKey,
) -> Statement:
    """A signed refusal of one envelope: it binds sender, receiver and the SHA-256 of exactly the
    envelope refused (`Envelope.digest`), so it speaks of that envelope and no other, whatever
    id its (possibly unauthenticated) header claimed."""
    return Statement.sign(
        "refusal",
        {
            "message_id": message_id,
            "from": sender,
            "to": receiver,
            "code": code,
            "detail": detail,
            "retryable": retryable,
            "refused_at": format_ts(refused_at),
            "envelope_sha256": envelope_sha256.hex(),
        },
        key,
    )


def verify_refusal(
    st: Statement,
    *,
    message_id: str,
    sender: str,
    receiver: str,
    key_for: Callable[[str, dt.datetime], VerifyKey],
    envelope_sha256: bytes | None = None,
) -> Refusal:
    """Verify a refusal and that it is about this message between these two. With
    `envelope_sha256` (the sender judging the answer to an envelope it just sent) the refusal
    must name exactly that envelope; without it (an auditor, who never saw the envelope) the
    field need only be well formed. Raises on any mismatch."""
    if st.label != "refusal":
        raise DecodeError("not a refusal", field="refusal")
    d = st.verify(key_for, "refused_at")
    expected = {"message_id": message_id, "from": sender, "to": receiver}
    for name, value in expected.items():
        if d.get(name) != value:
            raise BindingError(
                f"refusal {name} does not match the message", code=f"refusal.{name}", field=f"refusal.{name}"
            )
    named = d.get("envelope_sha256")
    if not isinstance(named, str) or len(named) != 64 or named != named.lower() or not _is_hex(named):
        raise DecodeError("refusal.envelope_sha256 must be 64 lowercase hex digits", field="refusal.envelope_sha256")
    if envelope_sha256 is not None and named != envelope_sha256.hex():
        raise BindingError(
            "refusal is about another envelope", code="refusal.envelope_sha256", field="refusal.envelope_sha256"
        )
    code, detail, retryable = d.get("code"), d.get("detail"), d.get("retryable")
    if not isinstance(code, str) or not isinstance(detail, str) or not isinstance(retryable, bool):
        raise DecodeError("refusal lacks code, detail or retryable", field="refusal")
    return Refusal(message_id, code, detail, retryable, parse_ts(d["refused_at"]), st)


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True
