"""Upload storage (DESIGN §13): file bytes streamed to disk, resumable, with flat memory.

Each upload is two files in the files directory: `<file_id>.data` (the bytes held) and
`<file_id>.json` (its `core.upload.UploadRecord`). The record sits beside the bytes rather than in
the store so that one rule keeps them consistent on any backend: the bytes of a part are fsync'd
before the record that counts them is replaced (write, fsync, rename, fsync the directory), so the
offset a record states is always held on disk; bytes past it (a crash mid-part) are cut off at
the next part. Whoever can read the bytes can read their record (one shared volume serves
several PostgreSQL replicas), and expiry needs no schema in two stores.

The SHA-256 of the whole file is computed as the bytes arrive. hashlib objects cannot be saved,
so a gateway keeps each upload's running hash in memory while it runs; after a restart (or on
another replica) the first part re-hashes the bytes held, decrypting them one 64 KiB record at a
time in a thread: sequential reading at disk speed, once per upload per restart, for a digest that is then
the plain SHA-256 the document names, with no second format to keep.

The bytes are never on disk in clear (`core.filerest`, decision 0016): each upload has a random
key, kept wrapped in its record (under the store's wrap key, then, once a message names it, under
that message's retention day key); the data file holds one sealed record per full 64 KiB chunk,
written once and never again, and the last, partial chunk is sealed into the JSON record, written
anew (a new nonce) with each part, so a part may end anywhere and the atomic record replacement
keeps the bytes counted and their tail consistent. Everything that reads an upload (the push to
the peer, the sender's download, the re-hash after a restart) decrypts chunk by chunk.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import errno
import hashlib
import os
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Final

import msgspec
import structlog

from ..core import filerest
from ..core.clock import Clock, IdSource
from ..core.encoding import b64url, unb64url
from ..core.errors import ConfigError, GatewayError
from ..core.filecrypt import CHUNK
from ..core.keys import RandBytes
from ..core.upload import FILE_ID, UploadError, UploadRecord, check_declared_part, check_resume, overflow, room
from ..startup.config import FilesConfig
from ..startup.keystore import fsync_dir
from ..store.sealed import DayKeyring

log = structlog.get_logger("customs_gateway.files")

#: Writes bytes to a file descriptor, as `os.write` (injected: tests make the disk fill up).
Writer = Callable[[int, bytes | memoryview], int]
_DISK_FULL: Final = frozenset({errno.ENOSPC, errno.EDQUOT})
#: An upload's bytes are hashed, sealed and written in blocks of about this size (sealed in a thread).
BLOCK: Final = 8 * CHUNK
#: While a part is written, its bytes are flushed to disk in the background every this many
#: bytes, so the fsync that ends the part has little left to wait for.
FLUSH_EVERY: Final = 32 * 1024 * 1024
_flusher = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="files-flush")


def flush_file(path: Path) -> None:
    """Write a file's dirty pages to disk (fdatasync) through a descriptor of its own, so the
    writer may close or cut its own meanwhile: a flush in the background, ahead of the fsync that
    counts the bytes. Best effort: an error or a file removed meanwhile is left to that fsync."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)


def upload_id_ok(file_id: str) -> bool:
    return FILE_ID.fullmatch(file_id) is not None


class PartInterrupted(GatewayError):
    """The client stopped sending a part (hung up, or stalled past the read timeout). The bytes
    that arrived are kept for a PATCH (resume from the offset held), dropped for a POST."""

    code = "http.client_closed"
    status = 400


def disk_error(e: OSError) -> UploadError:
    """The 503 refusal of a part the disk would not take (`file.disk_full`, else `file.write_failed`)."""
    if e.errno in _DISK_FULL:
        return UploadError(
            "the gateway's disk for files is full; nothing of this part was kept: retry later",
            code="file.disk_full",
            status=503,
        )
    return UploadError(
        f"the gateway could not write the file ({errno.errorcode.get(e.errno or 0, 'error')}); "
        "nothing of this part was kept: retry later",
        code="file.write_failed",
        status=503,
    )


