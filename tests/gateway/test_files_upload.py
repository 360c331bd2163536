"""File uploads (DESIGN §13, issue 19): streamed, resumable across restarts, owned, limited, expiring.

Real gateways on loopback (both stores) for the protocol; the local API app of a running gateway
under aiohttp's test client where a test changes the limits, the disk writer or the clock of the
files directory (`app[FILES]`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import hashlib
import itertools
import os
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
from aiohttp.test_utils import TestClient, TestServer

from customs_gateway.core import filerest
from customs_gateway.core.clock import FixedClock, JumpClock
from customs_gateway.core.storekey import StoreKey
from customs_gateway.http.files import FILES
from customs_gateway.http.local import local_app
from customs_gateway.service.files import FileUploads
from customs_gateway.startup.config import Config, FilesConfig
from customs_gateway.startup.daykeys import DayKeys

from .conftest import US, Pair, role_tokens

MB = 1024 * 1024


def pattern(size: int, seed: int = 1) -> bytes:
    """`size` reproducible bytes (no two 64 KiB blocks alike)."""
    out = bytearray()
    block = 0
    while len(out) < size:
        out += hashlib.shake_256(f"{seed}/{block}".encode()).digest(65536)
        block += 1
    return bytes(out[:size])


async def chunks(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    """`data` as a streamed (chunked) body."""
    view = memoryview(data)
    for i in range(0, len(data), size):
        yield bytes(view[i : i + size])


def files_dir(pair: Pair, name: str = US) -> Path:
    cfg: Config = pair.lp.configs[name]
    return cfg.files_dir()


def auth(pair: Pair, token: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token or pair.apis[US].tokens['agency']}"}


async def request(
    pair: Pair, method: str, path: str, *, data: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any, Any]:
    api = pair.apis[US]
    h = {**auth(pair), **(headers or {})}
    async with api.session.request(method, api.url + path, data=data, headers=h) as r:
        raw = await r.read()
        return r.status, (msgspec.json.decode(raw) if raw else None), r.headers


async def test_a_file_in_parts_across_restarts_keeps_its_offset_and_digest(pair: Pair) -> None:
    data = pattern(40 * MB)
    cuts = (0, 12 * MB, 26 * MB, len(data))
    status, body, headers = await request(
        pair,
        "POST",
        "/v1/files?filename=training-guide.pdf",
        data=chunks(data[cuts[0] : cuts[1]]),
        headers={"Upload-Length": str(len(data)), "Content-Type": "application/pdf"},
    )
    assert status == 201, body
    fid = body["file_id"]
    assert headers["Location"] == f"/v1/files/{fid}"
    assert body | {"file_id": fid} == {
        "file_id": fid,
        "size": len(data),
        "offset": cuts[1],
        "complete": False,
        "sha256": None,
        "media_type": "application/pdf",
        "filename": "training-guide.pdf",
        "created_at": body["created_at"],
        "expires_at": body["expires_at"],
        "message_id": None,
    }
    for start, end in itertools.pairwise(cuts[1:]):
        await pair.lp.stop(US)
        # A crash after writing bytes but before recording them leaves a longer data file.
        with open(files_dir(pair) / f"{fid}.data", "ab") as f:
            f.write(b"left over by a crash")
        await pair.lp.start(US)
        status, _, headers = await request(pair, "HEAD", f"/v1/files/{fid}")
        assert status == 200
        assert (headers["Upload-Offset"], headers["Upload-Length"]) == (str(start), str(len(data)))
        status, problem, headers = await request(
            pair, "PATCH", f"/v1/files/{fid}", data=b"x", headers={"Upload-Offset": str(start - 1)}
        )
        assert status == 409 and problem["code"] == "file.offset_mismatch", problem
        assert headers["Upload-Offset"] == str(start) and str(start) in problem["detail"]
        status, body, headers = await request(
            pair,
            "PATCH",
            f"/v1/files/{fid}",
            data=chunks(data[start:end]),
            headers={"Upload-Offset": str(start), "Content-Type": "application/offset+octet-stream"},
        )
        assert status == 200, body
        assert body["offset"] == end and headers["Upload-Offset"] == str(end)
    assert body["complete"] is True
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    held = (files_dir(pair) / f"{fid}.data").read_bytes()
    assert data[:64] not in held and len(held) == filerest.data_size(len(data))  # sealed at rest
    assert b"".join(pair.gw(US).files.chunks(fid)) == data
    status, got, _ = await request(pair, "GET", f"/v1/files/{fid}")
    assert status == 200 and got == body
    status, problem, _ = await request(pair, "PATCH", f"/v1/files/{fid}", data=b"", headers={"Upload-Offset": "0"})
    assert status == 409 and problem["code"] == "file.offset_mismatch"
    status, problem, _ = await request(
        pair, "PATCH", f"/v1/files/{fid}", data=b"", headers={"Upload-Offset": str(len(data))}
    )
    assert status == 409 and problem["code"] == "file.complete"


async def test_a_whole_file_in_one_post_and_what_others_see(pair: Pair) -> None:
    data = pattern(3 * MB + 17, seed=2)
    status, body, _ = await request(
        pair,
        "POST",
        "/v1/files?filename=%E6%89%A3%E7%95%99.jpg",
        data=chunks(data),
        headers={"Content-Type": "image/jpeg"},
    )
    assert status == 201, body
    assert body["complete"] and body["size"] == body["offset"] == len(data)
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["filename"] == "扣留.jpg" and body["media_type"] == "image/jpeg"
    fid = body["file_id"]
    other = (await role_tokens(pair.gw(US), "other"))["agency"]
    for method in ("GET", "HEAD", "PATCH"):
        h = {**auth(pair, other), "Upload-Offset": "0"}
        status, problem, _ = await request(pair, method, f"/v1/files/{fid}", headers=h)
        assert status == 404, (method, problem)
        if problem is not None:
            assert problem["code"] == "file.not_found"
    for unknown in ("0190a1b2-0000-7000-8000-000000000000", "..%2F..%2Fetc", "not-an-id"):
        status, problem, _ = await request(pair, "GET", f"/v1/files/{unknown}")
        assert status == 404 and problem["code"] in ("file.not_found", "http.not_found"), problem
    status, problem, _ = await request(
        pair, "GET", f"/v1/files/{fid}", headers=auth(pair, pair.apis[US].tokens["admin"])
    )
    assert status == 403
    empty_status, empty, _ = await request(pair, "POST", "/v1/files", data=b"")
    assert empty_status == 201 and empty["sha256"] == hashlib.sha256(b"").hexdigest() and empty["complete"]
    assert empty["media_type"] == "application/octet-stream" and empty["filename"] is None
    status, declared_empty, _ = await request(pair, "POST", "/v1/files", data=b"", headers={"Upload-Length": "0"})
    assert status == 201 and declared_empty["complete"] and declared_empty["sha256"] == empty["sha256"]


async def test_refusals_name_the_rule(pair: Pair) -> None:
    max_bytes = pair.lp.configs[US].files.max_file_bytes
    before = set(os.listdir(files_dir(pair))) if files_dir(pair).exists() else set()
    cases: list[tuple[str, dict[str, str], Any, int, str]] = [
        ("/v1/files", {"Upload-Length": str(max_bytes + 1)}, b"", 413, "file.too_large"),
        ("/v1/files", {"Upload-Length": "-1"}, b"", 422, "schema.type"),
        ("/v1/files", {"Upload-Length": "10"}, b"x" * 11, 413, "file.length_exceeded"),
        ("/v1/files", {"Upload-Length": "10"}, chunks(b"x" * 11, 4), 413, "file.length_exceeded"),
        ("/v1/files?filename=..%2Fetc%2Fpasswd", {}, b"x", 422, "schema.filename"),
        ("/v1/files", {"Content-Type": "not a type"}, b"x", 422, "schema.media_type"),
    ]
    for path, headers, data, want, code in cases:
        status, problem, resp_headers = await request(pair, "POST", path, data=data, headers=headers)
        assert (status, problem["code"]) == (want, code), (path, headers, problem)
        assert resp_headers["Content-Type"].startswith("application/problem+json")
    assert (set(os.listdir(files_dir(pair))) if files_dir(pair).exists() else set()) == before
    status, body, _ = await request(pair, "POST", "/v1/files", data=b"abc", headers={"Upload-Length": "5"})
    assert status == 201
    path = f"/v1/files/{body['file_id']}"
    for headers, data, want, code in [
        ({}, b"de", 422, "schema.required"),
        ({"Upload-Offset": "three"}, b"de", 422, "schema.type"),
        ({"Upload-Offset": "3"}, b"def", 413, "file.length_exceeded"),
        ({"Upload-Offset": "3"}, chunks(b"defg", 1), 413, "file.length_exceeded"),
    ]:
        status, problem, _ = await request(pair, "PATCH", path, data=data, headers=headers)
        assert (status, problem["code"]) == (want, code), (headers, problem)
    status, _, headers = await request(pair, "HEAD", path)
    assert headers["Upload-Offset"] == "3"  # nothing of a refused part is kept
    status, body, _ = await request(pair, "PATCH", path, data=b"de", headers={"Upload-Offset": "3"})
    assert status == 200 and body["sha256"] == hashlib.sha256(b"abcde").hexdigest()


async def test_memory_stays_flat_while_32_mb_stream_in(pair: Pair) -> None:
    size = 32 * MB
    block = pattern(65536, seed=3)
    want = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(size // len(block)):
            want.update(block)
            yield block

    tracemalloc.start()
    try:
        status, res, _ = await request(pair, "POST", "/v1/files", data=body())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 201, res
    assert res["size"] == size and res["sha256"] == want.hexdigest()
    assert peak < 4 * MB, f"peak {peak} bytes while uploading {size}"


@contextlib.asynccontextmanager
async def local_client(pair: Pair, **files: Any) -> AsyncIterator[tuple[TestClient[Any, Any], FileUploads]]:
    """The local API of US's running gateway under a test client, its files settings changed."""
    app = local_app(pair.gw(US))
    uploads = app[FILES]
    uploads.config = msgspec.structs.replace(uploads.config, **files)
    async with TestClient(TestServer(app)) as client:
        yield client, uploads


