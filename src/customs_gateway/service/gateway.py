"""The gateway service: what happens on submit, on receipt of envelopes, on ack and on token issue.

HTTP handlers and the delivery worker call this; it composes the pure core (envelopes, receipts,
replay rules, schemas) with the store. It holds no sockets itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

import structlog

from ..core import consent, docfiles, filerest, handling, refdata, reference, schemas, threads, upload
from ..core.audit import AuditEntry, NoteSigner, log_origin, witness_name
from ..core.backlog import Backlog
from ..core.bundle import PeerKeys, SignedBundle
from ..core.clock import Clock, IdSource, PeerClockOffset
from ..core.control import AckRequest, decode_struct
from ..core.encoding import format_ts, json_bytes, json_object, parse_ts, unb64url
from ..core.envelope import (
    BUSINESS_TYPES,
    Document,
    SignedDocument,
)
from ..core.epoch import KIND as EPOCH_KIND
from ..core.epoch import check_epoch, epoch_detail, epoch_of, epoch_origin, note_origin, read_epoch
from ..core.errors import AuthError, ConfigError, Conflict, DecodeError, GatewayError, NotFound, SchemaError
from ..core.filecrypt import FileError
from ..core.handling import HandlingTerms
from ..core.keys import RandBytes
from ..core.merkle import ProofError
from ..core.profile import Profile
from ..core.ratelimit import ConcurrencyLimit, RateLimiter
from ..core.receipt import make_refusal
from ..core.recovery import MAX_HELD, Cosigned, make_state
from ..core.rotation import check_update
from ..core.state import PeerLink, RecentCounts
from ..core.storekey import StoreKey
from ..core.witness import ForkError, check_advance, cosign_line, parse_request
from ..startup.agreement import load_agreement_profile
from ..startup.config import Config
from ..startup.daykeys import DAYS_DIR, DayKeys
from ..startup.keystore import Identity, write_atomic
from ..store.base import Incoming, MessageFilter, NewMessage, OutMessage, Store, TokenRecord, WitnessState
from ..store.sealed import SealedColumns, retention_day
from .auth import ROLES, TOKEN_ID_RE, check_secret, new_token, parse_bearer
from .crypto_pool import CryptoPool
from .crypto_workers import OpenKeys, Refused, open_batch, refused_error
from .disposal import Disposal
from .files import FileUploads
from .peer_files import MissingFile, PeerFiles
from .tls import PeerTLS

if TYPE_CHECKING:
    from .recovery import Recovery

log = structlog.get_logger("customs_gateway.gateway")

MAX_TTL: Final = dt.timedelta(days=30)
#: The store mark of rows stored in clear before data at rest (`Gateway.backfill_sealing`).
SEAL_BACKFILL: Final = "seal_backfill"
#: The store mark of messages stored before the reference index (`Gateway.backfill_references`).
BACKFILL: Final = "refs_backfill"
#: How long a token record read from the store is trusted before it is read again.
TOKEN_CACHE_SECONDS: Final = 2.0
TOKEN_CACHE_MAX: Final = 1024
#: Searches of the audit log for epoch entries read it this many entries at a time.
_AUDIT_PAGE: Final = 5000
_EPOCH_MARK: Final = json_bytes(EPOCH_KIND)


def _epoch_entry(data: bytes) -> AuditEntry | None:
    """The audit entry in `data` if it is a `log_epoch` entry. Only entries that hold the kind's
    quoted name (canonical JSON writes it just so) are parsed: a search of a million entries
    after a bulk load parses a handful."""
    if _EPOCH_MARK not in data:
        return None
    entry = AuditEntry.from_bytes(data)
    return entry if entry.kind == EPOCH_KIND else None


class KeyLifecycleHooks(Protocol):
    """What the delivery worker tells the key lifecycle (implemented by lifecycle.KeyLifecycle)."""

    async def on_delivered(self, delivered: list[OutMessage]) -> None: ...


@dataclass(frozen=True)
class SubmitRequest:
    type: str
    to: str
    body: dict[str, Any]
    expires_at: dt.datetime | None
    in_reply_to: str | None = None
    #: The handling terms as the back-end gave them (any subset), completed in `submit`.
    handling: dict[str, Any] | None = None
    #: The body the document carries: `body` with its files completed (size, sha256, key).
    document_body: dict[str, Any] | None = None


@dataclass(frozen=True)
class Submitted:
    """A submission as stored: the message, whether this request created it, and the handling
    terms of the document it made (None for a replay: the stored document's are read instead)."""

    message: OutMessage
    created: bool
    terms: HandlingTerms | None = None


@dataclass(frozen=True)
class BatchItem:
    """The result of one message of a batch submission: stored (new or replayed) or refused."""

    index: int
    message: OutMessage | None
    created: bool
    problem: GatewayError | None
    terms: HandlingTerms | None = None  # as in `Submitted`


#: The most messages one batch submission may hold (issue 21).
MAX_SUBMIT_BATCH: Final = 500


@dataclass
class Counters:
    """In-process counters the metrics endpoint reads (the store holds the durable truth)."""

    submitted: int = 0
    received: int = 0
    duplicates: int = 0
    refused_in: dict[str, int] = field(default_factory=dict)
    delivered: int = 0
    refused_out: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    expired: int = 0
    forks: int = 0
    paced: int = 0  # submissions held by flow control (decision 0018)


@dataclass(frozen=True)
class Caller:
    token_id: str
    role: str

    @property
    def actor(self) -> str:
        return f"token:{self.token_id}"


def day_keys(config: Config, store_key: StoreKey, randbytes: RandBytes = os.urandom) -> DayKeys:
    """The day keys that seal this gateway's store at rest (`keys/days/`, decision 0013)."""
    return DayKeys(config.path(config.keys_dir) / DAYS_DIR, store_key, randbytes)


class Gateway:
    """One administration's gateway: identity, the one peer it talks to, the store."""

    def __init__(
        self,
        config: Config,
        identity: Identity,
        peer: PeerKeys,
        store: Store,
        clock: Clock,
        ids: IdSource,
        randbytes: RandBytes = os.urandom,
        profile: Profile | None = None,
    ) -> None:
        self.config = config
        #: The agreement profile handling terms are completed from and checked against.
        self.profile = profile if profile is not None else load_agreement_profile(config)
        self.identity = identity
        self.peer = peer
        self.store = store
        self.clock = clock
        self.ids = ids
        self.randbytes = randbytes
        self.counters = Counters()
        self.outbox_changed = asyncio.Event()
        self.backlog = Backlog(config.delivery.backlog_high)  # flow control (decision 0018)
        self._backlog_room = asyncio.Event()
        self._backlog_room.set()
        self.inbox_changed = asyncio.Condition()
        self.crypto = CryptoPool(config.performance.crypto_processes)
        self._token_cache: dict[str, tuple[float, TokenRecord]] = {}
        self._peer_bundle_bytes: tuple[PeerKeys | None, bytes] = (None, b"")
        self.peer_clock = PeerClockOffset()
        self.link = PeerLink()
        #: Deliveries and refusals of the last hour, for the console (`core.state.RecentCounts`).
        self.recent = RecentCounts(clock.now())
        self._skew_warned_at: dt.datetime | None = None
        #: Distinct forks seen this run: (our cosigned size, root, their size, root).
        self._forks_seen: set[tuple[int, bytes | None, int, bytes]] = set()
        self.lifecycle: KeyLifecycleHooks | None = None
        #: The peer link's TLS contexts (None in the insecure dev mode or without listeners).
        self.tls: PeerTLS | None = None
        #: The restore check and recovery (set by the server; None: never checked, as in tools).
        self.recovery: Recovery | None = None
        #: Checkpoint origins in force: our log's and the peer's (log epochs, core.epoch).
        self.log_origin = log_origin(identity.name)
        if identity.store_key is None:
            raise ConfigError("the identity was loaded without its store key", field="keys_dir")
        store.subscribe(self._store_changed)  # replicas sharing the store wake each other
        #: Day keys that seal bodies at rest (`core.atrest`, `store.sealed`), beside the key store.
        self.day_keys = day_keys(config, identity.store_key, randbytes)
        self.sealed = SealedColumns(self.day_keys)
        #: The files directory: back-ends' uploads, and the files documents name (DESIGN §13),
        #: sealed at rest under keys wrapped by the store key, then the message's day key.
        self.files = FileUploads(
            config.files_dir(),
            config.files,
            clock,
            ids,
            wrap_key=identity.store_key.derive(filerest.WRAP_KEY_LABEL),
            day_keys=self.day_keys,
            randbytes=randbytes,
            part_timeout=config.security.body_read_timeout_seconds,
        )
        #: Ciphertexts of the files the peer sends (DESIGN §13), checked before their envelope.
        self.peer_files = PeerFiles(config.files_dir() / "peer", config.files, clock)
        store.seal_at_rest(self.sealed)
        #: Disposal at `retain_until` and legal holds (`service.disposal`).
        self.disposal = Disposal(self)
        #: The key business references are indexed under (`core.reference`).
        self.index_key = identity.store_key.derive(reference.INDEX_KEY_LABEL)
        self.peer_origin = log_origin(peer.identity)
        sec = config.security
        self.rate_limiter = RateLimiter(sec.rate_limit_per_second, sec.rate_limit_burst)
        self.long_polls = ConcurrencyLimit(sec.max_long_polls_per_token)

    @property
    def name(self) -> str:
        return self.identity.name

    # --- auth ------------------------------------------------------------------------------
    async def authenticate(self, authorization: str | None, roles: tuple[str, ...]) -> Caller:
        token_id, presented = parse_bearer(authorization)
        rec = await self._token(token_id)
        if rec is None or rec.revoked_at is not None or not check_secret(rec.secret_hash, presented):
            raise AuthError("bearer token is not valid", code="auth.invalid")
        if rec.expires_at is not None and self.clock.now() >= rec.expires_at:
            raise AuthError(f"bearer token {rec.id} expired at {format_ts(rec.expires_at)}", code="auth.expired")
        self.rate_limiter.take(rec.id, time.monotonic())
        if rec.role not in roles:
            raise AuthError(
                f"role {rec.role!r} may not call this endpoint (needs {' or '.join(roles)})",
                code="auth.forbidden",
                status=403,
            )
        return Caller(rec.id, rec.role)

    async def _token(self, token_id: str) -> TokenRecord | None:
        """The token's record, from a short-lived cache: every request would otherwise cross to
        the store's read thread. A token revoked in the store stops working within
        TOKEN_CACHE_SECONDS; unknown ids are never cached (no growth from guessing)."""
        now = time.monotonic()
        hit = self._token_cache.get(token_id)
        if hit is not None and now - hit[0] < TOKEN_CACHE_SECONDS:
            return hit[1]
        rec = await self.store.get_token(token_id)
        if rec is not None:
            if len(self._token_cache) >= TOKEN_CACHE_MAX:
                self._token_cache.clear()
            self._token_cache[token_id] = (now, rec)
        return rec

    async def issue_token(self, role: str, label: str, actor: str, *, valid_days: int | None = None) -> tuple[str, str]:
        return await issue_token(self.store, self.clock, role, label, actor, self.randbytes, valid_days=valid_days)

    async def revoke_token(self, token_id: str, actor: str) -> TokenRecord:
        rec = await revoke_token(self.store, self.clock, token_id, actor)
        self._token_cache.pop(token_id, None)  # refused from this request on, in this process
        return rec

    # --- submit ----------------------------------------------------------------------------
    def parse_submit(self, raw: bytes, owner: str | None = None) -> SubmitRequest:
        return self.parse_submit_dict(_json_request(raw), owner)

    def parse_submit_dict(self, d: dict[str, Any], owner: str | None = None) -> SubmitRequest:
        """The submit request in `d`, its body checked; files it names must be uploads of the
        token `owner`, complete (`core.docfiles`)."""
        for name in ("type", "to", "body"):
            if name not in d:
                raise SchemaError(f"{name} is required", code="schema.required", field=f"$.{name}")
        extra = set(d) - {"type", "to", "body", "expires_at", "in_reply_to", "handling"}
        if extra:
            raise SchemaError(
                f"unknown field {sorted(extra)[0]!r}",
                code="schema.unknown_field",
                field=f"$.{sorted(extra)[0]}",
            )
        msg_type, to, body = d["type"], d["to"], d["body"]
        if not isinstance(msg_type, str) or msg_type not in BUSINESS_TYPES:
            raise SchemaError(
                f"type must be one of {', '.join(BUSINESS_TYPES)}", code="schema.type_unknown", field="$.type"
            )
        if not isinstance(to, str) or to != self.peer.identity:
            raise SchemaError(
                f"to must name the configured peer ({self.peer.identity})",
                code="schema.recipient",
                field="$.to",
            )
        if not isinstance(body, dict):
            raise SchemaError("body must be an object", code="schema.type", field="$.body")
        try:
            document_body = self._complete_files(msg_type, body, owner)
            schemas.check_happened(schemas.validate_body(msg_type, document_body), self.clock.now())
        except SchemaError as e:
            e.moved(_under_body)
            raise
        expires = d.get("expires_at")
        expires_at = None
        if expires is not None:
            try:
                expires_at = parse_ts(expires, field="$.expires_at")
            except DecodeError as e:
                raise SchemaError(e.detail, code="schema.date", field="$.expires_at") from e
        reply_to = d.get("in_reply_to")
        if reply_to is not None and (not isinstance(reply_to, str) or not refdata.is_uuid(reply_to)):
            raise SchemaError(
                "in_reply_to must be a message id (a lower-case UUID)", code="schema.uuid", field="$.in_reply_to"
            )
        if reply_to is None:
            reply_to = threads.default_reply_to(msg_type, body)  # e.g. a reply answers its invitation
        given = d.get("handling")
        if given is not None and not isinstance(given, dict):
            raise SchemaError("handling must be an object", code="schema.type", field="$.handling")
        return SubmitRequest(msg_type, to, body, expires_at, reply_to, given, document_body)

    def _complete_files(self, msg_type: str, body: dict[str, Any], owner: str | None) -> dict[str, Any]:
        files = body.get("files")
        ids = docfiles.named_file_ids({"files": files}) if isinstance(files, list) else []
        now, ttl = self.clock.now(), self.config.files.upload_ttl_seconds
        records = {}
        for file_id in ids[: self.config.files.max_files_per_message]:
            rec = self.files.get(file_id) if upload.FILE_ID.fullmatch(file_id) else None
            records[file_id] = (
                rec if rec is not None and owner is not None and rec.visible_to(owner, now, ttl) else None
            )
        return docfiles.complete(
            msg_type, body, records, owner, self.config.files.max_files_per_message, self.randbytes
        )

    def handling_terms(self, msg_type: str, given: dict[str, Any] | None, now: dt.datetime) -> HandlingTerms:
        """The terms a new document carries: what the back-end gave, completed from the agreement
        profile's defaults for the type, checked against the profile (SchemaError `schema.*` or
        `handling.*` naming `$.handling.<field>`, every problem in `errors`)."""
        terms = handling.apply_defaults(given, msg_type, self.profile, now.date())
        handling.check_terms(terms, msg_type, self.profile, now.date())
        return terms

    async def submit(self, raw: bytes, caller: Caller, idempotency_key: str | None) -> Submitted:
        req = self.parse_submit(raw, caller.token_id)  # bad input is answered at once, never held
        await self._paced()
        msg, audit, terms = await self._prepare(req, caller, idempotency_key)
        out, created = await self.store.submit(msg, audit)
        if docfiles.named_file_ids(req.body):  # without files there is nothing to claim: no parse
            self._claim_files(msg, out.id)
        self._submitted(out, created)
        return Submitted(out, created, terms if created else None)

    async def submit_batch(self, raw: bytes, caller: Caller) -> list[BatchItem]:
        """`POST /v1/messages:batch`: each item checked as `submit` checks one (its own
        `idempotency_key`), the accepted ones committed in one transaction, in the order given;
        one result per item, a refusal naming its field under `$.messages[i]`."""
        items = _parse_batch_request(raw, MAX_SUBMIT_BATCH)
        await self._paced()
        results: list[BatchItem | None] = [None] * len(items)
        prepared: list[tuple[int, NewMessage, AuditEntry, HandlingTerms, bool]] = []
        for i, item in enumerate(items):
            try:
                if not isinstance(item, dict):
                    raise SchemaError("each message must be an object", code="schema.type", field="$")
                fields = dict(item)
                key = fields.pop("idempotency_key", None)
                if key is not None and not isinstance(key, str):
                    raise SchemaError("idempotency_key must be a string", code="schema.type", field="Idempotency-Key")
                req = self.parse_submit_dict(fields, caller.token_id)
                msg, audit, terms = await self._prepare(req, caller, key)
                prepared.append((i, msg, audit, terms, bool(docfiles.named_file_ids(req.body))))
            except GatewayError as e:
                results[i] = BatchItem(i, None, False, _in_batch(e, i))
        if prepared:
            stored = await self.store.submit_many([(m, a) for _, m, a, _, _ in prepared])
            for (i, msg, _, terms, with_files), res in zip(prepared, stored, strict=True):
                if isinstance(res, GatewayError):
                    results[i] = BatchItem(i, None, False, _in_batch(res, i))
                else:
                    if with_files:
                        self._claim_files(msg, res[0].id)
                    self._submitted(*res)
                    results[i] = BatchItem(i, res[0], res[1], None, terms if res[1] else None)
        return [r for r in results if r is not None]

    async def _prepare(
        self, req: SubmitRequest, caller: Caller, idempotency_key: str | None
    ) -> tuple[NewMessage, AuditEntry, HandlingTerms]:
        """Everything `submit` checks and builds before the store: terms, references, key, expiry,
        the signed document and its `submitted` entry (and the terms, for the answer)."""
        now = self.clock.now()
        terms = self.handling_terms(req.type, req.handling, now)
        await self._check_named(req.type, req.body)
        if req.in_reply_to is not None:
            await self._check_in_reply_to(req.in_reply_to)
        if idempotency_key is not None and not (1 <= len(idempotency_key) <= 200 and idempotency_key.isprintable()):
            raise SchemaError(
                "Idempotency-Key must be 1-200 printable characters",
                code="schema.length",
                field="Idempotency-Key",
            )
        expires_at = req.expires_at or now + dt.timedelta(seconds=self.config.delivery.default_ttl_seconds)
        if expires_at <= now:
            raise SchemaError("expires_at must be in the future", code="schema.date_order", field="$.expires_at")
        if expires_at - now > MAX_TTL:
            raise SchemaError("expires_at is at most 30 days ahead", code="schema.date_order", field="$.expires_at")
        hashed: dict[str, Any] = {
            "type": req.type,
            "to": req.to,
            "body": req.body,
            "expires_at": req.expires_at and format_ts(req.expires_at),
        }
        if req.in_reply_to is not None:  # absent otherwise: keys stored before threads keep their hash
            hashed["in_reply_to"] = req.in_reply_to
        if req.handling is not None:  # what was asked for: a replay the next day keeps its defaults
            hashed["handling"] = req.handling
        request_hash = hashlib.sha256(json_bytes(hashed)).digest()
        msg = self._new_message(
            req.type,
            req.document_body if req.document_body is not None else req.body,
            now,
            expires_at,
            caller.token_id,
            idempotency_key,
            request_hash,
            req.in_reply_to,
            terms,
        )
        detail = {"type": req.type, **(consent.audit_detail(msg.consent) if msg.consent else {})}
        audit = AuditEntry.submitted(now, caller.actor, msg.id, self.peer.identity, msg.document_sha256, detail)
        return msg, audit, terms

    def _claim_files(self, msg: NewMessage, message_id: str) -> None:
        """The uploads a stored message names are its own now: they no longer expire. After the
        commit: a crash in between leaves them to the idle expiry (a day at the earliest), and
        the idempotent replay of the submit claims them again."""
        if msg.type in docfiles.TYPES_WITH_FILES:
            document = SignedDocument.from_bytes(msg.signed_document).document_bytes
            day = retention_day(msg.retain_until, msg.created_at)
            self.files.claim([f.file_id for f in docfiles.sealed_files(msg.type, document)], message_id, day)

    async def _paced(self) -> None:
        """Flow control (decision 0018): while delivery is more than `delivery.backlog_high`
        messages behind, the worker is planning batches and the peer link works, wait until it
        has caught up (at most `delivery.backlog_wait_seconds`; then the submission goes
        through anyway)."""
        wait = self.config.delivery.backlog_wait_seconds
        if not self.backlog.holds(time.monotonic(), wait) or self.link.failing_since is not None:
            return
        self.counters.paced += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._backlog_room.wait(), wait)

    def planned(self, n: int, full: bool) -> None:
        """The delivery worker took `n` due messages into a batch (`full`: as many as it holds)."""
        self.backlog.planned(n, full, time.monotonic())
        if not self.backlog.over:
            self._backlog_room.set()

    def _submitted(self, out: OutMessage, created: bool) -> None:
        structlog.contextvars.bind_contextvars(message_id=out.id, peer=self.peer.identity)
        if created:
            self.counters.submitted += 1
            self.backlog.submitted()
            if self.backlog.over:
                self._backlog_room.clear()
            self.outbox_changed.set()
            log.info("message.submitted", type=out.type, seq=out.seq)
        else:
            log.info("message.idempotent_replay", type=out.type)

    async def _check_named(self, msg_type: str, body: dict[str, Any]) -> None:
        """What a body names must be a message the peer sent us, of the right type (a reply its
        invitation, a consent decision the request; `core.threads`)."""
        pairs = threads.named(msg_type, body)
        type_of: dict[str, str | None] = {}
        for _, message_id in pairs:
            item = await self.store.inbox_item(message_id)
            type_of[message_id] = item.type if item is not None and item.sender == self.peer.identity else None
        unknown = threads.first_unknown(msg_type, pairs, type_of, self.peer.identity)
        if unknown is not None:
            raise SchemaError(unknown[1], code="schema.reference", field=f"$.body.{unknown[0]}")

    async def _check_in_reply_to(self, message_id: str) -> None:
        """A message may answer only one the peer knows: one it sent us, or one we sent it that
        has not failed (an earlier message to the peer arrives first: order is per peer)."""
        if await self.store.known_to_peer(self.peer.identity, message_id):
            return
        raise SchemaError(
            f"in_reply_to {message_id} names no message exchanged with {self.peer.identity}",
            code="schema.reference",
            field="$.in_reply_to",
        )

    def _new_message(
        self,
        msg_type: str,
        body: dict[str, Any],
        now: dt.datetime,
        expires_at: dt.datetime,
        token_id: str | None,
        idempotency_key: str | None = None,
        request_hash: bytes | None = None,
        in_reply_to: str | None = None,
        terms: HandlingTerms | None = None,
    ) -> NewMessage:
        if terms is None and msg_type in BUSINESS_TYPES:  # every business document carries terms
            terms = self.handling_terms(msg_type, None, now)
        wire = None if terms is None else handling.to_wire(terms)
        doc = Document(self.ids.new_id(), self.name, self.peer.identity, msg_type, now, body, in_reply_to, wire)
        signed = SignedDocument.create(doc, self.identity.active_signing_key(now))
        return NewMessage(
            id=doc.id,
            peer=self.peer.identity,
            type=msg_type,
            created_at=now,
            expires_at=expires_at,
            signed_document=signed.raw,
            document_sha256=signed.digest,
            token_id=token_id,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            references=reference.tags(self.index_key, msg_type, doc.id, body),
            in_reply_to=in_reply_to,
            consent=consent.event_of(msg_type, doc.id, body, now),
            retain_until=None if terms is None else terms.retain_until,
        )

    # --- inbox ack -------------------------------------------------------------------------
    async def acknowledge(self, message_id: str, raw: bytes, caller: Caller) -> OutMessage:
        req: AckRequest = decode_struct(AckRequest, _json_request(raw) if raw else {})
        item = await self.store.inbox_item(message_id)
        if item is None or item.type not in BUSINESS_TYPES:
            raise NotFound(f"no inbox message {message_id}", code="inbox.not_found", field="id")
        if item.ack_status is not None:
            raise Conflict(f"message {message_id} was already acknowledged", code="ack.already", field="id")
        now = self.clock.now()
        body = {"message_id": item.id, "document_sha256": item.document_sha256.hex(), "status": req.status}
        if req.reason is not None:
            body["reason"] = req.reason
        ttl = dt.timedelta(seconds=self.config.delivery.default_ttl_seconds)
        ack = self._new_message("ack", body, now, now + ttl, caller.token_id)
        detail = {"type": "ack", "acknowledges": item.id, "status": req.status}
        audit = AuditEntry.submitted(now, caller.actor, ack.id, item.sender, ack.document_sha256, detail)
        out = await self.store.acknowledge_inbox(item.id, req.status, ack, audit)
        self.outbox_changed.set()
        return out

    # --- receiving -------------------------------------------------------------------------
    async def receive(self, raw: bytes) -> list[dict[str, Any]]:
        """Handle one POST /peer/v1/envelopes body; returns one result per envelope, in order."""
        envelopes = _parse_batch(raw, self.config.security.max_batch)
        now = self.clock.now()
        opened = await self.crypto.map(open_batch, self.open_keys(now), now, envelopes)
        results: list[dict[str, Any] | None] = [None] * len(envelopes)
        incoming: list[tuple[int, Incoming]] = []
        refusal_audit: list[AuditEntry] = []
        unopened: list[tuple[int, GatewayError, str, bytes]] = []
        for i, item in enumerate(opened):
            if isinstance(item, Refused):
                unopened.append((i, *refused_error(item)))
            else:
                incoming.append((i, item))
        if unopened:
            # An id we already hold with a receipt never gets a signed refusal: whoever sent an
            # envelope that fails its checks under that id gets the original receipt back, so no
            # refusal can exist beside the receipt of a message we accepted (DESIGN §10).
            held = await self.store.receipts_held(self.peer.identity, [mid for _, _, mid, _ in unopened])
            for i, err, mid, env_digest in unopened:
                receipt = held.get(mid)
                if receipt is not None:
                    results[i] = {"id": mid, "status": "duplicate", "receipt": json_object(receipt)}
                    continue
                results[i] = self._refuse(mid, err, now, env_digest)
                refusal_audit.append(self._refusal_entry(mid, err, now))
        for _, it in incoming:
            if it.sent_at is not None:
                self.observe_peer_clock(it.sent_at, now)
        incoming = await self._files_ready(incoming, results, refusal_audit, now)
        if incoming:
            outcomes = await self.store.accept_incoming([it for _, it in incoming])
            for (i, it), res in zip(incoming, outcomes, strict=True):
                if res.status == "conflict":
                    err = GatewayError("message id already received with a different document", code="replay.conflict")
                    results[i] = self._refuse(it.id, err, now, it.envelope_sha256)
                    refusal_audit.append(self._refusal_entry(it.id, err, now))
                    log.warning("replay.conflict", peer=it.sender, message_id=it.id)
                    continue
                if res.status == "refused":
                    err = GatewayError(res.detail, code=res.code or "replay.refused", field=res.field, status=409)
                    results[i] = self._refuse(it.id, err, now, it.envelope_sha256)
                    refusal_audit.append(self._refusal_entry(it.id, err, now))
                    if err.code == "replay.seq_reused":  # a restored or forked peer: alert
                        log.error("replay.seq_reused", peer=it.sender, message_id=it.id, seq=it.seq, detail=err.detail)
                    else:
                        log.warning("incoming.refused", peer=it.sender, message_id=it.id, code=err.code)
                    continue
                assert res.receipt is not None
                if res.status == "accepted" and it.announced is not None:
                    # The store committed the bundle with its `key_announced` entry (one
                    # transaction); now trust it and write the file the config names. A crash
                    # before the file is written is mended at start (`adopt_stored_peer_bundles`).
                    await self.apply_peer_bundle(it.announced, stored=True)
                if res.status == "duplicate":
                    self.counters.duplicates += 1
                else:
                    self.counters.received += 1
                    if it.files:  # its files are the message's now
                        self.peer_files.adopt([f.file_id for f in it.files], it.id)
                results[i] = {"id": it.id, "status": res.status, "receipt": json_object(res.receipt)}
            if any(r["status"] == "accepted" for r in results if r is not None):
                await self._wake_long_polls()
        if refusal_audit:
            await self.store.append_audit(refusal_audit)
        return [r for r in results if r is not None]

    async def announce(self, raw: bytes) -> list[str]:
        """POST /peer/v1/announce (decision 0017): envelopes whose files the peer is about to
        push. Each is opened as on delivery (signatures, decryption, the document's checks), but
        nothing is stored, audited or answered for it: the files it names are checked as their
        ciphertext arrives (`PeerFiles.watch`), so that when the envelope itself comes (`receive`)
        only the last part is left to check. One that does not open is ignored here; `receive`
        refuses it. Returns the file ids now watched."""
        envelopes = _parse_batch(raw, self.config.security.max_batch)
        now = self.clock.now()
        opened = await self.crypto.map(open_batch, self.open_keys(now), now, envelopes)
        watching: list[str] = []
        for it in opened:
            if isinstance(it, Refused):
                continue
            for f in it.files:
                if self.peer_files.watch(f.file_id, f.size, f.sha256, f.key):
                    watching.append(f.file_id)
        return watching

    async def _files_ready(
        self,
        incoming: list[tuple[int, Incoming]],
        results: list[dict[str, Any] | None],
        refusal_audit: list[AuditEntry],
        now: dt.datetime,
    ) -> list[tuple[int, Incoming]]:
        """The envelopes whose files are all here and check out against their document (G5: a
        message enters the inbox whole or not at all); the others are refused: `file.incomplete`
        (retryable: the sender sends the rest and tries again) or the file's check (`file.*`)."""
        ready = []
        for i, it in incoming:
            try:
                for f in it.files:
                    await asyncio.to_thread(self.peer_files.check, f.file_id, f.size, f.sha256, f.key)
            except (MissingFile, FileError) as err:
                results[i] = self._refuse(it.id, err, now, it.envelope_sha256)
                refusal_audit.append(self._refusal_entry(it.id, err, now))
                log.warning("incoming.file_refused", peer=it.sender, message_id=it.id, code=err.code)
                continue
            ready.append((i, it))
        return ready

    def observe_peer_clock(self, peer_time: dt.datetime, our_time: dt.datetime) -> None:
        """One reading of the peer's clock from a timestamp it signed; warns (at most every 10
        minutes) while the estimate is beyond half the skew window."""
        offset = self.peer_clock.observe(peer_time, our_time)
        limit = self.config.security.skew_seconds / 2
        if abs(offset) > limit and (
            self._skew_warned_at is None or (our_time - self._skew_warned_at).total_seconds() >= 600
        ):
            self._skew_warned_at = our_time
            log.warning(
                "peer.clock_skew",
                peer=self.peer.identity,
                offset_seconds=round(offset, 3),
                skew_window_seconds=self.config.security.skew_seconds,
            )

    def peer_bundle_bytes(self) -> bytes:
        """The peer's bundle as trusted now, as bytes (for crypto workers; cached per bundle)."""
        peer = self.peer
        if self._peer_bundle_bytes[0] is not peer:
            self._peer_bundle_bytes = (peer, peer.bundle.to_bytes())
        return self._peer_bundle_bytes[1]

    def open_keys(self, now: dt.datetime) -> OpenKeys:
        """This gateway's keys for opening a batch at `now`, as data a crypto worker can take."""
        return OpenKeys(
            me=self.name,
            peer_bundle=self.peer_bundle_bytes(),
            decryption=tuple((k.alg, k.seed) for k in self.identity.decryption.values()),
            receipt_seed=self.identity.active_signing_key(now).seed,
            skew_seconds=self.config.security.skew_seconds,
            index_key=self.index_key,
            profile=self.profile.data,
        )

    async def apply_peer_bundle(self, signed: SignedBundle, *, stored: bool = False) -> None:
        """Trust the peer's next bundle: remember it (unless the store already did, with its
        audit entry), write it where the config says, switch."""
        bundle = check_update(self.peer.bundle, signed, self.clock.now())
        if bundle is self.peer.bundle:
            return
        if not stored:
            await self.store.remember_bundle(self.peer.identity, signed.to_bytes(), self.clock.now())
        path = self.config.path(self.config.peer.bundle)
        try:
            write_atomic(path, signed.to_bytes(), 0o644)
        except OSError as e:  # the store holds it: the next start writes the file again
            log.error("peer.bundle_file_write_failed", path=str(path), error=e.strerror or str(e))
        self.peer = PeerKeys(bundle)
        log.info("peer.bundle_updated", peer=bundle.identity, serial=bundle.serial)
        self.check_peer_profile()
        if self.tls is not None:
            self.tls.refresh()  # a renewed peer certificate is trusted from the next handshake on

    def check_peer_profile(self) -> bool:
        """Log (a warning) when the peer's bundle states another agreement profile than ours;
        True when they are the same or the peer states none."""
        theirs = self.peer.bundle.agreement_profile
        if theirs is None or theirs == self.profile.sha256:
            return True
        log.warning(
            "agreement_profile.differs",
            peer=self.peer.identity,
            ours=self.profile.sha256,
            theirs=theirs,
            detail="both gateways must load the same agreement profile; documents the peer's profile does not "
            "allow are refused there",
        )
        return False

    async def adopt_stored_peer_bundles(self) -> None:
        """At start: trust any newer peer bundle the store committed (with its `key_announced`
        entry) that a crash kept out of the peer bundle file; each must follow from the last."""
        stored: list[SignedBundle] = []
        for owner, raw in await self.store.bundles():
            if owner != self.peer.identity:
                continue
            try:
                signed = SignedBundle.from_bytes(raw)
                if signed.bundle.serial > self.peer.bundle.serial:
                    stored.append(signed)
            except GatewayError:
                continue
        for signed in sorted(stored, key=lambda s: s.bundle.serial):
            try:
                await self.apply_peer_bundle(signed, stored=True)
            except GatewayError as e:
                log.warning("peer.stored_bundle_refused", serial=signed.bundle.serial, code=e.code)

    def _refuse(self, message_id: str, err: GatewayError, now: dt.datetime, envelope_sha256: bytes) -> dict[str, Any]:
        retryable = err.retryable  # the refusal policy (core.refusals)
        self.counters.refused_in[err.code] = self.counters.refused_in.get(err.code, 0) + 1
        st = make_refusal(
            message_id=message_id,
            sender=self.peer.identity,
            receiver=self.name,
            code=err.code,
            detail=err.detail,
            retryable=retryable,
            refused_at=now,
            envelope_sha256=envelope_sha256,
            key=self.identity.active_signing_key(now),
        )
        return {
            "id": message_id,
            "status": "refused",
            "code": err.code,
            "retryable": retryable,
            "refusal": st.to_dict(),
        }

    def _refusal_entry(self, message_id: str, err: GatewayError, now: dt.datetime) -> AuditEntry:
        return AuditEntry(
            at=now,
            kind="refused",
            actor=f"peer:{self.peer.identity}",
            message_id=message_id,
            peer=self.peer.identity,
            code=err.code,
            detail={"direction": "inbound", "field": err.field or ""},
        )

    # --- witnessing the peer's log ---------------------------------------------------------
    async def witness(self, raw: bytes) -> bytes:
        """Cosign the peer's checkpoint if it extends what we cosigned before; returns the line."""
        origin = self.peer_origin
        now = self.clock.now()
        self._check_request_origin(raw)
        req = parse_request(raw, origin, self.peer.records(), now)
        state = await self.store.witness_state(origin)
        stored_size, stored_root = (state.size, state.root) if state else (0, None)
        if req.old_size != stored_size:
            raise WitnessSizeMismatch(stored_size)
        try:
            check_advance(req, stored_size, stored_root)
        except (ForkError, ProofError) as e:
            fork = (stored_size, stored_root, req.checkpoint.size, req.checkpoint.root)
            if fork in self._forks_seen:
                raise  # the same fork asked again: refused again, logged and counted once
            self._forks_seen.add(fork)
            self.counters.forks += 1
            log.error("witness.fork_detected", peer=self.peer.identity, size=req.checkpoint.size, code=e.code)
            await self.store.append_audit(
                [
                    AuditEntry(
                        at=now,
                        kind="fork_detected",
                        actor=f"peer:{self.peer.identity}",
                        peer=self.peer.identity,
                        code=e.code,
                        detail={
                            "origin": origin,
                            "size": req.checkpoint.size,
                            "root": req.checkpoint.root.hex(),
                            "cosigned_size": stored_size,
                            "cosigned_root": stored_root.hex() if stored_root else "",
                        },
                    )
                ]
            )
            raise
        line = cosign_line(req, witness_name(self.name), NoteSigner(self.identity.active_witness_key(now)), now)
        cp = req.checkpoint
        await self.store.witness_advance(origin, stored_size, WitnessState(origin, cp.size, cp.root, req.note), now)
        return line

    def _check_request_origin(self, raw: bytes) -> None:
        """A cosign request for another epoch of the peer's log gets a clear 409."""
        note = raw.partition(b"\n\n")[2]
        origin = note_origin(note)
        asked, held = epoch_of(origin, self.peer.identity), epoch_of(self.peer_origin, self.peer.identity)
        if asked is None or held is None or asked == held:
            return  # parse_request names anything else that is wrong
        if asked < held:
            raise Conflict(
                f"{origin} is a closed epoch of {self.peer.identity}'s log (now {self.peer_origin})",
                code="witness.epoch_closed",
                field="note",
            )
        raise Conflict(
            f"{origin} is a new epoch: show its log_epoch entry first (POST /peer/v1/epoch)",
            code="witness.epoch_unknown",
            field="note",
        )

    def _store_changed(self, what: str) -> None:
        """Another replica committed a message to send (wake delivery) or a received one (wake
        long-polls)."""
        if what == "outbox":
            self.outbox_changed.set()
        else:
            asyncio.get_running_loop().create_task(self._wake_long_polls())

    async def _wake_long_polls(self) -> None:
        async with self.inbox_changed:
            self.inbox_changed.notify_all()

    async def backfill_references(self, page: int = 500) -> int:
        """Index messages stored before the reference index existed (the migration leaves a
        `refs_backfill` mark when there were any); resumable: progress is kept after each page,
        and the mark goes when done. Returns how many messages were read."""
        state = await self.store.get_meta(BACKFILL)
        if state is None:
            return 0
        done = 0
        phase, _, pos = state.partition(":")
        if phase in ("", "out"):
            after = pos or None
            while msgs := await self.store.list_messages(MessageFilter(), after, page):
                rows = []
                for m in msgs:
                    if m.disposed_at is not None:
                        continue  # nothing left to index
                    doc = Document.from_bytes(SignedDocument.from_bytes(m.signed_document).document_bytes)
                    rows += [(t, "out", m.id) for t in reference.tags(self.index_key, m.type, m.id, doc.body)]
                await self.store.add_references(rows)
                after, done = msgs[-1].id, done + len(msgs)
                await self.store.set_meta(BACKFILL, f"out:{after}")
            phase, pos = "in", ""
        cursor = int(pos or 0)
        while items := await self.store.inbox_after(cursor, page, BUSINESS_TYPES):
            rows = []
            for it in items:
                if it.disposed_at is not None:
                    continue
                body = Document.from_bytes(it.body).body
                rows += [(t, "in", it.id) for t in reference.tags(self.index_key, it.type, it.id, body)]
            await self.store.add_references(rows)
            cursor, done = items[-1].cursor, done + len(items)
            await self.store.set_meta(BACKFILL, f"in:{cursor}")
        await self.store.set_meta(BACKFILL, None)
        log.info("references.indexed", messages=done)
        return done

    async def backfill_sealing(self, page: int = 200) -> int:
        """Seal the rows stored in clear before data at rest (issue 18; the migration leaves a
        `seal_backfill` mark when there were any). Resumable without a position: each page is
        written back sealed and so leaves the query; bounded: one page per transaction. Each
        row is sealed under its terms' `retain_until` (the profile's default for a business
        document older than handling terms; the control rule otherwise). Returns rows sealed."""
        if await self.store.get_meta(SEAL_BACKFILL) is None:
            return 0
        done = 0
        for table in ("messages", "inbox"):
            while rows := await self.store.rows_in_clear(table, page):
                sealed = [self.sealed.clear_row(r, self._retain_until_of(r.type, r.signed_document)) for r in rows]
                changed = await self.store.seal_rows(sealed)
                done += changed
                if changed == 0:  # nothing took (cannot happen: each row left clear is sealed)
                    break
        await self.store.drop_clear_copies()
        await self.store.set_meta(SEAL_BACKFILL, None)
        log.info("atrest.sealed", rows=done)
        return done

    def _retain_until_of(self, msg_type: str, signed_document: bytes) -> dt.date | None:
        if msg_type not in BUSINESS_TYPES:
            return None
        doc = Document.from_bytes(SignedDocument.from_bytes(signed_document).document_bytes)
        if doc.handling is not None:
            return handling.from_wire(doc.handling).retain_until
        try:  # older than handling terms: the default the profile gives the type that day
            return handling.apply_defaults(None, msg_type, self.profile, doc.created_at.date()).retain_until
        except GatewayError:
            return None  # a type the profile no longer knows: kept as a control message is

    async def load_origins(self) -> None:
        """At start: the origins in force, from the newest checkpoint of ours (and any epoch
        entry after it) and the newest epoch of the peer's log this witness holds."""
        latest = await self.store.latest_checkpoint()
        origin = note_origin(latest.note) if latest is not None else log_origin(self.name)
        size, _ = await self.store.audit_head()
        # The entries since that checkpoint, a page at a time: after a crash or a bulk load there
        # may be a million of them, and holding them all at once cost 550 MiB at start.
        start = latest.size if latest is not None else 0
        while start < size:
            end = min(size, start + _AUDIT_PAGE)
            for _, data in await self.store.audit_entries(start, end):
                if (entry := _epoch_entry(data)) is not None:
                    origin = read_epoch(entry).origin
            start = end
        self.log_origin = origin
        n = 0
        while await self.store.witness_state(epoch_origin(self.peer.identity, n + 1)) is not None:
            n += 1
        self.peer_origin = epoch_origin(self.peer.identity, n)

    async def accept_epoch(self, raw: bytes) -> bytes:
        """`POST /peer/v1/epoch`: the peer's log starts a new epoch after a restore. Accepted only
        with its `log_epoch` entry proven into the first checkpoint of the new origin and naming
        exactly what we cosigned last; the old origin's state stays frozen. Returns the
        cosignature line of that checkpoint (idempotent for the same checkpoint)."""
        d = json_object(raw, field="body")
        try:
            entry = unb64url(str(d["entry"]), field="entry")
            index = d["index"]
            note = str(d["note"]).encode("utf-8")
            proof = [unb64url(str(x), field="proof") for x in d["proof"]]
        except (KeyError, TypeError) as e:
            raise SchemaError(f"epoch request needs entry, index, note and proof ({e})", code="schema.required") from e
        if isinstance(index, bool) or not isinstance(index, int):
            raise SchemaError("index must be a whole number", code="schema.type", field="index")
        origin = note_origin(note)
        if epoch_of(origin, self.peer.identity) is None:
            raise SchemaError(
                f"{origin!r} is not an origin of {self.peer.identity}'s log", code="witness.epoch_invalid"
            )
        now = self.clock.now()
        req = parse_request(b"old 0\n\n" + note, origin, self.peer.records(), now)
        held = await self.store.witness_state(origin)
        if held is not None:  # asked again (a lost answer): the same checkpoint gets the same answer
            if (held.size, held.root) != (req.checkpoint.size, req.checkpoint.root):
                raise Conflict(f"epoch {origin} is already under way at size {held.size}", code="witness.size_mismatch")
            return cosign_line(req, witness_name(self.name), NoteSigner(self.identity.active_witness_key(now)), now)
        prev = await self.store.witness_state(self.peer_origin)
        start = check_epoch(
            identity=self.peer.identity,
            entry_bytes=entry,
            index=index,
            proof=proof,
            checkpoint=req.checkpoint,
            held_origin=self.peer_origin,
            held_size=prev.size if prev is not None else 0,
            held_root=prev.root if prev is not None else None,
        )
        cp = req.checkpoint
        await self.store.witness_advance(origin, 0, WitnessState(origin, cp.size, cp.root, note), now)
        await self.store.append_audit(
            [
                AuditEntry(
                    at=now,
                    kind="peer_epoch",
                    actor=f"peer:{self.peer.identity}",
                    peer=self.peer.identity,
                    digests={"entry": hashlib.sha256(entry).hexdigest()},
                    detail={**epoch_detail(start), "entry_index": index, "checkpoint_size": cp.size},
                )
            ]
        )
        log.warning(
            "witness.epoch_accepted",
            peer=self.peer.identity,
            origin=origin,
            previous_origin=start.previous_origin,
            previous_cosigned_size=start.previous_size,
            restored_size=start.restored_size,
            reason=start.reason,
        )
        self.peer_origin = origin
        return cosign_line(req, witness_name(self.name), NoteSigner(self.identity.active_witness_key(now)), now)

    # --- what we have seen of the peer (asked by a restored peer) ------------------------
    async def peer_state_statement(self, after_seq: int) -> bytes:
        """The signed `GET /peer/v1/state` answer (core.recovery)."""
        peer = self.peer.identity
        ps = await self.store.peer_state(peer)
        held = await self.store.inbox_since(peer, after_seq, MAX_HELD + 1)
        ws = await self.store.witness_state(self.peer_origin)
        now = self.clock.now()
        st = make_state(
            signer=self.name,
            subject=peer,
            at=now,
            received_high_seq=ps.recv_high_water,
            after_seq=after_seq,
            held=[(h.id, h.seq, h.document_sha256, h.receipt) for h in held[:MAX_HELD]],
            more=len(held) > MAX_HELD,
            cosigned=None if ws is None else Cosigned(ws.origin, ws.size, ws.root),
            key=self.identity.active_signing_key(now),
        )
        return st.to_bytes()

    async def close(self) -> None:
        self.crypto.close()
        self.peer_files.close()