class FileUploads:
    """The files directory: create uploads, append parts at the offset held, expire the idle."""

    def __init__(
        self,
        directory: Path,
        config: FilesConfig,
        clock: Clock,
        ids: IdSource,
        *,
        wrap_key: bytes,
        day_keys: DayKeyring,
        randbytes: RandBytes = os.urandom,
        write: Writer = os.write,
        part_timeout: float = 30.0,
    ) -> None:
        self.directory = directory
        self._wrap_key = wrap_key  # wraps the keys of uploads no message names yet
        self.day_keys = day_keys  # seal the keys of uploads a message names (its retention day)
        self.randbytes = randbytes
        self.part_timeout = part_timeout  # longest wait for the next piece of a part (the HTTP edge applies it)
        self.config = config
        self.clock = clock
        self.ids = ids
        self.write = write
        self._hashes: dict[str, tuple[int, hashlib._Hash]] = {}  # running digests, by file id
        self._busy: set[str] = set()  # uploads a request is writing now
        self._sweep_after = ""

    def open(self) -> None:
        """Create the directory (mode 0700) if it is missing; ConfigError if it cannot be."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise ConfigError(
                f"the files directory {self.directory} cannot be created: {e.strerror}", field="files.dir"
            ) from e

    def _data(self, file_id: str) -> Path:
        return self.directory / f"{file_id}.data"

    def _meta(self, file_id: str) -> Path:
        return self.directory / f"{file_id}.json"

    # --- records ---------------------------------------------------------------------------

    def get(self, file_id: str) -> UploadRecord | None:
        """The record of `file_id` (an id already checked by `core.upload.check_file_id`)."""
        try:
            raw = self._meta(file_id).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            log.warning("files.read_failed", file_id=file_id, errno=e.errno)
            raise UploadError(
                "the gateway could not read the upload's record: retry later", code="file.read_failed", status=503
            ) from e
        try:
            return msgspec.json.decode(raw, type=UploadRecord)
        except msgspec.DecodeError:
            log.warning("files.record_unreadable", file_id=file_id)
            return None

    def _save(self, rec: UploadRecord) -> None:
        """Replace the record atomically and durably (after the bytes it counts are fsync'd)."""
        tmp = self.directory / f"{rec.file_id}.json.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            self._write_all(fd, msgspec.json.encode(rec))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._meta(rec.file_id))
        self._sync_dir()

    def _sync_dir(self) -> None:
        fsync_dir(self.directory)

    def _remove(self, file_id: str) -> None:
        """Forget an upload: bytes first, then the record (a record without bytes is harmless)."""
        self._hashes.pop(file_id, None)
        for path in (self._data(file_id), self._meta(file_id), self.directory / f"{file_id}.json.tmp"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _write_all(self, fd: int, data: bytes | bytearray) -> None:
        view = memoryview(data)
        while view:
            view = view[self.write(fd, view) :]  # a short write (rare): the rest, no copy

    # --- upload ----------------------------------------------------------------------------

    async def create(
        self,
        owner: str,
        media_type: str,
        filename: str | None,
        length: int | None,
        body: AsyncIterator[bytes],
        content_length: int | None = None,
    ) -> UploadRecord:
        """A new upload owned by `owner`, with the first part from `body`. If anything fails,
        nothing of it is kept (the caller never learnt its id)."""
        now = self.clock.now()
        file_id = self.ids.new_id()
        key = self.randbytes(filerest.KEY_BYTES)
        wrapped = filerest.wrap_upload_key(self._wrap_key, file_id, key, self.randbytes(filerest.NONCE_BYTES))
        rec = UploadRecord(file_id, owner, media_type, filename, length, 0, now, now, key_wrapped=b64url(wrapped))
        try:
            self._save(rec)
            os.close(os.open(self._data(rec.file_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            self._hashes[rec.file_id] = (0, hashlib.sha256())
            return await self.append(rec, 0, body, content_length, fresh=True)
        except OSError as e:
            self._remove(rec.file_id)
            raise disk_error(e) from e
        except BaseException:
            self._remove(rec.file_id)
            raise

    async def append(
        self,
        rec: UploadRecord,
        offset: int,
        body: AsyncIterator[bytes],
        content_length: int | None = None,
        *,
        fresh: bool = False,
    ) -> UploadRecord:
        """Write the part in `body` at `offset`, which must be the offset held; returns the new
        record. A refusal (too long, disk full) keeps nothing of the part; a part the client
        stopped sending keeps what arrived (PartInterrupted is raised after it is recorded)."""
        if rec.file_id in self._busy:
            raise UploadError(
                f"another request is writing upload {rec.file_id}: ask HEAD for the offset held and resume",
                code="file.busy",
                status=409,
            )
        self._busy.add(rec.file_id)
        try:
            try:
                rec, hasher = await self._resume(rec)
            except OSError as e:
                log.warning("files.resume_failed", file_id=rec.file_id, errno=e.errno)
                raise disk_error(e) from e
            if not fresh:  # a new upload (even one declared empty) takes its first part
                check_resume(rec, offset)
            check_declared_part(rec, content_length, self.config.max_file_bytes)
            return await self._receive(rec, hasher, room(rec, self.config.max_file_bytes), body, fresh)
        finally:
            self._busy.discard(rec.file_id)

    def _seal(self, key: bytes, file_id: str, index: int, plain: bytes) -> bytes:
        return filerest.seal_chunk(key, file_id, index, plain, self.randbytes(filerest.NONCE_BYTES))

    async def _receive(
        self, rec: UploadRecord, hasher: hashlib._Hash, limit: int, body: AsyncIterator[bytes], fresh: bool
    ) -> UploadRecord:
        start = hasher.copy()
        offset = rec.offset
        stopped: PartInterrupted | None = None
        key = self.upload_key(rec)
        try:
            fd = os.open(self._data(rec.file_id), os.O_WRONLY)
        except OSError as e:  # the bytes went missing behind the gateway's back
            log.warning("files.write_failed", file_id=rec.file_id, errno=e.errno)
            raise disk_error(e) from e
        sink = _Sealer(self, fd, key, rec.file_id, filerest.full_chunks(rec.offset), self._tail(rec, key))
        # The event loop reads the body and hashes it a block at a time while a thread seals and
        # writes the block before (hashlib and the AEAD release the GIL, so the two overlap; a
        # second thread for the hash measured slower: twice the hand-offs).
        loop = asyncio.get_running_loop()
        busy: asyncio.Future[None] | None = None
        block = bytearray()
        try:
            os.lseek(fd, filerest.data_size(rec.offset), os.SEEK_SET)
            try:
                async for chunk in body:
                    if offset - rec.offset + len(chunk) > limit:
                        raise overflow(rec, self.config.max_file_bytes)
                    offset += len(chunk)
                    block += chunk
                    if len(block) >= BLOCK:
                        if busy is not None:
                            await busy
                        busy = loop.run_in_executor(None, sink.feed, block)
                        hasher.update(block)
                        block = bytearray()
            except PartInterrupted as e:
                if fresh:
                    raise
                stopped = e
            if busy is not None:
                await busy
            busy = None
            hasher.update(block)
            await asyncio.to_thread(sink.finish, block)
            length = rec.length if rec.length is not None or stopped else offset
            done = length is not None and offset == length
            new = msgspec.structs.replace(
                rec,
                offset=offset,
                length=length,
                touched_at=self.clock.now(),
                sha256=hasher.hexdigest() if done else None,
                tail=b64url(self._seal(key, rec.file_id, sink.index, bytes(sink.pending))) if sink.pending else None,
            )
            self._save(new)
        except BaseException as e:
            # Nothing of this part is kept: the records are cut back, the digest is the one before.
            if busy is not None:  # a thread cannot be stopped: let it end before cutting back
                with contextlib.suppress(BaseException):
                    await asyncio.shield(busy)
            with contextlib.suppress(OSError):
                os.ftruncate(fd, filerest.data_size(rec.offset))
            self._hashes[rec.file_id] = (rec.offset, start)
            if isinstance(e, OSError):
                log.warning("files.write_failed", file_id=rec.file_id, errno=e.errno)
                raise disk_error(e) from e
            raise
        finally:
            os.close(fd)
        if new.complete:
            self._hashes.pop(rec.file_id, None)
        else:
            self._hashes[rec.file_id] = (new.offset, hasher)
        if stopped is not None:
            raise stopped
        return new

    async def _resume(self, rec: UploadRecord) -> tuple[UploadRecord, hashlib._Hash]:
        """The record and running digest of an upload about to take a part. A digest not held in
        memory (a restart) is rebuilt from the records held; records past the recorded offset (a
        part cut short by a crash before its record) are cut off."""
        cached = self._hashes.get(rec.file_id)
        if cached is not None and cached[0] == rec.offset:
            return rec, cached[1]
        held, hasher = await asyncio.to_thread(self._rehash, rec)
        if held != rec.offset:  # the records are fewer than the record says: believe the bytes
            log.warning("files.offset_behind_record", file_id=rec.file_id, recorded=rec.offset, held=held)
            rec = msgspec.structs.replace(rec, offset=held, sha256=None, tail=None)
            self._save(rec)
        self._hashes[rec.file_id] = (rec.offset, hasher)
        return rec, hasher

    def _rehash(self, rec: UploadRecord) -> tuple[int, hashlib._Hash]:
        hasher = hashlib.sha256()
        key = self.upload_key(rec)
        full = filerest.full_chunks(rec.offset)
        with open(self._data(rec.file_id), "r+b") as f:
            held = min(full, f.seek(0, os.SEEK_END) // filerest.RECORD)
            for plain in self._read_chunks(f, key, rec.file_id, 0, held):
                hasher.update(plain)
            if held == full:
                hasher.update(self._tail(rec, key))
            if f.seek(0, os.SEEK_END) > held * filerest.RECORD:
                f.truncate(held * filerest.RECORD)
                os.fsync(f.fileno())
        return (rec.offset if held == full else held * CHUNK), hasher

    # --- reading -----------------------------------------------------------------------------

    def upload_key(self, rec: UploadRecord) -> bytes:
        """The upload's key, unwrapped: from the day key once a message names it (`Disposed`,
        410, after its day key was destroyed), else from the store's wrap key. FileRestError if
        it does not open."""
        if rec.key_sealed is not None:
            blob = unb64url(rec.key_sealed, field="key_sealed")
            return self.day_keys.open(filerest.key_context(rec.file_id), blob)
        if rec.key_wrapped is not None:
            return filerest.unwrap_upload_key(self._wrap_key, rec.file_id, unb64url(rec.key_wrapped, field="key"))
        raise filerest.FileRestError(
            f"upload {rec.file_id} has no key (written in clear by an older version): upload it again",
            code="file.at_rest_invalid",
        )

    def _tail(self, rec: UploadRecord, key: bytes) -> bytes:
        """The plaintext of the partial chunk the record holds (b"" on a chunk boundary)."""
        want = rec.offset % CHUNK
        if rec.tail is None:
            if want:
                raise filerest.FileRestError(f"upload {rec.file_id} lost its last chunk", code="file.at_rest_truncated")
            return b""
        plain = filerest.open_chunk(key, rec.file_id, filerest.full_chunks(rec.offset), unb64url(rec.tail))
        if len(plain) != want:
            raise filerest.FileRestError(
                f"the last chunk of upload {rec.file_id} is not the one its offset counts",
                code="file.at_rest_truncated",
            )
        return plain

    @staticmethod
    def _read_chunks(f: BinaryIO, key: bytes, file_id: str, first: int, stop: int) -> Iterator[bytes]:
        f.seek(first * filerest.RECORD)
        for index in range(first, stop):
            record = f.read(filerest.RECORD)
            if len(record) != filerest.RECORD:
                raise filerest.FileRestError(
                    f"chunk record {index} of upload {file_id} is cut short", code="file.at_rest_truncated"
                )
            yield filerest.open_chunk(key, file_id, index, record)

    def chunks(self, file_id: str, first: int = 0) -> Iterator[bytes]:
        """The plaintext of a complete upload, one 64 KiB chunk at a time from chunk `first`
        (the last may be shorter), decrypted as it is read. Raises UploadError `file.gone` (410)
        if the upload is gone or incomplete, FileRestError if a record does not open, `Disposed` once
        the message's day key was destroyed."""
        rec = self.get(file_id)
        if rec is None or not rec.complete:
            raise UploadError(f"upload {file_id} is no longer held", code="file.gone", status=410, field="file_id")
        return self._chunks(rec, self.upload_key(rec), first)  # the key now: a refusal before any byte

    def _chunks(self, rec: UploadRecord, key: bytes, first: int) -> Iterator[bytes]:
        full = filerest.full_chunks(rec.offset)
        with open(self._data(rec.file_id), "rb") as f:
            yield from self._read_chunks(f, key, rec.file_id, min(first, full), full)
        if first <= full and rec.offset % CHUNK:
            yield self._tail(rec, key)

    def plaintext(self, file_id: str, first: int, last: int) -> Iterator[bytes]:
        """Plaintext bytes `first..last` (inclusive) of a complete upload, chunk by chunk (raises
        as `chunks` does before the first byte)."""
        index = first // CHUNK
        return self._span(self.chunks(file_id, index), index, first, last)

    @staticmethod
    def _span(chunks: Iterator[bytes], index: int, first: int, last: int) -> Iterator[bytes]:
        for plain in chunks:
            base = index * CHUNK
            if base > last:
                return
            yield plain[max(first - base, 0) : last - base + 1]
            index += 1

    # --- expiry ----------------------------------------------------------------------------

    def claim(self, file_ids: list[str], message_id: str, day: dt.date) -> None:
        """Mark uploads as named by `message_id`: they no longer expire, and their key is sealed
        again under the day key of `day` (the message's retention day), so disposing of that day
        makes the file unreadable wherever a copy lies. An upload already named keeps its first
        message (and day)."""
        for file_id in file_ids:
            rec = self.get(file_id)
            if rec is not None and rec.named_by is None:
                key = self.upload_key(rec)
                sealed = self.day_keys.seal(day, filerest.key_context(file_id), key)
                self._save(
                    msgspec.structs.replace(rec, named_by=message_id, key_sealed=b64url(sealed), key_wrapped=None)
                )

    def hold(self, file_ids: Iterable[str], message_id: str, hold_id: bytes) -> int:
        """Seal the keys of the uploads `message_id` names again under the key of the legal hold
        `hold_id` (decision 0015), so they outlive the day key as the held message does; returns
        how many were moved."""
        moved = 0
        for file_id in file_ids:
            rec = self.get(file_id) if upload_id_ok(file_id) else None
            if rec is None or rec.named_by != message_id:
                continue
            key = self.upload_key(rec)
            sealed = self.day_keys.seal_held(hold_id, filerest.key_context(file_id), key)
            self._save(msgspec.structs.replace(rec, key_sealed=b64url(sealed), key_wrapped=None))
            moved += 1
        return moved

    def dispose(self, file_ids: Iterable[str]) -> int:
        """Delete the bytes and records of these uploads (a message's files at its disposal);
        idempotent; returns how many were held. The directory is fsync'd, so a disposal that
        returned stays done across a crash."""
        removed = 0
        for file_id in file_ids:
            if not upload_id_ok(file_id):
                continue
            removed += self._meta(file_id).exists() or self._data(file_id).exists()
            self._remove(file_id)
        if self.directory.is_dir():
            self._sync_dir()
        return removed

    def sweep(self, now: dt.datetime, limit: int) -> int:
        """Remove expired uploads, reading at most `limit` records a run (the next run goes on
        after the last one read, then starts over); returns how many were removed."""
        names = sorted(p.name[:-5] for p in self.directory.glob("*.json"))
        todo = [n for n in names if n > self._sweep_after][:limit]
        self._sweep_after = todo[-1] if len(todo) == limit else ""
        removed = 0
        for file_id in todo:
            rec = self.get(file_id)
            if file_id in self._busy or (rec is not None and not rec.expired(now, self.config.upload_ttl_seconds)):
                continue
            self._remove(file_id)
            removed += 1
        if removed:
            log.info("files.expired", removed=removed)
        return removed

    async def run_sweeper(self, *others: Callable[[dt.datetime, int], int]) -> None:
        """Sweep every `files.sweep_every_seconds` until cancelled, this directory and `others`
        (the peer's orphaned ciphertexts); a failure is logged, not fatal."""
        while True:
            await asyncio.sleep(self.config.sweep_every_seconds)
            for sweep in (self.sweep, *others):
                try:
                    sweep(self.clock.now(), self.config.sweep_batch)
                except OSError:
                    log.exception("files.sweep_failed")


class _Sealer:
    """The thread side of a part: seals every full chunk into its record and writes the records,
    block by block; the partial last chunk stays in `pending` (the caller seals it into the
    upload's record). One block at a time, in order."""

    def __init__(self, uploads: FileUploads, fd: int, key: bytes, file_id: str, index: int, pending: bytes) -> None:
        self.uploads = uploads
        self.fd = fd
        self.key = key
        self.file_id = file_id
        self.index = index  # the chunk `pending` starts
        self.pending = bytearray(pending)
        self._unflushed = 0
        self._flush: concurrent.futures.Future[None] | None = None

    def feed(self, block: bytes | bytearray) -> None:
        view = memoryview(block)
        if self.pending:  # complete the chunk the last block left partial
            take = CHUNK - len(self.pending)
            self.pending += view[:take]
            view = view[take:]
            if len(self.pending) < CHUNK:
                return
            first = memoryview(bytes(self.pending))
            self.pending.clear()
        else:
            first = view[:0]
        full = len(first) // CHUNK + len(view) // CHUNK
        out = bytearray(full * filerest.RECORD)  # the records, sealed in place: one write
        slots = memoryview(out)
        chunks = [first] if first else []
        chunks += [view[i * CHUNK : (i + 1) * CHUNK] for i in range(len(view) // CHUNK)]
        for n, plain in enumerate(chunks):
            nonce = self.uploads.randbytes(filerest.NONCE_BYTES)
            slot = slots[n * filerest.RECORD : (n + 1) * filerest.RECORD]
            filerest.seal_chunk_into(self.key, self.file_id, self.index, plain, nonce, slot)
            self.index += 1
        self.pending += view[len(view) // CHUNK * CHUNK :]
        if out:
            self.uploads._write_all(self.fd, out)
            self._unflushed += len(out)
            if self._unflushed >= FLUSH_EVERY and (self._flush is None or self._flush.done()):
                self._unflushed = 0
                self._flush = _flusher.submit(flush_file, self.uploads._data(self.file_id))

    def finish(self, block: bytes | bytearray) -> None:
        """The last bytes of the part, then fsync: the records are durable before the upload's
        record counts them."""
        if block:
            self.feed(block)
        os.fsync(self.fd)
