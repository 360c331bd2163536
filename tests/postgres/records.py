"""Store-level sample records (outbound messages, arrivals, outcomes, audit entries) for store tests.

Bytes stand in for signed documents: a store keeps them opaque, so tests need no keys.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools

from customs_gateway.core.audit import AuditEntry
from customs_gateway.store.base import AttemptOutcome, Incoming, NewMessage

US, CN = "US-CBP", "CN-GACC"
T0 = dt.datetime(2026, 11, 24, 10, 0, 0, 123456, tzinfo=dt.timezone.utc)  # sub-ms part: stores keep ms

_ids = itertools.count(1)


def new_id(prefix: str = "m") -> str:
    # Zero-padded so ids sort in creation order, as UUIDv7 ids do.
    return f"{prefix}-{next(_ids):08d}"


def entry(kind: str = "submitted", message_id: str | None = None, at: dt.datetime = T0, **detail: object) -> AuditEntry:
    return AuditEntry(at=at, kind=kind, actor="test", message_id=message_id, detail=dict(detail))


def new_message(
    peer: str = CN,
    *,
    mid: str | None = None,
    at: dt.datetime = T0,
    msg_type: str = "seizure-share",
    token: str | None = "tok-1",
    key: str | None = None,
    request: bytes = b"request",
) -> NewMessage:
    mid = mid or new_id()
    doc = f"signed document {mid}".encode()
    return NewMessage(
        id=mid,
        peer=peer,
        type=msg_type,
        created_at=at,
        expires_at=at + dt.timedelta(days=1),
        signed_document=doc,
        document_sha256=hashlib.sha256(doc).digest(),
        token_id=token,
        idempotency_key=key,
        request_hash=hashlib.sha256(request).digest() if key else None,
    )


def arrival(
    seq: int,
    *,
    mid: str | None = None,
    sender: str = US,
    document: bytes | None = None,
    at: dt.datetime = T0,
    msg_type: str = "seizure-share",
    acks: str | None = None,
    ack_digest: bytes | None = None,
) -> Incoming:
    mid = mid or new_id("in")
    doc = document if document is not None else f"inbound document {mid}".encode()
    digest = hashlib.sha256(doc).digest()
    return Incoming(
        sender=sender,
        id=mid,
        seq=seq,
        type=msg_type,
        created_at=at,
        received_at=at + dt.timedelta(seconds=1),
        document_sha256=digest,
        signed_document=doc,
        body=b'{"n": %d}' % seq,
        receipt=b"receipt for " + digest.hex().encode(),
        audit=entry("received", mid, at),
        acked_message_id=acks,
        ack_info={"status": "processed", "document_sha256": (ack_digest or b"").hex()} if acks else None,
    )


def delivered(message_id: str, at: dt.datetime = T0, attempt: int = 1) -> AttemptOutcome:
    return AttemptOutcome(
        message_id,
        "delivered",
        at,
        attempt,
        receipt=b"receipt " + message_id.encode(),
        audit=(entry("delivered", message_id, at),),
    )


def retry(message_id: str, at: dt.datetime, next_at: dt.datetime, attempt: int = 1) -> AttemptOutcome:
    return AttemptOutcome(
        message_id,
        "retry",
        at,
        attempt,
        error="peer unreachable: test",
        next_attempt_at=next_at,
        ciphertext=b"ct " + message_id.encode(),
        enc_kid="kid-1",
        audit=(entry("sent", message_id, at),) if attempt == 1 else (),
    )