class DiskFull:
    """A writer that takes `room` bytes, then fails as a full disk does."""

    def __init__(self, room: int) -> None:
        self.room = room

    def __call__(self, fd: int, data: bytes) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return os.write(fd, data)


async def test_a_full_disk_is_503_and_keeps_nothing_of_the_part(pair: Pair) -> None:
    async with local_client(pair) as (client, uploads):
        h = auth(pair)
        listing = set(os.listdir(uploads.directory))
        uploads.write = DiskFull(100_000)
        r = await client.post("/v1/files", data=pattern(300_000), headers=h)
        problem = await r.json()
        assert (r.status, problem["code"]) == (503, "file.disk_full"), problem
        assert r.headers["Content-Type"].startswith("application/problem+json") and "Retry-After" in r.headers
        assert set(os.listdir(uploads.directory)) == listing  # no upload was created

        uploads.write = os.write
        data = pattern(500_000, seed=4)
        r = await client.post("/v1/files", data=data[:200_000], headers={**h, "Upload-Length": str(len(data))})
        fid = (await r.json())["file_id"]
        uploads.write = DiskFull(50_000)
        r = await client.patch(f"/v1/files/{fid}", data=data[200_000:], headers={**h, "Upload-Offset": "200000"})
        assert (r.status, (await r.json())["code"]) == (503, "file.disk_full")
        r = await client.head(f"/v1/files/{fid}", headers=h)
        assert r.headers["Upload-Offset"] == "200000"
        assert (uploads.directory / f"{fid}.data").stat().st_size == filerest.data_size(200_000)
        uploads.write = os.write
        r = await client.patch(f"/v1/files/{fid}", data=data[200_000:], headers={**h, "Upload-Offset": "200000"})
        assert r.status == 200
        assert (await r.json())["sha256"] == hashlib.sha256(data).hexdigest()


