"""Audit export: streams one gateway's log, key bundles, evidence and checkpoints into a bundle file.

The format and its verifier live in `core.audit_bundle`; this edge only reads the store. The
export ends at the latest checkpoint, so every entry in it is covered by a signed root. Entries
are read in chunks, twice: the first pass only notes, per message, the last entry that names its
evidence (a small index), so the second can place each evidence line right after that entry. A
message disposed of at `retain_until` gets a line that withholds its document ("disposed").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Final

from ..core.audit import AuditEntry
from ..core.audit_bundle import BundleWriter, Due, EvidencePlan
from ..core.bundle import SignedBundle
from ..core.errors import DecodeError, GatewayError
from ..store.base import CheckpointRecord, Evidence, Store

CHUNK: Final = 1000


class NoCheckpoint(GatewayError):
    """The log has no checkpoint yet, so nothing in it is signed and there is nothing to export."""

    code = "audit.no_checkpoint"
    status = 409


@dataclass(frozen=True)
class ExportSummary:
    """What was written: the exported size and root, line count and the file's closing SHA-256."""

    log: str
    peer: str
    size: int
    root: bytes
    entries: int
    checkpoints: int
    cosigned_checkpoints: int
    evidence: int
    missing_evidence: int
    bundles: int
    lines: int
    bytes: int
    sha256: str


def _bundles(
    log: str, peer: str, own: bytes, peer_bundle: bytes, stored: list[tuple[str, bytes]]
) -> list[tuple[str, SignedBundle]]:
    """Every distinct signed bundle, stored history first; the same signed bytes count once."""
    out: list[tuple[str, SignedBundle]] = []
    seen: set[tuple[str, bytes]] = set()
    for owner, raw in [*stored, (log, own), (peer, peer_bundle)]:
        if owner not in (log, peer):
            continue
        try:
            signed = SignedBundle.from_bytes(raw)
        except DecodeError as e:
            raise DecodeError(f"a stored key bundle of {owner} is unreadable: {e.detail}", field="bundle") from e
        key = (owner, signed.to_bytes())
        if key not in seen:
            seen.add(key)
            out.append((owner, signed))
    return out


async def _checkpoints(store: Store, size: int) -> list[CheckpointRecord]:
    """Checkpoints up to `size`, paged (there is one per few hundred entries at most)."""
    out: list[CheckpointRecord] = []
    after = -1
    while True:
        page = await store.checkpoints(after_size=after, limit=1000)
        out += [cp for cp in page if cp.size <= size]
        if not page or page[-1].size >= size:
            return out
        after = page[-1].size


async def _plan(store: Store, size: int) -> dict[int, list[Due]]:
    plan = EvidencePlan()
    for start in range(0, size, CHUNK):
        for index, data in await store.audit_entries(start, min(start + CHUNK, size)):
            try:
                plan.add(index, AuditEntry.from_bytes(data))
            except (GatewayError, ValueError, TypeError):
                continue  # an unreadable entry names nothing; the verifier reports it by index
    return plan.schedule()


async def export_bundle(
    store: Store,
    *,
    log: str,
    peer: str,
    own_bundle: bytes,
    peer_bundle: bytes,
    out: BinaryIO,
    progress: Callable[[int, int], None] | None = None,
    now: dt.datetime,
) -> ExportSummary:
    """Write the export of `store`'s log (owned by `log`) up to its latest checkpoint to `out`.

    Raises NoCheckpoint if the log has none yet; store errors pass through. Memory holds one
    chunk of entries and, per message, the index of its last naming entry.
    """
    latest = await store.latest_checkpoint()
    if latest is None:
        raise NoCheckpoint("no checkpoint yet; wait for one or run the gateway")
    size = latest.size
    checkpoints = {cp.size: cp for cp in await _checkpoints(store, size)}
    bundles = _bundles(log, peer, own_bundle, peer_bundle, await store.bundles())
    schedule = await _plan(store, size)

    w = BundleWriter()
    out.write(w.header(log=log, peer=peer, exported_at=now, size=size))
    for owner, signed in bundles:
        out.write(w.bundle(owner, signed))
    evidence_lines = missing = cosigned = 0
    for start in range(0, size, CHUNK):
        due: list[Due] = []
        for index, data in await store.audit_entries(start, min(start + CHUNK, size)):
            out.write(w.entry(index, data))
            cp = checkpoints.get(index + 1)
            if cp is not None:
                out.write(w.checkpoint(cp.size, cp.cosigned_note or cp.note))
                cosigned += cp.cosigned_note is not None
            due += schedule.pop(index, ())
        found = await _evidence(store, due)
        for d in due:
            ev = found.get((d.direction, d.message_id))
            if ev is None:
                missing += 1  # the verifier will name the entry; the export still shows the rest
                continue
            out.write(
                w.evidence(
                    message_id=ev.message_id,
                    direction=ev.direction,
                    peer=ev.peer,
                    # Disposed of at retain_until: the line says so, and the verifier accepts
                    # that only after the `disposed` entry that names this document.
                    signed_document=None if ev.disposed_at is not None else ev.signed_document,
                    receipt=ev.receipt if "receipt" in d.names else None,
                    refusal=ev.refusal if "refusal" in d.names else None,
                    withheld="disposed" if ev.disposed_at is not None else None,
                )
            )
            evidence_lines += 1
        if progress is not None:
            progress(min(start + CHUNK, size), size)
    end = w.end()
    out.write(end)
    return ExportSummary(
        log=log,
        peer=peer,
        size=size,
        root=latest.root,
        entries=size,
        checkpoints=len(checkpoints),
        cosigned_checkpoints=cosigned,
        evidence=evidence_lines,
        missing_evidence=missing,
        bundles=len(bundles),
        lines=w.lines + 1,
        bytes=w.bytes,
        sha256=w.sha256,
    )


async def _evidence(store: Store, due: list[Due]) -> dict[tuple[str, str], Evidence]:
    if not due:
        return {}
    rows = await store.evidence(sorted({d.message_id for d in due}))
    return {(ev.direction, ev.message_id): ev for ev in rows}
