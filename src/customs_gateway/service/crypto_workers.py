"""Per-envelope cryptography off the event loop, on every core: building and opening batches.

pyca/cryptography's HPKE holds the GIL, so crypto threads only move HPKE off the event loop; they
add no core (measured in docs/performance.md). `crypto_pool.CryptoPool` therefore runs these
batch functions in worker processes (`[performance] crypto_processes`, default 2), split into one
chunk per worker, and in a thread when the pool is off (0), a batch is small, or the pool broke.
The processes are a `procpool.DirectProcessPool`: the event loop writes each chunk to a worker's
socket and reads the answer when it is ready, with no feeder or result threads between.

This module is what the workers' fork server imports: it must not import asyncio, aiohttp or
structlog, which the workers never use (each would be memory in the fork server and every worker;
a test keeps it so).

What crosses to a worker: the messages, the current time, and the key material the batch needs,
as seeds (Ed25519 32 bytes, HPKE 32/96 bytes) and public bundle bytes. Workers are forked from a
`forkserver` started before any key is loaded, hold the keys only in memory (cached by seed so a
batch does not re-derive them), never log, never write to disk, and exit with the gateway.
Rotation needs nothing special: every job carries the keys valid for it.

The functions here are the whole per-envelope logic for both directions; the thread path runs
the same functions, so the two paths cannot diverge.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import select
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..core import consent, docfiles, handling, reference, schemas, threads
from ..core.audit import AuditEntry
from ..core.bundle import KeyBundle, PeerKeys, SignedBundle
from ..core.control import AckBody, LegalHoldBody, decode_struct
from ..core.encoding import json_bytes, unb64url
from ..core.envelope import (
    BUSINESS_TYPES,
    Document,
    DocumentHead,
    Envelope,
    envelope_of,
    open_envelope,
    read_header,
)
from ..core.errors import GatewayError, SchemaError
from ..core.handling import HandlingTerms
from ..core.keys import DecryptionKey, EncryptionKey, SigningKey, held_decryption_key
from ..core.profile import Profile, load_profile
from ..core.receipt import Statement, make_receipt, verify_receipt, verify_refusal
from ..core.rotation import KeyAnnouncementBody, check_update
from ..core.tlscert import check_possession
from ..store.base import HoldNotice, Incoming

T = TypeVar("T")


#: What a worker returns for an envelope it refuses: (code, detail, field, status, message id).
@dataclass(frozen=True)
class Refused:
    """Why an envelope was not accepted, as it crosses back from a worker process."""

    code: str
    detail: str
    field: str | None
    status: int
    message_id: str
    envelope_sha256: bytes
    error_class: str  # the GatewayError subclass raised, rebuilt by `refused_error`


#: One message to build: (signed document bytes, seq, attempt, ciphertext of an earlier attempt).
BuildItem = tuple[bytes, int, int, bytes | None]
#: A built envelope: (its JSON bytes, ciphertext, recipient key id, whether its document names
#: files: those the sender announces and pushes first).
Built = tuple[bytes, bytes, str, bool]


# --- key material as plain data ------------------------------------------------------------------


@dataclass(frozen=True)
class SealKeys:
    """The sender's keys for one batch, as seeds and raw public keys (picklable)."""

    signing_seed: bytes
    recipient_alg: str
    recipient_raw: bytes

    @classmethod
    def of(cls, signing: SigningKey, recipient: EncryptionKey) -> SealKeys:
        return cls(signing.seed, recipient.alg, recipient.raw)


@dataclass(frozen=True)
class OpenKeys:
    """The receiver's view for one batch: its name, the peer's bundle, its private keys as seeds."""

    me: str
    peer_bundle: bytes  # KeyBundle.to_bytes() of the bundle trusted now
    decryption: tuple[tuple[str, bytes], ...]  # (alg, seed) of every decryption key held
    receipt_seed: bytes  # the signing key for receipts at this batch's time
    skew_seconds: float
    index_key: bytes  # the reference-index key (`core.reference`) the inbox is indexed under
    profile: bytes  # the agreement profile's bytes (`core.profile`): handling terms are checked against it


