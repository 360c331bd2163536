"""PostgreSQL store: several gateway replicas sharing one database through asyncpg.

Same semantics as the SQLite store; every call that writes is one transaction. What replicas
must not do to each other is settled by locks inside those transactions:

- Audit log: one writer at a time. Every transaction that appends entries takes a per-schema
  `pg_advisory_xact_lock` before it touches anything, then reads the frontier, appends, and writes
  nodes and frontier; so the Merkle tree stays linear, and what those transactions number (inbox
  cursors, per-peer seq) is numbered in commit order.
- Outbox: one sender per peer. `due` locks the peer's `outbox_lanes` row with FOR UPDATE SKIP
  LOCKED, gives up while another replica holds an unexpired claim on that peer's messages, then
  stamps the head-gated prefix with its replica id and `now + lease`. `record_outcomes` releases
  the claim; a lease that runs out (a crashed replica) lets the next `due` take the messages over.
- Check-and-persist (idempotency keys, inbox dedupe, witness state) runs under those locks, with
  UNIQUE constraints behind them.
- Background roles that one replica performs for all (signing checkpoints): `try_lead` takes a
  session-level `pg_try_advisory_lock` on a connection of its own, outside the pool, and keeps it
  while that connection lives; a replica that dies or loses the connection lets another take over.

Connection loss, timeouts, deadlocks and any other database error roll back and raise
StoreUnavailable (503). The pool pins `search_path` to the store's schema and
`synchronous_commit=on`, so a commit is on disk (G5) whatever the server's default.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import os
import re
import secrets
import socket
import urllib.parse
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import Any, Final, TypeVar

import asyncpg

from ..core.audit import AuditEntry
from ..core.consent import ConsentEvent, ConsentRecord, role_of
from ..core.encoding import json_bytes
from ..core.errors import Conflict, GatewayError, NotFound, StoreUnavailable
from ..core.merkle import CompactRange, consistency_proof_from_nodes, inclusion_proof_from_nodes
from ..core.replay import Arrival, advance_sequence, classify
from ..core.state import PENDING_SQL, next_status
from .base import (
    CONSENT_COLS,
    CONTROL_TYPES_SQL,
    DISPOSED_CONSENTS_SQL,
    DUE_IN_SQL,
    DUE_OUT_SQL,
    EVIDENCE_IN_COLS,
    EVIDENCE_OUT_COLS,
    EXCHANGED_SQL,
    IN_COLS,
    LIVE_DAYS_SQL,
    OUT_COLS,
    RETENTION_COUNTS_SQL,
    RETENTION_TOTALS_SQL,
    TOKEN_COLUMNS,
    AttemptOutcome,
    CheckpointRecord,
    ClearRow,
    DueRow,
    Evidence,
    HeldMessage,
    Hold,
    InboxItem,
    Incoming,
    IncomingResult,
    MessageFilter,
    NewMessage,
    OutMessage,
    PeerState,
    RetentionTotals,
    Store,
    ThreadItem,
    TokenRecord,
    WitnessState,
    ack_refusal,
    consent_from_row,
    evidence_from_row,
    idempotency_keys,
    inbox_item_from_row,
    names_messages,
    out_message_from_row,
    plan_group,
    queued_message,
    reference_refusal,
    seq_reused,
    to_ms,
    totals_from_row,
)
from .pg_audit import (
    append_ctes,
    append_entries,
    check_size,
    columns,
    from_nodes,
    frontier,
    newest_time,
    planned_append,
)
from .pg_migrations import lock_key, migrate, quote_ident
from .retention import (
    HOLD_COLS,
    HOLD_IN_SQL,
    HOLD_OUT_SQL,
    check_releasable,
    disposed_ack,
    held_row,
    hold_from_row,
)

T = TypeVar("T")

# Everything asyncpg or the socket under it raises when the database cannot do the work.
_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
_PENDING = PENDING_SQL


def _token(r: Any) -> TokenRecord:
    return TokenRecord(r[0], r[1], bytes(r[2]), r[3], r[4], r[5], r[6])


_SEARCH_PATH_OPTION = re.compile(r"-c\s*search_path=(\S+)")


def dsn_schema(dsn: str) -> str | None:
    """The first schema a DSN's search_path names, if any.

    Read from libpq's `?options=-c search_path=NAME` (URL-encoded) or asyncpg's
    `?search_path=NAME`, so a deployment picks its schema in `store.dsn` alone.
    """
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(dsn).query)
    values = list(query.get("search_path", []))
    for opt in query.get("options", []):
        values += _SEARCH_PATH_OPTION.findall(opt)
    for value in values:
        first = value.split(",")[0].strip().strip('"')
        if first:
            return first
    return None


def _b(v: Any) -> bytes | None:
    return None if v is None else bytes(v)


class _Tx:
    """One open transaction; audit entries collected here are appended just before commit."""

    def __init__(self, conn: Any, *, audited: bool) -> None:
        self.conn = conn
        self.audited = audited
        self.entries: list[AuditEntry] = []

    def audit(self, *entries: AuditEntry) -> None:
        if not self.audited:
            raise RuntimeError("audit entries need a transaction opened with audited=True")
        self.entries.extend(entries)


#: At most this many submissions share one transaction (`PostgresStore.submit`).
MAX_GROUP: Final = 256
#: Submission transactions open at once: one holding the audit lock, one waiting for it.
COMMITTERS: Final = 2


def _as_store_error(e: BaseException) -> GatewayError:
    if isinstance(e, GatewayError):
        return e
    return StoreUnavailable(f"the database could not commit ({type(e).__name__})")


class PostgresStore(Store):
    """The store for several replicas. `schema` defaults to the DSN's search_path, else `public`.

    `replica_id` names this instance in outbox claims; the default (host, pid, random suffix) is
    unique per instance, so a restarted replica never mistakes another's claim for its own.
    `lease_seconds` must outlast one delivery attempt (the peer request timeout); a claim older
    than that is presumed abandoned.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        replica_id: str | None = None,
        lease_seconds: float = 60.0,
        pool_size: int = 10,
        timeout: float = 30.0,
    ) -> None:
        self.dsn = dsn
        self.schema = schema or dsn_schema(dsn) or "public"
        self.replica_id = replica_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        # Shows which replica a session belongs to in pg_stat_activity (PostgreSQL keeps 63 bytes).
        self.application_name = f"customs-gateway {self.replica_id}"[:63]
        self.lease = dt.timedelta(seconds=lease_seconds)
        self.pool_size = pool_size
        self.timeout = timeout
        self._audit_key = lock_key("audit", self.schema)
        self._witness_key = lock_key("witness", self.schema)
        self._pool: Any = None
        self._leader_conn: Any = None  # holds the session advisory locks of the roles we lead
        self._leading: set[str] = set()
        self._lead_lock = asyncio.Lock()
        # LISTEN/NOTIFY between replicas: a commit here wakes the others' workers and long-polls.
        self._on_change: Callable[[str], None] | None = None
        digest = hashlib.sha256(self.schema.encode()).hexdigest()[:16]
        self._channels = {"outbox": f"cgw_outbox_{digest}", "inbox": f"cgw_inbox_{digest}"}
        self._listener: Any = None
        self._relisten: asyncio.Task[None] | None = None
        # Group commit of submissions: those arriving while a commit is under way share the next,
        # whose transaction is already open and waiting for the audit lock (`_commit_group`).
        self._submits: list[tuple[NewMessage, AuditEntry, asyncio.Future[tuple[OutMessage, bool]]]] = []
        self._committers: set[asyncio.Task[None]] = set()
        self._untaken: set[asyncio.Task[None]] = set()  # committers that have not taken their group yet

    # lifecycle -----------------------------------------------------------------------------
    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self.pool_size,
                command_timeout=self.timeout,
                timeout=self.timeout,
                # Startup parameters, not SET: the pool's RESET ALL on release keeps them.
                server_settings={
                    "search_path": quote_ident(self.schema),
                    "synchronous_commit": "on",
                    "application_name": self.application_name,
                },
            )
        except _DB_ERRORS as e:
            raise StoreUnavailable(f"cannot connect to PostgreSQL ({type(e).__name__})") from e
        try:
            async with pool.acquire() as conn:
                await migrate(conn, self.schema)
        except BaseException as e:
            pool.terminate()
            if isinstance(e, _DB_ERRORS):
                raise StoreUnavailable(f"cannot migrate the PostgreSQL schema ({type(e).__name__})") from e
            raise
        self._pool = pool
        if self._on_change is not None:
            await self._listen()

    # notifications ---------------------------------------------------------------------------
    def subscribe(self, on_change: Callable[[str], None]) -> None:
        self._on_change = on_change

    async def _listen(self) -> bool:
        """LISTEN on this schema's channels on a connection of its own; if it drops, listen again
        (the workers' one-second poll covers the gap, and a fresh listener wakes them once)."""
        try:
            conn = await asyncpg.connect(
                self.dsn, timeout=self.timeout, server_settings={"application_name": self.application_name}
            )
            for what, channel in self._channels.items():
                await conn.add_listener(channel, functools.partial(self._notified, what))
        except _DB_ERRORS:
            self._schedule_relisten()
            return False
        conn.add_termination_listener(lambda _: self._schedule_relisten())
        self._listener = conn
        return True

    def _notified(self, what: str, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload != self.replica_id and self._on_change is not None:  # our own commits woke us already
            self._on_change(what)

    def _schedule_relisten(self) -> None:
        self._listener = None
        if self._pool is not None and (self._relisten is None or self._relisten.done()):
            self._relisten = asyncio.get_running_loop().create_task(self._listen_again(), name="pg-relisten")

    async def _listen_again(self) -> None:
        await asyncio.sleep(1.0)
        listening = self._pool is not None and self._listener is None and await self._listen()
        if listening and self._on_change is not None:
            for what in self._channels:
                self._on_change(what)  # anything committed while we were not listening

    async def _notify(self, c: Any, what: str) -> None:
        """Tell the other replicas at commit (PostgreSQL delivers NOTIFY when the transaction commits)."""
        await c.execute(_NOTIFY_SQL, *self._notice(what))

    def _notice(self, what: str) -> tuple[str, str]:
        """The `pg_notify` arguments that tell the other replicas `what` changed."""
        return self._channels[what], self.replica_id

    async def close(self) -> None:
        if self._relisten is not None:
            self._relisten.cancel()
            self._relisten = None
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(*_DB_ERRORS):
                await listener.close(timeout=self.timeout)
        await self._drop_leadership()
        pool, self._pool = self._pool, None
        if pool is None:
            return
        # Hand in-flight claims back at once rather than after the lease: a replica stopping
        # cleanly lets another one carry on sending immediately (the receiver dedupes).
        with contextlib.suppress(*_DB_ERRORS):
            async with pool.acquire(timeout=self.timeout) as c:
                await c.execute(
                    "UPDATE messages SET claimed_by=NULL, claim_expires_at=NULL WHERE claimed_by=$1", self.replica_id
                )
        try:
            await asyncio.wait_for(pool.close(), self.timeout)
        except TimeoutError:
            pool.terminate()

    # leadership ----------------------------------------------------------------------------
    async def try_lead(self, role: str) -> bool:
        """Lead `role` for this schema while a session-level advisory lock is ours.

        The lock lives on a dedicated connection, so it outlasts single calls and goes away with
        the process or the connection (PostgreSQL releases session locks when the session ends).
        Each call checks that connection is alive; if it is not, leadership is given up and
        sought again on a new connection. Database errors mean "not leading", never an exception.
        """
        if self._pool is None:
            return False
        async with self._lead_lock:
            try:
                conn = self._leader_conn
                if conn is not None and not conn.is_closed():
                    await conn.fetchval("SELECT 1", timeout=self.timeout)
                else:
                    self._leading.clear()
                    conn = self._leader_conn = await asyncpg.connect(
                        self.dsn,
                        timeout=self.timeout,
                        command_timeout=self.timeout,
                        server_settings={"application_name": self.application_name},
                    )
                if role in self._leading:
                    return True
                got = bool(
                    await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(f"lead/{role}", self.schema))
                )
            except (*_DB_ERRORS, asyncpg.InternalClientError):
                # A killed backend can leave asyncpg mid-operation (InternalClientError): the
                # connection is unusable either way, so leadership is gone and sought again.
                await self._drop_leadership(locked=True)
                return False
            if got:
                self._leading.add(role)
            return got

    async def _drop_leadership(self, *, locked: bool = False) -> None:
        """Close the leader connection (releasing every role's lock at once)."""
        if not locked:
            async with self._lead_lock:
                await self._drop_leadership(locked=True)
            return
        conn, self._leader_conn = self._leader_conn, None
        self._leading.clear()
        if conn is None:
            return
        try:
            await asyncio.wait_for(conn.close(), self.timeout)
        except (*_DB_ERRORS, asyncpg.InternalClientError):
            conn.terminate()

    # execution -----------------------------------------------------------------------------
    def _require_pool(self) -> Any:
        if self._pool is None:
            raise StoreUnavailable("store is not open")
        return self._pool

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[Any]:
        pool = self._require_pool()
        try:
            async with pool.acquire(timeout=self.timeout) as c:
                yield c
        except _DB_ERRORS as e:
            raise StoreUnavailable(f"the database could not be read ({type(e).__name__})") from e

    @contextlib.asynccontextmanager
    async def _tx(self, *, audited: bool = False) -> AsyncIterator[_Tx]:
        """A transaction; `audited` takes the audit writer lock first and appends `tx.audit(...)` entries."""
        pool = self._require_pool()
        try:
            async with pool.acquire(timeout=self.timeout) as c, c.transaction():
                if audited:
                    # First, before any row lock: every audited transaction queues here in the same
                    # order, so they cannot deadlock on rows they take afterwards.
                    await c.execute("SELECT pg_advisory_xact_lock($1)", self._audit_key)
                tx = _Tx(c, audited=audited)
                yield tx
                if tx.entries:
                    await append_entries(c, tx.entries)
        except _DB_ERRORS as e:
            raise StoreUnavailable(f"the database could not commit ({type(e).__name__})") from e

    # outbound ------------------------------------------------------------------------------
    async def submit(self, msg: NewMessage, audit: AuditEntry) -> tuple[OutMessage, bool]:
        """Commit one submission. Submissions that arrive while a commit is under way are
        committed together in the next transaction (one audit lock, one append of their entries,
        one fsync), each in its own savepoint: one refused (an idempotency conflict) leaves the
        others as they were."""
        fut: asyncio.Future[tuple[OutMessage, bool]] = asyncio.get_running_loop().create_future()
        self._submits.append((self._seal_new(msg), audit, fut))
        self._wake_committer()
        out, created = await fut
        return self._submitted(msg, out, created), created

    def _wake_committer(self) -> None:
        """Make sure a committer will take what is queued: one that has not taken its group yet,
        or a new one. At most `COMMITTERS` at once: one holding the audit lock, the next with its
        transaction open, waiting for the lock, so that its group starts the moment the one before
        commits, without the round trips of its BEGIN and lock on the way."""
        if self._untaken or len(self._committers) >= COMMITTERS or not self._submits:
            return
        task = asyncio.create_task(self._commit_group(), name="pg-group-commit")
        self._committers.add(task)
        self._untaken.add(task)
        task.add_done_callback(self._committers.discard)
        task.add_done_callback(self._untaken.discard)

    async def _commit_group(self) -> None:
        """One transaction: take the audit lock, then every submission queued by then (up to
        `MAX_GROUP`), store them, commit, and answer each."""
        me = asyncio.current_task()
        batch: list[tuple[NewMessage, AuditEntry, asyncio.Future[tuple[OutMessage, bool]]]] = []
        results: list[tuple[OutMessage, bool] | GatewayError] = []

        def take() -> None:
            nonlocal batch
            self._untaken.discard(me)
            batch, self._submits = self._submits[:MAX_GROUP], self._submits[MAX_GROUP:]

        try:
            async with self._tx(audited=True) as tx:
                take()
                if batch:
                    results = await _submit_group(tx, [(m, a) for m, a, _ in batch], self._notice("outbox"))
        except BaseException as e:  # nothing of the group committed
            if me in self._untaken:  # the transaction or the lock failed: what it would have taken fails too
                take()
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_exception(_as_store_error(e))
            if not isinstance(e, Exception):
                raise  # cancelled: the store is going away, no committer after this one
        else:
            for (_, _, fut), res in zip(batch, results, strict=True):
                if fut.done():  # the caller went away; what it asked for is committed all the same
                    continue
                if isinstance(res, GatewayError):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)
        # What arrived while this one held the lock and found no committer free: the next. (A
        # task that ends leaves both sets by its done callbacks; this one leaves early to make room.)
        self._committers.discard(me)
        self._wake_committer()

    async def submit_many(
        self, batch: list[tuple[NewMessage, AuditEntry]]
    ) -> list[tuple[OutMessage, bool] | GatewayError]:
        sealed = [(self._seal_new(msg), audit) for msg, audit in batch]
        async with self._tx(audited=True) as tx:
            results = await _submit_group(tx, sealed, self._notice("outbox"))
        return [
            r if isinstance(r, GatewayError) else (self._submitted(m, r[0], r[1]), r[1])
            for (m, _), r in zip(batch, results, strict=True)
        ]

    async def due(self, peer: str, now: dt.datetime, limit: int, after_seq: int = 0) -> list[OutMessage]:
        async with self._tx() as tx:
            c = tx.conn
            # SKIP LOCKED: if another replica is claiming this peer right now, it will send the
            # batch; waiting for it would only hand us nothing afterwards.
            lane = await c.fetchval("SELECT peer FROM outbox_lanes WHERE peer=$1 FOR UPDATE SKIP LOCKED", peer)
            if lane is None:
                return []
            held = await c.fetchval(
                f"SELECT 1 FROM messages WHERE peer=$1 AND claimed_by IS NOT NULL AND claimed_by<>$2"
                f" AND claim_expires_at>$3 AND {_PENDING} LIMIT 1",
                peer,
                self.replica_id,
                now,
            )
            if held is not None:
                return []
            # FOR UPDATE re-checks the status of rows another transaction is finishing, so a
            # message whose outcome just committed is not handed out again.
            rows = await c.fetch(
                f"SELECT {OUT_COLS} FROM messages WHERE peer=$1 AND {_PENDING} AND seq>$3"
                " ORDER BY seq LIMIT $2 FOR UPDATE",
                peer,
                limit,
                after_seq,
            )
            msgs = [_out(r) for r in rows]
            # The head of the queue gates the whole peer: order per peer is kept even when
            # messages behind it carry their own (earlier) retry times.
            if not msgs or msgs[0].next_attempt_at > now:
                return []
            await c.execute(
                "UPDATE messages SET claimed_by=$1, claim_expires_at=$2 WHERE id = ANY($3::text[])",
                self.replica_id,
                now + self.lease,
                [m.id for m in msgs],
            )
        return self._open_outs(msgs)

    async def record_outcomes(self, outcomes: list[AttemptOutcome]) -> None:
        if not outcomes:
            return
        outcomes = self._seal_outcomes(outcomes)
        async with self._tx(audited=True) as tx:
            # One query locks every message of the batch (not one round trip per outcome).
            rows = await tx.conn.fetch(
                "SELECT id, status FROM messages WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
                [o.message_id for o in outcomes],
            )
            status_of: dict[str, str] = {r[0]: r[1] for r in rows}
            # Each outcome's UPDATE also gives up our claim on its message (a row version and
            # its index entries fewer a message than a second UPDATE for the claims, which
            # measured 2.7 row updates a delivered message). Only our own claim: if our lease ran
            # out and another replica took the message over, its claim stands.
            ids = {o.message_id for o in outcomes}
            if len(ids) == len(outcomes):
                updated = await _record_outcomes(tx, outcomes, status_of, self.replica_id)
            else:  # a message twice in one batch: one after the other, as they came
                updated = set()
                for o in outcomes:
                    if await _record_outcome(tx, o, status_of, self.replica_id):
                        updated.add(o.message_id)
            # The messages no outcome changed (gone, or past taking it) are still released.
            if left := sorted(ids - updated):
                await tx.conn.execute(
                    "UPDATE messages SET claimed_by=NULL, claim_expires_at=NULL"
                    " WHERE id = ANY($1::text[]) AND claimed_by=$2",
                    left,
                    self.replica_id,
                )

    async def release(self, message_ids: list[str]) -> None:
        if not message_ids:
            return
        async with self._tx() as tx:
            await tx.conn.execute(
                "UPDATE messages SET claimed_by=NULL, claim_expires_at=NULL"
                " WHERE id = ANY($1::text[]) AND claimed_by=$2",
                message_ids,
                self.replica_id,
            )

    async def next_due_at(self, peer: str) -> dt.datetime | None:
        async with self._read() as c:
            head = await c.fetchval(
                f"SELECT next_attempt_at FROM messages WHERE peer=$1 AND {_PENDING} ORDER BY seq LIMIT 1", peer
            )
            if head is None:
                return None
            # While another replica holds the peer's queue, nothing is due for us before its
            # lease ends; without this a worker would spin on a head that is due but claimed.
            claim = await c.fetchval(
                f"SELECT max(claim_expires_at) FROM messages WHERE peer=$1 AND claimed_by IS NOT NULL"
                f" AND claimed_by<>$2 AND {_PENDING}",
                peer,
                self.replica_id,
            )
            result: dt.datetime = head if claim is None else max(head, claim)
            return result

    async def get_message(self, message_id: str) -> OutMessage | None:
        async with self._read() as c:
            row = await c.fetchrow(f"SELECT {OUT_COLS} FROM messages WHERE id=$1", message_id)
            if row is None:
                return None
            hist = await c.fetch("SELECT at, status, detail FROM history WHERE message_id=$1 ORDER BY n", message_id)
        m = self._open_out(_out(row))
        return OutMessage(**{**m.__dict__, "history": tuple((h[0], h[1], h[2]) for h in hist)})

    async def list_messages(self, flt: MessageFilter, after: str | None, limit: int) -> list[OutMessage]:
        where: list[str] = [f"type NOT IN {CONTROL_TYPES_SQL}"]
        args: list[Any] = []
        for column, value in (("status", flt.status), ("type", flt.type), ("peer", flt.peer)):
            if value:
                args.append(value)
                where.append(f"{column}=${len(args)}")
        if flt.since:
            args.append(to_ms(flt.since))
            where.append(f"created_at>=${len(args)}")
        if flt.reference is not None:
            args.append(flt.reference)
            where.append(f"id IN (SELECT message_id FROM refs WHERE tag=${len(args)} AND direction='out')")
        if after:
            args.append(after)
            where.append(f"id>${len(args)}")
        args.append(limit)
        sql = f"SELECT {OUT_COLS} FROM messages WHERE {' AND '.join(where)} ORDER BY id LIMIT ${len(args)}"
        async with self._read() as c:
            rows = await c.fetch(sql, *args)
        return self._open_outs([_out(r) for r in rows])

    async def queue_depth(self, peer: str) -> tuple[int, dt.datetime | None]:
        async with self._read() as c:
            row = await c.fetchrow(f"SELECT count(*), min(created_at) FROM messages WHERE peer=$1 AND {_PENDING}", peer)
        return int(row[0]), row[1]

    # inbound -------------------------------------------------------------------------------
    async def accept_incoming(self, items: list[Incoming]) -> list[IncomingResult]:
        items = [self._seal_in(it) for it in items]
        async with self._tx(audited=True) as tx:
            results = await _accept_group(tx, items)
            if any(r.status == "accepted" for r in results):
                await self._notify(tx.conn, "inbox")
            return results

    async def append_audit(self, entries: list[AuditEntry]) -> None:
        if not entries:
            return
        async with self._tx(audited=True) as tx:
            tx.audit(*entries)

    async def inbox_after(
        self, cursor: int, limit: int, types: tuple[str, ...], reference: bytes | None = None
    ) -> list[InboxItem]:
        by_ref = "" if reference is None else " AND id IN (SELECT message_id FROM refs WHERE tag=$4 AND direction='in')"
        args: tuple[Any, ...] = () if reference is None else (reference,)
        async with self._read() as c:
            rows = await c.fetch(
                f"SELECT {IN_COLS} FROM inbox WHERE cursor>$1 AND type = ANY($2::text[]){by_ref}"
                " ORDER BY cursor LIMIT $3",
                cursor,
                list(types),
                limit,
                *args,
            )
        return self._open_ins([_in(r) for r in rows])

    async def get_meta(self, key: str) -> str | None:
        async with self._read() as c:
            value = await c.fetchval("SELECT value FROM store_meta WHERE key=$1", key)
        return None if value is None else str(value)

    async def set_meta(self, key: str, value: str | None) -> None:
        async with self._tx() as tx:
            if value is None:
                await tx.conn.execute("DELETE FROM store_meta WHERE key=$1", key)
            else:
                await tx.conn.execute(
                    "INSERT INTO store_meta(key, value) VALUES ($1,$2) ON CONFLICT (key) DO UPDATE SET value=$2",
                    key,
                    value,
                )

    async def add_references(self, rows: list[tuple[bytes, str, str]]) -> None:
        if rows:
            async with self._tx() as tx:
                await tx.conn.executemany(_REFS_INSERT, rows)

    async def known_to_peer(self, peer: str, message_id: str) -> bool:
        async with self._read() as c:
            row = await c.fetchval(
                f"SELECT 1 FROM inbox WHERE id=$1 AND sender=$2 AND type NOT IN {CONTROL_TYPES_SQL}"
                f" UNION ALL SELECT 1 FROM messages WHERE id=$1 AND peer=$2 AND type NOT IN {CONTROL_TYPES_SQL}"
                " AND status NOT IN ('refused','expired') LIMIT 1",
                message_id,
                peer,
            )
        return row is not None

    async def thread_items(self, message_ids: list[str]) -> list[ThreadItem]:
        return await self._thread_query("id", message_ids)

    async def replies(self, message_ids: list[str]) -> list[ThreadItem]:
        return await self._thread_query("in_reply_to", message_ids)

    async def _thread_query(self, column: str, ids: list[str]) -> list[ThreadItem]:
        if not ids:
            return []
        sql = (
            f"SELECT id, 'outbound', type, in_reply_to, created_at, status FROM messages"
            f" WHERE {column} = ANY($1::text[]) AND type NOT IN {CONTROL_TYPES_SQL}"
            f" UNION ALL SELECT id, 'inbound', type, in_reply_to, created_at, ack_status FROM inbox"
            f" WHERE {column} = ANY($1::text[]) AND type NOT IN {CONTROL_TYPES_SQL}"
        )
        async with self._read() as c:
            rows = await c.fetch(sql, ids)
        return [ThreadItem(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]

    async def consents_for(self, message_ids: Sequence[str]) -> dict[str, list[ConsentRecord]]:
        if not message_ids:
            return {}
        async with self._read() as c:
            rows = await c.fetch(
                f"SELECT {CONSENT_COLS} FROM consents WHERE message_id = ANY($1::text[])"
                " ORDER BY requested_at, request_id",
                list(message_ids),
            )
        out: dict[str, list[ConsentRecord]] = {}
        for r in rows:
            out.setdefault(r[1], []).append(self._open_consent(consent_from_row(r, _as_is)))
        return out

    async def consent(self, request_id: str) -> ConsentRecord | None:
        async with self._read() as c:
            row = await c.fetchrow(f"SELECT {CONSENT_COLS} FROM consents WHERE request_id=$1", request_id)
        return None if row is None else self._open_consent(consent_from_row(row, _as_is))

    async def inbox_item(self, message_id: str) -> InboxItem | None:
        async with self._read() as c:
            row = await c.fetchrow(f"SELECT {IN_COLS} FROM inbox WHERE id=$1", message_id)
        return None if row is None else self._open_in(_in(row))

    async def acknowledge_inbox(self, message_id: str, status: str, ack: NewMessage, audit: AuditEntry) -> OutMessage:
        plain, ack = ack, self._seal_new(ack)
        async with self._tx(audited=True) as tx:
            c = tx.conn
            row = await c.fetchrow("SELECT ack_status FROM inbox WHERE id=$1 FOR UPDATE", message_id)
            if row is None:
                raise NotFound(f"no inbox message {message_id}", code="inbox.not_found", field="id")
            if row[0] is not None:
                raise Conflict(
                    f"message {message_id} was already acknowledged ({row[0]})", code="ack.already", field="id"
                )
            await c.execute("UPDATE inbox SET ack_status=$1, ack_message_id=$2 WHERE id=$3", status, ack.id, message_id)
            out, _ = await _submit(tx, ack, audit)
        return self._submitted(plain, out, True)

    async def peer_state(self, peer: str) -> PeerState:
        async with self._read() as c:
            row = await c.fetchrow("SELECT next_seq, recv_high_water, gap_count FROM peer_state WHERE peer=$1", peer)
            gaps = await c.fetch(
                "SELECT from_seq, to_seq FROM seq_gaps WHERE peer=$1 ORDER BY from_seq DESC LIMIT 100", peer
            )
        if row is None:
            return PeerState(peer, 1, 0, 0)
        return PeerState(peer, row[0], row[1], row[2], tuple((g[0], g[1]) for g in gaps))

    # tokens --------------------------------------------------------------------------------
    async def add_token(self, token: TokenRecord, audit: AuditEntry) -> None:
        async with self._tx(audited=True) as tx:
            await tx.conn.execute(
                "INSERT INTO tokens(id, role, secret_hash, label, created_at, expires_at) VALUES ($1,$2,$3,$4,$5,$6)",
                token.id,
                token.role,
                token.secret_hash,
                token.label,
                to_ms(token.created_at),
                to_ms(token.expires_at) if token.expires_at else None,
            )
            tx.audit(audit)

    async def list_tokens(self) -> list[TokenRecord]:
        async with self._read() as c:
            rows = await c.fetch(f"SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at, id")
        return [_token(r) for r in rows]

    async def inbox_last_cursor(self) -> int:
        async with self._read() as c:
            return int(await c.fetchval("SELECT coalesce(max(cursor), 0) FROM inbox"))

    async def get_token(self, token_id: str) -> TokenRecord | None:
        async with self._read() as c:
            row = await c.fetchrow(f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE id=$1", token_id)
        return None if row is None else _token(row)

    async def revoke_token(self, token_id: str, at: dt.datetime, audit: AuditEntry) -> TokenRecord:
        async with self._tx(audited=True) as tx:
            row = await tx.conn.fetchrow(
                f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE id=$1 FOR UPDATE",
                token_id,
            )
            if row is None:
                raise NotFound(f"no token {token_id}", code="token.not_found", field="id")
            if row[5] is not None:
                raise Conflict(f"token {token_id} was already revoked", code="token.already_revoked", field="id")
            await tx.conn.execute("UPDATE tokens SET revoked_at=$1 WHERE id=$2", to_ms(at), token_id)
            tx.audit(audit)
        return TokenRecord(row[0], row[1], bytes(row[2]), row[3], row[4], to_ms(at), row[6])

    # audit ---------------------------------------------------------------------------------
    async def audit_size(self) -> int:
        size, _ = await self.audit_head()
        return size

    async def audit_head(self) -> tuple[int, bytes]:
        async with self._read() as c:
            tree = await frontier(c)
        return tree.size, tree.root()

    async def receipts_held(self, sender: str, message_ids: list[str]) -> dict[str, bytes]:
        ids = [m for m in dict.fromkeys(message_ids) if m][:1000]
        if not ids:
            return {}
        async with self._read() as c:
            rows = await c.fetch(_INBOX_RECEIPTS_HELD, sender, ids)
        return {str(r[0]): bytes(r[1]) for r in rows}

    async def inbox_since(self, sender: str, after_seq: int, limit: int) -> list[HeldMessage]:
        async with self._read() as c:
            rows = await c.fetch(
                "SELECT id, seq, document_sha256, receipt FROM inbox WHERE sender=$1 AND seq>$2 ORDER BY seq LIMIT $3",
                sender,
                after_seq,
                limit,
            )
        return [HeldMessage(str(r[0]), int(r[1]), bytes(r[2]), bytes(r[3])) for r in rows]

    async def pending(self, peer: str) -> list[OutMessage]:
        async with self._read() as c:
            rows = await c.fetch(f"SELECT {OUT_COLS} FROM messages WHERE peer=$1 AND {_PENDING} ORDER BY seq", peer)
        return self._open_outs([_out(r) for r in rows])

    async def renumber_pending(self, peer: str, first_seq: int, audit: AuditEntry) -> int:
        async with self._tx(audited=True) as tx:
            c = tx.conn
            await c.execute("SELECT peer FROM outbox_lanes WHERE peer=$1 FOR UPDATE", peer)  # no replica sends now
            ids = [
                str(r[0])
                for r in await c.fetch(f"SELECT id FROM messages WHERE peer=$1 AND {_PENDING} ORDER BY seq", peer)
            ]
            # Two steps, so no number is held twice in between (UNIQUE (peer, seq)).
            await c.executemany("UPDATE messages SET seq=$1 WHERE id=$2", [(-1 - i, m) for i, m in enumerate(ids)])
            await c.executemany(
                "UPDATE messages SET seq=$1, claimed_by=NULL WHERE id=$2",
                [(first_seq + i, m) for i, m in enumerate(ids)],
            )
            await c.execute(
                "INSERT INTO peer_state(peer, next_seq) VALUES ($1, $2)"
                " ON CONFLICT (peer) DO UPDATE SET next_seq = GREATEST(peer_state.next_seq, excluded.next_seq)",
                peer,
                first_seq + len(ids),
            )
            tx.audit(audit)
            return len(ids)

    async def audit_entries_about(self, message_ids: list[str], size: int) -> list[tuple[int, bytes]]:
        if not message_ids:
            return []
        async with self._read() as c:
            rows = await c.fetch(
                # audit_message_id() is the `audit_message` index's expression (migration 2).
                "SELECT idx, entry FROM audit WHERE audit_message_id(entry) = ANY($1::text[]) AND idx<$2 ORDER BY idx",
                message_ids,
                size,
            )
        return [(int(r[0]), bytes(r[1])) for r in rows]

    async def audit_entries(self, start: int, end: int) -> list[tuple[int, bytes]]:
        async with self._read() as c:
            rows = await c.fetch("SELECT idx, entry FROM audit WHERE idx>=$1 AND idx<$2 ORDER BY idx", start, end)
        return [(int(r[0]), bytes(r[1])) for r in rows]

    async def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        async with self._read() as c:
            await check_size(c, size)
            return await from_nodes(c, lambda get: inclusion_proof_from_nodes(get, index, size))

    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        async with self._read() as c:
            await check_size(c, new_size)
            return await from_nodes(c, lambda get: consistency_proof_from_nodes(get, old_size, new_size))

    async def root_at(self, size: int) -> bytes:
        async with self._read() as c:
            await check_size(c, size)
            return await from_nodes(c, lambda get: CompactRange.from_nodes(get, size).root())

    async def add_checkpoint(self, cp: CheckpointRecord) -> None:
        async with self._tx() as tx:
            await tx.conn.execute(
                "INSERT INTO checkpoints(size, root, note, created_at) VALUES ($1,$2,$3,$4)"
                " ON CONFLICT (size) DO NOTHING",
                cp.size,
                cp.root,
                cp.note,
                to_ms(cp.created_at),
            )

    async def set_cosigned(self, size: int, cosigned_note: bytes, at: dt.datetime) -> None:
        async with self._tx() as tx:
            await tx.conn.execute(
                "UPDATE checkpoints SET cosigned_note=$1, cosigned_at=$2 WHERE size=$3", cosigned_note, to_ms(at), size
            )

    async def checkpoints(self, after_size: int = -1, limit: int = 1000) -> list[CheckpointRecord]:
        async with self._read() as c:
            rows = await c.fetch(
                f"SELECT {_CP_COLS} FROM checkpoints WHERE size>$1 ORDER BY size LIMIT $2", after_size, limit
            )
        return [_cp(r) for r in rows]

    async def latest_checkpoint(self, *, cosigned: bool = False) -> CheckpointRecord | None:
        where = "WHERE cosigned_note IS NOT NULL" if cosigned else ""
        async with self._read() as c:
            row = await c.fetchrow(f"SELECT {_CP_COLS} FROM checkpoints {where} ORDER BY size DESC LIMIT 1")
        return None if row is None else _cp(row)

    async def witness_state(self, origin: str) -> WitnessState | None:
        async with self._read() as c:
            row = await c.fetchrow("SELECT origin, size, root, note FROM witness_state WHERE origin=$1", origin)
        return None if row is None else WitnessState(row[0], row[1], bytes(row[2]), bytes(row[3]))

    async def witness_advance(self, origin: str, old_size: int, new: WitnessState, at: dt.datetime) -> None:
        async with self._tx() as tx:
            c = tx.conn
            # A lock rather than FOR UPDATE: the first cosignature has no row to lock yet.
            await c.execute("SELECT pg_advisory_xact_lock($1)", self._witness_key)
            stored = await c.fetchval("SELECT size FROM witness_state WHERE origin=$1", origin)
            stored = 0 if stored is None else int(stored)
            if stored != old_size:
                raise Conflict(
                    f"witness holds size {stored}, request claims {old_size}", code="witness.size_mismatch", field="old"
                )
            await c.execute(
                "INSERT INTO witness_state(origin, size, root, note, updated_at) VALUES ($1,$2,$3,$4,$5)"
                " ON CONFLICT (origin) DO UPDATE SET size=EXCLUDED.size, root=EXCLUDED.root, note=EXCLUDED.note,"
                " updated_at=EXCLUDED.updated_at",
                origin,
                new.size,
                new.root,
                new.note,
                to_ms(at),
            )

    async def remember_bundle(self, owner: str, bundle: bytes, at: dt.datetime) -> None:
        async with self._tx() as tx:
            await tx.conn.execute(
                "INSERT INTO key_bundles(owner, digest, bundle, stored_at) VALUES ($1,$2,$3,$4) ON CONFLICT DO NOTHING",
                owner,
                hashlib.sha256(bundle).digest(),
                bundle,
                to_ms(at),
            )

    async def bundles(self) -> list[tuple[str, bytes]]:
        async with self._read() as c:
            rows = await c.fetch("SELECT owner, bundle FROM key_bundles ORDER BY stored_at, owner")
        return [(r[0], bytes(r[1])) for r in rows]

    async def rows_in_clear(self, table: str, limit: int) -> list[ClearRow]:
        if table not in ("messages", "inbox"):
            raise ValueError(f"no sealed columns in {table}")
        body = "body" if table == "inbox" else "NULL::bytea"
        async with self._read() as c:
            rows = await c.fetch(
                f"SELECT id, type, created_at, signed_document, {body} FROM {table}"
                " WHERE retain_until IS NULL ORDER BY id LIMIT $1",
                limit,
            )
        return [ClearRow(table, r[0], r[1], r[2], bytes(r[3]), _b(r[4])) for r in rows]

    async def retention_counts(self) -> list[tuple[dt.date | None, int, int]]:
        async with self._read() as c:
            rows = await c.fetch(RETENTION_COUNTS_SQL)
        return [(r[0], int(r[1]), int(r[2])) for r in rows]

    async def seal_rows(self, rows: list[ClearRow]) -> int:
        if not rows:
            return 0
        n = 0
        async with self._tx() as tx:
            for r in rows:
                if r.table == "inbox":
                    status = await tx.conn.execute(
                        "UPDATE inbox SET signed_document=$1, body=$2, retain_until=$3"
                        " WHERE id=$4 AND retain_until IS NULL",
                        r.signed_document,
                        r.body,
                        r.retain_until,
                        r.id,
                    )
                else:
                    status = await tx.conn.execute(
                        "UPDATE messages SET signed_document=$1, ciphertext=NULL, enc_kid=NULL, retain_until=$2"
                        " WHERE id=$3 AND retain_until IS NULL",
                        r.signed_document,
                        r.retain_until,
                        r.id,
                    )
                n += int(status.split()[-1])
        return n

    async def evidence(self, message_ids: list[str]) -> list[Evidence]:
        out: list[Evidence] = []
        async with self._read() as c:
            for i in range(0, len(message_ids), 500):
                chunk = message_ids[i : i + 500]
                for r in await c.fetch(f"SELECT {EVIDENCE_OUT_COLS} FROM messages WHERE id = ANY($1::text[])", chunk):
                    out.append(evidence_from_row("outbound", r, _as_is))
                for r in await c.fetch(
                    f"SELECT {EVIDENCE_IN_COLS.replace('NULL', 'NULL::bytea')} FROM inbox WHERE id = ANY($1::text[])",
                    chunk,
                ):
                    out.append(evidence_from_row("inbound", r, _as_is))
        return self._open_evidence(out)

    # retention and disposal ------------------------------------------------------------------
    async def due_for_disposal(self, today: dt.date, limit: int) -> list[DueRow]:
        rows: list[Any] = []
        async with self._read() as c:
            for sql in (DUE_OUT_SQL, DUE_IN_SQL):
                if len(rows) < limit:
                    rows += await c.fetch(sql, today, limit - len(rows))
        return self._due_rows(rows)

    async def dispose(self, rows: list[DueRow], at: dt.datetime, audit: dict[str, AuditEntry]) -> list[str]:
        if not rows:
            return []
        done: list[str] = []
        async with self._tx(audited=True) as tx:
            c = tx.conn
            for r in rows:
                if await c.fetchval(
                    "SELECT 1 FROM holds WHERE message_id=$1 AND origin='ours' AND released_at IS NULL", r.id
                ):
                    continue  # held since it was found due
                if r.direction == "outbound":
                    row = await c.fetchrow(
                        "SELECT ack FROM messages WHERE id=$1 AND disposed_at IS NULL FOR UPDATE", r.id
                    )
                    if row is None:
                        continue
                    await c.execute(
                        "UPDATE messages SET signed_document=''::bytea, ciphertext=NULL, enc_kid=NULL, ack=$1,"
                        " disposed_at=$2 WHERE id=$3",
                        disposed_ack(_b(row[0])),
                        to_ms(at),
                        r.id,
                    )
                else:
                    status = await c.execute(
                        "UPDATE inbox SET signed_document=''::bytea, body=''::bytea, disposed_at=$1"
                        " WHERE id=$2 AND disposed_at IS NULL",
                        to_ms(at),
                        r.id,
                    )
                    if status.split()[-1] == "0":
                        continue
                await c.execute("DELETE FROM refs WHERE message_id=$1", r.id)
                await c.execute(DISPOSED_CONSENTS_SQL, r.id)
                done.append(r.id)
            tx.audit(*(audit[i] for i in done))
        return done

    async def live_days(self, today: dt.date) -> set[dt.date]:
        async with self._read() as c:
            rows = await c.fetch(LIVE_DAYS_SQL, today)
        return {r[0] for r in rows if r[0] is not None}

    async def place_hold(self, hold: Hold, audit: AuditEntry) -> Hold:
        sealed = self.sealed
        async with self._tx(audited=True) as tx:
            c = tx.conn
            current = await c.fetchrow(
                f"SELECT {HOLD_COLS} FROM holds WHERE message_id=$1 AND origin='ours' FOR UPDATE", hold.message_id
            )
            out = await c.fetchrow(HOLD_OUT_SQL + " FOR UPDATE", hold.message_id)
            inb = None if out is not None else await c.fetchrow(HOLD_IN_SQL + " FOR UPDATE", hold.message_id)
            old = None if current is None else hold_from_row(current, _as_is)
            placed, sql, params = held_row(hold, out, inb, old, sealed)
            if sql is not None:
                await c.execute(sql, *params)
            await _put_hold(c, placed)
            tx.audit(audit)
        return placed

    async def release_hold(
        self, message_id: str, at: dt.datetime, by: str, reason: str | None, audit: AuditEntry
    ) -> Hold:
        async with self._tx(audited=True) as tx:
            row = await tx.conn.fetchrow(
                f"SELECT {HOLD_COLS} FROM holds WHERE message_id=$1 AND origin='ours' FOR UPDATE", message_id
            )
            current = check_releasable(message_id, None if row is None else hold_from_row(row, _as_is))
            await tx.conn.execute(
                "UPDATE holds SET released_at=$1, released_by=$2, release_reason=$3"
                " WHERE message_id=$4 AND origin='ours'",
                to_ms(at),
                by,
                reason,
                message_id,
            )
            tx.audit(audit)
        return replace(current, released_at=to_ms(at), released_by=by, release_reason=reason)

    async def holds_for(self, message_ids: Sequence[str]) -> dict[str, list[Hold]]:
        if not message_ids:
            return {}
        out: dict[str, list[Hold]] = {}
        async with self._read() as c:
            rows = await c.fetch(
                f"SELECT {HOLD_COLS} FROM holds WHERE message_id = ANY($1::text[]) ORDER BY placed_at",
                list(dict.fromkeys(message_ids)),
            )
        for r in rows:
            out.setdefault(r[0], []).append(hold_from_row(r, _as_is))
        return out

    async def list_holds(self, active_only: bool, limit: int) -> list[Hold]:
        where = " WHERE released_at IS NULL" if active_only else ""
        async with self._read() as c:
            rows = await c.fetch(
                f"SELECT {HOLD_COLS} FROM holds{where} ORDER BY placed_at DESC, message_id LIMIT $1", limit
            )
        return [hold_from_row(r, _as_is) for r in rows]

    async def retention_totals(self, today: dt.date) -> RetentionTotals:
        async with self._read() as c:
            row = await c.fetchrow(RETENTION_TOTALS_SQL, today)
        return totals_from_row(row)


# --- row mapping -------------------------------------------------------------------------------

_CP_COLS = "size, root, note, created_at, cosigned_note, cosigned_at"


def _as_is(v: dt.datetime) -> dt.datetime:
    return v  # asyncpg reads timestamptz as an aware datetime already


def _out(r: Any) -> OutMessage:
    return out_message_from_row(r, _as_is)


def _in(r: Any) -> InboxItem:
    return inbox_item_from_row(r, _as_is)


def _cp(r: Any) -> CheckpointRecord:
    return CheckpointRecord(r[0], bytes(r[1]), bytes(r[2]), r[3], _b(r[4]), r[5])


# --- transactional jobs --------------------------------------------------------------------------


#: The next sequence number of a peer's outbox, `$2` of them taken; the peer's outbox lane (the
#: row replicas lock to claim its queue) made on the way, in the same round trip.
#: The audit log's frontier comes back with it: read after the audit lock was taken (in an earlier
#: statement, so this one's snapshot is newer), it is the one the group's entries extend.
_NEXT_SEQ_SQL: Final = (
    "WITH lane AS (INSERT INTO outbox_lanes(peer) VALUES ($1) ON CONFLICT DO NOTHING),"
    " seq AS (INSERT INTO peer_state(peer, next_seq) VALUES ($1, 1 + $2)"
    " ON CONFLICT (peer) DO UPDATE SET next_seq = peer_state.next_seq + $2 RETURNING next_seq - $2 AS first)"
    " SELECT seq.first, a.compact, a.last_at FROM seq LEFT JOIN audit_state a ON a.id = 1"
)
#: A group of submissions: messages, their 'queued' history rows (in the group's order), their
#: reference tags and idempotency keys, their audit entries (`pg_audit.append_ctes`) and the other
#: replicas' wake-up (delivered at commit), in one statement (one round trip; before, each table,
#: the audit append and the notification took their own). The rows that reference a message are
#: checked at the statement's end, when the message rows are there.
_SUBMIT_CTES: Final = (
    "m AS (INSERT INTO messages(id, peer, seq, type, status, created_at, expires_at, signed_document,"
    " document_sha256, attempts, next_attempt_at, token_id, updated_at, in_reply_to, retain_until)"
    " SELECT id, peer, seq, type, 'queued', at, expires_at, doc, sha, 0, at, token_id, at, reply, retain"
    " FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::timestamptz[], $6::timestamptz[],"
    " $7::bytea[], $8::bytea[], $9::text[], $10::text[], $11::date[])"
    " AS u(id, peer, seq, type, at, expires_at, doc, sha, token_id, reply, retain)),"
    " h AS (INSERT INTO history(message_id, at, status, detail)"
    " SELECT id, at, 'queued', '' FROM unnest($1::text[], $5::timestamptz[]) WITH ORDINALITY AS u(id, at, n)"
    " ORDER BY n),"
    " r AS (INSERT INTO refs(tag, direction, message_id)"
    " SELECT tag, 'out', id FROM unnest($12::bytea[], $13::text[]) AS u(tag, id) ON CONFLICT DO NOTHING),"
    " k AS (INSERT INTO idempotency(token_id, key, request_hash, message_id, created_at)"
    " SELECT * FROM unnest($14::text[], $15::text[], $16::bytea[], $17::text[], $18::timestamptz[]))"
)
_SUBMIT_SQL: Final = f"WITH {_SUBMIT_CTES}, {append_ctes(21)} SELECT pg_notify($19, $20)"
_NOTIFY_SQL: Final = "SELECT pg_notify($1, $2)"


_REFS_INSERT: Final = "INSERT INTO refs(tag, direction, message_id) VALUES ($1,$2,$3) ON CONFLICT DO NOTHING"
_HISTORY_SQL: Final = "INSERT INTO history(message_id, at, status, detail) VALUES ($1,$2,$3,$4)"


async def _history(c: Any, message_id: str, at: dt.datetime, status: str, detail: str = "") -> None:
    await c.execute(_HISTORY_SQL, message_id, to_ms(at), status, detail)


async def _index(c: Any, tags: tuple[bytes, ...], direction: str, message_id: str) -> None:
    """Index a message under its reference tags (in the transaction that stores it)."""
    if tags:
        await c.executemany(
            _REFS_INSERT,
            [(t, direction, message_id) for t in tags],
        )


async def _submit_group(
    tx: _Tx, batch: list[tuple[NewMessage, AuditEntry]], notify: tuple[str, str]
) -> list[tuple[OutMessage, bool] | GatewayError]:
    """Store a group of submissions in a few statements (one per table, not one per message and
    table), with the same results one `_submit` each would give in turn: an Idempotency-Key used
    before (here or earlier in the group) returns its message, or a Conflict if the request differs.
    `notify` (channel, payload) wakes the other replicas when the transaction commits."""
    c = tx.conn
    results: list[tuple[OutMessage, bool] | GatewayError | None] = [None] * len(batch)
    keyed = idempotency_keys(batch)
    held: dict[tuple[str | None, str | None], tuple[str, bytes]] = {}
    if keyed:
        rows = await c.fetch(
            "SELECT i.token_id, i.key, i.message_id, i.request_hash FROM idempotency i"
            " JOIN unnest($1::text[], $2::text[]) AS k(token_id, key) USING (token_id, key)",
            [t for t, _ in keyed.values()],
            [k for _, k in keyed.values()],
        )
        held = {(r[0], r[1]): (r[2], bytes(r[3])) for r in rows}
    earlier = {mid for mid, _ in held.values()}
    stored = {}
    if earlier:
        rows = await c.fetch(f"SELECT {OUT_COLS} FROM messages WHERE id = ANY($1::text[])", list(earlier))
        stored = {r[0]: _out(r) for r in rows}
    fresh, replay_of = plan_group(batch, keyed, held, results)
    peers = sorted({batch[i][0].peer for i in fresh})
    next_seq: dict[str, int] = {}
    frontier_row: Any = None
    for peer in peers:
        n = sum(1 for i in fresh if batch[i][0].peer == peer)
        frontier_row = await c.fetchrow(_NEXT_SEQ_SQL, peer, n)
        next_seq[peer] = frontier_row[0]
    made: dict[str, OutMessage] = {}
    for i in fresh:
        m = batch[i][0]
        made[m.id] = queued_message(m, next_seq[m.peer])  # what is written below, as a read gives it back
        next_seq[m.peer] += 1
        results[i] = (made[m.id], True)
    if fresh:
        outs = [(batch[i][0], made[batch[i][0].id]) for i in fresh]
        messages = [
            (
                m.id,
                m.peer,
                o.seq,
                m.type,
                o.created_at,
                o.expires_at,
                m.signed_document,
                m.document_sha256,
                m.token_id,
                m.in_reply_to,
                m.retain_until,
            )
            for m, o in outs
        ]
        refs = [(t, m.id) for m, _ in outs for t in m.references]
        keys = [
            (m.token_id, m.idempotency_key, m.request_hash, m.id, o.created_at)
            for m, o in outs
            if m.idempotency_key is not None and m.token_id is not None
        ]
        compact = None if frontier_row[1] is None else bytes(frontier_row[1])
        last_at = await newest_time(c, compact, frontier_row[2])
        audit = planned_append(compact, last_at, [batch[i][1] for i in fresh])
        rows = (*columns(messages, 11), *columns(refs, 2), *columns(keys, 5), *notify)
        await c.execute(_SUBMIT_SQL, *rows, *audit)
        for m, _ in outs:
            if m.consent is not None:
                await _record_consent(c, m.consent, outgoing=True)
    else:
        await c.execute(_NOTIFY_SQL, *notify)
    for i, mid in replay_of.items():
        results[i] = (stored[mid] if mid in stored else made[mid], False)
    return [r for r in results if r is not None]


async def _submit(tx: _Tx, msg: NewMessage, audit: AuditEntry) -> tuple[OutMessage, bool]:
    c = tx.conn
    if msg.idempotency_key is not None and msg.token_id is not None:
        row = await c.fetchrow(
            "SELECT message_id, request_hash FROM idempotency WHERE token_id=$1 AND key=$2",
            msg.token_id,
            msg.idempotency_key,
        )
        if row is not None:
            if bytes(row[1]) != msg.request_hash:
                raise Conflict(
                    "Idempotency-Key was already used with a different request",
                    code="idempotency.conflict",
                    field="Idempotency-Key",
                )
            existing = await c.fetchrow(f"SELECT {OUT_COLS} FROM messages WHERE id=$1", row[0])
            return _out(existing), False
    seq = await c.fetchval(
        "INSERT INTO peer_state(peer, next_seq) VALUES ($1, 2)"
        " ON CONFLICT (peer) DO UPDATE SET next_seq = peer_state.next_seq + 1 RETURNING next_seq - 1",
        msg.peer,
    )
    await c.execute("INSERT INTO outbox_lanes(peer) VALUES ($1) ON CONFLICT DO NOTHING", msg.peer)
    out = queued_message(msg, seq)  # what is written below, as a read would give it back
    now = out.created_at
    await c.execute(
        "INSERT INTO messages(id, peer, seq, type, status, created_at, expires_at, signed_document, document_sha256,"
        " attempts, next_attempt_at, token_id, updated_at, in_reply_to, retain_until)"
        " VALUES ($1,$2,$3,$4,'queued',$5,$6,$7,$8,0,$5,$9,$5,$10,$11)",
        msg.id,
        msg.peer,
        seq,
        msg.type,
        now,
        out.expires_at,
        msg.signed_document,
        msg.document_sha256,
        msg.token_id,
        msg.in_reply_to,
        msg.retain_until,
    )
    await _index(c, msg.references, "out", msg.id)
    if msg.idempotency_key is not None and msg.token_id is not None:
        await c.execute(
            "INSERT INTO idempotency(token_id, key, request_hash, message_id, created_at) VALUES ($1,$2,$3,$4,$5)",
            msg.token_id,
            msg.idempotency_key,
            msg.request_hash,
            msg.id,
            now,
        )
    await _history(c, msg.id, msg.created_at, "queued")
    if msg.consent is not None:
        await _record_consent(c, msg.consent, outgoing=True)
    tx.audit(audit)
    return out, True


_EVENT_FOR = {"delivered": "receipt", "refused": "refusal", "retry": "attempt", "expired": "expire"}


async def _record_outcomes(
    tx: _Tx, outcomes: list[AttemptOutcome], status_of: dict[str, str], replica: str
) -> set[str]:
    """Apply the outcomes of a batch, each message once: the updates of the same shape (the
    columns they set) by one `executemany`, the history rows by another, in outcome order — the
    rows and entries `_record_outcome` writes one by one, in two or three round trips in all
    instead of two per message. Returns the ids of the messages updated."""
    updates: dict[str, list[list[Any]]] = {}
    history: list[tuple[str, dt.datetime, str, str]] = []
    updated: set[str] = set()
    for o in outcomes:
        planned = _outcome_update(o, status_of, replica)
        if planned is None:
            continue
        sql, args, status, current = planned
        updates.setdefault(sql, []).append(args)
        updated.add(o.message_id)
        if status != current or o.kind == "retry":
            history.append((o.message_id, to_ms(o.at), status, o.error or ""))
        tx.audit(*o.audit)
    for sql, rows in updates.items():
        await tx.conn.executemany(sql, rows)
    if history:
        await tx.conn.executemany(_HISTORY_SQL, history)
    return updated


async def _record_outcome(tx: _Tx, o: AttemptOutcome, status_of: dict[str, str], replica: str) -> bool:
    """Apply one outcome; `status_of` holds the batch's current statuses (locked) and is kept up
    to date. True if the message was updated."""
    planned = _outcome_update(o, status_of, replica)
    if planned is None:
        return False
    sql, args, status, current = planned
    await tx.conn.execute(sql, *args)
    if status != current or o.kind == "retry":
        await _history(tx.conn, o.message_id, o.at, status, o.error or "")
    tx.audit(*o.audit)
    return True


def _outcome_update(
    o: AttemptOutcome, status_of: dict[str, str], replica: str
) -> tuple[str, list[Any], str, str] | None:
    """The UPDATE one outcome makes (SQL, arguments), the message's new and former status; None
    for a message not in the batch or an outcome its status no longer takes. Moves `status_of`.
    The UPDATE also clears `replica`'s claim on the message (another replica's stays)."""
    current = status_of.get(o.message_id)
    if current is None:
        return None
    try:
        status = next_status(current, _EVENT_FOR[o.kind])
    except Conflict:
        return None  # e.g. a late receipt for a message already acknowledged: nothing to change
    args: list[Any] = [status, to_ms(o.at), o.attempt, replica]
    sets = [
        "status=$1",
        "updated_at=$2",
        "attempts=greatest(attempts, $3)",
        # Both read the row's former claim (SET expressions see the old row).
        "claimed_by=CASE WHEN claimed_by=$4 THEN NULL ELSE claimed_by END",
        "claim_expires_at=CASE WHEN claimed_by=$4 THEN NULL ELSE claim_expires_at END",
    ]

    def put(column: str, value: Any) -> None:
        args.append(value)
        sets.append(f"{column}=${len(args)}")

    if o.receipt is not None:
        put("receipt", o.receipt)
    if o.refusal is not None:
        put("refusal", o.refusal)
    if o.error is not None:
        put("last_error", o.error)
    if o.next_attempt_at is not None:
        put("next_attempt_at", to_ms(o.next_attempt_at))
    if o.ciphertext is not None:
        put("ciphertext", o.ciphertext)
        put("enc_kid", o.enc_kid)
    if o.kind in ("delivered", "refused", "expired"):
        sets.append("ciphertext=NULL")  # no longer needed once final
    if o.kind == "delivered":
        sets.append("last_error=NULL")  # delivered: an earlier attempt's error no longer stands
    args.append(o.message_id)
    status_of[o.message_id] = status
    return f"UPDATE messages SET {', '.join(sets)} WHERE id=${len(args)}", args, status, current


# The inbox rows of `sender` among the ids in $2: one lookup of the (sender, id) key per id. The
# fence (OFFSET 0) keeps the planner from turning it into `id = ANY($2)` over every row of the
# sender, which it did whenever its statistics were older than the table (a new schema, the first
# minute of a gateway, the whole of a bench run): all the sender's rows were read for each batch
# received, 17 % of the database's busy time in the bench (docs/performance.md, session 13).
def _inbox_held(cols: str) -> str:
    return (
        "SELECT held.* FROM unnest($2::text[]) AS wanted(id)"
        f" CROSS JOIN LATERAL (SELECT {cols} FROM inbox WHERE sender=$1 AND inbox.id=wanted.id OFFSET 0) AS held"
    )


_INBOX_IDS_HELD: Final = _inbox_held("id")
_INBOX_RECEIPTS_HELD: Final = _inbox_held("id, receipt")
_INBOX_INSERT: Final = (
    "INSERT INTO inbox(sender, id, seq, type, created_at, received_at, document_sha256, signed_document,"
    " body, receipt, in_reply_to, retain_until) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)"
)
_GAP_INSERT: Final = "INSERT INTO seq_gaps(peer, from_seq, to_seq, detected_at) VALUES ($1,$2,$3,$4)"
_HIGH_WATER_UPDATE: Final = "UPDATE peer_state SET recv_high_water=$1, gap_count=gap_count+$2 WHERE peer=$3"


def _inbox_row(it: Incoming) -> tuple[Any, ...]:
    return (
        it.sender,
        it.id,
        it.seq,
        it.type,
        to_ms(it.created_at),
        to_ms(it.received_at),
        it.document_sha256,
        it.signed_document,
        it.body,
        it.receipt,
        it.in_reply_to,
        it.retain_until,
    )


async def _high_water(c: Any, sender: str) -> int:
    """The highest sequence number received from `sender`, its peer_state row locked (made if new)."""
    await c.execute("INSERT INTO peer_state(peer) VALUES ($1) ON CONFLICT DO NOTHING", sender)
    return int(await c.fetchval("SELECT recv_high_water FROM peer_state WHERE peer=$1 FOR UPDATE", sender))


async def _accept_group(tx: _Tx, items: list[Incoming]) -> list[IncomingResult]:
    """Accept a batch with the results `_accept_one` would give each in turn, in a few statements:
    the usual arrival (new, from one sender, numbered above the high water, no ack, hold, consent,
    key bundle or named message to look up) is stored with the others like it by one statement
    per table, and the high water moved once; any other arrival first flushes those before it,
    then goes through `_accept_one`, so the order of rows, sequence checks and audit entries is
    the batch's. Runs under the audit lock: no other transaction inserts into the inbox meanwhile
    (a unique violation would roll the whole batch back; the sender sends it again)."""
    c = tx.conn
    if len({it.sender for it in items}) != 1:
        return [await _accept_one(tx, it) for it in items]
    sender = items[0].sender
    rows = await c.fetch(_INBOX_IDS_HELD, sender, [i.id for i in items])
    held = {r[0] for r in rows}
    hw = await _high_water(c, sender)
    results: list[IncomingResult | None] = [None] * len(items)
    group: list[Incoming] = []
    gaps: list[tuple[str, int, int | None, dt.datetime]] = []
    moved = hw  # the high water the group has reached (stored at the flush)

    def usual(it: Incoming) -> bool:
        return (
            it.id not in held
            and it.seq > moved
            and it.acked_message_id is None
            and it.announced is None
            and it.consent is None
            and it.hold_notice is None
            and not names_messages(it)
        )

    async def flush() -> None:
        nonlocal group, gaps
        if not group:
            return
        await c.executemany(_INBOX_INSERT, [_inbox_row(it) for it in group])
        refs = [(t, "in", it.id) for it in group for t in it.references]
        if refs:
            await c.executemany(_REFS_INSERT, refs)
        if gaps:
            await c.executemany(_GAP_INSERT, gaps)
        await c.execute(_HIGH_WATER_UPDATE, moved, len(gaps), sender)
        for it in group:
            tx.audit(it.audit, *it.extra_audit)
        group, gaps = [], []

    for i, it in enumerate(items):
        if usual(it):
            upd = advance_sequence(moved, it.seq)
            if upd.gap_from is not None:
                gaps.append((sender, upd.gap_from, upd.gap_to, to_ms(it.received_at)))
            moved = upd.high_water
            held.add(it.id)
            group.append(it)
            results[i] = IncomingResult("accepted", it.receipt)
            continue
        await flush()
        results[i] = res = await _accept_one(tx, it)
        if res.status == "accepted":
            held.add(it.id)
            moved = await _high_water(c, sender)
    await flush()
    return [r for r in results if r is not None]


async def _accept_one(tx: _Tx, it: Incoming) -> IncomingResult:
    c = tx.conn
    find = "SELECT document_sha256, receipt FROM inbox WHERE sender=$1 AND id=$2"
    row = await c.fetchrow(find, it.sender, it.id)
    arrival = classify(None if row is None else bytes(row[0]), it.document_sha256)
    if arrival is Arrival.NEW:
        hw = await c.fetchval("SELECT recv_high_water FROM peer_state WHERE peer=$1", it.sender)
        if hw is not None and it.seq <= hw:  # only a number already passed can be reused
            held = await c.fetchval(
                "SELECT id FROM inbox WHERE sender=$1 AND seq=$2 AND id<>$3 LIMIT 1", it.sender, it.seq, it.id
            )
            reused = seq_reused(it, int(hw), held)
            if reused is not None:
                return reused
    if arrival is Arrival.NEW and it.acked_message_id is not None:
        ack = await c.fetchrow(
            "SELECT status, peer, document_sha256 FROM messages WHERE id=$1 FOR UPDATE", it.acked_message_id
        )
        refused = ack_refusal(it, None if ack is None else (ack[0], ack[1], bytes(ack[2])))
        if refused is not None:
            return refused  # nothing written: the ack is not in our inbox and will be answered refused
    if arrival is Arrival.NEW and names_messages(it):
        exchanged = it.in_reply_to is not None and None is not await c.fetchval(
            EXCHANGED_SQL, it.in_reply_to, it.sender
        )
        held = it.hold_notice is None or None is not await c.fetchval(
            EXCHANGED_SQL, it.hold_notice.message_id, it.sender
        )
        sent_type: dict[str, str | None] = {}
        for _, mid in it.named:
            sent_type[mid] = await c.fetchval("SELECT type FROM messages WHERE id=$1 AND peer=$2", mid, it.sender)
        refused = reference_refusal(it, exchanged, sent_type, held)
        if refused is not None:
            return refused  # nothing written
    if arrival is Arrival.NEW:
        # The audit lock already serialises receivers; the UNIQUE constraint is the backstop
        # that turns a second insert of the same (sender, id) into a no-op whatever happens.
        cursor = await c.fetchval(
            _INBOX_INSERT + " ON CONFLICT (sender, id) DO NOTHING RETURNING cursor", *_inbox_row(it)
        )
        if cursor is None:  # someone else's row won: it decides, as if it had been there first
            row = await c.fetchrow(find, it.sender, it.id)
            arrival = classify(bytes(row[0]), it.document_sha256)
        else:
            await _index(c, it.references, "in", it.id)
    if arrival is Arrival.DUPLICATE:
        return IncomingResult("duplicate", bytes(row[1]))
    if arrival is Arrival.CONFLICT:
        return IncomingResult("conflict", None)
    hw = await _high_water(c, it.sender)
    upd = advance_sequence(hw, it.seq)
    if upd.gap_from is not None:
        await c.execute(_GAP_INSERT, it.sender, upd.gap_from, upd.gap_to, to_ms(it.received_at))
    await c.execute(_HIGH_WATER_UPDATE, upd.high_water, 0 if upd.gap_from is None else 1, it.sender)
    tx.audit(it.audit, *it.extra_audit)
    if it.announced is not None:  # the peer's new bundle commits with its `key_announced` entry
        raw = it.announced.to_bytes()
        await c.execute(
            "INSERT INTO key_bundles(owner, digest, bundle, stored_at) VALUES ($1,$2,$3,$4) ON CONFLICT DO NOTHING",
            it.sender,
            hashlib.sha256(raw).digest(),
            raw,
            to_ms(it.received_at),
        )
    if it.acked_message_id is not None:
        await _apply_ack(tx, it)
    if it.consent is not None:
        await _record_consent(tx.conn, it.consent, outgoing=False)
    if it.hold_notice is not None:
        await _record_peer_hold(tx.conn, it)
    return IncomingResult("accepted", it.receipt)


async def _record_peer_hold(c: Any, it: Incoming) -> None:
    """The peer's `legal-hold` notice, as a hold of origin "peer" on the message it names."""
    n = it.hold_notice
    assert n is not None
    if n.action == "released":
        await c.execute(
            "UPDATE holds SET released_at=$1, released_by=$2, release_reason=$3 WHERE message_id=$4 AND origin='peer'",
            to_ms(n.at),
            f"peer:{it.sender}",
            n.reason,
            n.message_id,
        )
        return
    ours = await c.fetchval("SELECT 1 FROM messages WHERE id=$1", n.message_id)
    hold = Hold(
        n.message_id, "peer", "outbound" if ours else "inbound", n.reason, f"peer:{it.sender}", n.at, None, n.notice_id
    )
    await _put_hold(c, hold)


async def _put_hold(c: Any, h: Hold) -> None:
    await c.execute(
        f"INSERT INTO holds({HOLD_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,NULL,NULL,NULL)"
        " ON CONFLICT (message_id, origin) DO UPDATE SET direction=EXCLUDED.direction, reason=EXCLUDED.reason,"
        " placed_by=EXCLUDED.placed_by, placed_at=EXCLUDED.placed_at, hold_id=EXCLUDED.hold_id,"
        " notice_id=EXCLUDED.notice_id, released_at=NULL, released_by=NULL, release_reason=NULL",
        h.message_id,
        h.origin,
        h.direction,
        h.reason,
        h.placed_by,
        to_ms(h.placed_at),
        None if h.hold_id is None else h.hold_id.hex(),
        h.notice_id,
    )


async def _record_consent(c: Any, ev: ConsentEvent, *, outgoing: bool) -> None:
    """A consent request starts a record; a decision updates it (only on the side it belongs to)."""
    role = role_of(ev, outgoing=outgoing)
    if ev.kind == "request":
        await c.execute(
            f"INSERT INTO consents({CONSENT_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,NULL,NULL,NULL,NULL,NULL,NULL)"
            " ON CONFLICT (request_id) DO NOTHING",
            ev.request_id,
            ev.message_id,
            role,
            ev.use,
            ev.party,
            ev.reason,
            to_ms(ev.at),
        )
        return
    await c.execute(
        "UPDATE consents SET decision_id=$1, decision=$2, conditions=$3, decision_reason=$4, valid_until=$5,"
        " decided_at=$6 WHERE request_id=$7 AND role=$8",
        ev.decision_id,
        ev.decision,
        ev.conditions,
        ev.reason,
        None if ev.valid_until is None else ev.valid_until.isoformat(),
        to_ms(ev.at),
        ev.request_id,
        role,
    )


async def _apply_ack(tx: _Tx, it: Incoming) -> None:
    c = tx.conn
    mid = it.acked_message_id
    row = await c.fetchrow("SELECT status, peer FROM messages WHERE id=$1 FOR UPDATE", mid)
    if row is None or row[1] != it.sender:
        return  # cannot happen: ack_refusal refused it before the inbox row was written
    try:
        status = next_status(row[0], "ack")
    except Conflict:
        return
    info = it.ack_info or {}
    await c.execute(
        "UPDATE messages SET status=$1, ack=$2, updated_at=$3 WHERE id=$4",
        status,
        json_bytes(info),
        to_ms(it.received_at),
        mid,
    )
    detail = str(info.get("status", ""))
    await _history(c, str(mid), it.received_at, status, detail)
    tx.audit(
        AuditEntry(
            at=it.received_at,
            kind="acknowledged",
            actor=f"peer:{it.sender}",
            message_id=mid,
            peer=it.sender,
            digests={"ack_document": it.document_sha256.hex()},
            detail={"status": detail, "ack_id": it.id},
        )
    )