async def test_limits_come_from_configuration(pair: Pair) -> None:
    defaults = FilesConfig()
    assert (defaults.max_file_bytes, defaults.max_files_per_message) == (2 * 1024**3, 20)
    assert defaults.upload_ttl_seconds == 24 * 3600
    async with local_client(pair, max_file_bytes=1000) as (client, _):
        r = await client.post("/v1/files", data=chunks(b"y" * 1001, 100), headers=auth(pair))
        problem = await r.json()
        assert (r.status, problem["code"], problem["field"]) == (413, "file.too_large", "body")
        assert "1000" in problem["detail"] and "files.max_file_bytes" in problem["detail"]
        r = await client.post("/v1/files", data=b"y" * 1000, headers=auth(pair))
        assert r.status == 201


def _uploads_of(directory: Path) -> set[str]:
    return {p.name[:-5] for p in directory.glob("*.json")}


async def test_idle_uploads_expire_and_the_sweep_is_bounded(jump_pair: tuple[Pair, JumpClock]) -> None:
    pair, clock = jump_pair
    ids = []
    for _ in range(5):
        status, body, _ = await request(pair, "POST", "/v1/files", data=b"part", headers={"Upload-Length": "10"})
        assert status == 201
        ids.append(body["file_id"])
    clock.jump(dt.timedelta(hours=23))
    status, body, _ = await request(pair, "PATCH", f"/v1/files/{ids[0]}", data=b"more", headers={"Upload-Offset": "4"})
    assert status == 200  # touched: its expiry starts again
    clock.jump(dt.timedelta(hours=2))
    for fid in ids[1:]:
        status, _, _ = await request(pair, "HEAD", f"/v1/files/{fid}")
        assert status == 404
    assert (await request(pair, "HEAD", f"/v1/files/{ids[0]}"))[0] == 200

    directory = files_dir(pair)
    server = pair.lp.servers[US]
    gw = server.gateway
    sweeper = FileUploads(directory, gw.config.files, clock, gw.ids, wrap_key=bytes(32), day_keys=gw.day_keys)
    assert set(ids) <= _uploads_of(directory)
    removed = [sweeper.sweep(clock.now(), limit=2) for _ in range(4)]
    assert sum(removed) == 4 and max(removed) <= 2
    assert _uploads_of(directory) == {ids[0]}
    assert sorted(p.name for p in directory.iterdir()) == sorted([f"{ids[0]}.data", f"{ids[0]}.json"])


