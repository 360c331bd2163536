"""Files between two real gateways (DESIGN §13, issue 19): the ciphertext goes ahead of the envelope
over the mutual-TLS peer link, resumes where it broke (across a restart), is checked whole before
the message enters the inbox, streams out decrypted with Range, and memory stays flat."""

from __future__ import annotations

import asyncio
import errno
import functools
import hashlib
import os
import ssl
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from customs_gateway.core import docfiles, filecrypt
from customs_gateway.core.bundle import PeerKeys
from customs_gateway.core.clock import SystemClock
from customs_gateway.core.envelope import SignedDocument
from customs_gateway.core.errors import GatewayError
from customs_gateway.core.filecrypt import FileError
from customs_gateway.core.receipt import Statement, verify_refusal
from customs_gateway.core.upload import UploadError
from customs_gateway.service import peer_files, tls
from customs_gateway.service.peer_files import PART, MissingFile, PartMaker, PeerFiles, Progress, push
from customs_gateway.startup.config import FilesConfig

from .conftest import CN, US, Pair, sample
from .test_files_upload import MB, chunks, pattern


def peer_ssl(pair: Pair) -> ssl.SSLContext:
    us = pair.gw(US)
    return tls.client_context(
        us.identity.tls_cert_pem, us.identity.tls_key_pem, us.peer.bundle.tls_certificate.encode()
    )


def file_url(pair: Pair, file_id: str) -> str:
    return f"https://127.0.0.1:{pair.lp.homes[CN].peer_port}/peer/v1/files/{file_id}"


async def upload(pair: Pair, data: bytes) -> str:
    status, res, _ = await pair.apis[US].call(
        "POST", "/v1/files?filename=guide.pdf", data=chunks(data), headers={"Content-Type": "application/pdf"}
    )
    assert status == 201, res
    return str(res["file_id"])


async def submit_guide(pair: Pair, file_id: str) -> str:
    body = {
        **sample("training-material"),
        "files": [{"file_id": file_id, "filename": "培训指南.pdf", "media_type": "application/pdf"}],
    }
    status, res = await pair.apis[US].submit("training-material", body=body)
    assert status == 202, res
    return str(res["id"])


async def sent_file(pair: Pair, message_id: str) -> docfiles.SealedFile:
    m = await pair.gw(US).store.get_message(message_id)
    (f,) = docfiles.sealed_files(m.type, SignedDocument.from_bytes(m.signed_document).document_bytes)
    return f


async def download(pair: Pair, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, str, int]:
    """Status, headers, SHA-256 (hex) and length of a download, read in pieces."""
    api = pair.apis[CN] if path.startswith("/v1/inbox") else pair.apis[US]
    h = {"Authorization": f"Bearer {api.tokens['agency']}", **(headers or {})}
    digest, n = hashlib.sha256(), 0
    async with api.session.get(api.url + path, headers=h) as r:
        async for piece in r.content.iter_chunked(65536):
            digest.update(piece)
            n += len(piece)
        return r.status, r.headers, digest.hexdigest(), n


