"""The envelope (DESIGN §4): sign the document, HPKE-seal it, sign the header; and the reverse.

Build: document bytes → signed document (Ed25519 over `.../document\\n` ‖ bytes) → HPKE seal to the
recipient with info `customs-gateway/v1 FROM TO ID` → envelope signature over `.../envelope\\n` ‖
header bytes ‖ SHA-256(ciphertext). Open checks in the order that never decrypts or parses more
than an authenticated party sent: outer signature, recipient, skew, decrypt, inner signature,
binding (G1, G3). Every failure is a specific GatewayError subclass with a stable code.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

import msgspec

from .bundle import PeerKeys
from .encoding import b64url, format_ts, is_version, json_bytes, json_object, parse_ts, unb64url
from .errors import BindingError, DecodeError, SuiteError
from .keys import SUITES, DecryptionKey, EncryptionKey, SigningKey
from .refdata import is_uuid
from .replay import check_skew
from .schemas import refuse_duplicate_keys_in

MEDIA_TYPE: Final = "application/vnd.customs-gateway.envelope+json"
#: The business message types (back-ends submit and read them), as a type and as a tuple.
BusinessType = Literal[
    "seizure-share",
    "port-visit-invitation",
    "port-visit-reply",
    "seminar-notice",
    "joint-operation",
    "information-request",
    "consent-request",
    "consent-decision",
    "training-material",
]
BUSINESS_TYPES: Final[tuple[str, ...]] = get_args(BusinessType)
CONTROL_TYPES: Final = ("ack", "key-announcement", "cosign-request", "legal-hold")
ALL_TYPES: Final = BUSINESS_TYPES + CONTROL_TYPES
MAX_ENVELOPE_BYTES: Final = 8 * 1024 * 1024
_MAX_NAME: Final = 64


def hpke_info(sender: str, recipient: str, message_id: str) -> bytes:
    return f"customs-gateway/v1 {sender} {recipient} {message_id}".encode()


def _str(d: dict[str, Any], name: str, where: str, max_len: int = 256) -> str:
    v = d.get(name)
    if not isinstance(v, str) or not v or len(v) > max_len:
        raise DecodeError(f"{where}.{name} must be a non-empty string", field=f"{where}.{name}")
    return v


def _int(d: dict[str, Any], name: str, where: str) -> int:
    v = d.get(name)
    if not isinstance(v, int) or isinstance(v, bool) or not (0 <= v < 2**63):
        raise DecodeError(f"{where}.{name} must be a non-negative integer", field=f"{where}.{name}")
    return v


@dataclass(frozen=True)
class Header:
    """The outer, signed, cleartext header."""

    id: str
    seq: int
    sender: str
    recipient: str
    type: str
    created_at: dt.datetime
    sent_at: dt.datetime
    attempt: int
    suite: str
    sig_kid: str
    enc_kid: str

    def to_bytes(self) -> bytes:
        return json_bytes(
            {
                "id": self.id,
                "seq": self.seq,
                "from": self.sender,
                "to": self.recipient,
                "type": self.type,
                "created_at": format_ts(self.created_at),
                "sent_at": format_ts(self.sent_at),
                "attempt": self.attempt,
                "suite": self.suite,
                "sig_kid": self.sig_kid,
                "enc_kid": self.enc_kid,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Header:
        d = json_object(data, field="header")
        known = {
            "id",
            "seq",
            "from",
            "to",
            "type",
            "created_at",
            "sent_at",
            "attempt",
            "suite",
            "sig_kid",
            "enc_kid",
        }
        extra = set(d) - known
        if extra:
            raise DecodeError(f"header has unknown fields: {', '.join(sorted(extra))}", field="header")
        msg_type = _str(d, "type", "header")
        if msg_type not in ALL_TYPES:
            raise DecodeError(f"header.type {msg_type!r} is not a known message type", field="header.type")
        return cls(
            id=_str(d, "id", "header", 64),
            seq=_int(d, "seq", "header"),
            sender=_str(d, "from", "header", _MAX_NAME),
            recipient=_str(d, "to", "header", _MAX_NAME),
            type=msg_type,
            created_at=parse_ts(d.get("created_at"), field="header.created_at"),
            sent_at=parse_ts(d.get("sent_at"), field="header.sent_at"),
            attempt=_int(d, "attempt", "header"),
            suite=_str(d, "suite", "header"),
            sig_kid=_str(d, "sig_kid", "header", 64),
            enc_kid=_str(d, "enc_kid", "header", 64),
        )


@dataclass(frozen=True)
class Document:
    """The inner document: who, to whom, which message, what type, when, and the body; a
    business document may name the message it answers (`in_reply_to`, DESIGN §12: threads) and
    carries its handling terms (`handling`, DESIGN §12; checked by `core.handling`), signed with it."""

    id: str
    sender: str
    recipient: str
    type: str
    created_at: dt.datetime
    body: dict[str, Any]
    in_reply_to: str | None = None
    handling: dict[str, Any] | None = None

    def to_bytes(self) -> bytes:
        d: dict[str, Any] = {
            "id": self.id,
            "from": self.sender,
            "to": self.recipient,
            "type": self.type,
            "created_at": format_ts(self.created_at),
            "body": self.body,
        }
        if self.in_reply_to is not None:  # absent, not null, when it answers nothing
            d["in_reply_to"] = self.in_reply_to
        if self.handling is not None:  # absent on control documents
            d["handling"] = self.handling
        return json_bytes(d)

    @classmethod
    def from_bytes(cls, data: bytes) -> Document:
        d = json_object(data, field="document")
        refuse_duplicate_keys_in(data, json_bytes(d), "document")  # signed: one reading only
        body = d.get("body")
        if not isinstance(body, dict):
            raise DecodeError("document.body must be an object", field="document.body")
        return cls(
            id=_str(d, "id", "document", 64),
            sender=_str(d, "from", "document", _MAX_NAME),
            recipient=_str(d, "to", "document", _MAX_NAME),
            type=_str(d, "type", "document"),
            created_at=parse_ts(d.get("created_at"), field="document.created_at"),
            body=body,
            in_reply_to=_reply_to(d),
            handling=_handling(d),
        )


def _handling(d: dict[str, Any]) -> dict[str, Any] | None:
    if "handling" not in d:
        return None
    v = d["handling"]
    if not isinstance(v, dict):
        raise DecodeError("document.handling must be an object", field="document.handling")
    return v


def _reply_to(d: dict[str, Any]) -> str | None:
    if "in_reply_to" not in d:
        return None
    v = d["in_reply_to"]
    if not isinstance(v, str) or not is_uuid(v):
        raise DecodeError("document.in_reply_to must be a message id (a lower-case UUID)", field="document.in_reply_to")
    return v


@dataclass(frozen=True)
class SignedDocument:
    """Exact document bytes, the signing key id and the signature; `raw` is the HPKE plaintext."""

    document_bytes: bytes
    kid: str
    signature: bytes
    raw: bytes

    @property
    def digest(self) -> bytes:
        """SHA-256 of the signed document (what receipts bind, G6)."""
        return hashlib.sha256(self.raw).digest()

    @classmethod
    def create(cls, doc: Document, key: SigningKey) -> SignedDocument:
        data = doc.to_bytes()
        sig = key.sign("document", data)
        raw = json_bytes({"document": b64url(data), "kid": key.kid, "signature": b64url(sig)})
        return cls(data, key.kid, sig, raw)

    @classmethod
    def from_bytes(cls, raw: bytes) -> SignedDocument:
        d = json_object(raw, field="signed document")
        refuse_duplicate_keys_in(raw, json_bytes(d), "signed_document")  # signed: one reading only
        data = unb64url(_str(d, "document", "signed_document", MAX_ENVELOPE_BYTES), field="signed_document.document")
        sig = unb64url(_str(d, "signature", "signed_document"), field="signed_document.signature")
        return cls(data, _str(d, "kid", "signed_document", 64), sig, raw)


@dataclass(frozen=True)
class Envelope:
    """The wire envelope: header bytes, ciphertext, signature (all exact bytes)."""

    header_bytes: bytes
    ciphertext: bytes
    signature: bytes

    def signed_bytes(self) -> bytes:
        return self.header_bytes + hashlib.sha256(self.ciphertext).digest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": 1,
            "header": b64url(self.header_bytes),
            "ciphertext": b64url(self.ciphertext),
            "signature": b64url(self.signature),
        }

    def to_bytes(self) -> bytes:
        return json_bytes(self.to_dict())

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.to_bytes()).digest()

    @classmethod
    def from_dict(cls, d: object) -> Envelope:
        if not isinstance(d, dict):
            raise DecodeError("envelope must be a JSON object", field="envelope")
        if not is_version(d.get("v")):
            raise DecodeError("envelope.v must be the integer 1", field="envelope.v", code="decode.version")
        extra = set(d) - {"v", "header", "ciphertext", "signature"}
        if extra:
            raise DecodeError(f"envelope has unknown fields: {', '.join(sorted(extra))}", field="envelope")
        return cls(
            unb64url(_str(d, "header", "envelope", 8192), field="envelope.header"),
            unb64url(_str(d, "ciphertext", "envelope", MAX_ENVELOPE_BYTES * 2), field="envelope.ciphertext"),
            unb64url(_str(d, "signature", "envelope", 128), field="envelope.signature"),
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        return cls.from_dict(json_object(data, field="envelope"))


def seal_document(signed: SignedDocument, header_id: str, sender: str, recipient: str, key: EncryptionKey) -> bytes:
    """HPKE-encrypt a signed document to the recipient, bound to (from, to, id) through info."""
    return key.seal(signed.raw, hpke_info(sender, recipient, header_id))


def sign_envelope(header: Header, ciphertext: bytes, key: SigningKey) -> Envelope:
    """Sign header bytes ‖ SHA-256(ciphertext) under the envelope domain."""
    if header.sig_kid != key.kid:
        raise ValueError("header.sig_kid must name the signing key")
    hb = header.to_bytes()
    sig = key.sign("envelope", hb + hashlib.sha256(ciphertext).digest())
    return Envelope(hb, ciphertext, sig)


def build_envelope(
    doc: Document,
    *,
    seq: int,
    sent_at: dt.datetime,
    attempt: int,
    signing_key: SigningKey,
    recipient_key: EncryptionKey,
    signed: SignedDocument | None = None,
    ciphertext: bytes | None = None,
) -> tuple[Envelope, SignedDocument, bytes]:
    """Build a complete envelope; pass `signed`/`ciphertext` from an earlier attempt to reuse them.

    Returns (envelope, signed document, ciphertext).
    """
    signed = signed or SignedDocument.create(doc, signing_key)
    env, ciphertext = envelope_of(
        signed.raw,
        DocumentHead(doc.id, doc.sender, doc.recipient, doc.type, doc.created_at),
        seq=seq,
        sent_at=sent_at,
        attempt=attempt,
        signing_key=signing_key,
        recipient_key=recipient_key,
        ciphertext=ciphertext,
    )
    return env, signed, ciphertext


@dataclass(frozen=True)
class DocumentHead:
    """The fields of a document its envelope's header repeats."""

    id: str
    sender: str
    recipient: str
    type: str
    created_at: dt.datetime

    @classmethod
    def of_own(cls, signed_raw: bytes) -> tuple[DocumentHead, object]:
        """The head of a signed document this gateway made (exact bytes from its own store) and
        its body's `files` value (None if absent), for building its envelope. Typed decoders
        skip the rest of the body, and the checks of `SignedDocument.from_bytes` and
        `Document.from_bytes` are not repeated: they ran when it was signed (in a worker the
        build costs 26 us less a message). Never use it on a peer's document."""
        document = unb64url(_OWN_SIGNED.decode(signed_raw).document, field="signed_document.document")
        d = _OWN_HEAD.decode(document)
        return cls(
            d.id, d.sender, d.recipient, d.type, parse_ts(d.created_at, field="document.created_at")
        ), d.body.files


