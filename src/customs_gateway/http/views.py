"""The JSON answers of the local API as msgspec Structs (and the request bodies it decodes as Structs):
what handlers return and what the OpenAPI document's schemas are generated from
(`msgspec.json.schema_components`).

Field names, nullability and key presence are the wire contract: a field that may be null is
typed `X | None` without a default (always present); a key that may be absent is `UnsetType`.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, get_args

import msgspec
from msgspec import UNSET, UnsetType

from ..core import consent, docfiles, handling
from ..core.consent import ConsentRecord
from ..core.control import HoldRequest, ReleaseRequest
from ..core.encoding import format_ts, json_object
from ..core.envelope import BusinessType, SignedDocument
from ..core.handling import HandlingTerms
from ..core.state import PENDING, STATUSES
from ..core.upload import UploadRecord
from ..service.auth import ROLES
from ..service.gateway import BatchItem
from ..store.base import Hold, InboxItem, OutMessage, RetentionTotals, ThreadItem, TokenRecord
from .problems import ProblemItem

# Annotated strings are inlined by msgspec (only Structs become components); these carry the
# same constraints the hand-written `Timestamp`, `MessageId` and `Sha256Hex` components state.
Timestamp = Annotated[
    str,
    msgspec.Meta(
        description="RFC 3339 UTC with milliseconds",
        pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$",
        extra_json_schema={"format": "date-time"},
    ),
]
MessageId = Annotated[str, msgspec.Meta(description="UUIDv7", max_length=64, extra_json_schema={"format": "uuid"})]
Sha256Hex = Annotated[str, msgspec.Meta(description="SHA-256, lower-case hex", pattern="^[0-9a-f]{64}$")]
KeyId = Annotated[
    str, msgspec.Meta(description="first 16 bytes of SHA-256 of the raw public key, hex", pattern="^[0-9a-f]{32}$")
]
B64url = Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9_-]*$", extra_json_schema={"contentEncoding": "base64url"})]
TokenId = Annotated[str, msgspec.Meta(description="token id", pattern="^[0-9a-f]{16}$")]
Role = Literal["agency", "admin", "auditor"]
Status = Literal["queued", "retrying", "delivered", "acknowledged", "refused", "expired"]
AckStatus = Literal["processed", "rejected"]
Seq = Annotated[int, msgspec.Meta(ge=1, description="per-peer sequence number")]


class View(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base of every answer: immutable, and nothing but the declared fields."""


Terms = Annotated[
    HandlingTerms | None,
    msgspec.Meta(
        description="the handling terms signed with the document (DESIGN §12); null once the document was disposed"
        " of, and for messages stored before handling terms existed"
    ),
]


def terms_of(document: bytes) -> HandlingTerms | None:
    """The handling terms of stored document bytes (validated when the document was made or
    received), None for documents from before they existed."""
    return _terms(json_object(document))


def _terms(document: dict[str, Any]) -> HandlingTerms | None:
    found = document.get("handling")
    return None if found is None else handling.from_wire(found)


def _out_terms(m: OutMessage) -> HandlingTerms | None:
    if m.disposed_at is not None:
        return None
    return terms_of(SignedDocument.from_bytes(m.signed_document).document_bytes)


DisposedAt = Annotated[
    Timestamp | None,
    msgspec.Meta(
        description="when the message was disposed of at its retention date (DESIGN §12): its document, body and"
        " files are gone for good; header, digests, receipts and audit entries stay"
    ),
]
RetainUntil = Annotated[
    Annotated[str, msgspec.Meta(pattern=r"^\d{4}-\d{2}-\d{2}$")] | None,
    msgspec.Meta(
        description="the day after which the message is disposed of (its handling terms' retain_until); null for"
        " rows stored before retention existed"
    ),
]


class HoldView(View, frozen=True):
    """A legal hold on one message (DESIGN §12): ours keeps our copy past its retention date;
    the peer's was told to us by its signed `legal-hold` notice."""

    message_id: MessageId
    origin: Annotated[Literal["ours", "peer"], msgspec.Meta(description="who placed it")]
    direction: Annotated[
        Literal["outbound", "inbound"], msgspec.Meta(description="whether we sent (outbound) or received the message")
    ]
    reason: str
    placed_by: Annotated[str, msgspec.Meta(description="token:<id> (ours) or peer:<identity>")]
    placed_at: Timestamp
    notice_id: Annotated[
        MessageId | None, msgspec.Meta(description="the signed legal-hold notice that told the other side")
    ]
    active: bool
    released_at: Timestamp | None
    released_by: str | None
    release_reason: str | None

    @classmethod
    def of(cls, h: Hold) -> HoldView:
        return cls(
            h.message_id,
            h.origin,  # type: ignore[arg-type]
            h.direction,  # type: ignore[arg-type]
            h.reason,
            h.placed_by,
            format_ts(h.placed_at),
            h.notice_id,
            h.active,
            None if h.released_at is None else format_ts(h.released_at),
            h.released_by,
            h.release_reason,
        )