async def test_tens_of_megabytes_cross_whole_with_flat_memory_and_stream_out_with_range(pair: Pair) -> None:
    data = pattern(40 * MB, seed=7)
    want = hashlib.sha256(data).hexdigest()
    fid = await upload(pair, data)
    tracemalloc.start()
    try:
        mid = await submit_guide(pair, fid)
        m = await pair.apis[US].wait_status(mid, {"delivered"}, timeout=120)
        status, headers, got, n = await download(pair, f"/v1/inbox/{mid}/files/{fid}")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert m["status"] == "delivered"
    assert status == 200 and n == len(data) and got == want
    assert headers["Content-Type"] == "application/pdf" and headers["Digest-SHA256"] == want
    assert "UTF-8''" in headers["Content-Disposition"]
    assert peak < 10 * MB, f"peak {peak} bytes while sending, checking and serving {len(data)}"
    # What crossed is ciphertext: the receiver's copy is not the plaintext.
    held = pair.gw(CN).peer_files.directory / f"{fid}.data"
    assert held.stat().st_size == filecrypt.ciphertext_size(len(data))
    with open(held, "rb") as fh:
        assert fh.read(65536) != data[:65536]
    # Ranges, across chunk boundaries, and the sender's copy.
    first, last = 65536 - 10, 3 * 65536 + 5
    status, headers, got, n = await download(pair, f"/v1/inbox/{mid}/files/{fid}", {"Range": f"bytes={first}-{last}"})
    assert status == 206 and headers["Content-Range"] == f"bytes {first}-{last}/{len(data)}"
    assert got == hashlib.sha256(data[first : last + 1]).hexdigest() and n == last - first + 1
    status, _, got, _ = await download(pair, f"/v1/inbox/{mid}/files/{fid}", {"Range": "bytes=-100"})
    assert status == 206 and got == hashlib.sha256(data[-100:]).hexdigest()
    status, _, got, _ = await download(pair, f"/v1/messages/{mid}/files/{fid}", {"Range": "bytes=1000-"})
    assert status == 206 and got == hashlib.sha256(data[1000:]).hexdigest()
    status, _, got, _ = await download(pair, f"/v1/messages/{mid}/files/{fid}")
    assert status == 200 and got == want
    # Bad ranges and unknown files are clear problems, never a 500.
    api = pair.apis[CN]
    for rng in ("bytes=99999999999-", "bytes=5-2", "lines=1-2"):
        status, prob, _ = await api.call("GET", f"/v1/inbox/{mid}/files/{fid}", headers={"Range": rng})
        assert status == 416 and prob["code"] == "file.range" and prob["field"] == "Range", prob
    status, prob, _ = await api.call("GET", f"/v1/inbox/{mid}/files/{mid}")
    assert status == 404 and prob["code"] == "file.not_found", prob


async def test_a_download_the_client_leaves_midway_ends_cleanly_and_the_next_is_whole(pair: Pair) -> None:
    data = pattern(6 * MB + 123, seed=8)
    fid = await upload(pair, data)
    mid = await submit_guide(pair, fid)
    await pair.apis[US].wait_status(mid, {"delivered"}, timeout=60)
    api = pair.apis[CN]
    h = {"Authorization": f"Bearer {api.tokens['agency']}"}
    for _ in range(3):  # read one piece (the server is batches ahead), then hang up
        async with (
            aiohttp.ClientSession() as session,
            session.get(api.url + f"/v1/inbox/{mid}/files/{fid}", headers=h) as r,
        ):
            assert r.status == 200
            assert len(await r.content.readexactly(100_000)) == 100_000
    first, last = 3 * 65536 - 7, 5 * MB + 3
    status, _, got, n = await download(pair, f"/v1/inbox/{mid}/files/{fid}", {"Range": f"bytes={first}-{last}"})
    assert status == 206 and n == last - first + 1 and got == hashlib.sha256(data[first : last + 1]).hexdigest()
    status, _, got, n = await download(pair, f"/v1/inbox/{mid}/files/{fid}")
    assert status == 200 and n == len(data) and got == hashlib.sha256(data).hexdigest()


async def test_a_transfer_broken_midway_resumes_after_a_restart_sending_little_twice(pair: Pair) -> None:
    data = pattern(32 * MB, seed=3)
    fid = await upload(pair, data)
    worker = pair.lp.servers[US].worker
    await worker.stop()  # the envelope waits while this test breaks the first transfer
    mid = await submit_guide(pair, fid)
    f = await sent_file(pair, mid)
    total = filecrypt.ciphertext_size(f.size)
    # The sender's own push, cut off by the receiver going down in the middle of a part.
    first = Progress()
    async with aiohttp.ClientSession() as session:
        path = functools.partial(pair.gw(US).files.chunks, fid)
        task = asyncio.create_task(
            push(session, file_url(pair, fid), peer_ssl(pair), path, f.key, f.size, progress=first)
        )
        while first.sent < 13 * MB:
            await asyncio.sleep(0.002)
        began = asyncio.get_running_loop().time()
        await pair.lp.stop(CN)
        # The part arriving is cut at the stop, keeping what arrived (PeerFiles.cut_parts), not
        # waited for until the body read times out (30 s).
        assert asyncio.get_running_loop().time() - began < 10
        # The receiver going down either drops the connection or, when its handler sees the
        # cut-off part first, answers it 400 `file.part_interrupted` (timing: both are a broken push).
        with pytest.raises((aiohttp.ClientError, OSError, GatewayError)) as broken:
            await task
        if isinstance(broken.value, GatewayError):
            assert broken.value.code == "file.push_failed", broken.value
    await pair.lp.start(CN)
    held = pair.gw(CN).peer_files.get(fid)
    # At most the part in flight is lost with the connection; what arrived before it is held.
    assert held is not None and first.sent - PART <= held.offset <= first.sent and not held.complete
    await worker.start()
    m = await pair.apis[US].wait_status(mid, {"delivered"}, timeout=120)
    assert m["status"] == "delivered"
    resent = worker.file_progress.sent
    assert resent == total - held.offset
    # Sent twice: what sat in the socket buffers and the receiver's unread part when it stopped,
    # never more than the part in flight. Loopback buffers alone can hold several MiB (3.4 MB once
    # in a clean-clone run), so the bound is the part, not a fraction of the file.
    assert first.sent + resent - total <= PART < total - PART, (first.sent, resent, total)
    status, _, got, n = await download(pair, f"/v1/inbox/{mid}/files/{fid}")
    assert status == 200 and n == len(data) and got == hashlib.sha256(data).hexdigest()


