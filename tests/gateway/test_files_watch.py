"""Checking a file as it arrives (decision 0017): the sender announces the envelope before it
pushes the file, the receiver decrypts and hashes each part as it lands, and the envelope that
follows finds the file checked. The refusals are the same as when the file is checked whole
(`test_files_peer.test_the_receiver_refuses_a_file_that_does_not_match_its_document`); bytes the
checker read and that were cut back are never trusted."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from customs_gateway.core import filecrypt
from customs_gateway.core.errors import GatewayError
from customs_gateway.core.filecrypt import FileDigest, FileError
from customs_gateway.core.upload import UploadError
from customs_gateway.service import peer_files

from .conftest import CN, US, Pair, sample
from .test_files_peer import FID, KEY, KEY_B64, _body, download, peer_files_in, peer_ssl, sealed, submit_guide, upload
from .test_files_upload import MB, pattern

S = filecrypt.SEALED


def _whole_reads_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    """`check` may not read the file whole: only the watch's digest can pass it."""

    def refuse(*_: object) -> Any:
        raise AssertionError("the file was read whole")

    monkeypatch.setattr(peer_files, "ahead", refuse)


def test_a_watched_file_is_checked_part_by_part_and_the_check_reads_nothing_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = pattern(40 * 65536 + 123, seed=11)
    digest = hashlib.sha256(data).hexdigest()
    c = sealed(data, KEY)
    files = peer_files_in(tmp_path)
    assert files.watch(FID, len(data), digest, KEY_B64)  # before a byte has arrived
    w = files._watches[FID]
    cuts = [0, 3 * S + 5, 700_000, 1_900_000, len(c)]
    for a, b in itertools.pairwise(cuts):
        asyncio.run(files.receive(FID, a, b, len(c), _body(c[a:b], 30_000)))
        assert w.job is not None
        w.job.result()  # the checker thread's job for this part
        files._advance(FID, w)  # and anything that landed while it ran
        assert w.index == (w.chunks if b == len(c) else b // S), (a, b)
        assert not w.failed and w.valid
    _whole_reads_fail(monkeypatch)
    files.check(FID, len(data), digest, KEY_B64)
    rec = files.get(FID)
    assert rec is not None and rec.verified_sha256 == digest
    assert FID not in files._watches


def test_a_watch_under_other_terms_is_not_used(tmp_path: Path) -> None:
    data = pattern(5 * 65536, seed=12)
    digest = hashlib.sha256(data).hexdigest()
    c = sealed(data, KEY)
    files = peer_files_in(tmp_path)
    assert files.watch(FID, len(data), digest, KEY_B64)
    asyncio.run(files.receive(FID, 0, len(c), len(c), _body(c, 50_000)))
    other_key = "B" * 43  # 32 bytes, not the file's key
    with pytest.raises(FileError) as e:
        files.check(FID, len(data), digest, other_key)
    assert e.value.code == "file.auth_failed"
    files.check(FID, len(data), digest, KEY_B64)  # checked whole now: the watch was given up
    rec = files.get(FID)
    assert rec is not None and rec.verified_sha256 == digest


def test_bytes_the_checker_read_and_the_disk_then_refused_are_never_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part the disk refuses midway is cut back to its start; the sender sends it again, and
    this time its first chunk is altered. The checker had already read the first version of that
    chunk: had it gone on from there, the altered file would pass."""
    data = pattern(8 * 65536, seed=13)
    digest = hashlib.sha256(data).hexdigest()
    c = sealed(data, KEY)
    calls: list[int] = []
    real_write = peer_files.os.write

    def write(fd: int, piece: Any) -> int:
        calls.append(len(piece))
        if len(calls) == 3:  # part 2's second piece: its first piece (chunks 3, 4) was written
            files._advance(FID, files._watches[FID])  # ... and read by the checker
            assert files._watches[FID].index == 5
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, piece)

    files = peer_files_in(tmp_path, write=write)
    files.watch(FID, len(data), digest, KEY_B64)
    asyncio.run(files.receive(FID, 0, 3 * S, len(c), _body(c[: 3 * S], 3 * S)))
    with pytest.raises(UploadError) as e:
        asyncio.run(files.receive(FID, 3 * S, len(c), len(c), _body(c[3 * S :], 2 * S)))
    assert e.value.code == "file.disk_full"
    held = files.held(FID)
    assert held is not None and held.offset == 3 * S
    altered = bytearray(c)
    altered[3 * S + 10] ^= 1
    asyncio.run(files.receive(FID, 3 * S, len(c), len(c), _body(bytes(altered[3 * S :]), 2 * S)))
    with pytest.raises(FileError) as e2:
        files.check(FID, len(data), digest, KEY_B64)
    assert e2.value.code == "file.auth_failed"


def test_watches_are_bounded_and_forgotten_with_their_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peer_files, "WATCH_MAX", 2)
    files = peer_files_in(tmp_path)
    ids = [f"019ae8d0-6b3c-7c4a-9d2e-3f1a5b7c9d0{i}" for i in range(3)]
    assert files.watch(ids[0], 10, "00" * 32, KEY_B64)
    assert files.watch(ids[1], 10, "00" * 32, KEY_B64)
    assert not files.watch(ids[2], 10, "00" * 32, KEY_B64)  # beyond the bound: checked after instead
    assert not files.watch("not-a-file-id", 10, "00" * 32, KEY_B64)
    w = files._watches[ids[0]]
    files.dispose([ids[0]])
    assert ids[0] not in files._watches and not w.valid
    files.close()
    assert not files._watches


# --- between two real gateways -------------------------------------------------------------------


def announce_url(pair: Pair) -> str:
    return f"https://127.0.0.1:{pair.lp.homes[CN].peer_port}/peer/v1/announce"


async def test_an_announced_file_is_checked_as_it_arrives_and_its_envelope_finds_it_checked(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = pattern(12 * MB, seed=21)
    fid = await upload(pair, data)
    receiver = pair.gw(CN).peer_files
    found: list[FileDigest | None] = []
    real = receiver._watched

    def watched(file_id: str, terms: tuple[int, str, str]) -> FileDigest | None:
        got = real(file_id, terms)
        found.append(got)
        return got

    monkeypatch.setattr(receiver, "_watched", watched)
    mid = await submit_guide(pair, fid)
    m = await pair.apis[US].wait_status(mid, {"delivered"}, timeout=60)
    assert m["status"] == "delivered"
    assert len(found) == 1 and found[0] is not None  # the envelope found the file checked
    status, _, got, n = await download(pair, f"/v1/inbox/{mid}/files/{fid}")
    assert status == 200 and n == len(data) and got == hashlib.sha256(data).hexdigest()


async def test_only_messages_that_name_files_are_announced(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """A seizure-share may name files but most do not: announcing those made the peer open every
    such envelope twice (once announced, once delivered) for nothing."""
    announced: list[int] = []
    real = pair.gw(CN).announce

    async def counting(raw: bytes) -> list[str]:
        announced.append(len(json.loads(raw)["envelopes"]))
        return list(await real(raw))

    monkeypatch.setattr(pair.gw(CN), "announce", counting)
    plain = []
    for _ in range(3):
        status, res = await pair.apis[US].submit("seizure-share", body=sample("seizure-share"))
        assert status == 202, res
        plain.append(str(res["id"]))
    for mid in plain:
        assert (await pair.apis[US].wait_status(mid, {"delivered"}, timeout=30))["status"] == "delivered"
    assert announced == []
    fid = await upload(pair, pattern(MB, seed=23))
    body = {
        **sample("seizure-share"),
        "files": [{"file_id": fid, "filename": "p.pdf", "media_type": "application/pdf"}],
    }
    status, res = await pair.apis[US].submit("seizure-share", body=body)
    assert status == 202, res
    assert (await pair.apis[US].wait_status(str(res["id"]), {"delivered"}, timeout=30))["status"] == "delivered"
    assert announced == [1]


async def test_a_peer_that_cannot_take_announcements_still_gets_the_file_checked_whole(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def busy(raw: bytes) -> list[str]:
        raise GatewayError("busy", code="peer.busy", status=503)

    monkeypatch.setattr(pair.gw(CN), "announce", busy)
    data = pattern(3 * MB, seed=22)
    fid = await upload(pair, data)
    mid = await submit_guide(pair, fid)
    m = await pair.apis[US].wait_status(mid, {"delivered"}, timeout=60)
    assert m["status"] == "delivered"
    status, _, got, _ = await download(pair, f"/v1/inbox/{mid}/files/{fid}")
    assert status == 200 and got == hashlib.sha256(data).hexdigest()


async def test_the_announce_route_refuses_bad_requests_with_clear_problems(pair: Pair) -> None:
    async with aiohttp.ClientSession() as session:

        async def post(body: bytes, ctype: str = "application/json") -> tuple[int, Any]:
            h = {"Content-Type": ctype}
            async with session.post(announce_url(pair), data=body, headers=h, ssl=peer_ssl(pair)) as r:
                return r.status, await r.json(content_type=None)

        status, prob = await post(b'{"envelopes": []}')
        assert status == 400 and prob["field"] == "$.envelopes", prob
        status, prob = await post(b"not json")
        assert 400 <= status < 500 and prob["code"].startswith("decode."), prob
        status, prob = await post(b'{"envelopes": [{}]}', "text/plain")
        assert status == 415 and prob["field"] == "Content-Type", prob
        # An envelope that does not open is ignored (its delivery is refused), nothing watched.
        status, res = await post(b'{"envelopes": [{"v": 1, "header": "x", "ciphertext": "y", "signature": "z"}]}')
        assert status == 200 and res == {"watching": []}, res
        assert not pair.gw(CN).peer_files._watches
    async with aiohttp.ClientSession() as session:  # no pinned client certificate: no connection
        with pytest.raises(aiohttp.ClientError):
            async with session.post(announce_url(pair), data=b"{}", ssl=False) as r:
                await r.read()
