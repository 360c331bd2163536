"""Offline audit verification speed: a 100,000-entry export bundle through `verify_bundle`.

The bundle is generated from core functions (fixed seeds): per cycle of six entries one outbound
message (submitted, sent, delivered with the peer's receipt), one inbound message (received with
our receipt) and two other entries (a token issued, a refused envelope), so about a third of the entries name a
signed document and a receipt. Checkpoints every 1,000 entries, each cosigned by the peer.
The target is at most 10 s for 100,000 entries on a 2-core machine.

    python benchmarks/audit_verify.py [--entries 100000] [--keep FILE] [--profile] [--json]
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import hashlib
import json
import os
import pstats
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO

from customs_gateway.cli.audit_cmd import default_workers, signature_pool
from customs_gateway.core.audit import AuditEntry, NoteSigner, log_origin, witness_name
from customs_gateway.core.audit_bundle import BundleWriter, EvidencePlan, VerifyReport, verify_bundle
from customs_gateway.core.bundle import KeyBundle, KeyRecord, SignedBundle, sign_bundle
from customs_gateway.core.checkpoint import Checkpoint, append_signature, cosign, sign_note
from customs_gateway.core.envelope import Document, SignedDocument
from customs_gateway.core.keys import ALG_ED25519, ALG_X25519, SUITE_X25519, DecryptionKey, SigningKey
from customs_gateway.core.merkle import CompactRange, leaf_hash
from customs_gateway.core.receipt import make_receipt

US, CN = "US-CBP", "CN-GACC"
T0 = dt.datetime(2026, 3, 1, 12, tzinfo=dt.timezone.utc)
NB, NA = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
CHECKPOINT_EVERY = 1000
CHUNK = 1000
BODY = json.loads((Path(__file__).resolve().parents[1] / "keys-example/messages/seizure-share.json").read_text())


def _bundle(identity: str, sig: SigningKey, wit: SigningKey, enc_seed: int) -> bytes:
    enc = DecryptionKey(ALG_X25519, bytes([enc_seed]) * 32)
    keys = (
        KeyRecord(sig.kid, "signing", ALG_ED25519, sig.public_raw, NB, NA),
        KeyRecord(enc.kid, "encryption", ALG_X25519, enc.public.raw, NB, NA),
        KeyRecord(wit.kid, "witness", ALG_ED25519, wit.public_raw, NB, NA),
    )
    return sign_bundle(KeyBundle(identity, NB, keys, (SUITE_X25519,), "-"), [sig]).to_bytes()


def generate(n: int, out: BinaryIO) -> None:
    """Write an n-entry export of US-CBP's log (n rounded down to whole cycles, at least 6)."""
    us, us_wit, cn, cn_wit = (SigningKey(bytes([i]) * 32) for i in (1, 2, 3, 4))
    entries: list[bytes] = []
    evidence: dict[tuple[str, str], tuple[bytes, bytes]] = {}
    notes: dict[int, bytes] = {}
    tree = CompactRange()
    origin = log_origin(US)

    def add(e: AuditEntry) -> None:
        data = e.to_bytes()
        entries.append(data)
        tree.append(leaf_hash(data))
        if tree.size % CHECKPOINT_EVERY == 0 or tree.size == n:
            body = Checkpoint(origin, tree.size, tree.root()).body()
            note = sign_note(body, origin, NoteSigner(us))
            line = cosign(body, witness_name(CN), NoteSigner(cn_wit), int(e.at.timestamp()))
            notes[tree.size] = append_signature(note, line)

    k = 0
    while len(entries) + 6 <= n:
        at = T0 + dt.timedelta(seconds=k)
        out_id, in_id = f"01950000-0000-7000-8000-{2 * k:012d}", f"01950000-0000-7000-8000-{2 * k + 1:012d}"
        doc = SignedDocument.create(Document(out_id, US, CN, "seizure-share", at, BODY), us)
        rc = make_receipt(message_id=out_id, sender=US, receiver=CN, document_sha256=doc.digest, received_at=at, key=cn)
        d = {"document": doc.digest.hex()}
        add(AuditEntry(at=at, kind="submitted", actor="token:t1", message_id=out_id, peer=CN, digests=d))
        add(AuditEntry(at=at, kind="sent", actor="system", message_id=out_id, peer=CN, digests=d))
        rd = {**d, "receipt": hashlib.sha256(rc.to_bytes()).hexdigest()}
        add(AuditEntry(at=at, kind="delivered", actor=f"peer:{CN}", message_id=out_id, peer=CN, digests=rd))
        evidence[("outbound", out_id)] = (doc.raw, rc.to_bytes())
        doc = SignedDocument.create(Document(in_id, CN, US, "seizure-share", at, BODY), cn)
        rc = make_receipt(message_id=in_id, sender=CN, receiver=US, document_sha256=doc.digest, received_at=at, key=us)
        rd = {"document": doc.digest.hex(), "envelope": "00" * 32, "receipt": hashlib.sha256(rc.to_bytes()).hexdigest()}
        add(AuditEntry(at=at, kind="received", actor=f"peer:{CN}", message_id=in_id, peer=CN, digests=rd))
        evidence[("inbound", in_id)] = (doc.raw, rc.to_bytes())
        add(AuditEntry(at=at, kind="token_issued", actor="system", detail={"token_id": f"t{k}", "role": "agency"}))
        add(AuditEntry(at=at, kind="refused", actor=f"peer:{CN}", message_id=f"x{k}", peer=CN, code="replay.skew"))
        k += 1
    end = T0 + dt.timedelta(seconds=k)  # audit time never runs backwards, the top-up included
    while len(entries) < n:  # top up to exactly n with entries that name no document
        add(AuditEntry(at=end, kind="token_issued", actor="system", detail={"token_id": f"f{len(entries)}"}))

    size = len(entries)
    last = max(s for s in notes if s <= size)
    plan = EvidencePlan()
    for i, data in enumerate(entries[:last]):
        plan.add(i, AuditEntry.from_bytes(data))
    schedule = plan.schedule()
    w = BundleWriter()
    out.write(w.header(log=US, peer=CN, exported_at=T0, size=last))
    out.write(w.bundle(US, SignedBundle.from_bytes(_bundle(US, us, us_wit, 11))))
    out.write(w.bundle(CN, SignedBundle.from_bytes(_bundle(CN, cn, cn_wit, 12))))
    for start in range(0, last, CHUNK):
        due = []
        for i in range(start, min(start + CHUNK, last)):
            out.write(w.entry(i, entries[i]))
            if i + 1 in notes:
                out.write(w.checkpoint(i + 1, notes[i + 1]))
            due += schedule.pop(i, [])
        for dd in due:
            raw, receipt = evidence[(dd.direction, dd.message_id)]
            out.write(
                w.evidence(
                    message_id=dd.message_id,
                    direction=dd.direction,
                    peer=CN,
                    signed_document=raw,
                    receipt=receipt,
                    refusal=None,
                )
            )
    out.write(w.end())


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run(path: Path, *, profile: bool, workers: int) -> tuple[VerifyReport, float, float, float]:
    """Time `verify_bundle` as `audit verify` runs it: the signature arithmetic in a process pool
    (started inside the timed region, so its start-up counts) unless workers is 0. Returns the
    report, wall seconds, and CPU seconds of this process and of the worker processes (wall time
    depends on what else the machine runs; CPU time much less)."""
    prof = cProfile.Profile() if profile else None
    with path.open("rb") as f:
        start, cpu, children = time.perf_counter(), time.process_time(), _children_cpu()
        if prof is not None:
            prof.enable()
        with signature_pool(workers) as pool:
            report = verify_bundle(f, executor=pool)
        if prof is not None:
            prof.disable()
        elapsed = time.perf_counter() - start
        cpu, children = time.process_time() - cpu, _children_cpu() - children
    if prof is not None:
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(25)
    return report, elapsed, cpu, children


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--keep", type=Path, help="write the bundle here and keep it (default: a temp file)")
    ap.add_argument("--profile", action="store_true", help="cProfile the verification (slower)")
    ap.add_argument(
        "--workers", type=int, default=None, help="signature worker processes (default: as `audit verify`; 0: none)"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    fd, tmp = tempfile.mkstemp(suffix=".audit.jsonl")
    os.close(fd)
    path = args.keep or Path(tmp)
    t = time.perf_counter()
    with path.open("wb") as out:
        generate(args.entries, out)
    gen = time.perf_counter() - t
    try:
        workers = default_workers() if args.workers is None else args.workers
        report, elapsed, cpu, worker_cpu = run(path, profile=args.profile, workers=workers)
        mib = path.stat().st_size / 2**20
    finally:
        if args.keep is None:
            path.unlink()
    result: dict[str, Any] = {
        "entries": report.entries,
        "documents": report.documents,
        "receipts": report.receipts,
        "checkpoints": report.checkpoints,
        "bundle_mib": round(mib, 1),
        "generate_seconds": round(gen, 2),
        "verify_seconds": round(elapsed, 2),
        "entries_per_second": round(report.entries / elapsed),
        "cpu_seconds": round(cpu, 2),
        "worker_cpu_seconds": round(worker_cpu, 2),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "signature_workers": workers,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"verified {report.entries:,} entries ({report.documents:,} documents, {report.receipts:,} receipts, "
            f"{report.checkpoints} cosigned checkpoints; {mib:.1f} MiB) in {elapsed:.2f} s: "
            f"{report.entries / elapsed:,.0f} entries/s with {workers} signature worker process(es) "
            f"on {os.cpu_count()} CPUs (generated in {gen:.1f} s)\n"
            f"CPU: {cpu:.2f} s in this process, {worker_cpu:.2f} s in workers; "
            f"load average {os.getloadavg()[0]:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
