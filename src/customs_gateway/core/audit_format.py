"""The audit export's format: its JSON Lines, the writer, which entries name which evidence,
and the one error every offline verifier raises.

An export is one compact JSON object per line, in this order: a `header`; every `bundle` (signed
key bundle, both sides, all versions); then the log: `entry` lines in index order, an `evidence`
line (signed document, receipt, refusal) after the last entry that names each message (a message
disposed of at `retain_until` carries no document but `withheld: "disposed"`, which the verifier
accepts only after a `disposed` entry naming that document's digest), and a
`checkpoint` line right after the entry that completes each checkpoint; last an `end` line with
the count and SHA-256 of every line before it (`core.audit_bundle` verifies it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar

import msgspec

from .audit import AuditEntry, log_origin
from .bundle import SignedBundle
from .encoding import b64url, format_ts, json_bytes, unb64url
from .envelope import SignedDocument
from .errors import DecodeError, GatewayError, SchemaError
from .schemas import refuse_duplicate_keys_in

FORMAT: Final = "customs-gateway/v1 audit-export"
MAX_LINE_BYTES: Final = 48 * 1024 * 1024  # an 8 MiB envelope's document, base64url'd, with room
DIRECTIONS: Final = ("outbound", "inbound")
#: Entry kinds about a message the log's owner received; every other kind that names a message
#: is about one it sent.
INBOUND_KINDS: Final = frozenset({"received", "duplicate", "ack_received"})
EVIDENCE_NAMES: Final = ("document", "receipt", "refusal")
#: Why an evidence line may carry no signed document: the message was disposed of (DESIGN §12).
WITHHELD_REASONS: Final = ("disposed",)
#: The entry kind that records a disposal; it names its message's direction in `detail.direction`.
DISPOSED_KIND: Final = "disposed"


class BundleError(GatewayError):
    """The export bundle failed verification; `line` is 1-based, `index` the entry if one applies."""

    code = "audit.malformed"
    status = 422

    def __init__(self, detail: str, *, code: str, line: int, index: int | None = None) -> None:
        super().__init__(detail, code=code)
        self.line = line
        self.index = index

    def diagnostics(self) -> dict[str, Any]:
        out = super().diagnostics()
        out["line"] = self.line
        if self.index is not None:
            out["index"] = self.index
        return out

    def __str__(self) -> str:
        where = f"line {self.line}" + (f" (entry {self.index})" if self.index is not None else "")
        return f"{where}: {self.detail} [{self.code}]"


# --- line types ---------------------------------------------------------------------------------


class HeaderLine(msgspec.Struct, tag_field="t", tag="header", forbid_unknown_fields=True):
    format: str
    log: str
    origin: str
    peer: str
    exported_at: str
    size: int


class BundleLine(msgspec.Struct, tag_field="t", tag="bundle", forbid_unknown_fields=True):
    owner: str
    signed_bundle: str


class EntryLine(msgspec.Struct, tag_field="t", tag="entry", forbid_unknown_fields=True):
    index: int
    entry: str


class EvidenceLine(msgspec.Struct, tag_field="t", tag="evidence", forbid_unknown_fields=True, omit_defaults=True):
    """One message's evidence. `signed_document` is None only with `withheld` saying why (a line
    of an export written before disposal existed has no `withheld`, and a line that carries its
    document still omits it, so such lines are byte for byte as before)."""

    message_id: str
    direction: Literal["outbound", "inbound"]
    peer: str
    signed_document: str | None
    receipt: str | None
    refusal: str | None
    withheld: str | None = None


class CheckpointLine(msgspec.Struct, tag_field="t", tag="checkpoint", forbid_unknown_fields=True):
    size: int
    note: str


class EndLine(msgspec.Struct, tag_field="t", tag="end", forbid_unknown_fields=True):
    lines: int
    sha256: str


Line = HeaderLine | BundleLine | EntryLine | EvidenceLine | CheckpointLine | EndLine
_decode_line = msgspec.json.Decoder(Line).decode
_encode_line = msgspec.json.Encoder().encode
_ENTRY_FRAME: Final = len(_encode_line(EntryLine(0, ""))) - 1  # an entry line without index digits and entry

L = TypeVar("L")


def decode_line_once(decode: Callable[[bytes], L], raw: bytes, where: str = "line") -> L:
    """One line of an export or evidence file (its newline, if any, included), decoded; raises
    msgspec's error, or SchemaError (`schema.duplicate_key`, the field under `where`) for a line
    holding a key twice. msgspec keeps the last of repeated keys where another reader may keep
    the first: one file would show two auditors two contents (I-JSON, RFC 7493 §2.3).

    Only the length is compared for the lines gateways write: msgspec's compact JSON of a value
    is its shortest text of the decoded value (no whitespace, no escapes it can do without, the
    shortest numbers), and a key twice makes a text longer still, so a line no longer than it
    holds no key twice. Longer lines are parsed a second time to look."""
    line = decode(raw)
    size = len(raw) - raw.endswith(b"\n")
    if size > _shortest_length(line):
        refuse_duplicate_keys_in(raw, b"", where)  # no canonical bytes to match: always parses
    return line


def repeated_key(e: SchemaError) -> str:
    """What an auditor's reader says of a line `decode_line_once` refused for a repeated key."""
    return f"{e.field} appears twice: readers could disagree on the line"