def _under_body(field: str | None) -> str | None:
    """A body's JSON path as a path in the submit request (`$.x` → `$.body.x`)."""
    return "$.body" + field[1:] if field and field.startswith("$") else field


async def find_epoch_entry(store: Store, origin: str, before: int) -> tuple[int, bytes] | None:
    """The `log_epoch` entry that starts `origin`, searched backwards from entry `before`."""
    end = before
    while end > 0:
        start = max(0, end - _AUDIT_PAGE)
        for index, data in reversed(await store.audit_entries(start, end)):
            entry = _epoch_entry(data)
            if entry is not None and entry.detail.get("origin") == origin:
                return index, data
        end = start
    return None


class WitnessSizeMismatch(Conflict):
    """The cosign request's `old` is not the size we hold (C2SP: 409 with our size)."""

    code = "witness.size_mismatch"

    def __init__(self, held: int) -> None:
        super().__init__(f"this witness holds size {held}", field="old")
        self.held = held


async def issue_token(
    store: Store,
    clock: Clock,
    role: str,
    label: str,
    actor: str,
    randbytes: RandBytes = os.urandom,
    *,
    valid_days: int | None = None,
) -> tuple[str, str]:
    """Create a token (expiring `valid_days` from now, or never); returns (token id, bearer
    secret). Only the secret's hash is stored."""
    if role not in ROLES:
        raise SchemaError(f"role must be one of {', '.join(ROLES)}", code="schema.enum", field="$.role")
    if len(label) > 200 or not label.isprintable():
        raise SchemaError("label is at most 200 printable characters", code="schema.length", field="$.label")
    if valid_days is not None and not 1 <= valid_days <= 3650:
        raise SchemaError("valid_days must be from 1 to 3650", code="schema.range", field="$.valid_days")
    tok = new_token(randbytes)
    now = clock.now()
    expires = now + dt.timedelta(days=valid_days) if valid_days is not None else None
    detail: dict[str, Any] = {"token_id": tok.id, "role": role}
    if expires is not None:
        detail["expires_at"] = format_ts(expires)
    audit = AuditEntry(at=now, kind="token_issued", actor=actor, detail=detail)
    await store.add_token(TokenRecord(tok.id, role, tok.secret_hash, label, now, expires_at=expires), audit)
    return tok.id, tok.secret


