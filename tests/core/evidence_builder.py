"""A valid evidence file built from core functions alone (fixed seeds, fixed times), in pieces a
test can change and re-emit: the way a log owner forging evidence would have to work.

US-CBP sends seizure share M to CN-GACC, which receipts it and acknowledges it with ack A; each
log holds its entries about M and A among others, checkpointed and cosigned by the other side.
Also written to tests/vectors/evidence.jsonl by scripts/make_evidence_vectors.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any

import msgspec

from customs_gateway.core.audit import AuditEntry, NoteSigner, log_origin, witness_name
from customs_gateway.core.bundle import KeyBundle, KeyRecord, SignedBundle, sign_bundle
from customs_gateway.core.checkpoint import Checkpoint, append_signature, cosign, sign_note
from customs_gateway.core.envelope import Document, SignedDocument
from customs_gateway.core.evidence import (
    EvidenceWriter,
    LogPart,
    MessagePart,
    message_part,
    prove_entries,
    withheld_part,
)
from customs_gateway.core.keys import ALG_ED25519, ALG_X25519, SUITE_X25519, DecryptionKey, SigningKey
from customs_gateway.core.merkle import inclusion_proof, leaf_hash, root_from_leaves
from customs_gateway.core.receipt import make_receipt

US, CN = "US-CBP", "CN-GACC"
UTC = dt.timezone.utc
NB, NA = dt.datetime(2026, 1, 1, tzinfo=UTC), dt.datetime(2028, 1, 1, tzinfo=UTC)
T0 = dt.datetime(2026, 3, 1, 12, tzinfo=UTC)
CERT = "-----BEGIN CERTIFICATE-----\nnot checked here\n-----END CERTIFICATE-----\n"
M = "01950000-0000-7000-8000-000000000001"
A = "01950000-0000-7000-8000-000000000002"


def key(n: int) -> SigningKey:
    return SigningKey(hashlib.sha256(f"customs-gateway evidence vector key {n}".encode()).digest())


US_SIG, US_WIT, CN_SIG, CN_WIT, STRANGER, STRANGER_WIT = (key(n) for n in range(1, 7))


def rec(k: SigningKey, use: str, nb: dt.datetime = NB, na: dt.datetime = NA, **kw: Any) -> KeyRecord:
    return KeyRecord(k.kid, use, ALG_ED25519, k.public_raw, nb, na, **kw)


def enc(n: int) -> KeyRecord:
    dk = DecryptionKey(ALG_X25519, bytes([n]) * 32)
    return KeyRecord(dk.kid, "encryption", ALG_X25519, dk.public.raw, NB, NA)


def bundle(identity: str, sig: SigningKey, wit: SigningKey, n: int) -> KeyBundle:
    return KeyBundle(identity, NB, (rec(sig, "signing"), enc(n), rec(wit, "witness")), (SUITE_X25519,), CERT)


@dataclass
class Side:
    """One log: filler entries around the ones about M and A, checkpointed and cosigned."""

    owner: str
    entries: list[bytes] = field(default_factory=list)
    about: list[int] = field(default_factory=list)  # indexes of the entries the evidence carries

    def add(self, entry: AuditEntry, *, about: bool = True) -> None:
        if about:
            self.about.append(len(self.entries))
        self.entries.append(entry.to_bytes())

    def part(self, signer: SigningKey, witness: SigningKey | None, cosigned_at: dt.datetime) -> LogPart:
        leaves = [leaf_hash(e) for e in self.entries]
        size = len(leaves)
        origin = log_origin(self.owner)
        body = Checkpoint(origin, size, root_from_leaves(leaves)).body()
        note = sign_note(body, origin, NoteSigner(signer))
        if witness is not None:
            other = CN if self.owner == US else US
            note = append_signature(
                note, cosign(body, witness_name(other), NoteSigner(witness), int(cosigned_at.timestamp()))
            )
        rows = [(i, self.entries[i], inclusion_proof(leaves, i, size)) for i in self.about]
        return prove_entries(self.owner, size, note, rows)


def filler(owner: str, n: int, at: dt.datetime) -> AuditEntry:
    return AuditEntry(at=at, kind="token_issued", actor="system", detail={"token_id": f"{owner}-{n}", "role": "agency"})


@dataclass
class Pieces:
    """Everything an evidence file is made of; `lines()` emits them with a fresh end line."""

    bundles: list[tuple[str, SignedBundle]]
    parts: list[MessagePart]
    logs: list[LogPart]
    header: dict[str, Any]

    def lines(self) -> list[bytes]:
        w = EvidenceWriter()
        out = [w.header(**self.header)]
        out += [w.bundle(owner, signed) for owner, signed in self.bundles]
        out += [w.message(p) for p in self.parts]
        out += [w.log(lp) for lp in self.logs]
        out.append(w.end())
        return out

    def raw(self) -> bytes:
        return b"".join(self.lines())

    def replace_part(self, i: int, **changes: Any) -> Pieces:
        parts = list(self.parts)
        parts[i] = msgspec.structs.replace(parts[i], **changes)
        return dataclasses.replace(self, parts=parts)


def seizure_body() -> dict[str, Any]:
    return {"case_reference": "CBP-2026-0042", "notes": "假冒药品 counterfeit medicines", "quantity": 1200}


def build(
    *,
    us_log_signer: SigningKey = US_SIG,
    us_cosigner: SigningKey | None = CN_WIT,
    cn_cosigner: SigningKey | None = US_WIT,
    receipt_signer: SigningKey = CN_SIG,
    cosigned_at: dt.datetime = T0 + dt.timedelta(minutes=5),
    extra_bundles: list[tuple[str, SignedBundle]] | None = None,
    ack_body: dict[str, Any] | None = None,
    disposed: bool = False,
) -> Pieces:
    """The evidence file of M (US -> CN, acked). `disposed`: as US makes it after disposing of M
    at its retention date (a `disposed` entry in US's log two days on, checkpointed and cosigned
    after it; the part withholds the document)."""
    later = dt.timedelta(days=2) if disposed else dt.timedelta(0)
    cosigned_at += later
    us_b, cn_b = bundle(US, US_SIG, US_WIT, 11), bundle(CN, CN_SIG, CN_WIT, 12)
    bundles = [(US, sign_bundle(us_b, [US_SIG])), (CN, sign_bundle(cn_b, [CN_SIG])), *(extra_bundles or [])]

    doc = SignedDocument.create(Document(M, US, CN, "seizure-share", T0, seizure_body()), US_SIG)
    d_hex = doc.digest.hex()
    receipt = make_receipt(
        message_id=M,
        sender=US,
        receiver=CN,
        document_sha256=doc.digest,
        received_at=T0 + dt.timedelta(seconds=1),
        key=receipt_signer,
    ).to_bytes()
    t_ack = T0 + dt.timedelta(minutes=1)
    body = ack_body or {"message_id": M, "document_sha256": d_hex, "status": "processed"}
    ack = SignedDocument.create(Document(A, CN, US, "ack", t_ack, body), CN_SIG)
    ack_receipt = make_receipt(
        message_id=A,
        sender=CN,
        receiver=US,
        document_sha256=ack.digest,
        received_at=t_ack + dt.timedelta(seconds=1),
        key=US_SIG,
    ).to_bytes()
    r_hex, ar_hex = hashlib.sha256(receipt).hexdigest(), hashlib.sha256(ack_receipt).hexdigest()

    us = Side(US)
    for n in range(3):
        us.add(filler(US, n, T0 - dt.timedelta(minutes=1)), about=False)
    us.add(
        AuditEntry(T0, "submitted", "token:abc", M, CN, digests={"document": d_hex}, detail={"type": "seizure-share"})
    )
    us.add(AuditEntry(T0 + dt.timedelta(seconds=1), "sent", "system", M, CN, digests={"document": d_hex}))
    us.add(
        AuditEntry(
            T0 + dt.timedelta(seconds=1),
            "delivered",
            f"peer:{CN}",
            M,
            CN,
            digests={"document": d_hex, "receipt": r_hex},
        )
    )
    us.add(filler(US, 3, T0 + dt.timedelta(seconds=2)), about=False)
    us.add(
        AuditEntry(
            t_ack + dt.timedelta(seconds=1),
            "received",
            f"peer:{CN}",
            A,
            CN,
            digests={"document": ack.digest.hex(), "receipt": ar_hex},
            detail={"type": "ack", "seq": 1},
        )
    )
    us.add(
        AuditEntry(
            t_ack + dt.timedelta(seconds=1),
            "acknowledged",
            f"peer:{CN}",
            M,
            CN,
            digests={"ack_document": ack.digest.hex()},
            detail={"status": "processed", "ack_id": A},
        )
    )
    us.add(filler(US, 4, t_ack + dt.timedelta(seconds=2)), about=False)
    if disposed:
        us.add(
            AuditEntry(
                T0 + dt.timedelta(days=2),
                "disposed",
                "system",
                M,
                CN,
                digests={"document": d_hex},
                detail={"direction": "outbound", "type": "seizure-share", "retain_until": "2026-03-02"},
            )
        )

    cn = Side(CN)
    for n in range(5):
        cn.add(filler(CN, n, T0 - dt.timedelta(minutes=2)), about=False)
    cn.add(
        AuditEntry(
            T0 + dt.timedelta(seconds=1),
            "received",
            f"peer:{US}",
            M,
            US,
            digests={"document": d_hex, "receipt": r_hex},
            detail={"type": "seizure-share", "seq": 1},
        )
    )
    cn.add(
        AuditEntry(
            t_ack,
            "submitted",
            "token:def",
            A,
            US,
            digests={"document": ack.digest.hex()},
            detail={"type": "ack", "acknowledges": M, "status": "processed"},
        )
    )
    cn.add(
        AuditEntry(
            t_ack + dt.timedelta(seconds=1),
            "delivered",
            f"peer:{US}",
            A,
            US,
            digests={"document": ack.digest.hex(), "receipt": ar_hex},
        )
    )

    parts = [
        withheld_part(
            role="message",
            message_id=M,
            sender=US,
            receiver=CN,
            type="seizure-share",
            created_at=T0,
            document_sha256=doc.digest,
            withheld="disposed",
            receipt=receipt,
            refusal=None,
        )
        if disposed
        else message_part(role="message", signed_document=doc.raw, receipt=receipt, refusal=None),
        message_part(role="ack", signed_document=ack.raw, receipt=ack_receipt, refusal=None),
    ]
    logs = [us.part(us_log_signer, us_cosigner, cosigned_at), cn.part(CN_SIG, cn_cosigner, cosigned_at)]
    header = {
        "message_id": M,
        "sender": US,
        "receiver": CN,
        "made_by": US,
        "made_at": T0 + dt.timedelta(minutes=6) + later,
    }
    return Pieces(bundles, parts, logs, header)


def forged_bundle(
    identity: str, serial: int, signers: list[SigningKey], records: tuple[KeyRecord, ...], issued_at: dt.datetime = T0
) -> SignedBundle:
    """A bundle version signed by `signers` (self-signed if they are among `records`)."""
    b = KeyBundle(identity, issued_at, records, (SUITE_X25519,), CERT, serial=serial)
    return sign_bundle(b, signers)