class HoldList(View, frozen=True):
    """Legal holds, most recent first."""

    holds: list[HoldView]


Holds = Annotated[list[HoldView], msgspec.Meta(description="legal holds on this message, ours and the peer's")]


class SubmitResponse(View, frozen=True):
    """The message is committed durably (G5); follow `Location` for its status. `handling` shows
    the terms applied: what the back-end gave, completed from the agreement profile's defaults."""

    id: MessageId
    status: Status
    seq: Seq
    handling: Terms

    @classmethod
    def of(cls, m: OutMessage, terms: HandlingTerms | None = None) -> SubmitResponse:
        """The answer about `m`; `terms` when the caller holds them (a new document), else the
        stored document's."""
        return cls(m.id, m.status, m.seq, terms if terms is not None else _out_terms(m))  # type: ignore[arg-type]


Payload = Annotated[B64url, msgspec.Meta(extra_json_schema={"contentMediaType": "application/json"})]
_PAYLOAD = "the exact payload bytes: JSON object (keys sorted)"


class _Statement(View, frozen=True):
    """A signed statement as stored: the payload field (named by the subclass), key id, signature."""

    kid: KeyId
    signature: Annotated[
        B64url,
        msgspec.Meta(
            description="Ed25519 over 'customs-gateway/v1 <label>\\n' || payload bytes (64 bytes), "
            "<label> being the name of the payload field"
        ),
    ]


class ReceiptStatement(_Statement, frozen=True):
    """A signed receipt: exact payload bytes, signing key id, signature."""

    receipt: Annotated[
        Payload,
        msgspec.Meta(description=_PAYLOAD + " {document_sha256, from, kid, message_id, received_at, to}"),
    ]


class RefusalStatement(_Statement, frozen=True):
    """A signed refusal: exact payload bytes, signing key id, signature."""

    refusal: Annotated[
        Payload,
        msgspec.Meta(description=_PAYLOAD + " {code, detail, from, kid, message_id, refused_at, retryable, to}"),
    ]


class AckInfo(View, frozen=True):
    """The peer's business acknowledgement, from its signed `ack` envelope."""

    status: AckStatus
    ack_id: MessageId
    document_sha256: Sha256Hex
    reason: str | UnsetType | None = UNSET


InReplyTo = Annotated[
    MessageId | None,
    msgspec.Meta(description="the message this one answers (threads), a message the two gateways exchanged"),
]


Day = Annotated[str, msgspec.Meta(description="a date, YYYY-MM-DD", extra_json_schema={"format": "date"})]
Use = Literal["onward_transfer", "evidentiary_use"]
Permission = Literal["prohibited", "with-consent", "permitted"]


class ConsentRequestStatus(View, frozen=True):
    """One consent request about a message and its latest decision (DESIGN §12)."""

    request_id: Annotated[MessageId, msgspec.Meta(description="the consent-request message")]
    use: Use
    party: Annotated[str, msgspec.Meta(description="the authority (onward transfer) or proceeding (evidence)")]
    reason: str
    requested_at: Timestamp
    status: Literal["pending", "granted", "granted_with_conditions", "refused", "expired"]
    decision_id: Annotated[MessageId | None, msgspec.Meta(description="the latest consent-decision message")]
    conditions: str | None
    decision_reason: str | None
    valid_until: Day | None
    decided_at: Timestamp | None

    @classmethod
    def of(cls, r: ConsentRecord, today: dt.date) -> ConsentRequestStatus:
        return cls(
            r.request_id,
            r.use,  # type: ignore[arg-type]
            r.party,
            r.reason,
            format_ts(r.requested_at),
            consent.status_of(r, today),  # type: ignore[arg-type]
            r.decision_id,
            r.conditions,
            r.decision_reason,
            _day(r.valid_until),
            None if r.decided_at is None else format_ts(r.decided_at),
        )


def _day(d: dt.date | None) -> str | None:
    return None if d is None else d.isoformat()


class Grant(View, frozen=True):
    """Consent in force for one use of a received message."""

    party: Annotated[str, msgspec.Meta(description="to whom it may go, or in which proceeding it may be used")]
    request_id: MessageId
    decision_id: MessageId
    conditions: str | None
    valid_until: Day | None


class UsePermission(View, frozen=True):
    """One use of a received message: what its handling terms say, and the consent granted."""

    terms: Permission
    granted: list[Grant]


class Permissions(View, frozen=True):
    """What the receiver may do with a message now: its terms, changed only by the provider's
    signed consent decisions; `conditions` are the provider's conditions from the terms."""

    onward_transfer: UsePermission
    evidentiary_use: UsePermission
    conditions: str | None

    @classmethod
    def of(cls, terms: HandlingTerms | None, records: list[ConsentRecord], today: dt.date) -> Permissions:
        found = consent.permissions(terms, records, today)
        uses = {
            use: UsePermission(
                p.terms,  # type: ignore[arg-type]
                [Grant(g.party, g.request_id, g.decision_id, g.conditions, _day(g.valid_until)) for g in p.granted],
            )
            for use, p in found.items()
        }
        return cls(uses["onward_transfer"], uses["evidentiary_use"], None if terms is None else terms.conditions)


