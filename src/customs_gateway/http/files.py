"""The file endpoints of the local API (DESIGN §13): uploads (`POST /v1/files`, then `HEAD` and
`PATCH /v1/files/{file_id}` to resume in the manner of tus: `Upload-Offset`, `Upload-Length`), and
downloads of the files a message names (`GET /v1/inbox/{id}/files/{file_id}`, decrypted as they
stream, and the sender's copy at `GET /v1/messages/{id}/files/{file_id}`; one `Range` each).

The body is the file's bytes, read from the request stream 64 KiB at a time and written as it
comes (never whole in memory); the request's Content-Type is the file's media type and the
`filename` query parameter its name. Roles are the route table's (`http.local.ROUTES`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import re
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Final

from aiohttp import ClientConnectionResetError, web
from aiohttp.http_exceptions import HttpProcessingError

from ..core.audit import AuditEntry
from ..core.docfiles import SealedFile, sealed_files
from ..core.encoding import format_ts
from ..core.envelope import BUSINESS_TYPES, SignedDocument
from ..core.errors import GatewayError, NotFound
from ..core.upload import (
    OffsetMismatch,
    UploadRecord,
    check_file_id,
    check_filename,
    check_media_type,
    parse_length,
    parse_offset,
)
from ..core.upload import not_found as upload_not_found
from ..service.files import FileUploads, PartInterrupted
from ..service.gateway import Gateway
from . import views
from .appkeys import CALLER, GATEWAY
from .problems import from_error, json_response

FILES: Final = web.AppKey("files", FileUploads)
READ_CHUNK: Final = 256 * 1024
TUS_VERSION: Final = "1.0.0"


async def _part(request: web.Request) -> AsyncIterator[bytes]:
    """The request body in chunks as they arrive; a stall longer than the body read timeout, or
    a client that hangs up, ends it with PartInterrupted."""
    timeout = request.app[FILES].part_timeout
    chunks = request.content.iter_chunked(READ_CHUNK).__aiter__()
    while True:
        try:
            async with asyncio.timeout(timeout):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except TimeoutError as e:
            raise PartInterrupted(
                f"no part of the body arrived within {timeout:.0f} s", code="http.body_timeout", status=408
            ) from e
        except (ConnectionError, ClientConnectionResetError, HttpProcessingError) as e:
            raise PartInterrupted("the client closed the connection before the end of the body") from e
        yield chunk


def _upload(request: web.Request) -> tuple[FileUploads, UploadRecord]:
    """The caller's upload named in the path; 404 for an unknown, expired or another token's one."""
    uploads = request.app[FILES]
    file_id = check_file_id(request.match_info["file_id"])
    rec = uploads.get(file_id)
    ttl = uploads.config.upload_ttl_seconds
    if rec is None or not rec.visible_to(request[CALLER].token_id, uploads.clock.now(), ttl):
        raise upload_not_found(file_id)
    return uploads, rec


def _headers(rec: UploadRecord) -> dict[str, str]:
    out = {
        "Upload-Offset": str(rec.offset),
        "Tus-Resumable": TUS_VERSION,
        "Cache-Control": "no-store",
        "Location": f"/v1/files/{rec.file_id}",
    }
    if rec.length is not None:
        out["Upload-Length"] = str(rec.length)
    return out


def _content_length(request: web.Request) -> int | None:
    return request.content_length if request.content_length is not None and request.content_length >= 0 else None


def _answer(rec: UploadRecord, uploads: FileUploads, status: int) -> web.Response:
    view = views.FileUpload.of(rec, uploads.config.upload_ttl_seconds)
    return json_response(view, status=status, headers=_headers(rec))


async def create_file(request: web.Request) -> web.Response:
    """Upload a file (streamed), all of it or a first part"""
    uploads = request.app[FILES]
    length = parse_length(request.headers.get("Upload-Length"), uploads.config.max_file_bytes)
    filename = check_filename(request.query.get("filename"))
    media = check_media_type(request.headers.get("Content-Type") or "application/octet-stream")
    rec = await uploads.create(
        request[CALLER].token_id, media, filename, length, _part(request), _content_length(request)
    )
    return _answer(rec, uploads, 201)


async def append_file(request: web.Request) -> web.Response:
    """Send the next part of an upload at the offset held"""
    uploads, rec = _upload(request)
    offset = parse_offset(request.headers.get("Upload-Offset"))
    try:
        rec = await uploads.append(rec, offset, _part(request), _content_length(request))
    except OffsetMismatch as e:
        resp = from_error(e, request)
        resp.headers["Upload-Offset"] = str(e.held)
        return resp
    except PartInterrupted as e:  # what arrived is kept: say where to resume
        resp = from_error(e, request)
        held = uploads.get(rec.file_id)
        if held is not None:
            resp.headers["Upload-Offset"] = str(held.offset)
        return resp
    return _answer(rec, uploads, 200)


async def file_offset(request: web.Request) -> web.Response:
    """The offset held of an upload (`Upload-Offset`) and its declared length (`Upload-Length`)"""
    _, rec = _upload(request)
    return web.Response(status=200, headers=_headers(rec))


async def get_file(request: web.Request) -> web.Response:
    """An upload's state: size, offset held, and once complete its SHA-256"""
    uploads, rec = _upload(request)
    return _answer(rec, uploads, 200)