async def revoke_token(store: Store, clock: Clock, token_id: str, actor: str) -> TokenRecord:
    """Revoke a token from now on. A running gateway refuses it at once if the revocation went
    through its API, within TOKEN_CACHE_SECONDS if another process (the CLI) wrote it."""
    if not isinstance(token_id, str) or not TOKEN_ID_RE.match(token_id):
        raise SchemaError("a token id is 16 lowercase hex digits", code="schema.pattern", field="id")
    now = clock.now()
    audit = AuditEntry(at=now, kind="token_revoked", actor=actor, detail={"token_id": token_id})
    return await store.revoke_token(token_id, now, audit)


def _parse_batch_request(raw: bytes, limit: int) -> list[object]:
    d = _json_request(raw)
    extra = sorted(set(d) - {"messages"})
    if extra:
        raise SchemaError(f"unknown field {extra[0]!r}", code="schema.unknown_field", field=f"$.{extra[0]}")
    if "messages" not in d:
        raise SchemaError("messages is required", code="schema.required", field="$.messages")
    items = d["messages"]
    if not isinstance(items, list):
        raise SchemaError("messages must be a list", code="schema.type", field="$.messages")
    if not 1 <= len(items) <= limit:
        raise SchemaError(f"messages must hold 1 to {limit} messages", code="schema.length", field="$.messages")
    return items


