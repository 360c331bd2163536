"""A backup restored after disposal (issue 18, DESIGN §12 "At rest"): the store backed up before
a message was disposed of still holds its body, sealed; once disposal destroyed the day key, that
copy opens under no key left in `keys/`, holds no trace of the body in clear, and the next
disposal round on the restored store blanks it and records its disposal again."""

from __future__ import annotations

import base64
import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from customs_gateway.core import atrest
from customs_gateway.core.clock import JumpClock
from customs_gateway.service.disposal import disposed_entry
from customs_gateway.store.sealed import SealedColumns, context
from customs_gateway.store.sqlite import SQLiteStore

from .conftest import CN, US, Pair
from .test_disposal import NEEDLE, _share


def _backup(db: Path, to: Path) -> None:
    """SQLite's online backup of a live database (what operations.md tells operators to run)."""
    src, dst = sqlite3.connect(db), sqlite3.connect(to)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


async def test_a_backup_restored_after_disposal_stays_unreadable(
    jump_pair: tuple[Pair, JumpClock], tmp_path: Path
) -> None:
    pair, clock = jump_pair
    mid = await _share(pair, clock, 41, days=1)
    cn = pair.gw(CN)
    cfg = pair.lp.configs[CN]
    db = cfg.path(cfg.store.path)
    backup = tmp_path / "before-disposal.db"
    _backup(db, backup)
    conn = sqlite3.connect(backup)
    try:
        (sealed_body,) = conn.execute("SELECT body FROM inbox WHERE id=?", (mid,)).fetchone()
    finally:
        conn.close()
    sealed_body = bytes(sealed_body)
    day = atrest.sealed_day(sealed_body)
    ctx = context("inbox.body", mid)
    assert NEEDLE.encode() in cn.day_keys.open(ctx, sealed_body)  # readable while the day key lives

    clock.jump(dt.timedelta(days=2))
    assert (await cn.disposal.run_once()).disposed == [mid]
    await pair.lp.stop(US)
    await pair.lp.stop(CN)

    # The restore: the old database back in place, with the keys directory as it is now.
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    db.write_bytes(backup.read_bytes())
    raw = db.read_bytes()
    for needle in (NEEDLE.encode(), base64.b64encode(NEEDLE.encode())):
        assert needle not in raw
    keys = cn.day_keys.__class__(cn.day_keys.directory, pair.lp.identity(CN).store_key)  # a fresh process
    assert (keys.directory / f"{day.isoformat()}.destroyed").exists()
    with pytest.raises(atrest.Disposed):
        keys.open(ctx, sealed_body)
    for other in keys.days():  # no key left in keys/ opens it
        with pytest.raises(atrest.AtRestError):
            atrest.open_sealed(keys.existing(other), ctx, sealed_body)

    store = SQLiteStore(db)
    store.seal_at_rest(SealedColumns(keys))
    await store.open()
    try:
        with pytest.raises(atrest.Disposed) as e:
            await store.inbox_item(mid)
        assert e.value.status == 410
        now = clock.now()
        [row] = await store.due_for_disposal(now.date(), 10)
        assert row.id == mid and row.signed_document is None  # it no longer opens
        assert await store.dispose([row], now, {mid: disposed_entry(row, now)}) == [mid]
        item = await store.inbox_item(mid)
        assert item is not None and item.disposed_at is not None and item.body == b""
    finally:
        await store.close()
