"""Log epochs, driven directly (core.epoch): the witness takes a new epoch only when its first
entry is in the new checkpoint and names exactly what the witness cosigned; every way to hide a
loss or skip ahead is refused."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from customs_gateway.core.audit import AuditEntry, log_origin
from customs_gateway.core.checkpoint import Checkpoint
from customs_gateway.core.epoch import (
    EpochError,
    EpochStart,
    check_epoch,
    epoch_detail,
    epoch_of,
    epoch_origin,
    note_origin,
    origin_at,
)
from customs_gateway.core.merkle import inclusion_proof, leaf_hash, root_from_leaves

US = "US-CBP"
BASE = log_origin(US)
T = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
HELD_ROOT = bytes(range(32))


def _entry(**over: object) -> bytes:
    start = EpochStart(
        origin=epoch_origin(US, 1),
        previous_origin=BASE,
        previous_size=20,
        previous_root=HELD_ROOT.hex(),
        restored_size=12,
        reason="restored from backup",
    )
    start = dataclasses.replace(start, **over)  # type: ignore[arg-type]
    return AuditEntry(at=T, kind="log_epoch", actor="token:1", peer="CN-GACC", detail=epoch_detail(start)).to_bytes()


def _log(epoch_entry: bytes, index: int = 12, size: int = 16) -> tuple[list[bytes], Checkpoint]:
    leaves = [leaf_hash(b"entry %d" % i) for i in range(size)]
    leaves[index] = leaf_hash(epoch_entry)
    return leaves, Checkpoint(epoch_origin(US, 1), size, root_from_leaves(leaves))


def _check(
    entry: bytes, *, index: int = 12, held_size: int = 20, held_root: bytes | None = HELD_ROOT, **kw: object
) -> EpochStart:
    leaves, cp = _log(entry, index)
    args: dict[str, object] = {
        "identity": US,
        "entry_bytes": entry,
        "index": index,
        "proof": inclusion_proof(leaves, index, cp.size),
        "checkpoint": cp,
        "held_origin": BASE,
        "held_size": held_size,
        "held_root": held_root,
    }
    args.update(kw)
    return check_epoch(**args)  # type: ignore[arg-type]


def test_origins() -> None:
    assert epoch_origin(US, 0) == BASE and epoch_origin(US, 3) == BASE + "/epoch-3"
    assert epoch_of(BASE, US) == 0 and epoch_of(BASE + "/epoch-12", US) == 12
    for bad in (BASE + "/epoch-0", BASE + "/epoch-01", BASE + "/epoch-x", log_origin("CN-GACC"), BASE + "/epoch-1/"):
        assert epoch_of(bad, US) is None
    assert note_origin(b"customs-gateway/US-CBP/audit/epoch-1\n5\nAAAA\n") == BASE + "/epoch-1"
    epochs = [(12, BASE + "/epoch-1"), (40, BASE + "/epoch-2")]
    assert origin_at(epochs, BASE, 12) == BASE  # the entry at 12 is not inside a checkpoint of 12
    assert origin_at(epochs, BASE, 13) == BASE + "/epoch-1"
    assert origin_at(epochs, BASE, 41) == BASE + "/epoch-2"


def test_a_faithful_epoch_is_accepted() -> None:
    start = _check(_entry())
    assert (start.previous_size, start.restored_size, start.reason) == (20, 12, "restored from backup")


@pytest.mark.parametrize(
    ("entry_over", "kw", "why"),
    [
        ({"previous_size": 11}, {}, "hides part of the cosigned log"),
        ({"previous_root": "00" * 32}, {}, "names another root"),
        ({"previous_origin": BASE + "/epoch-7"}, {}, "follows an origin the witness does not hold"),
        ({"origin": epoch_origin(US, 2)}, {}, "declares another origin than its checkpoint"),
        ({}, {"held_origin": BASE + "/epoch-1"}, "the checkpoint's epoch is not the next one"),
        ({}, {"held_size": 0, "held_root": None}, "witness never cosigned: must say so"),
    ],
)
def test_epochs_that_do_not_follow_are_refused(entry_over: dict[str, object], kw: dict[str, object], why: str) -> None:
    with pytest.raises(EpochError):
        _check(_entry(**entry_over), **kw)


def test_the_entry_must_be_in_the_checkpoint() -> None:
    entry = _entry()
    leaves, cp = _log(entry)
    with pytest.raises(EpochError):  # a proof for another index
        check_epoch(
            identity=US,
            entry_bytes=entry,
            index=12,
            proof=inclusion_proof(leaves, 11, cp.size),
            checkpoint=cp,
            held_origin=BASE,
            held_size=20,
            held_root=HELD_ROOT,
        )
    with pytest.raises(EpochError):  # an entry that is not the one in the tree
        other = _entry(reason="something else")
        check_epoch(
            identity=US,
            entry_bytes=other,
            index=12,
            proof=inclusion_proof(leaves, 12, cp.size),
            checkpoint=cp,
            held_origin=BASE,
            held_size=20,
            held_root=HELD_ROOT,
        )
    with pytest.raises(EpochError):  # index outside the checkpoint
        _check(entry, index=12, checkpoint=dataclasses.replace(cp, size=12))


def test_an_epoch_that_never_cosigned_before_says_zero() -> None:
    start = _check(_entry(previous_size=0, previous_root=""), held_size=0, held_root=None)
    assert start.previous_size == 0
