"""Several replicas on one PostgreSQL schema: claims, takeover, dedupe, one audit writer, migrations.

Each "replica" is its own PostgresStore (own pool, own replica id) on a shared fresh schema; the
races run for real on the server, interleaved by asyncio.gather.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from customs_gateway.core.audit import AuditEntry
from customs_gateway.core.errors import Conflict, StoreUnavailable
from customs_gateway.core.merkle import leaf_hash, root_from_leaves, verify_inclusion
from customs_gateway.store.base import NewMessage
from customs_gateway.store.pg_migrations import PG_MIGRATIONS, quote_ident
from customs_gateway.store.postgres import _INBOX_IDS_HELD, PostgresStore, dsn_schema

from .pg import base_dsn, drop_later, dsn_for, new_schema_name, require_postgres
from .records import CN, T0, US, arrival, delivered, entry, new_message, retry

LEASE = 30.0
Replicas = Callable[..., Awaitable[PostgresStore]]


@pytest.fixture
async def replicas() -> AsyncIterator[Replicas]:
    """A factory of opened stores, all on one fresh schema; closed and dropped afterwards."""
    require_postgres()
    schema = new_schema_name("replicas")
    opened: list[PostgresStore] = []

    async def make(*, open_store: bool = True, **kw: object) -> PostgresStore:
        store = PostgresStore(dsn_for(schema), lease_seconds=LEASE, pool_size=4, **kw)  # type: ignore[arg-type]
        opened.append(store)
        if open_store:
            await store.open()
        return store

    try:
        yield make
    finally:
        for store in opened:
            await store.close()
        drop_later(schema)


async def _queue(store: PostgresStore, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        m = new_message(CN)
        await store.submit(m, entry("submitted", m.id))
        ids.append(m.id)
    return ids


async def test_concurrent_due_never_hands_a_message_to_two_replicas(replicas: Replicas) -> None:
    a, b = await replicas(), await replicas()
    ids = await _queue(a, 40)
    handed: list[tuple[str, list[str]]] = []
    holder: list[str] = []
    done = asyncio.Event()

    async def worker(store: PostgresStore) -> None:
        try:
            while not done.is_set():
                batch = await store.due(CN, T0, 7)
                if not batch:
                    await asyncio.sleep(0.001)
                    continue
                # Whoever holds a batch must be alone until its outcomes are recorded.
                assert holder == [], f"{store.replica_id} got a batch while {holder} held one"
                holder.append(store.replica_id)
                handed.append((store.replica_id, [m.id for m in batch]))
                await asyncio.sleep(0.005)  # the "send"
                holder.clear()
                await store.record_outcomes([delivered(m.id) for m in batch])
                if sum(len(h[1]) for h in handed) == len(ids):
                    done.set()
        finally:
            if sum(len(h[1]) for h in handed) != len(ids):
                done.set()  # a failing worker stops the other one too

    await asyncio.wait_for(asyncio.gather(worker(a), worker(b)), 30)
    sent = [mid for _, batch in handed for mid in batch]
    assert sent == ids  # each exactly once, in seq order
    assert await a.queue_depth(CN) == (0, None)


async def test_a_crashed_replicas_claim_is_taken_over_after_the_lease(replicas: Replicas) -> None:
    crashed, b, c = await replicas(), await replicas(), await replicas()
    ids = await _queue(crashed, 5)
    assert [m.id for m in await crashed.due(CN, T0, 10)] == ids  # ...and it never reports back
    lease_end = T0 + dt.timedelta(seconds=LEASE)
    assert await b.due(CN, T0, 10) == []
    assert await b.due(CN, lease_end - dt.timedelta(seconds=1), 10) == []
    # Not due for b before the lease runs out, so its worker sleeps instead of spinning.
    assert await b.next_due_at(CN) == lease_end
    assert await crashed.next_due_at(CN) == T0.replace(microsecond=123000)
    taken = await b.due(CN, lease_end + dt.timedelta(seconds=1), 10)
    assert [m.id for m in taken] == ids
    # The old claimant's late report stands as a fact but does not release b's claim.
    late = lease_end + dt.timedelta(seconds=2)
    await crashed.record_outcomes([retry(mid, late, late) for mid in ids])
    assert await c.due(CN, late, 10) == []
    await b.record_outcomes([delivered(mid, late) for mid in ids])
    assert await c.due(CN, late, 10) == [] and await c.queue_depth(CN) == (0, None)


async def test_recording_outcomes_gives_up_the_claims_with_the_same_update(replicas: Replicas) -> None:
    # The claim is cleared by the outcome's own UPDATE (one row version a message, not two), and
    # by a separate one for a message no outcome changes: either way another replica may take
    # up at once whatever is due again, without waiting for the lease.
    a, b = await replicas(), await replicas()
    ids = await _queue(a, 4)
    assert len(await a.due(CN, T0, 10)) == 4
    soon = T0 + dt.timedelta(seconds=1)
    await a.record_outcomes([delivered(ids[0]), *(retry(mid, T0, soon) for mid in ids[1:])])
    assert [m.id for m in await b.due(CN, soon, 10)] == ids[1:]  # well inside a's 30 s lease
    # b's claim holds against a's stale reports: a delivered twice (no change) and a retry.
    await a.record_outcomes([delivered(ids[0]), retry(ids[1], soon, soon, attempt=2)])
    assert await a.due(CN, soon, 10) == []
    await b.record_outcomes([delivered(ids[0]), *(delivered(mid, soon, attempt=2) for mid in ids[1:])])
    async with a._read() as c:
        claims = await c.fetch("SELECT claimed_by, claim_expires_at FROM messages WHERE claimed_by IS NOT NULL")
    assert claims == [] and await a.queue_depth(CN) == (0, None)


async def test_a_replica_that_stops_cleanly_hands_its_claim_back(replicas: Replicas) -> None:
    leaving, staying = await replicas(), await replicas()
    ids = await _queue(leaving, 3)
    assert len(await leaving.due(CN, T0, 10)) == 3
    assert await staying.due(CN, T0, 10) == []
    await leaving.close()
    assert [m.id for m in await staying.due(CN, T0, 10)] == ids


async def test_looking_up_arrivals_reads_one_key_per_id_not_the_whole_inbox(replicas: Replicas) -> None:
    # Before its statistics catch up (a new schema, a bench run), the planner read every inbox
    # row of the sender to find a batch's ids: linear in the inbox, per batch received.
    a = await replicas()
    for first in range(1, 3001, 500):
        await a.accept_incoming([arrival(seq) for seq in range(first, first + 500)])
    wanted = [f"not-there-{i}" for i in range(100)]
    async with a._read() as c:
        for mode in ("force_generic_plan", "force_custom_plan"):
            await c.execute(f"SET plan_cache_mode = {mode}")
            rows = await c.fetch("EXPLAIN ANALYZE " + _INBOX_IDS_HELD, US, wanted)
            plan = "\n".join(r[0] for r in rows)
            assert "inbox_sender_id_key" in plan and "loops=100" in plan, plan
            assert "Seq Scan on inbox" not in plan and "Rows Removed" not in plan, plan
        await c.execute("RESET plan_cache_mode")
    assert await a.receipts_held(US, wanted) == {}


async def test_concurrent_arrivals_of_one_envelope_accept_it_once(replicas: Replicas) -> None:
    a, b = await replicas(), await replicas()
    items = [arrival(seq) for seq in range(1, 16)]
    results = await asyncio.gather(*(s.accept_incoming([it]) for it in items for s in (a, b)))
    for i, it in enumerate(items):
        pair = sorted(r[0].status for r in results[2 * i : 2 * i + 2])
        assert pair == ["accepted", "duplicate"], it.id
        assert {r[0].receipt for r in results[2 * i : 2 * i + 2]} == {it.receipt}
    inbox = await a.inbox_after(0, 100, ("seizure-share",))
    assert sorted(i.id for i in inbox) == sorted(it.id for it in items)
    # Cursors are handed out under the audit lock, so they follow commit order: no reader
    # that polls with a cursor can skip a row that commits later with a smaller one.
    assert [i.cursor for i in inbox] == sorted(i.cursor for i in inbox)
    assert (await b.peer_state(US)).recv_high_water == 15
    assert await a.audit_size() == 15
    other = arrival(1, mid=items[0].id, document=b"a different document")
    raced = await asyncio.gather(a.accept_incoming([other]), b.accept_incoming([other]))
    assert [r[0].status for r in raced] == ["conflict", "conflict"]


async def test_concurrent_audit_appends_stay_one_linear_log(replicas: Replicas) -> None:
    stores = [await replicas() for _ in range(3)]

    async def writer(n: int, store: PostgresStore) -> None:
        for i in range(12):
            await store.append_audit([entry(detail=f"w{n}-{i}-{j}") for j in range(1 + (i + n) % 4)])
            if i % 3 == 0:
                m = new_message(CN)
                await store.submit(m, entry("submitted", m.id, writer=n))

    await asyncio.gather(*(writer(n, s) for n, s in enumerate(stores)))
    size, root = await stores[0].audit_head()
    rows = await stores[1].audit_entries(0, size + 10)
    assert [i for i, _ in rows] == list(range(size))
    leaves = [leaf_hash(e) for _, e in rows]
    assert root == root_from_leaves(leaves)
    assert len({e for _, e in rows}) == size  # every entry once: nothing lost, nothing doubled
    # The persisted interior nodes agree with the leaves, not just the frontier.
    for cut in (1, size // 3, size // 2, size - 1):
        assert await stores[2].root_at(cut) == root_from_leaves(leaves[:cut])
        verify_inclusion(leaves[cut - 1], cut - 1, size, await stores[0].inclusion_proof(cut - 1, size), root)


async def test_migration_runs_once_when_replicas_open_together(replicas: Replicas) -> None:
    stores = [await replicas(open_store=False) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    conn = await asyncpg.connect(base_dsn())
    try:
        q = quote_ident(stores[0].schema)
        versions = await conn.fetch(f"SELECT version FROM {q}.schema_version ORDER BY version")
    finally:
        await conn.close()
    assert [v[0] for v in versions] == [v for v, _ in PG_MIGRATIONS]
    m = new_message(CN)
    assert (await stores[3].submit(m, entry("submitted", m.id)))[0].seq == 1


async def test_submits_from_replicas_get_distinct_consecutive_seqs(replicas: Replicas) -> None:
    a, b = await replicas(), await replicas()
    msgs = [new_message(CN) for _ in range(20)]
    out = await asyncio.gather(*(s.submit(m, entry("submitted", m.id)) for m, s in zip(msgs, [a, b] * 10, strict=True)))
    assert sorted(o.seq for o, _ in out) == list(range(1, 21))
    assert (await a.peer_state(CN)).next_seq == 21


async def _hold_message_id(blocker: asyncpg.Connection, mid: str) -> Any:
    """A transaction on `blocker`, left open, that has inserted a row with message id `mid`: a
    store's INSERT of that id waits for it (rolled back, the INSERT goes on)."""
    tr = blocker.transaction()
    await tr.start()
    await blocker.execute(
        "INSERT INTO messages(id, peer, seq, type, status, created_at, expires_at, signed_document,"
        " document_sha256, next_attempt_at, updated_at)"
        " VALUES ($1, 'XX', 1, 't', 'queued', now(), now(), '', '', now(), now())",
        mid,
    )
    return tr