class _OwnSigned(msgspec.Struct):
    document: str


class _OwnBody(msgspec.Struct):
    files: Any = None


class _OwnHead(msgspec.Struct, rename={"sender": "from", "recipient": "to"}):
    id: str
    sender: str
    recipient: str
    type: str
    created_at: str
    body: _OwnBody


_OWN_SIGNED = msgspec.json.Decoder(_OwnSigned)
_OWN_HEAD = msgspec.json.Decoder(_OwnHead)


def envelope_of(
    signed_raw: bytes,
    head: DocumentHead,
    *,
    seq: int,
    sent_at: dt.datetime,
    attempt: int,
    signing_key: SigningKey,
    recipient_key: EncryptionKey,
    ciphertext: bytes | None = None,
) -> tuple[Envelope, bytes]:
    """The envelope of a signed document (`signed_raw`, the HPKE plaintext) whose header fields
    are `head`: sealed (unless `ciphertext` from an earlier attempt is reused) and signed.
    Returns (envelope, ciphertext)."""
    if ciphertext is None:
        ciphertext = recipient_key.seal(signed_raw, hpke_info(head.sender, head.recipient, head.id))
    header = Header(
        id=head.id,
        seq=seq,
        sender=head.sender,
        recipient=head.recipient,
        type=head.type,
        created_at=head.created_at,
        sent_at=sent_at,
        attempt=attempt,
        suite=recipient_key.suite_name,
        sig_kid=signing_key.kid,
        enc_kid=recipient_key.kid,
    )
    return sign_envelope(header, ciphertext, signing_key), ciphertext