class HistoryEntry(View, frozen=True):
    """One status change of an outbound message."""

    at: Timestamp
    status: Annotated[str, msgspec.Meta(description="status entered (or event)")]
    detail: Annotated[str, msgspec.Meta(description="reason, may be empty")]


class Message(View, frozen=True):
    """An outbound message: status, attempts, the peer's signed receipt or refusal, its ack."""

    id: MessageId
    to: Annotated[str, msgspec.Meta(description="recipient identity")]
    type: BusinessType
    seq: Seq
    status: Status
    created_at: Timestamp
    expires_at: Timestamp
    updated_at: Timestamp
    attempts: Annotated[int, msgspec.Meta(ge=0, description="delivery attempts so far")]
    next_attempt_at: Annotated[Timestamp | None, msgspec.Meta(description="set while queued or sent")]
    last_error: str | None
    document_sha256: Sha256Hex
    receipt: ReceiptStatement | None
    refusal: RefusalStatement | None
    ack: AckInfo | None
    history: Annotated[
        list[HistoryEntry], msgspec.Meta(description="status changes, oldest first (empty in list results)")
    ]
    in_reply_to: InReplyTo
    handling: Terms
    consent_requests: Annotated[
        list[ConsentRequestStatus], msgspec.Meta(description="consent requests the peer made about this message")
    ]
    retain_until: RetainUntil
    disposed_at: DisposedAt
    legal_holds: Holds

    @classmethod
    def of(
        cls,
        m: OutMessage,
        consents: list[ConsentRecord] | None = None,
        today: dt.date | None = None,
        holds: list[Hold] | None = None,
    ) -> Message:
        return cls(
            id=m.id,
            to=m.peer,
            type=m.type,  # type: ignore[arg-type]  # the store holds only business types here
            seq=m.seq,
            status=m.status,  # type: ignore[arg-type]
            created_at=format_ts(m.created_at),
            expires_at=format_ts(m.expires_at),
            updated_at=format_ts(m.updated_at),
            attempts=m.attempts,
            next_attempt_at=format_ts(m.next_attempt_at) if m.status in PENDING else None,
            last_error=m.last_error,
            document_sha256=m.document_sha256.hex(),
            receipt=msgspec.convert(json_object(m.receipt), ReceiptStatement) if m.receipt else None,
            refusal=msgspec.convert(json_object(m.refusal), RefusalStatement) if m.refusal else None,
            ack=msgspec.convert(m.ack, AckInfo) if m.ack else None,
            history=[HistoryEntry(format_ts(a), s, d) for a, s, d in m.history],
            in_reply_to=m.in_reply_to,
            handling=_out_terms(m),
            consent_requests=[ConsentRequestStatus.of(r, today or dt.date.min) for r in consents or ()],
            retain_until=_day(m.retain_until),
            disposed_at=None if m.disposed_at is None else format_ts(m.disposed_at),
            legal_holds=[HoldView.of(h) for h in holds or ()],
        )


class InboxSummary(View, frozen=True):
    """An inbox message without its body."""

    cursor: Annotated[int, msgspec.Meta(ge=1, description="position in the inbox; pass as `after` to read past it")]
    id: MessageId
    sender: Annotated[str, msgspec.Meta(description="sender identity")] = msgspec.field(name="from")
    type: BusinessType
    created_at: Timestamp
    received_at: Timestamp
    document_sha256: Sha256Hex
    ack_status: AckStatus | None
    ack_message_id: MessageId | None
    in_reply_to: InReplyTo
    handling: Terms
    retain_until: RetainUntil
    disposed_at: DisposedAt

    @classmethod
    def of(cls, it: InboxItem) -> InboxSummary:
        return cls(**_inbox_fields(it, _document(it)))


class InboxMessage(InboxSummary, frozen=True):
    """A verified, decrypted message from the peer."""

    body: Annotated[
        dict[str, Any] | None,
        msgspec.Meta(
            description="the verified, decrypted body; valid under the schema of `type`; null once disposed of"
        ),
    ]
    permissions: Permissions
    consent_requests: Annotated[
        list[ConsentRequestStatus], msgspec.Meta(description="consent requests this gateway made about the message")
    ]
    legal_holds: Holds

    @classmethod
    def full(
        cls, it: InboxItem, consents: list[ConsentRecord], today: dt.date, holds: list[Hold] | None = None
    ) -> InboxMessage:
        document = _document(it)  # parsed once: the body and its terms come from it
        fields = _inbox_fields(it, document)
        return cls(
            **fields,
            body=None if it.disposed_at is not None else docfiles.without_keys(document["body"]),
            permissions=Permissions.of(fields["handling"], consents, today),
            consent_requests=[ConsentRequestStatus.of(r, today) for r in consents],
            legal_holds=[HoldView.of(h) for h in holds or ()],
        )


