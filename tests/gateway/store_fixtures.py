"""A store of either backend sealing under fresh day keys, with a raw query on its database (the
`stores` fixture, registered in conftest)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from customs_gateway.core.storekey import StoreKey
from customs_gateway.startup.daykeys import DayKeys
from customs_gateway.store.base import Store
from customs_gateway.store.postgres import PostgresStore
from customs_gateway.store.sqlite import SQLiteStore
from tests.postgres.pg import drop_later, dsn_for, new_schema_name, require_postgres

Raw = Callable[[str], Awaitable[list[tuple[Any, ...]]]]
STORES = ("sqlite", "postgres")


def _keys(tmp_path: Path) -> DayKeys:
    return DayKeys(tmp_path / "days", StoreKey(bytes(range(32))))


@pytest.fixture(params=STORES)
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Store, Raw, DayKeys]]:
    """A store sealing under fresh day keys, and a raw query on its database (no store code)."""
    s: Store
    schema = None
    if request.param == "sqlite":
        s = SQLiteStore(tmp_path / "store.db")

        async def raw(sql: str) -> list[tuple[Any, ...]]:
            with sqlite3.connect(tmp_path / "store.db") as c:
                return [tuple(r) for r in c.execute(sql).fetchall()]

    else:
        require_postgres()
        schema = new_schema_name("atrest")
        s = PostgresStore(dsn_for(schema))

        async def raw(sql: str) -> list[tuple[Any, ...]]:
            conn = await asyncpg.connect(dsn_for(schema))
            try:
                return [tuple(r) for r in await conn.fetch(sql)]
            finally:
                await conn.close()

    keys = _keys(tmp_path)
    await s.open()
    try:
        yield s, raw, keys
    finally:
        await s.close()
        if schema is not None:
            drop_later(schema)
