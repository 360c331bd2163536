"""SQLite store: WAL, synchronous=FULL, file mode 0600, one writer thread with group commit.

Writes are queued to a single thread that owns the write connection. It takes every job waiting,
runs each inside its own SAVEPOINT within one transaction and commits once, so a burst of
submissions costs one fsync, not one each; a job that raises rolls back only its savepoint. Reads
use a second connection on a second thread, so they never wait behind a commit (WAL).

Checkpoints (copying the WAL's pages back into the database file) run on a third connection and
thread of their own, `PASSIVE` every `checkpoint_interval` seconds, not inside the writer's
commits: a commit that crossed SQLite's automatic threshold (1,000 pages) used to copy them itself
while every submission in its group waited. Nor on the reading thread, where a read (the delivery
worker's `due`) waited behind each one: 3-5 ms a checkpoint at 500 msg/s, once 55 ms (performance.md,
session 19). The writer keeps a far higher threshold of its own, a fallback should checkpoints
ever stall.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import os
import queue
import re
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Final, TypeVar

from ..core.audit import AuditEntry, in_time_order
from ..core.consent import ConsentEvent, ConsentRecord, role_of
from ..core.encoding import format_ts, json_bytes, parse_ts
from ..core.errors import Conflict, GatewayError, NotFound, StoreUnavailable
from ..core.merkle import (
    CompactRange,
    TreeRangeError,
    append_records,
    consistency_proof_from_nodes,
    inclusion_proof_from_nodes,
)
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
    day_of,
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
from .migrations import SQLITE_MIGRATIONS
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
Job = Callable[[sqlite3.Connection], Any]

_MAX_GROUP = 256
#: The writer checkpoints by itself only past this many WAL pages (40 MiB): the checkpoints
#: normally keep the WAL far shorter.
_WRITER_AUTOCHECKPOINT = 10_000


def _token(r: Any) -> TokenRecord:
    return TokenRecord(r[0], r[1], bytes(r[2]), r[3], parse_ts(r[4]), _pt(r[5]), _pt(r[6]))


def _pt(v: str | None) -> dt.datetime | None:
    return None if v is None else parse_ts(v)


class SQLiteStore(Store):
    """The embedded default store."""

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout_ms: int = 5000, checkpoint_interval: float = 0.1
    ) -> None:
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self.checkpoint_interval = checkpoint_interval
        self._checkpoints: asyncio.Task[None] | None = None
        self._wal_checkpoints = 0
        self._jobs: queue.SimpleQueue[tuple[Job, asyncio.Future[Any], asyncio.AbstractEventLoop] | None] = (
            queue.SimpleQueue()
        )
        self._writer: threading.Thread | None = None
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-read")
        self._rconn: sqlite3.Connection | None = None
        self._checkpointer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-checkpoint")
        self._cconn: sqlite3.Connection | None = None
        self.commits = 0  # for metrics and the benchmark: fsyncs actually made

    # lifecycle -----------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=self.busy_timeout_ms / 1000,
            factory=_Connection,
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        # Space freed by an update or delete is zeroed, not left holding the old bytes: sealing a
        # row stored in clear (and later disposal) leaves no readable copy in the file.
        conn.execute("PRAGMA secure_delete=ON")
        # A lock held longer than this (another process, a backup) fails the commit with 503
        # instead of hanging the request; the next request tries again.
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        # Statement journals and sorts stay in memory: no temporary file opened and unlinked per
        # commit (nothing in them outlives the statement; they were unlinked files before).
        conn.execute("PRAGMA temp_store=MEMORY")
        return conn

    def _checkpoint_connection(self) -> sqlite3.Connection:
        """The connection that only checkpoints: copying the WAL goes through a buffer of its own,
        not the page cache, so this one keeps almost none (a full 2 MiB cache here measured 3-6
        MiB more with 1,000,000 queued, performance.md session 12)."""
        conn = self._connect()
        conn.execute("PRAGMA cache_size=-64")
        return conn

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        os.chmod(self.path, 0o600)
        conn = self._connect()
        _migrate(conn)
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                os.chmod(side, 0o600)
        conn.execute(f"PRAGMA wal_autocheckpoint={_WRITER_AUTOCHECKPOINT}")
        self._writer = threading.Thread(target=self._write_loop, args=(conn,), name="sqlite-write", daemon=True)
        self._writer.start()
        loop = asyncio.get_running_loop()
        self._rconn = await loop.run_in_executor(self._reader, self._connect)
        self._cconn = await loop.run_in_executor(self._checkpointer, self._checkpoint_connection)
        self._checkpoints = asyncio.create_task(self._checkpoint_loop(), name="sqlite-checkpoints")

    async def close(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpoints
            self._checkpoints = None
        if self._writer is not None:
            self._jobs.put(None)
            await asyncio.get_running_loop().run_in_executor(None, self._writer.join)
            self._writer = None
        if self._cconn is not None:
            cconn = self._cconn
            await asyncio.get_running_loop().run_in_executor(self._checkpointer, cconn.close)
            self._cconn = None
        self._checkpointer.shutdown(wait=True)
        if self._rconn is not None:
            rconn = self._rconn
            await asyncio.get_running_loop().run_in_executor(self._reader, rconn.close)
            self._rconn = None
        self._reader.shutdown(wait=True)

    @property
    def wal_checkpoints(self) -> int:
        """WAL checkpoints run by `_checkpoint_loop` since the store opened (for tests)."""
        return self._wal_checkpoints

    async def _checkpoint_loop(self) -> None:
        """`PRAGMA wal_checkpoint(PASSIVE)` every `checkpoint_interval` seconds on the checkpoint
        connection, which never holds a transaction. PASSIVE copies what no reader still needs and
        never waits for a lock, so neither the writer nor a read waits for it; SQLite starts the
        WAL over at the writer's next transaction once everything in it has been copied. A
        checkpoint that fails is tried again at the next tick."""
        while True:
            await asyncio.sleep(self.checkpoint_interval)
            if self._cconn is None:
                return
            with contextlib.suppress(StoreUnavailable):
                await self._wal_checkpoint("PASSIVE")
                self._wal_checkpoints += 1

    async def _wal_checkpoint(self, mode: str) -> None:
        """`PRAGMA wal_checkpoint(<mode>)` on the checkpoint connection and thread: outside any
        transaction, and one checkpoint at a time (SQLite lets one run at once; a second, from
        another connection, gets "busy" without waiting). A TRUNCATE that could not finish (a
        read held the WAL past the busy timeout) is a StoreUnavailable, never a silent no-op."""
        conn = self._cconn
        if conn is None:
            raise StoreUnavailable("store is not open")

        def run() -> None:
            try:
                busy, _, _ = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
            except sqlite3.Error as e:
                raise StoreUnavailable(f"the database could not be checkpointed: {e}") from e
            if busy and mode != "PASSIVE":
                raise StoreUnavailable(f"the WAL checkpoint ({mode}) could not finish: the database is busy")

        await asyncio.get_running_loop().run_in_executor(self._checkpointer, run)

    # execution -----------------------------------------------------------------------------
    def _write_loop(self, conn: sqlite3.Connection) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                conn.close()
                return
            batch = [first]
            while len(batch) < _MAX_GROUP:
                try:
                    nxt = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._jobs.put(None)
                    break
                batch.append(nxt)
            self._run_group(conn, batch)

    def _run_group(
        self,
        conn: sqlite3.Connection,
        batch: list[tuple[Job, asyncio.Future[Any], asyncio.AbstractEventLoop]],
    ) -> None:
        results: list[tuple[bool, Any]] = []
        _forget_tree(conn)  # read afresh in each transaction: another process may have appended
        try:
            conn.execute("BEGIN IMMEDIATE")
            i = 0
            while i < len(batch):
                job = batch[i][0]
                if not isinstance(job, _Submission):
                    results.append(_run_job(conn, job))
                    i += 1
                    continue
                # Submissions next to each other in the queue are stored by one job, a few
                # statements for all of them, with the answers each would get in turn.
                run: list[_Submission] = []
                while i < len(batch) and isinstance(sub := batch[i][0], _Submission):
                    run.append(sub)
                    i += 1
                ok, value = _run_job(conn, functools.partial(_submit_group, batch=[(s.msg, s.audit) for s in run]))
                if not ok:
                    results += [(False, value)] * len(run)
                else:
                    results += [(not isinstance(r, GatewayError), r) for r in value]
            conn.execute("COMMIT")
            self.commits += 1
        except sqlite3.Error as e:
            _forget_tree(conn)
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            err = StoreUnavailable(f"the database could not commit: {e}")
            results = [(False, err)] * len(batch)
        # One wake-up per event loop for the whole group, not one per job.
        answers: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for (_, fut, loop), (ok, value) in zip(batch, results, strict=True):
            answers.setdefault(loop, []).append((fut, ok, value))
        for loop, settled in answers.items():
            loop.call_soon_threadsafe(_settle_all, settled)

    async def _write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        if self._writer is None:
            raise StoreUnavailable("store is not open")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._jobs.put((job, fut, loop))
        return await fut

    async def _read(self, job: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._rconn
        if conn is None:
            raise StoreUnavailable("store is not open")

        def run() -> T:
            try:
                return job(conn)
            except sqlite3.Error as e:
                raise StoreUnavailable(f"the database could not be read: {e}") from e

        return await asyncio.get_running_loop().run_in_executor(self._reader, run)

    # outbound ------------------------------------------------------------------------------
    async def submit(self, msg: NewMessage, audit: AuditEntry) -> tuple[OutMessage, bool]:
        out, created = await self._write(_Submission(self._seal_new(msg), audit))
        return self._submitted(msg, out, created), created

    async def submit_many(
        self, batch: list[tuple[NewMessage, AuditEntry]]
    ) -> list[tuple[OutMessage, bool] | GatewayError]:
        sealed = [(self._seal_new(msg), audit) for msg, audit in batch]

        results = await self._write(lambda c: _submit_group(c, sealed))
        return [
            r if isinstance(r, GatewayError) else (self._submitted(m, r[0], r[1]), r[1])
            for (m, _), r in zip(batch, results, strict=True)
        ]

    async def due(self, peer: str, now: dt.datetime, limit: int, after_seq: int = 0) -> list[OutMessage]:
        def job(c: sqlite3.Connection) -> list[OutMessage]:
            rows = c.execute(
                f"SELECT {OUT_COLS} FROM messages WHERE peer=? AND {PENDING_SQL} AND seq>? ORDER BY seq LIMIT ?",
                (peer, after_seq, limit),
            ).fetchall()
            msgs = [_out(r) for r in rows]
            # The head of the queue gates the whole peer: order per peer is kept even when
            # messages behind it carry their own (earlier) retry times.
            if not msgs or msgs[0].next_attempt_at > now:
                return []
            return msgs

        return self._open_outs(await self._read(job))

    async def record_outcomes(self, outcomes: list[AttemptOutcome]) -> None:
        sealed = self._seal_outcomes(outcomes)
        await self._write(lambda c: _record_outcomes(c, sealed))

    async def next_due_at(self, peer: str) -> dt.datetime | None:
        def job(c: sqlite3.Connection) -> dt.datetime | None:
            row = c.execute(
                f"SELECT next_attempt_at FROM messages WHERE peer=? AND {PENDING_SQL} ORDER BY seq LIMIT 1",
                (peer,),
            ).fetchone()
            return None if row is None else parse_ts(row[0])

        return await self._read(job)

    async def get_message(self, message_id: str) -> OutMessage | None:
        def job(c: sqlite3.Connection) -> OutMessage | None:
            row = c.execute(f"SELECT {OUT_COLS} FROM messages WHERE id=?", (message_id,)).fetchone()
            if row is None:
                return None
            hist = c.execute(
                "SELECT at, status, detail FROM history WHERE message_id=? ORDER BY rowid", (message_id,)
            ).fetchall()
            m = _out(row)
            return OutMessage(**{**m.__dict__, "history": tuple((parse_ts(a), s, d) for a, s, d in hist)})

        found = await self._read(job)
        return None if found is None else self._open_out(found)

    async def list_messages(self, flt: MessageFilter, after: str | None, limit: int) -> list[OutMessage]:
        def job(c: sqlite3.Connection) -> list[OutMessage]:
            where: list[str] = [f"type NOT IN {CONTROL_TYPES_SQL}"]
            args: list[str | bytes] = []
            if flt.status:
                where.append("status=?")
                args.append(flt.status)
            if flt.type:
                where.append("type=?")
                args.append(flt.type)
            if flt.peer:
                where.append("peer=?")
                args.append(flt.peer)
            if flt.since:
                where.append("created_at>=?")
                args.append(format_ts(flt.since))
            if flt.reference is not None:
                where.append(f"id IN ({_REF_SQL})")
                args.extend((flt.reference, "out"))
            if after:
                where.append("id>?")
                args.append(after)
            sql = f"SELECT {OUT_COLS} FROM messages WHERE {' AND '.join(where)} ORDER BY id LIMIT ?"
            return [_out(r) for r in c.execute(sql, (*args, limit)).fetchall()]

        return self._open_outs(await self._read(job))

    async def queue_depth(self, peer: str) -> tuple[int, dt.datetime | None]:
        def job(c: sqlite3.Connection) -> tuple[int, dt.datetime | None]:
            n, oldest = c.execute(
                f"SELECT count(*), min(created_at) FROM messages WHERE peer=? AND {PENDING_SQL}",
                (peer,),
            ).fetchone()
            return int(n), _pt(oldest)

        return await self._read(job)

    # inbound -------------------------------------------------------------------------------
    async def accept_incoming(self, items: list[Incoming]) -> list[IncomingResult]:
        sealed = [self._seal_in(it) for it in items]

        def job(c: sqlite3.Connection) -> list[IncomingResult]:
            entries: list[AuditEntry] = []
            results = [_accept_one(c, it, entries) for it in sealed]
            _audit(c, *entries)  # one append for the batch: the frontier is read and written once
            return results

        return await self._write(job)

    async def receipts_held(self, sender: str, message_ids: list[str]) -> dict[str, bytes]:
        ids = [m for m in dict.fromkeys(message_ids) if m][:1000]

        def job(c: sqlite3.Connection) -> dict[str, bytes]:
            marks = ",".join("?" * len(ids))
            rows = c.execute(f"SELECT id, receipt FROM inbox WHERE sender=? AND id IN ({marks})", (sender, *ids))
            return {str(i): bytes(r) for i, r in rows.fetchall()}

        return await self._read(job) if ids else {}

    async def inbox_since(self, sender: str, after_seq: int, limit: int) -> list[HeldMessage]:
        def job(c: sqlite3.Connection) -> list[HeldMessage]:
            rows = c.execute(
                "SELECT id, seq, document_sha256, receipt FROM inbox WHERE sender=? AND seq>? ORDER BY seq LIMIT ?",
                (sender, after_seq, limit),
            )
            return [HeldMessage(str(r[0]), int(r[1]), bytes(r[2]), bytes(r[3])) for r in rows.fetchall()]

        return await self._read(job)

    async def pending(self, peer: str) -> list[OutMessage]:
        def job(c: sqlite3.Connection) -> list[OutMessage]:
            sql = f"SELECT {OUT_COLS} FROM messages WHERE peer=? AND {PENDING_SQL} ORDER BY seq"
            return [_out(r) for r in c.execute(sql, (peer,)).fetchall()]

        return self._open_outs(await self._read(job))

    async def renumber_pending(self, peer: str, first_seq: int, audit: AuditEntry) -> int:
        def job(c: sqlite3.Connection) -> int:
            ids = [
                str(r[0])
                for r in c.execute(f"SELECT id FROM messages WHERE peer=? AND {PENDING_SQL} ORDER BY seq", (peer,))
            ]
            # Two steps, so no number is held twice in between (UNIQUE (peer, seq)).
            c.executemany("UPDATE messages SET seq=? WHERE id=?", [(-1 - i, mid) for i, mid in enumerate(ids)])
            c.executemany("UPDATE messages SET seq=? WHERE id=?", [(first_seq + i, mid) for i, mid in enumerate(ids)])
            c.execute(
                "INSERT INTO peer_state(peer, next_seq) VALUES (?, ?)"
                " ON CONFLICT (peer) DO UPDATE SET next_seq = max(next_seq, excluded.next_seq)",
                (peer, first_seq + len(ids)),
            )
            _audit(c, audit)
            return len(ids)

        return await self._write(job)

    async def append_audit(self, entries: list[AuditEntry]) -> None:
        await self._write(lambda c: _audit(c, *entries))

    async def inbox_after(
        self, cursor: int, limit: int, types: tuple[str, ...], reference: bytes | None = None
    ) -> list[InboxItem]:
        def job(c: sqlite3.Connection) -> list[InboxItem]:
            marks = ",".join("?" * len(types))
            by_ref = "" if reference is None else f" AND id IN ({_REF_SQL})"
            ref_args = () if reference is None else (reference, "in")
            rows = c.execute(
                f"SELECT {IN_COLS} FROM inbox WHERE cursor>? AND type IN ({marks}){by_ref} ORDER BY cursor LIMIT ?",
                (cursor, *types, *ref_args, limit),
            ).fetchall()
            return [_in(r) for r in rows]

        return self._open_ins(await self._read(job))

    async def inbox_last_cursor(self) -> int:
        def job(c: sqlite3.Connection) -> int:
            return int(c.execute("SELECT coalesce(max(cursor), 0) FROM inbox").fetchone()[0])

        return await self._read(job)

    async def get_meta(self, key: str) -> str | None:
        def job(c: sqlite3.Connection) -> str | None:
            row = c.execute("SELECT value FROM store_meta WHERE key=?", (key,)).fetchone()
            return None if row is None else str(row[0])

        return await self._read(job)

    async def set_meta(self, key: str, value: str | None) -> None:
        def job(c: sqlite3.Connection) -> None:
            if value is None:
                c.execute("DELETE FROM store_meta WHERE key=?", (key,))
            else:
                c.execute(
                    "INSERT INTO store_meta(key, value) VALUES (?,?)"
                    " ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                    (key, value),
                )

        await self._write(job)

    async def add_references(self, rows: list[tuple[bytes, str, str]]) -> None:
        await self._write(
            lambda c: c.executemany("INSERT OR IGNORE INTO refs(tag, direction, message_id) VALUES (?,?,?)", rows)
        )

    async def known_to_peer(self, peer: str, message_id: str) -> bool:
        def job(c: sqlite3.Connection) -> bool:
            row = c.execute(
                f"SELECT 1 FROM inbox WHERE id=? AND sender=? AND type NOT IN {CONTROL_TYPES_SQL}"
                f" UNION ALL SELECT 1 FROM messages WHERE id=? AND peer=? AND type NOT IN {CONTROL_TYPES_SQL}"
                " AND status NOT IN ('refused','expired') LIMIT 1",
                (message_id, peer, message_id, peer),
            ).fetchone()
            return row is not None

        return await self._read(job)

    async def thread_items(self, message_ids: list[str]) -> list[ThreadItem]:
        return await self._thread_query("id", message_ids)

    async def replies(self, message_ids: list[str]) -> list[ThreadItem]:
        return await self._thread_query("in_reply_to", message_ids)

    async def _thread_query(self, column: str, ids: list[str]) -> list[ThreadItem]:
        marks = ",".join("?" * len(ids))
        sql = (
            f"SELECT id, 'outbound', type, in_reply_to, created_at, status FROM messages"
            f" WHERE {column} IN ({marks}) AND type NOT IN {CONTROL_TYPES_SQL}"
            f" UNION ALL SELECT id, 'inbound', type, in_reply_to, created_at, ack_status FROM inbox"
            f" WHERE {column} IN ({marks}) AND type NOT IN {CONTROL_TYPES_SQL}"
        )

        def job(c: sqlite3.Connection) -> list[ThreadItem]:
            rows = c.execute(sql, (*ids, *ids)).fetchall()
            return [ThreadItem(r[0], r[1], r[2], r[3], parse_ts(r[4]), r[5]) for r in rows]

        return await self._read(job) if ids else []

    async def consents_for(self, message_ids: Sequence[str]) -> dict[str, list[ConsentRecord]]:
        ids = list(message_ids)
        marks = ",".join("?" * len(ids))

        def job(c: sqlite3.Connection) -> dict[str, list[ConsentRecord]]:
            rows = c.execute(
                f"SELECT {CONSENT_COLS} FROM consents WHERE message_id IN ({marks}) ORDER BY requested_at, request_id",
                ids,
            ).fetchall()
            out: dict[str, list[ConsentRecord]] = {}
            for r in rows:
                out.setdefault(r[1], []).append(self._open_consent(consent_from_row(r, parse_ts)))
            return out

        return await self._read(job) if ids else {}

    async def consent(self, request_id: str) -> ConsentRecord | None:
        def job(c: sqlite3.Connection) -> ConsentRecord | None:
            row = c.execute(f"SELECT {CONSENT_COLS} FROM consents WHERE request_id=?", (request_id,)).fetchone()
            return None if row is None else self._open_consent(consent_from_row(row, parse_ts))

        return await self._read(job)

    async def inbox_item(self, message_id: str) -> InboxItem | None:
        def job(c: sqlite3.Connection) -> InboxItem | None:
            row = c.execute(f"SELECT {IN_COLS} FROM inbox WHERE id=?", (message_id,)).fetchone()
            return None if row is None else _in(row)

        item = await self._read(job)
        return None if item is None else self._open_in(item)

    async def acknowledge_inbox(self, message_id: str, status: str, ack: NewMessage, audit: AuditEntry) -> OutMessage:
        plain, ack = ack, self._seal_new(ack)

        def job(c: sqlite3.Connection) -> OutMessage:
            row = c.execute("SELECT ack_status FROM inbox WHERE id=?", (message_id,)).fetchone()
            if row is None:
                raise NotFound(f"no inbox message {message_id}", code="inbox.not_found", field="id")
            if row[0] is not None:
                raise Conflict(
                    f"message {message_id} was already acknowledged ({row[0]})",
                    code="ack.already",
                    field="id",
                )
            c.execute("UPDATE inbox SET ack_status=?, ack_message_id=? WHERE id=?", (status, ack.id, message_id))
            out, _ = _Submission(ack, audit)(c)
            return out

        return self._submitted(plain, await self._write(job), True)

    async def peer_state(self, peer: str) -> PeerState:
        def job(c: sqlite3.Connection) -> PeerState:
            row = c.execute(
                "SELECT next_seq, recv_high_water, gap_count FROM peer_state WHERE peer=?", (peer,)
            ).fetchone()
            gaps = c.execute(
                "SELECT from_seq, to_seq FROM seq_gaps WHERE peer=? ORDER BY from_seq DESC LIMIT 100", (peer,)
            ).fetchall()
            if row is None:
                return PeerState(peer, 1, 0, 0)
            return PeerState(peer, row[0], row[1], row[2], tuple((a, b) for a, b in gaps))

        return await self._read(job)

    # tokens --------------------------------------------------------------------------------
    async def add_token(self, token: TokenRecord, audit: AuditEntry) -> None:
        def job(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO tokens(id, role, secret_hash, label, created_at, expires_at) VALUES (?,?,?,?,?,?)",
                (
                    token.id,
                    token.role,
                    token.secret_hash,
                    token.label,
                    format_ts(token.created_at),
                    format_ts(token.expires_at) if token.expires_at else None,
                ),
            )
            _audit(c, audit)

        await self._write(job)

    async def list_tokens(self) -> list[TokenRecord]:
        def job(c: sqlite3.Connection) -> list[TokenRecord]:
            rows = c.execute(f"SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at, id").fetchall()
            return [_token(r) for r in rows]

        return await self._read(job)

    async def get_token(self, token_id: str) -> TokenRecord | None:
        def job(c: sqlite3.Connection) -> TokenRecord | None:
            row = c.execute(f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE id=?", (token_id,)).fetchone()
            return None if row is None else _token(row)

        return await self._read(job)

    async def revoke_token(self, token_id: str, at: dt.datetime, audit: AuditEntry) -> TokenRecord:
        def job(c: sqlite3.Connection) -> TokenRecord:
            row = c.execute(f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE id=?", (token_id,)).fetchone()
            if row is None:
                raise NotFound(f"no token {token_id}", code="token.not_found", field="id")
            if row[5] is not None:
                raise Conflict(f"token {token_id} was already revoked", code="token.already_revoked", field="id")
            c.execute("UPDATE tokens SET revoked_at=? WHERE id=?", (format_ts(at), token_id))
            _audit(c, audit)
            return replace(_token(row), revoked_at=to_ms(at))

        return await self._write(job)

    # audit ---------------------------------------------------------------------------------
    async def audit_size(self) -> int:
        size, _ = await self.audit_head()
        return size

    async def audit_head(self) -> tuple[int, bytes]:
        return await self._read(_head)

    async def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        def job(c: sqlite3.Connection) -> list[bytes]:
            _check_size(c, size)
            return inclusion_proof_from_nodes(_node_reader(c), index, size)

        return await self._read(job)

    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        def job(c: sqlite3.Connection) -> list[bytes]:
            _check_size(c, new_size)
            return consistency_proof_from_nodes(_node_reader(c), old_size, new_size)

        return await self._read(job)

    async def root_at(self, size: int) -> bytes:
        def job(c: sqlite3.Connection) -> bytes:
            _check_size(c, size)
            return CompactRange.from_nodes(_node_reader(c), size).root()

        return await self._read(job)

    async def add_checkpoint(self, cp: CheckpointRecord) -> None:
        await self._write(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO checkpoints(size, root, note, created_at) VALUES (?,?,?,?)",
                (cp.size, cp.root, cp.note, format_ts(cp.created_at)),
            )
        )

    async def set_cosigned(self, size: int, cosigned_note: bytes, at: dt.datetime) -> None:
        await self._write(
            lambda c: c.execute(
                "UPDATE checkpoints SET cosigned_note=?, cosigned_at=? WHERE size=?",
                (cosigned_note, format_ts(at), size),
            )
        )

    async def checkpoints(self, after_size: int = -1, limit: int = 1000) -> list[CheckpointRecord]:
        def job(c: sqlite3.Connection) -> list[CheckpointRecord]:
            rows = c.execute(
                "SELECT size, root, note, created_at, cosigned_note, cosigned_at FROM checkpoints"
                " WHERE size>? ORDER BY size LIMIT ?",
                (after_size, limit),
            ).fetchall()
            return [_cp(r) for r in rows]

        return await self._read(job)

    async def latest_checkpoint(self, *, cosigned: bool = False) -> CheckpointRecord | None:
        def job(c: sqlite3.Connection) -> CheckpointRecord | None:
            where = "WHERE cosigned_note IS NOT NULL" if cosigned else ""
            row = c.execute(
                f"SELECT size, root, note, created_at, cosigned_note, cosigned_at FROM checkpoints {where}"
                " ORDER BY size DESC LIMIT 1"
            ).fetchone()
            return None if row is None else _cp(row)

        return await self._read(job)

    async def witness_state(self, origin: str) -> WitnessState | None:
        def job(c: sqlite3.Connection) -> WitnessState | None:
            row = c.execute("SELECT origin, size, root, note FROM witness_state WHERE origin=?", (origin,)).fetchone()
            return None if row is None else WitnessState(row[0], row[1], bytes(row[2]), bytes(row[3]))

        return await self._read(job)

    async def witness_advance(self, origin: str, old_size: int, new: WitnessState, at: dt.datetime) -> None:
        def job(c: sqlite3.Connection) -> None:
            row = c.execute("SELECT size FROM witness_state WHERE origin=?", (origin,)).fetchone()
            stored = 0 if row is None else int(row[0])
            if stored != old_size:
                raise Conflict(
                    f"witness holds size {stored}, request claims {old_size}", code="witness.size_mismatch", field="old"
                )
            c.execute(
                "INSERT OR REPLACE INTO witness_state(origin, size, root, note, updated_at) VALUES (?,?,?,?,?)",
                (origin, new.size, new.root, new.note, format_ts(at)),
            )

        await self._write(job)

    async def remember_bundle(self, owner: str, bundle: bytes, at: dt.datetime) -> None:
        digest = hashlib.sha256(bundle).digest()
        await self._write(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO key_bundles(owner, digest, bundle, stored_at) VALUES (?,?,?,?)",
                (owner, digest, bundle, format_ts(at)),
            )
        )

    async def bundles(self) -> list[tuple[str, bytes]]:
        def job(c: sqlite3.Connection) -> list[tuple[str, bytes]]:
            rows = c.execute("SELECT owner, bundle FROM key_bundles ORDER BY stored_at, owner").fetchall()
            return [(r[0], bytes(r[1])) for r in rows]

        return await self._read(job)

    async def rows_in_clear(self, table: str, limit: int) -> list[ClearRow]:
        body = "body" if table == "inbox" else "NULL"
        if table not in ("messages", "inbox"):
            raise ValueError(f"no sealed columns in {table}")

        def job(c: sqlite3.Connection) -> list[ClearRow]:
            rows = c.execute(
                f"SELECT id, type, created_at, signed_document, {body} FROM {table}"
                " WHERE retain_until IS NULL ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
            return [ClearRow(table, r[0], r[1], parse_ts(r[2]), bytes(r[3]), _b(r[4])) for r in rows]

        return await self._read(job)

    async def retention_counts(self) -> list[tuple[dt.date | None, int, int]]:
        def job(c: sqlite3.Connection) -> list[tuple[dt.date | None, int, int]]:
            rows = c.execute(RETENTION_COUNTS_SQL).fetchall()
            return [(day_of(r[0]), int(r[1]), int(r[2])) for r in rows]

        return await self._read(job)

    async def drop_clear_copies(self) -> None:
        # The WAL still holds the pages as they were before sealing: checkpoint and truncate it
        # (the busy timeout waits for reads and the writer; busy after it raises).
        await self._wal_checkpoint("TRUNCATE")

    async def seal_rows(self, rows: list[ClearRow]) -> int:
        def job(c: sqlite3.Connection) -> int:
            n = 0
            for r in rows:
                day = None if r.retain_until is None else r.retain_until.isoformat()
                if r.table == "inbox":
                    cur = c.execute(
                        "UPDATE inbox SET signed_document=?, body=?, retain_until=?"
                        " WHERE id=? AND retain_until IS NULL",
                        (r.signed_document, r.body, day, r.id),
                    )
                else:
                    cur = c.execute(
                        "UPDATE messages SET signed_document=?, ciphertext=NULL, enc_kid=NULL, retain_until=?"
                        " WHERE id=? AND retain_until IS NULL",
                        (r.signed_document, day, r.id),
                    )
                n += cur.rowcount
            return n

        return await self._write(job) if rows else 0

    async def evidence(self, message_ids: list[str]) -> list[Evidence]:
        def job(c: sqlite3.Connection) -> list[Evidence]:
            out: list[Evidence] = []
            for i in range(0, len(message_ids), 500):
                chunk = message_ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                for r in c.execute(f"SELECT {EVIDENCE_OUT_COLS} FROM messages WHERE id IN ({marks})", chunk):
                    out.append(evidence_from_row("outbound", r, parse_ts))
                for r in c.execute(f"SELECT {EVIDENCE_IN_COLS} FROM inbox WHERE id IN ({marks})", chunk):
                    out.append(evidence_from_row("inbound", r, parse_ts))
            return out

        return self._open_evidence(await self._read(job))

    # retention and disposal ------------------------------------------------------------------
    async def due_for_disposal(self, today: dt.date, limit: int) -> list[DueRow]:
        def job(c: sqlite3.Connection) -> list[Any]:
            rows: list[Any] = []
            for sql in (DUE_OUT_SQL, DUE_IN_SQL):
                if len(rows) < limit:
                    rows += c.execute(sql.replace("$1", "?").replace("$2", "?"), (today.isoformat(), limit - len(rows)))
            return rows

        return self._due_rows(await self._read(job))

    async def dispose(self, rows: list[DueRow], at: dt.datetime, audit: dict[str, AuditEntry]) -> list[str]:
        when = format_ts(at)

        def job(c: sqlite3.Connection) -> list[str]:
            done: list[str] = []
            for r in rows:
                if c.execute(
                    "SELECT 1 FROM holds WHERE message_id=? AND origin='ours' AND released_at IS NULL", (r.id,)
                ).fetchone():
                    continue  # held since it was found due
                if r.direction == "outbound":
                    row = c.execute("SELECT ack FROM messages WHERE id=? AND disposed_at IS NULL", (r.id,)).fetchone()
                    if row is None:
                        continue
                    c.execute(
                        "UPDATE messages SET signed_document=x'', ciphertext=NULL, enc_kid=NULL, ack=?, disposed_at=?"
                        " WHERE id=?",
                        (disposed_ack(_b(row[0])), when, r.id),
                    )
                else:
                    cur = c.execute(
                        "UPDATE inbox SET signed_document=x'', body=x'', disposed_at=?"
                        " WHERE id=? AND disposed_at IS NULL",
                        (when, r.id),
                    )
                    if cur.rowcount == 0:
                        continue
                c.execute("DELETE FROM refs WHERE message_id=?", (r.id,))
                c.execute(DISPOSED_CONSENTS_SQL.replace("$1", "?"), (r.id,))
                done.append(r.id)
            if done:
                _audit(c, *(audit[i] for i in done))
            return done

        return await self._write(job) if rows else []

    async def live_days(self, today: dt.date) -> set[dt.date]:
        def job(c: sqlite3.Connection) -> set[dt.date]:
            rows = c.execute(LIVE_DAYS_SQL.replace("$1", "?"), (today.isoformat(), today.isoformat())).fetchall()
            return {d for d in (day_of(r[0]) for r in rows) if d is not None}

        return await self._read(job)

    async def place_hold(self, hold: Hold, audit: AuditEntry) -> Hold:
        sealed = self.sealed

        def job(c: sqlite3.Connection) -> Hold:
            current = c.execute(
                f"SELECT {HOLD_COLS} FROM holds WHERE message_id=? AND origin='ours'", (hold.message_id,)
            ).fetchone()
            out = c.execute(HOLD_OUT_SQL.replace("$1", "?"), (hold.message_id,)).fetchone()
            inb = None if out else c.execute(HOLD_IN_SQL.replace("$1", "?"), (hold.message_id,)).fetchone()
            old = None if current is None else hold_from_row(current, parse_ts)
            placed, sql, params = held_row(hold, out, inb, old, sealed)
            if sql is not None:
                c.execute(re.sub(r"\$\d", "?", sql), params)
            c.execute(
                f"INSERT OR REPLACE INTO holds({HOLD_COLS}) VALUES (?,?,?,?,?,?,?,?,NULL,NULL,NULL)",
                _hold_values(placed),
            )
            _audit(c, audit)
            return placed

        return await self._write(job)

    async def release_hold(
        self, message_id: str, at: dt.datetime, by: str, reason: str | None, audit: AuditEntry
    ) -> Hold:
        def job(c: sqlite3.Connection) -> Hold:
            row = c.execute(
                f"SELECT {HOLD_COLS} FROM holds WHERE message_id=? AND origin='ours'", (message_id,)
            ).fetchone()
            current = check_releasable(message_id, None if row is None else hold_from_row(row, parse_ts))
            c.execute(
                "UPDATE holds SET released_at=?, released_by=?, release_reason=? WHERE message_id=? AND origin='ours'",
                (format_ts(at), by, reason, message_id),
            )
            _audit(c, audit)
            return replace(current, released_at=to_ms(at), released_by=by, release_reason=reason)

        return await self._write(job)

    async def holds_for(self, message_ids: Sequence[str]) -> dict[str, list[Hold]]:
        def job(c: sqlite3.Connection) -> dict[str, list[Hold]]:
            out: dict[str, list[Hold]] = {}
            ids = list(dict.fromkeys(message_ids))
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                for r in c.execute(
                    f"SELECT {HOLD_COLS} FROM holds WHERE message_id IN ({marks}) ORDER BY placed_at", chunk
                ):
                    out.setdefault(r[0], []).append(hold_from_row(r, parse_ts))
            return out

        return await self._read(job) if message_ids else {}

    async def list_holds(self, active_only: bool, limit: int) -> list[Hold]:
        where = " WHERE released_at IS NULL" if active_only else ""

        def job(c: sqlite3.Connection) -> list[Hold]:
            rows = c.execute(
                f"SELECT {HOLD_COLS} FROM holds{where} ORDER BY placed_at DESC, message_id LIMIT ?", (limit,)
            )
            return [hold_from_row(r, parse_ts) for r in rows.fetchall()]

        return await self._read(job)

    async def retention_totals(self, today: dt.date) -> RetentionTotals:
        def job(c: sqlite3.Connection) -> Any:
            return c.execute(RETENTION_TOTALS_SQL.replace("$1", "?"), (today.isoformat(), today.isoformat())).fetchone()

        return totals_from_row(await self._read(job))

    async def audit_entries_about(self, message_ids: list[str], size: int) -> list[tuple[int, bytes]]:
        def job(c: sqlite3.Connection) -> list[tuple[int, bytes]]:
            marks = ",".join("?" * len(message_ids))
            rows = c.execute(
                # The same expression as the `audit_message` index (migration 3), so it is used.
                f"SELECT idx, entry FROM audit WHERE json_extract(CAST(entry AS TEXT), '$.message_id') IN ({marks})"
                " AND idx<? ORDER BY idx",
                (*message_ids, size),
            )
            return [(int(i), bytes(e)) for i, e in rows.fetchall()]

        return await self._read(job) if message_ids else []

    async def audit_entries(self, start: int, end: int) -> list[tuple[int, bytes]]:
        def job(c: sqlite3.Connection) -> list[tuple[int, bytes]]:
            rows = c.execute("SELECT idx, entry FROM audit WHERE idx>=? AND idx<? ORDER BY idx", (start, end))
            return [(int(i), bytes(e)) for i, e in rows.fetchall()]

        return await self._read(job)


def _b(v: Any) -> bytes | None:
    return None if v is None else bytes(v)


def _settle_all(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for fut, ok, value in settled:
        if fut.cancelled():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


def _run_job(conn: sqlite3.Connection, job: Job) -> tuple[bool, Any]:
    """Run one job of a group in its own savepoint: (True, its result), or (False, the exception)
    with everything it wrote undone. A storage fault (sqlite3.Error) fails the whole group."""
    conn.execute("SAVEPOINT job")
    try:
        result = job(conn)
        conn.execute("RELEASE job")
        return True, result
    except sqlite3.Error:
        raise
    except Exception as e:  # a job's own refusal: undo just that job
        conn.execute("ROLLBACK TO job")
        conn.execute("RELEASE job")
        _forget_tree(conn)  # it may have appended: the rolled-back frontier is in the file
        return False, e


class _Submission:
    """One `submit` waiting for the writer; the writer stores a run of them together."""

    __slots__ = ("audit", "msg")

    def __init__(self, msg: NewMessage, audit: AuditEntry) -> None:
        self.msg, self.audit = msg, audit

    def __call__(self, c: sqlite3.Connection) -> tuple[OutMessage, bool]:
        (res,) = _submit_group(c, [(self.msg, self.audit)])
        if isinstance(res, GatewayError):
            raise res
        return res


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    current = row[0] or 0
    for version, script in SQLITE_MIGRATIONS:
        if version <= current:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in script:
                conn.execute(stmt)
            conn.execute("INSERT INTO schema_version(version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except sqlite3.Error:
            conn.execute("ROLLBACK")
            raise


# --- row mapping -------------------------------------------------------------------------------


def _out(r: tuple[Any, ...]) -> OutMessage:
    return out_message_from_row(r, parse_ts)


def _in(r: tuple[Any, ...]) -> InboxItem:
    return inbox_item_from_row(r, parse_ts)


# --- transactional jobs (run on the writer thread) ------------------------------------------------


class _Connection(sqlite3.Connection):
    """A connection that can hold the audit log's frontier for the writer's open transaction."""

    audit_tree: CompactRange | None = None
    audit_last: dt.datetime | None = None


def _forget_tree(c: sqlite3.Connection) -> None:
    if isinstance(c, _Connection):
        c.audit_tree = None


def _audit(c: sqlite3.Connection, *entries: AuditEntry) -> None:
    """Append entries as Merkle leaves, persisting the frontier and every completed node.

    Within one write transaction the frontier is read from the file once and then kept on the
    connection (`_run_group` forgets it at every transaction start and every rollback), so a
    group of submissions does not parse and re-read it per job; it is still written every time,
    so reads inside the transaction see it."""
    if not entries:
        return
    tree = c.audit_tree if isinstance(c, _Connection) else None
    if tree is None:
        tree, last = _audit_state(c)
    else:
        last = c.audit_last if isinstance(c, _Connection) else None
    ordered, last = in_time_order(entries, last)
    leaves, nodes = append_records(tree, [e.to_bytes() for e in ordered])
    c.executemany("INSERT INTO audit(idx, entry, leaf_hash) VALUES (?, ?, ?)", leaves)
    c.executemany("INSERT INTO audit_nodes(level, idx, hash) VALUES (?,?,?)", nodes)
    c.execute(
        "INSERT OR REPLACE INTO audit_state(id, compact, last_at) VALUES (1, ?, ?)",
        (tree.to_bytes(), None if last is None else format_ts(last)),
    )
    if isinstance(c, _Connection):
        c.audit_tree, c.audit_last = tree, last


def _node_reader(c: sqlite3.Connection) -> Callable[[int, int], bytes]:
    def get_node(level: int, index: int) -> bytes:
        if level == 0:
            row = c.execute("SELECT leaf_hash FROM audit WHERE idx=?", (index,)).fetchone()
        else:
            row = c.execute("SELECT hash FROM audit_nodes WHERE level=? AND idx=?", (level, index)).fetchone()
        if row is None:
            raise TreeRangeError(f"the log has no node ({level}, {index})", field="size")
        return bytes(row[0])

    return get_node


def _audit_state(c: sqlite3.Connection) -> tuple[CompactRange, dt.datetime | None]:
    """The frontier and the time of the newest entry (read back once from a log written before
    that time was kept)."""
    row = c.execute("SELECT compact, last_at FROM audit_state WHERE id=1").fetchone()
    if row is None:
        return CompactRange(), None
    tree = CompactRange.from_bytes(bytes(row[0]))
    if row[1] is not None:
        return tree, parse_ts(row[1])
    last = c.execute("SELECT entry FROM audit ORDER BY idx DESC LIMIT 1").fetchone()
    return tree, None if last is None else AuditEntry.from_bytes(bytes(last[0])).at


def _frontier(c: sqlite3.Connection) -> CompactRange:
    """The log's frontier as stored (empty before the first entry)."""
    row = c.execute("SELECT compact FROM audit_state WHERE id=1").fetchone()
    return CompactRange() if row is None else CompactRange.from_bytes(bytes(row[0]))


