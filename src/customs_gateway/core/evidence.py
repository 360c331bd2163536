"""Evidence for one message: a small file that proves, offline, what one message was and what
happened to it (DESIGN §10).

JSON Lines, one object per line, in this order: a `header` (format, message, sender, receiver,
who made the file and when); every `bundle` of both sides (signed key bundles, all versions);
a `message` part for the message and, if it was acknowledged, one for the business `ack` (each
with the signed document unless withheld, its digest, and the receipt or refusal it got); then
a `log` part for the sender's log and one for the receiver's, each carrying the entries about
the message with inclusion proofs into one checkpoint that the *other* side cosigned; last an
`end` line with the count and SHA-256 of every line before it.

`verify_evidence` checks it with public keys alone: documents, receipts and refusals under the
keys valid when they were made; every log entry included in its log's checkpoint; each
checkpoint signed by its log and cosigned by the other side's witness; every digest an entry
names equal to the part the file carries. Sans-I/O; raises only BundleError.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgspec

from .audit import AuditEntry, witness_name
from .audit_format import (
    MAX_LINE_BYTES,
    BundleError,
    BundleLine,
    EndLine,
    decode_line_once,
    read_signed_document,
    repeated_key,
)
from .bundle import SignedBundle, is_valid_identity
from .checkpoint import (
    Checkpoint,
    CosignatureVerifier,
    Ed25519NoteVerifier,
    NoteVerifier,
    cosignature_timestamp,
    note_key_id,
    open_note,
)
from .encoding import b64url, format_ts, json_object, parse_ts, unb64url
from .envelope import Document
from .epoch import epoch_of, note_origin
from .errors import GatewayError, SchemaError
from .keys import VerifyKey
from .merkle import MAX_TREE_SIZE, leaf_hash, verify_inclusion
from .receipt import Statement, verify_receipt, verify_refusal
from .trust import TrustedKeys, trusted_keys, valid_in_second

FORMAT: Final = "customs-gateway/v1 message-evidence"
#: Every code a failing evidence file reports (docs/auditor-guide.md says what each means).
FAILURE_CODES: Final = frozenset(
    {
        "audit.malformed",
        "audit.order",
        "audit.truncated",
        "audit.digest",
        "audit.bundle",
        "audit.bundle_chain",
        "audit.trust_anchor",
        "evidence.header",
        "evidence.message",
        "evidence.document",
        "evidence.receipt",
        "evidence.refusal",
        "evidence.ack",
        "evidence.log",
        "evidence.checkpoint",
        "evidence.cosignature",
        "evidence.cosignature_missing",
        "evidence.entry",
        "evidence.proof",
    }
)
MAX_ENTRIES: Final = 10_000  # entries about one message: a handful; the cap bounds a hostile file


class EvidenceHeader(msgspec.Struct, tag_field="t", tag="header", forbid_unknown_fields=True):
    format: str
    message_id: str
    sender: str
    receiver: str
    made_by: str
    made_at: str


class MessagePart(msgspec.Struct, tag_field="t", tag="message", forbid_unknown_fields=True):
    """One message (`role` message, or the business `ack` that answered it)."""

    role: Literal["message", "ack"]
    id: str
    sender: str
    receiver: str
    type: str
    created_at: str
    document_sha256: str  # hex
    signed_document: str | None  # b64url; None when withheld (e.g. disposed)
    withheld: str | None  # why the document is absent
    receipt: str | None  # b64url of the signed receipt the receiver issued
    refusal: str | None  # b64url of the signed refusal, if the receiver refused it


class ProvenEntry(msgspec.Struct, forbid_unknown_fields=True):
    index: int
    entry: str  # b64url of the exact entry bytes (the Merkle leaf)
    proof: list[str]  # b64url hashes: the RFC 9162 inclusion proof into the part's checkpoint


class LogPart(msgspec.Struct, tag_field="t", tag="log", forbid_unknown_fields=True):
    """One side's log: the entries about the message, proven into a checkpoint the other side cosigned."""

    owner: str
    size: int
    note: str  # the checkpoint note, signed by the owner and cosigned by the other side's witness
    entries: list[ProvenEntry]


