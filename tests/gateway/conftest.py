"""Fixtures: two real gateways on loopback (TLS, and each store: SQLite files, PostgreSQL schemas).

`homes` (and so `pair`) runs every test once per store backend, ids `sqlite` and `postgres`; on
PostgreSQL each gateway gets a fresh schema of the test database, dropped afterwards.
`module_pair` is the same pair shared by a module's tests, for tests that only read or send
refused input: they must carry `MODULE_LOOP` and change no state another test could see.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import pytest_asyncio

from customs_gateway.core import handling
from customs_gateway.core.clock import JumpClock
from customs_gateway.service import tls
from customs_gateway.service.gateway import Gateway, issue_token
from customs_gateway.service.pair import Home, LocalPair, example_dir, prepare_pair
from customs_gateway.startup.agreement import builtin_profile
from customs_gateway.startup.config import load_config, render_config
from tests.postgres.pg import drop_later, dsn_for, fresh_schemas, require_postgres

from .store_fixtures import STORES, stores  # noqa: F401  (stores: a fixture, a store of each backend)

US, CN = "US-CBP", "CN-GACC"
MESSAGES = example_dir() / "messages"


def sample(msg_type: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((MESSAGES / f"{msg_type}.json").read_text(encoding="utf-8"))
    return body


def terms(msg_type: str, now: dt.datetime) -> dict[str, Any]:
    """The agreement profile's default handling terms for a document built by hand (wire form)."""
    return handling.default_wire(msg_type, builtin_profile(), now.date())


