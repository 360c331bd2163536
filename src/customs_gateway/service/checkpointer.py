"""Checkpoints of our audit log: signed every N entries or T seconds, then cosigned by the peer.

The checkpoint note is signed with our active signing key under the log's origin name; the peer
witnesses it at `POST /peer/v1/cosign` with a consistency proof from the last size it cosigned
(G7). A peer that is down only delays cosigning; a peer that answers 409 tells us the size it
holds, and we retry once from there.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
import structlog

from ..core.audit import NoteSigner, log_origin, witness_name
from ..core.checkpoint import Checkpoint, append_signature, sign_note, verify_cosignature
from ..core.encoding import b64url, json_bytes
from ..core.epoch import note_origin
from ..core.errors import GatewayError
from ..core.witness import MEDIA_TYPE, encode_request
from ..store.base import CheckpointRecord
from .gateway import Gateway, find_epoch_entry
from .tls import PeerTLS, cancelled, client_ssl, peer_session

log = structlog.get_logger("customs_gateway.checkpointer")
COSIGN_BACKOFF_MAX = 300.0


@dataclass
class CosignStatus:
    cosigned: int = 0
    failures: int = 0
    last_error: str | None = None
    refused: bool = False  # the peer answered and would not cosign (not: unreachable)


class Checkpointer:
    """Makes and cosigns checkpoints for one gateway (in the background: only while it leads the store)."""

    def __init__(self, gw: Gateway, tls: PeerTLS | None) -> None:
        self.gw = gw
        self.url = gw.config.peer.url.rstrip("/") + "/peer/v1/cosign"
        self.epoch_url = gw.config.peer.url.rstrip("/") + "/peer/v1/epoch"
        self.tls = tls
        self.session: aiohttp.ClientSession | None = None
        self.status = CosignStatus()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._cosign_lock = asyncio.Lock()  # one cosign request at a time (the loop, `publish_now`)
        self.leading = False
        # After the peer refused to cosign (e.g. a fork), wait before asking again: 1 s doubling
        # to 5 min, so the peer is not asked, and does not log, every second. An unreachable
        # peer is asked again at the usual pace: cosigning resumes as soon as it is back.
        self._cosign_delay = 0.0
        self._next_cosign = 0.0

    async def checkpoint_now(self) -> CheckpointRecord | None:
        """Sign a checkpoint of the log as it is now (None if the log is empty)."""
        async with self._lock:
            gw = self.gw
            size, root = await gw.store.audit_head()
            if size == 0:
                return None
            latest = await gw.store.latest_checkpoint()
            if latest is not None and latest.size == size:
                return latest
            now = gw.clock.now()
            origin = gw.log_origin
            body = Checkpoint(origin, size, root).body()
            note = sign_note(body, origin, NoteSigner(gw.identity.active_signing_key(now)))
            rec = CheckpointRecord(size, root, note, now)
            await gw.store.add_checkpoint(rec)
            return rec

    async def publish_now(self) -> bool:
        """A checkpoint of the log as it is now, cosigned by the peer if it answers: what the
        disposal worker asks for after a round, so that an export made right after covers the
        `disposed` entries its evidence lines rely on. False when this replica does not lead
        checkpointing, the restore check has not passed, or the peer did not cosign (the loop
        goes on trying)."""
        if self.session is None or not await self.gw.store.try_lead("checkpointer"):
            return False
        if not await self._may_cosign() or await self.checkpoint_now() is None:
            return False
        return await self.cosign_latest()

    async def cosign_latest(self) -> bool:
        """Ask the peer to cosign our newest checkpoint; True when it is (now) cosigned."""
        async with self._cosign_lock:
            return await self._cosign_latest()

    async def _cosign_latest(self) -> bool:
        gw = self.gw
        latest = await gw.store.latest_checkpoint()
        if latest is None:
            return False
        if latest.cosigned_note is not None:
            return True
        done = await gw.store.latest_checkpoint(cosigned=True)
        origin = note_origin(latest.note)
        if origin != log_origin(gw.name) and (done is None or note_origin(done.note) != origin):
            # The first checkpoint of a new epoch: the witness takes it only with the epoch entry.
            line = await self._epoch_request(latest, origin)
            if line is None:
                return False
            await gw.store.set_cosigned(latest.size, append_signature(latest.note, line), gw.clock.now())
            self.status.cosigned += 1
            self.status.last_error, self.status.refused = None, False
            return True
        old = done.size if done is not None else 0
        for _ in range(2):
            result = await self._request(latest, old)
            if isinstance(result, bytes):
                await gw.store.set_cosigned(latest.size, append_signature(latest.note, result), gw.clock.now())
                self.status.cosigned += 1
                self.status.last_error, self.status.refused = None, False
                return True
            if result is None:
                return False
            old = result  # the peer holds another size: prove consistency from that one
        return False

    async def _request(self, cp: CheckpointRecord, old: int) -> bytes | int | None:
        """bytes: the verified cosignature line; int: the size the peer holds; None: failed."""
        gw = self.gw
        if self.session is None:
            return None
        try:
            proof = await gw.store.consistency_proof(old, cp.size) if 0 < old < cp.size else []
        except GatewayError as e:
            self._fail(f"cannot prove consistency from {old}: {e.code}")
            return None
        body = encode_request(old, proof, cp.note)
        try:
            async with self.session.post(
                self.url, data=body, headers={"Content-Type": MEDIA_TYPE}, ssl=client_ssl(self.tls)
            ) as resp:
                text = await resp.read()
                if resp.status == 409 and resp.headers.get("Content-Type", "").startswith("text/x.tlog.size"):
                    held = text.decode("ascii", "replace").strip()
                    if held.isdigit() and int(held) != old:
                        return int(held)
                if resp.status != 200:
                    self._fail(f"peer answered HTTP {resp.status}", refused=resp.status < 500)
                    return None
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            self._fail(f"peer unreachable: {type(e).__name__}")
            return None
        return self._verified_line(text, cp)

    async def _epoch_request(self, cp: CheckpointRecord, origin: str) -> bytes | None:
        """Show the peer's witness the `log_epoch` entry inside this first checkpoint of a new
        epoch (`POST /peer/v1/epoch`); the verified cosignature line, or None."""
        gw = self.gw
        if self.session is None:
            return None
        found = await find_epoch_entry(gw.store, origin, cp.size)
        if found is None:
            self._fail(f"no log_epoch entry for {origin} in the log")
            return None
        index, entry = found
        proof = await gw.store.inclusion_proof(index, cp.size)
        body = json_bytes(
            {
                "entry": b64url(entry),
                "index": index,
                "note": cp.note.decode("utf-8"),
                "proof": [b64url(x) for x in proof],
            }
        )
        try:
            async with self.session.post(
                self.epoch_url, data=body, headers={"Content-Type": "application/json"}, ssl=client_ssl(self.tls)
            ) as resp:
                text = await resp.read()
                if resp.status != 200:
                    self._fail(
                        f"peer refused the new epoch: HTTP {resp.status} {text[:200]!r}", refused=resp.status < 500
                    )
                    return None
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            self._fail(f"peer unreachable: {type(e).__name__}")
            return None
        return self._verified_line(text, cp)

    def _verified_line(self, text: bytes, cp: CheckpointRecord) -> bytes | None:
        gw = self.gw
        line = text.rstrip(b"\n") + b"\n"
        name = witness_name(gw.peer.identity)
        body_bytes = Checkpoint(note_origin(cp.note), cp.size, cp.root).body()
        for rec in gw.peer.records():
            if rec.use != "witness" or rec.valid_at(gw.clock.now()) is not None:
                continue
            try:
                verify_cosignature(body_bytes, line, name, rec.public)
                return line
            except GatewayError:
                continue
        self._fail("peer's cosignature does not verify under its witness key", refused=True)
        return None

    def _fail(self, why: str, *, refused: bool = False) -> None:
        self.status.failures += 1
        self.status.last_error, self.status.refused = why, refused
        log.warning("checkpoint.cosign_failed", reason=why)

    async def start(self, *, background: bool = True) -> None:
        self.session = peer_session(self.tls, self.gw.config.delivery.request_timeout_seconds, limit=1)
        if background:
            self._task = asyncio.create_task(self._run(), name="checkpointer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancelled(task)
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def _may_cosign(self) -> bool:
        """Not before the restore check has passed: a restored log would look like a fork."""
        recovery = self.gw.recovery
        if recovery is None:
            return True
        if not recovery.checked and self.session is not None:
            try:
                await recovery.check(self.session)
            except (TimeoutError, aiohttp.ClientError, OSError):
                return False  # the peer is not there yet; asked again next round
        return recovery.checked and not recovery.needed

    async def _run(self) -> None:
        cfg = self.gw.config.audit
        while True:
            await asyncio.sleep(min(1.0, cfg.checkpoint_every_seconds))
            try:
                # Replicas on one shared store: only the one holding the lock signs and cosigns,
                # so two never race to checkpoint the same size or ask the peer at once.
                leading = await self.gw.store.try_lead("checkpointer")
                if leading != self.leading:
                    self.leading = leading
                    log.info("checkpoint.leadership", leading=leading)
                if not leading:
                    continue
                if not await self._may_cosign():
                    continue  # not even a local checkpoint while this store may be a restored one
                size, _ = await self.gw.store.audit_head()
                latest = await self.gw.store.latest_checkpoint()
                last_size = latest.size if latest else 0
                age = (self.gw.clock.now() - latest.created_at).total_seconds() if latest else float("inf")
                if size > last_size and (
                    size - last_size >= cfg.checkpoint_every_entries or age >= cfg.checkpoint_every_seconds
                ):
                    await self.checkpoint_now()
                loop = asyncio.get_running_loop()
                if loop.time() >= self._next_cosign:
                    if await self.cosign_latest() or not self.status.refused:
                        self._cosign_delay = 0.0
                    else:
                        self._cosign_delay = min(COSIGN_BACKOFF_MAX, max(1.0, self._cosign_delay * 2))
                    self._next_cosign = loop.time() + self._cosign_delay
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("checkpoint.loop_error")
