"""The SQLite store's checkpoints: the WAL is copied back into the database beside the writer
and the reads (on a connection and thread of their own), not by the commit that crosses SQLite's
automatic threshold, and it starts over."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from customs_gateway.core.errors import StoreUnavailable
from customs_gateway.store.sqlite import SQLiteStore
from tests.postgres.records import CN, entry, new_message


async def _submit_documents(store: SQLiteStore, n: int) -> None:
    """`n` messages of ~4 KB each, one commit each (the writer's group holds one job at a time)."""
    for _ in range(n):
        m = new_message(CN)
        m = dataclasses.replace(m, signed_document=os.urandom(4000))
        await store.submit(m, entry("submitted", m.id))


async def _wal_after_two_rounds(path: Path, interval: float) -> tuple[int, int]:
    """The WAL's size after one round of writes, and after a second round written once the
    checkpoints have had two turns (or after 0.3 s when they never get one)."""
    store = SQLiteStore(path, checkpoint_interval=interval)
    await store.open()
    wal = path.with_name(path.name + "-wal")
    try:
        await _submit_documents(store, 150)
        first = wal.stat().st_size
        seen = store.wal_checkpoints
        for _ in range(200):
            if store.wal_checkpoints >= seen + 2 or interval > 60:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("no checkpoint ran")
        await asyncio.sleep(0.3 if interval > 60 else 0)
        await _submit_documents(store, 150)
        return first, wal.stat().st_size
    finally:
        await store.close()


async def test_the_wal_starts_over_once_a_checkpoint_copied_it(tmp_path: Path) -> None:
    first, second = await _wal_after_two_rounds(tmp_path / "ck.db", 0.02)
    assert first > 1_000_000  # the round is large enough to measure: ~150 pages of documents and more
    # The second round was written from the WAL's start again: the file did not grow past the first.
    assert second < first * 1.3


async def test_without_checkpoints_the_wal_keeps_growing(tmp_path: Path) -> None:
    """The control: with no checkpoint due, the writer's own threshold (40 MiB) is far away, so the
    second round lands after the first and the file doubles. Proves the test above can fail."""
    first, second = await _wal_after_two_rounds(tmp_path / "idle.db", 3600)
    assert second > first * 1.7


async def test_close_stops_the_checkpoints_and_leaves_no_wal(tmp_path: Path) -> None:
    path = tmp_path / "closed.db"
    store = SQLiteStore(path, checkpoint_interval=0.01)
    await store.open()
    await _submit_documents(store, 5)
    await store.close()
    assert store._checkpoints is None  # the task was stopped, not left to fail on a closed store
    # The last connection to close checkpoints and removes the WAL: nothing kept a connection open.
    assert not path.with_name(path.name + "-wal").exists()


async def test_checkpoints_and_reads_do_not_wait_for_each_other(tmp_path: Path) -> None:
    """A read that takes long (here: held until released) does not hold up the checkpoints, and a
    read is answered while a checkpoint is under way: each has its own connection and thread."""
    store = SQLiteStore(tmp_path / "apart.db", checkpoint_interval=0.01)
    await store.open()
    release, reading = threading.Event(), threading.Event()

    def slow_read(c: sqlite3.Connection) -> int:
        reading.set()
        release.wait(30)
        return int(c.execute("SELECT count(*) FROM messages").fetchone()[0])

    try:
        await _submit_documents(store, 20)
        held = asyncio.ensure_future(store._read(slow_read))
        assert await asyncio.to_thread(reading.wait, 10)
        seen = store.wal_checkpoints
        for _ in range(500):  # up to 10 s on a crowded machine; 30-50 ms here
            if store.wal_checkpoints >= seen + 3:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the checkpoints waited for the read")
        release.set()
        assert await held == 20

        # The other way round: a checkpoint held on its thread does not delay a read.
        stuck, inside = threading.Event(), threading.Event()

        def held_checkpoint() -> None:
            inside.set()
            stuck.wait(30)

        blocker = asyncio.get_running_loop().run_in_executor(store._checkpointer, held_checkpoint)
        assert await asyncio.to_thread(inside.wait, 10)
        depth, _ = await asyncio.wait_for(store.queue_depth(CN), 5)
        assert depth == 20
        stuck.set()
        await blocker
    finally:
        release.set()
        await store.close()


async def test_truncating_the_wal_waits_its_turn_with_the_periodic_checkpoints(tmp_path: Path) -> None:
    """Dropping the clear copies (a TRUNCATE checkpoint, data at rest) runs on the checkpoint
    thread, after a checkpoint under way there: SQLite runs one checkpoint at a time and answers a
    second one, from another connection, "busy" at once, which left the old frames in the WAL."""
    path = tmp_path / "turns.db"
    store = SQLiteStore(path, checkpoint_interval=3600)
    await store.open()
    stuck, inside = threading.Event(), threading.Event()

    def held_checkpoint() -> None:
        inside.set()
        stuck.wait(30)

    try:
        await _submit_documents(store, 20)
        blocker = asyncio.get_running_loop().run_in_executor(store._checkpointer, held_checkpoint)
        assert await asyncio.to_thread(inside.wait, 10)
        dropping = asyncio.ensure_future(store.drop_clear_copies())
        await asyncio.sleep(0.2)
        assert not dropping.done()  # queued behind the checkpoint thread's work, not beside it
        stuck.set()
        await blocker
        await asyncio.wait_for(dropping, 10)
        assert path.with_name(path.name + "-wal").stat().st_size == 0
    finally:
        stuck.set()
        await store.close()


async def test_a_truncate_the_database_keeps_busy_is_an_error_not_a_no_op(tmp_path: Path) -> None:
    """A read that holds the WAL past the busy timeout: the clear copies could not be dropped,
    and the caller is told (the backfill's mark stays and it runs again), not answered as done."""
    store = SQLiteStore(tmp_path / "busy.db", busy_timeout_ms=50, checkpoint_interval=3600)
    await store.open()
    release, reading = threading.Event(), threading.Event()

    def open_read(c: sqlite3.Connection) -> None:
        cur = c.execute("SELECT id FROM messages")
        cur.fetchone()  # the statement is still open: its snapshot holds the WAL
        reading.set()
        release.wait(30)
        cur.close()

    try:
        await _submit_documents(store, 20)
        held = asyncio.ensure_future(store._read(open_read))
        assert await asyncio.to_thread(reading.wait, 10)
        await _submit_documents(store, 2)  # frames the open read does not see
        with pytest.raises(StoreUnavailable, match="could not finish"):
            await store.drop_clear_copies()
        release.set()
        await held
        await store.drop_clear_copies()  # once the read is over it goes through
        assert (tmp_path / "busy.db-wal").stat().st_size == 0
    finally:
        release.set()
        await store.close()
