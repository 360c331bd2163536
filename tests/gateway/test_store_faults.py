"""Disk and database faults: submit answers 503, writes nothing, and recovers by itself."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from customs_gateway.store.sqlite import SQLiteStore

from .conftest import US, Pair


async def _counts(store: SQLiteStore) -> tuple[int, int]:
    def job(c: sqlite3.Connection) -> tuple[int, int]:
        return (
            c.execute("SELECT count(*) FROM messages").fetchone()[0],
            c.execute("SELECT count(*) FROM audit").fetchone()[0],
        )

    return await store._read(job)


async def test_full_disk_is_503_without_partial_rows_then_recovers(pair: Pair) -> None:
    store = pair.gw(US).store
    if not isinstance(store, SQLiteStore):
        pytest.skip("fault injection here uses SQLite pragmas")
    api = pair.apis[US]
    before = await _counts(store)
    # SQLITE_FULL, exactly as a full disk reports it: cap the database at its current size.
    pages = await store._write(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
    await store._write(lambda c: c.execute(f"PRAGMA max_page_count={pages}"))
    big: dict[str, Any] = {"notes": "x" * 200_000}
    from .conftest import sample

    body = {**sample("seizure-share"), **big}
    body["notes"] = "满" * 7000
    statuses = []
    for _ in range(5):
        status, prob = await api.submit("seizure-share", body=body)
        statuses.append(status)
    assert 503 in statuses, statuses
    assert prob["code"] == "store.unavailable"
    assert all(s in (202, 503) for s in statuses)
    accepted = statuses.count(202)
    after = await _counts(store)
    assert after[0] == before[0] + accepted  # nothing half-written
    # The fault clears; the next submit succeeds with no restart.
    await store._write(lambda c: c.execute("PRAGMA max_page_count=1073741823"))
    status, res = await api.submit("seizure-share")
    assert status == 202, res
    await api.wait_status(res["id"], {"delivered"})


async def test_locked_database_is_503_then_recovers(pair: Pair) -> None:
    store = pair.gw(US).store
    if not isinstance(store, SQLiteStore):
        pytest.skip("fault injection here uses SQLite locks")
    store_path = store.path
    # Another process (a careless backup, a manual sqlite3 session) holds the write lock.
    old_timeout = store.busy_timeout_ms
    await store._write(lambda c: c.execute("PRAGMA busy_timeout=200"))
    other = sqlite3.connect(store_path, isolation_level=None, timeout=0.1)
    other.execute("BEGIN EXCLUSIVE")
    try:
        status, prob = await pair.apis[US].submit("seizure-share")
        assert status == 503, prob
        assert prob["code"] == "store.unavailable"
    finally:
        other.execute("ROLLBACK")
        other.close()
    await store._write(lambda c: c.execute(f"PRAGMA busy_timeout={old_timeout}"))
    status, res = await pair.apis[US].submit("seizure-share")
    assert status == 202
    await pair.apis[US].wait_status(res["id"], {"delivered"})
