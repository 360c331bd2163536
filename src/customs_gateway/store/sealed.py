"""Sealed columns (DESIGN §12 "At rest", issue 18): what both stores seal before a write and open after a read.

The sensitive columns — `messages.signed_document`, `messages.ciphertext`, `inbox.signed_document`,
`inbox.body` — are sealed (`core.atrest`) under the day key of the row's `retain_until`, in the
calling task before the value enters a write transaction (the transaction code stays as it was),
and opened as rows come back, so every reader (views, delivery, crypto workers, evidence, audit
export, console) sees the plain bytes. A row's `retain_until` column is set exactly when its
values are sealed: NULL marks a row stored in clear before this version (the start-up backfill
seals those, `Gateway.backfill_sealing`).

Control messages (`ack`, `key-announcement`) carry no handling terms; they are sealed all the same
(an ack may carry a back-end's free-text reason) under the day key of their creation day plus
CONTROL_RETENTION_DAYS, so one rule covers every row and a scan of the files finds no body at all.
For the same reason the free-text `reason` an ack carries is sealed where it is copied into our
message's `ack` column (key SEALED_REASON, under the ack's day, context `messages.ack_reason`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Final, Protocol

from ..core.atrest import Disposed
from ..core.consent import ConsentEvent, ConsentRecord
from ..core.encoding import b64url, unb64url
from .base import AttemptOutcome, ClearRow, Evidence, InboxItem, Incoming, NewMessage, OutMessage

#: The key of an ack's sealed free-text reason in a message's `ack` column (base64url).
SEALED_REASON: Final = "reason_sealed"
#: The prefix of a sealed free-text value in the consents table (TEXT columns): base64url follows.
SEALED_TEXT: Final = "sealed:"
#: A consent record's free text once its key is gone.
DISPOSED_TEXT: Final = ""
#: How long a control message (no handling terms) is kept: a year and a day after it was made.
CONTROL_RETENTION_DAYS: Final = 366


class DayKeyring(Protocol):
    """Seals under, and opens with, the key of a day (`startup.daykeys.DayKeys`)."""

    def seal(self, day: dt.date, context: bytes, plaintext: bytes) -> bytes: ...

    def open(self, context: bytes, blob: bytes) -> bytes: ...

    def seal_held(self, hold_id: bytes, context: bytes, plaintext: bytes) -> bytes: ...


def context(column: str, message_id: str) -> bytes:
    """The associated context of one column of one row: `table.column` ‖ 0x00 ‖ message id."""
    return column.encode() + b"\x00" + message_id.encode()


def retention_day(retain_until: dt.date | None, created_at: dt.datetime) -> dt.date:
    """The day whose key seals a message: its terms' `retain_until`, or for a control message
    its creation day (UTC) plus CONTROL_RETENTION_DAYS."""
    if retain_until is not None:
        return retain_until
    return created_at.astimezone(dt.timezone.utc).date() + dt.timedelta(days=CONTROL_RETENTION_DAYS)


class SealedColumns:
    """Seals rows on their way into a store and opens them on their way out.

    Raises `core.atrest.AtRestError` for a sealed value that does not open (moved, modified,
    another store key) and `core.atrest.Disposed` once its day key was destroyed."""

    def __init__(self, keys: DayKeyring) -> None:
        self.keys = keys

    # --- writes --------------------------------------------------------------------------
    def new_message(self, msg: NewMessage) -> NewMessage:
        day = retention_day(msg.retain_until, msg.created_at)
        sealed = self.keys.seal(day, context("messages.signed_document", msg.id), msg.signed_document)
        consent = None if msg.consent is None else self.consent_event(msg.consent, day)
        return dataclasses.replace(msg, signed_document=sealed, retain_until=day, consent=consent)

    def consent_event(self, ev: ConsentEvent, day: dt.date) -> ConsentEvent:
        """A consent request's or decision's free text (the authority or proceeding, the reason,
        the conditions) sealed under the day of the message that carries it, for the consents
        table (`SEALED_TEXT` + base64url)."""
        columns = {"party": "party", "conditions": "conditions"}
        columns["reason"] = "reason" if ev.kind == "request" else "decision_reason"
        changes: dict[str, Any] = {}
        for name, column in columns.items():
            value = getattr(ev, name)
            if value is not None:
                blob = self.keys.seal(day, context(f"consents.{column}", ev.request_id), value.encode())
                changes[name] = SEALED_TEXT + b64url(blob)
        return dataclasses.replace(ev, **changes)

    def consent_record(self, r: ConsentRecord) -> ConsentRecord:
        """A consent record with its sealed free text opened (empty once its key is gone)."""
        changes: dict[str, Any] = {}
        for column in ("party", "reason", "conditions", "decision_reason"):
            value = getattr(r, column)
            if isinstance(value, str) and value.startswith(SEALED_TEXT):
                blob = unb64url(value[len(SEALED_TEXT) :], field=f"consents.{column}")
                try:
                    changes[column] = self.keys.open(context(f"consents.{column}", r.request_id), blob).decode()
                except Disposed:
                    changes[column] = DISPOSED_TEXT
        return dataclasses.replace(r, **changes) if changes else r

    def incoming(self, it: Incoming) -> Incoming:
        day = retention_day(it.retain_until, it.created_at)
        ack_info = it.ack_info
        if ack_info is not None and ack_info.get("reason") is not None and it.acked_message_id is not None:
            # An ack's free-text reason lands in our message's `ack` column: sealed there too.
            ctx = context("messages.ack_reason", it.acked_message_id)
            blob = self.keys.seal(day, ctx, str(ack_info["reason"]).encode())
            ack_info = {k: v for k, v in ack_info.items() if k != "reason"} | {SEALED_REASON: b64url(blob)}
        return dataclasses.replace(
            it,
            signed_document=self.keys.seal(day, context("inbox.signed_document", it.id), it.signed_document),
            body=self.keys.seal(day, context("inbox.body", it.id), it.body),
            retain_until=day,
            ack_info=ack_info,
            consent=None if it.consent is None else self.consent_event(it.consent, day),
        )

    def outcome(self, o: AttemptOutcome) -> AttemptOutcome:
        """`o` with its ciphertext sealed under the message's day (`retain_until`, which the
        delivery worker copies from the message). For a message still in clear the ciphertext is
        not kept (it is only a cache the next attempt rebuilds), so nothing new is written in
        clear and the backfill never races a delivery."""
        if o.ciphertext is None:
            return o
        if o.retain_until is None:
            return dataclasses.replace(o, ciphertext=None, enc_kid=None)
        sealed = self.keys.seal(o.retain_until, context("messages.ciphertext", o.message_id), o.ciphertext)
        return dataclasses.replace(o, ciphertext=sealed)

    def clear_row(self, row: ClearRow, retain_until: dt.date | None) -> ClearRow:
        """A row stored in clear, sealed as a new one would be (`retain_until` None: the
        control rule)."""
        day = retention_day(retain_until, row.created_at)
        return dataclasses.replace(
            row,
            signed_document=self.keys.seal(day, context(f"{row.table}.signed_document", row.id), row.signed_document),
            body=None if row.body is None else self.keys.seal(day, context(f"{row.table}.body", row.id), row.body),
            retain_until=day,
        )

    def held(
        self, table: str, message_id: str, values: dict[str, bytes | None], hold_id: bytes
    ) -> dict[str, bytes | None]:
        """`values` (column -> sealed value of one row of `table`) sealed again under the key of
        the legal hold `hold_id` (`core.atrest` version 2), so the row's day key can be destroyed
        on time while the held row stays readable."""
        out: dict[str, bytes | None] = {}
        for column, blob in values.items():
            ctx = context(f"{table}.{column}", message_id)
            out[column] = None if blob is None else self.keys.seal_held(hold_id, ctx, self.keys.open(ctx, blob))
        return out

    def held_ack(self, ack: dict[str, Any] | None, message_id: str, hold_id: bytes) -> dict[str, Any] | None:
        """A message's `ack` column with the ack's sealed reason moved under the hold's key."""
        if ack is None or SEALED_REASON not in ack:
            return ack
        ctx = context("messages.ack_reason", message_id)
        blob = self.keys.open(ctx, unb64url(str(ack[SEALED_REASON]), field="ack.reason"))
        return ack | {SEALED_REASON: b64url(self.keys.seal_held(hold_id, ctx, blob))}

    # --- reads ---------------------------------------------------------------------------
    def out_message(self, m: OutMessage) -> OutMessage:
        ack = m.ack
        if ack is not None and SEALED_REASON in ack:
            blob = unb64url(str(ack[SEALED_REASON]), field="ack.reason")
            reason = self.keys.open(context("messages.ack_reason", m.id), blob).decode()
            ack = {k: v for k, v in ack.items() if k != SEALED_REASON} | {"reason": reason}
            m = dataclasses.replace(m, ack=ack)
        if m.retain_until is None or m.disposed_at is not None:
            return m  # stored in clear before sealing (the backfill has not reached it yet), or disposed of
        return dataclasses.replace(
            m,
            signed_document=self.keys.open(context("messages.signed_document", m.id), m.signed_document),
            ciphertext=None
            if m.ciphertext is None
            else self.keys.open(context("messages.ciphertext", m.id), m.ciphertext),
        )

    def inbox_item(self, item: InboxItem) -> InboxItem:
        if item.retain_until is None or item.disposed_at is not None:
            return item
        return dataclasses.replace(item, body=self.keys.open(context("inbox.body", item.id), item.body))

    def signed_document(self, direction: str, message_id: str, blob: bytes) -> bytes:
        """The signed document of one row ("outbound": messages, "inbound": inbox), opened."""
        table = "messages" if direction == "outbound" else "inbox"
        return self.keys.open(context(f"{table}.signed_document", message_id), blob)

    def evidence(self, e: Evidence) -> Evidence:
        if e.retain_until is None or e.disposed_at is not None:
            return e
        column = "messages.signed_document" if e.direction == "outbound" else "inbox.signed_document"
        return dataclasses.replace(e, signed_document=self.keys.open(context(column, e.message_id), e.signed_document))