def _head(c: sqlite3.Connection) -> tuple[int, bytes]:
    tree = _frontier(c)
    return tree.size, tree.root()


def _check_size(c: sqlite3.Connection, size: int) -> None:
    current, _ = _head(c)
    if not 0 <= size <= current:
        raise TreeRangeError(f"size {size} is beyond the log's size {current}", field="size")


def _cp(r: tuple[Any, ...]) -> CheckpointRecord:
    return CheckpointRecord(
        r[0], bytes(r[1]), bytes(r[2]), parse_ts(r[3]), None if r[4] is None else bytes(r[4]), _pt(r[5])
    )


def _history(c: sqlite3.Connection, message_id: str, at: dt.datetime, status: str, detail: str = "") -> None:
    c.execute(
        "INSERT INTO history(message_id, at, status, detail) VALUES (?,?,?,?)",
        (message_id, format_ts(at), status, detail),
    )


_EXCHANGED: Final = EXCHANGED_SQL.replace("$", "?")


def _exchanged(c: sqlite3.Connection, peer: str, message_id: str) -> bool:
    """Whether `message_id` is a business message `peer` sent us or we sent `peer`."""
    return c.execute(_EXCHANGED, (message_id, peer)).fetchone() is not None


def _sent_type(c: sqlite3.Connection, peer: str, message_id: str) -> str | None:
    """The type of our message `message_id` to `peer`, if we sent one."""
    row = c.execute("SELECT type FROM messages WHERE id=? AND peer=?", (message_id, peer)).fetchone()
    return None if row is None else str(row[0])


