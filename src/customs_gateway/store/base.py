"""The store interface: everything the gateway persists, as one async API over two backends.

Every method that changes state does so in one transaction together with the audit entries that
record the change (G7), and returns only after the commit is durable (G5). A failed commit raises
StoreUnavailable and leaves nothing behind.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final

from ..core import threads
from ..core.audit import AuditEntry
from ..core.bundle import SignedBundle
from ..core.consent import ConsentEvent, ConsentRecord
from ..core.docfiles import SealedFile
from ..core.encoding import json_object
from ..core.errors import Conflict, GatewayError
from ..core.replay import seq_reused_error
from ..core.state import PENDING_SQL, check_ack

if TYPE_CHECKING:
    from .sealed import SealedColumns


@dataclass(frozen=True)
class NewMessage:
    """An outbound message ready to be queued (document already signed)."""

    id: str
    peer: str
    type: str
    created_at: dt.datetime
    expires_at: dt.datetime
    signed_document: bytes
    document_sha256: bytes
    token_id: str | None
    idempotency_key: str | None = None
    request_hash: bytes | None = None
    references: tuple[bytes, ...] = ()  # reference tags to index it under (`core.reference`)
    in_reply_to: str | None = None  # the message it answers (threads)
    consent: ConsentEvent | None = None  # a consent request or decision to record (`core.consent`)
    retain_until: dt.date | None = None  # its handling terms' retention date (None: a control message)


@dataclass(frozen=True)
class OutMessage:
    """An outbound message as stored."""

    id: str
    peer: str
    seq: int
    type: str
    status: str
    created_at: dt.datetime
    expires_at: dt.datetime
    signed_document: bytes
    document_sha256: bytes
    attempts: int
    next_attempt_at: dt.datetime
    last_error: str | None
    ciphertext: bytes | None
    enc_kid: str | None
    receipt: bytes | None
    refusal: bytes | None
    ack: dict[str, Any] | None
    updated_at: dt.datetime
    history: tuple[tuple[dt.datetime, str, str], ...] = ()
    in_reply_to: str | None = None
    retain_until: dt.date | None = None  # the day whose key seals it at rest (None: stored in clear)
    disposed_at: dt.datetime | None = None  # set once disposed of: its document and ciphertext are gone


@dataclass(frozen=True)
class AttemptOutcome:
    """What one delivery attempt of one message ended with."""

    message_id: str
    kind: str  # "delivered" | "refused" | "retry" | "expired"
    at: dt.datetime
    attempt: int
    receipt: bytes | None = None
    refusal: bytes | None = None
    error: str | None = None
    next_attempt_at: dt.datetime | None = None
    ciphertext: bytes | None = None
    enc_kid: str | None = None
    audit: tuple[AuditEntry, ...] = ()
    retain_until: dt.date | None = None  # the message's (`OutMessage.retain_until`): seals the ciphertext


@dataclass(frozen=True)
class Incoming:
    """A verified, decrypted envelope to commit to the inbox, with a receipt signed in advance."""

    sender: str
    id: str
    seq: int
    type: str
    created_at: dt.datetime
    received_at: dt.datetime
    document_sha256: bytes
    signed_document: bytes
    body: bytes  # exact document bytes (JSON); the inbox returns them parsed
    receipt: bytes
    audit: AuditEntry
    acked_message_id: str | None = None  # for `ack` envelopes: our outbound message it acknowledges
    ack_info: dict[str, Any] | None = None
    extra_audit: tuple[AuditEntry, ...] = ()  # e.g. `key_announced` for an applied key bundle
    announced: SignedBundle | None = None  # a peer key bundle to trust before committing
    envelope_sha256: bytes = b""  # `Envelope.digest` of the envelope it came in (a refusal binds it)
    sent_at: dt.datetime | None = None  # the envelope's signed `sent_at` (the peer's clock)
    references: tuple[bytes, ...] = ()  # reference tags to index it under (`core.reference`)
    in_reply_to: str | None = None  # the message it answers: one exchanged with the sender
    named: tuple[tuple[str, str], ...] = ()  # (body field, id) of messages we must have sent (`core.threads`)
    consent: ConsentEvent | None = None  # a consent request or decision to record (`core.consent`)
    retain_until: dt.date | None = None  # its handling terms' retention date (None: a control message)
    hold_notice: HoldNotice | None = None  # a `legal-hold` notice: the peer holds (or released) a message
    files: tuple[SealedFile, ...] = ()  # the files its document names, read once where it was opened


@dataclass(frozen=True)
class IncomingResult:
    """`accepted` (new), `duplicate` (original receipt), `conflict` (same id, other document) or
    `refused` (an ack that `core.state.check_ack` does not admit: `code` and `detail` say why)."""

    status: str
    receipt: bytes | None
    code: str | None = None
    detail: str = ""
    field: str | None = None


@dataclass(frozen=True)
class InboxItem:
    cursor: int
    sender: str
    id: str
    type: str
    created_at: dt.datetime
    received_at: dt.datetime
    document_sha256: bytes
    body: bytes
    ack_status: str | None
    ack_message_id: str | None
    in_reply_to: str | None = None
    retain_until: dt.date | None = None  # the day whose key seals it at rest (None: stored in clear)
    disposed_at: dt.datetime | None = None  # set once disposed of: its body is gone (b"")


@dataclass(frozen=True)
class TokenRecord:
    id: str
    role: str
    secret_hash: bytes
    label: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None  # None: until revoked


#: The tokens table's columns in TokenRecord order (both stores read them so).
TOKEN_COLUMNS: Final = "id, role, secret_hash, label, created_at, revoked_at, expires_at"  # noqa: S105


@dataclass(frozen=True)
class PeerState:
    peer: str
    next_seq: int
    recv_high_water: int
    gap_count: int
    gaps: tuple[tuple[int, int], ...] = field(default=())


@dataclass(frozen=True)
class HeldMessage:
    """A message from the peer that our inbox holds, as the peer-state answer lists it."""

    id: str
    seq: int
    document_sha256: bytes
    receipt: bytes


@dataclass(frozen=True)
class CheckpointRecord:
    """A checkpoint of our log: signed note, and the peer-cosigned note once the peer answered."""

    size: int
    root: bytes
    note: bytes
    created_at: dt.datetime
    cosigned_note: bytes | None = None
    cosigned_at: dt.datetime | None = None


@dataclass(frozen=True)
class WitnessState:
    """The newest checkpoint of the peer's log that we cosigned."""

    origin: str
    size: int
    root: bytes
    note: bytes


