"""Disposal at `retain_until` and legal holds (DESIGN §12 "Retention and disposal", issue 18).

The worker wakes every `[retention] check_every_seconds` (and at start) and, on the gateway's
clock, disposes of at most `[retention] batch` due messages per round (`Store.due_for_disposal`:
retention day passed, not being delivered, not held): in one transaction their sealed values are
blanked and one `disposed` audit entry per message written (`Store.dispose`); then the files they
named are deleted and the keys of released holds destroyed; last, every day key before today
that no remaining row needs is destroyed (`day_key_destroyed` entry), which is what makes the
data unreadable in every copy, backups of the database included. A round that found a full
batch goes on at once; a crash anywhere leaves work the next round finishes (each step is
idempotent and ordered so that nothing is lost before its audit entry commits).

Legal holds: `place` re-seals the message under a hold key of its own (`core.atrest` v2) so its
day key can still go on time, records the hold with a `hold_placed` entry and queues a signed
`legal-hold` notice to the peer; `release` records the release (`hold_released`), queues the
notice, and leaves disposal to the worker (at once if the day has passed).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final

import msgspec
import structlog

from ..core import docfiles
from ..core.audit import AuditEntry
from ..core.control import HoldRequest, ReleaseRequest, decode_struct
from ..core.envelope import BUSINESS_TYPES, SignedDocument
from ..core.errors import GatewayError, NotFound
from ..store.base import DueRow, Hold

if TYPE_CHECKING:
    from .gateway import Caller, Gateway

log = structlog.get_logger("customs_gateway.disposal")

#: How long a `legal-hold` notice may wait for delivery.
NOTICE_TTL: Final = dt.timedelta(days=7)


@dataclass
class DisposalRun:
    """What one round did."""

    today: dt.date
    disposed: list[str] = field(default_factory=list)
    files: int = 0
    days_destroyed: list[dt.date] = field(default_factory=list)
    more: bool = False  # a full batch: another round follows at once

    def to_dict(self) -> dict[str, Any]:
        return {
            "today": self.today.isoformat(),
            "disposed": len(self.disposed),
            "files": self.files,
            "days_destroyed": [d.isoformat() for d in self.days_destroyed],
            "more": self.more,
        }


def utc_day(at: dt.datetime) -> dt.date:
    return at.astimezone(dt.timezone.utc).date()


def disposed_entry(row: DueRow, at: dt.datetime) -> AuditEntry:
    """The `disposed` audit entry of one message: it names the document's digest (and which
    side's copy), so an export's verifier accepts the document's absence from then on."""
    return AuditEntry(
        at=at,
        kind="disposed",
        actor="system",
        message_id=row.id,
        peer=row.peer,
        digests={"document": row.document_sha256.hex()},
        detail={"direction": row.direction, "type": row.type, "retain_until": row.retain_until.isoformat()},
    )