async def test_the_periodic_sweep_removes_expired_uploads(pair: Pair) -> None:
    clock = FixedClock(dt.datetime(2026, 12, 4, tzinfo=dt.timezone.utc))
    async with local_client(pair, sweep_every_seconds=0.01, upload_ttl_seconds=60.0) as (client, uploads):
        uploads.clock = clock
        r = await client.post("/v1/files", data=b"abc", headers=auth(pair))
        body = await r.json()
        assert body["expires_at"] == "2026-12-04T00:01:00.000Z"
        fid = body["file_id"]
        assert fid in _uploads_of(uploads.directory)
        clock.advance(59)
        await asyncio.sleep(0.05)  # several sweeps run, on a clock that has not reached expiry
        assert fid in _uploads_of(uploads.directory)
        clock.advance(1)
        await _wait(lambda: fid not in _uploads_of(uploads.directory))


async def _wait(done: Any, tries: int = 200) -> None:
    """Let the sweeper task run (it sweeps every 10 ms) until `done()`; the clock does not move."""
    for _ in range(tries):
        await asyncio.sleep(0.01)
        if done():
            return
    raise AssertionError("the sweeper did not remove the expired upload")


def test_file_ids_never_reach_a_path() -> None:
    from customs_gateway.core.errors import NotFound
    from customs_gateway.core.upload import check_file_id

    for bad in ("../x", "0190A1B2-0000-7000-8000-000000000000", "", "0190a1b2-0000-7000-8000-000000000000/.."):
        try:
            check_file_id(bad)
        except NotFound as e:
            assert e.code == "file.not_found"
        else:
            raise AssertionError(bad)


