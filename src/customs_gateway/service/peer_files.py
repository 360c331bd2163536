"""Files between the gateways (DESIGN §13): the sender pushes each file's STREAM ciphertext to the
peer before the envelope that names it, resumably; the receiver holds the ciphertexts, checks one
against the document (decrypts, hashes) before the envelope enters the inbox, and decrypts it
again, in chunks, for a download.

Wire (`PUT /peer/v1/files/{file_id}`, decision 0013): the body is ciphertext bytes `start..end` of
`total`, named by `Content-Range: bytes start-end/total`; `start` must be the offset the receiver
holds (else 409 `file.offset_mismatch`). Every answer, and `HEAD`, carries `Upload-Offset` (bytes
held) so a sender resumes from there; a broken PUT keeps what arrived. The offset answered may
count bytes not yet fsync'd; the record on disk never does (it is brought up to date every
`COMMIT_EVERY` bytes, when a part breaks, and before the answer that completes the file), so
after a crash the sender, which asks `HEAD` before it resumes, sends again from the record's
offset. Memory stays flat: bytes go to disk as they arrive, and ciphertext is made and checked
chunk by chunk.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import datetime as dt
import os
import re
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, TypeVar

import aiohttp
import msgspec
import structlog

from ..core import filecrypt
from ..core.clock import Clock
from ..core.errors import GatewayError, SchemaError
from ..core.filecrypt import SEALED, FileDigest, FileError, ciphertext_size
from ..core.upload import FILE_ID, UploadError
from ..startup.config import FilesConfig
from ..startup.keystore import fsync_dir
from .files import Writer, disk_error, flush_file

log = structlog.get_logger("customs_gateway.peer_files")

BLOCK_CHUNKS: Final = 16  # sealed chunks read and decrypted at a time (about 1 MiB)
FLUSH_EVERY: Final = 16 * 1024 * 1024  # written bytes flushed to disk in the background this often
COMMIT_EVERY: Final = 64 * 1024 * 1024  # bytes written past the record before it is brought up
PART: Final = 8 * 1024 * 1024  # one PUT, answered before the next goes
PIECE: Final = 1024 * 1024  # ciphertext made at a time for a PUT, one piece ahead of the one sent
WATCH_MAX: Final = 64  # files checked as they arrive at one time (more: checked after, as before)
_RANGE: Final = re.compile(r"bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19})")
_T = TypeVar("_T")


class PeerFileRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the receiver holds of one file's ciphertext: `offset` bytes of `total` (durably), and
    once checked against a document, the plaintext digest that checked out."""

    file_id: str
    total: int
    offset: int
    verified_sha256: str | None = None
    #: The last part written or check made (orphan expiry counts from here; None: written by
    #: an older version, the record file's time stands in).
    touched_at: dt.datetime | None = None
    #: The accepted envelope that names the file: from then on it goes with that message.
    message_id: str | None = None

    @property
    def complete(self) -> bool:
        return self.offset == self.total


def parse_content_range(raw: str | None, max_total: int) -> tuple[int, int, int]:
    """(start, end exclusive, total) of `Content-Range: bytes start-end/total`; SchemaError naming
    the header otherwise, 413 `file.too_large` for a total above `max_total`."""
    m = _RANGE.fullmatch((raw or "").strip())
    if m is None:
        raise SchemaError("Content-Range must be bytes start-end/total", code="schema.required", field="Content-Range")
    start, last, total = (int(g) for g in m.groups())
    if not start <= last < total:
        raise SchemaError("Content-Range must have start <= end < total", code="schema.range", field="Content-Range")
    if total > max_total:
        raise UploadError(
            f"a file's ciphertext may be at most {max_total} bytes (files.max_file_bytes)",
            code="file.too_large",
            status=413,
            field="Content-Range",
        )
    return start, last + 1, total