#: Ids of the messages one reference tag indexes, in one direction (`core.reference`).
_REF_SQL: Final = "SELECT message_id FROM refs WHERE tag=? AND direction=?"


def _index(c: sqlite3.Connection, tags: tuple[bytes, ...], direction: str, message_id: str) -> None:
    """Index a message under its reference tags (in the transaction that stores it)."""
    if not tags:
        return
    c.executemany(
        "INSERT OR IGNORE INTO refs(tag, direction, message_id) VALUES (?,?,?)",
        [(t, direction, message_id) for t in tags],
    )


def _submit_group(
    c: sqlite3.Connection, batch: Sequence[tuple[NewMessage, AuditEntry]]
) -> list[tuple[OutMessage, bool] | GatewayError]:
    """Store a group of submissions in a few statements (one per table, not one per message and
    table), with the same results one submission after another would give: an Idempotency-Key
    used before (here or earlier in the group) returns its message, or a Conflict if the request
    differs (and writes nothing). The same rules as PostgreSQL's `_submit_group`."""
    results: list[tuple[OutMessage, bool] | GatewayError | None] = [None] * len(batch)
    keyed = idempotency_keys(batch)
    held: dict[tuple[str | None, str | None], tuple[str, bytes]] = {}
    for token_id, key in set(keyed.values()):
        row = c.execute(
            "SELECT message_id, request_hash FROM idempotency WHERE token_id=? AND key=?", (token_id, key)
        ).fetchone()
        if row is not None:
            held[(token_id, key)] = (str(row[0]), bytes(row[1]))
    stored = {}
    for mid in {mid for mid, _ in held.values()}:
        stored[mid] = _out(c.execute(f"SELECT {OUT_COLS} FROM messages WHERE id=?", (mid,)).fetchone())
    fresh, replay_of = plan_group(batch, keyed, held, results)
    next_seq: dict[str, int] = {}
    for peer in sorted({batch[i][0].peer for i in fresh}):
        n = sum(1 for i in fresh if batch[i][0].peer == peer)
        next_seq[peer] = c.execute(
            "INSERT INTO peer_state(peer, next_seq) VALUES (?, 1 + ?)"
            " ON CONFLICT (peer) DO UPDATE SET next_seq = next_seq + excluded.next_seq - 1 RETURNING next_seq - ?",
            (peer, n, n),
        ).fetchone()[0]
    made: dict[str, OutMessage] = {}
    rows = []
    for i in fresh:
        m = batch[i][0]
        seq = next_seq[m.peer]
        next_seq[m.peer] += 1
        made[m.id] = queued_message(m, seq)  # what is written below: no read-back on the hot path
        results[i] = (made[m.id], True)
        now = format_ts(m.created_at)
        retain = None if m.retain_until is None else m.retain_until.isoformat()
        rows.append((m, seq, now, retain))
    if rows:
        c.executemany(
            "INSERT INTO messages(id, peer, seq, type, status, created_at, expires_at, signed_document,"
            " document_sha256, attempts, next_attempt_at, token_id, updated_at, in_reply_to, retain_until)"
            " VALUES (?,?,?,?,'queued',?,?,?,?,0,?,?,?,?,?)",
            [
                (
                    m.id,
                    m.peer,
                    seq,
                    m.type,
                    now,
                    format_ts(m.expires_at),
                    m.signed_document,
                    m.document_sha256,
                    now,
                    m.token_id,
                    now,
                    m.in_reply_to,
                    retain,
                )
                for m, seq, now, retain in rows
            ],
        )
        refs = [(t, "out", m.id) for m, *_ in rows for t in m.references]
        if refs:
            c.executemany("INSERT OR IGNORE INTO refs(tag, direction, message_id) VALUES (?,?,?)", refs)
        keys = [
            (m.token_id, m.idempotency_key, m.request_hash, m.id, now)
            for m, _, now, _ in rows
            if m.idempotency_key is not None and m.token_id is not None
        ]
        if keys:
            c.executemany(
                "INSERT INTO idempotency(token_id, key, request_hash, message_id, created_at) VALUES (?,?,?,?,?)", keys
            )
        c.executemany(
            "INSERT INTO history(message_id, at, status, detail) VALUES (?,?,'queued','')",
            [(m.id, now) for m, _, now, _ in rows],
        )
        for m, *_ in rows:
            if m.consent is not None:
                _record_consent(c, m.consent, outgoing=True)
        _audit(c, *(batch[i][1] for i in fresh))
    for i, mid in replay_of.items():
        results[i] = (stored[mid] if mid in stored else made[mid], False)
    return [r for r in results if r is not None]


