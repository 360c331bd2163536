"""Witnessing the peer's log (C2SP tlog-witness): parse a cosign request, decide, cosign.

The peer sends `old N`, the consistency proof lines from N to its new checkpoint, a blank line
and the signed checkpoint note. We cosign only a checkpoint that is signed by the peer's log key
and consistent with the last one we cosigned; the store then persists the new state only if it
still holds size N (check-and-persist, so two concurrent requests cannot both advance it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from .bundle import KeyRecord
from .checkpoint import Checkpoint, Ed25519NoteVerifier, NoteError, Signer, cosign, open_note
from .encoding import b64url, unb64url
from .errors import Conflict, DecodeError, GatewayError
from .merkle import ProofError, verify_consistency

MAX_PROOF_LINES: Final = 64
MEDIA_TYPE: Final = "text/x.tlog.cosign-request"


class ForkError(GatewayError):
    """Two different roots for one size, or an inconsistent proof: the log was rewritten."""

    code = "witness.fork"
    status = 409


@dataclass(frozen=True)
class CosignRequest:
    old_size: int
    proof: tuple[bytes, ...]
    note: bytes
    checkpoint: Checkpoint


def encode_request(old_size: int, proof: Iterable[bytes], note: bytes) -> bytes:
    lines = [f"old {old_size}".encode()]
    lines += [b64url(p).encode() for p in proof]
    return b"\n".join(lines) + b"\n\n" + note


def parse_request(raw: bytes, origin: str, log_keys: Iterable[KeyRecord], now: dt.datetime) -> CosignRequest:
    """Parse and verify a cosign request for the log `origin`, signed by one of its signing keys
    valid `now` (a revoked or expired key's checkpoint is never cosigned); raises DecodeError/NoteError."""
    head, sep, note = raw.partition(b"\n\n")
    if not sep:
        raise DecodeError("cosign request needs a blank line before the checkpoint", field="body")
    lines = head.split(b"\n")
    first = lines[0].decode("ascii", "replace")
    if not first.startswith("old ") or not first[4:].isdigit() or (first[4:] != "0" and first[4] == "0"):
        raise DecodeError("cosign request must start with 'old <size>'", field="old")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise DecodeError("consistency proof is too long", field="proof")
    proof = tuple(unb64url(p.decode("ascii", "replace"), field="proof") for p in lines[1:])
    verifiers = [
        Ed25519NoteVerifier(origin, k.public) for k in log_keys if k.use == "signing" and k.valid_at(now) is None
    ]
    verified = open_note(note, verifiers)
    if origin not in verified.names:
        raise NoteError("checkpoint is not signed by the peer's log key", code="audit.signature_invalid", status=403)
    cp = Checkpoint.parse(verified.body)
    if cp.origin != origin:
        raise NoteError(f"checkpoint origin {cp.origin!r} is not {origin!r}", code="audit.checkpoint_invalid")
    return CosignRequest(int(first[4:]), proof, note, cp)


def check_advance(req: CosignRequest, stored_size: int, stored_root: bytes | None) -> None:
    """Decide whether the witness may move from (stored_size, stored_root) to the request's
    checkpoint. Raises Conflict (409, size mismatch), ForkError (409) or ProofError (422)."""
    cp = req.checkpoint
    if req.old_size != stored_size:
        raise Conflict(f"witness holds size {stored_size}", code="witness.size_mismatch", field="old")
    if cp.size < stored_size:
        raise Conflict(f"checkpoint size {cp.size} is older than {stored_size}", code="witness.size_mismatch")
    if cp.size == stored_size:
        if stored_root is not None and cp.root != stored_root:
            raise ForkError(f"a second root for size {cp.size}: the log forked")
        if req.proof:
            raise ProofError("no proof is expected between equal sizes")
        return
    if stored_size == 0:
        if req.proof:
            raise ProofError("no proof is expected from an empty tree")
        return
    assert stored_root is not None
    try:
        verify_consistency(stored_size, cp.size, list(req.proof), stored_root, cp.root)
    except ProofError as e:
        raise ProofError(f"checkpoint is not consistent with the one cosigned at size {stored_size}: {e.detail}") from e


def cosign_line(req: CosignRequest, name: str, signer: Signer, at: dt.datetime) -> bytes:
    """The cosignature line to return (C2SP tlog-cosignature, timestamp in whole seconds)."""
    return cosign(req.checkpoint.body(), name, signer, int(at.timestamp()))