def _shortest_length(line: object) -> int:
    """The length of msgspec's compact JSON of `line`; for an entry line (most of an export) a lower bound counted
    without encoding (each character of the entry as one byte: escapes and non-ASCII only add)."""
    if type(line) is EntryLine:
        return _ENTRY_FRAME + len(str(line.index)) + len(line.entry)
    return len(_encode_line(line))


class BundleWriter:
    """Produces the lines of an export in order, keeping the count and SHA-256 the end line needs.

    Each method returns one line's bytes (newline included); the caller writes them out.
    """

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.lines = 0
        self.bytes = 0
        self.sha256 = ""

    def _emit(self, line: Line) -> bytes:
        data = _encode_line(line) + b"\n"
        self._sha.update(data)
        self.lines += 1
        self.bytes += len(data)
        return data

    def header(self, *, log: str, peer: str, exported_at: dt.datetime, size: int) -> bytes:
        return self._emit(HeaderLine(FORMAT, log, log_origin(log), peer, format_ts(exported_at), size))

    def bundle(self, owner: str, signed: SignedBundle) -> bytes:
        return self._emit(BundleLine(owner, b64url(signed.to_bytes())))

    def entry(self, index: int, data: bytes) -> bytes:
        return self._emit(EntryLine(index, b64url(data)))

    def evidence(
        self,
        *,
        message_id: str,
        direction: str,
        peer: str,
        signed_document: bytes | None,
        receipt: bytes | None,
        refusal: bytes | None,
        withheld: str | None = None,
    ) -> bytes:
        """One evidence line: the signed document, or (None) `withheld` saying why it is absent."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}")
        if (signed_document is None) != (withheld is not None) or (
            withheld is not None and withheld not in WITHHELD_REASONS
        ):
            raise ValueError(f"give either the signed document or a reason it is withheld ({WITHHELD_REASONS})")
        return self._emit(
            EvidenceLine(
                message_id,
                "outbound" if direction == "outbound" else "inbound",
                peer,
                None if signed_document is None else b64url(signed_document),
                None if receipt is None else b64url(receipt),
                None if refusal is None else b64url(refusal),
                withheld,
            )
        )

    def checkpoint(self, size: int, note: bytes) -> bytes:
        return self._emit(CheckpointLine(size, note.decode("utf-8")))

    def end(self) -> bytes:
        """The closing line (its digest is kept in `sha256`); the writer must not be used after it."""
        self.sha256 = self._sha.hexdigest()
        line = _encode_line(EndLine(self.lines, self.sha256)) + b"\n"
        self.bytes += len(line)
        return line


# --- which entries name which evidence ----------------------------------------------------------

MessageKey = tuple[str, str]  # (direction, message id)


@dataclass(frozen=True, slots=True)
class Reference:
    """One digest an entry names: of a message's signed document, receipt or refusal (hex)."""

    direction: str
    message_id: str
    name: str
    digest: object  # as the entry holds it: the verifier checks it is 64 lowercase hex digits
    disposal: bool = False  # named by a `disposed` entry: the document may be withheld from then on