_EVENT_FOR = {"delivered": "receipt", "refused": "refusal", "retry": "attempt", "expired": "expire"}


def _record_outcomes(c: sqlite3.Connection, outcomes: list[AttemptOutcome]) -> None:
    """Apply a batch's outcomes in order: the statuses read in one query, and the updates and
    history rows written a run of alike statements at a time (`executemany`), as one statement
    per outcome in turn would (a message named twice sees its own first outcome)."""
    current: dict[str, str] = {}
    ids = list(dict.fromkeys(o.message_id for o in outcomes))
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        current.update(
            (str(r[0]), str(r[1])) for r in c.execute(f"SELECT id, status FROM messages WHERE id IN ({marks})", chunk)
        )
    entries: list[AuditEntry] = []
    updates: list[tuple[str, list[tuple[Any, ...]]]] = []  # runs of (UPDATE statement, its rows)
    history: list[tuple[str, str, str, str]] = []
    for o in outcomes:
        was = current.get(o.message_id)
        if was is None:
            continue
        event = _EVENT_FOR[o.kind]
        try:
            status = next_status(was, event)
        except Conflict:
            continue  # e.g. a late receipt for a message already acknowledged: nothing to change
        current[o.message_id] = status
        at = format_ts(o.at)
        sets = ["status=?", "updated_at=?", "attempts=max(attempts, ?)"]
        args: list[Any] = [status, at, o.attempt]
        if o.receipt is not None:
            sets.append("receipt=?")
            args.append(o.receipt)
        if o.refusal is not None:
            sets.append("refusal=?")
            args.append(o.refusal)
        if o.error is not None:
            sets.append("last_error=?")
            args.append(o.error)
        if o.next_attempt_at is not None:
            sets.append("next_attempt_at=?")
            args.append(format_ts(o.next_attempt_at))
        if o.ciphertext is not None:
            sets += ["ciphertext=?", "enc_kid=?"]
            args += [o.ciphertext, o.enc_kid]
        if o.kind in ("delivered", "refused", "expired"):
            sets.append("ciphertext=NULL")  # no longer needed once final
        if o.kind == "delivered":
            sets.append("last_error=NULL")  # delivered: an earlier attempt's error no longer stands
        sql = f"UPDATE messages SET {', '.join(sets)} WHERE id=?"
        if not updates or updates[-1][0] != sql:
            updates.append((sql, []))
        updates[-1][1].append((*args, o.message_id))
        if status != was or o.kind == "retry":
            history.append((o.message_id, at, status, o.error or ""))
        entries.extend(o.audit)
    for sql, rows in updates:
        c.executemany(sql, rows)
    if history:
        c.executemany("INSERT INTO history(message_id, at, status, detail) VALUES (?,?,?,?)", history)
    _audit(c, *entries)  # in outcome order, one append for the batch