def _document(it: InboxItem) -> dict[str, Any]:
    """The stored document of an inbox item; empty once disposed of."""
    return {} if it.disposed_at is not None else json_object(it.body)


def _inbox_fields(it: InboxItem, document: dict[str, Any]) -> dict[str, Any]:
    return {
        "cursor": it.cursor,
        "id": it.id,
        "sender": it.sender,
        "type": it.type,
        "created_at": format_ts(it.created_at),
        "received_at": format_ts(it.received_at),
        "document_sha256": it.document_sha256.hex(),
        "ack_status": it.ack_status,
        "ack_message_id": it.ack_message_id,
        "in_reply_to": it.in_reply_to,
        "handling": _terms(document),
        "retain_until": _day(it.retain_until),
        "disposed_at": None if it.disposed_at is None else format_ts(it.disposed_at),
    }


class MessageList(View, frozen=True):
    """A page of outbound messages, oldest first."""

    messages: list[Message]
    next_cursor: Annotated[
        str | None, msgspec.Meta(description="pass as `cursor` for the next page (a message id); null on the last page")
    ]


class InboxSummaryList(View, frozen=True):
    """A page of inbound messages without their bodies (`direction=inbound`)."""

    messages: list[InboxSummary]
    next_cursor: Annotated[
        int | None,
        msgspec.Meta(description="pass as `cursor` for the next page (an inbox cursor); null on the last page"),
    ]


class InboxPage(View, frozen=True):
    """A page of the inbox."""

    messages: list[InboxMessage]
    next_cursor: Annotated[
        int, msgspec.Meta(ge=0, description="pass as `after` next time (unchanged when nothing was new)")
    ]


class AckResponse(View, frozen=True):
    """The signed `ack` is queued to the sender."""

    ack_id: Annotated[MessageId, msgspec.Meta(description="id of the signed `ack` message queued to the sender")]
    status: Literal["queued"]
    acknowledges: MessageId


class TokenRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """`POST /v1/admin/tokens`: a role, a label, and optionally how many days the token lives."""

    role: Role
    label: Annotated[str, msgspec.Meta(max_length=200, description="who or what the token is for")] = ""
    valid_days: (
        Annotated[
            int,
            msgspec.Meta(
                ge=1, le=3650, description="the token expires this many days from now (absent: never, until revoked)"
            ),
        ]
        | None
    ) = None


class TokenResponse(View, frozen=True):
    """A new token; its secret is shown only here."""

    id: TokenId
    role: Role
    token: Annotated[
        str,
        msgspec.Meta(
            description="the bearer token; shown once, stored hashed",
            pattern=r"^cgw_[0-9a-f]{16}\.[A-Za-z0-9_-]{43}$",
        ),
    ]
    note: str
    expires_at: Timestamp | None


class RetentionStatus(View, frozen=True):
    """Retention on this gateway now (`GET /v1/admin/retention`, and after a round it ran)."""

    today: Annotated[str, msgspec.Meta(description="the UTC day disposal is judged by")]
    due: Annotated[int, msgspec.Meta(ge=0, description="messages past their retention day, not disposed of yet")]
    disposed: Annotated[int, msgspec.Meta(ge=0, description="messages disposed of (their rows stay)")]
    held: Annotated[int, msgspec.Meta(ge=0, description="messages under an active legal hold of ours")]
    oldest_held: Annotated[str | None, msgspec.Meta(description="the earliest retention day among held messages")]
    last_round: Annotated[
        dict[str, Any] | None,
        msgspec.Meta(description="what the last disposal round did: today, disposed, files, days_destroyed, more"),
    ]

    @classmethod
    def of(cls, today: dt.date, t: RetentionTotals, last_round: dict[str, Any] | None) -> RetentionStatus:
        return cls(today.isoformat(), t.due, t.disposed, t.held, _day(t.oldest_held), last_round)


class TokenRevoked(View, frozen=True):
    """A token just revoked."""

    id: TokenId
    role: Role
    label: str
    revoked_at: Timestamp


class TokenView(View, frozen=True):
    """A token as an administrator may see it: never the secret, nor its hash."""

    id: TokenId
    role: Role
    label: str
    created_at: Timestamp
    revoked_at: Timestamp | None
    expires_at: Timestamp | None

    @classmethod
    def of(cls, rec: TokenRecord) -> TokenView:
        return cls(
            id=rec.id,
            role=rec.role,  # type: ignore[arg-type]  # the store holds only known roles
            label=rec.label,
            created_at=format_ts(rec.created_at),
            revoked_at=format_ts(rec.revoked_at) if rec.revoked_at else None,
            expires_at=format_ts(rec.expires_at) if rec.expires_at else None,
        )