@dataclass(frozen=True)
class Evidence:
    """What an export carries for one message: the signed document and the signed answers."""

    message_id: str
    direction: str  # "outbound" (we sent it; receipt by the peer) | "inbound" (receipt by us)
    peer: str
    signed_document: bytes  # b"" once disposed of
    receipt: bytes | None
    refusal: bytes | None
    retain_until: dt.date | None = None  # the day whose key seals it at rest (None: stored in clear)
    type: str = ""
    created_at: dt.datetime | None = None
    document_sha256: bytes = b""
    disposed_at: dt.datetime | None = None  # its document is gone: evidence says "withheld: disposed"


@dataclass(frozen=True)
class DueRow:
    """A message whose retention day has passed, to be disposed of (`service.disposal`)."""

    direction: str  # "outbound" | "inbound"
    id: str
    peer: str
    type: str
    retain_until: dt.date
    document_sha256: bytes
    signed_document: bytes | None  # opened, to find the files it names; None if it no longer opens
    hold_id: bytes | None  # the key of a released legal hold its data is sealed under, if any


@dataclass(frozen=True)
class HoldNotice:
    """What a `legal-hold` notice from the peer says (recorded as a hold of origin "peer")."""

    message_id: str
    action: str  # "placed" | "released"
    reason: str
    at: dt.datetime
    notice_id: str


@dataclass(frozen=True)
class Hold:
    """A legal hold on one message: ours (keeps our copy past its date) or the peer's (told to
    us by its signed notice; informational)."""

    message_id: str
    origin: str  # "ours" | "peer"
    direction: str  # "outbound" | "inbound": which of our tables holds the message
    reason: str
    placed_by: str  # "token:<id>" for ours, "peer:<identity>" for the peer's
    placed_at: dt.datetime
    hold_id: bytes | None = None  # ours: the id of the key its data is sealed under
    notice_id: str | None = None  # the signed notice that told the other side
    released_at: dt.datetime | None = None
    released_by: str | None = None
    release_reason: str | None = None

    @property
    def active(self) -> bool:
        return self.released_at is None


@dataclass(frozen=True)
class RetentionTotals:
    """What the retention metrics show (`Store.retention_totals`)."""

    due: int  # past their day, not disposed of yet (held ones excluded)
    disposed: int
    held: int  # under one of our active holds
    oldest_held: dt.date | None  # the earliest retention day among held messages


@dataclass(frozen=True)
class ClearRow:
    """A row stored in clear before sealing at rest (`Gateway.backfill_sealing` seals it):
    `table` is "messages" or "inbox"; `body` is None for "messages"."""

    table: str
    id: str
    type: str
    created_at: dt.datetime
    signed_document: bytes
    body: bytes | None
    retain_until: dt.date | None = None  # set with the sealed values when written back


@dataclass(frozen=True)
class MessageFilter:
    status: str | None = None
    type: str | None = None
    since: dt.datetime | None = None
    peer: str | None = None
    reference: bytes | None = None  # a reference tag (`core.reference.query_tag`)


def names_messages(it: Incoming) -> bool:
    """Whether an arrival names messages the receiver must know (`reference_refusal` checks them)."""
    return it.in_reply_to is not None or bool(it.named) or it.hold_notice is not None


