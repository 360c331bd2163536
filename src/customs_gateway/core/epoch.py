"""Log epochs (DESIGN §11): how a log restored from a backup continues without hiding anything.

A restored log has lost the entries after its backup, but its peer has cosigned some of them.
Continuing under the same origin would look like a fork (two different trees of one log), and
quietly rewriting would hide the loss. So recovery starts a new **epoch**: the same tree goes on
under a new checkpoint origin (`customs-gateway/<ID>/audit/epoch-<N>`), and its first entry, kind
`log_epoch`, records the origin it follows, the last checkpoint of that origin the peer cosigned
(as the peer reported it), the size the log was restored to and the reason.

The peer's witness accepts the new origin only with that entry, proven into a checkpoint of the
new origin signed by the log key, and naming exactly the checkpoint the witness last cosigned; it
then keeps the old origin's state frozen (`check_epoch`). An auditor's verifier accepts a
checkpoint origin only as the `log_epoch` entries before it declare (`origin_at`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from .audit import AuditEntry, log_origin
from .checkpoint import Checkpoint
from .errors import GatewayError
from .merkle import ProofError, leaf_hash, verify_inclusion

KIND: Final = "log_epoch"
_EPOCH_RE: Final = re.compile(r"/epoch-([1-9][0-9]{0,5})\Z")


class EpochError(GatewayError):
    """An epoch change that does not follow from what the witness holds."""

    code = "witness.epoch_invalid"
    status = 409


def epoch_origin(identity: str, epoch: int) -> str:
    """The checkpoint origin of `identity`'s log in epoch `epoch` (0: the original origin)."""
    base = log_origin(identity)
    return base if epoch == 0 else f"{base}/epoch-{epoch}"


def epoch_of(origin: str, identity: str) -> int | None:
    """The epoch number of `origin` if it is an origin of `identity`'s log, else None."""
    base = log_origin(identity)
    if origin == base:
        return 0
    if not origin.startswith(base):
        return None
    m = _EPOCH_RE.fullmatch(origin[len(base) :])
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class EpochStart:
    """What a `log_epoch` entry declares."""

    origin: str
    previous_origin: str
    previous_size: int  # the last checkpoint of the previous origin the peer cosigned (0: none)
    previous_root: str  # its root, hex ("" with size 0)
    restored_size: int
    reason: str


def epoch_detail(start: EpochStart) -> dict[str, Any]:
    return {
        "origin": start.origin,
        "previous_origin": start.previous_origin,
        "previous_cosigned": {"size": start.previous_size, "root": start.previous_root},
        "restored_size": start.restored_size,
        "reason": start.reason,
    }


def read_epoch(entry: AuditEntry) -> EpochStart:
    """The declaration of a `log_epoch` entry; raises EpochError if it is not a well-formed one."""
    d = entry.detail
    try:
        if entry.kind != KIND:
            raise TypeError(f"entry kind is {entry.kind!r}")
        prev = d["previous_cosigned"]
        start = EpochStart(
            str(d["origin"]),
            str(d["previous_origin"]),
            int(prev["size"]),
            str(prev["root"]),
            int(d["restored_size"]),
            str(d["reason"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise EpochError(f"not a well-formed log_epoch entry: {e}", field="entry") from e
    if start.previous_size < 0 or start.restored_size < 0 or not start.reason:
        raise EpochError("a log_epoch entry needs sizes and a reason", field="entry")
    return start


def check_epoch(
    *,
    identity: str,
    entry_bytes: bytes,
    index: int,
    proof: Sequence[bytes],
    checkpoint: Checkpoint,
    held_origin: str,
    held_size: int,
    held_root: bytes | None,
) -> EpochStart:
    """The witness's decision on a new epoch of `identity`'s log. `checkpoint` (of the new origin,
    already verified under the log's key) must include the `log_epoch` entry at `index`; the entry
    must follow the origin the witness holds and name exactly the checkpoint it cosigned last
    (`held_size`, `held_root`; size 0 when it never cosigned one)."""
    now_epoch = epoch_of(held_origin, identity)
    new_epoch = epoch_of(checkpoint.origin, identity)
    if now_epoch is None or new_epoch != now_epoch + 1:
        raise EpochError(
            f"checkpoint origin {checkpoint.origin!r} is not the epoch after {held_origin!r}", field="note"
        )
    if not 0 <= index < checkpoint.size:
        raise EpochError(f"entry index {index} is not inside the checkpoint of size {checkpoint.size}", field="index")
    try:
        verify_inclusion(leaf_hash(entry_bytes), index, checkpoint.size, proof, checkpoint.root)
    except ProofError as e:
        raise EpochError(f"the log_epoch entry is not in the checkpoint: {e.detail}", field="proof") from e
    try:
        entry = AuditEntry.from_bytes(entry_bytes)
    except (GatewayError, ValueError) as e:
        raise EpochError(f"the entry is not an audit entry: {e}", field="entry") from e
    start = read_epoch(entry)
    if start.origin != checkpoint.origin or start.previous_origin != held_origin:
        raise EpochError(
            f"the entry declares {start.previous_origin!r} -> {start.origin!r}, "
            f"not {held_origin!r} -> {checkpoint.origin!r}",
            field="entry",
        )
    held_root_hex = held_root.hex() if held_root is not None else ""
    if (start.previous_size, start.previous_root) != (held_size, held_root_hex):
        raise EpochError(
            f"the entry names cosigned checkpoint {start.previous_size} of the old epoch, but this witness "
            f"cosigned {held_size}: the loss must be declared exactly",
            field="entry",
        )
    return start


def note_origin(note: bytes) -> str:
    """The origin (first line) of a checkpoint note."""
    return note.split(b"\n", 1)[0].decode("utf-8", "replace")


def origin_at(epochs: Sequence[tuple[int, str]], base: str, size: int) -> str:
    """The origin in force for a checkpoint of `size`: that of the last `log_epoch` entry before
    it (`epochs`: (entry index, origin) in log order), else the log's first origin."""
    origin = base
    for index, o in epochs:
        if index < size:
            origin = o
    return origin