# Worker-side caches (also used by the thread path): loading a key costs more than using it once.
_signing: dict[bytes, SigningKey] = {}
_encryption: dict[tuple[str, bytes], EncryptionKey] = {}
_open_views: dict[OpenKeys, OpenView] = {}
_CACHE_MAX = 16


def _cached(cache: dict[Any, Any], key: Any, make: Callable[[], T]) -> T:
    hit = cache.get(key)
    if hit is None:
        if len(cache) >= _CACHE_MAX:
            cache.clear()  # a handful of keys live at once; rotation just starts over
        hit = cache[key] = make()
    return hit


def signing_key(seed: bytes) -> SigningKey:
    return _cached(_signing, seed, lambda: SigningKey(seed))


@dataclass(frozen=True)
class OpenView:
    """Live objects for opening envelopes, built once per OpenKeys."""

    me: str
    peer: PeerKeys
    decryption: dict[str, DecryptionKey]
    receipt_key: SigningKey
    skew_seconds: float
    index_key: bytes
    profile: Profile

    def decryption_key(self, kid: str) -> DecryptionKey:
        return held_decryption_key(self.decryption, kid, self.me)


def open_view(keys: OpenKeys) -> OpenView:
    def make() -> OpenView:
        dks = [DecryptionKey(alg, seed) for alg, seed in keys.decryption]
        return OpenView(
            keys.me,
            PeerKeys(KeyBundle.from_bytes(keys.peer_bundle)),
            {k.kid: k for k in dks},
            signing_key(keys.receipt_seed),
            keys.skew_seconds,
            keys.index_key,
            load_profile(keys.profile),
        )

    return _cached(_open_views, keys, make)


# --- sender: build a batch ----------------------------------------------------------------------


def build_batch(keys: SealKeys, sent_at: dt.datetime, items: Sequence[BuildItem]) -> list[Built]:
    """Sign (and, unless reused, encrypt) one envelope per item; JSON bytes ready to send."""
    sig = signing_key(keys.signing_seed)
    rcpt = _cached(
        _encryption,
        (keys.recipient_alg, keys.recipient_raw),
        lambda: EncryptionKey(keys.recipient_alg, keys.recipient_raw),
    )
    out: list[Built] = []
    for signed_raw, seq, attempt, reuse in items:
        head, files = DocumentHead.of_own(signed_raw)  # our own document: its checks ran when signed
        env, ct = envelope_of(
            signed_raw,
            head,
            seq=seq,
            sent_at=sent_at,
            attempt=attempt,
            signing_key=sig,
            recipient_key=rcpt,
            ciphertext=reuse,
        )
        names_files = head.type in docfiles.TYPES_WITH_FILES and bool(docfiles.named_file_ids({"files": files}))
        out.append((json_bytes(env.to_dict()), ct, rcpt.kid, names_files))
    return out


# --- receiver: open a batch ---------------------------------------------------------------------


def open_batch(keys: OpenKeys, now: dt.datetime, envelopes: Sequence[object]) -> list[Incoming | Refused]:
    """Verify, decrypt, check and pre-sign the receipt of each envelope (or say why not)."""
    view = open_view(keys)
    return [open_one(view, e, now) for e in envelopes]


def envelope_digest(raw_env: object) -> bytes:
    """SHA-256 naming the envelope a refusal is about: `Envelope.digest` when it parses, else of
    the canonical JSON of whatever arrived."""
    try:
        return Envelope.from_dict(raw_env).digest
    except GatewayError:
        pass
    try:
        return hashlib.sha256(json_bytes(raw_env)).digest()
    except (TypeError, ValueError):
        return hashlib.sha256(repr(raw_env).encode("utf-8", "replace")).digest()


