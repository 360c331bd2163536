"""Resumable file uploads (DESIGN §13): the record of one upload and the rules a part must meet.

An upload is created by the back-end that sends it (`POST /v1/files`) and belongs to that token;
more bytes come only at exactly the offset held (`PATCH` with `Upload-Offset`, in the manner of
the tus resumable-upload protocol), never past the declared length (`Upload-Length`) or the
configured size limit. An upload nobody has touched for the configured time expires. Pure: the
bytes, the disk and the clock are the caller's; every refusal is an `UploadError` with a stable
`file.*` code.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

import msgspec

from .errors import GatewayError, NotFound, SchemaError

#: File ids are UUIDs (the gateway's id source: UUIDv7), lower case; nothing else names a path.
FILE_ID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MAX_FILENAME: Final = 255
_MEDIA_TYPE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")
_DIGITS: Final = re.compile(r"[0-9]{1,19}")


class UploadError(GatewayError):
    """An upload request the rules refuse; `code` says which rule (`file.offset_mismatch`…)."""

    code = "file.invalid"
    status = 409


class UploadRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the gateway holds about one upload (its bytes live beside it).

    `length` is the declared size, or None until an upload sent without one ends; `offset` is
    how many bytes are held (durably); `sha256` (hex) is set once the upload is complete."""

    file_id: str
    owner: str  # the token id that created it: nobody else sees it
    media_type: str
    filename: str | None
    length: int | None
    offset: int
    created_at: dt.datetime
    touched_at: dt.datetime  # the last change: expiry counts from here
    sha256: str | None = None
    #: The first message that names this upload: from then on it never expires (it goes with
    #: that message, DESIGN §13).
    named_by: str | None = None
    #: The upload key (`core.filerest`), base64url: wrapped under the store's wrap key while no
    #: message names the upload (`key_wrapped`), sealed under the message's retention day key
    #: once one does (`key_sealed`). Never in clear.
    key_wrapped: str | None = None
    key_sealed: str | None = None
    #: The record of the last, partial chunk (`core.filerest`), base64url; None when the bytes
    #: held end on a chunk boundary.
    tail: str | None = None

    @property
    def complete(self) -> bool:
        return self.length is not None and self.offset == self.length

    @property
    def size(self) -> int:
        """The file's size: declared, or (sent without a length) the bytes held."""
        return self.offset if self.length is None else self.length

    def expires_at(self, ttl_seconds: float) -> dt.datetime:
        return self.touched_at + dt.timedelta(seconds=ttl_seconds)

    def expired(self, now: dt.datetime, ttl_seconds: float) -> bool:
        """Idle for `ttl_seconds` and named by no message."""
        return self.named_by is None and now >= self.expires_at(ttl_seconds)

    def visible_to(self, owner: str, now: dt.datetime, ttl_seconds: float) -> bool:
        """Whether `owner` may see this upload at `now` (another token's, or an expired one, is
        not found: an id alone reveals nothing)."""
        return self.owner == owner and not self.expired(now, ttl_seconds)


def not_found(file_id: str) -> NotFound:
    return NotFound(f"no upload {file_id}", code="file.not_found", field="file_id")


def check_file_id(file_id: str) -> str:
    """`file_id` if it is a file id; a 404 otherwise (it never reaches a path)."""
    if not FILE_ID.fullmatch(file_id):
        raise not_found(file_id)
    return file_id


def parse_length(raw: str | None, max_file_bytes: int) -> int | None:
    """The `Upload-Length` header: None when absent; 413 `file.too_large` above the limit."""
    if raw is None:
        return None
    if not _DIGITS.fullmatch(raw.strip()):
        raise SchemaError("Upload-Length must be a whole number of bytes", code="schema.type", field="Upload-Length")
    length = int(raw)
    if length > max_file_bytes:
        raise too_large(max_file_bytes, "Upload-Length")
    return length


def parse_offset(raw: str | None) -> int:
    """The `Upload-Offset` header a PATCH must carry."""
    if raw is None:
        raise SchemaError(
            "Upload-Offset is required: the offset held (HEAD /v1/files/{file_id} tells it)",
            code="schema.required",
            field="Upload-Offset",
        )
    if not _DIGITS.fullmatch(raw.strip()):
        raise SchemaError("Upload-Offset must be a whole number of bytes", code="schema.type", field="Upload-Offset")
    return int(raw)


def check_filename(name: str | None) -> str | None:
    """A file name as a back-end gives it: 1-255 characters, no path separator, no control character."""
    if name is None:
        return None
    bad = not 1 <= len(name) <= MAX_FILENAME or name in (".", "..")
    bad = bad or any(c in "/\\" or not c.isprintable() for c in name)
    if bad:
        raise SchemaError(
            f"filename must be 1-{MAX_FILENAME} printable characters without / or \\",
            code="schema.filename",
            field="filename",
        )
    return name


def check_media_type(raw: str) -> str:
    """The file's media type (the request's Content-Type without parameters), lower case."""
    media = raw.split(";", 1)[0].strip().lower()
    if not _MEDIA_TYPE.fullmatch(media):
        raise SchemaError(
            "Content-Type must be a media type like image/jpeg", code="schema.media_type", field="Content-Type"
        )
    return media


def check_resume(rec: UploadRecord, offset: int) -> None:
    """A part must start at exactly the offset held (409 naming it), and only while incomplete."""
    if offset != rec.offset:
        raise OffsetMismatch(rec.offset, offset)
    if rec.complete:
        raise UploadError(f"upload {rec.file_id} is complete ({rec.size} bytes)", code="file.complete", status=409)


def room(rec: UploadRecord, max_file_bytes: int) -> int:
    """How many more bytes this upload may take: up to its declared length, else the limit."""
    return (max_file_bytes if rec.length is None else rec.length) - rec.offset


def check_declared_part(rec: UploadRecord, content_length: int | None, max_file_bytes: int) -> None:
    """Refuse before reading a part whose Content-Length already says it will not fit."""
    if content_length is not None and content_length > room(rec, max_file_bytes):
        raise overflow(rec, max_file_bytes)


def overflow(rec: UploadRecord, max_file_bytes: int) -> UploadError:
    """The refusal of bytes beyond the declared length or the size limit (413)."""
    if rec.length is not None:
        return UploadError(
            f"the part goes beyond the declared Upload-Length of {rec.length} bytes (offset held {rec.offset})",
            code="file.length_exceeded",
            status=413,
            field="Upload-Length",
        )
    return too_large(max_file_bytes, "body")


def too_large(max_file_bytes: int, field: str) -> UploadError:
    return UploadError(
        f"a file may be at most {max_file_bytes} bytes (files.max_file_bytes)",
        code="file.too_large",
        status=413,
        field=field,
    )


class OffsetMismatch(UploadError):
    """A part sent at an offset other than the one held; `held` is what to resume from."""

    code = "file.offset_mismatch"
    status = 409

    def __init__(self, held: int, sent: int) -> None:
        super().__init__(
            f"Upload-Offset {sent} is not the offset held, {held}: resume from {held}", field="Upload-Offset"
        )
        self.held = held