def reference_refusal(
    it: Incoming, reply_known: bool, type_of: dict[str, str | None], held_known: bool = True
) -> IncomingResult | None:
    """The answer to an arrival naming a message the receiver does not know, else None:
    `in_reply_to` must be one exchanged with the sender (`reply_known`); what the body names one we
    sent the sender, of the right type (`type_of`: the type of our message to the sender under each
    named id, None if we sent none; `core.threads`); a `legal-hold` notice one exchanged with the
    sender (`held_known`)."""
    if it.hold_notice is not None and not held_known:
        detail = f"the legal-hold notice names {it.hold_notice.message_id}, no message exchanged with {it.sender}"
        return IncomingResult("refused", None, "schema.reference", detail, "body.message_id")
    if it.in_reply_to is not None and not reply_known:
        detail = f"in_reply_to {it.in_reply_to} names no message exchanged with {it.sender}"
        return IncomingResult("refused", None, "schema.reference", detail, "document.in_reply_to")
    unknown = threads.first_unknown(it.type, it.named, type_of, "this receiver")
    if unknown is not None:
        return IncomingResult("refused", None, "schema.reference", unknown[1], f"body.{unknown[0]}")
    return None


def ack_refusal(it: Incoming, ours: tuple[str, str, bytes] | None) -> IncomingResult | None:
    """The answer to an ack arrival that `core.state.check_ack` does not admit, else None.
    `ours` is (status, peer, document SHA-256) of the message it acknowledges, if we hold it."""
    status = None if ours is None or ours[1] != it.sender else ours[0]
    try:
        check_ack(status, None if ours is None else ours[2], str((it.ack_info or {}).get("document_sha256", "")))
    except Conflict as e:
        return IncomingResult("refused", None, e.code, e.detail, "body.message_id")
    return None


def seq_reused(it: Incoming, high_water: int | None, held_id: str | None) -> IncomingResult | None:
    """The answer to a new arrival whose sequence number another message already holds."""
    if high_water is None or it.seq > high_water or held_id is None or held_id == it.id:
        return None
    err = seq_reused_error(it.seq, held_id)
    return IncomingResult("refused", None, err.code, err.detail, err.field)


# --- rows shared by the SQL backends -------------------------------------------------------------
# Both stores keep the same columns in the same order and give back the same records (the store
# contract tests compare them); only how a timestamp column reads back differs (SQLite: the
# `format_ts` text, PostgreSQL: a timestamptz), so that conversion is passed in.

OUT_COLS: Final = (
    "id, peer, seq, type, status, created_at, expires_at, signed_document, document_sha256, attempts,"
    " next_attempt_at, last_error, ciphertext, enc_kid, receipt, refusal, ack, updated_at, in_reply_to, retain_until,"
    " disposed_at"
)
IN_COLS: Final = (
    "cursor, sender, id, type, created_at, received_at, document_sha256, body, ack_status, ack_message_id, in_reply_to,"
    " retain_until, disposed_at"
)


#: Rows per retention day in both tables (`Store.retention_counts`); the same SQL on both backends.
RETENTION_COUNTS_SQL: Final = (
    "SELECT retain_until, sum(m), sum(i) FROM ("
    " SELECT retain_until, 1 AS m, 0 AS i FROM messages UNION ALL SELECT retain_until, 0, 1 FROM inbox"
    ") AS t GROUP BY retain_until"
)


# --- retention and disposal (`store.retention`): the same SQL on both engines, `$n` parameters
# (SQLite replaces them by `?` and passes a repeated one again).
_HELD: Final = "SELECT message_id FROM holds WHERE origin='ours' AND released_at IS NULL"
_DUE_WHERE: Final = f"retain_until < $1 AND disposed_at IS NULL AND id NOT IN ({_HELD})"
DUE_OUT_SQL: Final = (
    "SELECT 'outbound', m.id, m.peer, m.type, m.retain_until, m.document_sha256, m.signed_document, h.hold_id"
    " FROM messages m LEFT JOIN holds h ON h.message_id = m.id AND h.origin = 'ours'"
    f" WHERE m.retain_until < $1 AND m.disposed_at IS NULL AND NOT (m.{PENDING_SQL})"
    " AND (h.message_id IS NULL OR h.released_at IS NOT NULL) ORDER BY m.retain_until, m.id LIMIT $2"
)
DUE_IN_SQL: Final = (
    "SELECT 'inbound', m.id, m.sender, m.type, m.retain_until, m.document_sha256, m.signed_document, h.hold_id"
    " FROM inbox m LEFT JOIN holds h ON h.message_id = m.id AND h.origin = 'ours'"
    " WHERE m.retain_until < $1 AND m.disposed_at IS NULL"
    " AND (h.message_id IS NULL OR h.released_at IS NOT NULL) ORDER BY m.retain_until, m.id LIMIT $2"
)
LIVE_DAYS_SQL: Final = (
    f"SELECT DISTINCT retain_until FROM messages WHERE {_DUE_WHERE}"
    f" UNION SELECT DISTINCT retain_until FROM inbox WHERE {_DUE_WHERE}"
)
RETENTION_TOTALS_SQL: Final = (
    f"SELECT (SELECT count(*) FROM messages WHERE {_DUE_WHERE}) + (SELECT count(*) FROM inbox WHERE {_DUE_WHERE}),"
    " (SELECT count(*) FROM messages WHERE disposed_at IS NOT NULL)"
    " + (SELECT count(*) FROM inbox WHERE disposed_at IS NOT NULL),"
    f" (SELECT count(*) FROM holds WHERE origin='ours' AND released_at IS NULL),"
    f" (SELECT min(d) FROM (SELECT retain_until AS d FROM messages WHERE id IN ({_HELD})"
    f" UNION ALL SELECT retain_until FROM inbox WHERE id IN ({_HELD})) AS t)"
)
#: A disposed message's consent records keep who asked for which use and the decision, not the
#: free text.
DISPOSED_CONSENTS_SQL: Final = (
    "UPDATE consents SET reason='', conditions=NULL, decision_reason=NULL WHERE message_id=$1"
)
EVIDENCE_OUT_COLS: Final = (
    "id, peer, signed_document, receipt, refusal, retain_until, type, created_at, document_sha256, disposed_at"
)
EVIDENCE_IN_COLS: Final = (
    "id, sender, signed_document, receipt, NULL, retain_until, type, created_at, document_sha256, disposed_at"
)


