"""Checkpoints and their signatures: C2SP tlog-checkpoint bodies, signed-note, tlog-cosignature.

A checkpoint body is `origin\\nsize\\nbase64(root)\\n` plus optional extension lines. The log signs
it as a signed note (Ed25519, type 0x01); the peer gateway, acting as witness, adds a timestamped
Ed25519 cosignature (type 0x04) over `cosignature/v1\\ntime <ts>\\n` + body. Parsing follows
golang.org/x/mod/sumdb/note `Open` and the C2SP texts; every malformed input raises NoteError
(or a subclass), never anything else. Signing keys are injected through the `Signer` protocol.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .errors import GatewayError

SIG_ED25519 = 0x01
SIG_COSIGNATURE_V1 = 0x04
MAX_SIGNATURES = 100  # as golang.org/x/mod/sumdb/note; C2SP asks verifiers to accept at least 16
MAX_TREE_SIZE = (1 << 64) - 1
MAX_COSIGNATURE_TIME = (1 << 63) - 1

_EM_DASH_PREFIX = "\u2014 ".encode()
_COSIGNATURE_LINE_LEN = 4 + 8 + 64
_SIZE_RE = re.compile(r"0|[1-9][0-9]*")
# Unicode White_Space: what Go's unicode.IsSpace refuses in key names.
_WHITE_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


class NoteError(GatewayError):
    """A signed note, checkpoint, cosignature line or verifier key is malformed."""

    code = "audit.note_invalid"
    status = 400


class CheckpointError(NoteError):
    """A checkpoint body breaks the C2SP tlog-checkpoint format."""

    code = "audit.checkpoint_invalid"


class NoteSignatureError(NoteError):
    """A signature from a known key fails, or no known key signed the note."""

    code = "audit.signature_invalid"
    status = 403


class Signer(Protocol):
    """An Ed25519 signing key: `sign` returns a 64-byte signature, `public_raw` the 32-byte key."""

    @property
    def public_raw(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


class NoteVerifier(Protocol):
    """One known key: `verify` gets the note body and the signature bytes after the key id."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> bytes: ...

    def verify(self, body: bytes, signature: bytes) -> bool: ...


# --- checkpoint body ----------------------------------------------------------------------------


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode(text: str | bytes, *, error: type[NoteError], field: str) -> bytes:
    """Strict standard base64 (RFC 4648 §4): padded, canonical, nothing outside the alphabet."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    try:
        out = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as e:
        raise error(f"{field} is not base64", field=field) from e
    if base64.b64encode(out) != raw:
        raise error(f"{field} is not canonical base64", field=field)
    return out


def _text_ok(text: str) -> bool:
    """No ASCII control characters except newline (signed-note rule)."""
    return not any(c < " " and c != "\n" for c in text)


def _decode_note_text(data: bytes, error: type[NoteError], field: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{field} is not valid UTF-8", field=field) from e
    if not _text_ok(text):
        raise error(f"{field} contains a control character", field=field)
    return text


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's tree head as C2SP tlog-checkpoint: origin, size, RFC 6962 root, extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for field, line in [("origin", self.origin), *(("extensions", e) for e in self.extensions)]:
            if not line or "\n" in line or not _text_ok(line):
                raise CheckpointError(f"{field} lines must be non-empty, without control characters", field=field)
            try:
                line.encode("utf-8")
            except UnicodeEncodeError as e:
                raise CheckpointError(f"{field} is not encodable as UTF-8", field=field) from e
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise CheckpointError(f"size {self.size} outside 0..{MAX_TREE_SIZE}", field="size")
        if len(self.root) != 32:
            raise CheckpointError("root must be a 32-byte SHA-256 hash", field="root")

    def body(self) -> bytes:
        """The exact note text that is signed: one newline-terminated line per field."""
        lines = [self.origin, str(self.size), _b64encode(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines).encode("utf-8")

    @classmethod
    def parse(cls, body: bytes) -> Checkpoint:
        """Parse a checkpoint body strictly; `parse(c.body()) == c`. Raises CheckpointError."""
        text = _decode_note_text(body, CheckpointError, "checkpoint")
        if not text.endswith("\n"):
            raise CheckpointError("checkpoint must end with a newline", field="checkpoint")
        lines = text[:-1].split("\n")
        if len(lines) < 3 or not all(lines):
            raise CheckpointError("checkpoint needs at least three non-empty lines", field="checkpoint")
        origin, size_text, root_text, *extensions = lines
        # ASCII digits only, no sign, no leading zero: int() alone would take "+1", "٣" or "1_0".
        if not _SIZE_RE.fullmatch(size_text) or len(size_text) > 20:
            raise CheckpointError("size must be a decimal number without leading zeros", field="size")
        root = _b64decode(root_text, error=CheckpointError, field="root")
        return cls(origin, int(size_text), root, tuple(extensions))


# --- signed notes -------------------------------------------------------------------------------


def note_key_id(name: str, pubkey_raw: bytes, sig_type: int = SIG_ED25519) -> bytes:
    """The 4-byte key id: SHA-256(name ‖ 0x0A ‖ sig_type ‖ pubkey)[:4]."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([sig_type]) + pubkey_raw).digest()[:4]