Line = EvidenceHeader | BundleLine | MessagePart | LogPart | EndLine
_decode_line = msgspec.json.Decoder(Line).decode
_encode_line = msgspec.json.Encoder().encode
_decode_log_part = msgspec.json.Decoder(LogPart).decode


def encode_log_part(part: LogPart) -> bytes:
    """JSON of a log part, as the peer API serves it."""
    return _encode_line(part)


def decode_log_part(raw: bytes) -> LogPart:
    """A log part as the peer API served it (shape only: `verify_evidence` checks the rest)."""
    try:
        return decode_line_once(_decode_log_part, raw, "log_part")
    except msgspec.MsgspecError as e:
        raise GatewayError(f"peer's log part is malformed: {e}", code="evidence.log", status=502) from e
    except SchemaError as e:
        raise GatewayError(f"peer's log part holds {e.field} twice", code="evidence.log", status=502) from e


def prove_entries(owner: str, size: int, note: bytes, rows: Iterable[tuple[int, bytes, list[bytes]]]) -> LogPart:
    """A log part from (index, entry bytes, inclusion proof) rows."""
    entries = [ProvenEntry(i, b64url(data), [b64url(h) for h in proof]) for i, data, proof in rows]
    return LogPart(owner, size, note.decode("utf-8"), entries)