def evidence_from_row(direction: str, r: Sequence[Any], ts: Callable[[Any], dt.datetime]) -> Evidence:
    return Evidence(
        message_id=r[0],
        direction=direction,
        peer=r[1],
        signed_document=bytes(r[2]),
        receipt=_opt_bytes(r[3]),
        refusal=_opt_bytes(r[4]),
        retain_until=day_of(r[5]),
        type=r[6],
        created_at=ts(r[7]),
        document_sha256=bytes(r[8]),
        disposed_at=None if r[9] is None else ts(r[9]),
    )


def totals_from_row(r: Sequence[Any]) -> RetentionTotals:
    return RetentionTotals(due=int(r[0] or 0), disposed=int(r[1] or 0), held=int(r[2] or 0), oldest_held=day_of(r[3]))


#: The consents table's columns in ConsentRecord order (both stores read them so).
CONSENT_COLS: Final = (
    "request_id, message_id, role, use_kind, party, reason, requested_at, decision_id, decision, conditions,"
    " decision_reason, valid_until, decided_at"
)


def consent_from_row(r: Sequence[Any], ts: Callable[[Any], dt.datetime]) -> ConsentRecord:
    """A `ConsentRecord` from a row of `CONSENT_COLS` (`valid_until` stored as YYYY-MM-DD)."""
    return ConsentRecord(
        request_id=r[0],
        message_id=r[1],
        role=r[2],
        use=r[3],
        party=r[4],
        reason=r[5],
        requested_at=ts(r[6]),
        decision_id=r[7],
        decision=r[8],
        conditions=r[9],
        decision_reason=r[10],
        valid_until=None if r[11] is None else dt.date.fromisoformat(r[11]),
        decided_at=None if r[12] is None else ts(r[12]),
    )


def to_ms(v: dt.datetime) -> dt.datetime:
    """`v` in UTC at millisecond precision: the instant either store gives back for it.

    Raises ValueError for a naive datetime."""
    if v.tzinfo is None:
        raise ValueError("naive datetime")
    u = v.astimezone(dt.timezone.utc)
    return u.replace(microsecond=u.microsecond - u.microsecond % 1000)


def _opt_bytes(v: Any) -> bytes | None:
    return None if v is None else bytes(v)


def day_of(v: Any) -> dt.date | None:
    """A `retain_until` column as read back: SQLite text `YYYY-MM-DD`, PostgreSQL a date."""
    if v is None or isinstance(v, dt.date):
        return v
    return dt.date.fromisoformat(str(v))


def out_message_from_row(r: Sequence[Any], ts: Callable[[Any], dt.datetime]) -> OutMessage:
    """An `OutMessage` from a row of `OUT_COLS`; `ts` reads one timestamp column."""
    return OutMessage(
        id=r[0],
        peer=r[1],
        seq=r[2],
        type=r[3],
        status=r[4],
        created_at=ts(r[5]),
        expires_at=ts(r[6]),
        signed_document=bytes(r[7]),
        document_sha256=bytes(r[8]),
        attempts=r[9],
        next_attempt_at=ts(r[10]),
        last_error=r[11],
        ciphertext=_opt_bytes(r[12]),
        enc_kid=r[13],
        receipt=_opt_bytes(r[14]),
        refusal=_opt_bytes(r[15]),
        ack=None if r[16] is None else json_object(bytes(r[16])),
        updated_at=ts(r[17]),
        in_reply_to=r[18],
        retain_until=day_of(r[19]),
        disposed_at=None if r[20] is None else ts(r[20]),
    )


def inbox_item_from_row(r: Sequence[Any], ts: Callable[[Any], dt.datetime]) -> InboxItem:
    """An `InboxItem` from a row of `IN_COLS`; `ts` reads one timestamp column."""
    return InboxItem(
        cursor=r[0],
        sender=r[1],
        id=r[2],
        type=r[3],
        created_at=ts(r[4]),
        received_at=ts(r[5]),
        document_sha256=bytes(r[6]),
        body=bytes(r[7]),
        ack_status=r[8],
        ack_message_id=r[9],
        in_reply_to=r[10],
        retain_until=day_of(r[11]),
        disposed_at=None if r[12] is None else ts(r[12]),
    )


GroupKey = tuple[str | None, str | None]


def idempotency_keys(batch: Sequence[tuple[NewMessage, AuditEntry]]) -> dict[int, GroupKey]:
    """(token, Idempotency-Key) of each submission of a group that has one, by position."""
    return {
        i: (m.token_id, m.idempotency_key)
        for i, (m, _) in enumerate(batch)
        if m.idempotency_key is not None and m.token_id is not None
    }


