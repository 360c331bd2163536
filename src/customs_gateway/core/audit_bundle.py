"""The streaming offline verifier of an audit export (format and writer: `core.audit_format`).

An auditor verifies an export with public keys alone:
`verify_bundle` recomputes the Merkle log, checks every checkpoint signature and cosignature and
every document, receipt and refusal against the entries that name them (a document disposed of
is accepted absent only after a `disposed` entry naming its digest). It is sans-I/O (fed
lines, holds one CompactRange and a small per-message index) and raises only BundleError.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from .audit import AuditEntry, log_origin, witness_name
from .audit_format import (
    DIRECTIONS,
    DISPOSED_KIND,
    EVIDENCE_NAMES,
    FORMAT,
    INBOUND_KINDS,
    MAX_LINE_BYTES,
    WITHHELD_REASONS,
    BundleError,
    BundleLine,
    BundleWriter,
    CheckpointLine,
    Due,
    EndLine,
    EntryLine,
    EvidenceLine,
    EvidencePlan,
    HeaderLine,
    Line,
    MessageKey,
    Reference,
    _decode_line,
    _encode_line,
    decode_line_once,
    entry_references,
    read_signed_document,
    repeated_key,
)
from .audit_keys import KeyHistory, SignatureQueue, _Where, first_bad_signature
from .bundle import KeyRecord, SignedBundle, is_valid_identity
from .checkpoint import (
    SIG_COSIGNATURE_V1,
    Checkpoint,
    CosignatureVerifier,
    Ed25519NoteVerifier,
    NoteSignatureError,
    VerifiedNote,
    cosignature_timestamp,
    note_key_id,
    note_signatures,
    open_note,
)
from .encoding import format_ts, json_object, parse_ts, unb64url
from .envelope import Document
from .epoch import KIND as EPOCH_KIND
from .epoch import epoch_of, origin_at, read_epoch
from .errors import BindingError, GatewayError, SchemaError
from .merkle import EMPTY_ROOT, MAX_TREE_SIZE, CompactRange, leaf_hash
from .receipt import Statement, verify_receipt, verify_refusal
from .trust import trusted_keys, valid_in_second

PROGRESS_EVERY: Final = 1000
#: Every code a BundleError carries (docs/auditor-guide.md says what each means).
FAILURE_CODES: Final = frozenset(
    {
        "audit.malformed",
        "audit.order",
        "audit.truncated",
        "audit.digest",
        "audit.header",
        "audit.epoch",
        "audit.bundle",
        "audit.bundle_chain",
        "audit.trust_anchor",
        "audit.entry_malformed",
        "audit.time_order",
        "audit.root_mismatch",
        "audit.checkpoint",
        "audit.checkpoint_signature",
        "audit.cosignature",
        "audit.cosignature_missing",
        "audit.evidence",
        "audit.evidence_missing",
        "audit.document_digest",
        "audit.document_signature",
        "audit.withheld",
        "audit.receipt",
        "audit.refusal",
    }
)

# Python errors that malformed input can still provoke inside helpers (an unhashable JSON value
# used as a key, a lone surrogate): the verifier turns them into BundleError, never lets them out.
_INPUT_ERRORS: Final = (ValueError, TypeError, KeyError, IndexError, OverflowError, UnicodeError, RecursionError)


# --- the verifier -------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyReport:
    """What a verified export holds. `root` is the log's root at `size` (the last checkpoint)."""

    log: str
    peer: str
    origin: str
    exported_at: str
    size: int
    root: bytes
    lines: int
    sha256: str
    entries: int
    checkpoints: int
    cosigned_checkpoints: int
    documents: int
    receipts: int
    refusals: int
    bundles: int
    key_ids: tuple[str, ...]
    kinds: dict[str, int] = field(default_factory=dict)
    #: Messages whose evidence line withholds the document because a `disposed` entry recorded
    #: its disposal (their digests, receipts and refusals are still checked).
    disposed: int = 0
    fingerprints: tuple[tuple[str, int, str], ...] = ()  # (owner, serial, bundle fingerprint)
    anchors: tuple[tuple[str, int, str], ...] = ()  # (identity, serial, fingerprint) trust started from
    trusted_by_anchor_file: bool = False
    uncosigned_allowed: bool = False
    latest_cosigned: bool = True
    #: Log epochs after restores (core.epoch): (entry index, origin, previous origin, the previous
    #: origin's last cosigned size, the size the log was restored to, reason).
    epochs: tuple[tuple[int, str, str, int, int, str], ...] = ()

    @property
    def uncosigned_checkpoints(self) -> int:
        return self.checkpoints - self.cosigned_checkpoints

    def to_dict(self) -> dict[str, Any]:
        return {
            "log": self.log,
            "peer": self.peer,
            "origin": self.origin,
            "exported_at": self.exported_at,
            "size": self.size,
            "root": base64.b64encode(self.root).decode("ascii"),
            "lines": self.lines,
            "sha256": self.sha256,
            "entries": self.entries,
            "checkpoints": self.checkpoints,
            "cosigned_checkpoints": self.cosigned_checkpoints,
            "uncosigned_checkpoints": self.uncosigned_checkpoints,
            "documents": self.documents,
            "disposed": self.disposed,
            "receipts": self.receipts,
            "refusals": self.refusals,
            "bundles": self.bundles,
            "key_ids": list(self.key_ids),
            "kinds": dict(self.kinds),
            "fingerprints": [{"owner": o, "serial": s, "fingerprint": f} for o, s, f in self.fingerprints],
            "anchors": [{"identity": i, "serial": s, "fingerprint": f} for i, s, f in self.anchors],
            "trusted_by_anchor_file": self.trusted_by_anchor_file,
            "uncosigned_allowed": self.uncosigned_allowed,
            "latest_cosigned": self.latest_cosigned,
            "epochs": [
                {
                    "entry_index": i,
                    "origin": o,
                    "previous_origin": po,
                    "previous_cosigned_size": ps,
                    "restored_size": rs,
                    "reason": r,
                }
                for i, o, po, ps, rs, r in self.epochs
            ],
        }