class EvidenceWriter:
    """Produces the lines of an evidence file in order; `end` closes it with count and SHA-256."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.lines = 0
        self.sha256 = ""

    def _emit(self, line: Line) -> bytes:
        data = _encode_line(line) + b"\n"
        self._sha.update(data)
        self.lines += 1
        return data

    def header(self, *, message_id: str, sender: str, receiver: str, made_by: str, made_at: dt.datetime) -> bytes:
        return self._emit(EvidenceHeader(FORMAT, message_id, sender, receiver, made_by, format_ts(made_at)))

    def bundle(self, owner: str, signed: SignedBundle) -> bytes:
        return self._emit(BundleLine(owner, b64url(signed.to_bytes())))

    def message(self, part: MessagePart) -> bytes:
        return self._emit(part)

    def log(self, part: LogPart) -> bytes:
        return self._emit(part)

    def end(self) -> bytes:
        self.sha256 = self._sha.hexdigest()
        return _encode_line(EndLine(self.lines, self.sha256)) + b"\n"


def message_part(
    *,
    role: Literal["message", "ack"],
    signed_document: bytes,
    receipt: bytes | None,
    refusal: bytes | None,
) -> MessagePart:
    """The part for one message from the signed document the store holds (raises DecodeError)."""
    doc = Document.from_bytes(read_signed_document(signed_document).document_bytes)
    return MessagePart(
        role=role,
        id=doc.id,
        sender=doc.sender,
        receiver=doc.recipient,
        type=doc.type,
        created_at=format_ts(doc.created_at),
        document_sha256=hashlib.sha256(signed_document).hexdigest(),
        signed_document=b64url(signed_document),
        withheld=None,
        receipt=None if receipt is None else b64url(receipt),
        refusal=None if refusal is None else b64url(refusal),
    )


def withheld_part(
    *,
    role: Literal["message", "ack"],
    message_id: str,
    sender: str,
    receiver: str,
    type: str,
    created_at: dt.datetime,
    document_sha256: bytes,
    withheld: str,
    receipt: bytes | None,
    refusal: bytes | None,
) -> MessagePart:
    """The part for a message whose document is gone (`withheld`: why, e.g. "disposed"), from the
    header fields and digest the store keeps; the log entries vouch for the digest. Raises
    ValueError for a digest that is not 32 bytes or an empty reason."""
    if len(document_sha256) != 32 or not withheld:
        raise ValueError("a withheld part needs the document's SHA-256 and a reason")
    return MessagePart(
        role=role,
        id=message_id,
        sender=sender,
        receiver=receiver,
        type=type,
        created_at=format_ts(created_at),
        document_sha256=document_sha256.hex(),
        signed_document=None,
        withheld=withheld,
        receipt=None if receipt is None else b64url(receipt),
        refusal=None if refusal is None else b64url(refusal),
    )


# --- the report -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedEntry:
    owner: str
    index: int
    kind: str
    at: str
    message_id: str
    code: str | None


@dataclass(frozen=True)
class LogProof:
    owner: str
    size: int
    root: bytes
    cosigned_by: str | None
    cosigned_at: str | None


@dataclass(frozen=True)
class EvidenceReport:
    """What a verified evidence file proves about one message."""

    message_id: str
    sender: str
    receiver: str
    type: str
    created_at: str
    document_sha256: str
    document: str  # "included" or the reason it is withheld
    received_at: str | None  # from the receiver's signed receipt
    refusal_code: str | None
    ack_status: str | None
    ack_id: str | None
    logs: tuple[LogProof, ...]
    entries: tuple[LoggedEntry, ...]
    anchors: tuple[tuple[str, int, str], ...]  # (identity, serial, fingerprint) the trust started from
    trusted_by_anchor_file: bool
    uncosigned_allowed: bool
    made_by: str
    made_at: str
    lines: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "message-evidence",
            "message_id": self.message_id,
            "from": self.sender,
            "to": self.receiver,
            "type": self.type,
            "created_at": self.created_at,
            "document_sha256": self.document_sha256,
            "document": self.document,
            "received_at": self.received_at,
            "refusal_code": self.refusal_code,
            "ack_status": self.ack_status,
            "ack_id": self.ack_id,
            "logs": [
                {
                    "owner": lp.owner,
                    "checkpoint_size": lp.size,
                    "root": base64.b64encode(lp.root).decode("ascii"),
                    "cosigned_by": lp.cosigned_by,
                    "cosigned_at": lp.cosigned_at,
                }
                for lp in self.logs
            ],
            "entries": [
                {
                    "log": e.owner,
                    "index": e.index,
                    "kind": e.kind,
                    "at": e.at,
                    "message_id": e.message_id,
                    "code": e.code,
                }
                for e in self.entries
            ],
            "anchors": [{"identity": i, "serial": s, "fingerprint": f} for i, s, f in self.anchors],
            "trusted_by_anchor_file": self.trusted_by_anchor_file,
            "uncosigned_allowed": self.uncosigned_allowed,
            "made_by": self.made_by,
            "made_at": self.made_at,
            "lines": self.lines,
            "sha256": self.sha256,
        }


# --- the verifier ---------------------------------------------------------------------------


@dataclass
class _Proven:
    """A message part after its checks: digests of the parts it carries."""

    part: MessagePart
    line: int
    document: bytes
    receipt: bytes | None = None
    refusal: bytes | None = None
    received_at: str | None = None
    refusal_code: str | None = None
    body: dict[str, Any] = field(default_factory=dict)
    vouched: bool = False  # a proven log entry names its document digest (a withheld part needs one)


class _Verifier:
    def __init__(self, trust: Mapping[str, str] | None, allow_uncosigned: bool) -> None:
        self.trust = trust
        self.allow_uncosigned = allow_uncosigned
        self.line = 0
        self.sha = hashlib.sha256()
        self.header: EvidenceHeader | None = None
        self.bundles: dict[str, list[tuple[int, SignedBundle]]] = {}
        self.keys: dict[str, TrustedKeys] = {}
        self.parts: list[_Proven] = []
        self.logs: list[LogProof] = []
        self.entries: list[LoggedEntry] = []
        self.end: EndLine | None = None

    def fail(self, code: str, detail: str, line: int | None = None) -> BundleError:
        return BundleError(detail, code=code, line=self.line if line is None else line)

    def head(self) -> EvidenceHeader:
        assert self.header is not None
        return self.header

    def feed(self, raw: bytes) -> None:
        self.line += 1
        if self.end is not None:
            raise self.fail("audit.order", "data after the end line")
        if len(raw) > MAX_LINE_BYTES:
            raise self.fail("audit.malformed", f"line is longer than {MAX_LINE_BYTES} bytes")
        if not raw.endswith(b"\n"):
            raise self.fail("audit.truncated", "the last line is cut off (no newline): the file is incomplete")
        if b"\r" in raw:
            raise self.fail("audit.malformed", "a carriage return: lines end with a single LF")
        try:
            line = decode_line_once(_decode_line, raw)
        except msgspec.MsgspecError as e:
            raise self.fail("audit.malformed", f"not an evidence line: {e}") from e
        except SchemaError as e:
            raise self.fail("audit.malformed", repeated_key(e)) from e
        if isinstance(line, EndLine):
            self.on_end(line, raw)
            return
        self.sha.update(raw)
        if self.header is None:
            if not isinstance(line, EvidenceHeader):
                raise self.fail("audit.order", "the first line must be the header")
            self.on_header(line)
        elif isinstance(line, EvidenceHeader):
            raise self.fail("audit.order", "a second header")
        elif isinstance(line, BundleLine):
            if self.keys:
                raise self.fail("audit.order", "key bundles must come before the first message part")
            self.on_bundle(line)
        elif isinstance(line, MessagePart):
            if self.logs:
                raise self.fail("audit.order", "message parts must come before the log parts")
            self.seal_keys()
            self.on_message(line)
        else:
            self.on_log(line)

    # --- header and keys ---
    def on_header(self, h: EvidenceHeader) -> None:
        if h.format != FORMAT:
            raise self.fail("evidence.header", f"not a {FORMAT} file (format {h.format!r})")
        if not (is_valid_identity(h.sender) and is_valid_identity(h.receiver)) or h.sender == h.receiver:
            raise self.fail("evidence.header", "sender and receiver must be two different identities")
        if h.made_by not in (h.sender, h.receiver):
            raise self.fail("evidence.header", f"made_by {h.made_by!r} is neither the sender nor the receiver")
        if not 0 < len(h.message_id) <= 64:
            raise self.fail("evidence.header", "message_id must be 1 to 64 characters")
        try:
            parse_ts(h.made_at, field="made_at")
        except GatewayError as e:
            raise self.fail("evidence.header", e.detail) from e
        self.header = h
        self.bundles = {h.sender: [], h.receiver: []}

    def on_bundle(self, ln: BundleLine) -> None:
        versions = self.bundles.get(ln.owner)
        if versions is None:
            raise self.fail("audit.bundle", f"bundle owner {ln.owner!r} is neither the sender nor the receiver")
        try:
            signed = SignedBundle.from_bytes(unb64url(ln.signed_bundle, field="signed_bundle"))
        except GatewayError as e:
            raise self.fail("audit.bundle", f"key bundle of {ln.owner} is unreadable: {e.detail}") from e
        versions.append((self.line, signed))

    def seal_keys(self) -> None:
        if self.keys:
            return
        if self.header is None:
            raise self.fail("audit.order", "the first line must be the header")
        for owner, versions in self.bundles.items():
            anchor = None if self.trust is None else self.trust.get(owner)
            if self.trust is not None and anchor is None:
                raise self.fail("audit.trust_anchor", f"the trust file names no fingerprint for {owner}")
            self.keys[owner] = trusted_keys(owner, versions, anchor)

    # --- message parts ---
    def on_message(self, p: MessagePart) -> None:
        h = self.head()
        if not self.parts:
            if p.role != "message" or p.id != h.message_id:
                raise self.fail("evidence.message", f"the first part must be message {h.message_id}")
            if (p.sender, p.receiver) != (h.sender, h.receiver):
                raise self.fail("evidence.message", "the message part names another sender or receiver")
        elif len(self.parts) == 1 and p.role == "ack":
            if (p.sender, p.receiver, p.type) != (h.receiver, h.sender, "ack"):
                raise self.fail("evidence.ack", "the ack part must be an ack from the receiver to the sender")
        else:
            raise self.fail("audit.order", "at most one message part and one ack part")
        try:
            digest = bytes.fromhex(p.document_sha256)
            parse_ts(p.created_at, field="created_at")
        except (ValueError, GatewayError) as e:
            raise self.fail("evidence.message", f"malformed digest or time: {e}") from e
        if len(digest) != 32 or p.document_sha256 != digest.hex():
            raise self.fail("evidence.message", "document_sha256 must be 64 lowercase hex digits")
        proven = _Proven(p, self.line, digest)
        code = "evidence.document" if p.role == "message" else "evidence.ack"
        if p.signed_document is None:
            if not p.withheld:
                raise self.fail(code, "a part without its document must say why it is withheld")
        else:
            if p.withheld is not None:
                raise self.fail(code, "a part carries its document and says it is withheld")
            self.check_document(p, proven, code)
        if p.receipt is not None:
            self.check_receipt(p, proven)
        if p.refusal is not None:
            self.check_refusal(p, proven)
        if p.role == "ack":
            self.check_ack(proven)
        self.parts.append(proven)

    def check_document(self, p: MessagePart, proven: _Proven, code: str) -> None:
        assert p.signed_document is not None
        try:
            raw = unb64url(p.signed_document, field="signed_document")
            if not hmac.compare_digest(hashlib.sha256(raw).digest(), proven.document):
                raise self.fail(code, f"the document of {p.id} does not have the digest the part names")
            signed = read_signed_document(raw)
            doc = Document.from_bytes(signed.document_bytes)
            if (doc.id, doc.sender, doc.recipient, doc.type, format_ts(doc.created_at)) != (
                p.id,
                p.sender,
                p.receiver,
                p.type,
                p.created_at,
            ):
                raise self.fail(code, f"the signed document is not {p.type} {p.id} from {p.sender} to {p.receiver}")
            self.keys[p.sender].verify_key(signed.kid, doc.created_at).verify(
                "document", signed.document_bytes, signed.signature
            )
        except BundleError:
            raise
        except GatewayError as e:
            raise self.fail(code, f"document of {p.id}: {e.detail}") from e
        proven.body = doc.body

    def _key_for(self, owner: str) -> Any:
        keys = self.keys[owner]

        def key_for(kid: str, at: dt.datetime) -> VerifyKey:
            return keys.verify_key(kid, at)

        return key_for

    def check_receipt(self, p: MessagePart, proven: _Proven) -> None:
        assert p.receipt is not None
        try:
            raw = unb64url(p.receipt, field="receipt")
            st = Statement.from_dict("receipt", json_object(raw, field="receipt"))
            r = verify_receipt(
                st,
                message_id=p.id,
                sender=p.sender,
                receiver=p.receiver,
                document_sha256=proven.document,
                key_for=self._key_for(p.receiver),
            )
        except GatewayError as e:
            raise self.fail("evidence.receipt", f"receipt of {p.id}: {e.detail}") from e
        proven.receipt = hashlib.sha256(raw).digest()
        proven.received_at = format_ts(r.received_at)

    def check_refusal(self, p: MessagePart, proven: _Proven) -> None:
        assert p.refusal is not None
        try:
            raw = unb64url(p.refusal, field="refusal")
            st = Statement.from_dict("refusal", json_object(raw, field="refusal"))
            r = verify_refusal(
                st, message_id=p.id, sender=p.sender, receiver=p.receiver, key_for=self._key_for(p.receiver)
            )
        except GatewayError as e:
            raise self.fail("evidence.refusal", f"refusal of {p.id}: {e.detail}") from e
        proven.refusal = hashlib.sha256(raw).digest()
        proven.refusal_code = r.code

    def check_ack(self, ack: _Proven) -> None:
        message = self.parts[0]
        if ack.part.signed_document is None:
            return  # withheld: its digest must then be named by the entries (checked at the end)
        body = ack.body
        if body.get("message_id") != message.part.id or body.get("document_sha256") != message.part.document_sha256:
            raise self.fail(
                "evidence.ack", f"ack {ack.part.id} does not acknowledge document {message.part.document_sha256}"
            )

    # --- log parts ---
    def on_log(self, lp: LogPart) -> None:
        h = self.head()
        if not self.parts:
            raise self.fail("audit.order", "the message part must come before the log parts")
        expected = (h.sender, h.receiver)[len(self.logs)] if len(self.logs) < 2 else None
        if lp.owner != expected:
            raise self.fail("audit.order", "one log part for the sender, then one for the receiver")
        other = h.receiver if lp.owner == h.sender else h.sender
        if not 1 <= lp.size <= MAX_TREE_SIZE or len(lp.entries) > MAX_ENTRIES:
            raise self.fail("evidence.log", "log size or entry count out of range")
        root, cosigned_at = self.check_note(lp, other)
        self.logs.append(LogProof(lp.owner, lp.size, root, witness_name(other) if cosigned_at else None, cosigned_at))
        last = -1
        for pe in lp.entries:
            if not last < pe.index < lp.size:
                raise self.fail("evidence.entry", f"entry {pe.index} is out of order or beyond size {lp.size}")
            last = pe.index
            try:
                data = unb64url(pe.entry, field="entry")
                proof = [unb64url(x, field="proof") for x in pe.proof]
                verify_inclusion(leaf_hash(data), pe.index, lp.size, proof, root)
            except GatewayError as e:
                raise self.fail("evidence.proof", f"entry {pe.index} of {lp.owner}'s log: {e.detail}") from e
            try:
                entry = AuditEntry.from_bytes(data)
            except GatewayError as e:
                raise self.fail("evidence.entry", f"entry {pe.index} is not an audit entry: {e.detail}") from e
            self.check_entry(lp.owner, other, pe.index, entry)

    def check_note(self, lp: LogPart, other: str) -> tuple[bytes, str | None]:
        note = lp.note.encode("utf-8")
        # The note names its origin: the log's first one, or a later epoch of it (core.epoch).
        origin, witness = note_origin(note), witness_name(other)
        if epoch_of(origin, lp.owner) is None:
            raise self.fail("evidence.checkpoint", f"checkpoint origin {origin!r} is not one of {lp.owner}'s log")
        owner_keys, other_keys = self.keys[lp.owner], self.keys[other]
        signing = {note_key_id(origin, r.public): r for r in owner_keys.records("signing")}
        witnesses = {note_key_id(witness, r.public, 0x04): r for r in other_keys.records("witness")}
        verifiers: list[NoteVerifier] = [Ed25519NoteVerifier(origin, r.public) for r in signing.values()]
        verifiers += [CosignatureVerifier(witness, r.public) for r in witnesses.values()]
        try:
            verified = open_note(note, verifiers)
            cp = Checkpoint.parse(verified.body)
        except GatewayError as e:
            raise self.fail("evidence.checkpoint", f"{lp.owner}'s checkpoint: {e.detail}") from e
        if cp.origin != origin or cp.size != lp.size:
            raise self.fail(
                "evidence.checkpoint", f"checkpoint is for {cp.origin} at {cp.size}, not {origin} at {lp.size}"
            )
        logged = [s for s in verified.signatures if s.name == origin]
        cosigs = [s for s in verified.signatures if s.name == witness]
        if not logged:
            raise self.fail("evidence.checkpoint", f"{lp.owner}'s checkpoint is not signed by {origin}")
        cosigned_at: dt.datetime | None = None
        for s in cosigs:
            at = dt.datetime.fromtimestamp(cosignature_timestamp(s), dt.timezone.utc)
            problem = valid_in_second(witnesses[s.key_id], at)
            if problem is not None:
                raise self.fail("evidence.cosignature", f"{lp.owner}'s checkpoint cosigned by a key that is {problem}")
            cosigned_at = at if cosigned_at is None else max(cosigned_at, at)
        if cosigned_at is None and not self.allow_uncosigned:
            raise self.fail("evidence.cosignature_missing", f"{lp.owner}'s checkpoint is not cosigned by {witness}")
        # The log's own key must be good when its checkpoint was witnessed (or, uncosigned, now:
        # never revoked and not expired for lack of a better time).
        for s in logged:
            rec = signing[s.key_id]
            problem = valid_in_second(rec, cosigned_at) if cosigned_at is not None else _never_revoked(rec.revoked_at)
            if problem is not None:
                raise self.fail("evidence.checkpoint", f"{lp.owner}'s checkpoint is signed by a key that is {problem}")
        return cp.root, None if cosigned_at is None else format_ts(cosigned_at)

    def check_entry(self, owner: str, other: str, index: int, e: AuditEntry) -> None:
        message = self.parts[0]
        ack = self.parts[1] if len(self.parts) > 1 else None
        where = f"entry {index} of {owner}'s log"
        if e.message_id == message.part.id:
            named = message
        elif ack is not None and e.message_id == ack.part.id:
            named = ack
        else:
            raise self.fail("evidence.entry", f"{where} is not about message {message.part.id} or its ack")
        if e.peer is not None and e.peer != other:
            raise self.fail("evidence.entry", f"{where} names peer {e.peer!r}, not {other!r}")
        if "type" in e.detail and e.detail["type"] != named.part.type:
            raise self.fail(
                "evidence.entry", f"{where} says {named.part.id} is a {e.detail['type']!r}, not {named.part.type!r}"
            )
        own_clock = e.detail.get("clock_at", format_ts(e.at))  # restamped if the clock ran back
        if e.kind == "submitted" and own_clock != named.part.created_at:
            raise self.fail("evidence.entry", f"{where} says {named.part.id} was created at {own_clock}")
        checks = (("document", named.document), ("receipt", named.receipt), ("refusal", named.refusal))
        for name, held in checks:
            if name not in e.digests:
                continue
            if held is None:
                raise self.fail("evidence.entry", f"{where} names a {name} of {named.part.id} the file does not carry")
            if e.digests[name] != held.hex():
                raise self.fail("evidence.entry", f"{where} names another {name} of {named.part.id}")
            named.vouched = named.vouched or name == "document"
        if "ack_document" in e.digests:
            if ack is None or e.detail.get("ack_id") != ack.part.id:
                raise self.fail("evidence.entry", f"{where} names an ack the file does not carry")
            if e.digests["ack_document"] != ack.document.hex():
                raise self.fail("evidence.entry", f"{where} names another ack document")
            ack.vouched = True
        self.entries.append(LoggedEntry(owner, index, e.kind, format_ts(e.at), str(e.message_id), e.code))

    # --- the end ---
    def on_end(self, ln: EndLine, raw: bytes) -> None:
        if self.header is None:
            raise self.fail("audit.order", "the first line must be the header")
        if raw != _encode_line(ln) + b"\n":
            raise self.fail("audit.digest", "the end line is not in its one exact form")
        if ln.lines != self.line - 1 or ln.sha256 != self.sha.hexdigest():
            raise self.fail("audit.digest", "the end line's count or SHA-256 does not match the lines before it")
        self.end = ln

    def finish(self) -> EvidenceReport:
        if self.header is None or self.end is None:
            raise self.fail("audit.truncated", "the file ends before its end line: it is incomplete")
        if len(self.logs) != 2:
            raise self.fail("evidence.log", "the file must carry the sender's and the receiver's log parts")
        h = self.head()
        message = self.parts[0]
        ack = self.parts[1] if len(self.parts) > 1 else None
        for p in self.parts:
            if p.part.signed_document is None and not p.vouched:  # withheld: only the logs vouch for it
                raise self.fail(
                    "evidence.document", f"{p.part.id} is withheld and no log entry names its digest", p.line
                )
        ack_status = None if ack is None else ack.body.get("status")
        return EvidenceReport(
            message_id=h.message_id,
            sender=h.sender,
            receiver=h.receiver,
            type=message.part.type,
            created_at=message.part.created_at,
            document_sha256=message.part.document_sha256,
            document="included" if message.part.signed_document is not None else f"withheld: {message.part.withheld}",
            received_at=message.received_at,
            refusal_code=message.refusal_code,
            ack_status=ack_status if isinstance(ack_status, str) else None,
            ack_id=None if ack is None else ack.part.id,
            logs=tuple(self.logs),
            entries=tuple(self.entries),
            anchors=tuple((o, k.anchor_serial, k.anchor_fingerprint) for o, k in self.keys.items()),
            trusted_by_anchor_file=self.trust is not None,
            uncosigned_allowed=self.allow_uncosigned,
            made_by=h.made_by,
            made_at=h.made_at,
            lines=self.line,
            sha256=self.end.sha256,
        )


def _never_revoked(revoked_at: dt.datetime | None) -> str | None:
    return None if revoked_at is None else "revoked"


def verify_evidence(
    lines: Iterable[bytes], *, trust: Mapping[str, str] | None = None, allow_uncosigned: bool = False
) -> EvidenceReport:
    """Verify an evidence file given its lines (each with its newline). `trust` maps identity ->
    the fingerprint of its bundle exchanged out of band; without it the lowest serial bundle of
    each side is the anchor (the report names it, to compare by phone). Raises BundleError."""
    v = _Verifier(trust, allow_uncosigned)
    try:
        for raw in lines:
            v.feed(raw)
        return v.finish()
    except BundleError:
        raise
    except GatewayError as e:
        raise v.fail("audit.malformed", e.detail) from e
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, UnicodeError, RecursionError) as e:
        raise v.fail("audit.malformed", f"unreadable line: {type(e).__name__}: {e}") from e