def setup(app: web.Application, gw: Gateway) -> None:
    """Mount the files directory on the local API: created at start-up, swept while it runs
    (expired uploads, and ciphertexts from the peer that no envelope came for)."""
    uploads = gw.files
    app[FILES] = uploads

    async def sweeper(app: web.Application) -> AsyncIterator[None]:
        uploads.open()
        task = asyncio.create_task(uploads.run_sweeper(gw.peer_files.sweep), name="files-sweeper")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(sweeper)


# --- downloads: the files a message names -----------------------------------------------------

_RANGE: Final = re.compile(r"bytes=([0-9]{0,19})-([0-9]{0,19})")


def byte_range(raw: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range a `Range` header asks of a `size`-byte file (one range: `a-b`,
    `a-`, `-n`), None for the whole file; 416 `file.range` when it is malformed or outside."""
    if raw is None:
        return None
    m = _RANGE.fullmatch(raw.strip())
    first: int | None = None
    if m is not None and (m.group(1) or m.group(2)):
        if not m.group(1):  # the last n bytes
            first, last = max(size - int(m.group(2)), 0), size - 1
        else:
            first = int(m.group(1))
            last = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    if first is None or first > last or first >= size:
        raise GatewayError(
            f"Range must be one range bytes=a-b inside the file's {size} bytes",
            code="file.range",
            status=416,
            field="Range",
        )
    return first, last


async def _stream(
    request: web.Request,
    f: SealedFile,
    pieces: Callable[[int, int], Iterator[bytes]],
    message_id: str,
    peer: str,
) -> web.StreamResponse:
    """Stream `f` (one `Range`), after writing the download's audit entry: who, which message,
    which file, which bytes. A file that cannot be read (disposed, gone) is refused before the
    entry and before any byte."""
    span = byte_range(request.headers.get("Range"), f.size)
    first, last = span if span is not None else (0, f.size - 1)
    out: Iterator[bytes] = pieces(first, last) if f.size else iter(())
    gw = request.app[GATEWAY]
    caller = request[CALLER]
    entry = AuditEntry(
        at=gw.clock.now(),
        kind="file_downloaded",
        actor=caller.actor,
        message_id=message_id,
        peer=peer,
        digests={"file": f.sha256},
        detail={"file_id": f.file_id, "range": f"{first}-{last}" if f.size else "", "size": f.size},
    )
    await gw.store.append_audit([entry])
    headers = {
        "Content-Type": f.media_type,
        "Accept-Ranges": "bytes",
        "Content-Length": str(last - first + 1 if f.size else 0),
        "Content-Disposition": f"attachment; filename*=UTF-8''{urllib.parse.quote(f.filename)}",
        "X-Content-Type-Options": "nosniff",
        "Digest-SHA256": f.sha256,
    }
    if span is not None:
        headers["Content-Range"] = f"bytes {first}-{last}/{f.size}"
    resp = web.StreamResponse(status=206 if span is not None else 200, headers=headers)
    await resp.prepare(request)
    for piece in out:  # a chunk (64 KiB) at a time, decrypted as it goes: memory stays flat
        await resp.write(piece)
    await resp.write_eof()
    return resp


def _named(files: list[SealedFile], file_id: str) -> SealedFile:
    for f in files:
        if f.file_id == file_id:
            return f
    raise NotFound(f"the message names no file {file_id}", code="file.not_found", field="file_id")


def _not_disposed(message_id: str, disposed_at: dt.datetime | None) -> None:
    if disposed_at is not None:
        raise GatewayError(
            f"message {message_id} and its files were disposed of at its retention date ({format_ts(disposed_at)})",
            code="message.disposed",
            status=410,
            field="id",
        )


async def inbox_file(request: web.Request) -> web.StreamResponse:
    """A file a received message names, decrypted as it streams out (`Range` supported)"""
    gw = request.app[GATEWAY]
    it = await gw.store.inbox_item(request.match_info["id"])
    if it is None or it.type not in BUSINESS_TYPES:
        raise NotFound(f"no inbox message {request.match_info['id']}", code="inbox.not_found", field="id")
    _not_disposed(it.id, it.disposed_at)
    f = _named(sealed_files(it.type, it.body), request.match_info["file_id"])
    pieces = functools.partial(gw.peer_files.plaintext, f.file_id, f.key, f.size)
    return await _stream(request, f, pieces, it.id, it.sender)


async def message_file(request: web.Request) -> web.StreamResponse:
    """A file a sent message names: the sender's copy (`Range` supported)"""
    gw = request.app[GATEWAY]
    m = await gw.store.get_message(request.match_info["id"])
    if m is None or m.type not in BUSINESS_TYPES:
        raise NotFound(f"no message {request.match_info['id']}", code="message.not_found", field="id")
    _not_disposed(m.id, m.disposed_at)
    document = SignedDocument.from_bytes(m.signed_document).document_bytes
    f = _named(sealed_files(m.type, document), request.match_info["file_id"])
    return await _stream(request, f, functools.partial(gw.files.plaintext, f.file_id), m.id, gw.peer.identity)
