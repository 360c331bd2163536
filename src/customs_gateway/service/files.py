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
another replica) the first part re-hashes the bytes held, streaming them in 1 MiB blocks in a
thread: sequential reading at disk speed, once per upload per restart, for a digest that is then
the plain SHA-256 the document names, with no second format to keep.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Final

import msgspec
import structlog

from ..core.clock import Clock, IdSource
from ..core.errors import ConfigError, GatewayError
from ..core.upload import UploadError, UploadRecord, check_declared_part, check_resume, overflow, room
from ..startup.config import FilesConfig

log = structlog.get_logger("customs_gateway.files")

#: Writes bytes to a file descriptor, as `os.write` (injected: tests make the disk fill up).
Writer = Callable[[int, bytes], int]
_REHASH_BLOCK: Final = 1 << 20
_DISK_FULL: Final = frozenset({errno.ENOSPC, errno.EDQUOT})


class PartInterrupted(GatewayError):
    """The client stopped sending a part (hung up, or stalled past the read timeout). The bytes
    that arrived are kept for a PATCH (resume from the offset held), dropped for a POST."""

    code = "http.client_closed"
    status = 400


def _disk_error(e: OSError) -> UploadError:
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
        write: Writer = os.write,
        part_timeout: float = 30.0,
    ) -> None:
        self.directory = directory
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

    def data_path(self, file_id: str) -> Path:
        """Where an upload's bytes are (an id already checked)."""
        return self._data(file_id)

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
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _remove(self, file_id: str) -> None:
        """Forget an upload: bytes first, then the record (a record without bytes is harmless)."""
        self._hashes.pop(file_id, None)
        for path in (self._data(file_id), self._meta(file_id), self.directory / f"{file_id}.json.tmp"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _write_all(self, fd: int, data: bytes) -> None:
        while data:
            data = data[self.write(fd, data) :]  # a short write (rare) copies the rest once

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
        rec = UploadRecord(self.ids.new_id(), owner, media_type, filename, length, 0, now, now)
        try:
            self._save(rec)
            os.close(os.open(self._data(rec.file_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            self._hashes[rec.file_id] = (0, hashlib.sha256())
            return await self.append(rec, 0, body, content_length, fresh=True)
        except OSError as e:
            self._remove(rec.file_id)
            raise _disk_error(e) from e
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
                raise _disk_error(e) from e
            if not fresh:  # a new upload (even one declared empty) takes its first part
                check_resume(rec, offset)
            check_declared_part(rec, content_length, self.config.max_file_bytes)
            return await self._receive(rec, hasher, room(rec, self.config.max_file_bytes), body, fresh)
        finally:
            self._busy.discard(rec.file_id)

    async def _receive(
        self, rec: UploadRecord, hasher: hashlib._Hash, limit: int, body: AsyncIterator[bytes], fresh: bool
    ) -> UploadRecord:
        start = hasher.copy()
        offset = rec.offset
        stopped: PartInterrupted | None = None
        try:
            fd = os.open(self._data(rec.file_id), os.O_WRONLY)
        except OSError as e:  # the bytes went missing behind the gateway's back
            log.warning("files.write_failed", file_id=rec.file_id, errno=e.errno)
            raise _disk_error(e) from e
        try:
            os.lseek(fd, offset, os.SEEK_SET)
            try:
                async for chunk in body:
                    if offset - rec.offset + len(chunk) > limit:
                        raise overflow(rec, self.config.max_file_bytes)
                    self._write_all(fd, chunk)
                    hasher.update(chunk)
                    offset += len(chunk)
            except PartInterrupted as e:
                if fresh:
                    raise
                stopped = e
            await asyncio.to_thread(os.fsync, fd)
            length = rec.length if rec.length is not None or stopped else offset
            done = length is not None and offset == length
            new = msgspec.structs.replace(
                rec,
                offset=offset,
                length=length,
                touched_at=self.clock.now(),
                sha256=hasher.hexdigest() if done else None,
            )
            self._save(new)
        except BaseException as e:
            # Nothing of this part is kept: the bytes are cut back, the digest is the one before.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, rec.offset)
            self._hashes[rec.file_id] = (rec.offset, start)
            if isinstance(e, OSError):
                log.warning("files.write_failed", file_id=rec.file_id, errno=e.errno)
                raise _disk_error(e) from e
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
        memory (a restart) is rebuilt from the bytes held; bytes past the recorded offset (a part
        cut short by a crash before its record) are cut off."""
        cached = self._hashes.get(rec.file_id)
        if cached is not None and cached[0] == rec.offset:
            return rec, cached[1]
        held, hasher = await asyncio.to_thread(self._rehash, rec.file_id, rec.offset)
        if held != rec.offset:  # the bytes are shorter than their record says: believe the bytes
            log.warning("files.offset_behind_record", file_id=rec.file_id, recorded=rec.offset, held=held)
            rec = msgspec.structs.replace(rec, offset=held, sha256=None)
            self._save(rec)
        self._hashes[rec.file_id] = (rec.offset, hasher)
        return rec, hasher

    def _rehash(self, file_id: str, offset: int) -> tuple[int, hashlib._Hash]:
        hasher = hashlib.sha256()
        held = 0
        with open(self._data(file_id), "r+b") as f:
            while held < offset and (block := f.read(min(_REHASH_BLOCK, offset - held))):
                hasher.update(block)
                held += len(block)
            if f.seek(0, os.SEEK_END) > held:
                f.truncate(held)
                os.fsync(f.fileno())
        return held, hasher

    # --- expiry ----------------------------------------------------------------------------

    def claim(self, file_ids: list[str], message_id: str) -> None:
        """Mark uploads as named by `message_id`: they no longer expire. An upload already named
        keeps its first message."""
        for file_id in file_ids:
            rec = self.get(file_id)
            if rec is not None and rec.named_by is None:
                self._save(msgspec.structs.replace(rec, named_by=message_id))

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

    async def run_sweeper(self) -> None:
        """Sweep every `files.sweep_every_seconds` until cancelled (a failure is logged, not fatal)."""
        while True:
            await asyncio.sleep(self.config.sweep_every_seconds)
            try:
                self.sweep(self.clock.now(), self.config.sweep_batch)
            except OSError:
                log.exception("files.sweep_failed")
