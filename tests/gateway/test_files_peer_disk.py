"""The receiver's file directory under pressure (DESIGN §13, issue 19): a full disk while the peer
sends a file is a 503 that keeps nothing half-accepted, and ciphertexts no envelope came for are
removed after `files.peer_orphan_ttl_seconds` while those of accepted messages stay (they go with
the message, at disposal). Real gateways on loopback; the clock is injected and moved."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib

import aiohttp
import pytest

from customs_gateway.core import filecrypt
from customs_gateway.core.clock import JumpClock
from customs_gateway.core.errors import GatewayError
from customs_gateway.service.peer_files import PART, push

from .conftest import CN, US, Pair
from .test_files_peer import download, file_url, peer_ssl, sent_file, submit_guide, upload
from .test_files_upload import MB, DiskFull, pattern


async def _push(pair: Pair, message_id: str, file_id: str) -> None:
    f = await sent_file(pair, message_id)
    chunks = functools.partial(pair.gw(US).files.chunks, file_id)
    async with aiohttp.ClientSession() as session:
        await push(session, file_url(pair, file_id), peer_ssl(pair), chunks, f.key, f.size)


async def test_a_full_disk_while_the_peer_sends_a_file_is_503_and_keeps_nothing_of_the_part(pair: Pair) -> None:
    data = pattern(PART + 3 * MB, seed=11)  # two parts
    fid = await upload(pair, data)
    worker = pair.lp.servers[US].worker
    await worker.stop()
    mid = await submit_guide(pair, fid)
    files = pair.gw(CN).peer_files
    files.write = DiskFull(PART + MB)  # the first part fits, the second fails halfway
    with pytest.raises(GatewayError) as e:
        await _push(pair, mid, fid)
    assert e.value.code == "file.push_failed" and "HTTP 503" in e.value.detail
    # The first part is held (the offset answered); the record on disk may be behind it, as it
    # counts only bytes fsync'd (every COMMIT_EVERY bytes, a broken part, a complete file).
    held, rec = files.held(fid), files.get(fid)
    assert held is not None and held.offset == PART and not held.complete
    assert rec is not None and rec.offset <= PART
    assert (files.directory / f"{fid}.data").stat().st_size == PART  # the half-written part is gone

    files.write = DiskFull(0)
    total = filecrypt.ciphertext_size(len(data))
    async with (
        aiohttp.ClientSession() as session,
        session.put(
            file_url(pair, fid),
            data=b"x" * 1000,
            headers={"Content-Range": f"bytes {PART}-{PART + 999}/{total}"},
            ssl=peer_ssl(pair),
        ) as r,
    ):
        problem = await r.json(content_type=None)
        assert r.status == 503 and r.headers["Content-Type"].startswith("application/problem+json")
        assert problem["code"] == "file.disk_full" and r.headers["Upload-Offset"] == str(PART), problem
    assert files.get(fid) == rec and files.held(fid) == held
    assert (files.directory / f"{fid}.data").stat().st_size == PART
    status, _, _ = await pair.apis[CN].call("GET", f"/v1/inbox/{mid}")
    assert status == 404  # no envelope entered with its file incomplete

    files.write = DiskFull(1 << 40)  # room again: the sender resumes from the offset held
    await worker.start()
    m = await pair.apis[US].wait_status(mid, {"delivered"}, timeout=60)
    assert m["status"] == "delivered"
    assert worker.file_progress.sent == total - PART
    status, _, got, n = await download(pair, f"/v1/inbox/{mid}/files/{fid}")
    assert status == 200 and n == len(data) and got == hashlib.sha256(data).hexdigest()


async def test_ciphertexts_no_envelope_came_for_expire_and_those_of_messages_stay(
    jump_pair: tuple[Pair, JumpClock],
) -> None:
    pair, clock = jump_pair
    orphan = "019ae8d0-6b3c-7c4a-9d2e-3f1a5b7c9d0e"  # a file whose envelope never comes
    async with (
        aiohttp.ClientSession() as session,
        session.put(
            file_url(pair, orphan), data=b"c" * 100, headers={"Content-Range": "bytes 0-99/100"}, ssl=peer_ssl(pair)
        ) as r,
    ):
        assert r.status == 204
    kept = await upload(pair, pattern(100_000, seed=13))
    kept_mid = await submit_guide(pair, kept)
    await pair.apis[US].wait_status(kept_mid, {"delivered"})
    files = pair.gw(CN).peer_files
    rec = files.get(kept)
    assert rec is not None and rec.message_id == kept_mid
    held = files.get(orphan)
    assert held is not None and held.message_id is None and held.complete

    ttl = pair.gw(CN).config.files.peer_orphan_ttl_seconds
    assert ttl == 86400.0  # the default: as an upload's
    clock.jump(dt.timedelta(seconds=ttl - 60))
    assert files.sweep(clock.now(), 100) == 0
    clock.jump(dt.timedelta(seconds=120))
    assert files.sweep(clock.now(), 100) == 1
    assert files.get(orphan) is None and not list(files.directory.glob(f"{orphan}.*"))
    clock.jump(dt.timedelta(days=400))
    assert files.sweep(clock.now(), 100) == 0 and files.get(kept) is not None  # the message's: until disposal
    # The sender keeps a claimed upload until disposal, whatever the time.
    assert pair.gw(US).files.sweep(clock.now(), 100) == 0
    assert pair.gw(US).files.get(kept) is not None