def _valid_name(name: str) -> bool:
    """Non-empty, no Unicode White_Space, no '+', no control character, and encodable as UTF-8."""
    if not name or "+" in name or any(c in _WHITE_SPACE or "\ud800" <= c <= "\udfff" for c in name):
        return False
    return _text_ok(name)


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: key name, 4-byte key id, and the signature bytes that follow the id."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> bytes:
        """`— <name> base64(key_id ‖ signature)\\n`."""
        return _EM_DASH_PREFIX + f"{self.name} {_b64encode(self.key_id + self.signature)}\n".encode()


@dataclass(frozen=True, slots=True)
class VerifiedNote:
    """A note whose body verified under at least one known key."""

    body: bytes
    signatures: tuple[NoteSignature, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Key names whose signatures verified, in note order."""
        return tuple(s.name for s in self.signatures)


def _parse_signature_line(line: bytes) -> NoteSignature:
    if not line.startswith(_EM_DASH_PREFIX):
        raise NoteError("signature line must start with an em dash and a space", field="signature")
    try:
        rest = line[len(_EM_DASH_PREFIX) :].decode("utf-8")
    except UnicodeDecodeError as e:
        raise NoteError("signature line is not valid UTF-8", field="signature") from e
    name, _, b64 = rest.partition(" ")
    if not _valid_name(name) or not b64:
        raise NoteError("signature line has a malformed key name", field="signature")
    raw = _b64decode(b64, error=NoteError, field="signature")
    if len(raw) < 5:
        raise NoteError("signature is shorter than a key id", field="signature")
    return NoteSignature(name, raw[:4], raw[4:])


def _split_note(text: bytes) -> tuple[bytes, list[NoteSignature]]:
    """Structure only (sumdb/note `Open` before verification); raises NoteError."""
    _decode_note_text(text, NoteError, "note")
    split = text.rfind(b"\n\n")
    if split < 0:
        raise NoteError("note has no blank line before its signatures", field="note")
    body, sig_block = text[: split + 1], text[split + 2 :]
    if not sig_block.endswith(b"\n"):
        raise NoteError("note must end with a signature line and a newline", field="note")
    lines = sig_block[:-1].split(b"\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has more than {MAX_SIGNATURES} signatures", field="note")
    return body, [_parse_signature_line(line) for line in lines]


def note_signatures(text: bytes) -> list[NoteSignature]:
    """Every signature line of a note, known key or not, in note order (structure only, nothing
    verified); raises NoteError if the note is malformed."""
    return _split_note(text)[1]


def open_note(text: bytes, verifiers: Iterable[NoteVerifier]) -> VerifiedNote:
    """Verify a signed note against known keys and return its body.

    Signatures from unknown (name, key id) pairs are ignored; every signature from a known key
    must verify, and at least one must. Identical repeated lines count once. The caller decides
    whose signatures it needs from `VerifiedNote.names`. Raises NoteError if malformed,
    NoteSignatureError if a known key's signature fails or none is known.
    """
    body, signatures = _split_note(text)
    known: dict[tuple[str, bytes], list[NoteVerifier]] = {}
    for v in verifiers:
        known.setdefault((v.name, v.key_id), []).append(v)

    verified: list[NoteSignature] = []
    for sig in signatures:
        candidates = known.get((sig.name, sig.key_id))
        if candidates is None or sig in verified:
            continue
        if len(candidates) > 1:
            raise NoteError(f"ambiguous key {sig.name}+{sig.key_id.hex()}", field="verifiers")
        if not candidates[0].verify(body, sig.signature):
            raise NoteSignatureError(f"invalid signature for key {sig.name}+{sig.key_id.hex()}", field="note")
        verified.append(sig)
    if not verified:
        raise NoteSignatureError("note has no verifiable signatures", field="note")
    return VerifiedNote(body, tuple(verified))


def _check_body(body: bytes) -> None:
    _decode_note_text(body, NoteError, "body")
    if not body.endswith(b"\n"):
        raise NoteError("note body must end with a newline", field="body")


def _check_signer_name(name: str) -> None:
    if not _valid_name(name):
        raise NoteError("key name must be non-empty, without spaces or '+'", field="name")


def sign_note(body: bytes, name: str, signer: Signer) -> bytes:
    """Sign `body` (which must end with a newline) as key `name`: returns the whole note text."""
    _check_body(body)
    _check_signer_name(name)
    sig = NoteSignature(name, note_key_id(name, signer.public_raw), _ed25519_sign(signer, body))
    return body + b"\n" + sig.line()


def _ed25519_sign(signer: Signer, message: bytes) -> bytes:
    sig = signer.sign(message)
    if len(sig) != 64 or len(signer.public_raw) != 32:
        raise ValueError("signer is not an Ed25519 key (want a 32-byte key and 64-byte signatures)")
    return sig


def _parse_one_line(line: bytes) -> NoteSignature:
    if line.count(b"\n") != 1 or not line.endswith(b"\n"):
        raise NoteError("expected exactly one newline-terminated signature line", field="signature")
    _decode_note_text(line, NoteError, "signature")
    return _parse_signature_line(line[:-1])


def append_signature(note: bytes, line: bytes) -> bytes:
    """Add one signature line (e.g. a witness cosignature) to a note.

    Raises NoteError if the note or the line is malformed, or the note is full.
    """
    _, signatures = _split_note(note)
    _parse_one_line(line)
    if len(signatures) >= MAX_SIGNATURES:
        raise NoteError(f"note already has {MAX_SIGNATURES} signatures", field="note")
    return note + line


class _Ed25519Key:
    def __init__(self, name: str, public_raw: bytes, sig_type: int) -> None:
        if not _valid_name(name):
            raise NoteError("key name must be non-empty, without spaces or '+'", field="name")
        if len(public_raw) != 32:
            raise NoteError("Ed25519 public key must be 32 bytes", field="public_key")
        self._name = name
        self._key_id = note_key_id(name, public_raw, sig_type)
        try:
            self._key = Ed25519PublicKey.from_public_bytes(public_raw)
        except ValueError as e:
            raise NoteError("not an Ed25519 public key", field="public_key") from e
        self.public_raw = public_raw

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> bytes:
        return self._key_id

    def _ed25519_ok(self, message: bytes, signature: bytes) -> bool:
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


class Ed25519NoteVerifier(_Ed25519Key):
    """A log key (signature type 0x01): Ed25519 over the note body."""

    def __init__(self, name: str, public_raw: bytes) -> None:
        super().__init__(name, public_raw, SIG_ED25519)

    def verify(self, body: bytes, signature: bytes) -> bool:
        return len(signature) == 64 and self._ed25519_ok(body, signature)


def cosignature_message(checkpoint_body: bytes, timestamp: int) -> bytes:
    """The bytes a witness signs: `cosignature/v1\\ntime <ts>\\n` followed by the checkpoint body."""
    return b"cosignature/v1\ntime %d\n" % timestamp + checkpoint_body


class CosignatureVerifier(_Ed25519Key):
    """A witness key (signature type 0x04): timestamped Ed25519 cosignatures of checkpoints."""

    def __init__(self, name: str, public_raw: bytes) -> None:
        super().__init__(name, public_raw, SIG_COSIGNATURE_V1)

    def verify(self, body: bytes, signature: bytes) -> bool:
        if len(signature) != 8 + 64:
            return False
        timestamp = int.from_bytes(signature[:8], "big")
        if timestamp > MAX_COSIGNATURE_TIME:
            return False
        return self._ed25519_ok(cosignature_message(body, timestamp), signature[8:])


def cosign(checkpoint_body: bytes, witness_name: str, signer: Signer, timestamp: int) -> bytes:
    """Witness-sign a checkpoint at POSIX `timestamp`; returns the signature line to append."""
    Checkpoint.parse(checkpoint_body)  # a witness vouches for checkpoints only
    _check_signer_name(witness_name)
    if not 0 <= timestamp <= MAX_COSIGNATURE_TIME:
        raise NoteError(f"timestamp {timestamp} outside 0..2^63-1", field="timestamp")
    sig = _ed25519_sign(signer, cosignature_message(checkpoint_body, timestamp))
    key_id = note_key_id(witness_name, signer.public_raw, SIG_COSIGNATURE_V1)
    return NoteSignature(witness_name, key_id, timestamp.to_bytes(8, "big") + sig).line()


def cosignature_timestamp(signature: NoteSignature) -> int:
    """The POSIX time inside a cosignature; raises NoteError if it is not one."""
    if len(signature.signature) != 8 + 64:
        raise NoteError("not an Ed25519 cosignature", field="signature")
    return int.from_bytes(signature.signature[:8], "big")


def verify_cosignature(checkpoint_body: bytes, line: bytes, witness_name: str, witness_public_raw: bytes) -> int:
    """Check one cosignature line over a checkpoint body; returns its timestamp.

    Raises NoteError if the line is malformed, NoteSignatureError if it is not by this witness
    key or does not verify.
    """
    verifier = CosignatureVerifier(witness_name, witness_public_raw)
    sig = _parse_one_line(line)
    if (sig.name, sig.key_id) != (verifier.name, verifier.key_id):
        raise NoteSignatureError(f"not a cosignature by {witness_name}+{verifier.key_id.hex()}", field="signature")
    if not verifier.verify(checkpoint_body, sig.signature):
        raise NoteSignatureError(f"invalid cosignature by {witness_name}", field="signature")
    return cosignature_timestamp(sig)


# --- verifier keys ------------------------------------------------------------------------------


def format_vkey(name: str, public_raw: bytes, sig_type: int = SIG_ED25519) -> str:
    """The signed-note verifier key text `<name>+<hex key id>+base64(type ‖ public key)`."""
    return f"{name}+{note_key_id(name, public_raw, sig_type).hex()}+{_b64encode(bytes([sig_type]) + public_raw)}"


def parse_vkey(vkey: str) -> Ed25519NoteVerifier | CosignatureVerifier:
    """Parse a verifier key of type 0x01 (log) or 0x04 (witness); raises NoteError."""
    name, _, rest = vkey.partition("+")
    key_id_hex, _, key_b64 = rest.partition("+")
    if not re.fullmatch(r"[0-9a-f]{8}", key_id_hex) or not _valid_name(name):
        raise NoteError("verifier key must be <name>+<8 hex digits>+<base64>", field="vkey")
    raw = _b64decode(key_b64, error=NoteError, field="vkey")
    if len(raw) != 33 or raw[0] not in (SIG_ED25519, SIG_COSIGNATURE_V1):
        raise NoteError("verifier key must be an Ed25519 key of type 0x01 or 0x04", field="vkey")
    verifier = (Ed25519NoteVerifier if raw[0] == SIG_ED25519 else CosignatureVerifier)(name, raw[1:])
    if verifier.key_id.hex() != key_id_hex:
        raise NoteError("verifier key id does not match its name and key", field="vkey")
    return verifier