async def test_a_connection_lost_mid_transaction_is_503_and_leaves_nothing(replicas: Replicas) -> None:
    store = await replicas()
    m = new_message(CN)
    blocker = await asyncpg.connect(dsn_for(store.schema))
    watcher = await asyncpg.connect(base_dsn())
    try:
        # An uncommitted row with the same id makes the store's INSERT wait, after it has
        # already taken a seq from peer_state and the audit lock: a half-done transaction.
        tr = await _hold_message_id(blocker, m.id)
        submit = asyncio.create_task(store.submit(m, entry("submitted", m.id)))
        (pid,) = await _lock_waiters(watcher, store, 1)  # the store's INSERT waits
        await _cut_off(watcher, pid, submit)
        await tr.rollback()
    finally:
        await blocker.close()
        await watcher.close()
    assert await store.get_message(m.id) is None
    assert (await store.peer_state(CN)).next_seq == 1  # the seq it took was rolled back
    assert await store.audit_size() == 0
    # The pool replaces the dead connection; the retry goes through with the same seq.
    assert (await store.submit(m, entry("submitted", m.id)))[0].seq == 1


async def test_unreachable_database_is_503_on_open() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/none", timeout=2)
    with pytest.raises(StoreUnavailable) as err:
        await store.open()
    assert err.value.status == 503