class TokenList(View, frozen=True):
    """Every token, revoked ones included."""

    tokens: list[TokenView]


class AuditRow(View, frozen=True):
    """One audit log entry: its exact bytes and the same parsed."""

    index: Annotated[int, msgspec.Meta(ge=0)]
    raw: Annotated[
        B64url, msgspec.Meta(description="the exact entry bytes: the Merkle leaf hash is SHA-256(0x00 || raw)")
    ]
    entry: Annotated[dict[str, Any], msgspec.Meta(description="`raw`, parsed")]


class AuditEntries(View, frozen=True):
    """A range of the audit log, in log order."""

    entries: list[AuditRow]


class InclusionProof(View, frozen=True):
    """RFC 9162 inclusion proof of one entry in the log of a given size."""

    index: Annotated[int, msgspec.Meta(ge=0)]
    size: Annotated[int, msgspec.Meta(ge=1)]
    leaf_hash: Annotated[B64url, msgspec.Meta(description="SHA-256(0x00 || entry bytes)")]
    proof: list[Annotated[B64url, msgspec.Meta(description="RFC 9162 inclusion proof node")]]


class ConsistencyProof(View, frozen=True):
    """RFC 9162 consistency proof between two sizes of the log."""

    old: Annotated[int, msgspec.Meta(ge=0)]
    new: Annotated[int, msgspec.Meta(ge=0)]
    proof: list[Annotated[B64url, msgspec.Meta(description="RFC 9162 consistency proof node")]]


class Health(View, frozen=True):
    """The process answers."""

    status: Literal["ok"]


class RecoveryStatus(View, frozen=True):
    """Whether this store was found behind its peer (restored from a backup), and why."""

    checked: Annotated[bool, msgspec.Meta(description="the peer has been asked what it has seen of us (this run)")]
    needed: Annotated[
        bool,
        msgspec.Meta(
            description="this store is behind the peer (restored from a backup): nothing is sent or "
            "cosigned until `customs-gateway recover`"
        ),
    ]
    reasons: list[str]


class KeyExpiry(View, frozen=True):
    """When keys of one use (or the TLS certificate) stop working unless renewed."""

    not_after: Timestamp
    days_left: float
    renew_soon: Annotated[bool, msgspec.Meta(description="inside 30 days (`customs-gateway keys renew`)")]


class ReadinessChecks(View, frozen=True):
    """What readiness is made of."""

    store: Annotated[str, msgspec.Meta(description="ok, or the error code")]
    keys: Annotated[str, msgspec.Meta(description="ok, or the error code (e.g. key.no_active_signing)")]
    peer_bundle: Literal["ok", "missing"]


class PeerLink(View, frozen=True):
    """The link to the peer; reported, never part of readiness (decision 0007)."""

    status: Literal["reachable", "failing", "unreachable", "unknown"]
    failing_for_seconds: Annotated[float, msgspec.Meta(ge=0)]
    unreachable_after_seconds: float
    last_contact_at: Timestamp | None
    last_failure: Annotated[str | None, msgspec.Meta(description="why the last delivery request failed")]


class AgreementProfile(View, frozen=True):
    """The agreement profile this gateway applies and the one the peer's key bundle states
    (DESIGN §12): both sides must load the same file. Reported, never part of readiness."""

    agreement: Annotated[str, msgspec.Meta(description="the profile's agreement id")]
    sha256: Sha256Hex
    peer_sha256: Annotated[Sha256Hex | None, msgspec.Meta(description="null: the peer's bundle states none")]
    status: Annotated[
        Literal["same", "differs", "unknown"],
        msgspec.Meta(description="differs: documents the peer's profile does not allow are refused there"),
    ]

    @classmethod
    def of(cls, agreement: str, ours: str, theirs: str | None) -> AgreementProfile:
        status = "unknown" if theirs is None else "same" if theirs == ours else "differs"
        return cls(agreement, ours, theirs, status)  # type: ignore[arg-type]


class Readiness(View, frozen=True):
    """Whether this gateway can accept and store submissions, and what may soon stop it."""

    status: Literal["ready", "not_ready"]
    checks: ReadinessChecks
    peer: PeerLink
    agreement_profile: AgreementProfile
    expiry: Annotated[
        dict[str, KeyExpiry], msgspec.Meta(description="per key use (signing, encryption, witness) and `tls`")
    ]
    recovery: RecoveryStatus


class SequenceGap(View, frozen=True):
    """Sequence numbers of the peer's that never arrived, `from` to `to`."""

    first: Annotated[int, msgspec.Meta(ge=0)] = msgspec.field(name="from")
    last: Annotated[int, msgspec.Meta(ge=0)] = msgspec.field(name="to")