@dataclass
class _Writing:
    """A file being received: its record as saved (`rec.offset` bytes fsync'd) and the bytes
    `written` so far, ahead of it until the next commit (in memory only: lost with the process)."""

    rec: PeerFileRecord
    written: int
    touched: dt.datetime  # the last part written (orphan expiry counts from here)
    flushed: int = 0  # bytes a background flush was started for
    flushing: concurrent.futures.Future[None] | None = None


class _Watch:
    """A file checked as its ciphertext arrives (`PeerFiles.watch`, decision 0017): the terms
    of the document that announced it, the chunks checked so far and their running digest.
    Advanced only under `lock`, by the checker thread after each part and by `check`, which
    finishes it. `valid` turns False when bytes it may have read are cut back (then the file is
    checked whole, after, as without a watch)."""

    def __init__(self, size: int, sha256: str, key_b64: str) -> None:
        self.terms = (size, sha256, key_b64)
        self.key = _key(key_b64)
        self.size = size
        self.chunks = filecrypt.chunk_count(size)
        self.index = 0  # the next chunk to check
        self.digest = FileDigest()
        self.lock = threading.Lock()
        self.valid = True
        self.failed = False  # a chunk did not open: the check after says why
        self.job: concurrent.futures.Future[None] | None = None

    @property
    def done(self) -> bool:
        return self.valid and not self.failed and self.index == self.chunks