def test_schema_comes_from_the_dsn() -> None:
    assert dsn_schema(dsn_for("gw_us")) == "gw_us"
    assert dsn_schema("postgresql://h/db?search_path=a,public") == "a"
    assert dsn_schema("postgresql://h/db") is None
    assert PostgresStore("postgresql://h/db").schema == "public"
    assert PostgresStore(dsn_for("x"), schema="y").schema == "y"


async def test_one_replica_leads_and_another_takes_over_when_it_closes(replicas: Replicas) -> None:
    a, b = await replicas(), await replicas()
    first = await asyncio.gather(a.try_lead("checkpointer"), b.try_lead("checkpointer"))
    assert sorted(first) == [False, True]
    leader, other = (a, b) if first[0] else (b, a)
    # Leadership holds across calls, and the follower keeps being refused.
    assert await leader.try_lead("checkpointer") and not await other.try_lead("checkpointer")
    # Roles are independent: another role can be led by anyone.
    assert await other.try_lead("something-else")
    await leader.close()
    assert await other.try_lead("checkpointer")
    assert not await leader.try_lead("checkpointer")  # a closed store never leads


async def test_leadership_is_lost_with_the_connection_and_sought_again(replicas: Replicas) -> None:
    a, b = await replicas(), await replicas()
    assert await a.try_lead("checkpointer")
    assert not await b.try_lead("checkpointer")
    watcher = await asyncpg.connect(base_dsn())
    try:
        # Kill a's leader session as a network cut or a server restart would.
        killed = await watcher.fetchval(
            "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l JOIN pg_stat_activity s USING (pid)"
            " WHERE l.locktype='advisory' AND l.granted AND s.application_name=$1",
            a.application_name,
        )
        assert killed == 1
    finally:
        await watcher.close()
    for _ in range(100):  # the server releases the lock when the backend has gone
        if await b.try_lead("checkpointer"):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("b never took over")
    assert not await a.try_lead("checkpointer")  # a notices its connection is gone, reconnects, and follows
    await b.close()
    assert await a.try_lead("checkpointer")