def _in_batch(e: GatewayError, i: int) -> GatewayError:
    """`e` with its fields named inside the batch request: `$.body.x` → `$.messages[i].body.x`."""
    at = f"$.messages[{i}]"

    def where(field: str | None) -> str:
        if field is None or field == "$":
            return at
        if field == "Idempotency-Key":
            return f"{at}.idempotency_key"
        return at + field[1:] if field.startswith("$") else f"{at}.{field}"

    return e.moved(where)


def _json_request(raw: bytes) -> dict[str, Any]:
    try:
        d = json_object(raw, field="request body")
    except DecodeError as e:
        raise SchemaError(e.detail, code="schema.json", field="$") from e
    schemas.refuse_duplicate_keys(raw, d)  # I-JSON: a key twice is refused, never read two ways
    return d


def _parse_batch(raw: bytes, max_batch: int) -> list[object]:
    d = json_object(raw, field="request body")
    if "envelopes" in d:
        envs = d["envelopes"]
        if not isinstance(envs, list) or not envs:
            raise DecodeError("envelopes must be a non-empty list", field="$.envelopes")
        if len(envs) > max_batch:
            raise GatewayError(
                f"a batch holds at most {max_batch} envelopes",
                code="batch.too_large",
                field="$.envelopes",
                status=413,
            )
        return list(envs)
    return [d]
