"""The benchmark's HTTP client: answers read whole by length or chunks, connections reused only
when the answer allows, and every broken answer an OSError that drops its connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from customs_gateway.bench.benchmark import BatchSubmitter, Submitter
from customs_gateway.bench.loadclient import LoadClient, LoadClientError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Seen = list[tuple[str, bytes, str | None]]  # (path, body, the client's port) of each request
Server = tuple[str, Seen]


async def _serve(routes: dict[str, Handler]) -> tuple[web.AppRunner, str]:
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_post(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def _raw_server(
    answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    """A server that writes whatever bytes `answer` does: for answers aiohttp would not send."""
    srv = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
    finally:
        srv.close()
        await srv.wait_closed()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    seen: Seen = []

    def record(request: web.Request, body: bytes) -> None:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        seen.append((request.path, body, None if peer is None else str(peer[1])))

    async def accepted(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        record(request, body)
        assert request.headers["Authorization"] == "Bearer t0k"
        return web.json_response({"id": f"m{len(seen)}", "got": len(body)}, status=202)

    async def refused(request: web.Request) -> web.StreamResponse:
        record(request, await request.read())
        return web.json_response({"type": "about:blank", "detail": "no"}, status=422)

    async def chunked(request: web.Request) -> web.StreamResponse:
        record(request, await request.read())
        resp = web.StreamResponse(status=200)
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for part in (b'{"results":[', b'{"status":"accepted"},', b'{"status":"refused"}', b"]}"):
            await resp.write(part)
        await resp.write_eof()
        return resp

    async def closing(request: web.Request) -> web.StreamResponse:
        record(request, await request.read())
        resp = web.json_response({"id": "last"}, status=202)
        resp.force_close()
        return resp

    async def cut(request: web.Request) -> web.StreamResponse:
        record(request, await request.read())
        assert request.transport is not None
        request.transport.write(b'HTTP/1.1 202 Accepted\r\nContent-Length: 100\r\n\r\n{"id":')
        request.transport.close()
        return web.Response(status=202)

    runner, url = await _serve(
        {
            "/v1/messages": accepted,
            "/refused": refused,
            "/v1/messages:batch": chunked,
            "/closing": closing,
            "/cut": cut,
        }
    )
    try:
        yield url, seen
    finally:
        await runner.cleanup()


async def test_answers_are_read_whole_and_one_connection_serves_a_caller_in_turn(
    server: Server,
) -> None:
    url, seen = server
    sub = Submitter(url, "t0k", b'{"type":"x"}')
    async with LoadClient(url) as client:
        ids = [await sub.submit(client) for _ in range(5)]
        assert ids == ["m1", "m2", "m3", "m4", "m5"]
        assert [body for _, body, _ in seen] == [b'{"type":"x"}'] * 5
        assert len({port for *_, port in seen}) == 1  # keep-alive: one connection for all five
        status, answer = await client.post("/refused", b"{}", {"Authorization": "Bearer t0k"})
        assert (status, json.loads(answer)["detail"]) == (422, "no")
        assert len({port for *_, port in seen}) == 1  # a refusal with a length keeps it too


async def test_concurrent_callers_use_their_own_connections(
    server: Server,
) -> None:
    url, seen = server
    sub = Submitter(url, "t0k", b"{}")
    async with LoadClient(url) as client:
        ids = await asyncio.gather(*(sub.submit(client) for _ in range(8)))
    assert sorted(ids, key=lambda m: int(str(m)[1:])) == [f"m{i}" for i in range(1, 9)]
    assert len(seen) == 8


async def test_a_chunked_answer_is_joined(server: Server) -> None:
    url, _ = server
    batch = BatchSubmitter(url, "t0k", "CN-GACC", {"a": 1}, size=3)
    async with LoadClient(url) as client:
        assert await batch.submit_count(client) == 1  # one "accepted" of two results
        assert await batch.submit_count(client) == 1  # and the connection still works


async def test_connection_close_is_honoured_and_the_next_request_reconnects(
    server: Server,
) -> None:
    url, seen = server
    async with LoadClient(url) as client:
        status, answer = await client.post("/closing", b"{}", {})
        assert (status, json.loads(answer)) == (202, {"id": "last"})
        assert await Submitter(url, "t0k", b"{}").submit(client) == "m2"
    assert seen[0][2] != seen[1][2]  # a new connection after `Connection: close`


async def test_an_answer_cut_short_is_an_oserror_and_its_connection_is_dropped(
    server: Server,
) -> None:
    url, seen = server
    async with LoadClient(url) as client:
        with pytest.raises(LoadClientError, match="inside an answer's body"):
            await client.post("/cut", b"{}", {})
        assert isinstance(LoadClientError("x"), OSError)  # the load loops count it as an error
        assert await Submitter(url, "t0k", b"{}").submit(client) == "m2"
    assert seen[0][2] != seen[1][2]


async def test_a_malformed_status_line_is_refused() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SPDY/9 what\r\n\r\n")
        await writer.drain()
        writer.close()

    async with _raw_server(garbage) as url, LoadClient(url) as client:
        with pytest.raises(LoadClientError, match=r"not an HTTP/1\.1 status line"):
            await client.post("/v1/messages", b"", {})


def test_only_plain_http_base_urls() -> None:
    with pytest.raises(ValueError, match="plain HTTP"):
        LoadClient("https://127.0.0.1:8443")


async def test_an_answer_without_a_length_is_read_to_the_end_of_the_connection() -> None:
    async def untold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b'HTTP/1.1 202 Accepted\r\nConnection: close\r\n\r\n{"id":')
        await writer.drain()
        await asyncio.sleep(0.05)  # the rest arrives later: a read of what is there is not enough
        writer.write(b'"late"}')
        await writer.drain()
        writer.close()

    async with _raw_server(untold) as url, LoadClient(url) as client:
        assert await client.post("/v1/messages", b"{}", {}) == (202, b'{"id":"late"}')
