"""Test access to a real PostgreSQL: its DSN, skip-or-fail when it is down, throwaway schemas.

Outside CI an unreachable server skips the PostgreSQL cases with the reason; with `CI` set it
fails them, so a broken CI database can never pass as a green run.

Schema DDL costs more than most gateway tests, so it runs off the tests' clock: a background
event loop keeps a few fresh, fully migrated schemas ready (`fresh_schemas`) and drops used ones
after their test (`drop_later`); whatever is left is dropped when the session ends.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import contextlib
import os
import secrets
import threading
import urllib.parse
from collections.abc import Coroutine
from typing import Any, TypeVar

import asyncpg
import pytest

from customs_gateway.store.pg_migrations import migrate, quote_ident

DSN_ENV = "CUSTOMS_GATEWAY_TEST_PG_DSN"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
SPARES = 4  # schemas kept ready: two gateways per test, one test ahead

T = TypeVar("T")


def base_dsn() -> str:
    return os.environ.get(DSN_ENV) or DEFAULT_DSN


class _Background:
    """One event loop on a daemon thread, for schema work that tests should not wait for."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="pg-test-schemas", daemon=True).start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)


_bg: list[_Background] = []
_probe_result: list[str | None] = []  # filled once per session: None = reachable, else why not
_spares: collections.deque[tuple[str, concurrent.futures.Future[None]]] = collections.deque()
_drops: list[concurrent.futures.Future[None]] = []


def _background() -> _Background:
    if not _bg:
        _bg.append(_Background())
        atexit.register(_clean_up)
    return _bg[0]


async def _probe_once() -> str | None:
    try:
        conn = await asyncpg.connect(base_dsn(), timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        return f"{type(e).__name__}: {e}"
    await conn.close()
    return None


def require_postgres() -> str:
    """The test DSN if PostgreSQL answers; otherwise skip (developer machine) or fail (CI)."""
    if not _probe_result:
        _probe_result.append(_background().submit(_probe_once()).result())
    problem = _probe_result[0]
    if problem is None:
        return base_dsn()
    parts = urllib.parse.urlsplit(base_dsn())  # host, port and database only: never a password
    reason = f"PostgreSQL at {parts.hostname}:{parts.port or 5432}{parts.path} is unreachable ({problem})"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the PostgreSQL tests, set {DSN_ENV} or start the server", pytrace=False)
    pytest.skip(f"{reason}; set {DSN_ENV} or start PostgreSQL to run these")


def new_schema_name(label: str = "gw") -> str:
    return f"cg_test_{secrets.token_hex(5)}_{label}"


def dsn_for(schema: str) -> str:
    """The test DSN with `schema` as its search_path (libpq `options`, which PostgresStore reads)."""
    parts = urllib.parse.urlsplit(base_dsn())
    option = urllib.parse.urlencode({"options": f"-c search_path={schema}"}, quote_via=urllib.parse.quote)
    query = f"{parts.query}&{option}" if parts.query else option
    return parts._replace(query=query).geturl()


async def _prepare(schema: str) -> None:
    conn = await asyncpg.connect(base_dsn(), timeout=10)
    try:
        await migrate(conn, schema)  # exactly what PostgresStore.open runs on a new schema
    finally:
        await conn.close()


async def _drop(schemas: tuple[str, ...]) -> None:
    conn = await asyncpg.connect(base_dsn(), timeout=10)
    try:
        await conn.execute("SET lock_timeout = '10s'")
        for schema in schemas:
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
    finally:
        await conn.close()


def _top_up(count: int) -> None:
    while len(_spares) < count:
        name = new_schema_name("spare")
        _spares.append((name, _background().submit(_prepare(name))))


def fresh_schemas(count: int) -> list[str]:
    """`count` schemas nobody has used, already migrated to the current version."""
    out = []
    for _ in range(count):
        _top_up(1)
        name, ready = _spares.popleft()
        ready.result(timeout=60)  # raises what preparing it raised
        out.append(name)
    _top_up(SPARES)
    return out


def drop_later(*schemas: str) -> None:
    """Drop these schemas in the background (the test's stores must be closed already)."""
    _drops.append(_background().submit(_drop(schemas)))


def _clean_up() -> None:
    leftovers = []
    for name, ready in _spares:
        with contextlib.suppress(Exception):
            ready.result(timeout=60)
        leftovers.append(name)
    _spares.clear()
    if leftovers:
        drop_later(*leftovers)
    for fut in _drops:
        with contextlib.suppress(Exception):  # a schema left behind is harmless: cg_test_* names
            fut.result(timeout=60)