@dataclass(frozen=True)
class OpenedEnvelope:
    """A verified, decrypted envelope with the exact bytes an audit or receipt needs."""

    envelope: Envelope
    header: Header
    signed_document: SignedDocument
    document: Document


def read_header(env: Envelope) -> Header:
    """Parse the header without verifying anything (to find sender and key before verifying)."""
    return Header.from_bytes(env.header_bytes)


def open_envelope(
    env: Envelope,
    *,
    me: str,
    peer: PeerKeys,
    decryption_key: Callable[[str], DecryptionKey],
    now: dt.datetime,
    skew_seconds: float,
) -> OpenedEnvelope:
    """Verify and decrypt an envelope addressed to `me` from `peer` (G1, G3, G4 skew).

    Raises DecodeError, SignatureError, KeyStateError, BindingError, ReplayError (skew),
    SuiteError, DecryptError or SchemaError (a key twice in signed JSON); never anything else
    for any input.
    """
    header = read_header(env)
    if header.sender != peer.identity:
        raise BindingError(
            f"envelope claims sender {header.sender!r}, peer is {peer.identity!r}",
            code="binding.sender",
            field="header.from",
        )
    vk = peer.verify_key(header.sig_kid, header.sent_at)
    vk.verify("envelope", env.signed_bytes(), env.signature)
    # Signed JSON must read one way (I-JSON): the parsers of the signed document and the document
    # refuse a key twice; the header is held to it here, not in `read_header`, which also names
    # the message a refusal is about.
    refuse_duplicate_keys_in(env.header_bytes, header.to_bytes(), "header")
    if header.recipient != me:
        raise BindingError(
            f"envelope is addressed to {header.recipient!r}, not to {me!r}",
            code="binding.recipient",
            field="header.to",
        )
    check_skew(header.sent_at, now, skew_seconds)
    if header.suite not in SUITES:
        raise SuiteError(f"suite {header.suite!r} is not supported", field="header.suite")
    dk = decryption_key(header.enc_kid)
    if dk.public.suite_name != header.suite:
        raise SuiteError(
            f"key {header.enc_kid} is not a {header.suite} key", field="header.suite", code="suite.mismatch"
        )
    plaintext = dk.open(env.ciphertext, hpke_info(header.sender, header.recipient, header.id))
    signed = SignedDocument.from_bytes(plaintext)
    # The inner key may differ from the outer one across a rotation (signed at creation, sent
    # later); it must still be a signing key of the sender valid when the document was created.
    if header.created_at > header.sent_at:
        raise BindingError("document created after it was sent", code="binding.created_at", field="header.created_at")
    doc_key = peer.verify_key(signed.kid, header.created_at)
    doc_key.verify("document", signed.document_bytes, signed.signature)
    doc = Document.from_bytes(signed.document_bytes)
    _check_binding(header, doc, me)
    return OpenedEnvelope(env, header, signed, doc)


def _check_binding(header: Header, doc: Document, me: str) -> None:
    pairs = (
        ("id", doc.id, header.id),
        ("from", doc.sender, header.sender),
        ("to", doc.recipient, header.recipient),
        ("type", doc.type, header.type),
        ("created_at", doc.created_at, header.created_at),
    )
    for name, inner, outer in pairs:
        if inner != outer:
            raise BindingError(
                f"document {name} does not match the envelope header",
                code=f"binding.{name}",
                field=f"document.{name}",
            )
    if doc.recipient != me:
        raise BindingError("document is not addressed to this gateway", code="binding.recipient", field="document.to")