def _accept_one(c: sqlite3.Connection, it: Incoming, audit: list[AuditEntry]) -> IncomingResult:
    row = c.execute("SELECT document_sha256, receipt FROM inbox WHERE sender=? AND id=?", (it.sender, it.id)).fetchone()
    arrival = classify(None if row is None else bytes(row[0]), it.document_sha256)
    if arrival is Arrival.DUPLICATE:
        return IncomingResult("duplicate", bytes(row[1]))
    if arrival is Arrival.CONFLICT:
        return IncomingResult("conflict", None)
    hw_row = c.execute("SELECT recv_high_water FROM peer_state WHERE peer=?", (it.sender,)).fetchone()
    if hw_row is not None and it.seq <= hw_row[0]:  # only a number already passed can be reused
        held = c.execute(
            "SELECT id FROM inbox WHERE sender=? AND seq=? AND id<>? LIMIT 1", (it.sender, it.seq, it.id)
        ).fetchone()
        reused = seq_reused(it, int(hw_row[0]), None if held is None else str(held[0]))
        if reused is not None:
            return reused
    if it.acked_message_id is not None:
        ack = c.execute(
            "SELECT status, peer, document_sha256 FROM messages WHERE id=?", (it.acked_message_id,)
        ).fetchone()
        refused = ack_refusal(it, None if ack is None else (ack[0], ack[1], bytes(ack[2])))
        if refused is not None:
            return refused  # nothing written: the ack is not in our inbox and will be answered refused
    if names_messages(it):
        refused = reference_refusal(
            it,
            it.in_reply_to is not None and _exchanged(c, it.sender, it.in_reply_to),
            {mid: _sent_type(c, it.sender, mid) for _, mid in it.named},
            it.hold_notice is None or _exchanged(c, it.sender, it.hold_notice.message_id),
        )
        if refused is not None:
            return refused  # nothing written
    c.execute(
        "INSERT INTO inbox(sender, id, seq, type, created_at, received_at, document_sha256, signed_document,"
        " body, receipt, in_reply_to, retain_until)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            it.sender,
            it.id,
            it.seq,
            it.type,
            format_ts(it.created_at),
            format_ts(it.received_at),
            it.document_sha256,
            it.signed_document,
            it.body,
            it.receipt,
            it.in_reply_to,
            None if it.retain_until is None else it.retain_until.isoformat(),
        ),
    )
    _index(c, it.references, "in", it.id)
    c.execute("INSERT OR IGNORE INTO peer_state(peer) VALUES (?)", (it.sender,))
    hw = c.execute("SELECT recv_high_water FROM peer_state WHERE peer=?", (it.sender,)).fetchone()[0]
    upd = advance_sequence(hw, it.seq)
    if upd.gap_from is not None:
        c.execute(
            "INSERT INTO seq_gaps(peer, from_seq, to_seq, detected_at) VALUES (?,?,?,?)",
            (it.sender, upd.gap_from, upd.gap_to, format_ts(it.received_at)),
        )
        c.execute("UPDATE peer_state SET gap_count=gap_count+1 WHERE peer=?", (it.sender,))
    c.execute("UPDATE peer_state SET recv_high_water=? WHERE peer=?", (upd.high_water, it.sender))
    audit += (it.audit, *it.extra_audit)
    if it.announced is not None:  # the peer's new bundle commits with its `key_announced` entry
        raw = it.announced.to_bytes()
        c.execute(
            "INSERT OR IGNORE INTO key_bundles(owner, digest, bundle, stored_at) VALUES (?,?,?,?)",
            (it.sender, hashlib.sha256(raw).digest(), raw, format_ts(it.received_at)),
        )
    if it.acked_message_id is not None:
        _apply_ack(c, it, audit)
    if it.consent is not None:
        _record_consent(c, it.consent, outgoing=False)
    if it.hold_notice is not None:
        _record_peer_hold(c, it)
    return IncomingResult("accepted", it.receipt)


