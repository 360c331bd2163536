"""Restore from backup on a running gateway: the behind-the-peer check and `recover` (DESIGN §11).

Before its first delivery and its first cosign request, a gateway asks the peer what it has seen
of us (`GET /peer/v1/state`, signed). If the peer has received sequence numbers this store would
hand out again, or cosigned more of our log than it holds, the store was restored from a backup:
delivery and cosigning stop (`/readyz` and `/v1/admin/peers` say why, the log says what to run)
until an administrator runs `customs-gateway recover`. Recovery marks as delivered, with the
peer's original receipts, the messages the peer already holds; lists the ones the peer holds that
this store lost; continues our sequence numbers after the peer's; and records all of it in one
audit entry. Nothing is re-used and nothing is hidden.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import TYPE_CHECKING, Any, Final

import aiohttp
import structlog

from ..core.audit import AuditEntry
from ..core.epoch import KIND as EPOCH_KIND
from ..core.epoch import EpochStart, epoch_detail, epoch_of, epoch_origin
from ..core.errors import Conflict, GatewayError, SchemaError
from ..core.receipt import Receipt
from ..core.recovery import Cosigned, Held, PeerState, assess, plan, read_state
from .delivery import delivered_entry
from .gateway import Gateway

if TYPE_CHECKING:
    from .checkpointer import Checkpointer
from ..store.base import AttemptOutcome, OutMessage
from .tls import PeerTLS, client_ssl

log = structlog.get_logger("customs_gateway.recovery")

#: Ids listed by name in the `recovered` audit entry (the counts are always complete).
MAX_LISTED: Final = 1000


class RecoveryNeeded(GatewayError):
    code = "recovery.needed"
    status = 409


class Recovery:
    """The restore check and the recovery of one gateway."""

    def __init__(self, gw: Gateway, tls: PeerTLS | None) -> None:
        self.gw = gw
        self.tls = tls
        self.url = gw.config.peer.url.rstrip("/") + "/peer/v1/state"
        self.checked = False
        self.reasons: list[str] = []
        self.cleared = asyncio.Event()
        self.cleared.set()
        self._lock = asyncio.Lock()
        self.restored_size: int | None = None  # our log's size when the check found us behind
        self.checkpointer: Checkpointer | None = None  # set by the server

    @property
    def needed(self) -> bool:
        return bool(self.reasons)

    def view(self) -> dict[str, Any]:
        """For /readyz and /v1/admin/peers."""
        return {"checked": self.checked, "needed": self.needed, "reasons": list(self.reasons)}

    async def fetch(self, session: aiohttp.ClientSession, after_seq: int) -> PeerState:
        """The peer's signed account of us, from `after_seq` on; network errors pass through."""
        gw = self.gw
        async with session.get(self.url, params={"after_seq": str(after_seq)}, ssl=client_ssl(self.tls)) as resp:
            if resp.status != 200:
                raise GatewayError(
                    f"the peer answered HTTP {resp.status} to GET /peer/v1/state",
                    code="recovery.state_unavailable",
                    status=502,
                )
            raw = await resp.read()
        return read_state(raw, signer=gw.peer.identity, subject=gw.name, key_for=gw.peer.verify_key)

    async def check(self, session: aiohttp.ClientSession) -> None:
        """Once per run, before anything is sent: is this store behind what the peer has seen?"""
        async with self._lock:
            if self.checked:
                return
            gw = self.gw
            ps = await gw.store.peer_state(gw.peer.identity)
            size = await gw.store.audit_size()
            state = await self.fetch(session, ps.next_seq - 1)
            self.reasons = assess(state, next_seq=ps.next_seq, log_size=size, origin=gw.log_origin)
            self.restored_size = size
            self.checked = True
            if self.reasons:
                self.cleared.clear()
                log.error(
                    "recovery.needed",
                    peer=gw.peer.identity,
                    reasons=self.reasons,
                    action='customs-gateway recover --reason "restored from the backup of <date>"',
                )

    async def recover(self, reason: str, actor: str) -> dict[str, Any]:
        """Bring this restored store level with the peer (see the module docstring)."""
        reason = reason.strip()
        if not reason or len(reason) > 2000:
            raise SchemaError("reason is required (at most 2000 characters)", code="schema.required", field="$.reason")
        gw = self.gw
        timeout = aiohttp.ClientTimeout(total=gw.config.delivery.request_timeout_seconds)
        async with self._lock, aiohttp.ClientSession(timeout=timeout) as session:
            ps = await gw.store.peer_state(gw.peer.identity)
            size = await gw.store.audit_size()
            # The size our log was restored to: as the start-up check found it (entries written
            # since, e.g. submissions waiting for recovery, are after it).
            restored = self.restored_size if self.restored_size is not None else size
            pending = await gw.store.pending(gw.peer.identity)  # acks and announcements too
            after = min((m.seq for m in pending), default=ps.next_seq) - 1
            try:
                first = await self.fetch(session, after)
                held: list[Held] = list(first.held)
                page = first
                while page.more and page.held:
                    page = await self.fetch(session, page.held[-1].seq)
                    held += page.held
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                raise GatewayError(
                    f"the peer cannot be asked what it holds ({type(e).__name__}); recover needs the peer",
                    code="recovery.peer_unreachable",
                    status=503,
                ) from e
            reasons = assess(first, next_seq=ps.next_seq, log_size=size, origin=gw.log_origin)
            if not reasons:
                self.checked, self.reasons = True, []
                self.cleared.set()
                raise Conflict(
                    "this gateway is not behind its peer: there is nothing to recover", code="recovery.not_needed"
                )
            ours: dict[str, tuple[bytes, bool]] = {}
            pending_ids = {m.id for m in pending}
            for h in held:
                m = await gw.store.get_message(h.id)
                if m is not None:
                    ours[h.id] = (m.document_sha256, m.id in pending_ids)
            p = plan(
                held,
                ours=ours,
                me=gw.name,
                peer=gw.peer.identity,
                received_high_seq=first.received_high_seq,
                key_for=gw.peer.verify_key,
            )
            now = gw.clock.now()
            epoch = await self._new_epoch(first.cosigned, restored, reason, actor, now)
            by_id = {m.id: m for m in pending}
            outcomes = [self._delivered(by_id[mid], receipt, now) for mid, receipt in p.delivered]
            if outcomes:
                await gw.store.record_outcomes(outcomes)
            renumbered = len(pending) - len(outcomes)
            detail: dict[str, Any] = {
                "reason": reason,
                "behind": reasons,
                "peer_received_high_seq": first.received_high_seq,
                "restored_next_seq": ps.next_seq,
                "next_seq": p.next_seq,
                "renumbered": renumbered,
                "marked_delivered": [mid for mid, _ in p.delivered][:MAX_LISTED],
                "marked_delivered_count": len(p.delivered),
                "lost": [{"id": h.id, "seq": h.seq} for h in p.lost][:MAX_LISTED],
                "lost_count": len(p.lost),
                "restored_log_size": restored,
                "peer_cosigned": _cosigned(first.cosigned),
                "log_origin": epoch,
            }
            entry = AuditEntry(at=now, kind="recovered", actor=actor, peer=gw.peer.identity, detail=detail)
            await gw.store.renumber_pending(gw.peer.identity, p.next_seq, entry)
            self.checked, self.reasons, self.restored_size = True, [], None
            self.cleared.set()
            gw.outbox_changed.set()
        witnessed = await self._cosign_epoch()
        log.warning(
            "recovery.done",
            peer=gw.peer.identity,
            marked_delivered=len(p.delivered),
            lost=len(p.lost),
            next_seq=p.next_seq,
            renumbered=renumbered,
        )
        return {
            "peer": gw.peer.identity,
            "behind": reasons,
            "peer_received_high_seq": first.received_high_seq,
            "next_seq": p.next_seq,
            "renumbered": renumbered,
            "marked_delivered": [mid for mid, _ in p.delivered],
            "lost": [{"id": h.id, "seq": h.seq, "document_sha256": h.document_sha256.hex()} for h in p.lost],
            "restored_log_size": restored,
            "peer_cosigned": _cosigned(first.cosigned),
            "log_origin": epoch,
            "epoch_witnessed": witnessed,
        }

    async def _new_epoch(
        self, cosigned: Cosigned | None, restored_size: int, reason: str, actor: str, now: dt.datetime
    ) -> str:
        """Start the next epoch of our log (core.epoch): its first entry names the last checkpoint
        of the current origin the peer cosigned, the size we were restored to and the reason."""
        gw = self.gw
        # The epoch follows the origin the peer's witness holds (it may be ahead of a restored store).
        held = cosigned.origin if cosigned is not None else gw.log_origin
        current = epoch_of(held, gw.name)
        if current is None:
            current, held, cosigned = epoch_of(gw.log_origin, gw.name) or 0, gw.log_origin, None
        origin = epoch_origin(gw.name, current + 1)
        start = EpochStart(
            origin=origin,
            previous_origin=held,
            previous_size=cosigned.size if cosigned is not None else 0,
            previous_root=cosigned.root.hex() if cosigned is not None else "",
            restored_size=restored_size,
            reason=reason,
        )
        entry = AuditEntry(at=now, kind=EPOCH_KIND, actor=actor, peer=gw.peer.identity, detail=epoch_detail(start))
        await gw.store.append_audit([entry])
        gw.log_origin = origin  # checkpoints from now on carry the new origin
        return origin

    async def _cosign_epoch(self) -> bool:
        """Sign the first checkpoint of the new epoch and have the peer's witness accept it now
        (else the checkpointer keeps asking)."""
        cp = self.checkpointer
        if cp is None:
            return False
        await cp.checkpoint_now()
        return await cp.cosign_latest()

    def _delivered(self, m: OutMessage, receipt: Receipt, now: dt.datetime) -> AttemptOutcome:
        statement = receipt.statement.to_bytes()
        entry = delivered_entry(self.gw, m, statement, receipt.received_at, receipt.kid, now, recovered=True)
        return AttemptOutcome(m.id, "delivered", now, m.attempts, receipt=statement, audit=(entry,))


def _cosigned(c: Cosigned | None) -> dict[str, Any] | None:
    return None if c is None else {"origin": c.origin, "size": c.size, "root": c.root.hex()}