async def _raw(port: int, head: str, body: bytes, *, close: bool) -> bytes:
    """Send a request head and part of its body over a raw connection; hang up (`close`) or wait
    for the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode() + body)
    await writer.drain()
    if close:
        writer.close()
        await writer.wait_closed()
        return b""
    answer = await asyncio.wait_for(reader.read(65536), 10)
    writer.close()
    return answer


async def _offset_becomes(pair: Pair, fid: str, want: int) -> None:
    """Ask HEAD until the gateway has noticed the hang-up and recorded what arrived."""
    for _ in range(500):
        _, _, headers = await request(pair, "HEAD", f"/v1/files/{fid}")
        if headers.get("Upload-Offset") == str(want):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"offset stayed {headers.get('Upload-Offset')}, not {want}")


async def test_a_client_that_hangs_up_keeps_what_arrived_of_a_patch_and_nothing_of_a_post(pair: Pair) -> None:
    data = pattern(300_000, seed=5)
    status, body, _ = await request(pair, "POST", "/v1/files", data=data[:1000], headers={"Upload-Length": "300000"})
    fid = body["file_id"]
    port = pair.lp.homes[US].local_port
    token = pair.apis[US].tokens["agency"]
    head = (
        f"PATCH /v1/files/{fid} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Upload-Offset: 1000\r\nContent-Length: {len(data) - 1000}\r\n\r\n"
    )
    await _raw(port, head, data[1000:150_000], close=True)
    await _offset_becomes(pair, fid, 150_000)
    status, body, _ = await request(
        pair, "PATCH", f"/v1/files/{fid}", data=data[150_000:], headers={"Upload-Offset": "150000"}
    )
    assert status == 200 and body["sha256"] == hashlib.sha256(data).hexdigest()

    listing = set(os.listdir(files_dir(pair)))
    head = f"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 300000\r\n\r\n"
    await _raw(port, head, data[:100_000], close=True)
    for _ in range(100):  # the gateway removes the upload once it sees the hang-up
        await asyncio.sleep(0.01)
        if set(os.listdir(files_dir(pair))) == listing:
            break
    assert set(os.listdir(files_dir(pair))) == listing


async def test_a_stalled_part_is_408_and_keeps_what_arrived(pair: Pair) -> None:
    async with local_client(pair) as (client, uploads):
        uploads.part_timeout = 0.2
        h = auth(pair)
        r = await client.post("/v1/files", data=b"", headers={**h, "Upload-Length": "100"})
        fid = (await r.json())["file_id"]
        head = (
            f"PATCH /v1/files/{fid} HTTP/1.1\r\nHost: x\r\nAuthorization: {h['Authorization']}\r\n"
            "Upload-Offset: 0\r\nContent-Length: 100\r\n\r\n"
        )
        answer = await _raw(client.port or 0, head, b"a" * 40, close=False)
        status_line, _, rest = answer.partition(b"\r\n")
        assert b" 408 " in status_line, answer
        assert b"Upload-Offset: 40" in rest and b"http.body_timeout" in rest
        r = await client.head(f"/v1/files/{fid}", headers=h)
        assert r.headers["Upload-Offset"] == "40"


async def test_bytes_lost_behind_the_gateways_back_are_a_503_never_a_500(pair: Pair) -> None:
    status, body, _ = await request(pair, "POST", "/v1/files", data=b"abc", headers={"Upload-Length": "6"})
    fid = body["file_id"]
    await pair.lp.stop(US)  # the running digest is gone: the next part must re-read the bytes
    (files_dir(pair) / f"{fid}.data").unlink()
    await pair.lp.start(US)
    status, problem, _ = await request(pair, "PATCH", f"/v1/files/{fid}", data=b"def", headers={"Upload-Offset": "3"})
    assert (status, problem["code"]) == (503, "file.write_failed"), problem
    status, body, _ = await request(pair, "POST", "/v1/files", data=b"abc", headers={"Upload-Length": "6"})
    (files_dir(pair) / f"{body['file_id']}.data").unlink()  # while its running digest is held
    status, problem, _ = await request(
        pair, "PATCH", f"/v1/files/{body['file_id']}", data=b"def", headers={"Upload-Offset": "3"}
    )
    assert (status, problem["code"]) == (503, "file.write_failed"), problem


def test_a_files_directory_that_cannot_be_made_is_a_configuration_error(tmp_path: Path) -> None:
    from customs_gateway.core.clock import SystemClock, UUID7Source
    from customs_gateway.core.errors import ConfigError

    (tmp_path / "occupied").write_text("a file, not a directory")
    clock = SystemClock()
    days = DayKeys(tmp_path / "days", StoreKey(bytes(32)))
    files = tmp_path / "occupied" / "files"
    uploads = FileUploads(files, FilesConfig(), clock, UUID7Source(clock), wrap_key=bytes(32), day_keys=days)
    try:
        uploads.open()
    except ConfigError as e:
        assert e.field == "files.dir" and "cannot be created" in e.detail
    else:
        raise AssertionError("no ConfigError")
