"""The files a document names (DESIGN §13): a back-end's request completed from its uploads, and
views of a body without the files' keys.

A back-end names each upload by `file_id` with its `filename` and `media_type`; the gateway checks
that the upload is its caller's and complete, and writes into the signed document the plaintext's
`size` and `sha256` and a fresh random 32-byte `key`. The key travels only inside the sealed
document: `without_keys` is what any view, log line or page shows. Pure: the upload records, the
clock's verdict and the random bytes are the caller's.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec

from . import upload
from .errors import SchemaError
from .upload import UploadRecord

__all__ = [
    "KEY_BYTES",
    "TYPES_WITH_FILES",
    "FileRequest",
    "SealedFile",
    "check_sealed",
    "complete",
    "named_file_ids",
    "sealed_files",
    "without_keys",
]

KEY_BYTES: Final = 32
#: The business types whose bodies may (or, training-material, must) name files.
TYPES_WITH_FILES: Final = ("seizure-share", "seminar-notice", "training-material")


class FileRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One file as a back-end names it in a submitted body."""

    file_id: str
    filename: str
    media_type: str


def complete(
    msg_type: str,
    body: dict[str, Any],
    uploads: Mapping[str, UploadRecord | None],
    owner: str | None,
    max_files: int,
    randbytes: Callable[[int], bytes],
) -> dict[str, Any]:
    """A copy of `body` whose `files` carry size, sha256 and a new key, from `uploads` (each named
    file id's record as the caller sees it: None when missing, expired or another token's).

    Raises SchemaError naming `$.files[i].<field>`: `schema.type`/`schema.required`/
    `schema.unknown_field` for a malformed entry (the gateway writes size, sha256 and key itself),
    `schema.forbidden_field` for files on a type that carries none, `file.limit` (422) above
    `max_files`, `file.not_found` (422) for an upload the caller does not hold, `file.incomplete`
    (422) for one still being sent. The body's own schema checks the rest afterwards.
    """
    given = body.get("files")
    if given is None:
        return body
    if msg_type not in TYPES_WITH_FILES:
        raise SchemaError(f"a {msg_type} carries no files", code="schema.forbidden_field", field="$.files")
    if not isinstance(given, list):
        raise SchemaError("files must be an array", code="schema.type", field="$.files")
    if len(given) > max_files:
        raise SchemaError(
            f"a message may name at most {max_files} files (files.max_files_per_message)",
            code="file.limit",
            field="$.files",
        )
    out: list[dict[str, Any]] = []
    for i, item in enumerate(given):
        where = f"$.files[{i}]"
        req = _request(item, where)
        rec = uploads.get(req.file_id)
        if rec is None or owner is None or rec.owner != owner:
            raise SchemaError(f"no upload {req.file_id} of this token", code="file.not_found", field=f"{where}.file_id")
        if not rec.complete or rec.sha256 is None:
            raise SchemaError(
                f"upload {req.file_id} is not complete ({rec.offset} of {rec.length} bytes held)"
                if rec.length is not None
                else f"upload {req.file_id} is not complete",
                code="file.incomplete",
                field=f"{where}.file_id",
            )
        key = base64.urlsafe_b64encode(randbytes(KEY_BYTES)).rstrip(b"=").decode()
        out.append(
            {
                "file_id": req.file_id,
                "filename": req.filename,
                "media_type": req.media_type,
                "size": rec.size,
                "sha256": rec.sha256,
                "key": key,
            }
        )
    return {**body, "files": out}


def _request(item: object, where: str) -> FileRequest:
    if not isinstance(item, dict):
        raise SchemaError("a file must be an object", code="schema.type", field=where)
    for name in ("size", "sha256", "key"):
        if name in item:
            raise SchemaError(
                f"{name} is written by the gateway, not given", code="schema.forbidden_field", field=f"{where}.{name}"
            )
    for name in ("file_id", "filename", "media_type"):
        if name not in item:
            raise SchemaError("required field is missing", code="schema.required", field=f"{where}.{name}")
        if not isinstance(item[name], str):
            raise SchemaError("must be a string", code="schema.type", field=f"{where}.{name}")
    extra = sorted(set(item) - {"file_id", "filename", "media_type"})
    if extra:
        raise SchemaError("field is not allowed here", code="schema.unknown_field", field=f"{where}.{extra[0][:64]}")
    if not upload.FILE_ID.fullmatch(item["file_id"]):
        raise SchemaError("file_id must be an upload's id", code="schema.uuid", field=f"{where}.file_id")
    return FileRequest(item["file_id"], item["filename"], item["media_type"])


def check_sealed(body: dict[str, Any]) -> None:
    """A received (validated) body's files each carry size, sha256 and key, which the sending
    gateway writes; SchemaError `schema.required` naming `$.files[i].<field>` otherwise."""
    files = body.get("files")
    for i, f in enumerate(files if isinstance(files, list) else []):
        for name in ("size", "sha256", "key"):
            if not isinstance(f, dict) or f.get(name) is None:
                raise SchemaError(
                    f"a sent document's file carries its {name}", code="schema.required", field=f"$.files[{i}].{name}"
                )


class SealedFile(msgspec.Struct, frozen=True):
    """A file as a sent document carries it, with what the gateway wrote."""

    file_id: str
    filename: str
    media_type: str
    size: int
    sha256: str
    key: str


def sealed_files(msg_type: str, document: bytes) -> list[SealedFile]:
    """The files a received document (its exact JSON bytes, already checked) names."""
    if msg_type not in TYPES_WITH_FILES:
        return []
    body = msgspec.json.decode(document).get("body")
    return sealed_files_in(msg_type, body if isinstance(body, dict) else {})


def sealed_files_in(msg_type: str, body: dict[str, Any]) -> list[SealedFile]:
    """`sealed_files` of a document already parsed: the files its (checked) body names."""
    if msg_type not in TYPES_WITH_FILES:
        return []
    return msgspec.convert(body.get("files") or [], list[SealedFile])


def named_file_ids(body: object) -> list[str]:
    """The file ids a (validated) body names, in order."""
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(files, list):
        return []
    return [f["file_id"] for f in files if isinstance(f, dict) and isinstance(f.get("file_id"), str)]


def without_keys(body: dict[str, Any]) -> dict[str, Any]:
    """`body` as views show it: each file without its `key` (a copy; the body is not changed)."""
    files = body.get("files")
    if not isinstance(files, list) or not any(isinstance(f, dict) and "key" in f for f in files):
        return body
    shown = copy.copy(body)
    shown["files"] = [{k: v for k, v in f.items() if k != "key"} if isinstance(f, dict) else f for f in files]
    return shown