def received_digest(raw_env: object) -> bytes:
    """`Envelope.digest` of an envelope as it arrived, for a dict `Envelope.from_dict` accepted.

    Such a dict holds exactly `v` (the integer 1) and three canonical unpadded base64url strings
    (`unb64url` refuses any other spelling), so its canonical JSON is byte for byte the
    `Envelope.to_bytes` of what it decodes to: hashing it spares re-encoding the ciphertext."""
    return hashlib.sha256(json_bytes(raw_env)).digest()


def open_one(view: OpenView, raw_env: object, now: dt.datetime) -> Incoming | Refused:
    mid = "unknown"
    env_digest = b""
    try:
        env = Envelope.from_dict(raw_env)
        env_digest = received_digest(raw_env)
        try:
            opened = open_envelope(
                env,
                me=view.me,
                peer=view.peer,
                decryption_key=view.decryption_key,
                now=now,
                skew_seconds=view.skew_seconds,
            )
        except GatewayError:
            mid = read_header(env).id  # the refusal names the message (raises DecodeError if it cannot)
            raise
        doc, hdr = opened.document, opened.header
        mid = hdr.id
        acked: str | None = None
        ack_info: dict[str, Any] | None = None
        announced: tuple[SignedBundle, KeyBundle] | None = None
        refs: tuple[bytes, ...] = ()
        named: tuple[tuple[str, str], ...] = ()
        recorded: consent.ConsentEvent | None = None
        retain_until: dt.date | None = None  # a control document has no terms (`store.sealed`)
        hold_notice: HoldNotice | None = None
        files: tuple[docfiles.SealedFile, ...] = ()
        for extra in ("in_reply_to", "handling"):
            if getattr(doc, extra) is not None and doc.type not in BUSINESS_TYPES:
                raise SchemaError(
                    f"a {doc.type} document carries no {extra}", code="schema.unknown_field", field=f"document.{extra}"
                )
        if doc.type in BUSINESS_TYPES:
            schemas.check_happened(schemas.validate_body(doc.type, doc.body), now)
            docfiles.check_sealed(doc.body)
            files = tuple(docfiles.sealed_files_in(doc.type, doc.body))
            retain_until = check_document_terms(doc, view.profile).retain_until
            if retain_until < now.astimezone(dt.timezone.utc).date():
                raise SchemaError(
                    f"the retention date {retain_until.isoformat()} has passed: the receiver would have to dispose"
                    " of the message on arrival",
                    code="handling.retention",
                    field="document.handling.retain_until",
                )
            refs = reference.tags(view.index_key, doc.type, doc.id, doc.body)
            named = threads.named(doc.type, doc.body)
            recorded = consent.event_of(doc.type, doc.id, doc.body, now)
        elif doc.type == "key-announcement":
            kb: KeyAnnouncementBody = decode_struct(KeyAnnouncementBody, doc.body)
            signed_bundle = SignedBundle.from_bytes(unb64url(kb.bundle, field="body.bundle"))
            new_bundle = check_update(view.peer.bundle, signed_bundle, now)
            if new_bundle.tls_certificate != view.peer.bundle.tls_certificate:
                proof = unb64url(kb.tls_proof, field="body.tls_proof") if kb.tls_proof is not None else None
                check_possession(new_bundle.tls_certificate, signed_bundle.bundle_bytes, proof)
            if new_bundle is not view.peer.bundle:
                announced = (signed_bundle, new_bundle)
        elif doc.type == "ack":
            ab: AckBody = decode_struct(AckBody, doc.body)
            acked = ab.message_id
            ack_info = {
                "status": ab.status,
                "reason": ab.reason,
                "ack_id": doc.id,
                "document_sha256": ab.document_sha256,
            }
        elif doc.type == "legal-hold":
            hb: LegalHoldBody = decode_struct(LegalHoldBody, doc.body)
            hold_notice = HoldNotice(hb.message_id, hb.action, hb.reason, doc.created_at, doc.id)
        else:
            raise SchemaError(
                f"control type {doc.type!r} is not accepted here",
                code="schema.type_unknown",
                field="header.type",
            )
        digest = opened.signed_document.digest
        receipt = make_receipt(
            message_id=doc.id,
            sender=doc.sender,
            receiver=view.me,
            document_sha256=digest,
            received_at=now,
            key=view.receipt_key,
        )
        receipt_bytes = receipt.to_bytes()
        audit = AuditEntry(
            at=now,
            kind="received",
            actor=f"peer:{doc.sender}",
            message_id=doc.id,
            peer=doc.sender,
            digests={
                "document": digest.hex(),
                "envelope": env_digest.hex(),
                "receipt": hashlib.sha256(receipt_bytes).hexdigest(),
            },
            detail={
                "type": doc.type,
                "seq": hdr.seq,
                **(consent.audit_detail(recorded) if recorded else {}),
                **({"about": hold_notice.message_id, "hold": hold_notice.action} if hold_notice else {}),
            },
        )
        return Incoming(
            sender=doc.sender,
            id=doc.id,
            seq=hdr.seq,
            type=doc.type,
            created_at=doc.created_at,
            received_at=now,
            document_sha256=digest,
            signed_document=opened.signed_document.raw,
            body=opened.signed_document.document_bytes,
            receipt=receipt_bytes,
            audit=audit,
            acked_message_id=acked,
            ack_info=ack_info,
            extra_audit=_announced_entry(view.peer, doc.id, announced, now) if announced else (),
            announced=announced[0] if announced else None,
            envelope_sha256=env_digest,
            sent_at=hdr.sent_at,
            references=refs,
            in_reply_to=doc.in_reply_to,
            named=named,
            consent=recorded,
            retain_until=retain_until,
            hold_notice=hold_notice,
            files=files,
        )
    except GatewayError as e:
        return Refused(
            e.code, e.detail, e.field, e.status, mid, env_digest or envelope_digest(raw_env), type(e).__name__
        )