@dataclass(slots=True)
class _Message:
    """What entries so far name about one message (digests and where), and its evidence line."""

    first_line: int
    first_index: int
    digests: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # name -> (digest, index)
    evidence_line: int = 0
    disposed: int | None = None  # index of the `disposed` entry that recorded its disposal


class BundleVerifier:
    """Feed an export's lines in order with `feed`, then call `finish`; the first failure raises
    BundleError (and the verifier stays failed). Holds O(log n) tree state plus, per message,
    its digests, never the entries themselves."""

    def __init__(
        self,
        *,
        require_cosigned: bool = False,
        allow_uncosigned: bool = False,
        trust: Mapping[str, str] | None = None,
        progress: Callable[[int, int], None] | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.require_cosigned = require_cosigned
        self.allow_uncosigned = allow_uncosigned and not require_cosigned
        self.trust = trust
        self._progress = progress
        self._queue = SignatureQueue(executor)
        self._line = 0
        self._sha = hashlib.sha256()
        self._failed: BundleError | None = None
        self._header: HeaderLine | None = None
        self._end: EndLine | None = None
        self._keys: dict[str, KeyHistory] = {}
        self._versions: dict[str, list[tuple[int, SignedBundle]]] = {}
        self._fingerprints: list[tuple[str, int, str]] = []
        self._last_at: dt.datetime | None = None  # newest entry time: no checkpoint is older
        self._cp_line = 0
        self._cp_cosigned = False
        self._log_verifiers: list[Ed25519NoteVerifier] | None = None
        self._witness_verifiers: list[CosignatureVerifier] = []
        self._note_kids: dict[tuple[str, bytes], KeyRecord] = {}
        self._origin_verifiers: dict[str, list[Ed25519NoteVerifier]] = {}
        self._epochs: list[tuple[int, str]] = []  # (log_epoch entry index, origin it starts)
        self._epoch_info: list[tuple[int, str, str, int, int, str]] = []
        self._range = CompactRange()
        self._cp_size = 0
        self._cp_root = EMPTY_ROOT
        self._messages: dict[MessageKey, _Message] = {}
        self._kinds: Counter[str] = Counter()
        self._kids: set[str] = set()
        self._counts: Counter[str] = Counter()

    # --- plumbing ---
    def _fail(self, code: str, detail: str, index: int | None = None, line: int | None = None) -> BundleError:
        return BundleError(detail, code=code, line=self._line if line is None else line, index=index)

    def feed(self, line: bytes) -> None:
        """Check one line (with its trailing newline). Raises BundleError."""
        if self._failed is not None:
            raise self._failed
        try:
            self._feed(line)
        except BundleError as e:
            raise self._failing(e) from None
        except GatewayError as e:  # a check that forgot to name its code: still a clean failure
            raise self._failing(self._fail("audit.malformed", e.detail)) from e
        except _INPUT_ERRORS as e:
            raise self._failing(self._fail("audit.malformed", f"unreadable line: {type(e).__name__}: {e}")) from e

    def _failing(self, error: BundleError) -> BundleError:
        """The failure to report: a queued signature check from an earlier line comes first."""
        try:
            self._queue.drain()
        except BundleError as earlier:
            if earlier.line <= error.line:
                error = earlier
        self._failed = error
        self.close()
        return error

    def close(self) -> None:
        """Drop queued signature checks (done by `finish` and on failure)."""
        self._queue.close()

    def __enter__(self) -> BundleVerifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _feed(self, raw: bytes) -> None:
        self._line += 1
        if self._end is not None:
            raise self._fail("audit.order", "data after the end line")
        if len(raw) > MAX_LINE_BYTES:
            raise self._fail("audit.malformed", f"line is longer than {MAX_LINE_BYTES} bytes")
        if not raw.endswith(b"\n"):
            raise self._fail("audit.truncated", "the last line is cut off (no newline): the file is incomplete")
        if b"\r" in raw:
            raise self._fail("audit.malformed", "a carriage return: every line ends with a single LF")
        try:
            line = decode_line_once(_decode_line, raw)
        except msgspec.MsgspecError as e:
            raise self._fail("audit.malformed", f"not a bundle line: {e}") from e
        except SchemaError as e:
            raise self._fail("audit.malformed", repeated_key(e)) from e
        if isinstance(line, EndLine):
            self._on_end(line, raw)
            return
        self._sha.update(raw)
        if self._header is None:
            if not isinstance(line, HeaderLine):
                raise self._fail("audit.order", "the first line must be the header")
            self._on_header(line)
        elif isinstance(line, HeaderLine):
            raise self._fail("audit.order", "a second header")
        elif isinstance(line, BundleLine):
            if self._log_verifiers is not None:
                raise self._fail("audit.order", "key bundles must come before the first entry")
            self._on_bundle(line)
        else:
            if self._log_verifiers is None:
                self._seal_keys()
            if isinstance(line, EntryLine):
                self._on_entry(line)
            elif isinstance(line, CheckpointLine):
                self._on_checkpoint(line)
            else:
                self._on_evidence(line)

    def _b64(self, text: str, what: str, index: int | None = None) -> bytes:
        try:
            return unb64url(text, field=what)
        except GatewayError as e:
            raise self._fail("audit.malformed", e.detail, index) from e

    def _head(self) -> HeaderLine:
        assert self._header is not None
        return self._header

    # --- header and keys ---
    def _on_header(self, h: HeaderLine) -> None:
        if h.format != FORMAT:
            raise self._fail("audit.header", f"not a {FORMAT} file (format {h.format!r})")
        if not (is_valid_identity(h.log) and is_valid_identity(h.peer)) or h.log == h.peer:
            raise self._fail("audit.header", "log and peer must be two different identities")
        if h.origin != log_origin(h.log):
            raise self._fail("audit.header", f"origin {h.origin!r} is not {log_origin(h.log)!r}")
        if not 1 <= h.size <= MAX_TREE_SIZE:
            raise self._fail("audit.header", f"size {h.size} is not a positive tree size")
        try:
            parse_ts(h.exported_at, field="exported_at")
        except GatewayError as e:
            raise self._fail("audit.header", e.detail) from e
        self._header = h
        self._versions = {h.log: [], h.peer: []}

    def _on_bundle(self, ln: BundleLine) -> None:
        versions = self._versions.get(ln.owner)
        if versions is None:
            raise self._fail("audit.bundle", f"bundle owner {ln.owner!r} is neither the log nor its peer")
        raw = self._b64(ln.signed_bundle, "signed_bundle")
        try:
            signed = SignedBundle.from_bytes(raw)
            bundle = signed.bundle
        except GatewayError as e:
            raise self._fail("audit.bundle", f"key bundle of {ln.owner} is unreadable: {e.detail}") from e
        if bundle.identity != ln.owner:
            raise self._fail("audit.bundle", f"bundle of {bundle.identity!r} filed as {ln.owner!r}'s")
        versions.append((self._line, signed))
        self._kids.update(kid for kid, _ in signed.signatures)
        self._fingerprints.append((ln.owner, bundle.serial, signed.fingerprint()))
        self._counts["bundles"] += 1

    def _seal_keys(self) -> None:
        """The key set is complete at the first log line: chain each side's bundle versions from
        its trust anchor (`core.trust`), then build the checkpoint verifiers once."""
        h = self._head()
        for who in (h.log, h.peer):
            anchor = None if self.trust is None else self.trust.get(who)
            if self.trust is not None and anchor is None:
                raise self._fail("audit.trust_anchor", f"the trust file names no fingerprint for {who}")
            self._keys[who] = KeyHistory(trusted_keys(who, self._versions[who], anchor), self._queue)
            if not self._keys[who].records("signing"):
                raise self._fail("audit.bundle", f"the export carries no signing key of {who}")
        witness = witness_name(h.peer)
        self._log_verifiers = self._verifiers_for(h.origin)
        for rec in self._keys[h.peer].records("witness"):
            self._witness_verifiers.append(CosignatureVerifier(witness, rec.public))
            self._note_kids[(witness, note_key_id(witness, rec.public, SIG_COSIGNATURE_V1))] = rec

    def _verifiers_for(self, origin: str) -> list[Ed25519NoteVerifier]:
        """The log's signing keys as note verifiers for one of its origins (one per epoch)."""
        found = self._origin_verifiers.get(origin)
        if found is None:
            found = self._origin_verifiers[origin] = []
            for rec in self._keys[self._head().log].records("signing"):
                found.append(Ed25519NoteVerifier(origin, rec.public))
                self._note_kids[(origin, note_key_id(origin, rec.public))] = rec
        return found

    def _origin_for(self, size: int) -> str:
        return origin_at(self._epochs, self._head().origin, size)

    def _on_epoch(self, entry: AuditEntry, index: int) -> None:
        """A `log_epoch` entry: the log continues under the next origin (a restore, core.epoch)."""
        h = self._head()
        current = self._epochs[-1][1] if self._epochs else h.origin
        try:
            start = read_epoch(entry)
        except GatewayError as e:
            raise self._fail("audit.epoch", f"entry {index}: {e.detail}", index) from e
        now, new = epoch_of(current, h.log), epoch_of(start.origin, h.log)
        if start.previous_origin != current or now is None or new != now + 1:
            raise self._fail(
                "audit.epoch",
                f"entry {index} starts {start.origin!r} after {start.previous_origin!r}, "
                f"but the log is at {current!r}: epochs follow one another",
                index,
            )
        self._epochs.append((index, start.origin))
        self._epoch_info.append(
            (index, start.origin, start.previous_origin, start.previous_size, start.restored_size, start.reason)
        )

    # --- the log ---
    def _on_entry(self, ln: EntryLine) -> None:
        index, size = ln.index, self._head().size
        if index != self._range.size:
            expected = self._range.size  # the first entry that is missing or out of place
            raise self._fail("audit.order", f"expected entry {expected}, found entry {index}", expected)
        if index >= size:
            raise self._fail("audit.order", f"entry {index} lies beyond the exported size {size}", index)
        data = self._b64(ln.entry, "entry", index)
        try:
            entry = AuditEntry.from_bytes(data)
            refs = entry_references(entry)
        except (GatewayError, *_INPUT_ERRORS) as e:
            raise self._fail("audit.entry_malformed", f"entry {index} is not an audit entry: {e}", index) from e
        self._range.append(leaf_hash(data))
        self._kinds[entry.kind] += 1
        if self._last_at is not None and entry.at < self._last_at:
            # A gateway stamps an entry older than the last with the last time (DESIGN §11): an
            # entry dated before its predecessor was written by something else.
            raise self._fail(
                "audit.time_order",
                f"entry {index} is dated before the entry preceding it: audit time runs forward",
                index,
            )
        self._last_at = entry.at
        if entry.kind == EPOCH_KIND:
            self._on_epoch(entry, index)
        for ref in refs:
            self._on_reference(ref, index)
        if self._progress is not None and (index + 1) % PROGRESS_EVERY == 0:
            self._progress(index + 1, size)

    def _on_reference(self, ref: Reference, index: int) -> None:
        digest_hex = ref.digest
        if not isinstance(digest_hex, str) or len(digest_hex) != 64 or digest_hex.lower() != digest_hex:
            raise self._fail("audit.entry_malformed", f"entry {index} has a malformed {ref.name} digest", index)
        try:
            digest = bytes.fromhex(digest_hex)
        except ValueError as e:
            raise self._fail("audit.entry_malformed", f"entry {index} has a malformed {ref.name} digest", index) from e
        key = (ref.direction, ref.message_id)
        m = self._messages.get(key)
        if m is None:
            m = self._messages[key] = _Message(self._line, index)
        held = m.digests.get(ref.name)
        code = "audit.document_digest" if ref.name == "document" else f"audit.{ref.name}"
        if held is None:
            if m.evidence_line:
                raise self._fail(
                    code,
                    f"entry names a {ref.name} of {ref.direction} message {ref.message_id} that its evidence "
                    f"(line {m.evidence_line}) does not carry",
                    index,
                )
            m.digests[ref.name] = (digest, index)
        elif held[0] != digest:
            raise self._fail(
                code,
                f"entry names another {ref.name} of {ref.direction} message {ref.message_id} than entry {held[1]}",
                index,
            )
        if ref.disposal and m.disposed is None:
            m.disposed = index

    def _on_checkpoint(self, ln: CheckpointLine) -> None:
        size = ln.size
        if size != self._range.size or size <= self._cp_size:
            raise self._fail(
                "audit.order", f"checkpoint of size {size} must follow entry {size - 1} and the checkpoint before"
            )
        try:
            note = ln.note.encode("utf-8")
        except UnicodeEncodeError as e:
            raise self._fail("audit.checkpoint", "checkpoint note is not UTF-8") from e
        verified, cosigned = self._open_log_signature(note, size)
        try:
            cp = Checkpoint.parse(verified.body)
        except GatewayError as e:
            raise self._fail("audit.checkpoint", f"checkpoint body: {e.detail}", size - 1) from e
        if cp.origin != self._origin_for(size) or cp.size != size:
            raise self._fail(
                "audit.checkpoint", f"checkpoint is for {cp.origin} at size {cp.size}, not this log at {size}"
            )
        root = self._range.root()
        if not hmac.compare_digest(root, cp.root):
            raise self._fail(
                "audit.root_mismatch",
                f"entries {self._cp_size}..{size - 1} do not hash to the root the log signed at size {size}: "
                "at least one of them was changed, removed, added or reordered",
                self._cp_size,
            )
        cosigned_at = self._check_cosignature(note, size, cosigned)
        self._check_log_keys(verified, size, cosigned_at)
        self._cp_size, self._cp_root = size, root
        self._cp_line, self._cp_cosigned = self._line, cosigned_at is not None
        self._counts["checkpoints"] += 1

    def _open_log_signature(self, note: bytes, size: int) -> tuple[VerifiedNote, bool]:
        """The note verified under the log's keys, and whether its witness signed it (not yet
        checked: `_check_cosignature` does that)."""
        h = self._head()
        origin = self._origin_for(size)
        try:
            verified = open_note(note, self._verifiers_for(origin))
        except NoteSignatureError as e:
            raise self._fail("audit.checkpoint_signature", f"checkpoint {size}: {e.detail}", size - 1) from e
        except GatewayError as e:
            raise self._fail("audit.checkpoint", f"checkpoint {size} note: {e.detail}", size - 1) from e
        if origin not in verified.names:
            raise self._fail("audit.checkpoint_signature", f"checkpoint {size} is not signed by {origin}", size - 1)
        witness = witness_name(h.peer)
        cosigned = False
        for sig in note_signatures(note):  # well-formed: open_note parsed it
            name = sig.name
            cosigned = cosigned or name == witness
            rec = self._note_kids.get((name, sig.key_id))
            if rec is not None:
                self._kids.add(rec.kid)
            elif name == witness:
                raise self._fail(
                    "audit.cosignature", f"checkpoint {size} is cosigned by an unknown {witness} key", size - 1
                )
            else:
                # The export knows exactly who signs: the log and its one witness. Anything else
                # is a forged or mangled line, not a third party to ignore.
                raise self._fail(
                    "audit.checkpoint_signature",
                    f"checkpoint {size} carries a signature by unknown key {name}",
                    size - 1,
                )
        return verified, cosigned

    def _check_cosignature(self, note: bytes, size: int, cosigned: bool) -> dt.datetime | None:
        """When the peer's witness cosigned this checkpoint (None if it did not); a cosignature by
        a witness key outside its validity, or revoked, fails."""
        witness = witness_name(self._head().peer)
        if not cosigned:
            if self.require_cosigned:
                raise self._fail("audit.cosignature_missing", f"checkpoint {size} has no cosignature by {witness}")
            return None
        try:
            verified = open_note(note, self._witness_verifiers)
        except GatewayError as e:
            raise self._fail("audit.cosignature", f"checkpoint {size}: {e.detail}", size - 1) from e
        when: dt.datetime | None = None
        for sig in verified.signatures:
            rec = self._note_kids[(sig.name, sig.key_id)]
            at = dt.datetime.fromtimestamp(cosignature_timestamp(sig), dt.timezone.utc)
            problem = valid_in_second(rec, at)
            if problem is not None:
                raise self._fail(
                    "audit.cosignature", f"checkpoint {size} cosigned at {format_ts(at)} by key {rec.kid} ({problem})"
                )
            when = at if when is None else max(when, at)
        self._counts["cosigned_checkpoints"] += 1
        return when

    def _check_log_keys(self, verified: VerifiedNote, size: int, cosigned_at: dt.datetime | None) -> None:
        """The log's own signing key must have been good when it signed: not revoked or expired
        before the newest entry the checkpoint covers (it was signed after that), and valid when
        the peer cosigned it (before that)."""
        origin = self._origin_for(size)
        for sig in verified.signatures:
            if sig.name != origin:
                continue
            rec = self._note_kids[(sig.name, sig.key_id)]
            problem = None
            if self._last_at is not None and (
                (rec.revoked_at is not None and rec.revoked_at <= self._last_at) or rec.not_after < self._last_at
            ):
                problem = "revoked or expired before the entries it covers"
            elif rec.state == "revoked" and rec.revoked_at is None:
                problem = "key.revoked"
            elif cosigned_at is not None:
                problem = valid_in_second(rec, cosigned_at)
            if problem is not None:
                raise self._fail(
                    "audit.checkpoint_signature", f"checkpoint {size} is signed by key {rec.kid}: {problem}", size - 1
                )

    # --- evidence ---
    def _on_evidence(self, ln: EvidenceLine) -> None:
        h, mid = self._head(), ln.message_id
        if ln.peer != h.peer:
            raise self._fail("audit.evidence", f"evidence names peer {ln.peer!r}, the export's peer is {h.peer!r}")
        m = self._messages.get((ln.direction, mid))
        if m is None:
            raise self._fail("audit.evidence", f"no entry before this line names {ln.direction} message {mid}")
        if m.evidence_line:
            raise self._fail(
                "audit.evidence", f"{ln.direction} message {mid} already has evidence (line {m.evidence_line})"
            )
        m.evidence_line = self._line
        sender, receiver = (h.log, h.peer) if ln.direction == "outbound" else (h.peer, h.log)
        if ln.signed_document is None:
            doc_digest = self._withheld(ln, m)
        else:
            if ln.withheld is not None:
                raise self._fail(
                    "audit.withheld",
                    f"evidence of {ln.direction} message {mid} carries its document and says it is withheld",
                )
            doc_digest = self._document(ln.signed_document, m, mid, sender, receiver)
        key_for = self._keys[receiver].verify_key
        for label, text in (("receipt", ln.receipt), ("refusal", ln.refusal)):
            if text is None:
                if label in m.digests:
                    raise self._fail(
                        f"audit.{label}",
                        f"entry {m.digests[label][1]} names a {label} of message {mid} that the export lacks",
                        m.digests[label][1],
                    )
                continue
            raw = self._b64(text, label)
            self._match(m, label, raw, mid)
            self._queue.where = _Where(self._line, m.digests[label][1], f"audit.{label}", f"{label} of message {mid}")
            try:
                st = Statement.from_dict(label, json_object(raw, field=label))
                if label == "receipt":
                    verify_receipt(
                        st,
                        message_id=mid,
                        sender=sender,
                        receiver=receiver,
                        document_sha256=doc_digest,
                        key_for=key_for,
                    )
                else:
                    verify_refusal(st, message_id=mid, sender=sender, receiver=receiver, key_for=key_for)
            except BundleError:
                raise
            except GatewayError as e:
                index = m.digests[label][1]
                raise self._fail(f"audit.{label}", f"{label} of message {mid}: {e.detail}", index) from e
            self._kids.add(st.kid)
            self._counts[f"{label}s"] += 1

    def _withheld(self, ln: EvidenceLine, m: _Message) -> bytes:
        """A line without its document: only a message whose disposal an earlier entry recorded
        may leave it out. Returns the document digest the entries name (receipts bind it)."""
        what = f"{ln.direction} message {ln.message_id}"
        if ln.withheld is None:
            raise self._fail("audit.withheld", f"evidence of {what} carries no signed document and does not say why")
        if ln.withheld not in WITHHELD_REASONS:
            raise self._fail(
                "audit.withheld",
                f"evidence of {what} withholds its document as {ln.withheld!r}: only a document disposed of "
                f"({'/'.join(WITHHELD_REASONS)}) may be left out",
            )
        if m.disposed is None:
            raise self._fail(
                "audit.withheld",
                f"evidence of {what} withholds its document as disposed, but no {DISPOSED_KIND} entry before "
                f"this line names that message (entry {m.first_index} is the first about it)",
                m.first_index,
            )
        self._counts["disposed"] += 1
        return m.digests["document"][0]  # the disposed entry named it, equal to every other entry's

    def _document(self, text: str, m: _Message, mid: str, sender: str, receiver: str) -> bytes:
        """Check a line's signed document against the entries and the sender's keys; its digest."""
        raw_doc = self._b64(text, "signed_document")
        doc_digest = self._match(m, "document", raw_doc, mid)
        index = m.digests["document"][1]
        self._queue.where = _Where(self._line, index, "audit.document_signature", f"document of message {mid}")
        try:
            signed = read_signed_document(raw_doc)
            doc = Document.from_bytes(signed.document_bytes)
            if (doc.id, doc.sender, doc.recipient) != (mid, sender, receiver):
                raise BindingError(f"document is {doc.id} from {doc.sender} to {doc.recipient}")
            key = self._keys[sender].verify_key(signed.kid, doc.created_at)
            key.verify("document", signed.document_bytes, signed.signature)
        except BundleError:  # an earlier line's queued signature failed while this one queued
            raise
        except GatewayError as e:
            raise self._fail("audit.document_signature", f"document of message {mid}: {e.detail}", index) from e
        self._kids.add(signed.kid)
        self._counts["documents"] += 1
        return doc_digest

    def _match(self, m: _Message, name: str, raw: bytes, mid: str) -> bytes:
        """SHA-256 of `raw`, which must be the digest an earlier entry names for this part."""
        digest = hashlib.sha256(raw).digest()
        held = m.digests.get(name)
        code = "audit.document_digest" if name == "document" else f"audit.{name}"
        if held is None:
            raise self._fail(code, f"no entry names the {name} of message {mid} that this line carries")
        if not hmac.compare_digest(held[0], digest):
            raise self._fail(code, f"the {name} of message {mid} is not the one entry {held[1]} names", held[1])
        return digest

    # --- the end ---
    def _on_end(self, ln: EndLine, raw: bytes) -> None:
        if self._header is None:
            raise self._fail("audit.order", "the first line must be the header")
        if raw != _encode_line(ln) + b"\n":
            raise self._fail("audit.digest", "the end line is not in its one exact form: the file was changed")
        before = self._line - 1
        if ln.lines != before:
            raise self._fail("audit.digest", f"end line counts {ln.lines} lines, the file has {before} before it")
        if ln.sha256 != self._sha.hexdigest():
            raise self._fail("audit.digest", "SHA-256 of the lines before the end line does not match the end line")
        self._end = ln

    def finish(self) -> VerifyReport:
        """Checks that need the whole file; returns the report or raises BundleError."""
        if self._failed is not None:
            raise self._failed
        try:
            self._queue.drain()
            report = self._finish()
        except BundleError as e:
            raise self._failing(e) from None
        self.close()
        return report

    def _finish(self) -> VerifyReport:
        if self._header is None or self._end is None:
            raise self._fail("audit.truncated", "the file ends before its end line: it is incomplete")
        h = self._header
        if self._range.size != h.size:
            raise self._fail("audit.truncated", f"the export holds {self._range.size} entries, its header {h.size}")
        if self._cp_size != h.size:
            raise self._fail(
                "audit.checkpoint", f"no checkpoint at the exported size {h.size} (last one: {self._cp_size})"
            )
        if not self._cp_cosigned and not self.allow_uncosigned:
            raise self._fail(
                "audit.cosignature_missing",
                f"the latest checkpoint (size {h.size}) is not cosigned by {witness_name(h.peer)}: "
                "nothing shows the peer saw this log (--allow-uncosigned to accept that)",
                line=self._cp_line,
            )
        for (direction, mid), m in self._messages.items():
            if not m.evidence_line:
                raise self._fail(
                    "audit.evidence_missing",
                    f"the export lacks the signed document of {direction} message {mid}",
                    m.first_index,
                    line=m.first_line,
                )
        if self._progress is not None:
            self._progress(h.size, h.size)
        c = self._counts
        return VerifyReport(
            log=h.log,
            peer=h.peer,
            origin=h.origin,
            exported_at=h.exported_at,
            size=h.size,
            root=self._cp_root,
            lines=self._line,
            sha256=self._end.sha256,
            entries=self._range.size,
            checkpoints=c["checkpoints"],
            cosigned_checkpoints=c["cosigned_checkpoints"],
            documents=c["documents"],
            disposed=c["disposed"],
            receipts=c["receipts"],
            refusals=c["refusals"],
            bundles=c["bundles"],
            key_ids=tuple(sorted(self._kids)),
            kinds=dict(sorted(self._kinds.items())),
            fingerprints=tuple(self._fingerprints),
            anchors=tuple(
                (who, k.trusted.anchor_serial, k.trusted.anchor_fingerprint) for who, k in self._keys.items()
            ),
            trusted_by_anchor_file=self.trust is not None,
            uncosigned_allowed=self.allow_uncosigned,
            latest_cosigned=self._cp_cosigned,
            epochs=tuple(self._epoch_info),
        )


def verify_bundle(
    lines: Iterable[bytes],
    *,
    progress: Callable[[int, int], None] | None = None,
    require_cosigned: bool = False,
    allow_uncosigned: bool = False,
    trust: Mapping[str, str] | None = None,
    executor: Executor | None = None,
) -> VerifyReport:
    """Verify an export given its lines (each with its newline, as iterating a binary file gives).

    Each side's keys start from its trust anchor: `trust` maps identity -> the fingerprint of
    its bundle exchanged out of band; without it, its lowest-serial bundle in the file (the
    report names it, to compare). Every later version must follow under `rotation.check_update`.
    The latest checkpoint must carry the peer's cosignature unless `allow_uncosigned`; with
    `require_cosigned` every checkpoint must. A bad cosignature always fails.
    `progress(entries_done, entries_total)` is called every PROGRESS_EVERY entries. With an
    `executor` (a process pool: libsodium needs a core of its own) the Ed25519 arithmetic of
    documents and receipts runs there, in batches. Raises BundleError at the first failure (the
    same one with or without an executor), nothing else.
    """
    with BundleVerifier(
        require_cosigned=require_cosigned,
        allow_uncosigned=allow_uncosigned,
        trust=trust,
        progress=progress,
        executor=executor,
    ) as verifier:
        for line in lines:
            verifier.feed(line)
        return verifier.finish()


__all__ = [
    "DIRECTIONS",
    "DISPOSED_KIND",
    "EVIDENCE_NAMES",
    "FAILURE_CODES",
    "FORMAT",
    "INBOUND_KINDS",
    "MAX_LINE_BYTES",
    "WITHHELD_REASONS",
    "BundleError",
    "BundleLine",
    "BundleVerifier",
    "BundleWriter",
    "CheckpointLine",
    "Due",
    "EndLine",
    "EntryLine",
    "EvidenceLine",
    "EvidencePlan",
    "HeaderLine",
    "KeyHistory",
    "Line",
    "MessageKey",
    "Reference",
    "SignatureQueue",
    "VerifyReport",
    "entry_references",
    "first_bad_signature",
    "read_signed_document",
    "verify_bundle",
]