async def test_replicas_wake_each_other_with_notify(replicas: Replicas) -> None:
    """A submission or an accepted arrival committed by one replica wakes the others (LISTEN/
    NOTIFY on the schema's channels), never itself; a listener that loses its connection listens
    again and wakes its gateway once for whatever it may have missed."""
    seen: dict[str, list[str]] = {"a": [], "b": []}
    a, b = await replicas(open_store=False), await replicas(open_store=False)
    a.subscribe(seen["a"].append)
    b.subscribe(seen["b"].append)
    await a.open()
    await b.open()

    async def until(cond: Callable[[], bool]) -> None:
        for _ in range(300):
            if cond():
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"not woken: {seen}")

    m = new_message(CN)
    await a.submit(m, entry("submitted", m.id))
    await until(lambda: "outbox" in seen["b"])
    await b.accept_incoming([arrival(1)])
    await until(lambda: "inbox" in seen["a"])
    await asyncio.sleep(0.1)
    assert seen["a"] == ["inbox"] and seen["b"] == ["outbox"]  # never its own commits
    # Another schema's replicas are not woken.
    other: list[str] = []
    require_postgres()
    schema = new_schema_name("other")
    c = PostgresStore(dsn_for(schema), pool_size=2)
    c.subscribe(other.append)
    await c.open()
    try:
        m2 = new_message(CN)
        await a.submit(m2, entry("submitted", m2.id))
        await until(lambda: seen["b"].count("outbox") == 2)
        assert other == []
    finally:
        await c.close()
        drop_later(schema)
    # The listener's connection dies: b listens again and wakes its gateway for both kinds.
    conn = await asyncpg.connect(base_dsn())
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1"
            " AND query LIKE 'LISTEN%'",
            b.application_name,
        )
    finally:
        await conn.close()
    seen["b"].clear()
    await until(lambda: sorted(seen["b"]) == ["inbox", "outbox"])
    m3 = new_message(CN)
    await a.submit(m3, entry("submitted", m3.id))
    await until(lambda: seen["b"].count("outbox") == 2)