def check_document_terms(doc: Document, profile: Profile) -> HandlingTerms:
    """A business document's handling terms, as the receiver checks them: present, well formed,
    and within the profile for the document's type on the day it was created (the sender checked
    the same on the same day); SchemaError (`handling.*` / `schema.*`) naming the field."""
    if doc.handling is None:
        raise SchemaError(
            "a business document must carry handling terms", code="handling.missing", field="document.handling"
        )
    terms = handling.from_wire(doc.handling)
    handling.check_terms(terms, doc.type, profile, doc.created_at.date())
    return terms


def _announced_entry(
    peer: PeerKeys, message_id: str, announced: tuple[SignedBundle, KeyBundle], now: dt.datetime
) -> tuple[AuditEntry, ...]:
    signed, bundle = announced
    old = {k.kid: k for k in peer.bundle.keys}
    changed = [k.kid for k in bundle.keys if old.get(k.kid) != k]
    return (
        AuditEntry(
            at=now,
            kind="key_announced",
            actor=f"peer:{peer.identity}",
            message_id=message_id,
            peer=peer.identity,
            digests={"bundle": hashlib.sha256(signed.bundle_bytes).hexdigest()},
            detail={"serial": bundle.serial, "kids": changed},
        ),
    )


# --- sender: judge the peer's answers -----------------------------------------------------------


@dataclass(frozen=True)
class JudgeKeys:
    """What judging a batch's answers needs: who we are and the peer's bundle (public keys)."""

    me: str
    peer_bundle: bytes


#: One answer to judge: (our message id, its document's SHA-256, the SHA-256 of the envelope we
#: sent it in, the peer's result object).
JudgeItem = tuple[str, bytes, bytes, object]


@dataclass(frozen=True)
class ReceiptVerdict:
    """A receipt signed by the peer about exactly this message and document."""

    statement: bytes
    received_at: dt.datetime
    kid: str


