"""Evidence for one message, collected from both logs (DESIGN §10).

Our part comes from our store: the message's signed document (its header and digest only, once
disposed of at `retain_until`), receipt, refusal and business ack, and our log's entries about
it with inclusion proofs into our newest checkpoint that the peer cosigned. The peer's part comes
over the peer API (`GET /peer/v1/evidence/{id}`, mutual TLS): its entries about the message,
proven into its newest checkpoint that we cosigned. The file format and its verifier live in
`core.evidence`; nothing here is trusted by the verifier.
"""

from __future__ import annotations

import re
from typing import Final, Literal

import aiohttp

from ..core.bundle import SignedBundle
from ..core.envelope import BUSINESS_TYPES
from ..core.errors import GatewayError, NotFound, SchemaError
from ..core.evidence import (
    EvidenceWriter,
    LogPart,
    MessagePart,
    decode_log_part,
    encode_log_part,
    message_part,
    prove_entries,
    withheld_part,
)
from ..startup.keystore import read_signed_bundle
from ..store.base import Evidence
from .audit_export import _bundles
from .gateway import Gateway
from .tls import PeerTLS, client_ssl, peer_session

MAX_PART_BYTES: Final = 8 * 1024 * 1024
_ID = re.compile(r"[0-9A-Za-z._:-]{1,64}")


class NotCosigned(GatewayError):
    """No checkpoint of this log is cosigned by the peer yet, so nothing in it can be proven."""

    code = "evidence.not_cosigned"
    status = 409


class PeerUnavailable(GatewayError):
    """The peer's part of the evidence could not be fetched (down, or answered badly)."""

    code = "evidence.peer_unavailable"
    status = 503


def check_message_id(message_id: str) -> str:
    if not _ID.fullmatch(message_id):
        raise SchemaError("id must be a message id (1-64 letters, digits, . _ : -)", code="schema.pattern", field="id")
    return message_id


async def _related(gw: Gateway, message_id: str) -> tuple[str, str, str | None] | None:
    """(sender, receiver, id of its business ack) of a business message we hold, else None."""
    out = await gw.store.get_message(message_id)
    if out is not None and out.type in BUSINESS_TYPES:
        ack_id = out.ack.get("ack_id") if out.ack else None
        return gw.name, out.peer, ack_id if isinstance(ack_id, str) else None
    item = await gw.store.inbox_item(message_id)
    if item is not None and item.type in BUSINESS_TYPES:
        return item.sender, gw.name, item.ack_message_id
    return None


async def own_log_part(gw: Gateway, message_ids: list[str]) -> LogPart:
    """Our log's entries about `message_ids`, proven into our newest peer-cosigned checkpoint."""
    cp = await gw.store.latest_checkpoint(cosigned=True)
    if cp is None or cp.cosigned_note is None:
        raise NotCosigned(f"no checkpoint of {gw.name}'s log is cosigned by {gw.peer.identity} yet; try again later")
    rows = await gw.store.audit_entries_about(message_ids, cp.size)
    proven = [(i, data, await gw.store.inclusion_proof(i, cp.size)) for i, data in rows]
    return prove_entries(gw.name, cp.size, cp.cosigned_note, proven)


async def peer_log_part(gw: Gateway, message_id: str) -> bytes:
    """What the peer API serves: our part for a message id (no entries if we know no such message)."""
    related = await _related(gw, check_message_id(message_id))
    ids = [message_id] if related is None or related[2] is None else [message_id, related[2]]
    return encode_log_part(await own_log_part(gw, ids))


class EvidenceCollector:
    """Builds evidence files: our part from the store, the peer's over mutual TLS."""

    def __init__(self, gw: Gateway, tls: PeerTLS | None) -> None:
        self.gw = gw
        self.url = gw.config.peer.url.rstrip("/") + "/peer/v1/evidence/"
        self.tls = tls
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.session = peer_session(self.tls, self.gw.config.delivery.request_timeout_seconds, limit=2)

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def peer_part(self, message_id: str) -> LogPart:
        if self.session is None:
            raise PeerUnavailable("the gateway is not running its peer client")
        try:
            async with self.session.get(self.url + message_id, ssl=client_ssl(self.tls)) as resp:
                raw = await resp.content.read(MAX_PART_BYTES + 1)
                if resp.status != 200:
                    raise PeerUnavailable(f"{self.gw.peer.identity} answered HTTP {resp.status} for its part")
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise PeerUnavailable(f"{self.gw.peer.identity} is unreachable: {type(e).__name__}") from e
        if len(raw) > MAX_PART_BYTES:
            raise PeerUnavailable(f"{self.gw.peer.identity}'s part is larger than {MAX_PART_BYTES} bytes")
        part = decode_log_part(raw)
        if part.owner != self.gw.peer.identity:
            raise PeerUnavailable(f"the peer's part is for {part.owner!r}, not {self.gw.peer.identity!r}")
        return part

    def _part(self, role: Literal["message", "ack"], ev: Evidence, refusal: bytes | None) -> MessagePart:
        """One message part from what the store holds: a message disposed of at `retain_until`
        has no document any more, so its part is its header and digest, withheld as "disposed"
        (our log's `disposed` entry and both logs' earlier entries name that digest)."""
        if ev.disposed_at is None:
            return message_part(role=role, signed_document=ev.signed_document, receipt=ev.receipt, refusal=refusal)
        if ev.created_at is None:  # pragma: no cover - every stored row has its creation time
            raise GatewayError(f"the store holds no creation time of message {ev.message_id}", status=500)
        sender, receiver = (self.gw.name, ev.peer) if ev.direction == "outbound" else (ev.peer, self.gw.name)
        return withheld_part(
            role=role,
            message_id=ev.message_id,
            sender=sender,
            receiver=receiver,
            type=ev.type,
            created_at=ev.created_at,
            document_sha256=ev.document_sha256,
            withheld="disposed",
            receipt=ev.receipt,
            refusal=refusal,
        )

    async def build(self, message_id: str) -> bytes:
        """The evidence file for a business message we sent or received. Raises NotFound,
        NotCosigned (409) or PeerUnavailable (503)."""
        gw = self.gw
        related = await _related(gw, check_message_id(message_id))
        if related is None:
            raise NotFound(f"no business message {message_id}", code="evidence.not_found", field="id")
        sender, receiver, ack_id = related
        ids = [message_id] if ack_id is None else [message_id, ack_id]
        ours = await own_log_part(gw, ids)
        theirs = await self.peer_part(message_id)
        held = {ev.message_id: ev for ev in await gw.store.evidence(ids)}
        parts: list[MessagePart] = [self._part("message", held[message_id], held[message_id].refusal)]
        if ack_id is not None and ack_id in held:
            parts.append(self._part("ack", held[ack_id], None))
        peer_signed = read_signed_bundle(gw.config.path(gw.config.peer.bundle))
        versions: list[tuple[str, SignedBundle]] = _bundles(
            gw.name, gw.peer.identity, gw.identity.bundle.to_bytes(), peer_signed.to_bytes(), await gw.store.bundles()
        )
        w = EvidenceWriter()
        out = [
            w.header(message_id=message_id, sender=sender, receiver=receiver, made_by=gw.name, made_at=gw.clock.now())
        ]
        out += [w.bundle(owner, signed) for owner, signed in versions]
        out += [w.message(p) for p in parts]
        logs = {ours.owner: ours, theirs.owner: theirs}
        out += [w.log(logs[sender]), w.log(logs[receiver])]
        out.append(w.end())
        return b"".join(out)
