"""Backups of a running gateway restore to the same state: SQLite online backup, and `pg_dump -n`.

Two gateways exchange messages; while they run, US-CBP's store is backed up (SQLite's online
backup API, or `pg_dump` of its schema); then both stop, the backup is restored somewhere new
(another file; another database), US-CBP starts on the restored store, and its messages, inbox
and audit head (size, root) must be what they were when the backup was taken.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sqlite3
import subprocess
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgspec
import pytest

from customs_gateway.service.gateway import Gateway, issue_token
from customs_gateway.service.pair import LocalPair, prepare_pair
from customs_gateway.startup.config import load_config, render_config
from customs_gateway.store.base import MessageFilter
from customs_gateway.store.pg_migrations import quote_ident
from tests.gateway.conftest import CN, US, Api

from .pg import base_dsn, drop_later, dsn_for, fresh_schemas, require_postgres

Snapshot = dict[str, Any]


def _set_store(config_path: Path, **store: Any) -> None:
    cfg = load_config(config_path, env={})
    cfg = msgspec.structs.replace(cfg, store=msgspec.structs.replace(cfg.store, **store))
    config_path.write_text(render_config(cfg), encoding="utf-8")


async def _snapshot(gw: Gateway) -> Snapshot:
    store = gw.store
    msgs = await store.list_messages(MessageFilter(), None, 1000)
    inbox = await store.inbox_after(0, 1000, ("seizure-share",))
    return {
        "messages": [(m.id, m.seq, m.status, m.receipt) for m in msgs],
        "inbox": [(i.cursor, i.sender, i.id, i.document_sha256, i.body) for i in inbox],
        "audit_head": await store.audit_head(),
    }


async def _exchange(lp: LocalPair, homes: dict[str, Any]) -> None:
    """A few messages each way, all delivered, so both outbox and inbox have something."""
    async with aiohttp.ClientSession() as session:
        apis = {}
        for name, server in lp.servers.items():
            _, secret = await issue_token(server.gateway.store, server.gateway.clock, "agency", "backup", "test")
            apis[name] = Api(session, homes[name].local_url, {"agency": secret}, CN if name == US else US)
        ids = []
        for sender, n in ((US, 3), (CN, 2)):
            for _ in range(n):
                status, res = await apis[sender].submit("seizure-share")
                assert status == 202, res
                ids.append((sender, res["id"]))
        for sender, mid in ids:
            await apis[sender].wait_status(mid, {"delivered"})


async def _backup_restore_cycle(
    tmp_path: Path,
    us_store: dict[str, str],
    backup: Callable[[], Awaitable[None]],
    restored_store: Callable[[], Awaitable[dict[str, str]]],
) -> tuple[Snapshot, Snapshot]:
    """Run the pair, back US up while running, stop, restore, start US on the copy: both snapshots."""
    homes = prepare_pair(tmp_path, overrides={"delivery": {"retry_base_seconds": 0.05, "retry_cap_seconds": 0.5}})
    if us_store:
        _set_store(homes[US].config_path, **us_store)
    lp = LocalPair(homes)
    await lp.start_all()
    try:
        await _exchange(lp, homes)
        before = await _snapshot(lp.servers[US].gateway)
        await backup()  # while both gateways run
    finally:
        await lp.stop_all()
    _set_store(homes[US].config_path, **(await restored_store()))
    lp = LocalPair(homes)
    server = await lp.start(US)
    try:
        after = await _snapshot(server.gateway)
    finally:
        await lp.stop_all()
    return before, after


async def test_sqlite_online_backup_restores_messages_inbox_and_audit(tmp_path: Path) -> None:
    live = tmp_path / US / "data" / "gateway.db"
    copy = tmp_path / "backup" / "gateway.db"

    def online_backup() -> None:
        copy.parent.mkdir()
        src, dst = sqlite3.connect(live, timeout=5), sqlite3.connect(copy)
        try:
            src.backup(dst)  # the same online backup `sqlite3 … ".backup FILE"` runs
        finally:
            dst.close()
            src.close()

    async def backup() -> None:
        await asyncio.to_thread(online_backup)

    async def restored() -> dict[str, str]:
        fresh = tmp_path / US / "restored" / "gateway.db"
        fresh.parent.mkdir(mode=0o700)
        shutil.copyfile(copy, fresh)
        return {"backend": "sqlite", "path": "restored/gateway.db"}

    before, after = await _backup_restore_cycle(tmp_path, {}, backup, restored)
    assert before["audit_head"][0] > 0 and len(before["messages"]) == 3 and len(before["inbox"]) == 2
    assert after == before


def _pg_tool(args: list[str]) -> None:
    """Run pg_dump / pg_restore; a failure skips (fails under CI: the tool is there and must work)."""
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        why = f"{args[0]} exited {proc.returncode}: {proc.stderr.strip()[:500]}"
        if os.environ.get("CI"):
            pytest.fail(why, pytrace=False)
        pytest.skip(why)


async def test_pg_dump_of_the_schema_restores_messages_inbox_and_audit(tmp_path: Path) -> None:
    require_postgres()
    pg_dump, pg_restore = shutil.which("pg_dump"), shutil.which("pg_restore")
    if pg_dump is None or pg_restore is None:
        pytest.skip("pg_dump / pg_restore are not installed")
    schema = fresh_schemas(1)[0]
    dump = tmp_path / "us.dump"
    database = f"cg_restore_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(base_dsn(), timeout=10)
    created = False

    async def backup() -> None:
        await asyncio.to_thread(_pg_tool, [pg_dump, "--format=custom", "--no-owner", "-n", schema, "-f", str(dump),
                                           base_dsn()])  # fmt: skip

    async def restored() -> dict[str, str]:
        nonlocal created
        await admin.execute(f"CREATE DATABASE {quote_ident(database)}")
        created = True
        target = urllib.parse.urlsplit(base_dsn())._replace(path=f"/{database}").geturl()
        await asyncio.to_thread(_pg_tool, [pg_restore, "--no-owner", "-d", target, str(dump)])
        parts = urllib.parse.urlsplit(dsn_for(schema))
        return {"backend": "postgres", "dsn": parts._replace(path=f"/{database}").geturl()}

    try:
        before, after = await _backup_restore_cycle(
            tmp_path, {"backend": "postgres", "dsn": dsn_for(schema)}, backup, restored
        )
    finally:
        if created:
            await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(database)} WITH (FORCE)")
        await admin.close()
        drop_later(schema)
    assert before["audit_head"][0] > 0 and len(before["messages"]) == 3 and len(before["inbox"]) == 2
    assert after == before