@dataclass(frozen=True)
class RefusalVerdict:
    """A refusal signed by the peer about exactly this message and envelope."""

    statement: bytes
    code: str
    detail: str
    retryable: bool


@dataclass(frozen=True)
class BadVerdict:
    """Neither: the answer does not verify (`code` says why)."""

    code: str


Verdict = ReceiptVerdict | RefusalVerdict | BadVerdict

_peers: dict[bytes, PeerKeys] = {}


def judge_batch(keys: JudgeKeys, now: dt.datetime, items: Sequence[JudgeItem]) -> list[Verdict]:
    """Verify each answer: a receipt must be signed by the peer about exactly this message and
    document; a refusal must be signed by the peer about this message. Anything else is "bad"."""
    peer = _cached(_peers, keys.peer_bundle, lambda: PeerKeys(KeyBundle.from_bytes(keys.peer_bundle)))
    out: list[Verdict] = []
    for mid, digest, env_digest, r in items:
        try:
            if not isinstance(r, dict):
                raise GatewayError("result is not an object", code="peer.malformed_result")
            if "receipt" in r:
                st = Statement.from_dict("receipt", r["receipt"])
                rc = verify_receipt(
                    st,
                    message_id=mid,
                    sender=keys.me,
                    receiver=peer.identity,
                    document_sha256=digest,
                    key_for=peer.verify_key,
                )
                out.append(ReceiptVerdict(st.to_bytes(), rc.received_at, rc.kid))
            elif "refusal" in r:
                st = Statement.from_dict("refusal", r["refusal"])
                rf = verify_refusal(
                    st,
                    message_id=mid,
                    sender=keys.me,
                    receiver=peer.identity,
                    key_for=peer.verify_key,
                    envelope_sha256=env_digest,
                )
                out.append(RefusalVerdict(st.to_bytes(), rf.code, rf.detail, rf.retryable))
            else:
                raise GatewayError("result has neither receipt nor refusal", code="peer.malformed_result")
        except GatewayError as e:
            out.append(BadVerdict(e.code))
    return out


def _error_class(name: str) -> type[GatewayError]:
    """The GatewayError subclass (anywhere in the package: checkpoint, epoch, ratelimit…) of that name."""
    pending: list[type[GatewayError]] = [GatewayError]
    while pending:
        cls = pending.pop()
        if cls.__name__ == name:
            return cls
        pending.extend(cls.__subclasses__())
    return GatewayError


def refused_error(r: Refused) -> tuple[GatewayError, str, bytes]:
    """The error a worker raised, as the same class again (a subclass's own constructor may take
    other arguments, so the common part is set through GatewayError's)."""
    cls = _error_class(r.error_class)
    err = cls.__new__(cls)
    GatewayError.__init__(err, r.detail, code=r.code, field=r.field, status=r.status)
    return err, r.message_id, r.envelope_sha256


# --- a worker's start ---------------------------------------------------------------------------


def watch_gateway(gateway_pid: int) -> None:
    """Worker initializer: exit as soon as the gateway process ends, however it ends.

    A killed gateway runs no clean-up, and a ProcessPoolExecutor worker holds both ends of its
    own job queue, so it would otherwise wait for work forever (and keep its fork server alive)."""

    def watch() -> None:
        try:
            fd = os.pidfd_open(gateway_pid)
        except (AttributeError, OSError):  # no pidfd (old kernel) or already gone: poll
            while True:
                try:
                    os.kill(gateway_pid, 0)
                except ProcessLookupError:
                    break
                except PermissionError:
                    pass
                time.sleep(1.0)
        else:
            select.select([fd], [], [])
        os._exit(0)

    threading.Thread(target=watch, name="watch-gateway", daemon=True).start()


def warm() -> int:
    """A no-op job: makes the pool fork its workers now rather than on the first batch."""
    return 0