class Disposal:
    """The disposal worker and legal holds of one gateway."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.batch = gw.config.retention.batch
        self.every = gw.config.retention.check_every_seconds
        self.disposed_total = 0
        self.last_run: DisposalRun | None = None
        self._lock = asyncio.Lock()  # one round at a time (the worker, a CLI-triggered round)

    # --- disposal --------------------------------------------------------------------------
    async def run_once(self) -> DisposalRun:
        """One round on the gateway's clock: dispose of up to `batch` due messages, then destroy
        the day keys no row needs any more."""
        async with self._lock:
            gw = self.gw
            now = gw.clock.now()
            today = utc_day(now)
            run = DisposalRun(today)
            rows = await gw.store.due_for_disposal(today, self.batch)
            run.more = len(rows) >= self.batch
            if rows:
                entries = {r.id: disposed_entry(r, now) for r in rows}
                run.disposed = await gw.store.dispose(rows, now, entries)
                done = set(run.disposed)
                for r in rows:
                    if r.id not in done:
                        continue
                    run.files += self._dispose_files(r)
                    if r.hold_id is not None:
                        gw.day_keys.destroy_hold(r.hold_id)
                self.disposed_total += len(done)
            run.days_destroyed = await self._destroy_days(today, now)
            if run.disposed or run.days_destroyed:
                log.info("retention.disposed", **run.to_dict())
                await self._publish()
            self.last_run = run
            return run

    def _dispose_files(self, row: DueRow) -> int:
        """Delete the files a disposed message named (its document was opened before disposal)."""
        if row.signed_document is None:
            return 0
        ids = self._file_ids(row.type, row.signed_document)
        if not ids:
            return 0
        if row.direction == "outbound":
            return self.gw.files.dispose(ids)
        return self.gw.peer_files.dispose(ids)

    async def _publish(self) -> None:
        """Have the round's entries checkpointed and cosigned now (not at the next tick): an
        export's evidence line withholds a disposed document only after the `disposed` entry,
        which must lie inside the export's checkpoint."""
        recovery = self.gw.recovery
        checkpointer = None if recovery is None else recovery.checkpointer
        if checkpointer is None:
            return
        try:
            if not await checkpointer.publish_now():
                log.info("retention.checkpoint_later", why="not leading, or the peer did not cosign yet")
        except GatewayError as e:
            log.warning("retention.checkpoint_failed", code=e.code)

    @staticmethod
    def _file_ids(msg_type: str, signed_document: bytes) -> list[str]:
        """The ids of the files a stored signed document names (none for a control message)."""
        if msg_type not in BUSINESS_TYPES:
            return []
        try:
            document = SignedDocument.from_bytes(signed_document).document_bytes
            return [f.file_id for f in docfiles.sealed_files(msg_type, document)]
        except (GatewayError, ValueError, msgspec.MsgspecError):
            return []

    async def _destroy_days(self, today: dt.date, now: dt.datetime) -> list[dt.date]:
        gw = self.gw
        candidates = [d for d in gw.day_keys.days() if d < today]
        if not candidates:
            return []
        live = await gw.store.live_days(today)
        destroyed: list[dt.date] = []
        for day in candidates:
            if day in live:
                continue
            if gw.day_keys.destroy(day):
                destroyed.append(day)
        if destroyed:
            await gw.store.append_audit(
                [
                    AuditEntry(at=now, kind="day_key_destroyed", actor="system", detail={"day": d.isoformat()})
                    for d in destroyed
                ]
            )
        return destroyed

    async def run(self) -> None:
        """Rounds for as long as the gateway runs; a failed round is logged and retried later."""
        while True:
            more = False
            try:
                more = (await self.run_once()).more
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retention.round_failed")
            await asyncio.sleep(0 if more else self.every)

    # --- legal holds -----------------------------------------------------------------------
    async def place(self, raw: bytes, caller: Caller) -> Hold:
        """Place our legal hold on a message we sent or received (reason required)."""
        gw = self.gw
        req: HoldRequest = decode_struct(HoldRequest, raw)
        now = gw.clock.now()
        hold_id = gw.day_keys.new_hold()
        hold = Hold(req.message_id, "ours", "inbound", req.reason, caller.actor, now, hold_id)
        audit = AuditEntry(
            at=now,
            kind="hold_placed",
            actor=caller.actor,
            message_id=req.message_id,
            peer=gw.peer.identity,
            detail={"reason": req.reason},
        )
        try:
            placed = await gw.store.place_hold(hold, audit)
        except BaseException:
            gw.day_keys.destroy_hold(hold_id)  # nothing was sealed under it
            raise
        if placed.direction == "outbound":  # our uploads' keys go under the hold key too
            m = await gw.store.get_message(placed.message_id)
            if m is not None:
                gw.files.hold(self._file_ids(m.type, m.signed_document), placed.message_id, hold_id)
        notice = await self._notice(placed, "placed", req.reason, caller)
        return replace(placed, notice_id=notice)

    async def release(self, message_id: str, raw: bytes, caller: Caller) -> Hold:
        gw = self.gw
        req: ReleaseRequest = decode_struct(ReleaseRequest, raw)
        now = gw.clock.now()
        audit = AuditEntry(
            at=now,
            kind="hold_released",
            actor=caller.actor,
            message_id=message_id,
            peer=gw.peer.identity,
            detail={} if req.reason is None else {"reason": req.reason},
        )
        released = await gw.store.release_hold(message_id, now, caller.actor, req.reason, audit)
        await self._notice(released, "released", req.reason or "", caller)
        return released

    async def _notice(self, hold: Hold, action: str, reason: str, caller: Caller) -> str:
        """Queue the signed `legal-hold` notice telling the peer we placed or released a hold on
        a message we exchanged (DESIGN §12), with its `submitted` entry; returns its id."""
        gw = self.gw
        now = gw.clock.now()
        body = {"message_id": hold.message_id, "action": action, "reason": reason}
        notice = gw._new_message("legal-hold", body, now, now + NOTICE_TTL, caller.token_id)
        detail = {"type": "legal-hold", "about": hold.message_id, "hold": action}
        audit = AuditEntry.submitted(now, caller.actor, notice.id, gw.peer.identity, notice.document_sha256, detail)
        await gw.store.submit(notice, audit)
        gw.outbox_changed.set()
        return notice.id

    async def hold_of(self, message_id: str) -> Hold:
        found = [h for h in (await self.gw.store.holds_for([message_id])).get(message_id, []) if h.origin == "ours"]
        if not found:
            raise NotFound(f"message {message_id} has no legal hold of ours", code="hold.not_found", field="id")
        return found[0]