async def test_a_log_from_before_the_newest_time_was_kept_still_appends_in_order(replicas: Replicas) -> None:
    """`audit_state.last_at` came with migration 3: a log written before has a frontier and no
    time. A submission group then appends as a lone append does (it reads the newest entry's
    time), and the log stays one linear, verifiable tree."""
    store = await replicas()
    later = T0 + dt.timedelta(hours=1)
    for i in range(3):
        m = new_message(CN)
        await store.submit(m, entry("submitted", m.id, at=later, n=i))
    conn = await asyncpg.connect(base_dsn())
    try:
        await conn.execute(f"UPDATE {quote_ident(store.schema)}.audit_state SET last_at = NULL")
    finally:
        await conn.close()
    msgs = [new_message(CN) for _ in range(4)]
    await asyncio.gather(*(store.submit(m, entry("submitted", m.id)) for m in msgs))
    await store.append_audit([entry(detail="after")])
    size, root = await store.audit_head()
    rows = await store.audit_entries(0, size + 10)
    assert size == 8 and [i for i, _ in rows] == list(range(size))
    leaves = [leaf_hash(e) for _, e in rows]
    assert root == root_from_leaves(leaves)
    for cut in (1, 3, 5, size - 1):
        assert await store.root_at(cut) == root_from_leaves(leaves[:cut])
    # The entries stamped earlier than the newest one (read back from the log) were moved up to it.
    times = [AuditEntry.from_bytes(e).at for _, e in rows]
    assert times == sorted(times) and times[3] == times[2] > T0


# --- group commit of submissions: the next group's transaction waits open for the audit lock ---


async def _lock_waiters(watcher: asyncpg.Connection, store: PostgresStore, n: int) -> list[int]:
    """The pids of the store's connections waiting for a lock, once there are `n` of them."""
    pids: list[int] = []
    for _ in range(1000):
        pids = [
            r[0]
            for r in await watcher.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name=$1 AND wait_event_type='Lock' ORDER BY pid",
                store.application_name,
            )
        ]
        if len(pids) >= n:
            return pids
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(pids)} of the store's connections wait for a lock, not {n}")


async def _hold_audit_lock(holder: asyncpg.Connection, store: PostgresStore) -> Any:
    """A transaction on `holder`, left open, holding `store`'s audit lock (until rolled back)."""
    tr = holder.transaction()
    await tr.start()
    await holder.execute("SELECT pg_advisory_xact_lock($1)", store._audit_key)
    return tr


async def _cut_off(watcher: asyncpg.Connection, pid: int, submit: asyncio.Task[Any]) -> None:
    """End the server process `pid` of a store's connection: `submit`, waiting on it, fails 503."""
    await watcher.execute("SELECT pg_terminate_backend($1)", pid)
    with pytest.raises(StoreUnavailable) as err:
        await submit
    assert err.value.status == 503 and err.value.retryable


@contextlib.asynccontextmanager
async def _side_connections(store: PostgresStore) -> AsyncIterator[tuple[asyncpg.Connection, asyncpg.Connection]]:
    """Two connections beside the store's: one on its schema (to hold a lock or a row), and a
    watcher of `pg_stat_activity`; both closed afterwards."""
    on_schema = await asyncpg.connect(dsn_for(store.schema))
    watcher = await asyncpg.connect(base_dsn())
    try:
        yield on_schema, watcher
    finally:
        await on_schema.close()
        await watcher.close()


async def _two_groups_open(
    store: PostgresStore, watcher: asyncpg.Connection, first: NewMessage, second: NewMessage
) -> tuple[asyncio.Task[Any], asyncio.Task[Any]]:
    """`first` submitted (its group's INSERT held up by the caller's row lock, the audit lock taken),
    then `second`, once its group's transaction is open and waiting for the audit lock."""
    t1 = asyncio.create_task(store.submit(first, entry("submitted", first.id)))
    await _lock_waiters(watcher, store, 1)
    t2 = asyncio.create_task(store.submit(second, entry("submitted", second.id)))
    await _lock_waiters(watcher, store, 2)
    return t1, t2


async def _xmins(store: PostgresStore, ids: list[str]) -> dict[str, int]:
    """The transaction that wrote each message row (PostgreSQL's `xmin`)."""
    conn = await asyncpg.connect(dsn_for(store.schema))
    try:
        rows = await conn.fetch("SELECT id, xmin::text::bigint FROM messages WHERE id = ANY($1::text[])", ids)
    finally:
        await conn.close()
    return {r[0]: r[1] for r in rows}