class PeerStatus(View, frozen=True):
    """The peer as this gateway sees it: sequence numbers, queue, clock, recovery."""

    identity: str
    url: Annotated[str, msgspec.Meta(description="base URL of the peer API")]
    bundle_serial: Annotated[int, msgspec.Meta(ge=1, description="serial of the imported peer bundle")]
    next_seq: Annotated[int, msgspec.Meta(ge=1, description="sequence number our next message to it gets")]
    received_high_water: Annotated[int, msgspec.Meta(ge=0, description="highest sequence number received from it")]
    sequence_gaps: Annotated[int, msgspec.Meta(ge=0, description="gaps seen in its sequence numbers")]
    recent_gaps: Annotated[list[SequenceGap], msgspec.Meta(description="up to 100 most recent gaps, newest first")]
    queue_depth: Annotated[int, msgspec.Meta(ge=0, description="messages queued or sent to it, not yet answered")]
    oldest_queued_at: Timestamp | None
    clock_offset_seconds: Annotated[
        float | None,
        msgspec.Meta(
            description="the peer's clock minus ours, from timestamps it signed "
            "(positive: the peer is ahead); null before the first reading"
        ),
    ]
    clock_offset_measured_at: Timestamp | None
    recovery: RecoveryStatus
    agreement_profile: AgreementProfile


class AdminPeers(View, frozen=True):
    """The peers of this gateway (one)."""

    peers: list[PeerStatus]


class PublicKey(View, frozen=True, kw_only=True):
    """One public key in a bundle, with its lifecycle (`core.bundle.KeyRecord.to_dict`)."""

    kid: KeyId
    use: Literal["signing", "encryption", "witness"]
    alg: Literal["ed25519", "mlkem768-x25519", "x25519"]
    public: Annotated[B64url, msgspec.Meta(description="raw public key")]
    not_before: Timestamp
    not_after: Timestamp
    state: Literal["active", "retiring", "retired", "revoked"]
    revoked_at: Timestamp | UnsetType = UNSET
    revocation_reason: str | UnsetType = UNSET


class PeerKey(PublicKey, frozen=True, kw_only=True):
    """A key of the peer's bundle."""

    fingerprint: Annotated[Sha256Hex, msgspec.Meta(description="SHA-256 of the raw public key")]


class OwnKey(PeerKey, frozen=True, kw_only=True):
    """A key of our own bundle, and what this gateway does with it."""

    signing_now: Annotated[bool, msgspec.Meta(description="the key that signs right now")]
    pending_announcement: Annotated[
        bool, msgspec.Meta(description="announced to the peer, not yet receipted (not used to sign until then)")
    ]
    private_key_held: bool


class PinnedCertificate(View, frozen=True):
    """A certificate replaced by a renewal, still pinned until `until` (decision 0008)."""

    certificate_sha256: Annotated[str, msgspec.Meta(description="hex")]
    until: Timestamp


class TlsPins(View, frozen=True):
    """A bundle's TLS certificates as fingerprints: the current one and those pinned for an overlap."""

    certificate_sha256: Annotated[str, msgspec.Meta(description="SHA-256 of the current certificate (DER), hex")]
    not_after: Timestamp | None
    previous: list[PinnedCertificate]


class PeerKeys(View, frozen=True):
    """The peer's identity, bundle serial, keys and certificates."""

    identity: str
    bundle_serial: Annotated[int, msgspec.Meta(ge=1)]
    keys: list[PeerKey]
    tls: TlsPins


class AdminKeys(View, frozen=True):
    """Both sides' keys and pinned certificates, and when ours expire."""

    identity: str
    bundle_serial: Annotated[int, msgspec.Meta(ge=1, description="serial of our current signed bundle")]
    keys: list[OwnKey]
    tls: Annotated[TlsPins, msgspec.Meta(description="our certificates: the one presented, those still pinned")]
    expiry: Annotated[
        dict[str, KeyExpiry], msgspec.Meta(description="per key use and `tls`: when it stops working unless renewed")
    ]
    peer: PeerKeys


class _Announced(View, frozen=True, kw_only=True):
    """A key change: the new bundle's serial and the `key-announcement` queued to the peer."""

    announcement_id: Annotated[MessageId, msgspec.Meta(description="the queued `key-announcement` to the peer")]
    serial: Annotated[int, msgspec.Meta(ge=1, description="serial of the new signed bundle")]


class RotateResponse(_Announced, frozen=True, kw_only=True):
    """New signing or encryption keys, announced."""

    kind: Literal["signing", "encryption"]
    kids: Annotated[list[KeyId], msgspec.Meta(description="the new keys")]


class RenewResponse(_Announced, frozen=True, kw_only=True):
    """Keys of one kind, or the TLS certificate, renewed with a later expiry, announced."""

    kind: Literal["signing", "encryption", "witness", "tls"]
    kids: Annotated[
        list[Annotated[str, msgspec.Meta(description="key id, or for tls the certificate's SHA-256 (hex)")]],
        msgspec.Meta(description="the new keys (or certificate)"),
    ]
    not_after: Annotated[Timestamp, msgspec.Meta(description="end of validity of the new keys or certificate")]


