"""Files at rest (DESIGN §12 "At rest", §13; decision 0016): an upload never lands on the sender's
disk in clear, the receiver keeps only STREAM ciphertext, a download is an audit entry, and
disposal (the day key destroyed, the files deleted) leaves nothing readable. Real gateways on
loopback for the pair tests; the upload store alone, on a temporary directory, for the rest."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import os
from pathlib import Path
from typing import Any

import msgspec
import pytest

from customs_gateway.core import atrest, filerest
from customs_gateway.core.audit import AuditEntry
from customs_gateway.core.clock import FixedClock, UUID7Source
from customs_gateway.core.encoding import b64url, unb64url
from customs_gateway.core.filecrypt import CHUNK
from customs_gateway.core.storekey import StoreKey
from customs_gateway.service.files import FileUploads
from customs_gateway.startup.config import FilesConfig
from customs_gateway.startup.daykeys import DayKeys
from customs_gateway.store.sealed import retention_day

from .conftest import CN, US, Pair
from .test_at_rest_scan import NEEDLE, forms
from .test_files_peer import download, sent_file, submit_guide
from .test_files_upload import chunks, files_dir

T0 = dt.datetime(2026, 12, 4, 9, 0, tzinfo=dt.timezone.utc)


def needled(size: int) -> bytes:
    """`size` bytes with the needle every 1000 bytes, in full chunks and in the last, partial one."""
    unit = NEEDLE + bytes(1000 - len(NEEDLE))
    return (unit * (size // len(unit) + 1))[:size]


def held_under(directory: Path) -> bytes:
    """Every file under `directory` (data, records, temporaries), as on disk."""
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


def assert_no_needle(directory: Path) -> None:
    held = held_under(directory)
    assert held, directory
    for form in forms(NEEDLE):
        assert form not in held, f"{directory} holds {form!r} in clear"


async def downloads(pair: Pair, name: str, message_id: str) -> list[AuditEntry]:
    store = pair.gw(name).store
    size, _ = await store.audit_head()
    entries = [AuditEntry.from_bytes(data) for _, data in await store.audit_entries(0, size)]
    return [e for e in entries if e.kind == "file_downloaded" and e.message_id == message_id]


async def test_no_file_byte_is_on_either_disk_in_clear_and_downloads_are_audited(pair: Pair) -> None:
    data = needled(3 * CHUNK + 12_345)
    us = pair.apis[US]
    status, res, _ = await us.call(
        "POST",
        "/v1/files?filename=guide.pdf",
        data=data[:100_001],  # a first part ending inside a chunk: its tail is in the record
        headers={"Content-Type": "application/pdf", "Upload-Length": str(len(data))},
    )
    assert status == 201, res
    fid = res["file_id"]
    assert_no_needle(files_dir(pair, US))
    status, res, _ = await us.call(
        "PATCH", f"/v1/files/{fid}", data=data[100_001:], headers={"Upload-Offset": "100001"}
    )
    assert status == 200 and res["sha256"] == hashlib.sha256(data).hexdigest(), res
    mid = await submit_guide(pair, fid)
    await us.wait_status(mid, {"delivered"})
    rec = pair.gw(US).files.get(fid)
    assert rec is not None and rec.key_sealed is not None and rec.key_wrapped is None  # under the day key now

    status, _, got, n = await download(pair, f"/v1/inbox/{mid}/files/{fid}", {"Range": "bytes=70000-"})
    assert status == 206 and got == hashlib.sha256(data[70_000:]).hexdigest() and n == len(data) - 70_000
    status, _, got, n = await download(pair, f"/v1/messages/{mid}/files/{fid}")
    assert status == 200 and got == hashlib.sha256(data).hexdigest() and n == len(data)
    for name in (US, CN):
        assert_no_needle(files_dir(pair, name))
    assert (files_dir(pair, CN) / "peer" / f"{fid}.data").exists()

    f = await sent_file(pair, mid)
    [got_in] = await downloads(pair, CN, mid)
    assert got_in.actor.startswith("token:") and got_in.actor[6:] in pair.apis[CN].tokens["agency"]
    assert got_in.peer == US
    assert got_in.detail == {"file_id": fid, "range": f"70000-{len(data) - 1}", "size": len(data)}
    assert got_in.digests == {"file": f.sha256}
    [got_out] = await downloads(pair, US, mid)
    assert got_out.detail["range"] == f"0-{len(data) - 1}" and got_out.peer == CN
    assert b"key" not in got_in.to_bytes() and f.key.encode() not in got_in.to_bytes()


async def test_disposal_leaves_a_files_copies_unreadable_and_then_deletes_them(pair: Pair) -> None:
    data = needled(CHUNK + 10)
    fid = await pair.apis[US].upload(data)
    mid = await submit_guide(pair, fid)
    await pair.apis[US].wait_status(mid, {"delivered"})
    us, cn = pair.gw(US), pair.gw(CN)
    m = await us.store.get_message(mid)
    backup = held_under(files_dir(pair, US))  # what a backup of the files directory holds
    us.day_keys.destroy(retention_day(m.retain_until, m.created_at))
    with pytest.raises(atrest.Disposed):
        us.files.chunks(fid)  # the upload key was sealed under the message's day key
    assert all(form not in backup for form in forms(NEEDLE))

    assert us.files.dispose([fid, "not-an-id"]) == 1
    assert us.files.dispose([fid]) == 0  # idempotent
    assert not list(files_dir(pair, US).glob(f"{fid}.*"))
    assert cn.peer_files.dispose([fid]) == 1 and cn.peer_files.dispose([fid]) == 0
    assert not list((files_dir(pair, CN) / "peer").glob(f"{fid}.*"))
    status, _, _, _ = await download(pair, f"/v1/inbox/{mid}/files/{fid}")
    assert status == 410
    assert not await downloads(pair, CN, mid)  # nothing was served: no entry


# --- the upload store alone --------------------------------------------------------------------


def _uploads(tmp_path: Path, **kw: Any) -> FileUploads:
    clock = FixedClock(T0)
    days = DayKeys(tmp_path / "days", StoreKey(bytes(range(32))))
    return FileUploads(
        tmp_path / "files", FilesConfig(), clock, UUID7Source(clock), wrap_key=bytes(range(1, 33)), day_keys=days, **kw
    )


async def _upload(uploads: FileUploads, parts: list[bytes]) -> str:
    total = sum(len(p) for p in parts)
    uploads.open()
    rec = await uploads.create("token", "application/pdf", None, total, chunks(parts[0]))
    for part in parts[1:]:
        rec = await uploads.append(rec, rec.offset, chunks(part))
    assert rec.complete
    return rec.file_id


@pytest.mark.parametrize("cuts", [[1], [CHUNK], [CHUNK - 1, CHUNK + 1], [5, CHUNK, 3 * CHUNK + 1], [3 * CHUNK + 7]])
async def test_parts_ending_anywhere_read_back_whole_and_after_a_restart(tmp_path: Path, cuts: list[int]) -> None:
    data = needled(3 * CHUNK + 7)
    parts = [data[a:b] for a, b in itertools.pairwise([0, *cuts, len(data)]) if b > a]
    uploads = _uploads(tmp_path)
    fid = await _upload(uploads, parts)
    assert b"".join(uploads.chunks(fid)) == data
    assert b"".join(uploads.plaintext(fid, CHUNK - 3, 2 * CHUNK + 4)) == data[CHUNK - 3 : 2 * CHUNK + 5]
    assert_no_needle(uploads.directory)
    assert os.path.getsize(uploads.directory / f"{fid}.data") == filerest.data_size(len(data))


async def test_a_resume_after_a_restart_decrypts_and_rehashes_what_is_held(tmp_path: Path) -> None:
    data = needled(2 * CHUNK + 500)
    first = _uploads(tmp_path)
    first.open()
    rec = await first.create("token", "application/pdf", None, len(data), chunks(data[: CHUNK + 100]))
    with open(first.directory / f"{rec.file_id}.data", "ab") as f:
        f.write(b"a record half written by a crash")
    again = _uploads(tmp_path)  # a restart: no running digest in memory
    held = again.get(rec.file_id)
    assert held is not None and held.offset == CHUNK + 100
    done = await again.append(held, held.offset, chunks(data[CHUNK + 100 :]))
    assert done.sha256 == hashlib.sha256(data).hexdigest()
    assert b"".join(again.chunks(rec.file_id)) == data


async def test_records_that_were_altered_moved_or_cut_do_not_read(tmp_path: Path) -> None:
    uploads = _uploads(tmp_path)
    a = await _upload(uploads, [needled(3 * CHUNK + 9)])
    b = await _upload(uploads, [needled(3 * CHUNK + 9)])
    path_a, path_b = (uploads.directory / f"{x}.data" for x in (a, b))
    original = path_a.read_bytes()
    R = filerest.RECORD

    def reads(fid: str) -> str:
        try:
            b"".join(uploads.chunks(fid))
        except filerest.FileRestError as e:
            return e.code
        return "ok"

    assert reads(a) == "ok"
    path_a.write_bytes(original[:100] + bytes([original[100] ^ 1]) + original[101:])  # a byte changed
    assert reads(a) == "file.at_rest_auth_failed"
    path_a.write_bytes(original[R : 2 * R] + original[:R] + original[2 * R :])  # two chunks swapped
    assert reads(a) == "file.at_rest_auth_failed"
    path_a.write_bytes(path_b.read_bytes()[:R] + original[R:])  # a chunk of another upload
    assert reads(a) == "file.at_rest_auth_failed"
    path_a.write_bytes(original[:-1])  # cut short
    assert reads(a) == "file.at_rest_truncated"
    path_a.write_bytes(original)
    rec_a, rec_b = uploads.get(a), uploads.get(b)
    assert rec_a is not None and rec_b is not None
    uploads._save(msgspec.structs.replace(rec_a, tail=rec_b.tail))  # another upload's last chunk
    assert reads(a) == "file.at_rest_auth_failed"
    uploads._save(msgspec.structs.replace(rec_a, key_wrapped=rec_b.key_wrapped))  # another upload's key
    assert reads(a) == "file.at_rest_auth_failed"
    other = filerest.wrap_upload_key(bytes(32), a, bytes(32), bytes(24))  # wrapped under another store key
    uploads._save(msgspec.structs.replace(rec_a, key_wrapped=b64url(other)))
    assert reads(a) == "file.at_rest_auth_failed"
    assert unb64url(rec_a.key_wrapped or "") != other


async def test_a_claimed_uploads_key_moves_under_the_day_key_and_dies_with_it(tmp_path: Path) -> None:
    uploads = _uploads(tmp_path)
    fid = await _upload(uploads, [needled(1000)])
    day = dt.date(2031, 3, 1)
    uploads.claim([fid], "019ae8d0-6b3c-7c4a-9d2e-3f1a5b7c9d01", day)
    rec = uploads.get(fid)
    assert rec is not None and rec.key_wrapped is None and rec.key_sealed is not None
    assert atrest.sealed_day(unb64url(rec.key_sealed)) == day
    assert b"".join(uploads.chunks(fid)) == needled(1000)
    assert isinstance(uploads.day_keys, DayKeys) and uploads.day_keys.destroy(day)
    with pytest.raises(atrest.Disposed):
        uploads.chunks(fid)