def swapped(cipher: bytes) -> bytes:
    s = filecrypt.SEALED
    return cipher[s : 2 * s] + cipher[:s] + cipher[2 * s :]


def flipped(cipher: bytes) -> bytes:
    return cipher[:100] + bytes([cipher[100] ^ 1]) + cipher[101:]


def flipped_far_in(cipher: bytes) -> bytes:
    """A bit flipped in chunk 25: in the middle of the file, past the first block `check` reads."""
    at = 25 * filecrypt.SEALED + 100
    assert at > peer_files.BLOCK_CHUNKS * filecrypt.SEALED and at + 20 * filecrypt.SEALED < len(cipher)
    return cipher[:at] + bytes([cipher[at] ^ 1]) + cipher[at + 1 :]


@pytest.mark.parametrize(
    ("tamper", "size", "code"),
    [
        (swapped, 3 * 65536 + 10, "file.auth_failed"),
        (flipped, 3 * 65536 + 10, "file.auth_failed"),
        (flipped_far_in, 50 * 65536 + 10, "file.auth_failed"),  # several blocks of chunks
    ],
)
async def test_a_ciphertext_that_does_not_check_out_is_refused_and_never_enters_the_inbox(
    pair: Pair, tamper: Any, size: int, code: str
) -> None:
    data = pattern(size, seed=5)
    fid = await upload(pair, data)
    worker = pair.lp.servers[US].worker
    await worker.stop()
    mid = await submit_guide(pair, fid)
    f = await sent_file(pair, mid)
    parts = PartMaker(functools.partial(pair.gw(US).files.chunks, fid), f.key, f.size, 0)
    cipher = tamper(bytes(parts.take(parts.left)))
    async with (
        aiohttp.ClientSession() as session,
        session.put(
            file_url(pair, fid),
            data=cipher,
            headers={"Content-Range": f"bytes 0-{len(cipher) - 1}/{len(cipher)}"},
            ssl=peer_ssl(pair),
        ) as resp,
    ):
        assert resp.status == 204 and resp.headers["Upload-Offset"] == str(len(cipher))
    await worker.start()
    m = await pair.apis[US].wait_status(mid, {"refused"}, timeout=30)
    refusal = verify_refusal(
        Statement.from_dict("refusal", m["refusal"]),
        message_id=mid,
        sender=US,
        receiver=CN,
        key_for=PeerKeys(pair.lp.identity(CN).bundle.bundle).verify_key,
    )
    assert refusal.code == code and not refusal.retryable, refusal
    status, _, _ = await pair.apis[CN].call("GET", f"/v1/inbox/{mid}")
    assert status == 404
    rec = pair.gw(CN).peer_files.get(fid)
    assert rec is not None and rec.complete and rec.verified_sha256 is None and rec.message_id is None


