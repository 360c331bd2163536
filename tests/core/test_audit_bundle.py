"""The audit export bundle: a valid export verifies; any tampering, truncation or reordering fails.

The bundles here are built from core functions alone (fixed seeds, a fixed clock), laid out the
way the exporter does it (`EvidencePlan`), so every failure below is one specific mutation.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import functools
import hashlib
import itertools
import json
import multiprocessing
import re
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from customs_gateway.core import audit_keys
from customs_gateway.core.audit import AuditEntry, NoteSigner, log_origin, witness_name
from customs_gateway.core.audit_bundle import (
    FAILURE_CODES,
    BundleError,
    BundleWriter,
    EvidencePlan,
    VerifyReport,
    entry_references,
    read_signed_document,
    verify_bundle,
)
from customs_gateway.core.bundle import KeyBundle, KeyRecord, SignedBundle, sign_bundle
from customs_gateway.core.checkpoint import Checkpoint, append_signature, cosign, sign_note
from customs_gateway.core.encoding import b64url, json_bytes, unb64url
from customs_gateway.core.envelope import Document, SignedDocument
from customs_gateway.core.errors import DecodeError, GatewayError, SchemaError
from customs_gateway.core.keys import ALG_ED25519, ALG_X25519, SUITE_X25519, DecryptionKey, SigningKey
from customs_gateway.core.merkle import CompactRange, leaf_hash
from customs_gateway.core.receipt import make_receipt, make_refusal
from tests.ijson import twice

US, CN = "US-CBP", "CN-GACC"
UTC = dt.timezone.utc
NB, NA = dt.datetime(2026, 1, 1, tzinfo=UTC), dt.datetime(2028, 1, 1, tzinfo=UTC)
T0 = dt.datetime(2026, 3, 1, 12, tzinfo=UTC)
CERT = "-----BEGIN CERTIFICATE-----\nnot checked here\n-----END CERTIFICATE-----\n"


def _key(n: int) -> SigningKey:
    return SigningKey(bytes([n]) * 32)


US_SIG_A, US_SIG_B, US_WIT, CN_SIG, CN_WIT, STRANGER = (_key(n) for n in (1, 2, 3, 4, 5, 6))


def _rec(key: SigningKey, use: str, nb: dt.datetime = NB, na: dt.datetime = NA, state: str = "active") -> KeyRecord:
    return KeyRecord(key.kid, use, ALG_ED25519, key.public_raw, nb, na, state)


def _enc(n: int) -> KeyRecord:
    pub = DecryptionKey(ALG_X25519, bytes([n]) * 32).public.raw
    return KeyRecord(DecryptionKey(ALG_X25519, bytes([n]) * 32).kid, "encryption", ALG_X25519, pub, NB, NA)


@dataclass
class Log:
    """A US-CBP log under construction: entries, the evidence the store would hold, checkpoints."""

    rotate_at: dt.datetime
    entries: list[bytes] = field(default_factory=list)
    evidence: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    notes: dict[int, bytes] = field(default_factory=dict)
    tree: CompactRange = field(default_factory=CompactRange)

    def add(self, entry: AuditEntry) -> None:
        data = entry.to_bytes()
        self.entries.append(data)
        self.tree.append(leaf_hash(data))

    def us_key(self, at: dt.datetime) -> SigningKey:
        return US_SIG_A if at < self.rotate_at else US_SIG_B

    def checkpoint(self, at: dt.datetime, *, cosigned: bool = True) -> None:
        origin = log_origin(US)
        body = Checkpoint(origin, self.tree.size, self.tree.root()).body()
        note = sign_note(body, origin, NoteSigner(self.us_key(at)))
        if cosigned:
            note = append_signature(note, cosign(body, witness_name(CN), NoteSigner(CN_WIT), int(at.timestamp())))
        self.notes[self.tree.size] = note


def _mid(k: int) -> str:
    return f"01950000-0000-7000-8000-{k:012d}"


def _bundles(rotate_at: dt.datetime) -> list[tuple[str, bytes]]:
    us1 = KeyBundle(US, NB, (_rec(US_SIG_A, "signing"), _enc(11), _rec(US_WIT, "witness")), (SUITE_X25519,), CERT)
    # Rotation: B takes over; A stays listed (retiring) so history signed by A still verifies.
    us2 = KeyBundle(
        US,
        rotate_at,
        (
            _rec(US_SIG_A, "signing", na=rotate_at + dt.timedelta(days=1), state="retiring"),
            _rec(US_SIG_B, "signing", nb=rotate_at),
            _enc(11),
            _rec(US_WIT, "witness"),
        ),
        (SUITE_X25519,),
        CERT,
        serial=2,
    )
    cn = KeyBundle(CN, NB, (_rec(CN_SIG, "signing"), _enc(12), _rec(CN_WIT, "witness")), (SUITE_X25519,), CERT)
    return [
        (US, sign_bundle(us1, [US_SIG_A]).to_bytes()),
        (US, sign_bundle(us2, [US_SIG_A, US_SIG_B]).to_bytes()),
        (CN, sign_bundle(cn, [CN_SIG]).to_bytes()),
    ]


def build_log(
    messages: int,
    *,
    checkpoint_every: int = 40,
    cosign_all: bool = True,
    doc_key: dict[int, SigningKey] | None = None,
    forged: frozenset[int] = frozenset(),
) -> Log:
    """`messages` exchanges: outbound delivered, outbound refused, inbound received, and acks.
    `doc_key` signs message k's document with another key; `forged` messages carry a signature
    by a stranger under the rightful key id (the log itself is honest about both)."""
    log = Log(rotate_at=T0 + dt.timedelta(seconds=messages * 2))
    at = T0
    for k in range(messages):
        at += dt.timedelta(seconds=4)
        mid, kind = _mid(k), k % 5
        if kind == 4:
            log.add(AuditEntry(at=at, kind="token_issued", actor="system", detail={"token_id": f"t{k}"}))
            continue
        outbound = kind in (0, 1, 3)
        sender, receiver = (US, CN) if outbound else (CN, US)
        key = (doc_key or {}).get(k) or (log.us_key(at) if outbound else CN_SIG)
        body: dict[str, Any] = {"case": f"CASE-{k}", "notes": "假冒商品 counterfeit"}
        doc = Document(mid, sender, receiver, "seizure-share", at, body)
        signed = SignedDocument.create(doc, key)
        if k in forged:
            data = doc.to_bytes()
            sig = STRANGER.sign("document", data)
            raw = json_bytes({"document": b64url(data), "kid": key.kid, "signature": b64url(sig)})
            signed = SignedDocument(data, key.kid, sig, raw)
        digest = signed.digest
        if outbound:
            log.add(
                AuditEntry(
                    at=at,
                    kind="submitted",
                    actor="token:t",
                    message_id=mid,
                    peer=CN,
                    digests={"document": digest.hex()},
                )
            )
            log.add(
                AuditEntry(
                    at=at, kind="sent", actor="system", message_id=mid, peer=CN, digests={"document": digest.hex()}
                )
            )
            if kind == 3:
                refusal = make_refusal(
                    message_id=mid,
                    sender=US,
                    receiver=CN,
                    code="schema.invalid",
                    detail="bad",
                    retryable=False,
                    refused_at=at,
                    envelope_sha256=hashlib.sha256(mid.encode()).digest(),
                    key=CN_SIG,
                ).to_bytes()
                digests = {"document": digest.hex(), "refusal": hashlib.sha256(refusal).hexdigest()}
                log.add(
                    AuditEntry(
                        at=at,
                        kind="refusal_received",
                        actor=f"peer:{CN}",
                        message_id=mid,
                        peer=CN,
                        code="schema.invalid",
                        digests=digests,
                    )
                )
                log.evidence[("outbound", mid)] = {"doc": signed.raw, "receipt": None, "refusal": refusal}
                continue
            receipt = make_receipt(
                message_id=mid, sender=US, receiver=CN, document_sha256=digest, received_at=at, key=CN_SIG
            ).to_bytes()
            digests = {"document": digest.hex(), "receipt": hashlib.sha256(receipt).hexdigest()}
            log.add(AuditEntry(at=at, kind="delivered", actor=f"peer:{CN}", message_id=mid, peer=CN, digests=digests))
            log.evidence[("outbound", mid)] = {"doc": signed.raw, "receipt": receipt, "refusal": None}
        else:
            receipt = make_receipt(
                message_id=mid, sender=CN, receiver=US, document_sha256=digest, received_at=at, key=log.us_key(at)
            ).to_bytes()
            digests = {"document": digest.hex(), "envelope": "00" * 32, "receipt": hashlib.sha256(receipt).hexdigest()}
            log.add(AuditEntry(at=at, kind="received", actor=f"peer:{CN}", message_id=mid, peer=CN, digests=digests))
            log.evidence[("inbound", mid)] = {"doc": signed.raw, "receipt": receipt, "refusal": None}
            if k % 10 == 2 and k >= 5:  # the peer acks an earlier outbound message of ours
                acked = _mid(k - 2)
                log.add(
                    AuditEntry(
                        at=at,
                        kind="acknowledged",
                        actor=f"peer:{CN}",
                        message_id=acked,
                        peer=CN,
                        digests={"ack_document": digest.hex()},
                        detail={"status": "processed", "ack_id": mid},
                    )
                )
        if log.tree.size // checkpoint_every > len(log.notes):
            log.checkpoint(at, cosigned=cosign_all or len(log.notes) % 2 == 0)
    log.checkpoint(at + dt.timedelta(seconds=1))
    return log


def export_lines(log: Log, *, chunk: int = 25) -> list[bytes]:
    """Lay the log out as the exporter does: plan evidence, then entries in chunks."""
    plan = EvidencePlan()
    for i, data in enumerate(log.entries):
        plan.add(i, AuditEntry.from_bytes(data))
    schedule = plan.schedule()
    size = max(log.notes)
    w = BundleWriter()
    lines = [w.header(log=US, peer=CN, exported_at=T0 + dt.timedelta(days=1), size=size)]
    lines += [w.bundle(owner, SignedBundle.from_bytes(raw)) for owner, raw in _bundles(log.rotate_at)]
    for start in range(0, size, chunk):
        due = []
        for i in range(start, min(start + chunk, size)):
            lines.append(w.entry(i, log.entries[i]))
            if i + 1 in log.notes:
                lines.append(w.checkpoint(i + 1, log.notes[i + 1]))
            due += schedule.pop(i, [])
        for d in due:
            ev = log.evidence[(d.direction, d.message_id)]
            lines.append(
                w.evidence(
                    message_id=d.message_id,
                    direction=d.direction,
                    peer=CN,
                    signed_document=ev["doc"],
                    receipt=ev["receipt"] if "receipt" in d.names else None,
                    refusal=ev["refusal"] if "refusal" in d.names else None,
                    withheld="disposed" if ev["doc"] is None else None,
                )
            )
    lines.append(w.end())
    return lines


@functools.cache
def big() -> tuple[bytes, ...]:
    return tuple(export_lines(build_log(110)))


@functools.cache
def small() -> tuple[bytes, ...]:
    return tuple(export_lines(build_log(16, checkpoint_every=10), chunk=7))


# --- editing helpers ----------------------------------------------------------------------------


def obj(line: bytes) -> dict[str, Any]:
    d: dict[str, Any] = json.loads(line)
    return d


def dump(d: dict[str, Any]) -> bytes:
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def reseal(lines: list[bytes]) -> list[bytes]:
    """Recompute the end line (always the last line here), as a forger would: then only the
    signed data can catch the change."""
    body = list(lines[:-1])
    sha = hashlib.sha256(b"".join(body)).hexdigest()
    return [*body, dump({"t": "end", "lines": len(body), "sha256": sha})]


def where(lines: tuple[bytes, ...] | list[bytes], t: str) -> list[int]:
    return [i for i, ln in enumerate(lines) if obj(ln)["t"] == t]


def fails(lines: list[bytes] | tuple[bytes, ...], **kw: Any) -> BundleError:
    with pytest.raises(BundleError) as e:
        verify_bundle(iter(lines), **kw)
    assert e.value.code in FAILURE_CODES
    return e.value


# --- a valid export -----------------------------------------------------------------------------


def test_valid_export_verifies_and_reports_what_it_holds() -> None:
    lines = big()
    seen: list[tuple[int, int]] = []
    rep = verify_bundle(lines, progress=lambda done, total: seen.append((done, total)))
    assert isinstance(rep, VerifyReport)
    log = build_log(110)
    assert rep.size == rep.entries == len(log.entries)
    assert rep.root == log.tree.root()
    assert rep.checkpoints == len(log.notes) == rep.cosigned_checkpoints
    assert rep.bundles == 3
    assert rep.documents == len(log.evidence)
    assert rep.refusals == sum(1 for e in log.evidence.values() if e["refusal"])
    assert rep.receipts == rep.documents - rep.refusals
    assert rep.lines == len(lines)
    assert rep.kinds["acknowledged"] > 0 and rep.kinds["refusal_received"] > 0
    # Both US signing keys (before and after rotation) and both witness/peer keys did some work.
    assert {US_SIG_A.kid, US_SIG_B.kid, CN_SIG.kid, CN_WIT.kid} <= set(rep.key_ids)
    assert seen[-1] == (rep.size, rep.size)
    assert [f[:2] for f in rep.fingerprints] == [(US, 1), (US, 2), (CN, 1)]
    assert rep.to_dict()["root"] == base64.b64encode(log.tree.root()).decode()


def test_uncosigned_checkpoints_pass_unless_required() -> None:
    lines = export_lines(build_log(40, checkpoint_every=15, cosign_all=False))
    rep = verify_bundle(lines)
    assert 0 < rep.cosigned_checkpoints < rep.checkpoints
    assert fails(lines, require_cosigned=True).code == "audit.cosignature_missing"


# --- tampering ----------------------------------------------------------------------------------


def _flip(line: bytes, pos: int, xor: int) -> bytes:
    b = bytearray(line)
    b[pos % len(b)] ^= xor
    return bytes(b)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_flipped_byte_fails_cleanly(data: st.DataObject) -> None:
    lines = list(big())
    i = data.draw(st.integers(0, len(lines) - 1), label="line")
    pos = data.draw(st.integers(0, len(lines[i]) - 1), label="pos")
    lines[i] = _flip(lines[i], pos, data.draw(st.integers(1, 255), label="xor"))
    fails(lines)


TAMPERABLE = ("bundle", "entry", "checkpoint", "evidence")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_flipped_byte_is_caught_by_the_signed_data_even_when_the_end_line_is_recomputed(data: st.DataObject) -> None:
    lines = list(big())
    t = data.draw(st.sampled_from(TAMPERABLE), label="type")
    i = data.draw(st.sampled_from(where(lines, t)), label="line")
    # Positions inside the line's content, newline excluded (a split line is another test).
    pos = data.draw(st.integers(0, len(lines[i]) - 2), label="pos")
    lines[i] = _flip(lines[i], pos, data.draw(st.integers(1, 255), label="xor"))
    err = fails(reseal(lines))
    assert err.code != "audit.digest"
    if t == "entry" and err.code == "audit.root_mismatch":  # named at the checkpoint, by range
        # The range is the entries since the checkpoint before: from err.index up to the size of
        # the first checkpoint past the changed entry (checkpoints are not evenly spaced).
        idx = obj(big()[i])["index"]
        sizes = [obj(ln)["size"] for ln in big() if obj(ln)["t"] == "checkpoint"]
        assert err.index is not None and err.index <= idx < min(sz for sz in sizes if sz > err.index)


def test_truncation_at_any_line_fails() -> None:
    lines = small()
    for k in range(len(lines)):
        assert fails(lines[:k]).code in ("audit.truncated", "audit.order"), k
    # Cut inside a line: the last line has no newline.
    assert fails([*lines[:5], lines[5][:-3]]).code == "audit.truncated"
    # An end line but entries missing from the middle, resealed: the order check names the gap.
    entries = where(lines, "entry")
    cut = [ln for i, ln in enumerate(lines) if i != entries[3]]
    err = fails(reseal(cut))
    assert (err.code, err.index) == ("audit.order", 3)


def test_data_after_the_end_fails() -> None:
    lines = list(small())
    assert fails([*lines, lines[1]]).code == "audit.order"


def _same_time_neighbours(lines: list[bytes]) -> tuple[int, int]:
    """Two adjacent entry lines whose entries carry the same time (so only the tree notices a swap)."""
    entries = where(lines, "entry")
    for a, b in itertools.pairwise(entries):
        ea, eb = (json.loads(unb64url(obj(lines[i])["entry"])) for i in (a, b))
        if ea["at"] == eb["at"] and ea != eb and b == a + 1:
            return a, b
    raise AssertionError("no two adjacent entries share a time")


def test_swapped_entry_lines_fail() -> None:
    lines = list(big())
    a, b = _same_time_neighbours(lines)
    lines[a], lines[b] = lines[b], lines[a]
    assert fails(lines).code == "audit.order"
    # Renumbered to look contiguous: the recomputed root no longer matches the signed one.
    x, y = obj(lines[a]), obj(lines[b])
    x["index"], y["index"] = y["index"], x["index"]
    lines[a], lines[b] = dump(x), dump(y)
    err = fails(reseal(lines))
    assert err.code == "audit.root_mismatch"
    assert err.index is not None and err.index <= obj(lines[a])["index"]


def test_an_entry_dated_before_its_predecessor_fails() -> None:
    # Audit time never runs backwards (a gateway restamps such an entry): one that does was not
    # written by the gateway. Swapping two entries of different times and renumbering them is caught
    # before the tree is even checked.
    lines = list(big())
    entries = where(lines, "entry")
    a, b = next(
        (x, y)
        for x, y in itertools.pairwise(entries)
        if y == x + 1
        and json.loads(unb64url(obj(lines[x])["entry"]))["at"] < json.loads(unb64url(obj(lines[y])["entry"]))["at"]
    )
    x, y = obj(lines[a]), obj(lines[b])
    x["entry"], y["entry"] = y["entry"], x["entry"]
    lines[a], lines[b] = dump(x), dump(y)
    err = fails(reseal(lines))
    assert err.code == "audit.time_order" and err.index == x["index"] + 1


def _edit_note(lines: list[bytes], n: int, edit: Callable[[bytes], bytes]) -> list[bytes]:
    i = where(lines, "checkpoint")[n]
    d = obj(lines[i])
    d["note"] = edit(d["note"].encode()).decode()
    lines[i] = dump(d)
    return reseal(lines)


def _sig_lines(note: bytes) -> tuple[bytes, list[bytes]]:
    split = note.rfind(b"\n\n")
    return note[: split + 2], note[split + 2 :].splitlines(keepends=True)


def test_forged_checkpoint_signature_fails() -> None:
    def other_key(note: bytes) -> bytes:
        head, sigs = _sig_lines(note)
        body = head[:-1]
        forged = sign_note(body, log_origin(US), NoteSigner(STRANGER))
        return forged + b"".join(sigs[1:])

    def bad_bytes(note: bytes) -> bytes:
        head, sigs = _sig_lines(note)
        name, b64 = sigs[0].rstrip(b"\n").rsplit(b" ", 1)
        raw = bytearray(base64.b64decode(b64))
        raw[10] ^= 1
        return head + name + b" " + base64.b64encode(bytes(raw)) + b"\n" + b"".join(sigs[1:])

    for edit in (other_key, bad_bytes):
        err = fails(_edit_note(list(big()), 2, edit))
        assert err.code == "audit.checkpoint_signature", edit.__name__


def test_dropped_cosignature_passes_only_when_not_required() -> None:
    def drop(note: bytes) -> bytes:
        head, sigs = _sig_lines(note)
        return head + sigs[0]

    lines = _edit_note(list(big()), 1, drop)
    rep = verify_bundle(lines)
    assert rep.cosigned_checkpoints == rep.checkpoints - 1
    assert fails(lines, require_cosigned=True).code == "audit.cosignature_missing"


def test_bad_cosignature_always_fails() -> None:
    def spoil(note: bytes) -> bytes:
        head, sigs = _sig_lines(note)
        name, b64 = sigs[1].rstrip(b"\n").rsplit(b" ", 1)
        raw = bytearray(base64.b64decode(b64))
        raw[-1] ^= 1
        return head + sigs[0] + name + b" " + base64.b64encode(bytes(raw)) + b"\n"

    assert fails(_edit_note(list(big()), 0, spoil)).code == "audit.cosignature"


def test_checkpoint_signatures_by_unknown_keys_fail() -> None:
    def third_party(note: bytes) -> bytes:
        body = _sig_lines(note)[0][:-1]
        return note + _sig_lines(sign_note(body, "auditor.example", NoteSigner(STRANGER)))[1][0]

    def fake_witness(note: bytes) -> bytes:
        head, sigs = _sig_lines(note)
        return head + sigs[0] + cosign(head[:-1], witness_name(CN), NoteSigner(STRANGER), int(T0.timestamp()))

    assert fails(_edit_note(list(big()), 1, third_party)).code == "audit.checkpoint_signature"
    # A cosignature under the witness's name but not its key never counts, cosigned or not required.
    assert fails(_edit_note(list(big()), 1, fake_witness)).code == "audit.cosignature"


def test_cosignature_by_a_revoked_witness_key_fails() -> None:
    def with_cn_witness_revoked(at: dt.datetime) -> list[bytes]:
        lines = list(big())
        wit = dataclasses.replace(_rec(CN_WIT, "witness"), state="revoked", revoked_at=at, revocation_reason="lost")
        cn2 = KeyBundle(CN, T0, (_rec(CN_SIG, "signing"), _enc(12), wit), (SUITE_X25519,), CERT, serial=2)
        i = where(lines, "bundle")[-1] + 1
        lines.insert(i, BundleWriter().bundle(CN, sign_bundle(cn2, [CN_SIG])))
        return reseal(lines)

    # Revoked before the first cosignature: that checkpoint fails; revoked after the last: all hold.
    err = fails(with_cn_witness_revoked(T0))
    assert err.code == "audit.cosignature" and "revoked" in err.detail
    assert err.line == where(big(), "checkpoint")[0] + 2  # one bundle line inserted above it
    rep = verify_bundle(with_cn_witness_revoked(T0 + dt.timedelta(days=30)))
    assert rep.cosigned_checkpoints == rep.checkpoints


def _evidence_lines(lines: list[bytes], field: str) -> list[int]:
    return [i for i in where(lines, "evidence") if obj(lines[i])[field] is not None]


def test_receipt_swapped_between_two_messages_fails() -> None:
    lines = list(big())
    a, b = _evidence_lines(lines, "receipt")[:2]
    x, y = obj(lines[a]), obj(lines[b])
    x["receipt"], y["receipt"] = y["receipt"], x["receipt"]
    lines[a], lines[b] = dump(x), dump(y)
    err = fails(reseal(lines))
    assert err.code == "audit.receipt"
    assert err.line == a + 1


def test_receipt_left_out_fails() -> None:
    lines = list(big())
    a = _evidence_lines(lines, "receipt")[3]
    x = obj(lines[a])
    x["receipt"] = None
    lines[a] = dump(x)
    assert fails(reseal(lines)).code == "audit.receipt"


def test_document_swapped_fails() -> None:
    lines = list(big())
    a, b = where(lines, "evidence")[:2]
    x, y = obj(lines[a]), obj(lines[b])
    x["signed_document"] = y["signed_document"]
    lines[a] = dump(x)
    assert fails(reseal(lines)).code == "audit.document_digest"


def test_missing_evidence_names_the_entry() -> None:
    lines = list(big())
    dropped = where(lines, "evidence")[4]
    mid = obj(lines[dropped])["message_id"]
    err = fails(reseal([ln for i, ln in enumerate(lines) if i != dropped]))
    assert err.code == "audit.evidence_missing"
    assert err.index is not None
    entry = AuditEntry.from_bytes(unb64url(obj(lines[err.line - 1])["entry"]))
    assert mid in (entry.message_id, entry.detail.get("ack_id"))


def test_evidence_for_no_entry_fails() -> None:
    lines = list(big())
    a = where(lines, "evidence")[0]
    x = obj(lines[a])
    x["message_id"] = _mid(99999)
    lines[a] = dump(x)
    assert fails(reseal(lines)).code == "audit.evidence"


def test_document_signed_by_a_key_not_valid_for_the_sender_fails() -> None:
    # Message 0 is outbound from US but signed by the peer's key; message 5 by US's key B before
    # B's validity began (the rotation happens later).
    for k, key in ((0, CN_SIG), (5, US_SIG_B)):
        err = fails(export_lines(build_log(30, doc_key={k: key})))
        assert err.code == "audit.document_signature", k
        assert _mid(k) in err.detail


def test_bundle_with_a_bad_self_signature_fails() -> None:
    lines = list(big())
    i = where(lines, "bundle")[2]
    d = obj(lines[i])
    signed = json.loads(unb64url(d["signed_bundle"]))
    signed["signatures"][0]["signature"] = b64url(bytes(64))
    d["signed_bundle"] = b64url(json.dumps(signed, separators=(",", ":")).encode())
    lines[i] = dump(d)
    assert fails(reseal(lines)).code == "audit.bundle"


def test_header_must_come_first_and_match_its_log() -> None:
    lines = list(small())
    assert fails(lines[1:]).code == "audit.order"
    h = obj(lines[0])
    h["origin"] = log_origin(CN)
    assert fails(reseal([dump(h), *lines[1:]])).code == "audit.header"


def test_entries_after_the_last_checkpoint_fail() -> None:
    log = build_log(16, checkpoint_every=10)
    lines = list(export_lines(log, chunk=7))
    h = obj(lines[0])
    h["size"] += 1
    extra = dump({"t": "entry", "index": h["size"] - 1, "entry": b64url(log.entries[-1])})
    lines = reseal([dump(h), *lines[1:-1], extra, lines[-1]])
    assert fails(lines).code == "audit.checkpoint"


def test_error_carries_line_index_and_a_readable_reason() -> None:
    lines = list(big())
    i = where(lines, "entry")[7]
    d = obj(lines[i])
    d["entry"] = b64url(b'{"v":1,"kind":"nope"}')
    lines[i] = dump(d)
    err = fails(reseal(lines))
    assert (err.code, err.line, err.index) == ("audit.entry_malformed", i + 1, 7)
    assert err.diagnostics()["line"] == i + 1
    assert f"line {i + 1} (entry 7)" in str(err)


# --- disposal: documents withheld after a `disposed` entry ---------------------------------------


def dispose(log: Log, ks: list[int], *, digest: str | None = None) -> Log:
    """Dispose of messages `ks` as the disposal worker does: one `disposed` entry each (naming
    the document's digest, or `digest` to forge one), the store's document gone, a checkpoint."""
    at = T0 + dt.timedelta(days=3)
    for k in ks:
        mid = _mid(k)
        direction = "outbound" if ("outbound", mid) in log.evidence else "inbound"
        ev = log.evidence[(direction, mid)]
        log.add(
            AuditEntry(
                at=at,
                kind="disposed",
                actor="system",
                message_id=mid,
                peer=CN,
                digests={"document": digest or hashlib.sha256(ev["doc"]).hexdigest()},
                detail={"direction": direction, "type": "seizure-share", "retain_until": "2026-03-02"},
            )
        )
        ev["doc"] = None
    log.checkpoint(at)
    return log


DISPOSED = [0, 2, 3, 10]  # outbound delivered, inbound received, outbound refused, outbound acked (by 12)


@functools.cache
def disposed_export() -> tuple[bytes, ...]:
    return tuple(export_lines(dispose(build_log(16, checkpoint_every=10), DISPOSED), chunk=7))


def _line_of(lines: tuple[bytes, ...] | list[bytes], k: int) -> int:
    return next(i for i in where(lines, "evidence") if obj(lines[i])["message_id"] == _mid(k))


def test_entry_references_of_a_disposed_entry_follow_its_direction() -> None:
    for direction in ("outbound", "inbound"):
        e = AuditEntry(
            at=T0,
            kind="disposed",
            actor="system",
            message_id=_mid(1),
            peer=CN,
            digests={"document": "ab" * 32},
            detail={"direction": direction, "type": "seizure-share", "retain_until": "2026-03-02"},
        )
        (ref,) = entry_references(e)
        assert (ref.direction, ref.message_id, ref.name, ref.digest, ref.disposal) == (
            direction,
            _mid(1),
            "document",
            "ab" * 32,
            True,
        )
    # A `received` entry is about an inbound message, any other kind about an outbound one.
    sent = AuditEntry(at=T0, kind="sent", actor="system", message_id=_mid(1), digests={"document": "ab" * 32})
    got = dataclasses.replace(sent, kind="received")
    assert [(r.direction, r.disposal) for r in entry_references(sent)] == [("outbound", False)]
    assert [(r.direction, r.disposal) for r in entry_references(got)] == [("inbound", False)]


@pytest.mark.parametrize(
    "change",
    [
        {"detail": {"type": "seizure-share"}},
        {"detail": {"direction": "sideways"}},
        {"digests": {}},
        {"message_id": None},
    ],
)
def test_a_disposed_entry_that_names_no_message_direction_or_digest_is_malformed(change: dict[str, Any]) -> None:
    base = {
        "message_id": _mid(1),
        "digests": {"document": "ab" * 32},
        "detail": {"direction": "inbound", "type": "seizure-share"},
    }
    e = AuditEntry(at=T0, kind="disposed", actor="system", **{**base, **change})
    with pytest.raises(DecodeError, match="disposed entry"):
        entry_references(e)


def test_an_export_after_disposal_verifies_and_counts_the_disposed() -> None:
    lines = disposed_export()
    rep = verify_bundle(lines)
    assert rep.disposed == len(DISPOSED) and rep.to_dict()["disposed"] == len(DISPOSED)
    evidence = where(lines, "evidence")
    assert rep.documents == len(evidence) - len(DISPOSED)
    # Receipts and refusals of disposed messages are still carried and checked.
    full = verify_bundle(export_lines(build_log(16, checkpoint_every=10), chunk=7))
    assert (rep.receipts, rep.refusals) == (full.receipts, full.refusals) and full.disposed == 0
    for k in DISPOSED:
        d = obj(lines[_line_of(lines, k)])
        assert d["signed_document"] is None and d["withheld"] == "disposed"
        # The line follows the disposed entry that names it.
        before = [obj(lines[i]) for i in where(lines[: _line_of(lines, k)], "entry")]
        assert any(json.loads(unb64url(x["entry"])).get("kind") == "disposed" for x in before)
    # A line that carries its document has no `withheld` key: such lines are as before disposal.
    assert all("withheld" not in obj(lines[i]) for i in evidence if obj(lines[i])["signed_document"])


def _edit_line(lines: tuple[bytes, ...], k: int, **change: Any) -> tuple[list[bytes], int]:
    out = list(lines)
    i = _line_of(out, k)
    out[i] = dump({**obj(out[i]), **change})
    return reseal(out), i + 1


def test_a_document_withheld_without_a_disposed_entry_fails() -> None:
    lines, line = _edit_line(disposed_export(), 1, signed_document=None, withheld="disposed")
    err = fails(lines)
    assert (err.code, err.line) == ("audit.withheld", line)
    assert "no disposed entry" in err.detail and _mid(1) in err.detail
    assert err.index is not None


@pytest.mark.parametrize("reason", ["expired", "Disposed", "", None])
def test_a_withheld_document_must_say_disposed(reason: str | None) -> None:
    lines, line = _edit_line(disposed_export(), 0, withheld=reason)
    err = fails(lines)
    assert (err.code, err.line) == ("audit.withheld", line)


def test_a_line_cannot_carry_its_document_and_say_it_is_withheld() -> None:
    lines, line = _edit_line(disposed_export(), 1, withheld="disposed")
    assert (fails(lines).code, fails(lines).line) == ("audit.withheld", line)


def test_a_disposed_entry_naming_another_digest_fails() -> None:
    log = dispose(build_log(16, checkpoint_every=10), [0], digest="cd" * 32)
    err = fails(export_lines(log, chunk=7))
    assert err.code == "audit.document_digest"
    disposed_index = len(log.entries) - 1
    assert err.index == disposed_index and "another document" in err.detail


def test_a_disposed_messages_receipt_is_still_bound_to_the_logged_digest() -> None:
    lines = list(disposed_export())
    a, b = _line_of(lines, 0), _line_of(lines, 1)
    x, y = obj(lines[a]), obj(lines[b])
    x["receipt"] = y["receipt"]
    lines[a] = dump(x)
    err = fails(reseal(lines))
    assert (err.code, err.line) == ("audit.receipt", a + 1)
    # Without its receipt, which an entry names: still missing.
    lines = list(disposed_export())
    lines[a] = dump({**obj(lines[a]), "receipt": None})
    assert fails(reseal(lines)).code == "audit.receipt"


def test_the_writer_takes_a_document_or_a_reason() -> None:
    w = BundleWriter()
    kw: dict[str, Any] = {"message_id": _mid(1), "direction": "outbound", "peer": CN, "receipt": None, "refusal": None}
    for doc, why in ((None, None), (b"{}", "disposed"), (None, "expired")):
        with pytest.raises(ValueError, match="withheld"):
            w.evidence(signed_document=doc, withheld=why, **kw)


# --- never anything but BundleError -------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=60), max_size=6))
def test_arbitrary_bytes_raise_only_bundle_error(raw: list[bytes]) -> None:
    try:
        verify_bundle([r + b"\n" for r in raw])
    except BundleError as e:
        assert e.code in FAILURE_CODES


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_well_formed_lines_with_wrong_values_raise_only_bundle_error(data: st.DataObject) -> None:
    lines = list(small())
    i = data.draw(st.integers(0, len(lines) - 1), label="line")
    d = obj(lines[i])
    key = data.draw(st.sampled_from(sorted(d)), label="field")
    d[key] = data.draw(JSON | st.just(b64url(b'{"v":1,"kind":"sent","actor":"x","at":1}')), label="value")
    lines[i] = dump(d)
    try:
        verify_bundle(reseal(lines) if data.draw(st.booleans(), label="reseal") else lines)
    except BundleError as e:
        assert e.code in FAILURE_CODES
    except GatewayError as e:  # pragma: no cover - the failure message is the point
        pytest.fail(f"{type(e).__name__} escaped: {e!r}")


def test_entries_with_odd_json_types_fail_cleanly() -> None:
    lines = list(small())
    i = where(lines, "entry")[0]
    for bad in (
        b'{"v":1,"kind":["x"],"actor":"a"}',
        b'{"v":1,"kind":"sent","actor":"a","at":"2026-03-01T12:00:00.000Z","digests":{"document":7},"message_id":"m"}',
    ):
        d = obj(lines[i])
        d["entry"] = b64url(bad)
        lines[i] = dump(d)
        assert fails(reseal(lines)).code == "audit.entry_malformed"


def test_an_entry_with_a_key_twice_fails_even_resealed() -> None:
    """I-JSON: a log entry naming two messages, one for each kind of parser, is not an entry."""
    lines = list(small())
    i = where(lines, "entry")[0]
    d = obj(lines[i])
    entry = unb64url(d["entry"])
    pair = entry[entry.index(b'"kind":') :].split(b",", 1)[0]
    d["entry"] = b64url(twice(entry, pair))
    lines[i] = dump(d)
    err = fails(reseal(lines))
    assert err.code == "audit.entry_malformed" and "duplicate" in str(err), err


def test_an_exported_signed_document_with_a_key_twice_is_not_read() -> None:
    """The export's reader of signed documents (no 8 MiB cap) holds them to I-JSON too."""
    key = SigningKey(hashlib.sha256(b"export reader").digest())
    doc = Document("01950000-0000-7000-8000-0000000000ee", "US-CBP", "CN-GACC", "seizure-share", T0, {"n": 1})
    raw = SignedDocument.create(doc, key).raw
    assert read_signed_document(raw).raw == raw
    with pytest.raises(SchemaError) as ei:
        read_signed_document(twice(raw, b'"kid":"' + key.kid.encode() + b'"'))
    assert (ei.value.code, ei.value.field) == ("schema.duplicate_key", "signed_document.kid")


def test_report_is_a_frozen_value() -> None:
    rep = verify_bundle(small())
    with pytest.raises(dataclasses.FrozenInstanceError):
        rep.size = 0  # type: ignore[misc]


# --- the base64url decoder and the signature executor -------------------------------------------

B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _reference_unb64url(text: str, *, field: str) -> bytes:
    """Strict unpadded base64url the slow, obvious way: alphabet, decode, re-encode must match."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text, re.ASCII) or len(text) % 4 == 1:
        raise DecodeError(f"{field} is not unpadded base64url", field=field, code="decode.base64")
    out = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if base64.urlsafe_b64encode(out).rstrip(b"=").decode() != text:
        raise DecodeError(f"{field} is not canonical base64url", field=field, code="decode.base64")
    return out


def _decode(fn: Callable[..., bytes], text: str) -> bytes | str:
    try:
        return fn(text, field="x")
    except GatewayError as e:
        return e.code


@settings(max_examples=500, deadline=None)
@given(
    st.binary(max_size=40)
    | st.text(alphabet=B64URL + "+/= \n.é", max_size=12)
    # Long texts, as envelopes carry: from 384 characters pybase64 decodes (binascii below), and
    # its SIMD loop takes other paths above 32 or 64 bytes.
    | st.builds(
        lambda s, i, c: s[:i] + c + s[i + 1 :],
        st.text(B64URL, min_size=60, max_size=900),
        st.integers(0, 899),
        st.sampled_from("+/= \n.\x00é"),
    )
)
def test_the_verifiers_base64_decoder_agrees_with_a_reference(value: bytes | str) -> None:
    # Every line field and document goes through encoding.unb64url: one strict, canonical decode.
    text = b64url(value) if isinstance(value, bytes) else value
    assert _decode(unb64url, text) == _decode(_reference_unb64url, text)
    if isinstance(value, bytes):
        assert unb64url(text) == value


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=5000))
def test_b64url_writes_what_the_standard_library_writes(value: bytes) -> None:
    assert b64url(value) == base64.urlsafe_b64encode(value).rstrip(b"=").decode("ascii")
    assert unb64url(b64url(value)) == value


@pytest.mark.parametrize("bad", ["+", "/", "=", "\n", " ", "é", "\x00"])
@pytest.mark.parametrize("at", [0, 1, 700, 1499])
def test_a_long_base64url_text_with_one_character_outside_the_alphabet_is_refused(bad: str, at: int) -> None:
    # An envelope's ciphertext is kilobytes long: a '+' or '/' (standard alphabet), a padding '='
    # or whitespace anywhere in it is refused, not read past.
    text = b64url(bytes(range(256)) * 6)[:1500]
    with pytest.raises(GatewayError) as e:
        unb64url(text[:at] + bad + text[at + 1 :], field="ciphertext")
    assert e.value.code == "decode.base64" and e.value.field == "ciphertext"


class _Broken(ThreadPoolExecutor):
    """An executor whose workers die: every answer is lost."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        f: Future[Any] = Future()
        f.set_exception(RuntimeError("worker died"))
        return f


class _Closed(ThreadPoolExecutor):
    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        raise RuntimeError("cannot schedule new futures after shutdown")


def _outcome(lines: list[bytes], executor: Executor | None) -> tuple[str, int, int | None] | VerifyReport:
    try:
        return verify_bundle(lines, executor=executor)
    except BundleError as e:
        return (e.code, e.line, e.index)


@pytest.mark.parametrize("make", [ThreadPoolExecutor, _Broken, _Closed], ids=["threads", "broken", "closed"])
def test_an_executor_changes_nothing_but_speed(make: Callable[[int], Executor]) -> None:
    forged = export_lines(build_log(60, forged=frozenset({41})))
    with pytest.MonkeyPatch.context() as mp, make(1) as ex:
        mp.setattr(audit_keys, "BATCH", 8)  # many batches in flight, even for a small bundle
        assert _outcome(list(big()), ex) == _outcome(list(big()), None)
        err = _outcome(forged, ex)
        assert err == _outcome(forged, None)
        assert isinstance(err, tuple) and err[0] == "audit.document_signature"
        assert obj(forged[err[1] - 1])["message_id"] == _mid(41)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_first_failure_is_the_same_with_an_executor(data: st.DataObject) -> None:
    lines = export_lines(build_log(60, forged=frozenset({data.draw(st.integers(0, 59), label="forged")})))
    t = data.draw(st.sampled_from(TAMPERABLE), label="type")
    i = data.draw(st.sampled_from(where(lines, t)), label="line")
    pos = data.draw(st.integers(0, len(lines[i]) - 2), label="pos")
    lines = reseal([*lines[:i], _flip(lines[i], pos, data.draw(st.integers(1, 255), label="xor")), *lines[i + 1 :]])
    with pytest.MonkeyPatch.context() as mp, ThreadPoolExecutor(1) as ex:
        mp.setattr(audit_keys, "BATCH", 4)
        assert _outcome(lines, ex) == _outcome(lines, None)


def test_a_process_pool_checks_the_signatures() -> None:
    # Message 30's signature is in the first batch, the one the pool checks.
    forged = export_lines(build_log(150, forged=frozenset({30})))
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
        assert verify_bundle(big(), executor=ex).documents == 88
        err = fails(forged, executor=ex)
    assert err.code == "audit.document_signature"
    assert obj(forged[err.line - 1])["message_id"] == _mid(30)


def test_an_export_line_with_a_key_twice_fails_even_resealed() -> None:
    """I-JSON for the export's own lines: an entry line carrying a forged entry first (kept by a
    parser that keeps the first) and the genuine one last (kept by msgspec) is one file showing
    two auditors two logs."""
    lines = list(small())
    i, j = where(lines, "entry")[:2]
    forged = lines[j][lines[j].index(b'"entry":') :].rstrip(b"}\n")
    lines[i] = lines[i].replace(b'"entry":', forged + b',"entry":', 1)
    err = fails(reseal(lines))
    assert err.code == "audit.malformed" and "line.entry appears twice" in str(err), err
    assert err.line == i + 1


def test_an_export_line_with_other_spacing_but_no_key_twice_verifies() -> None:
    """Only a key twice is refused: a line not in its written form is read as before."""
    lines = list(small())
    i = where(lines, "entry")[0]
    lines[i] = lines[i].replace(b'","', b'", "', 1).replace(b',"entry"', b', "entry"', 1)
    assert lines[i] != small()[i]
    verify_bundle(reseal(lines))