async def test_submissions_queued_while_the_audit_lock_is_held_share_the_waiting_transaction(
    replicas: Replicas,
) -> None:
    """One committer waits for the audit lock with its transaction open; what is submitted
    meanwhile joins it (no second transaction queues behind it), and it takes all of it when the
    lock comes: one transaction, consecutive seqs in submission order."""
    store = await replicas()
    async with _side_connections(store) as (holder, watcher):
        tr = await _hold_audit_lock(holder, store)
        msgs = [new_message(CN) for _ in range(6)]
        first = asyncio.create_task(store.submit(msgs[0], entry("submitted", msgs[0].id)))
        await _lock_waiters(watcher, store, 1)
        rest = [asyncio.create_task(store.submit(m, entry("submitted", m.id))) for m in msgs[1:]]
        await asyncio.sleep(0.2)
        assert len(await _lock_waiters(watcher, store, 1)) == 1  # no second transaction behind it
        assert not first.done() and not any(t.done() for t in rest)
        await tr.rollback()
        out = [await t for t in (first, *rest)]
    assert [o.seq for o, created in out] == list(range(1, 7)) and all(created for _, created in out)
    assert len(set((await _xmins(store, [m.id for m in msgs])).values())) == 1


async def test_the_next_group_waits_with_its_transaction_open_while_one_commits(replicas: Replicas) -> None:
    """While one group holds the audit lock (here held up by a row lock on its INSERT), the next
    group's transaction is already open and waiting for the audit lock; a third submission joins
    that waiting group. The groups commit in turn: their own transactions, seqs in order."""
    store = await replicas()
    m1, m2, m3 = (new_message(CN) for _ in range(3))
    async with _side_connections(store) as (blocker, watcher):
        # An uncommitted row with m1's id makes the first group's INSERT wait, audit lock taken.
        tr = await _hold_message_id(blocker, m1.id)
        t1, t2 = await _two_groups_open(store, watcher, m1, m2)
        t3 = asyncio.create_task(store.submit(m3, entry("submitted", m3.id)))
        await asyncio.sleep(0.2)
        assert len(await _lock_waiters(watcher, store, 2)) == 2  # m3 joins the waiting group
        assert not any(t.done() for t in (t1, t2, t3))
        await tr.rollback()  # m1's INSERT goes on: its group commits, then the next
        (o1, _), (o2, _), (o3, _) = await t1, await t2, await t3
    assert (o1.seq, o2.seq, o3.seq) == (1, 2, 3)
    x = await _xmins(store, [m1.id, m2.id, m3.id])
    assert x[m1.id] != x[m2.id] == x[m3.id]
    size, _ = await store.audit_head()
    logged = [AuditEntry.from_bytes(e) for _, e in await store.audit_entries(0, size)]
    assert [e.message_id for e in logged] == [m1.id, m2.id, m3.id]


async def test_a_waiting_group_that_loses_its_connection_fails_its_submissions_and_the_next_go_on(
    replicas: Replicas,
) -> None:
    """The transaction waiting for the audit lock is cut off: the submissions it would have taken
    answer 503 (nothing of them stored), and the store is not left without a committer: the next
    submission is stored, with the first seq."""
    store = await replicas()
    m1, m2 = new_message(CN), new_message(CN)
    async with _side_connections(store) as (holder, watcher):
        tr = await _hold_audit_lock(holder, store)
        t1 = asyncio.create_task(store.submit(m1, entry("submitted", m1.id)))
        (pid,) = await _lock_waiters(watcher, store, 1)
        await _cut_off(watcher, pid, t1)
        await tr.rollback()
    assert await store.get_message(m1.id) is None
    out, created = await asyncio.wait_for(store.submit(m2, entry("submitted", m2.id)), 10)
    assert created and out.seq == 1


async def test_a_retry_in_the_waiting_group_finds_the_key_the_group_before_committed(replicas: Replicas) -> None:
    """Idempotency across the two open transactions: a retry with the same Idempotency-Key waits
    in the next group while the first is held up; it looks the key up under the audit lock, after
    the first committed, so it answers the first message (not a second one), and a different
    request under that key is a conflict. One message stored."""
    store = await replicas()
    first = new_message(CN, key="k-1")
    retry, other = new_message(CN, key="k-1"), new_message(CN, key="k-1", request=b"another request")
    async with _side_connections(store) as (blocker, watcher):
        tr = await _hold_message_id(blocker, first.id)
        t1, t2 = await _two_groups_open(store, watcher, first, retry)
        t3 = asyncio.create_task(store.submit(other, entry("submitted", other.id)))
        await tr.rollback()
        (o1, created1), (o2, created2) = await t1, await t2
        with pytest.raises(Conflict) as err:
            await t3
    assert created1 and not created2 and o2.id == o1.id == first.id and o1.seq == 1
    assert err.value.code == "idempotency.conflict"
    assert await store.get_message(retry.id) is None and await store.get_message(other.id) is None
    assert (await store.peer_state(CN)).next_seq == 2
