"""Replay and ordering rules (G4), in one place: skew window, dedupe decisions, sequence gaps.

The store applies these decisions inside the transaction that writes the inbox row, so the
high-water mark and the dedupe record can never disagree.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Final

from .errors import ReplayError

DEFAULT_SKEW_SECONDS: Final = 300.0


def check_skew(sent_at: dt.datetime, now: dt.datetime, window_seconds: float) -> None:
    """Refuse an envelope whose `sent_at` is more than the window away from our clock."""
    delta = (sent_at - now).total_seconds()
    if not abs(delta) <= window_seconds:  # written so that a NaN window admits nothing
        direction = "ahead of" if delta > 0 else "behind"
        raise ReplayError(
            f"sent_at is {abs(delta):.0f} s {direction} this gateway's clock (window ±{window_seconds:.0f} s)",
            code="replay.skew",
            field="header.sent_at",
            status=409,
        )


class Arrival(enum.Enum):
    """What an incoming (sender, id) is, given what the inbox already holds."""

    NEW = "new"
    DUPLICATE = "duplicate"  # same id, same signed-document digest: answer the original receipt
    CONFLICT = "conflict"  # same id, different digest: refuse and alert


def classify(stored_digest: bytes | None, digest: bytes) -> Arrival:
    if stored_digest is None:
        return Arrival.NEW
    if stored_digest == digest:
        return Arrival.DUPLICATE
    return Arrival.CONFLICT


def conflict_error() -> ReplayError:
    return ReplayError(
        "message id already received with a different document",
        code="replay.conflict",
        field="header.id",
        status=409,
    )


def seq_reused_error(seq: int, held_id: str) -> ReplayError:
    """A sequence number the sender already used for another message: a restored or forked
    sender reusing numbers (DESIGN §11). Refused, audit-logged and alerted, never accepted."""
    return ReplayError(
        f"sequence number {seq} was already used by message {held_id}",
        code="replay.seq_reused",
        field="header.seq",
        status=409,
    )


@dataclass(frozen=True)
class SequenceUpdate:
    """The new per-peer high-water mark and the gap (if any) that this arrival reveals."""

    high_water: int
    gap_from: int | None = None  # first missing seq
    gap_to: int | None = None  # last missing seq


def advance_sequence(high_water: int, seq: int) -> SequenceUpdate:
    """Sequence numbers start at 1; anything beyond high_water+1 reveals missing numbers."""
    if seq <= high_water:
        return SequenceUpdate(high_water)  # late or re-ordered arrival: not a gap, nothing moves
    if seq == high_water + 1:
        return SequenceUpdate(seq)
    return SequenceUpdate(seq, high_water + 1, seq - 1)