async def test_the_peer_file_route_refuses_bad_parts_with_clear_problems(pair: Pair) -> None:
    fid = "019ae8d0-6b3c-7c4a-9d2e-3f1a5b7c9d0f"
    async with aiohttp.ClientSession() as session:

        async def put(body: bytes, content_range: str | None) -> tuple[int, Any, Any]:
            h = {"Content-Range": content_range} if content_range is not None else {}
            async with session.put(file_url(pair, fid), data=body, headers=h, ssl=peer_ssl(pair)) as r:
                return r.status, await r.json(content_type=None), r.headers

        status, prob, _ = await put(b"x", None)
        assert status == 422 and prob["field"] == "Content-Range", prob
        status, prob, _ = await put(b"x", "bytes 5-1/10")
        assert status == 422 and prob["code"] == "schema.range", prob
        status, prob, _ = await put(b"x", f"bytes 0-0/{1 << 60}")
        assert status == 413 and prob["code"] == "file.too_large", prob
        status, _, headers = await put(b"abc", "bytes 0-2/10")
        assert status == 204 and headers["Upload-Offset"] == "3"
        status, prob, headers = await put(b"abc", "bytes 0-2/10")
        assert status == 409 and prob["code"] == "file.offset_mismatch" and headers["Upload-Offset"] == "3"
        status, prob, _ = await put(b"abc", "bytes 3-5/11")
        assert status == 409 and prob["code"] == "file.length_changed", prob
        async with session.head(file_url(pair, fid), ssl=peer_ssl(pair)) as r:
            assert r.status == 200 and r.headers["Upload-Offset"] == "3" and r.headers["Upload-Length"] == "10"
    # Without the pinned client certificate there is no TLS connection at all.
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.put(file_url(pair, fid), data=b"x", ssl=False) as r:
                await r.read()


# --- the receiver's checks, one refusal each (no network) ----------------------------------------


def peer_files_in(tmp_path: Path, **kw: Any) -> PeerFiles:
    """A receiver's file directory in `tmp_path` (files up to 1 GiB), no network."""
    return PeerFiles(tmp_path, FilesConfig(max_file_bytes=1 << 30), SystemClock(), **kw)


def held(tmp_path: Path, cipher: bytes, file_id: str = "019ae8d0-6b3c-7c4a-9d2e-3f1a5b7c9d01") -> PeerFiles:
    files = peer_files_in(tmp_path)

    async def body() -> AsyncIterator[bytes]:
        yield cipher

    asyncio.run(files.receive(file_id, 0, len(cipher), len(cipher), body()))
    return files


def sealed(data: bytes, key: bytes) -> bytes:
    enc = filecrypt.Encryptor(key)
    return b"".join(enc.feed(data)) + enc.finish()


KEY = bytes(range(32))
KEY_B64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
FID = "019ae8d0-6b3c-7c4a-9d2e-3f1a5b7c9d01"


def cases() -> Iterator[tuple[str, bytes, int, str, str]]:
    data = pattern(200_000, seed=9)
    digest = hashlib.sha256(data).hexdigest()
    c = sealed(data, KEY)
    yield "truncated", c[: -filecrypt.SEALED + 1000], len(data), digest, "file.size_mismatch"
    yield (
        "last chunk dropped",
        c[: 3 * filecrypt.SEALED],
        3 * 65536,
        hashlib.sha256(data[: 3 * 65536]).hexdigest(),
        ("file.truncated"),
    )
    yield "reordered", swapped(c), len(data), digest, "file.auth_failed"
    yield "wrong size", c, len(data) - 1, digest, "file.size_mismatch"
    yield "wrong digest", c, len(data), "00" * 32, "file.digest_mismatch"
    other = pattern(200_000, seed=10)
    yield "other plaintext", sealed(other, KEY), len(data), digest, "file.digest_mismatch"


@pytest.mark.parametrize("watched", [False, True], ids=["whole", "watched"])
@pytest.mark.parametrize(("name", "cipher", "size", "digest", "code"), list(cases()), ids=[c[0] for c in cases()])
def test_the_receiver_refuses_a_file_that_does_not_match_its_document(
    tmp_path: Path, name: str, cipher: bytes, size: int, digest: str, code: str, watched: bool
) -> None:
    """Checked whole after the envelope, or part by part as it arrives after an announcement
    (decision 0017): the same refusal."""
    if watched:
        files = peer_files_in(tmp_path)
        files.watch(FID, size, digest, KEY_B64)
        for a in range(0, len(cipher), 100_000):
            b = min(a + 100_000, len(cipher))
            asyncio.run(files.receive(FID, a, b, len(cipher), _body(cipher[a:b], 40_000)))
    else:
        files = held(tmp_path, cipher)
    with pytest.raises(FileError) as e:
        files.check(FID, size, digest, KEY_B64)
    assert e.value.code == code, name
    rec = files.get(FID)
    assert rec is not None and rec.verified_sha256 is None