def _record_peer_hold(c: sqlite3.Connection, it: Incoming) -> None:
    """The peer's `legal-hold` notice, as a hold of origin "peer" on the message it names."""
    n = it.hold_notice
    assert n is not None
    if n.action == "released":
        c.execute(
            "UPDATE holds SET released_at=?, released_by=?, release_reason=? WHERE message_id=? AND origin='peer'",
            (format_ts(n.at), f"peer:{it.sender}", n.reason, n.message_id),
        )
        return
    direction = "outbound" if c.execute("SELECT 1 FROM messages WHERE id=?", (n.message_id,)).fetchone() else "inbound"
    hold = Hold(n.message_id, "peer", direction, n.reason, f"peer:{it.sender}", n.at, None, n.notice_id)
    c.execute(f"INSERT OR REPLACE INTO holds({HOLD_COLS}) VALUES (?,?,?,?,?,?,?,?,NULL,NULL,NULL)", _hold_values(hold))


def _hold_values(h: Hold) -> tuple[Any, ...]:
    return (
        h.message_id,
        h.origin,
        h.direction,
        h.reason,
        h.placed_by,
        format_ts(h.placed_at),
        None if h.hold_id is None else h.hold_id.hex(),
        h.notice_id,
    )


def _record_consent(c: sqlite3.Connection, ev: ConsentEvent, *, outgoing: bool) -> None:
    """A consent request starts a record; a decision updates it (only on the side it belongs to)."""
    role = role_of(ev, outgoing=outgoing)
    if ev.kind == "request":
        c.execute(
            f"INSERT OR IGNORE INTO consents({CONSENT_COLS}) VALUES (?,?,?,?,?,?,?,NULL,NULL,NULL,NULL,NULL,NULL)",
            (ev.request_id, ev.message_id, role, ev.use, ev.party, ev.reason, format_ts(ev.at)),
        )
        return
    c.execute(
        "UPDATE consents SET decision_id=?, decision=?, conditions=?, decision_reason=?, valid_until=?, decided_at=?"
        " WHERE request_id=? AND role=?",
        (
            ev.decision_id,
            ev.decision,
            ev.conditions,
            ev.reason,
            None if ev.valid_until is None else ev.valid_until.isoformat(),
            format_ts(ev.at),
            ev.request_id,
            role,
        ),
    )


def _apply_ack(c: sqlite3.Connection, it: Incoming, audit: list[AuditEntry]) -> None:
    mid = it.acked_message_id
    row = c.execute("SELECT status, peer FROM messages WHERE id=?", (mid,)).fetchone()
    if row is None or row[1] != it.sender:
        return  # cannot happen: ack_refusal refused it before the inbox row was written
    try:
        status = next_status(row[0], "ack")
    except Conflict:
        return
    at = format_ts(it.received_at)
    c.execute(
        "UPDATE messages SET status=?, ack=?, updated_at=? WHERE id=?",
        (status, json_bytes(it.ack_info or {}), at, mid),
    )
    detail = (it.ack_info or {}).get("status", "")
    _history(c, str(mid), it.received_at, status, str(detail))
    audit.append(
        AuditEntry(
            at=it.received_at,
            kind="acknowledged",
            actor=f"peer:{it.sender}",
            message_id=mid,
            peer=it.sender,
            digests={"ack_document": it.document_sha256.hex()},
            detail={"status": str(detail), "ack_id": it.id},
        ),
    )