def entry_references(entry: AuditEntry) -> list[Reference]:
    """The evidence digests an entry names. An `acknowledged` entry names the ack document it
    received (`digests.ack_document`, `detail.ack_id`); a `disposed` entry names the document of
    its message in `detail.direction` (either side's copy may be disposed of); other entries name
    their own message's. Raises DecodeError for a `disposed` entry that does not name a message,
    a direction and a document digest."""
    refs: list[Reference] = []
    digests = entry.digests
    if entry.kind == DISPOSED_KIND:
        direction = entry.detail.get("direction")
        if not isinstance(entry.message_id, str) or direction not in DIRECTIONS or "document" not in digests:
            raise DecodeError(
                "a disposed entry must name message_id, detail.direction (outbound or inbound) and digests.document",
                field="entry",
            )
        return [Reference(str(direction), entry.message_id, "document", digests["document"], disposal=True)]
    if isinstance(entry.message_id, str):
        direction = "inbound" if entry.kind in INBOUND_KINDS else "outbound"
        refs += [
            Reference(direction, entry.message_id, name, digests[name]) for name in EVIDENCE_NAMES if name in digests
        ]
    ack_id = entry.detail.get("ack_id")
    if entry.kind == "acknowledged" and "ack_document" in digests and isinstance(ack_id, str):
        refs.append(Reference("inbound", ack_id, "document", digests["ack_document"]))
    return refs


@dataclass(frozen=True, slots=True)
class Due:
    """Evidence to write for one message, and which of its parts some entry names."""

    direction: str
    message_id: str
    names: frozenset[str]


class EvidencePlan:
    """Decides where each message's evidence goes: after the last entry (below the export size)
    that names it, carrying only the parts some entry names, so the verifier can check every
    evidence line against entries it has already read."""

    def __init__(self) -> None:
        self._last: dict[MessageKey, int] = {}
        self._names: dict[MessageKey, set[str]] = {}

    def add(self, index: int, entry: AuditEntry) -> None:
        for ref in entry_references(entry):
            key = (ref.direction, ref.message_id)
            self._last[key] = index
            self._names.setdefault(key, set()).add(ref.name)

    def schedule(self) -> dict[int, list[Due]]:
        """Entry index -> the evidence due right after it (the plan is spent afterwards)."""
        out: dict[int, list[Due]] = {}
        for key, index in self._last.items():
            out.setdefault(index, []).append(Due(key[0], key[1], frozenset(self._names[key])))
        self._last.clear()
        self._names.clear()
        return out


class _SignedDocumentWire(msgspec.Struct):
    document: str
    kid: str
    signature: str


def read_signed_document(raw: bytes) -> SignedDocument:
    """`SignedDocument.from_bytes` without its 8 MiB cap on the document (the line limit is
    MAX_LINE_BYTES) and with a typed decode; raises DecodeError, or SchemaError for a key twice."""
    try:
        wire = msgspec.json.decode(raw, type=_SignedDocumentWire)
    except msgspec.MsgspecError as e:
        raise DecodeError(f"signed document is malformed: {e}", field="signed_document") from e
    refuse_duplicate_keys_in(raw, json_bytes(wire), "signed_document")  # signed: one reading only
    if not (wire.document and wire.signature and 0 < len(wire.kid) <= 64):
        raise DecodeError("signed document lacks document, kid or signature", field="signed_document")
    document = unb64url(wire.document, field="signed_document.document")
    return SignedDocument(document, wire.kid, unb64url(wire.signature, field="signed_document.signature"), raw)