def test_a_file_not_all_here_is_a_retryable_refusal(tmp_path: Path) -> None:
    data = pattern(100_000)
    files = held(tmp_path, b"")
    with pytest.raises(MissingFile) as e:
        files.check("019ae8d0-6b3c-7c4a-9d2e-3f1a5b7c9d02", len(data), hashlib.sha256(data).hexdigest(), KEY_B64)
    assert e.value.code == "file.incomplete" and e.value.retryable


def test_a_good_file_checks_out_once_and_decrypts_any_range(tmp_path: Path) -> None:
    data = pattern(300_000, seed=4)
    files = held(tmp_path, sealed(data, KEY))
    files.check(FID, len(data), hashlib.sha256(data).hexdigest(), KEY_B64)
    rec = files.get(FID)
    assert rec is not None and rec.verified_sha256 == hashlib.sha256(data).hexdigest()
    for first, last in ((0, len(data) - 1), (65535, 65536), (131072, 131072), (299_000, len(data) - 1)):
        assert b"".join(files.plaintext(FID, KEY_B64, len(data), first, last)) == data[first : last + 1]


# --- the receiver's record: never ahead of what is fsync'd ---------------------------------------


def _body(data: bytes, piece: int = 700) -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        for i in range(0, len(data), piece):
            yield data[i : i + piece]

    return gen()


def test_the_record_counts_only_bytes_fsyncd_and_a_complete_file_before_its_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = peer_files_in(tmp_path)
    monkeypatch.setattr(peer_files, "COMMIT_EVERY", 5000)
    data = pattern(20_000, seed=21)
    synced: dict[str, int] = {}  # the size of the data file at its last fsync
    saved: list[tuple[int, int]] = []  # (record offset, bytes fsync'd) at each record saved
    real_fsync, real_save = os.fsync, files._save

    def fsync(fd: int) -> None:
        real_fsync(fd)
        name = os.readlink(f"/proc/self/fd/{fd}")
        if name.endswith(".data"):
            synced[FID] = os.fstat(fd).st_size

    def save(rec: peer_files.PeerFileRecord) -> None:
        saved.append((rec.offset, synced.get(rec.file_id, 0)))
        real_save(rec)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(files, "_save", save)

    async def send() -> None:
        for start in range(0, len(data), 2000):  # parts of 2000 bytes
            held = await files.receive(FID, start, start + 2000, len(data), _body(data[start : start + 2000]))
            assert held == start + 2000
            rec, now = files.get(FID), files.held(FID)
            assert rec is not None and now is not None and now.offset == held
            assert held - rec.offset < 5000 + 2000  # brought up to date every COMMIT_EVERY bytes
            if held == len(data):
                assert rec.complete  # before the answer that completes it

    asyncio.run(send())
    assert all(offset <= fsynced for offset, fsynced in saved), saved
    assert len(saved) < 10  # not one per part (10 parts): the first record, every 5000 bytes, the last
    assert (tmp_path / f"{FID}.data").read_bytes() == data


def test_written_bytes_are_flushed_behind_the_parts_without_moving_the_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = peer_files_in(tmp_path)
    monkeypatch.setattr(peer_files, "COMMIT_EVERY", 1 << 20)
    monkeypatch.setattr(peer_files, "FLUSH_EVERY", 3000)
    data = pattern(20_000, seed=24)
    flushed: list[int] = []  # the data file's size at each background flush
    real_flush = peer_files.flush_file

    def flush(path: Path) -> None:
        flushed.append(path.stat().st_size)
        real_flush(path)

    monkeypatch.setattr(peer_files, "flush_file", flush)

    async def send() -> None:
        for start in range(0, len(data) - 2000, 2000):  # all but the last part
            await files.receive(FID, start, start + 2000, len(data), _body(data[start : start + 2000]))
            state = files._writing[FID]
            if state.flushing is not None:
                await asyncio.wrap_future(state.flushing)  # one at a time: let it end
            rec = files.get(FID)
            assert rec is not None and rec.offset == 0  # a flush counts nothing

    asyncio.run(send())
    assert len(flushed) >= 4 and flushed == sorted(flushed), flushed
    assert all(size >= 3000 for size in flushed)