class Api:
    """A tiny client of one gateway's local API holding one token per role."""

    def __init__(self, session: aiohttp.ClientSession, url: str, tokens: dict[str, str], peer: str) -> None:
        self.session, self.url, self.tokens, self.peer = session, url, tokens, peer

    async def call(
        self,
        method: str,
        path: str,
        *,
        role: str | None = "agency",
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
        h = dict(headers or {})
        if role is not None:
            h["Authorization"] = f"Bearer {self.tokens[role]}"
        async with self.session.request(method, self.url + path, json=json_body, data=data, headers=h) as r:
            raw = await r.read()
            body = json.loads(raw) if raw else None
            return r.status, body, r.headers

    async def submit(
        self, msg_type: str, body: dict[str, Any] | None = None, to: str | None = None, **kw: Any
    ) -> tuple[int, Any]:
        status, res, _ = await self.call(
            "POST",
            "/v1/messages",
            json_body={"type": msg_type, "to": to or self.peer, "body": body or sample(msg_type)},
            **kw,
        )
        return status, res

    async def wait_status(self, mid: str, want: set[str], timeout: float = 20.0) -> dict[str, Any]:
        import asyncio

        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            status, res, _ = await self.call("GET", f"/v1/messages/{mid}")
            assert status == 200, res
            if res["status"] in want:
                return dict(res)
            if loop.time() > end:
                raise AssertionError(f"message {mid} stayed {res['status']}: {res}")
            await asyncio.sleep(0.05)

    async def upload(self, data: bytes, filename: str = "guide.pdf", media_type: str = "application/pdf") -> str:
        """A complete upload of `data` (`POST /v1/files`); its file id."""
        status, res, _ = await self.call(
            "POST", f"/v1/files?filename={filename}", data=data, headers={"Content-Type": media_type}
        )
        assert status == 201, res
        return str(res["file_id"])

    async def with_files(self, msg_type: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """`body` (the sample) with each file it names uploaded now (a small PDF) and named by its id."""
        b = dict(body or sample(msg_type))
        if "files" in b:
            b["files"] = [
                {**f, "file_id": await self.upload(b"%PDF-1.4 " + f["filename"].encode() * 50, "f.pdf")}
                for f in b["files"]
            ]
        return b


class Pair:
    def __init__(self, lp: LocalPair, apis: dict[str, Api]) -> None:
        self.lp, self.apis = lp, apis

    def gw(self, name: str) -> Any:
        return self.lp.servers[name].gateway


def _use_postgres(home: Home, schema: str) -> None:
    """Point one prepared home at its own PostgreSQL schema (prepare_pair's overrides apply to both)."""
    cfg = load_config(home.config_path, env={})
    cfg = msgspec.structs.replace(
        cfg, store=msgspec.structs.replace(cfg.store, backend="postgres", dsn=dsn_for(schema))
    )
    home.config_path.write_text(render_config(cfg), encoding="utf-8")


@contextlib.contextmanager
def _homes_on(store: str, root: Path) -> Iterator[dict[str, Any]]:
    prepared = prepare_pair(root, overrides={"delivery": {"retry_base_seconds": 0.05, "retry_cap_seconds": 0.5}})
    if store == "sqlite":
        yield prepared
        return
    require_postgres()
    schemas = dict(zip(prepared, fresh_schemas(len(prepared)), strict=True))
    for name, home in prepared.items():
        _use_postgres(home, schemas[name])
    try:
        yield prepared
    finally:
        drop_later(*schemas.values())


async def role_tokens(gw: Gateway, label: str = "test") -> dict[str, str]:
    """One bearer token per role, issued straight into a running gateway's store."""
    tokens = {}
    for role in ("agency", "admin", "auditor"):
        _, tokens[role] = await issue_token(gw.store, gw.clock, role, f"{label}-{role}", "test")
    return tokens


@contextlib.asynccontextmanager
async def running_pair(homes: dict[str, Any]) -> AsyncIterator[Pair]:
    """Both prepared `homes` started in this event loop, with an `Api` (one token per role) for each."""
    lp = LocalPair(homes)
    await lp.start_all()
    session = aiohttp.ClientSession()
    apis = {}
    for name, server in lp.servers.items():
        tokens = await role_tokens(server.gateway)
        apis[name] = Api(session, homes[name].local_url, tokens, CN if name == US else US)
    try:
        yield Pair(lp, apis)
    finally:
        await session.close()
        await lp.stop_all()


@pytest.fixture(params=STORES)
def homes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    with _homes_on(request.param, tmp_path) as prepared:
        yield prepared


@pytest.fixture
async def pair(homes: dict[str, Any]) -> AsyncIterator[Pair]:
    async with running_pair(homes) as p:
        yield p


#: The mark a test using `module_pair` needs: it runs in the module's event loop, as the pair does.
MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=STORES)
async def module_pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pair]:
    with _homes_on(request.param, tmp_path_factory.mktemp(f"pair-{request.param}")) as prepared:
        async with running_pair(prepared) as p:
            yield p


@pytest.fixture
async def jump_pair(tmp_path: Path) -> AsyncIterator[tuple[Pair, JumpClock]]:
    """A pair on SQLite whose gateways share one clock the test moves forward."""
    clock = JumpClock()
    with _homes_on("sqlite", tmp_path) as homes:
        async with running_pair(homes) as pair:
            await pair.lp.stop_all()
            pair.lp._identities.clear()
            await pair.lp.start_all(clock=clock)
            yield pair, clock


def utc(*a: int) -> dt.datetime:
    return dt.datetime(*a, tzinfo=dt.timezone.utc)


async def peer_post(pair: Pair, path: str, body: bytes, content_type: str) -> tuple[int, str, bytes]:
    """POST to CN-GACC's peer API as US-CBP (its pinned certificate): status, Content-Type, body."""
    us = pair.gw(US)
    ctx = tls.client_context(us.identity.tls_cert_pem, us.identity.tls_key_pem, us.peer.bundle.tls_certificate.encode())
    url = f"https://127.0.0.1:{pair.lp.homes[CN].peer_port}{path}"
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s,
        s.post(url, data=body, headers={"Content-Type": content_type}) as r,
    ):
        return r.status, r.headers.get("Content-Type", ""), await r.read()