def plan_group(
    batch: Sequence[tuple[NewMessage, AuditEntry]],
    keyed: dict[int, GroupKey],
    held: dict[GroupKey, tuple[str, bytes]],
    results: list[Any],
) -> tuple[list[int], dict[int, str]]:
    """Which submissions of a group are new (`fresh`, in order) and which replay an earlier use of
    their Idempotency-Key (`replay_of`: position -> message id), given the keys the store already
    `held` (key -> message id, request hash); a key reused with another request gets its
    Conflict in `results`. One submission after another would decide the same (both stores'
    `_submit_group`)."""
    fresh: list[int] = []
    replay_of: dict[int, str] = {}  # the message an earlier use of the same key made
    first_with: dict[GroupKey, int] = {}
    for i, (m, _) in enumerate(batch):
        key = keyed.get(i)
        before = held.get(key) if key else None
        if key and before is None and key in first_with:  # the same key earlier in this group
            before = (batch[first_with[key]][0].id, batch[first_with[key]][0].request_hash or b"")
        if before is None:
            if key:
                first_with[key] = i
            fresh.append(i)
        elif before[1] != m.request_hash:
            results[i] = Conflict(
                "Idempotency-Key was already used with a different request",
                code="idempotency.conflict",
                field="Idempotency-Key",
            )
        else:
            replay_of[i] = before[0]
    return fresh, replay_of


def queued_message(msg: NewMessage, seq: int) -> OutMessage:
    """What `submit` stores for a new message, as a later read gives it back (no read-back needed)."""
    created = to_ms(msg.created_at)
    return OutMessage(
        id=msg.id,
        peer=msg.peer,
        seq=seq,
        type=msg.type,
        status="queued",
        created_at=created,
        expires_at=to_ms(msg.expires_at),
        signed_document=msg.signed_document,
        document_sha256=msg.document_sha256,
        attempts=0,
        next_attempt_at=created,
        last_error=None,
        ciphertext=None,
        enc_kid=None,
        receipt=None,
        refusal=None,
        ack=None,
        updated_at=created,
        in_reply_to=msg.in_reply_to,
        retain_until=msg.retain_until,
    )


@dataclass(frozen=True)
class ThreadItem:
    """One business message of a thread, either way: outbound with its status, inbound with its
    ack status."""

    id: str
    direction: str  # "outbound" | "inbound"
    type: str
    in_reply_to: str | None
    created_at: dt.datetime
    status: str | None


#: How far up a thread `Store.thread` walks to its first message, and how many it returns.
MAX_THREAD_DEPTH: Final = 1000
MAX_THREAD: Final = 500
#: Message types that are not business messages (never listed, never in a thread).
CONTROL_TYPES_SQL: Final = "('ack','key-announcement','cosign-request','legal-hold')"
#: Whether a message ($1) is a business message exchanged with a peer ($2), either way (SQLite
#: reads `$n` as its numbered parameter `?n`).
EXCHANGED_SQL: Final = (
    f"SELECT 1 FROM inbox WHERE id=$1 AND sender=$2 AND type NOT IN {CONTROL_TYPES_SQL}"
    f" UNION ALL SELECT 1 FROM messages WHERE id=$1 AND peer=$2 AND type NOT IN {CONTROL_TYPES_SQL} LIMIT 1"
)


