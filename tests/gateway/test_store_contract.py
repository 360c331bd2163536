"""The Store contract, run against both backends directly (no HTTP): same calls, same answers.

Each case drives one `Store` method family the way the gateway does and checks what base.py
promises; a backend that differs from the other in any answer fails here first.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from customs_gateway.core.audit import AuditEntry
from customs_gateway.core.encoding import format_ts
from customs_gateway.core.errors import Conflict, NotFound
from customs_gateway.core.merkle import (
    TreeRangeError,
    leaf_hash,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)
from customs_gateway.store.base import (
    AttemptOutcome,
    CheckpointRecord,
    MessageFilter,
    Store,
    TokenRecord,
    WitnessState,
)
from customs_gateway.store.postgres import PostgresStore
from customs_gateway.store.sqlite import SQLiteStore
from tests.postgres.pg import drop_later, dsn_for, new_schema_name, require_postgres
from tests.postgres.records import CN, T0, US, arrival, delivered, entry, new_message, retry

from .conftest import STORES


def _ms(v: dt.datetime) -> dt.datetime:
    return v.replace(microsecond=v.microsecond // 1000 * 1000)


@contextlib.asynccontextmanager
async def _opened(kind: str, path: Path) -> AsyncIterator[Store]:
    """A fresh store: a SQLite file at `path`, or a new PostgreSQL schema (dropped afterwards)."""
    schema = None
    s: Store
    if kind == "sqlite":
        s = SQLiteStore(path)
    else:
        require_postgres()
        schema = new_schema_name("contract")
        s = PostgresStore(dsn_for(schema))
    await s.open()
    try:
        yield s
    finally:
        await s.close()
        if schema is not None:
            drop_later(schema)


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with _opened(request.param, tmp_path / "store.db") as s:
        yield s


async def _leaves(store: Store) -> list[bytes]:
    size = await store.audit_size()
    return [leaf_hash(e) for _, e in await store.audit_entries(0, size)]


async def _kinds(store: Store, last: int) -> list[str]:
    """The kinds of the last `last` audit entries, oldest first."""
    size = await store.audit_size()
    rows = await store.audit_entries(size - last, size)
    return [e.split(b'"kind":"')[1].split(b'"')[0].decode() for _, e in rows]


async def test_submit_assigns_per_peer_seq_and_is_idempotent(store: Store) -> None:
    a1, a2 = new_message(CN), new_message(CN)
    other = new_message("XX-OTHER")
    seqs = [(await store.submit(m, entry("submitted", m.id)))[0].seq for m in (a1, other, a2)]
    assert seqs == [1, 1, 2]
    keyed = new_message(CN, key="k-1", request=b"body A")
    first, created = await store.submit(keyed, entry("submitted", keyed.id))
    assert created and first.seq == 3 and first.status == "queued" and first.attempts == 0
    again, created = await store.submit(new_message(CN, key="k-1", request=b"body A"), entry())
    assert not created and again.id == keyed.id and again.seq == 3
    with pytest.raises(Conflict) as err:
        await store.submit(new_message(CN, key="k-1", request=b"body B"), entry())
    assert err.value.code == "idempotency.conflict"
    assert await store.audit_size() == 4  # one entry per message actually queued
    assert (await store.peer_state(CN)).next_seq == 4
    # Times come back at millisecond precision, the same on both backends.
    got = await store.get_message(a1.id)
    assert got is not None
    assert got.created_at == _ms(T0) and got.next_attempt_at == _ms(T0)
    assert [h[1] for h in got.history] == ["queued"]


async def test_concurrent_submissions_commit_as_if_one_after_another(store: Store) -> None:
    """Submissions arriving together (PostgreSQL commits them as a group) get the answers they
    would get one by one: distinct, gapless sequence numbers in arrival order, the same message
    for a repeated Idempotency-Key, a conflict for the key reused with another request, and one
    audit entry per message queued."""
    before = await store.audit_size()
    stored_first = new_message(CN, key="k-early", request=b"A")
    await store.submit(stored_first, entry("submitted", stored_first.id))
    msgs = [new_message(CN) for _ in range(40)]
    msgs[10] = new_message(CN, key="k-group", request=b"G")
    msgs[20] = new_message(CN, key="k-group", request=b"G")  # same key and request, same group
    msgs[25] = new_message(CN, key="k-group", request=b"other")  # same key, another request
    msgs[30] = new_message(CN, key="k-early", request=b"A")  # replays a message stored before
    msgs[35] = new_message(CN, key="k-early", request=b"B")
    answers = await asyncio.gather(*(store.submit(m, entry("submitted", m.id)) for m in msgs), return_exceptions=True)
    conflicts = [i for i, a in enumerate(answers) if isinstance(a, Conflict)]
    assert conflicts == [25, 35]
    ok = {i: a for i, a in enumerate(answers) if not isinstance(a, BaseException)}
    assert len(ok) == 38
    assert ok[20][0].id == msgs[10].id and ok[20][1] is False and ok[20][0].seq == ok[10][0].seq
    assert ok[30][0].id == stored_first.id and ok[30][1] is False and ok[30][0].seq == 1
    fresh = [a[0] for i, a in sorted(ok.items()) if a[1]]
    assert [m.seq for m in fresh] == list(range(2, 2 + len(fresh)))
    assert len(fresh) == 36  # 40, less two conflicts and two replays
    assert await store.audit_size() == before + 1 + 36
    for m in fresh:
        got = await store.get_message(m.id)
        assert got is not None and got.seq == m.seq and [h[1] for h in got.history] == ["queued"]
    assert (await store.peer_state(CN)).next_seq == 2 + len(fresh)


async def test_due_is_the_head_gated_prefix(store: Store) -> None:
    msgs = [new_message(CN) for _ in range(4)]
    for m in msgs:
        await store.submit(m, entry("submitted", m.id))
    assert [m.seq for m in await store.due(CN, T0, 3)] == [1, 2, 3]
    later = T0 + dt.timedelta(seconds=30)
    await store.record_outcomes([retry(m.id, T0, later) for m in msgs[:1]])
    # The head waits until later, and everything behind it waits with it.
    assert await store.due(CN, T0 + dt.timedelta(seconds=29), 10) == []
    assert await store.next_due_at(CN) == _ms(later)
    batch = await store.due(CN, later, 10)
    assert [m.id for m in batch] == [m.id for m in msgs]
    assert (
        batch[0].status == "retrying" and batch[0].attempts == 1 and batch[0].ciphertext == b"ct " + msgs[0].id.encode()
    )
    assert await store.queue_depth(CN) == (4, _ms(T0))
    assert await store.due("XX-NOBODY", later, 10) == []
    assert await store.next_due_at("XX-NOBODY") is None


async def test_outcomes_follow_the_state_machine(store: Store) -> None:
    m1, m2, m3 = (new_message(CN) for _ in range(3))
    for m in (m1, m2, m3):
        await store.submit(m, entry("submitted", m.id))
    t1 = T0 + dt.timedelta(seconds=1)
    expired = AttemptOutcome(m3.id, "expired", t1, 0, error="expired before delivery", audit=(entry("expired", m3.id),))
    refused = AttemptOutcome(
        m2.id, "refused", t1, 1, refusal=b"refusal", error="schema.x: no", audit=(entry("refused", m2.id),)
    )
    await store.record_outcomes([delivered(m1.id, t1), refused, expired])
    # G7: each outcome's audit entries land in the same commit, in outcome order.
    assert await _kinds(store, 3) == ["delivered", "refused", "expired"]
    got = {m.id: await store.get_message(m.id) for m in (m1, m2, m3)}
    s1, s2, s3 = (got[m.id] for m in (m1, m2, m3))
    assert s1 is not None and s2 is not None and s3 is not None
    assert (s1.status, s1.receipt, s1.ciphertext) == ("delivered", b"receipt " + m1.id.encode(), None)
    assert (s2.status, s2.refusal, s2.last_error) == ("refused", b"refusal", "schema.x: no")
    assert s3.status == "expired"
    assert [h[1] for h in s1.history] == ["queued", "delivered"]
    # A late retry of a delivered message changes nothing (and logs nothing).
    size = await store.audit_size()
    await store.record_outcomes([retry(m1.id, t1, t1, attempt=1)])
    again = await store.get_message(m1.id)
    assert again is not None and again.status == "delivered" and again.attempts == 1
    assert await store.audit_size() == size
    assert await store.due(CN, t1, 10) == []


async def test_outcomes_for_one_message_in_one_batch_apply_in_order(store: Store) -> None:
    m = new_message(CN)
    await store.submit(m, entry("submitted", m.id))
    t1, t2 = T0 + dt.timedelta(seconds=1), T0 + dt.timedelta(seconds=2)
    # Each outcome sees the status the one before it left: queued -> sent -> delivered, and a
    # retry reported after the receipt changes nothing.
    await store.record_outcomes([retry(m.id, t1, t2), delivered(m.id, t2), retry(m.id, t2, t2, attempt=2)])
    got = await store.get_message(m.id)
    assert got is not None and got.status == "delivered" and got.attempts == 1
    assert [h[1] for h in got.history] == ["queued", "retrying", "delivered"]
    assert await _kinds(store, 2) == ["sent", "delivered"]


async def test_arrivals_dedupe_and_track_sequence(store: Store) -> None:
    first, fourth = arrival(1), arrival(4)
    res = await store.accept_incoming([first, fourth, dataclasses.replace(first)])
    assert [r.status for r in res] == ["accepted", "accepted", "duplicate"]
    assert res[2].receipt == first.receipt
    conflict = arrival(1, mid=first.id, document=b"another document")
    dup = await store.accept_incoming([conflict, first])
    assert [(r.status, r.receipt) for r in dup] == [("conflict", None), ("duplicate", first.receipt)]
    st = await store.peer_state(US)
    assert (st.recv_high_water, st.gap_count, st.gaps) == (4, 1, ((2, 3),))
    assert await store.audit_size() == 2  # duplicates and conflicts change nothing here
    items = await store.inbox_after(0, 10, ("seizure-share",))
    assert [i.id for i in items] == [first.id, fourth.id]
    assert items[0].received_at == _ms(first.received_at) and items[0].body == first.body
    assert await store.inbox_after(items[0].cursor, 10, ("seizure-share",)) == items[1:]
    assert await store.inbox_after(0, 10, ("seminar-notice",)) == []
    assert await store.inbox_item(first.id) == items[0]
    assert await store.inbox_item("in-missing") is None


async def test_acknowledge_queues_an_ack_once(store: Store) -> None:
    item = arrival(1)
    await store.accept_incoming([item])
    ack = new_message(US, msg_type="ack", token=None)
    out = await store.acknowledge_inbox(item.id, "processed", ack, entry("acknowledged", item.id))
    assert (out.id, out.peer, out.seq, out.status) == (ack.id, US, 1, "queued")
    got = await store.inbox_item(item.id)
    assert got is not None and (got.ack_status, got.ack_message_id) == ("processed", ack.id)
    with pytest.raises(Conflict) as err:
        await store.acknowledge_inbox(item.id, "rejected", new_message(US, msg_type="ack"), entry())
    assert err.value.code == "ack.already"
    with pytest.raises(NotFound):
        await store.acknowledge_inbox("in-missing", "processed", new_message(US, msg_type="ack"), entry())
    # Control messages are queued but not listed to back-ends.
    assert await store.list_messages(MessageFilter(), None, 10) == []


async def test_an_ack_arrival_marks_our_message_acknowledged(store: Store) -> None:
    ours = new_message(US)
    await store.submit(ours, entry("submitted", ours.id))
    await store.record_outcomes([delivered(ours.id)])
    ack = dataclasses.replace(
        arrival(1, msg_type="ack", acks=ours.id, ack_digest=ours.document_sha256), extra_audit=(entry("key_announced"),)
    )
    assert [r.status for r in await store.accept_incoming([ack])] == ["accepted"]
    got = await store.get_message(ours.id)
    assert got is not None and got.status == "acknowledged"
    assert got.ack == {"status": "processed", "document_sha256": ours.document_sha256.hex()}
    assert got.history[-1][1:] == ("acknowledged", "processed")
    kinds = [e.split(b'"kind":"')[1].split(b'"')[0] for _, e in await store.audit_entries(0, 100)]
    assert kinds[-3:] == [b"received", b"key_announced", b"acknowledged"]


async def test_an_ack_moves_only_a_delivered_message_naming_its_document(store: Store) -> None:
    queued, done, other_peer = new_message(US), new_message(US), new_message("EU-OLAF")
    for m in (queued, done, other_peer):
        await store.submit(m, entry("submitted", m.id))
    await store.record_outcomes([delivered(done.id)])
    size_before = (await store.audit_head())[0]
    cases = [
        (queued.id, queued.document_sha256, "ack.not_yet_delivered"),  # receipt not stored yet: retryable
        (done.id, hashlib.sha256(b"another document").digest(), "ack.digest_mismatch"),
        ("01950000-0000-7000-8000-00000000dead", done.document_sha256, "ack.unknown_message"),
        (other_peer.id, other_peer.document_sha256, "ack.unknown_message"),  # not sent to this sender
    ]
    for n, (acked, digest, code) in enumerate(cases, 1):
        [res] = await store.accept_incoming([arrival(n, msg_type="ack", acks=acked, ack_digest=digest)])
        assert (res.status, res.code, res.receipt) == ("refused", code, None), acked
    # Nothing was written: no inbox rows, no audit entries, no status change, no sequence moved.
    assert await store.inbox_after(0, 100, ("ack",)) == []
    assert (await store.audit_head())[0] == size_before
    assert (await store.get_message(queued.id)).status == "queued"  # type: ignore[union-attr]
    assert (await store.get_message(done.id)).status == "delivered"  # type: ignore[union-attr]
    assert (await store.peer_state(US)).recv_high_water == 0
    # The right ack then moves it; a second ack (another id) for it is refused.
    ok = arrival(5, msg_type="ack", acks=done.id, ack_digest=done.document_sha256)
    assert [r.status for r in await store.accept_incoming([ok])] == ["accepted"]
    again = arrival(6, msg_type="ack", acks=done.id, ack_digest=done.document_sha256)
    [res] = await store.accept_incoming([again])
    assert (res.status, res.code) == ("refused", "ack.wrong_state")


async def test_a_known_sequence_number_with_another_id_is_refused(store: Store) -> None:
    first, third = arrival(1), arrival(3)
    assert [r.status for r in await store.accept_incoming([first, third])] == ["accepted", "accepted"]
    size = (await store.audit_head())[0]
    [reused] = await store.accept_incoming([arrival(1)])  # a restored sender: seq 1 again, another id
    assert (reused.status, reused.code, reused.field) == ("refused", "replay.seq_reused", "header.seq")
    assert first.id in reused.detail
    assert (await store.audit_head())[0] == size  # nothing written (the gateway logs the refusal)
    # The gap (seq 2) may still arrive late; the same message again is a duplicate, not a reuse.
    assert [r.status for r in await store.accept_incoming([arrival(2), first])] == ["accepted", "duplicate"]
    state = await store.peer_state(US)
    assert state.recv_high_water == 3 and state.gap_count == 1


async def test_receipts_held(store: Store) -> None:
    a, b = arrival(1), arrival(2, sender=CN)
    await store.accept_incoming([a, b])
    held = await store.receipts_held(US, [a.id, b.id, "nothing", a.id])
    assert held == {a.id: a.receipt}
    assert await store.receipts_held(US, []) == {}


async def test_list_messages_filters_and_pages(store: Store) -> None:
    msgs = [new_message(CN, at=T0 + dt.timedelta(minutes=i)) for i in range(5)]
    for m in msgs:
        await store.submit(m, entry("submitted", m.id))
    await store.record_outcomes([delivered(msgs[0].id)])
    page1 = await store.list_messages(MessageFilter(), None, 2)
    page2 = await store.list_messages(MessageFilter(), page1[-1].id, 2)
    assert [m.id for m in page1 + page2] == [m.id for m in msgs[:4]]
    assert [m.id for m in await store.list_messages(MessageFilter(status="delivered"), None, 9)] == [msgs[0].id]
    since = await store.list_messages(MessageFilter(since=T0 + dt.timedelta(minutes=3)), None, 9)
    assert [m.id for m in since] == [m.id for m in msgs[3:]]
    assert await store.list_messages(MessageFilter(peer="XX-OTHER"), None, 9) == []


async def test_tokens(store: Store) -> None:
    tok = TokenRecord("tok-a", "auditor", hashlib.sha256(b"secret").digest(), "label", T0)
    await store.add_token(tok, entry("token_issued"))
    assert await store.get_token("tok-a") == dataclasses.replace(tok, created_at=_ms(T0))
    assert await store.get_token("tok-b") is None
    assert await store.audit_size() == 1
    t1 = T0 + dt.timedelta(minutes=1)
    revoked = await store.revoke_token("tok-a", t1, entry("token_revoked"))
    assert revoked == dataclasses.replace(tok, created_at=_ms(T0), revoked_at=_ms(t1))
    assert await store.get_token("tok-a") == revoked
    # A repeated or unknown revocation is refused and logs nothing (G7: only state changes).
    with pytest.raises(Conflict) as conflict:
        await store.revoke_token("tok-a", t1, entry("token_revoked"))
    assert conflict.value.code == "token.already_revoked"
    with pytest.raises(NotFound) as missing:
        await store.revoke_token("tok-b", t1, entry("token_revoked"))
    assert missing.value.code == "token.not_found"
    assert await _kinds(store, 2) == ["token_issued", "token_revoked"]
    assert await store.audit_size() == 2


async def test_list_tokens_oldest_first_with_revocations(store: Store) -> None:
    for n in range(3):
        rec = TokenRecord(f"{n:016x}", "agency", bytes(32), f"t{n}", T0 + dt.timedelta(seconds=n))
        await store.add_token(rec, entry("token_issued", at=T0))
    await store.revoke_token(f"{1:016x}", T0 + dt.timedelta(minutes=1), entry("token_revoked", at=T0))
    listed = await store.list_tokens()
    assert [t.id for t in listed] == [f"{n:016x}" for n in range(3)]
    assert [t.revoked_at is not None for t in listed] == [False, True, False]


async def test_audit_log_roots_and_proofs(store: Store) -> None:
    for n in (1, 2, 5, 1, 8, 3):  # batches of every shape, so nodes complete mid-batch
        await store.append_audit([entry(detail=f"{n}-{i}") for i in range(n)])
    await store.append_audit([])
    leaves = await _leaves(store)
    size, root = await store.audit_head()
    assert size == len(leaves) == 20 and root == root_from_leaves(leaves)
    for old in (0, 1, 7, 8, 13, 20):
        assert await store.root_at(old) == root_from_leaves(leaves[:old])
        if old:
            proof = await store.consistency_proof(old, size)
            verify_consistency(old, size, proof, root_from_leaves(leaves[:old]), root)
    for index, at_size in ((0, 1), (6, 7), (12, 20), (19, 20)):
        proof = await store.inclusion_proof(index, at_size)
        verify_inclusion(leaves[index], index, at_size, proof, root_from_leaves(leaves[:at_size]))
    with pytest.raises(TreeRangeError):
        await store.inclusion_proof(0, 21)
    with pytest.raises(TreeRangeError):
        await store.root_at(21)
    assert [i for i, _ in await store.audit_entries(18, 30)] == [18, 19]


async def test_audit_time_never_runs_backwards_across_appends(store: Store) -> None:
    await store.append_audit([entry("sent", "m1", at=T0)])
    await store.append_audit([entry("sent", "m2", at=T0 - dt.timedelta(minutes=10))])  # clock ran back
    await store.append_audit([entry("sent", "m3", at=T0 + dt.timedelta(seconds=1))])
    written = [AuditEntry.from_bytes(data) for _, data in await store.audit_entries(0, 3)]
    assert [e.at for e in written] == [_ms(T0), _ms(T0), _ms(T0 + dt.timedelta(seconds=1))]
    assert written[1].detail["clock_at"] == format_ts(T0 - dt.timedelta(minutes=10))
    assert "clock_at" not in written[2].detail


async def test_entries_about_messages_are_found_by_index(store: Store) -> None:
    await store.append_audit([entry("sent", f"m{i % 4}", n=i) for i in range(40)])
    about = await store.audit_entries_about(["m1", "m3"], 30)
    assert [i for i, _ in about] == [i for i in range(30) if i % 4 in (1, 3)]
    assert all(AuditEntry.from_bytes(data).message_id in ("m1", "m3") for _, data in about)
    assert await store.audit_entries_about([], 40) == []
    assert await store.audit_entries_about(["nothing"], 40) == []


async def test_checkpoints_witness_bundles_evidence(store: Store) -> None:
    for size in (3, 8):
        await store.add_checkpoint(CheckpointRecord(size, bytes(32), b"note %d" % size, T0))
    await store.add_checkpoint(CheckpointRecord(8, bytes(32), b"ignored", T0))
    assert await store.latest_checkpoint(cosigned=True) is None
    await store.set_cosigned(3, b"cosigned 3", T0)
    latest = await store.latest_checkpoint()
    cosigned = await store.latest_checkpoint(cosigned=True)
    assert latest is not None and (latest.size, latest.note, latest.created_at) == (8, b"note 8", _ms(T0))
    assert cosigned is not None and (cosigned.size, cosigned.cosigned_note) == (3, b"cosigned 3")
    assert [c.size for c in await store.checkpoints(after_size=3)] == [8]

    origin = "customs-gateway/US-CBP/audit"
    assert await store.witness_state(origin) is None
    await store.witness_advance(origin, 0, WitnessState(origin, 5, b"r5", b"n5"), T0)
    with pytest.raises(Conflict) as err:
        await store.witness_advance(origin, 0, WitnessState(origin, 6, b"r6", b"n6"), T0)
    assert err.value.code == "witness.size_mismatch"
    await store.witness_advance(origin, 5, WitnessState(origin, 9, b"r9", b"n9"), T0)
    assert await store.witness_state(origin) == WitnessState(origin, 9, b"r9", b"n9")

    for owner, bundle in ((US, b"b1"), (CN, b"c1"), (US, b"b1"), (US, b"b2")):
        await store.remember_bundle(owner, bundle, T0)
    assert sorted(await store.bundles()) == [(CN, b"c1"), (US, b"b1"), (US, b"b2")]

    out, inbound = new_message(CN), arrival(1)
    await store.submit(out, entry("submitted", out.id))
    await store.record_outcomes([delivered(out.id)])
    await store.accept_incoming([inbound])
    ev = {e.message_id: e for e in await store.evidence([out.id, inbound.id, "nothing"])}
    assert (ev[out.id].direction, ev[out.id].receipt) == ("outbound", b"receipt " + out.id.encode())
    assert (ev[inbound.id].direction, ev[inbound.id].receipt) == ("inbound", inbound.receipt)


async def test_due_after_seq_plans_behind_a_batch_in_flight(store: Store) -> None:
    msgs = [new_message(CN) for _ in range(6)]
    for m in msgs:
        await store.submit(m, entry("submitted", m.id))
    first = await store.due(CN, T0, 3)
    assert [m.seq for m in first] == [1, 2, 3]
    ahead = await store.due(CN, T0, 3, after_seq=first[-1].seq)
    assert [m.seq for m in ahead] == [4, 5, 6]
    assert await store.due(CN, T0, 3, after_seq=6) == []
    await store.release([m.id for m in ahead])  # a batch planned ahead and given up
    # The batch behind is gated by its own first message like any head.
    later = T0 + dt.timedelta(seconds=30)
    await store.record_outcomes([retry(msgs[3].id, T0, later)])
    assert await store.due(CN, T0, 3, after_seq=3) == []
    assert [m.seq for m in await store.due(CN, later, 3, after_seq=3)] == [4, 5, 6]


async def test_sqlite_group_with_a_failed_job_keeps_the_log_whole(tmp_path: Path) -> None:
    """Jobs of one commit group share the audit frontier; a job that appended and then failed is
    rolled back, and the jobs after it must append from the rolled-back frontier."""
    from customs_gateway.store.sqlite import _audit

    s = SQLiteStore(tmp_path / "g.db")
    await s.open()
    try:

        def failing(c: object) -> None:
            _audit(c, entry(detail="rolled back"), entry(detail="rolled back too"))  # type: ignore[arg-type]
            raise ValueError("this job fails after appending")

        jobs = []
        for i in range(12):
            jobs.append(s.append_audit([entry(detail=f"ok-{i}")]))
            if i % 4 == 1:
                jobs.append(s._write(failing))
        results = await asyncio.gather(*jobs, return_exceptions=True)
        assert sum(isinstance(r, ValueError) for r in results) == 3
        leaves = await _leaves(s)
        size, root = await s.audit_head()
        assert size == len(leaves) == 12 and root == root_from_leaves(leaves)
        assert sorted(e.decode() for _, e in await s.audit_entries(0, 12) if b"rolled back" in e) == []
    finally:
        await s.close()


async def test_pending_includes_control_messages_and_renumbering_moves_them_all(store: Store) -> None:
    msgs = [new_message(CN), new_message(CN, msg_type="ack"), new_message(CN, msg_type="key-announcement")]
    for m in msgs:
        await store.submit(m, entry("submitted", m.id))
    done = new_message(CN)
    await store.submit(done, entry("submitted", done.id))
    await store.record_outcomes([delivered(done.id)])
    assert [m.id for m in await store.pending(CN)] == [m.id for m in msgs]  # by seq, control ones too
    assert await store.renumber_pending(CN, 40, entry("recovered")) == 3
    assert [m.seq for m in await store.pending(CN)] == [40, 41, 42]
    assert (await store.peer_state(CN)).next_seq == 43
    got = await store.get_message(done.id)
    assert got is not None and got.seq == 4  # a finished message keeps its number


@pytest.fixture
async def twin(store: Store, tmp_path: Path) -> AsyncIterator[Store]:
    """A second empty store of the same kind as `store`."""
    async with _opened("sqlite" if isinstance(store, SQLiteStore) else "postgres", tmp_path / "twin.db") as s:
        yield s


async def test_a_batch_of_arrivals_ends_as_the_same_arrivals_one_by_one(store: Store, twin: Store) -> None:
    """The batch path (PostgreSQL stores the usual arrivals of a batch together) gives the
    results, rows, sequence state and audit entries that the arrivals give one at a time."""
    ours = new_message(US)
    for s in (store, twin):
        await s.submit(ours, entry("submitted", ours.id))
    first, third = arrival(1), arrival(3)
    batch = [
        third,
        first,  # below the high water, a gap filled late
        dataclasses.replace(third),  # the same again in the batch: a duplicate
        arrival(1, mid=first.id, document=b"another document"),  # conflict
        arrival(2),
        arrival(3),  # a sequence number already used, another id: refused
        arrival(7),  # a gap 4-6
        arrival(8, msg_type="ack", acks="01950000-0000-7000-8000-00000000dead", ack_digest=b"x" * 32),  # refused
        arrival(9),
        arrival(12),  # another gap
        arrival(13, sender=CN),
    ]
    together = await store.accept_incoming(batch)
    one_by_one = [(await twin.accept_incoming([it]))[0] for it in batch]
    assert [(r.status, r.code, r.receipt) for r in together] == [(r.status, r.code, r.receipt) for r in one_by_one]
    assert [r.status for r in together] == [
        "accepted",
        "accepted",
        "duplicate",
        "conflict",
        "accepted",
        "refused",
        "accepted",
        "refused",
        "accepted",
        "accepted",
        "accepted",
    ]
    for peer in (US, CN):
        a, b = await store.peer_state(peer), await twin.peer_state(peer)
        assert (a.recv_high_water, a.gap_count, a.gaps) == (b.recv_high_water, b.gap_count, b.gaps)
    assert (await store.peer_state(US)).recv_high_water == 12
    ids = [i.id for i in await store.inbox_after(0, 100, ("seizure-share",))]
    assert ids == [i.id for i in await twin.inbox_after(0, 100, ("seizure-share",))]
    assert await _leaves(store) == await _leaves(twin)