class RevokeResponse(_Announced, frozen=True, kw_only=True):
    """One of our keys revoked from now on, announced."""

    kid: KeyId
    revoked_at: Timestamp


class LostMessage(View, frozen=True):
    """A message the peer holds that this store lost (accepted after the backup)."""

    id: MessageId
    seq: Annotated[int, msgspec.Meta(ge=1)]
    document_sha256: Sha256Hex


class CosignedCheckpoint(View, frozen=True):
    """The last checkpoint of our log the peer's witness cosigned."""

    origin: str
    size: Annotated[int, msgspec.Meta(ge=0)]
    root: Annotated[str, msgspec.Meta(description="hex")]


class RecoverResponse(View, frozen=True):
    """What `recover` did to level a restored store with the peer (decision 0009)."""

    peer: Annotated[str, msgspec.Meta(description="the peer")]
    behind: Annotated[list[str], msgspec.Meta(description="why the store was behind")]
    peer_received_high_seq: Annotated[
        int, msgspec.Meta(ge=0, description="the highest of our sequence numbers the peer had received")
    ]
    next_seq: Annotated[int, msgspec.Meta(ge=1, description="where our sequence numbers continue")]
    renumbered: Annotated[int, msgspec.Meta(ge=0, description="queued messages given new sequence numbers")]
    marked_delivered: Annotated[
        list[MessageId],
        msgspec.Meta(description="queued messages the peer already held: delivered, with its original receipts"),
    ]
    lost: list[LostMessage]
    restored_log_size: Annotated[int, msgspec.Meta(ge=0, description="entries in our restored audit log")]
    peer_cosigned: CosignedCheckpoint | None
    log_origin: Annotated[str, msgspec.Meta(description="the origin of the new epoch of our log")]
    epoch_witnessed: Annotated[
        bool, msgspec.Meta(description="the peer's witness already cosigned the new epoch's first checkpoint")
    ]


# --- the peer API's one JSON answer (everything else it answers is signed bytes, kept as bytes) ---


class _Result(View, frozen=True, tag_field="status"):
    """One envelope's result; `status` tells which."""


class Accepted(_Result, frozen=True, tag="accepted"):
    """The envelope is committed to the inbox; here is the signed receipt."""

    id: MessageId
    receipt: ReceiptStatement


class Duplicate(_Result, frozen=True, tag="duplicate"):
    """The envelope was committed before; here is the original receipt (G4)."""

    id: MessageId
    receipt: ReceiptStatement


class Refused(_Result, frozen=True, tag="refused"):
    """The envelope is refused, with a signed refusal saying why and whether to retry."""

    id: Annotated[str, msgspec.Meta(description='message id, or "unknown" if the header could not be read')]
    code: str
    retryable: bool
    refusal: RefusalStatement


class EnvelopeResults(View, frozen=True):
    """The answer to a batch of envelopes."""

    results: Annotated[
        list[Accepted | Duplicate | Refused], msgspec.Meta(description="one result per envelope, in order")
    ]


class ThreadMessage(View, frozen=True):
    """One message of a thread: outbound with its status, inbound with its ack status."""

    id: MessageId
    direction: Literal["outbound", "inbound"]
    type: BusinessType
    in_reply_to: InReplyTo
    created_at: Timestamp
    status: Annotated[
        str | None, msgspec.Meta(description="outbound: its status; inbound: its ack status (null before an ack)")
    ]

    @classmethod
    def of(cls, t: ThreadItem) -> ThreadMessage:
        return cls(t.id, t.direction, t.type, t.in_reply_to, format_ts(t.created_at), t.status)  # type: ignore[arg-type]


class Thread(View, frozen=True):
    """The thread a message belongs to, from its first message, oldest first, both directions."""

    id: Annotated[MessageId, msgspec.Meta(description="the message asked about")]
    root: Annotated[MessageId, msgspec.Meta(description="the first message of the thread")]
    messages: list[ThreadMessage]
    truncated: Annotated[bool, msgspec.Meta(description="the thread has more messages than one answer holds")]