class Store(abc.ABC):
    """Async persistence for one gateway. Implementations: SQLite (default), PostgreSQL."""

    #: Seals bodies, signed documents and ciphertexts at rest (`store.sealed`); None: kept in
    #: clear (a store used without a gateway's keys, as some tools and tests do).
    sealed: SealedColumns | None = None

    def seal_at_rest(self, sealed: SealedColumns) -> None:
        """Seal what is written from now on, and open what is read, with `sealed`'s day keys."""
        self.sealed = sealed

    # What both backends do around their transactions: seal before, open after (`store.sealed`).
    def _seal_new(self, msg: NewMessage) -> NewMessage:
        if self.sealed is None:
            return replace(msg, retain_until=None) if msg.retain_until is not None else msg
        return self.sealed.new_message(msg)

    def _seal_in(self, it: Incoming) -> Incoming:
        if self.sealed is None:
            return replace(it, retain_until=None) if it.retain_until is not None else it
        return self.sealed.incoming(it)

    def _seal_outcomes(self, outcomes: list[AttemptOutcome]) -> list[AttemptOutcome]:
        sealed = self.sealed
        if sealed is None:
            return outcomes
        return [sealed.outcome(o) for o in outcomes]

    def _submitted(self, plain: NewMessage, out: OutMessage, created: bool) -> OutMessage:
        """The message `submit` answers with: the plain document it was given, or the stored
        one (opened) for a replay."""
        if created:
            return replace(out, signed_document=plain.signed_document)
        return self._open_out(out)

    def _open_out(self, m: OutMessage) -> OutMessage:
        return m if self.sealed is None else self.sealed.out_message(m)

    def _open_outs(self, msgs: list[OutMessage]) -> list[OutMessage]:
        sealed = self.sealed
        return msgs if sealed is None else [sealed.out_message(m) for m in msgs]

    def _open_in(self, item: InboxItem) -> InboxItem:
        return item if self.sealed is None else self.sealed.inbox_item(item)

    def _open_ins(self, items: list[InboxItem]) -> list[InboxItem]:
        sealed = self.sealed
        return items if sealed is None else [sealed.inbox_item(i) for i in items]

    def _due_rows(self, rows: list[Any]) -> list[DueRow]:
        """Rows of DUE_OUT_SQL / DUE_IN_SQL, their documents opened where they still open."""
        out: list[DueRow] = []
        for r in rows:
            direction, mid, raw = r[0], r[1], bytes(r[6])
            doc: bytes | None = raw
            if self.sealed is not None:
                try:
                    doc = self.sealed.signed_document(direction, mid, raw)
                except GatewayError:
                    doc = None  # its key is gone already: disposed of but for the row
            day = day_of(r[4])
            assert day is not None
            hold = None if r[7] is None else bytes.fromhex(r[7])
            out.append(DueRow(direction, mid, r[2], r[3], day, bytes(r[5]), doc, hold))
        return out

    def _open_consent(self, r: ConsentRecord) -> ConsentRecord:
        return r if self.sealed is None else self.sealed.consent_record(r)

    def _open_evidence(self, found: list[Evidence]) -> list[Evidence]:
        sealed = self.sealed
        return found if sealed is None else [sealed.evidence(e) for e in found]

    def subscribe(self, on_change: Callable[[str], None]) -> None:
        """Be told when another process sharing this store commits work for us: `"outbox"` (a
        message to send) or `"inbox"` (a message received). Called before `open`. A store only one
        process uses has nothing to tell (SQLite): the gateway wakes itself."""
        return None

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def try_lead(self, role: str) -> bool:
        """Whether this instance is (now) the one replica that performs `role` (e.g. "checkpointer").

        Ask again before each round of the work: leadership can be lost at any time (the store's
        connection drops) and taken over by another replica. A store that only one process can use
        is always the leader; stores shared by replicas override this. Never raises for a database
        that is unreachable: that is simply not leading.
        """
        return True

    # outbound ------------------------------------------------------------------------------
    @abc.abstractmethod
    async def submit(self, msg: NewMessage, audit: AuditEntry) -> tuple[OutMessage, bool]:
        """Queue a message (assigning its per-peer seq) or return the one already queued under
        the same (token, Idempotency-Key) and request hash (created=False). Raises Conflict when
        the key was used with a different request."""

    @abc.abstractmethod
    async def due(self, peer: str, now: dt.datetime, limit: int, after_seq: int = 0) -> list[OutMessage]:
        """Up to `limit` pending messages for `peer` with seq > `after_seq`, in seq order, if the
        first of them is due (messages behind it go with it, whatever their own retry time).

        `after_seq` lets the delivery worker plan the batch behind one still in flight."""

    async def release(self, message_ids: list[str]) -> None:
        """Give up a claim taken by `due` without an outcome (a planned batch not sent).
        Stores without claims (SQLite: one process) have nothing to do."""
        return None

    @abc.abstractmethod
    async def record_outcomes(self, outcomes: list[AttemptOutcome]) -> None: ...

    @abc.abstractmethod
    async def next_due_at(self, peer: str) -> dt.datetime | None: ...

    @abc.abstractmethod
    async def get_message(self, message_id: str) -> OutMessage | None: ...

    @abc.abstractmethod
    async def list_messages(self, flt: MessageFilter, after: str | None, limit: int) -> list[OutMessage]: ...

    @abc.abstractmethod
    async def queue_depth(self, peer: str) -> tuple[int, dt.datetime | None]:
        """Pending count and the oldest pending created_at."""

    # inbound -------------------------------------------------------------------------------
    @abc.abstractmethod
    async def accept_incoming(self, items: list[Incoming]) -> list[IncomingResult]:
        """Dedupe on (sender, id), insert new rows, advance sequence marks, all in one commit."""

    @abc.abstractmethod
    async def append_audit(self, entries: list[AuditEntry]) -> None: ...

    @abc.abstractmethod
    async def receipts_held(self, sender: str, message_ids: list[str]) -> dict[str, bytes]:
        """The receipts we issued for those of `message_ids` from `sender` that our inbox holds."""

    @abc.abstractmethod
    async def inbox_since(self, sender: str, after_seq: int, limit: int) -> list[HeldMessage]:
        """Messages from `sender` our inbox holds with a sequence number above `after_seq`, by
        sequence number, at most `limit` (what a restored peer asks for: `GET /peer/v1/state`)."""

    @abc.abstractmethod
    async def pending(self, peer: str) -> list[OutMessage]:
        """Every message to `peer` still waiting for an answer (queued or retrying), control
        messages (acks, key announcements) included, by sequence number: what `renumber_pending`
        renumbers."""

    @abc.abstractmethod
    async def renumber_pending(self, peer: str, first_seq: int, audit: AuditEntry) -> int:
        """Give the pending messages to `peer` new sequence numbers from `first_seq` on, in their
        order, and never hand out a number below the last of them again (recovery after a
        restore: the peer has seen the old numbers); `audit` commits in the same transaction.
        Returns how many were renumbered."""

    @abc.abstractmethod
    async def inbox_after(
        self, cursor: int, limit: int, types: tuple[str, ...], reference: bytes | None = None
    ) -> list[InboxItem]:
        """Inbox items after `cursor` of `types`, in cursor order; with `reference`, only those
        indexed under that tag."""

    @abc.abstractmethod
    async def submit_many(
        self, batch: list[tuple[NewMessage, AuditEntry]]
    ) -> list[tuple[OutMessage, bool] | GatewayError]:
        """Commit several submissions in one transaction, in order; each result as `submit` would
        give it (an idempotency conflict is that item's error, the others are committed)."""

    @abc.abstractmethod
    async def inbox_item(self, message_id: str) -> InboxItem | None: ...

    @abc.abstractmethod
    async def consents_for(self, message_ids: Sequence[str]) -> dict[str, list[ConsentRecord]]:
        """The consent requests (with their latest decisions) about each of `message_ids`, oldest
        first; ids without any are absent."""

    @abc.abstractmethod
    async def consent(self, request_id: str) -> ConsentRecord | None: ...

    @abc.abstractmethod
    async def get_meta(self, key: str) -> str | None:
        """A value the store keeps about itself (e.g. an upgrade's unfinished work), or None."""

    @abc.abstractmethod
    async def set_meta(self, key: str, value: str | None) -> None:
        """Set (None: delete) a value the store keeps about itself."""

    @abc.abstractmethod
    async def add_references(self, rows: list[tuple[bytes, str, str]]) -> None:
        """Index messages already stored under reference tags: (tag, "out" | "in", message id);
        rows already there are kept."""

    @abc.abstractmethod
    async def known_to_peer(self, peer: str, message_id: str) -> bool:
        """Whether `message_id` is a business message `peer` knows: one it sent us, or one we
        sent it that has not failed (refused or expired)."""

    @abc.abstractmethod
    async def thread_items(self, message_ids: list[str]) -> list[ThreadItem]:
        """The business messages (either direction) with these ids (at most 500 ids)."""

    @abc.abstractmethod
    async def replies(self, message_ids: list[str]) -> list[ThreadItem]:
        """The business messages (either direction) answering any of these (at most 500 ids)."""

    async def thread(self, message_id: str) -> tuple[str, list[ThreadItem], bool] | None:
        """The thread `message_id` belongs to: (its first message's id, its messages oldest first,
        whether it was cut at MAX_THREAD), or None for an unknown id. Walks up `in_reply_to` to the
        first message (a cycle or a missing parent ends the walk), then down by replies."""
        found = await self.thread_items([message_id])
        if not found:
            return None
        root, seen = found[0], {found[0].id}
        for _ in range(MAX_THREAD_DEPTH):
            if root.in_reply_to is None or root.in_reply_to in seen:
                break
            up = await self.thread_items([root.in_reply_to])
            if not up:
                break
            root = up[0]
            seen.add(root.id)
        items, frontier, cut = {root.id: root}, [root.id], False
        while frontier and not cut:
            below: list[ThreadItem] = []
            for i in range(0, len(frontier), 500):
                below += [r for r in await self.replies(frontier[i : i + 500]) if r.id not in items]
            for r in below:
                if len(items) >= MAX_THREAD:
                    cut = True
                    break
                items[r.id] = r
            frontier = [r.id for r in below if r.id in items]
        return root.id, sorted(items.values(), key=lambda t: (t.created_at, t.id)), cut

    @abc.abstractmethod
    async def inbox_last_cursor(self) -> int:
        """The highest inbox cursor handed out so far (0 for an empty inbox)."""

    @abc.abstractmethod
    async def acknowledge_inbox(self, message_id: str, status: str, ack: NewMessage, audit: AuditEntry) -> OutMessage:
        """Mark an inbox message processed/rejected and queue the `ack` envelope, atomically.
        Raises Conflict (`ack.already`) if it was acknowledged before."""

    @abc.abstractmethod
    async def peer_state(self, peer: str) -> PeerState: ...

    # tokens --------------------------------------------------------------------------------
    @abc.abstractmethod
    async def add_token(self, token: TokenRecord, audit: AuditEntry) -> None: ...

    @abc.abstractmethod
    async def get_token(self, token_id: str) -> TokenRecord | None: ...

    @abc.abstractmethod
    async def list_tokens(self) -> list[TokenRecord]:
        """Every token ever issued (revoked ones too), oldest first; secrets are only hashes."""

    @abc.abstractmethod
    async def revoke_token(self, token_id: str, at: dt.datetime, audit: AuditEntry) -> TokenRecord:
        """Mark a token revoked from `at` on, with its audit entry; returns the revoked record.
        NotFound (`token.not_found`) if there is no such token, Conflict
        (`token.already_revoked`) if it was revoked before."""

    # audit ---------------------------------------------------------------------------------
    @abc.abstractmethod
    async def audit_size(self) -> int: ...

    @abc.abstractmethod
    async def audit_entries(self, start: int, end: int) -> list[tuple[int, bytes]]: ...

    @abc.abstractmethod
    async def audit_entries_about(self, message_ids: list[str], size: int) -> list[tuple[int, bytes]]:
        """(index, entry bytes) of every entry below `size` whose `message_id` is one of
        `message_ids`, in index order (indexed: never a scan of the log)."""

    @abc.abstractmethod
    async def audit_head(self) -> tuple[int, bytes]:
        """(size, root) of the audit log now."""

    @abc.abstractmethod
    async def inclusion_proof(self, index: int, size: int) -> list[bytes]: ...

    @abc.abstractmethod
    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]: ...

    @abc.abstractmethod
    async def root_at(self, size: int) -> bytes:
        """Root of the log's first `size` entries (size <= current size)."""

    @abc.abstractmethod
    async def add_checkpoint(self, cp: CheckpointRecord) -> None: ...

    @abc.abstractmethod
    async def set_cosigned(self, size: int, cosigned_note: bytes, at: dt.datetime) -> None: ...

    @abc.abstractmethod
    async def checkpoints(self, after_size: int = -1, limit: int = 1000) -> list[CheckpointRecord]: ...

    @abc.abstractmethod
    async def latest_checkpoint(self, *, cosigned: bool = False) -> CheckpointRecord | None: ...

    @abc.abstractmethod
    async def witness_state(self, origin: str) -> WitnessState | None: ...

    @abc.abstractmethod
    async def witness_advance(self, origin: str, old_size: int, new: WitnessState, at: dt.datetime) -> None:
        """Store `new` as the cosigned state iff the stored size is still `old_size` (atomic
        check-and-persist); raises Conflict (`witness.size_mismatch`) otherwise. Cosigning is
        not itself an audit entry: logging it would make each side's log grow with every
        cosignature of the other's, and the two would checkpoint each other forever."""

    @abc.abstractmethod
    async def remember_bundle(self, owner: str, bundle: bytes, at: dt.datetime) -> None: ...

    @abc.abstractmethod
    async def bundles(self) -> list[tuple[str, bytes]]: ...

    @abc.abstractmethod
    async def rows_in_clear(self, table: str, limit: int) -> list[ClearRow]:
        """Up to `limit` rows of `table` ("messages" or "inbox") not yet sealed (`retain_until`
        NULL), by id."""

    @abc.abstractmethod
    async def retention_counts(self) -> list[tuple[dt.date | None, int, int]]:
        """(retain_until, messages, inbox rows) per retention day the store holds rows for; None
        counts the rows still in clear."""

    async def drop_clear_copies(self) -> None:
        """After `seal_rows` sealed everything: let go of the copies in clear that the database's
        own files still hold (SQLite: the WAL's older frames). PostgreSQL keeps old row versions
        until VACUUM, which operations.md asks the DBA to run after the upgrade."""
        return None

    @abc.abstractmethod
    async def seal_rows(self, rows: list[ClearRow]) -> int:
        """Write back `rows` sealed (`store.sealed.SealedColumns.clear_row`), each only if still
        in clear; a message's cached ciphertext is dropped (the next attempt rebuilds it).
        Returns how many rows changed."""

    @abc.abstractmethod
    async def evidence(self, message_ids: list[str]) -> list[Evidence]:
        """Signed documents with receipts/refusals for these ids, outbound and inbound."""

    # --- retention and disposal (`store.retention`, `service.disposal`) ------------------
    @abc.abstractmethod
    async def due_for_disposal(self, today: dt.date, limit: int) -> list[DueRow]:
        """Up to `limit` messages (outbound first, then inbound) whose retention day is before
        `today`, not disposed of, not being delivered, not under an active hold of ours; their
        signed documents opened where they still open."""

    @abc.abstractmethod
    async def dispose(self, rows: list[DueRow], at: dt.datetime, audit: dict[str, AuditEntry]) -> list[str]:
        """Dispose of `rows` in one transaction, each with its audit entry (`audit[id]`), each
        only if still due (not disposed of, not held meanwhile). Returns the ids disposed of."""

    @abc.abstractmethod
    async def live_days(self, today: dt.date) -> set[dt.date]:
        """Retention days before `today` that some row not disposed of still needs the key of."""

    @abc.abstractmethod
    async def place_hold(self, hold: Hold, audit: AuditEntry) -> Hold:
        """Place our hold on a message (its values sealed again under `hold.hold_id`'s key),
        with its audit entry. Raises NotFound / Conflict (`store.retention.check_holdable`);
        `hold.direction` is filled in from where the message is found."""

    @abc.abstractmethod
    async def release_hold(
        self, message_id: str, at: dt.datetime, by: str, reason: str | None, audit: AuditEntry
    ) -> Hold:
        """Release our active hold on `message_id`; NotFound if there is none."""

    @abc.abstractmethod
    async def holds_for(self, message_ids: Sequence[str]) -> dict[str, list[Hold]]:
        """The holds (ours and the peer's, active or released) on these messages."""

    @abc.abstractmethod
    async def list_holds(self, active_only: bool, limit: int) -> list[Hold]:
        """Holds, most recent first."""

    @abc.abstractmethod
    async def retention_totals(self, today: dt.date) -> RetentionTotals: ...
