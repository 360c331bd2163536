"""Disposal and legal holds (DESIGN §12 "Retention and disposal", issue 18): what both stores share.

A message is **due** once its retention day (`retain_until`) has passed (UTC), unless it is
still being delivered or one of our legal holds is active on it. Disposing of it blanks its
sealed columns (signed document, body, ciphertext, an ack's reason), drops its reference tags
and the free text of consent records about it, and stamps `disposed_at`, in one transaction with
its `disposed` audit entry; header, digests, receipts and audit entries stay. Its day key is
destroyed once no row of that day is left (`service.disposal`).

A hold of origin "ours" keeps a message past its day: its values are sealed again under the
hold's own key (`core.atrest` version 2). A hold of origin "peer" records the peer's signed
`legal-hold` notice about a message we exchanged: shown, not enforced (our retention is ours).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Final

from ..core.encoding import json_bytes, json_object
from ..core.errors import Conflict, NotFound
from .base import Hold
from .sealed import SEALED_REASON, SealedColumns

#: The holds table's columns in `Hold` order.
HOLD_COLS: Final = (
    "message_id, origin, direction, reason, placed_by, placed_at, hold_id, notice_id, released_at, released_by,"
    " release_reason"
)


def hold_from_row(r: Sequence[Any], ts: Callable[[Any], dt.datetime]) -> Hold:
    return Hold(
        message_id=r[0],
        origin=r[1],
        direction=r[2],
        reason=r[3],
        placed_by=r[4],
        placed_at=ts(r[5]),
        hold_id=None if r[6] is None else bytes.fromhex(r[6]),
        notice_id=r[7],
        released_at=None if r[8] is None else ts(r[8]),
        released_by=r[9],
        release_reason=r[10],
    )


def disposed_ack(raw: bytes | None) -> bytes | None:
    """A message's `ack` column once the message is disposed of: the ack's sealed free-text
    reason goes with the document; status, ack id and digest stay."""
    if raw is None:
        return None
    ack = json_object(bytes(raw))
    if SEALED_REASON not in ack:
        return bytes(raw)
    return json_bytes({k: v for k, v in ack.items() if k != SEALED_REASON})


#: A message's sealed values as a hold re-seals them, and how they are written back ($n parameters).
HOLD_OUT_SQL: Final = "SELECT signed_document, ciphertext, ack, disposed_at, retain_until FROM messages WHERE id=$1"
HOLD_IN_SQL: Final = "SELECT signed_document, body, disposed_at, retain_until FROM inbox WHERE id=$1"
_HELD_OUT_SQL: Final = "UPDATE messages SET signed_document=$1, ciphertext=$2, ack=$3 WHERE id=$4"
_HELD_IN_SQL: Final = "UPDATE inbox SET signed_document=$1, body=$2 WHERE id=$3"


def held_row(
    hold: Hold,
    out: Sequence[Any] | None,
    inb: Sequence[Any] | None,
    current: Hold | None,
    sealed: SealedColumns | None,
) -> tuple[Hold, str | None, tuple[Any, ...]]:
    """Placing `hold` on the row found (`out`: HOLD_OUT_SQL's, else `inb`: HOLD_IN_SQL's): the
    hold as placed, and the UPDATE (None: nothing sealed to move) with its parameters that seal
    the row's values again under the hold's key. Raises NotFound / Conflict."""
    found = out if out is not None else inb
    check_holdable(hold.message_id, found is not None, found is not None and found[-2] is not None, current)
    assert found is not None and hold.hold_id is not None
    placed = replace(hold, direction="outbound" if out is not None else "inbound")
    if sealed is None:
        return placed, None, ()
    if found[-1] is None:
        raise Conflict(
            f"message {hold.message_id} is not sealed at rest yet (the start-up backfill is running): retry",
            code="hold.not_sealed",
            field="message_id",
        )
    mid, hid = hold.message_id, hold.hold_id
    if out is not None:
        v = sealed.held("messages", mid, {"signed_document": bytes(out[0]), "ciphertext": _opt(out[1])}, hid)
        ack = sealed.held_ack(None if out[2] is None else json_object(bytes(out[2])), mid, hid)
        return (
            placed,
            _HELD_OUT_SQL,
            (v["signed_document"], v["ciphertext"], None if ack is None else json_bytes(ack), mid),
        )
    assert inb is not None
    v = sealed.held("inbox", mid, {"signed_document": bytes(inb[0]), "body": bytes(inb[1])}, hid)
    return placed, _HELD_IN_SQL, (v["signed_document"], v["body"], mid)


def _opt(v: Any) -> bytes | None:
    return None if v is None else bytes(v)


def check_holdable(message_id: str, found: bool, disposed: bool, current: Hold | None) -> None:
    """Why a hold cannot be placed on `message_id` (raises), or nothing."""
    if not found:
        raise NotFound(f"no message {message_id} (sent or received)", code="hold.not_found", field="message_id")
    if disposed:
        raise Conflict(
            f"message {message_id} was disposed of already: there is nothing left to hold",
            code="hold.disposed",
            field="message_id",
        )
    if current is not None and current.active:
        raise Conflict(
            f"message {message_id} is already under legal hold (placed {current.placed_at.isoformat()})",
            code="hold.exists",
            field="message_id",
        )


def check_releasable(message_id: str, current: Hold | None) -> Hold:
    if current is None or not current.active:
        raise NotFound(f"message {message_id} is not under a legal hold of ours", code="hold.not_found", field="id")
    return current