class PeerFiles:
    """The directory of ciphertexts the peer sent (`<files dir>/peer`): one `.data` and one `.json`
    record each; the bytes are fsync'd before the record that counts them (the offset answered
    may be ahead of the record: see `held`)."""

    def __init__(self, directory: Path, config: FilesConfig, clock: Clock, *, write: Writer = os.write) -> None:
        self.directory = directory
        self.config = config
        self.max_total = ciphertext_size(config.max_file_bytes)
        self.clock = clock
        self.write = write
        self._busy: set[str] = set()
        self._parts: set[asyncio.Task[object]] = set()  # requests writing a part now
        self._stopping = False  # `cut_parts` was called: no part is taken any more
        self._writing: dict[str, _Writing] = {}  # files with bytes written past their record
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="peer-files")
        self._watches: dict[str, _Watch] = {}
        self._checker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="peer-files-check")
        self._sweep_after = ""

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _data(self, file_id: str) -> Path:
        return self.directory / f"{file_id}.data"

    def get(self, file_id: str) -> PeerFileRecord | None:
        if not FILE_ID.fullmatch(file_id):
            return None
        try:
            return msgspec.json.decode((self.directory / f"{file_id}.json").read_bytes(), type=PeerFileRecord)
        except (FileNotFoundError, msgspec.DecodeError):
            return None

    def _save(self, rec: PeerFileRecord) -> None:
        tmp = self.directory / f"{rec.file_id}.json.tmp"
        tmp.write_bytes(msgspec.json.encode(rec))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.directory / f"{rec.file_id}.json")
        self._sync_dir()

    def held(self, file_id: str) -> PeerFileRecord | None:
        """The record with the offset written so far: what `HEAD` and every answer say. It may
        be ahead of the record on disk (`get`), which counts only bytes fsync'd; after a crash the
        record's offset is what is held, and the next part cuts off anything past it."""
        rec = self.get(file_id)
        state = self._writing.get(file_id)
        if rec is None or state is None:
            return rec
        return msgspec.structs.replace(rec, offset=state.written)

    async def receive(self, file_id: str, start: int, end: int, total: int, body: AsyncIterator[bytes]) -> int:
        """Append ciphertext bytes `start..end` of `total` from `body`; the offset held after.

        409 `file.offset_mismatch` unless `start` is the offset held, `file.length_changed` if
        `total` is not the one first declared, `file.busy` while another request writes it. A
        body that ends early keeps what arrived; one longer than its range is cut at `end`.

        Bytes are written as they arrive and fsync'd (then counted by the record, in a worker
        thread) when the file is complete (before the answer says so), when a part breaks, and
        every `COMMIT_EVERY` bytes; not after every part. A disk that refuses a write keeps
        nothing of the part (503, the offset its start)."""
        if not FILE_ID.fullmatch(file_id):
            raise SchemaError("file_id must be a UUID", code="schema.uuid", field="file_id")
        self.open()
        if self._stopping:
            raise UploadError(
                "the gateway is stopping: resume from Upload-Offset later", code="file.stopping", status=503
            )
        if file_id in self._busy:
            raise UploadError(f"file {file_id} is being written by another request", code="file.busy", status=409)
        self._busy.add(file_id)
        task = asyncio.current_task()
        if task is not None:
            self._parts.add(task)
        try:
            state = self._writing.get(file_id)
            if state is None:
                rec = self.get(file_id)
                if rec is None:  # recorded at once, so an abandoned file is swept as an orphan
                    rec = PeerFileRecord(file_id, total, 0, touched_at=self.clock.now())
                    await self._in_thread(self._save, rec)
                state = _Writing(rec, rec.offset, self.clock.now())
            if state.rec.total != total:
                raise UploadError(
                    f"file {file_id} was declared with {state.rec.total} bytes",
                    code="file.length_changed",
                    field="Content-Range",
                )
            if start != state.written:
                raise OffsetMismatch(state.written, start)
            self._writing[file_id] = state
            fd = os.open(self._data(file_id), os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.ftruncate(fd, start)  # bytes past the offset were never counted
                os.lseek(fd, start, os.SEEK_SET)
                try:
                    await self._write_body(fd, state, end, body)
                except UploadError:
                    # The disk refused: nothing of this part is kept, the offset held stays.
                    self._unwatch(file_id)
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, start)
                    state.written = start
                    log.warning("peer_files.write_failed", file_id=file_id, held=start)
                    raise
                except BaseException:
                    self._commit(fd, state)  # a broken part keeps what arrived
                    raise
                finally:
                    state.touched = self.clock.now()
                if state.written == total or state.written - state.rec.offset >= COMMIT_EVERY:
                    await self._in_thread(self._commit, fd, state)
                else:
                    self._flush_behind(file_id, state)
                self._kick(file_id)
            finally:
                os.close(fd)
                if state.written == state.rec.offset:
                    self._writing.pop(file_id, None)  # all counted by the record
            return state.written
        finally:
            self._busy.discard(file_id)
            self._parts.discard(task)

    def cut_parts(self) -> None:
        """The gateway is stopping: end every part still arriving, keeping (and counting) what
        arrived, as a broken connection does, and refuse any part that starts from now on (503
        `file.stopping`: one may come in on a kept-alive connection while the listener closes);
        the sender resumes from the offset held. Without this the listener's shutdown waits for
        each such part until the body read times out."""
        self._stopping = True
        for task in list(self._parts):
            task.cancel()

    def _flush_behind(self, file_id: str, state: _Writing) -> None:
        """Start writing what was received to disk in the background every `FLUSH_EVERY` bytes
        (one flush at a time per file), so the fsync of the next commit, which the sender waits
        for, has little left to do. Counts nothing: only a commit moves the record."""
        if state.written - state.flushed < FLUSH_EVERY or (state.flushing is not None and not state.flushing.done()):
            return
        state.flushed = state.written
        state.flushing = self._pool.submit(flush_file, self._data(file_id))

    async def _write_body(self, fd: int, state: _Writing, end: int, body: AsyncIterator[bytes]) -> None:
        """Write `body` up to `end` at `state.written` as it arrives, counting each piece once
        written (one piece in memory). On the event loop: measured, a writer thread was slower
        here (the hand-offs cost more than the writes to the page cache)."""
        async for received in body:
            rest = received[: end - state.written]
            while rest:
                try:
                    n = self.write(fd, rest)
                except OSError as e:
                    raise disk_error(e) from e
                rest = rest[n:]  # a short write: the rest again (rare; no copy otherwise)
                state.written += n
            if state.written >= end:
                break

    async def _in_thread(self, fn: Callable[..., _T], *args: object) -> _T:
        """`fn(*args)` in the worker pool; if the caller is cancelled, it waits for the job (which
        may hold the file's descriptor) before it goes on."""
        job = self._pool.submit(fn, *args)
        try:
            return await asyncio.wrap_future(job)
        except asyncio.CancelledError:
            concurrent.futures.wait([job])
            raise

    def _commit(self, fd: int, state: _Writing) -> None:
        """Count the bytes written: fsync them, then replace the record. If the fsync fails, the
        file is cut back to what the record counted and the part refused (503). If only the record
        fails, the bytes are on disk and stay (the record there may already be the new one: a
        rename that landed before the directory's fsync failed); the part is refused (503) and the
        record is read back, so nothing counted is ever cut off."""
        try:
            os.fsync(fd)
        except OSError as e:
            self._unwatch(state.rec.file_id)
            with contextlib.suppress(OSError):
                os.ftruncate(fd, state.rec.offset)
            state.written = state.rec.offset
            log.warning("peer_files.write_failed", file_id=state.rec.file_id, errno=e.errno)
            raise disk_error(e) from e
        rec = msgspec.structs.replace(state.rec, offset=state.written, touched_at=self.clock.now())
        try:
            self._save(rec)
        except OSError as e:
            state.rec = self.get(rec.file_id) or state.rec
            log.warning("peer_files.record_failed", file_id=rec.file_id, errno=e.errno, recorded=state.rec.offset)
            raise disk_error(e) from e
        state.rec = rec

    def close(self) -> None:
        """Count what was written of every file not yet committed (fsync, then the record): after
        a clean stop the record holds every byte an answer said was held. Called once the
        listeners are closed (no part is being written)."""
        for file_id in list(self._watches):
            self._unwatch(file_id)  # a check in progress stops at its next block
        for file_id, state in list(self._writing.items()):
            if file_id in self._busy:
                continue
            try:
                fd = os.open(self._data(file_id), os.O_WRONLY)
                try:
                    self._commit(fd, state)
                finally:
                    os.close(fd)
            except (OSError, UploadError) as e:  # as after a crash: the record's offset holds
                log.warning("peer_files.commit_failed", file_id=file_id, error=str(e))
            self._writing.pop(file_id, None)

    def adopt(self, file_ids: Iterable[str], message_id: str) -> None:
        """The files an accepted envelope names are its message's now: they no longer expire as
        orphans (they go with the message, `dispose`)."""
        for file_id in file_ids:
            rec = self.get(file_id)
            if rec is not None and rec.message_id is None:
                self._save(msgspec.structs.replace(rec, message_id=message_id))

    def sweep(self, now: dt.datetime, limit: int) -> int:
        """Remove orphans: ciphertexts no accepted envelope names, untouched for
        `files.peer_orphan_ttl_seconds` (the envelope never came, or was refused). Reads at most
        `limit` records a run (the next run goes on after the last one read); returns how many
        were removed. A sender still retrying asks the offset held and sends the file again."""
        if not self.directory.is_dir():
            return 0
        names = sorted(p.name[:-5] for p in self.directory.glob("*.json"))
        todo = [n for n in names if n > self._sweep_after][:limit]
        self._sweep_after = todo[-1] if len(todo) == limit else ""
        ttl = dt.timedelta(seconds=self.config.peer_orphan_ttl_seconds)
        removed = 0
        for file_id in todo:
            rec = self.get(file_id)
            if rec is None or rec.message_id is not None or file_id in self._busy:
                continue
            state = self._writing.get(file_id)
            touched = state.touched if state is not None else rec.touched_at
            touched = touched or dt.datetime.fromtimestamp(
                (self.directory / f"{file_id}.json").stat().st_mtime, dt.timezone.utc
            )
            if now >= touched + ttl:
                removed += self._remove(file_id)
        if removed:
            self._sync_dir()
            log.info("peer_files.orphans_removed", removed=removed)
        return removed

    # --- checking as the bytes arrive (decision 0017) --------------------------------------

    def watch(self, file_id: str, size: int, sha256: str, key_b64: str) -> bool:
        """Check this file's chunks as they arrive, under the terms of an announced envelope
        (`Gateway.announce`), so `check` has only the last part left when the envelope comes.
        Nothing is stored: a restart forgets it and `check` reads the whole file, as without.
        False (nothing done) if the file is already checked under these terms, its declared
        length is not the one `size` needs, or `WATCH_MAX` files are being watched."""
        if not FILE_ID.fullmatch(file_id):
            return False
        held = self._watches.get(file_id)
        if held is not None and held.terms == (size, sha256, key_b64):
            return True
        rec = self.get(file_id)
        if rec is not None and (rec.total != ciphertext_size(size) or rec.verified_sha256 == sha256):
            return False
        if held is None and len(self._watches) >= WATCH_MAX:
            return False
        self._unwatch(file_id)  # other terms: the new announcement wins
        self._watches[file_id] = _Watch(size, sha256, key_b64)
        self._kick(file_id)
        return True

    def _unwatch(self, file_id: str) -> None:
        w = self._watches.pop(file_id, None)
        if w is not None:
            w.valid = False

    def _kick(self, file_id: str) -> None:
        """Have the checker thread check what arrived of a watched file (one job at a time; a
        job goes on while more has arrived)."""
        w = self._watches.get(file_id)
        if w is not None and w.valid and (w.job is None or w.job.done()):
            w.job = self._checker.submit(self._advance, file_id, w)

    def _arrived(self, file_id: str) -> int:
        """Ciphertext bytes written so far (in the page cache, if not yet fsync'd)."""
        state = self._writing.get(file_id)
        if state is not None:
            return state.written
        rec = self.get(file_id)
        return 0 if rec is None else rec.offset

    def _advance(self, file_id: str, w: _Watch) -> None:
        """Check every whole chunk that arrived since the last call, a block at a time."""
        with w.lock:
            if not w.valid or w.failed:
                return
            f: BinaryIO | None = None
            try:
                while w.valid and w.index < w.chunks:
                    arrived = self._arrived(file_id)
                    upto = w.index
                    while (
                        upto < w.chunks
                        and upto - w.index < BLOCK_CHUNKS
                        and filecrypt.ciphertext_range(upto, w.size)[1] <= arrived
                    ):
                        upto += 1
                    if upto == w.index:
                        return  # nothing more has arrived yet
                    f = f or open(self._data(file_id), "rb")  # noqa: SIM115 - closed below
                    for plain in next(_blocks(f, w.key, w.size, w.index, upto)):
                        w.digest.update(plain)
                    w.index = upto
            except (FileError, OSError):
                w.failed = True
            finally:
                if f is not None:
                    f.close()

    def _watched(self, file_id: str, terms: tuple[int, str, str]) -> FileDigest | None:
        """The digest of the whole file from its watch, if it was watched under `terms` and
        nothing it read was cut back: the rest is checked now (the file is complete); None
        otherwise (the caller checks the whole file)."""
        w = self._watches.pop(file_id, None)
        if w is None or w.terms != terms:
            if w is not None:
                w.valid = False
            return None
        self._advance(file_id, w)  # waits for a job in progress, then checks what is left
        return w.digest if w.done else None

    def check(self, file_id: str, size: int, sha256: str, key_b64: str) -> None:
        """Decrypt and hash the whole ciphertext against what the document says (once: a file that
        checked out is remembered). A file watched under these terms since an announcement
        (`watch`) was checked as it arrived: only what the checker thread has not reached yet is
        left. Otherwise on two cores: blocks of `BLOCK_CHUNKS` chunks are decrypted in a worker
        while the calling thread hashes the block before (about three blocks in memory, whatever
        the size). Either way every chunk is opened and hashed in order. Raises FileError
        (`file.auth_failed`, `file.truncated`, `file.trailing_data`, `file.size_mismatch`,
        `file.digest_mismatch`) or `MissingFile`."""
        rec = self.get(file_id)
        want = ciphertext_size(size)
        if rec is None or not rec.complete:  # a file is committed when complete (`receive`)
            held = self.held(file_id)
            raise MissingFile(file_id, 0 if held is None else held.offset, want)
        if rec.verified_sha256 == sha256:
            return
        if rec.total != want:
            raise FileError(
                f"file {file_id} is {rec.total} ciphertext bytes, the document's size needs {want}",
                code="file.size_mismatch",
            )
        digest = self._watched(file_id, (size, sha256, key_b64))
        if digest is None:  # not announced (or cut back since): the whole file now
            digest = FileDigest()
            key = _key(key_b64)
            with open(self._data(file_id), "rb") as f:
                # A block of chunks is decrypted in the pool while this thread hashes the one before.
                for plains in ahead(self._pool, _blocks(f, key, size, 0, filecrypt.chunk_count(size))):
                    for plain in plains:
                        digest.update(plain)
        digest.finish(size, bytes.fromhex(sha256))
        self._save(msgspec.structs.replace(rec, verified_sha256=sha256, touched_at=self.clock.now()))

    def dispose(self, file_ids: Iterable[str]) -> int:
        """Delete the ciphertexts and records of these files (a message's files at its
        disposal); idempotent; returns how many were held. The directory is fsync'd, so a
        disposal that returned stays done across a crash."""
        removed = 0
        for file_id in file_ids:
            if not FILE_ID.fullmatch(file_id) or file_id in self._busy:
                continue
            removed += self._remove(file_id)
        if self.directory.is_dir():
            self._sync_dir()
        return removed

    def _remove(self, file_id: str) -> bool:
        """Ciphertext first, then the record (a record without bytes is harmless); True if held.
        Never called for a file being written (`_busy`)."""
        self._writing.pop(file_id, None)
        self._unwatch(file_id)
        held = False
        for name in (f"{file_id}.data", f"{file_id}.json", f"{file_id}.json.tmp"):
            with contextlib.suppress(FileNotFoundError):
                (self.directory / name).unlink()
                held = True
        return held

    def _sync_dir(self) -> None:
        fsync_dir(self.directory)

    def plaintext(self, file_id: str, key_b64: str, size: int, first: int, last: int) -> Iterator[bytes]:
        """Plaintext bytes `first..last` (inclusive) of a checked file, chunk by chunk (read and
        decrypted a block of `BLOCK_CHUNKS` at a time). Raises `FileGone` (410) now, before any
        byte, if the ciphertext is no longer held."""
        try:
            f = open(self._data(file_id), "rb")  # noqa: SIM115 - closed by the generator
        except FileNotFoundError as e:
            raise FileGone(f"file {file_id} is no longer held (disposed of)", field="file_id") from e
        return self._plaintext(f, _key(key_b64), size, first, last)

    @staticmethod
    def _plaintext(f: BinaryIO, key: bytes, size: int, first: int, last: int) -> Iterator[bytes]:
        index = first // filecrypt.CHUNK
        stop = min(last // filecrypt.CHUNK + 1, filecrypt.chunk_count(size))
        with f:
            for plains in _blocks(f, key, size, index, stop):
                for plain in plains:
                    base = index * filecrypt.CHUNK
                    yield plain[max(first - base, 0) : last - base + 1]  # a whole chunk: no copy
                    index += 1


def _blocks(f: BinaryIO, key: bytes, size: int, index: int, stop: int) -> Iterator[list[bytes]]:
    """The plaintext of chunks `index..stop` (exclusive) of a `size`-byte file's ciphertext in
    `f`, read and decrypted `BLOCK_CHUNKS` chunks at a time (one list per block). Raises FileError
    (`filecrypt.decrypt_chunks`; `file.truncated` if `f` ends early)."""
    while index < stop:
        upto = min(index + BLOCK_CHUNKS, stop)
        start = filecrypt.ciphertext_range(index, size)[0]
        end = filecrypt.ciphertext_range(upto - 1, size)[1]
        f.seek(start)
        data = f.read(end - start)
        if len(data) != end - start:
            raise FileError("the file ends before its final chunk", code="file.truncated")
        yield filecrypt.decrypt_chunks(key, index, data, size)
        index = upto


def ahead(pool: concurrent.futures.Executor, items: Iterator[_T]) -> Iterator[_T]:
    """The items of `items`, each made in `pool` while the caller uses the one before (one ahead,
    so memory stays bounded). `items` is closed when this is (after the item being made)."""
    job = pool.submit(next, items, None)
    try:
        while (item := job.result()) is not None:
            job = pool.submit(next, items, None)
            yield item
    finally:
        concurrent.futures.wait([job])  # never close a generator another thread is running
        if isinstance(items, Generator):
            items.close()


class FileGone(GatewayError):
    """A file whose ciphertext was disposed of (or removed behind the gateway's back)."""

    code = "file.gone"
    status = 410


class MissingFile(GatewayError):
    """An envelope names a file whose ciphertext is not all here yet: the sender sends the rest."""

    code = "file.incomplete"
    status = 409

    def __init__(self, file_id: str, held: int, total: int) -> None:
        super().__init__(f"file {file_id}: {held} of {total} ciphertext bytes held; send the rest", field="files")


class OffsetMismatch(UploadError):
    code = "file.offset_mismatch"
    status = 409

    def __init__(self, held: int, sent: int) -> None:
        super().__init__(f"Content-Range starts at {sent}, the offset held is {held}", field="Content-Range")
        self.held = held


def _key(key_b64: str) -> bytes:
    return base64.urlsafe_b64decode(key_b64 + "=")


# --- sender --------------------------------------------------------------------------------------


#: The plaintext of a file one 64 KiB chunk at a time from a chunk index (`FileUploads.chunks`).
ChunkSource = Callable[[int], Iterator[bytes]]


class PartMaker:
    """The ciphertext a push sends, made part by part from ciphertext byte `offset` on: each
    chunk is sealed straight into the part's buffer (`ChunkSealer.seal_into`), except one that
    straddles the part's end, whose rest waits for the next part. The STREAM ciphertext is a
    function of key and plaintext, so a resumed push re-makes only the chunks it still needs."""

    def __init__(self, chunks: ChunkSource, key_b64: str, size: int, offset: int) -> None:
        self.total = ciphertext_size(size)
        self.left = self.total - offset
        self._sealer = filecrypt.ChunkSealer(_key(key_b64))
        self._n = filecrypt.chunk_count(size)
        self._index = offset // SEALED
        self._skip = offset - self._index * SEALED  # bytes of the first chunk already sent
        self._plain = chunks(self._index) if size else iter((b"",))
        self._carry = memoryview(b"")

    def take(self, n: int) -> bytearray:
        """The next `n` ciphertext bytes (at most `left`)."""
        if not 0 < n <= self.left:
            raise ValueError("a part must be 1..left bytes")
        out = bytearray(n)
        view, got = memoryview(out), 0
        while got < n:
            if self._carry:
                k = min(n - got, len(self._carry))
                view[got : got + k] = self._carry[:k]
                self._carry, got = self._carry[k:], got + k
                continue
            plain = next(self._plain, None)
            if plain is None or self._index >= self._n:
                raise GatewayError("the file ended before its size", code="file.push_failed")
            last = self._index == self._n - 1
            sealed_len = len(plain) + filecrypt.TAG
            if not self._skip and got + sealed_len <= n:
                self._sealer.seal_into(self._index, plain, last, view[got : got + sealed_len])
                got += sealed_len
            else:  # the chunk straddles the part's end, or was partly sent before a resume
                self._carry = memoryview(self._sealer.seal(self._index, plain, last))[self._skip :]
                self._skip = 0
            self._index += 1
        self.left -= n
        return out


class Progress:
    """Ciphertext bytes handed to the connection, counted as they go (a broken push counts too)."""

    def __init__(self) -> None:
        self.sent = 0


async def push(
    session: aiohttp.ClientSession,
    url: str,
    ssl: object,
    chunks: ChunkSource,
    key_b64: str,
    size: int,
    *,
    progress: Progress | None = None,
    part: int = PART,
) -> int:
    """Send one file's ciphertext to `url` (`.../peer/v1/files/{file_id}`) from the offset the
    peer holds, in PUTs of at most `part` bytes, each answered with the offset held before the next
    goes (a part cut off keeps what arrived: a broken link costs what was in flight). The
    ciphertext is made in a thread `PIECE` bytes at a time, one piece ahead of the one being sent,
    across parts: two pieces in memory, whatever the part size. Returns the ciphertext bytes sent;
    raises GatewayError (`file.push_failed`) when the peer refuses a part; aiohttp and OS errors
    pass through (the link is down, the next attempt resumes)."""
    progress = progress if progress is not None else Progress()
    before = progress.sent
    total = ciphertext_size(size)
    async with session.head(url, ssl=ssl) as resp:  # type: ignore[arg-type]
        held = int(resp.headers.get("Upload-Offset", "0")) if resp.status == 200 else 0
    parts = PartMaker(chunks, key_b64, size, held)
    first, made = held, held  # where this push started (parts are `part` bytes from here); bytes made

    def prepare() -> asyncio.Future[bytearray] | None:
        """The next piece, made in a thread: it never crosses the end of its part."""
        nonlocal made
        n = min(PIECE, part - (made - first) % part, total - made)
        if n <= 0:
            return None
        made += n
        return asyncio.get_running_loop().run_in_executor(None, parts.take, n)

    nxt = prepare()

    async def body(end: int) -> AsyncIterator[memoryview]:
        nonlocal nxt
        at = held
        while at < end:
            assert nxt is not None
            piece = await nxt
            nxt = prepare()  # made while this one is sent (and the answer awaited, at a part's end)
            at += len(piece)
            async for view in _slices(piece, progress):
                yield view

    try:
        while held < total:
            end = min(held + part, total)
            headers = {
                "Content-Range": f"bytes {held}-{end - 1}/{total}",
                "Content-Type": "application/octet-stream",
                "Content-Length": str(end - held),  # not chunked
            }
            async with session.put(url, data=body(end), headers=headers, ssl=ssl) as resp:  # type: ignore[arg-type]
                got = resp.headers.get("Upload-Offset")
                await resp.read()
            if resp.status not in (200, 204) or got is None or int(got) != end:
                why = f"the peer answered HTTP {resp.status} holding {got} of {total}"
                raise GatewayError(why, code="file.push_failed")
            held = end
    finally:
        if nxt is not None:  # the link broke: the piece made ahead is not sent (its error not news)
            nxt.cancel()
            nxt.add_done_callback(lambda t: t.cancelled() or t.exception())
    return progress.sent - before


_SLICE: Final = 256 * 1024


async def _slices(part: bytearray, progress: Progress) -> AsyncIterator[memoryview]:
    """A part handed to the connection a slice at a time (few TLS writes, each drained before
    the next: the encrypted copy in memory stays one slice), counted as it goes."""
    view = memoryview(part)
    for start in range(0, len(view), _SLICE):
        piece = view[start : start + _SLICE]
        progress.sent += len(piece)
        yield piece