class ConsentAsk(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Ask the provider of a received message for consent (becomes a `consent-request`)."""

    use: Use
    reason: Annotated[str, msgspec.Meta(description="why the consent is asked for")]
    authority: Annotated[str | None, msgspec.Meta(description="onward_transfer: the authority to pass it to")] = None
    proceeding: Annotated[str | None, msgspec.Meta(description="evidentiary_use: the proceeding")] = None
    handling: Annotated[
        dict[str, Any] | None, msgspec.Meta(description="handling terms of the request itself (defaults otherwise)")
    ] = None


class ConsentAnswer(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The provider's decision on a consent request (becomes a `consent-decision`)."""

    decision: Literal["granted", "refused", "granted_with_conditions"]
    conditions: Annotated[str | None, msgspec.Meta(description="required with granted_with_conditions")] = None
    reason: str | None = None
    valid_until: Annotated[Day | None, msgspec.Meta(description="a grant ends after this day")] = None
    handling: Annotated[
        dict[str, Any] | None, msgspec.Meta(description="handling terms of the decision itself (defaults otherwise)")
    ] = None


class FileUpload(View, frozen=True):
    """One upload (DESIGN §13): how much of it is held, and once complete its SHA-256."""

    file_id: Annotated[str, msgspec.Meta(description="UUIDv7: the upload's id", extra_json_schema={"format": "uuid"})]
    size: Annotated[
        int, msgspec.Meta(ge=0, description="the file's size: Upload-Length as declared, else the bytes sent")
    ]
    offset: Annotated[int, msgspec.Meta(ge=0, description="bytes held: resume a PATCH from here")]
    complete: Annotated[bool, msgspec.Meta(description="every byte is held (offset = size)")]
    sha256: Annotated[Sha256Hex | None, msgspec.Meta(description="SHA-256 of the whole file, once complete")]
    media_type: Annotated[str, msgspec.Meta(description="the Content-Type the file was created with")]
    filename: Annotated[str | None, msgspec.Meta(description="the `filename` it was created with")]
    created_at: Timestamp
    expires_at: Annotated[
        Timestamp | None,
        msgspec.Meta(
            description="removed then unless touched again (files.upload_ttl_seconds); null once a message names it"
        ),
    ]
    message_id: Annotated[
        str | None, msgspec.Meta(description="the first message naming this upload (it no longer expires), else null")
    ] = None

    @classmethod
    def of(cls, rec: UploadRecord, ttl_seconds: float) -> FileUpload:
        return cls(
            file_id=rec.file_id,
            size=rec.size,
            offset=rec.offset,
            complete=rec.complete,
            sha256=rec.sha256,
            media_type=rec.media_type,
            filename=rec.filename,
            created_at=format_ts(rec.created_at),
            expires_at=None if rec.named_by is not None else format_ts(rec.expires_at(ttl_seconds)),
            message_id=rec.named_by,
        )


class BatchProblem(View, frozen=True):
    """Why one message of a batch was refused: what `POST /v1/messages` would have answered for
    it, fields named inside the batch (`$.messages[3].body.case_reference`)."""

    status: Annotated[int, msgspec.Meta(ge=400, le=599)]
    code: str
    detail: str
    field: str | None
    errors: list[ProblemItem]


class BatchResult(View, frozen=True, kw_only=True):
    """One message of a batch: `accepted` (queued now), `replayed` (its idempotency key returned
    the message made before) or `refused` (with the problem; nothing of it was stored)."""

    index: Annotated[int, msgspec.Meta(ge=0, description="its position in the request")]
    status: Literal["accepted", "replayed", "refused"]
    id: MessageId | UnsetType = UNSET
    seq: Seq | UnsetType = UNSET
    handling: Terms | UnsetType = UNSET
    problem: BatchProblem | UnsetType = UNSET

    @classmethod
    def of(cls, r: BatchItem) -> BatchResult:
        if r.message is None:
            assert r.problem is not None
            e = r.problem
            items = [msgspec.convert(x, ProblemItem) for x in e.errors] or [ProblemItem(e.field, e.code, e.detail)]
            return cls(
                index=r.index, status="refused", problem=BatchProblem(e.status, e.code, e.detail, e.field, items)
            )
        m = r.message
        return cls(
            index=r.index,
            status="accepted" if r.created else "replayed",
            id=m.id,
            seq=m.seq,
            handling=r.terms if r.terms is not None else _out_terms(m),
        )


class BatchResults(View, frozen=True):
    """One result per message of a batch submission, in the order given."""

    results: list[BatchResult]


REQUEST_TYPES: tuple[type[msgspec.Struct], ...] = (TokenRequest, ConsentAsk, ConsentAnswer, HoldRequest, ReleaseRequest)
"""Request bodies of the local API decoded as Structs here (message bodies live in `core.schemas`)."""

RESPONSE_TYPES: tuple[type[View], ...] = (
    SubmitResponse,
    HoldView,
    HoldList,
    RetentionStatus,
    Message,
    MessageList,
    InboxSummaryList,
    InboxPage,
    InboxMessage,
    BatchResults,
    AckResponse,
    TokenResponse,
    TokenRevoked,
    TokenList,
    AuditEntries,
    InclusionProof,
    ConsistencyProof,
    Health,
    Readiness,
    AdminPeers,
    AdminKeys,
    RotateResponse,
    RenewResponse,
    RevokeResponse,
    RecoverResponse,
    EnvelopeResults,
    Thread,
    FileUpload,
)
"""Every answer type; `openapi.py` generates their components (and those they refer to)."""

# The Literals mirror the core's constants (an import-time check: a new type or status fails here).
assert set(get_args(Status)) == set(STATUSES)
assert set(get_args(Role)) == set(ROLES)