def test_a_record_that_landed_before_its_directory_sync_failed_keeps_its_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = peer_files_in(tmp_path)
    monkeypatch.setattr(peer_files, "COMMIT_EVERY", 4000)
    data = pattern(9000, seed=25)
    real_sync = files._sync_dir
    fail = [False]

    def sync_dir() -> None:
        if fail[0]:
            fail[0] = False
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_sync()

    monkeypatch.setattr(files, "_sync_dir", sync_dir)
    assert asyncio.run(files.receive(FID, 0, 3000, len(data), _body(data[:3000]))) == 3000
    fail[0] = True  # the next commit's rename lands, then the directory's fsync fails
    with pytest.raises(UploadError) as e:
        asyncio.run(files.receive(FID, 3000, 6000, len(data), _body(data[3000:6000])))
    assert e.value.status == 503
    rec = files.get(FID)
    assert rec is not None and rec.offset == 6000  # the record on disk is the new one ...
    assert (tmp_path / f"{FID}.data").read_bytes() == data[:6000]  # ... and its bytes are all there
    held = files.held(FID)
    assert held is not None and held.offset == 6000
    assert asyncio.run(files.receive(FID, 6000, len(data), len(data), _body(data[6000:]))) == len(data)
    assert (tmp_path / f"{FID}.data").read_bytes() == data


def test_after_a_crash_the_record_is_what_is_held_and_bytes_past_it_are_cut_off(tmp_path: Path) -> None:
    config = FilesConfig(max_file_bytes=1 << 30)
    files = PeerFiles(tmp_path, config, SystemClock())
    data = pattern(9000, seed=22)
    assert asyncio.run(files.receive(FID, 0, 3000, len(data), _body(data[:3000]))) == 3000
    assert asyncio.run(files.receive(FID, 3000, 6000, len(data), _body(data[3000:6000]))) == 6000
    rec = files.get(FID)
    assert rec is not None and rec.offset < 6000  # not fsync'd yet, so not counted

    again = PeerFiles(tmp_path, config, SystemClock())  # the process died: what it wrote is not counted
    held = again.held(FID)
    assert held is not None and held.offset == rec.offset
    with pytest.raises(peer_files.OffsetMismatch) as e:
        asyncio.run(again.receive(FID, 6000, 9000, len(data), _body(data[6000:])))
    assert e.value.held == rec.offset
    assert asyncio.run(again.receive(FID, rec.offset, len(data), len(data), _body(data[rec.offset :]))) == len(data)
    assert (tmp_path / f"{FID}.data").read_bytes() == data
    done = again.get(FID)
    assert done is not None and done.complete


def test_a_clean_stop_counts_what_was_written_and_disposal_forgets_it(tmp_path: Path) -> None:
    config = FilesConfig(max_file_bytes=1 << 30)
    files = PeerFiles(tmp_path, config, SystemClock())
    data = pattern(9000, seed=23)
    asyncio.run(files.receive(FID, 0, 4000, len(data), _body(data[:4000])))
    files.close()
    rec = files.get(FID)
    assert rec is not None and rec.offset == 4000
    asyncio.run(files.receive(FID, 4000, 5000, len(data), _body(data[4000:5000])))
    held = files.held(FID)
    assert held is not None and held.offset == 5000
    assert files.dispose([FID]) == 1 and files.held(FID) is None and not list(tmp_path.glob(f"{FID}.*"))
    # Sent again from the start after disposal: a new file, nothing of the old one in it.
    assert asyncio.run(files.receive(FID, 0, len(data), len(data), _body(data))) == len(data)
    assert (tmp_path / f"{FID}.data").read_bytes() == data


def test_a_stopping_receiver_refuses_a_part_that_starts_after_the_cut(tmp_path: Path) -> None:
    """`cut_parts` ends the parts arriving; a part that starts after it (on a kept-alive
    connection while the listener closes) is refused at once, 503 `file.stopping`, nothing
    written: otherwise the listener's shutdown would wait for it until the body read times out."""
    files = peer_files_in(tmp_path)
    data = pattern(3000, seed=31)
    asyncio.run(files.receive(FID, 0, 1000, len(data), _body(data[:1000])))
    files.cut_parts()
    with pytest.raises(UploadError) as e:
        asyncio.run(files.receive(FID, 1000, len(data), len(data), _body(data[1000:])))
    assert (e.value.code, e.value.status) == ("file.stopping", 503)
    held = files.held(FID)
    assert held is not None and held.offset == 1000
