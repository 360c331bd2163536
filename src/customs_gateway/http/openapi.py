"""The OpenAPI 3.1 document of both HTTP surfaces, generated from the code's own definitions.

Paths, methods, handlers and roles come from the local API's route table (`http.local.ROUTES`);
message body schemas from the msgspec structs (`core.schemas`, `core.control`); the answers'
schemas from the Structs handlers return (`http.views`, via `msgspec.json.schema_components`);
enums from the core's constants. What is still written here as data: operations (roles, summaries,
descriptions, problem responses), the peer API's paths, and schemas no Struct owns yet (problem
details, the audit entry format, the hand-parsed admin request bodies, envelopes and key bundles,
which are signed bytes); the tests hold routes and document together (every route documented,
every documented path routed). Served at `GET /openapi.json`, exported to `docs/api/openapi.json`
by `scripts/export_openapi.py`.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import msgspec

from .. import __version__
from ..core import schemas
from ..core.audit import KINDS
from ..core.control import AckRequest
from ..core.envelope import ALL_TYPES, BUSINESS_TYPES, MEDIA_TYPE
from ..core.keys import SUITES
from ..core.state import STATUSES
from ..core.witness import MEDIA_TYPE as COSIGN_MEDIA_TYPE
from . import views
from .problems import PROBLEM_TYPE, Problem

OPENAPI_VERSION: Final = "3.1.0"
Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: Mapping[str, Schema], required: Iterable[str] = (), description: str = "") -> Schema:
    out: Schema = {"type": "object", "properties": dict(props), "required": list(required)}
    out["additionalProperties"] = False
    if description:
        out["description"] = description
    return out


def _null(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _str(description: str = "", **kw: Any) -> Schema:
    out: Schema = {"type": "string", **kw}
    if description:
        out["description"] = description
    return out


def _int(description: str = "", minimum: int = 0, **kw: Any) -> Schema:
    out: Schema = {"type": "integer", "minimum": minimum, **kw}
    if description:
        out["description"] = description
    return out


def _b64url(description: str) -> Schema:
    return _str(description, pattern="^[A-Za-z0-9_-]*$", contentEncoding="base64url")


# --- schemas no Struct owns yet (the answers' are generated from `http.views`) ----------------

_TS_PATTERN: Final = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"
VIEW_SCHEMAS: Final[dict[str, Schema]] = {
    "Timestamp": _str("RFC 3339 UTC with milliseconds", format="date-time", pattern=_TS_PATTERN),
    "Sha256Hex": _str("SHA-256, lower-case hex", pattern="^[0-9a-f]{64}$"),
    "KeyId": _str("first 16 bytes of SHA-256 of the raw public key, hex", pattern="^[0-9a-f]{32}$"),
    "MessageId": _str("UUIDv7", format="uuid", maxLength=64),
    "MessageSchemas": {
        "type": "object",
        "description": "JSON Schema (draft 2020-12) of each business message type, keyed by type.",
        "properties": {t: {"type": "object"} for t in BUSINESS_TYPES},
        "required": list(BUSINESS_TYPES),
    },
    "RotateRequest": {
        "type": "object",
        "properties": {"kind": {"enum": ["signing", "encryption"]}},
        "required": ["kind"],
    },
    "RenewRequest": {
        "type": "object",
        "properties": {
            "kind": {"enum": ["signing", "encryption", "witness", "tls"]},
            "valid_days": _int("validity of the new keys or certificate, in days (default 730)", 1) | {"maximum": 3650},
        },
        "required": ["kind"],
        "additionalProperties": False,
    },
    "RevokeRequest": {
        "type": "object",
        "properties": {"reason": _str("why (kept in the bundle)", minLength=1, maxLength=2000)},
        "required": ["reason"],
    },
    "RecoverRequest": {
        "type": "object",
        "properties": {
            "reason": _str("why the store was restored (kept in the audit log)", minLength=1, maxLength=2000)
        },
        "required": ["reason"],
        "additionalProperties": False,
    },
    "AuditEntry": {
        "type": "object",
        "description": "One audit log entry (the Merkle leaf is its exact JSON bytes). Never holds a body.",
        "properties": {
            "v": {"const": 1},
            "at": _ref("Timestamp"),
            "kind": {"enum": sorted(KINDS)},
            "actor": _str('"token:<id>", "peer:<identity>", "system" or "cli:…"'),
            "message_id": _str(),
            "peer": _str(),
            "code": _str("refusal or error code"),
            "digests": {"type": "object", "additionalProperties": _ref("Sha256Hex")},
            "detail": {"type": "object"},
        },
        "required": ["v", "at", "kind", "actor"],
    },
    # --- peer API ---
    "Envelope": _obj(
        {
            "v": {"const": 1},
            "header": _b64url(
                "exact header bytes: JSON {attempt, created_at, enc_kid, from, id, sent_at, seq, sig_kid, suite, "
                "to, type} (keys sorted)"
            )
            | {"contentMediaType": "application/json", "contentSchema": _ref("EnvelopeHeader")},
            "ciphertext": _b64url("HPKE enc || ct of the signed document"),
            "signature": _b64url(
                "Ed25519 over 'customs-gateway/v1 envelope\\n' || header bytes || SHA-256(ciphertext)"
            ),
        },
        ("v", "header", "ciphertext", "signature"),
        f"The wire envelope ({MEDIA_TYPE}); see docs/wire-format.md for every byte.",
    ),
    "EnvelopeHeader": _obj(
        {
            "id": _ref("MessageId"),
            "seq": _int(),
            "from": _str(maxLength=64),
            "to": _str(maxLength=64),
            "type": {"enum": list(ALL_TYPES)},
            "created_at": _ref("Timestamp"),
            "sent_at": _ref("Timestamp"),
            "attempt": _int(),
            "suite": {"enum": list(SUITES)},
            "sig_kid": _ref("KeyId"),
            "enc_kid": _ref("KeyId"),
        },
        ("id", "seq", "from", "to", "type", "created_at", "sent_at", "attempt", "suite", "sig_kid", "enc_kid"),
    ),
    "EnvelopeBatch": _obj({"envelopes": {"type": "array", "items": _ref("Envelope"), "minItems": 1}}, ("envelopes",)),
    "SignedBundle": _obj(
        {
            "v": {"const": 1},
            "bundle": _b64url("exact key bundle bytes (JSON)") | {"contentMediaType": "application/json"},
            "signatures": {
                "type": "array",
                "minItems": 1,
                "items": _obj(
                    {
                        "kid": _ref("KeyId"),
                        "signature": _b64url("Ed25519 over 'customs-gateway/v1 key-bundle\\n' || bundle"),
                    },
                    ("kid", "signature"),
                ),
            },
        },
        ("v", "bundle", "signatures"),
    ),
}


def _submit_variant(msg_type: str, body: str, *, batch: bool = False) -> Schema:
    key = {"idempotency_key": _str("retry-safe key of this message (1-200 printable characters), per token")}
    return _obj(
        {
            **(key if batch else {}),
            "type": {"const": msg_type},
            "to": _str("the peer's identity (the one configured peer)"),
            "body": _ref(body),
            "expires_at": _ref("Timestamp")
            | {"description": "undelivered after this, the message expires (≤ 30 days)"},
            "in_reply_to": _ref("MessageId")
            | {
                "description": "the message this one answers: one the two gateways exchanged (threads); "
                "a port-visit reply or a consent message answers the message its body names unless set"
            },
            "handling": _ref("HandlingTermsRequest"),
        },
        ("type", "to", "body"),
    )


# --- operations --------------------------------------------------------------------------------


def _param(where: str, name: str, schema: Schema, description: str, required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "description": description,
        "schema": schema,
    }


def _json(schema: Schema, description: str, headers: Mapping[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = dict(headers)
    return out


def _text(media_type: str, description: str, schema: Schema | None = None) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": schema or {"type": "string"}}}}


def _problems(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": f"#/components/responses/Problem{s}"} for s in statuses}


_PROBLEM_TEXT: Final = {
    400: "Malformed request (bad JSON, bad base64, a value out of range), or one the HTTP parser refuses "
    "(`http.malformed`: a request line or header too long, bad framing): any operation may answer it.",
    401: "No valid bearer token (`auth.required`, `auth.invalid`, `auth.scheme`).",
    403: "The token's role may not call this endpoint (`auth.forbidden`), or a signature or key check failed.",
    404: "No such resource.",
    408: "The request body did not arrive within `security.body_read_timeout_seconds` (`http.body_timeout`).",
    409: "Conflicts with stored state.",
    410: "Gone for good: disposed of at the end of its retention (`atrest.disposed`, `file.gone`).",
    413: "Request body larger than `security.max_body_bytes` (or a batch over `security.max_batch`).",
    415: "Content-Type is not the one this endpoint takes (`http.unsupported_media_type`).",
    422: "A field breaks a rule: `code` names the rule, `field` the JSON path, header or parameter.",
    429: "Too many requests for this token (`rate.limited`) or too many long-polls (`rate.long_polls`).",
    502: "The peer's answer could not be used (`recovery.state_unavailable`, `recovery.receipt_invalid`).",
    503: "Unavailable for now (`store.unavailable`: nothing was written; `peer.busy`). Retry after `Retry-After`.",
}

_ROTATE_ERRORS: Final = _problems(409, 413, 415, 422, 503)
_LIMIT: Final = _param("query", "limit", _int(minimum=1, maximum=500, default=100), "page size")
_ID: Final = _param("path", "id", _ref("MessageId"), "message id")
_REFERENCE: Final = _param(
    "query",
    "reference",
    _str(minLength=1, maxLength=200),
    "only messages carrying this business reference: a seizure's case reference, a port-visit invitation's id "
    "(the invitation and its replies), a seminar's title; compared after Unicode NFKC, case folding and "
    "collapsing white space. Indexed as keyed tags, never stored in clear.",
)

_FILE_ID: Final = _param("path", "file_id", _str(format="uuid", maxLength=64), "the upload's id (`file_id`)")
_UPLOAD_HEADERS: Final = {
    "Upload-Offset": {"description": "bytes held: the next part starts here", "schema": _int()},
    "Upload-Length": {"description": "the declared size (absent if none was declared)", "schema": _int()},
    "Tus-Resumable": {"description": "the tus protocol version followed", "schema": {"const": "1.0.0"}},
    "Location": {"description": "/v1/files/{file_id}", "schema": {"type": "string"}},
}
_FILE_BYTES: Final = {
    "required": False,
    "description": "The file's bytes (any media type), streamed: never held whole in memory.",
    "content": {"application/octet-stream": {}},
}
_HELD_OFFSET: Final = {
    "Upload-Offset": {"description": "the offset held: resume from here", "schema": _int()},
}


def _download(description: str) -> dict[str, Any]:
    return {
        "tags": ["files"],
        "description": description + " One `Range` (`bytes=a-b`, `a-`, `-n`) gives 206 with `Content-Range`; "
        "`Digest-SHA256` is the whole file's SHA-256 (hex) as the document states it. Each download is an "
        "audit entry (`file_downloaded`: the token, the message, the file and the byte range), written before "
        "the first byte; a file disposed of is 410 (`atrest.disposed`, `file.gone`) before any byte.",
        "parameters": [
            _param("path", "id", _str(format="uuid", maxLength=64), "message id", True),
            _param("path", "file_id", _str(format="uuid", maxLength=64), "the file's id in the document", True),
            _param("header", "Range", _str(maxLength=64), "one byte range"),
        ],
        "responses": {
            "200": {"description": "The file.", "content": {"application/octet-stream": {}}},
            "206": {"description": "The range asked for.", "content": {"application/octet-stream": {}}},
            "416": {
                "description": "`file.range`: not one range inside the file.",
                "content": {PROBLEM_TYPE: {"schema": _ref("Problem")}},
            },
            **_problems(404, 410, 422),
        },
    }


#: The upload endpoints (DESIGN §13; http/files.py): tus-style resumable uploads.
FILE_OPERATIONS: Final[dict[tuple[str, str], dict[str, Any]]] = {
    ("POST", "/v1/files"): {
        "tags": ["files"],
        "description": "The body is the file's bytes; the request's `Content-Type` is its media type (any; "
        "`application/octet-stream` when absent). Without `Upload-Length` the body is the whole file and the "
        "upload is complete when it ends. With `Upload-Length` the body may be a first part (or empty) and "
        "the rest follows by `PATCH` at the offset held, in the manner of the tus resumable-upload protocol; "
        "to resume from the first byte, send an empty body. A body cut off, refused or failing to be "
        "written leaves nothing: no upload is created. At most `files.max_file_bytes` (default 2 GiB: "
        "`file.too_large`); an upload untouched for `files.upload_ttl_seconds` is removed. It belongs to "
        "this token: another gets 404.",
        "parameters": [
            _param("query", "filename", _str(minLength=1, maxLength=255), "the file's name (no / or \\)"),
            _param(
                "header",
                "Upload-Length",
                _str(pattern="^[0-9]{1,19}$"),
                "the whole file's size in bytes, when it is sent in parts",
            ),
        ],
        "requestBody": _FILE_BYTES,
        "responses": {
            "201": _json(_ref("FileUpload"), "Created: the bytes of this request are held (fsync'd).", _UPLOAD_HEADERS),
            **_problems(400, 413, 422, 503),
        },
    },
    ("GET", "/v1/files/{file_id}"): {
        "tags": ["files"],
        "description": "Metadata only (the bytes are not served here).",
        "parameters": [_FILE_ID],
        "responses": {"200": _json(_ref("FileUpload"), "The upload.", _UPLOAD_HEADERS), **_problems(404)},
    },
    ("HEAD", "/v1/files/{file_id}"): {
        "tags": ["files"],
        "description": "As tus: `Upload-Offset` is the offset held, `Upload-Length` the declared size; no body.",
        "parameters": [_FILE_ID],
        "responses": {"200": {"description": "The offset held.", "headers": _UPLOAD_HEADERS}, **_problems(404)},
    },
    ("PATCH", "/v1/files/{file_id}"): {
        "tags": ["files"],
        "description": "Appends the body at `Upload-Offset`, which must be the offset held (else 409 "
        "`file.offset_mismatch` naming it, in the detail and the `Upload-Offset` header). A part that goes "
        "beyond the declared `Upload-Length` or `files.max_file_bytes` (413), or that cannot be written "
        "(503 `file.disk_full`), is not kept at all; a part the client stops sending keeps what arrived "
        "(resume from the offset held). Once complete, `sha256` is the whole file's. "
        "`application/offset+octet-stream` (tus) or any other Content-Type is accepted.",
        "parameters": [
            _FILE_ID,
            _param(
                "header",
                "Upload-Offset",
                _str(pattern="^[0-9]{1,19}$"),
                "where this part starts: the offset held",
                required=True,
            ),
        ],
        "requestBody": _FILE_BYTES,
        "responses": {
            "200": _json(_ref("FileUpload"), "The part is held (fsync'd).", _UPLOAD_HEADERS),
            "409": {
                "description": "`file.offset_mismatch` (the offset held is in `Upload-Offset`), `file.complete`, "
                "`file.busy` (another request is writing this upload).",
                "headers": _HELD_OFFSET,
                "content": {PROBLEM_TYPE: {"schema": _ref("Problem")}},
            },
            **_problems(400, 404, 413, 422, 503),
        },
    },
    ("GET", "/v1/inbox/{id}/files/{file_id}"): _download(
        "A file a received message names, decrypted as it streams out (the receiver checked it whole against "
        "the signed document's size and SHA-256 before the message entered the inbox)."
    ),
    ("GET", "/v1/messages/{id}/files/{file_id}"): _download("The sender's copy of a file a sent message names."),
}

#: (method, path) -> operation fields the handlers do not say themselves. Keys match ROUTES.
OPERATIONS: Final[dict[tuple[str, str], dict[str, Any]]] = {
    ("POST", "/v1/messages"): {
        "tags": ["messages"],
        "summary": "Submit a message to the peer",
        "description": "Validates the body against its type's schema, signs it and commits it to the outbox "
        "before answering 202 (G5). The same `Idempotency-Key` with the same request returns the same message.",
        "parameters": [
            _param(
                "header",
                "Idempotency-Key",
                _str(minLength=1, maxLength=200),
                "retry-safe key (1-200 printable characters), scoped to the token",
            )
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("SubmitRequest")}}},
        "responses": {
            "202": _json(
                _ref("SubmitResponse"),
                "Accepted and durably queued.",
                {
                    "Location": {"description": "/v1/messages/{id}", "schema": {"type": "string"}},
                    "Idempotent-Replayed": {
                        "description": "`true` when an earlier submission with this key was returned",
                        "schema": {"const": "true"},
                    },
                },
            ),
            **_problems(409, 413, 415, 422, 503),
        },
    },
    ("POST", "/v1/messages:batch"): {
        "tags": ["messages"],
        "summary": "Submit up to 500 messages at once",
        "description": "Each message is what `POST /v1/messages` takes, plus its own optional `idempotency_key`; "
        "each is checked as that endpoint checks one, and the accepted ones are committed in one transaction, "
        "in the order given. The answer is 200 with one result per message: `accepted`, `replayed` (its key "
        "returned the message made before) or `refused` with the problem (fields under `$.messages[i]`); a "
        "refused message changes nothing. Only a malformed batch as a whole is a 422.",
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("BatchRequest")}}},
        "responses": {
            "200": _json(_ref("BatchResults"), "One result per message, in order."),
            **_problems(413, 415, 422, 503),
        },
    },
    ("GET", "/v1/messages"): {
        "tags": ["messages"],
        "summary": "List messages",
        "parameters": [
            _param("query", "direction", {"enum": ["outbound", "inbound"], "default": "outbound"}, "which side"),
            _param("query", "status", {"enum": list(STATUSES)}, "outbound only: this status"),
            _param("query", "type", {"enum": list(BUSINESS_TYPES)}, "this message type"),
            _param("query", "since", _ref("Timestamp"), "outbound: created at or after; inbound: received at or after"),
            _REFERENCE,
            _param(
                "query",
                "cursor",
                _str(maxLength=64),
                "`next_cursor` of the previous page (outbound: a message id; inbound: an integer cursor)",
            ),
            _LIMIT,
        ],
        "responses": {
            "200": _json(
                {"anyOf": [_ref("MessageList"), _ref("InboxSummaryList")]},
                "One page, oldest first: `MessageList` outbound, `InboxSummaryList` with `direction=inbound`.",
            ),
            **_problems(422, 503),
        },
    },
    ("GET", "/v1/messages/{id}"): {
        "tags": ["messages"],
        "summary": "Status, history, receipt and ack of one submitted message",
        "parameters": [_ID],
        "responses": {"200": _json(_ref("Message"), "The message."), **_problems(404, 503)},
    },
    ("GET", "/v1/threads/{id}"): {
        "tags": ["messages"],
        "summary": "The thread a message belongs to, both directions, oldest first",
        "description": "Walks `in_reply_to` up to the thread's first message, then every reply below it, "
        "outbound and inbound (at most 500 messages; `truncated` says when there are more). "
        "Metadata only: no bodies, so an auditor may read it too.",
        "parameters": [_param("path", "id", _ref("MessageId"), "any message of the thread")],
        "responses": {"200": _json(_ref("Thread"), "The thread."), **_problems(404, 422, 503)},
    },
    **FILE_OPERATIONS,
    ("GET", "/v1/inbox"): {
        "tags": ["inbox"],
        "summary": "Read verified, decrypted messages from the peer after a cursor (long-poll)",
        "parameters": [
            _param("query", "after", _int(default=0), "cursor: only messages after it"),
            _REFERENCE,
            _LIMIT,
            _param(
                "query",
                "wait",
                {"type": "number", "minimum": 0, "maximum": 30, "default": 0},
                "seconds to wait for a message when none is there yet",
            ),
        ],
        "responses": {"200": _json(_ref("InboxPage"), "Messages in cursor order."), **_problems(422, 503)},
    },
    ("GET", "/v1/inbox/{id}"): {
        "tags": ["inbox"],
        "summary": "One received message: body, handling terms, current permissions and consent requests",
        "parameters": [_param("path", "id", _ref("MessageId"), "inbox message id")],
        "responses": {"200": _json(_ref("InboxMessage"), "The message."), **_problems(404, 422, 503)},
    },
    ("POST", "/v1/inbox/{id}/consent-requests"): {
        "tags": ["inbox"],
        "summary": "Ask the provider of a received message for consent to pass it on or use it as evidence",
        "description": "Queues a signed `consent-request` naming the message (DESIGN §12), as `POST /v1/messages` "
        "would (the same `Idempotency-Key` rule); the provider's `consent-decision` changes the message's "
        "`permissions`. Problems are named as fields of this request (`$.authority`).",
        "parameters": [
            _param("path", "id", _ref("MessageId"), "inbox message id"),
            _param("header", "Idempotency-Key", _str(minLength=1, maxLength=200), "retry-safe key, per token"),
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ConsentAsk")}}},
        "responses": {
            "202": _json(_ref("SubmitResponse"), "The consent request is queued to the provider."),
            **_problems(404, 409, 422, 503),
        },
    },
    ("POST", "/v1/messages/{id}/consent-requests/{request_id}/decision"): {
        "tags": ["messages"],
        "summary": "Decide on a consent request the peer made about one of our messages",
        "description": "Queues a signed `consent-decision` naming the request (granted, refused, or granted with "
        "conditions, optionally until a date); a later decision on the same request replaces the earlier one.",
        "parameters": [
            _param("path", "id", _ref("MessageId"), "our message the request is about"),
            _param("path", "request_id", _ref("MessageId"), "the consent request (an inbox message)"),
            _param("header", "Idempotency-Key", _str(minLength=1, maxLength=200), "retry-safe key, per token"),
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ConsentAnswer")}}},
        "responses": {
            "202": _json(_ref("SubmitResponse"), "The decision is queued to the requester."),
            **_problems(404, 409, 422, 503),
        },
    },
    ("POST", "/v1/inbox/{id}/ack"): {
        "tags": ["inbox"],
        "summary": "Acknowledge an inbox message; a signed `ack` travels back to the sender",
        "parameters": [_param("path", "id", _ref("MessageId"), "inbox message id")],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("AckRequest")}}},
        "responses": {
            "202": _json(_ref("AckResponse"), "The ack is queued to the sender."),
            **_problems(404, 409, 413, 415, 422, 503),
        },
    },
    ("GET", "/v1/schemas"): {
        "tags": ["schemas"],
        "summary": "JSON Schemas of the message types",
        "responses": {"200": _json(_ref("MessageSchemas"), "Schemas by type (as docs/schemas/).")},
    },
    ("GET", "/v1/admin/keys"): {
        "tags": ["admin"],
        "summary": "Our public keys and the peer's, with validity and state",
        "responses": {"200": _json(_ref("AdminKeys"), "Key records.")},
    },
    ("POST", "/v1/admin/keys"): {
        "tags": ["admin"],
        "summary": "Rotate our signing or encryption keys",
        "description": "The same as `POST /v1/admin/keys/rotate`.",
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("RotateRequest")}}},
        "responses": {
            "202": _json(_ref("RotateResponse"), "New keys made; the announcement is queued."),
            **_ROTATE_ERRORS,
        },
    },
    ("POST", "/v1/admin/keys/rotate"): {
        "tags": ["admin"],
        "summary": "Rotate our signing or encryption keys; the new bundle is announced to the peer",
        "description": "A new signing key signs only once the peer has receipted the announcement.",
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("RotateRequest")}}},
        "responses": {
            "202": _json(_ref("RotateResponse"), "New keys made; the announcement is queued."),
            **_ROTATE_ERRORS,
        },
    },
    ("POST", "/v1/admin/recover"): {
        "tags": ["admin"],
        "summary": "After a restore from backup: level this store with what the peer has seen",
        "description": "Asks the peer (`GET /peer/v1/state`, signed) what it holds of ours; marks as delivered, "
        "with the peer's original receipts, the queued messages it already has; names the messages it holds "
        "that this store lost; continues our sequence numbers after the peer's; one `recovered` audit entry. "
        "409 `recovery.not_needed` when the store is not behind (docs/operations.md, restore).",
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("RecoverRequest")}}},
        "responses": {
            "200": _json(_ref("RecoverResponse"), "Recovered; delivery and cosigning resume."),
            **_problems(400, 409, 413, 415, 422, 502, 503),
        },
    },
    ("POST", "/v1/admin/keys/renew"): {
        "tags": ["admin"],
        "summary": "Renew keys or the TLS certificate with a later expiry; announced to the peer",
        "description": "New keys of the kind (or a new TLS certificate) valid `valid_days` from now, announced "
        "in-band with proof of possession. A new signing or witness key, or certificate, is used only once the "
        "peer has receipted the announcement; the peer pins a new certificate beside the old one for the overlap "
        "(decision 0008).",
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("RenewRequest")}}},
        "responses": {
            "202": _json(_ref("RenewResponse"), "Renewed; the announcement is queued."),
            **_ROTATE_ERRORS,
        },
    },
    ("POST", "/v1/admin/keys/{kid}/revoke"): {
        "tags": ["admin"],
        "summary": "Revoke one of our keys from now on; the revocation is announced to the peer",
        "parameters": [_param("path", "kid", _ref("KeyId"), "key id")],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("RevokeRequest")}}},
        "responses": {
            "202": _json(_ref("RevokeResponse"), "Revoked; the announcement is queued."),
            **_problems(404),
            **_ROTATE_ERRORS,
        },
    },
    ("GET", "/v1/admin/peers"): {
        "tags": ["admin"],
        "summary": "The peer: URL, bundle serial, sequence numbers and gaps, queue",
        "responses": {"200": _json(_ref("AdminPeers"), "One entry per peer."), **_problems(503)},
    },
    ("POST", "/v1/admin/tokens"): {
        "tags": ["admin"],
        "summary": "Issue an API token with one role (shown once, stored hashed)",
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("TokenRequest")}}},
        "responses": {"201": _json(_ref("TokenResponse"), "The token."), **_problems(413, 415, 422, 503)},
    },
    ("GET", "/v1/admin/tokens"): {
        "tags": ["admin"],
        "summary": "Every token issued, revoked ones too (never a secret), oldest first",
        "responses": {"200": _json(_ref("TokenList"), "The tokens."), **_problems(503)},
    },
    ("POST", "/v1/admin/tokens/{token_id}/revoke"): {
        "tags": ["admin"],
        "summary": "Revoke an API token from now on (this gateway refuses it at once; audit entry token_revoked)",
        "parameters": [_param("path", "token_id", _str("token id", pattern="^[0-9a-f]{16}$"), "token id")],
        "responses": {
            "200": _json(_ref("TokenRevoked"), "Revoked."),
            **_problems(404, 409, 422, 503),
        },
    },
    ("GET", "/v1/admin/holds"): {
        "tags": ["admin"],
        "summary": "Legal holds, ours and the peer's, most recent first",
        "parameters": [
            _param("query", "active", {"enum": ["true", "false"], "default": "false"}, "`true`: only holds in force"),
            _param("query", "limit", _int(minimum=1, maximum=1000, default=100), "how many"),
        ],
        "responses": {"200": _json(_ref("HoldList"), "The holds."), **_problems(422, 503)},
    },
    ("POST", "/v1/admin/holds"): {
        "tags": ["admin"],
        "summary": "Place a legal hold: keep a message past its retention date (reason required)",
        "description": "The message (sent or received) is sealed again under a key of its own, so its day key is "
        "destroyed on time for every other message; an audit entry `hold_placed` is written and a signed "
        "`legal-hold` notice queued to the peer. 404 `hold.not_found` for an unknown message, 409 `hold.disposed` "
        "for a message already disposed of, 409 `hold.exists` for one already held, 422 for a missing or blank "
        "reason.",
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("HoldRequest")}}},
        "responses": {"201": _json(_ref("HoldView"), "Held."), **_problems(404, 409, 413, 415, 422, 503)},
    },
    ("GET", "/v1/admin/holds/{id}"): {
        "tags": ["admin"],
        "summary": "Our legal hold on one message",
        "parameters": [_param("path", "id", _ref("MessageId"), "message id")],
        "responses": {"200": _json(_ref("HoldView"), "The hold."), **_problems(404, 422, 503)},
    },
    ("POST", "/v1/admin/holds/{id}/release"): {
        "tags": ["admin"],
        "summary": "Release our legal hold; disposal resumes (at once if the retention date has passed)",
        "parameters": [_param("path", "id", _ref("MessageId"), "message id")],
        "requestBody": {"required": False, "content": {"application/json": {"schema": _ref("ReleaseRequest")}}},
        "responses": {"200": _json(_ref("HoldView"), "Released."), **_problems(404, 413, 415, 422, 503)},
    },
    ("GET", "/v1/admin/retention"): {
        "tags": ["admin"],
        "summary": "Retention now: messages due, disposed of and held; the last disposal round",
        "responses": {"200": _json(_ref("RetentionStatus"), "Retention status."), **_problems(503)},
    },
    ("POST", "/v1/admin/retention/run"): {
        "tags": ["admin"],
        "summary": "Run one disposal round now (bounded: `[retention] batch` messages)",
        "responses": {"200": _json(_ref("RetentionStatus"), "Retention status after the round."), **_problems(503)},
    },
    ("GET", "/v1/audit/entries"): {
        "tags": ["audit"],
        "summary": "Audit log entries from an index",
        "parameters": [
            _param("query", "start", _int(default=0), "first index"),
            _param("query", "limit", _int(minimum=1, maximum=1000, default=100), "how many"),
        ],
        "responses": {"200": _json(_ref("AuditEntries"), "Entries in log order."), **_problems(422, 503)},
    },
    ("GET", "/v1/audit/checkpoint"): {
        "tags": ["audit"],
        "summary": "The newest signed checkpoint (with the peer's cosignature once it has one)",
        "parameters": [
            _param(
                "query",
                "cosigned",
                {"enum": ["true", "false"], "default": "false"},
                "`true`: the newest checkpoint the peer has cosigned",
            )
        ],
        "responses": {
            "200": _text("text/plain", "C2SP signed note: checkpoint body, blank line, signature lines."),
            **_problems(404, 422, 503),
        },
    },
    ("GET", "/v1/audit/export"): {
        "tags": ["audit"],
        "summary": "Self-contained audit bundle up to the latest checkpoint (streamed JSON Lines)",
        "description": "Verify it offline with `customs-gateway audit verify FILE`; see docs/auditor-guide.md.",
        "responses": {
            "200": _text(
                "application/x-ndjson",
                "One JSON object per line: header, bundles, entries, evidence, checkpoints, end.",
            ),
            **_problems(409, 503),
        },
    },
    ("GET", "/v1/audit/evidence/{id}"): {
        "tags": ["audit"],
        "summary": "Evidence for one message: both logs' entries about it, proven into cosigned checkpoints",
        "description": (
            "Built from this gateway's store and the peer's part (fetched over the peer API). Verify it "
            "offline with `customs-gateway audit verify FILE`; see docs/auditor-guide.md. 409 while no "
            "checkpoint of a log is cosigned yet; 503 when the peer's part cannot be fetched."
        ),
        "parameters": [_param("path", "id", _str(maxLength=64), "business message id (sent or received)", True)],
        "responses": {
            "200": _text(
                "application/x-ndjson",
                "One JSON object per line: header, bundles, message (and ack) parts, two log parts, end.",
            ),
            **_problems(404, 409, 422, 503),
        },
    },
    ("GET", "/v1/audit/proof/inclusion"): {
        "tags": ["audit"],
        "summary": "RFC 9162 inclusion proof of one entry in a tree size",
        "parameters": [
            _param("query", "size", _int(minimum=1), "tree size (at most the log size)", True),
            _param("query", "index", _int(), "entry index, below size", True),
        ],
        "responses": {"200": _json(_ref("InclusionProof"), "The proof."), **_problems(400, 422, 503)},
    },
    ("GET", "/v1/audit/proof/consistency"): {
        "tags": ["audit"],
        "summary": "RFC 9162 consistency proof between two tree sizes",
        "parameters": [
            _param("query", "old", _int(), "older tree size", True),
            _param("query", "new", _int(), "newer tree size (at most the log size)", True),
        ],
        "responses": {"200": _json(_ref("ConsistencyProof"), "The proof."), **_problems(400, 422, 503)},
    },
    ("GET", "/healthz"): {
        "tags": ["operations"],
        "summary": "Liveness: the process answers",
        "responses": {"200": _json(_ref("Health"), "Alive.")},
    },
    ("GET", "/readyz"): {
        "tags": ["operations"],
        "summary": "Readiness: store, an active signing key, the peer bundle",
        "responses": {
            "200": _json(_ref("Readiness"), "Ready."),
            "503": _json(_ref("Readiness"), "Not ready; `checks` says why."),
        },
    },
    ("GET", "/metrics"): {
        "tags": ["operations"],
        "summary": "Prometheus metrics (text exposition format 0.0.4)",
        "responses": {"200": _text("text/plain", "Metric families; see docs/operations.md.")},
    },
    ("GET", "/openapi.json"): {
        "tags": ["operations"],
        "summary": "This OpenAPI 3.1 document",
        "responses": {"200": _json({"type": "object"}, "The document.")},
    },
}

_MTLS: Final[list[dict[str, list[str]]]] = [{"peerMutualTLS": []}]
PEER_PATHS: Final[dict[str, dict[str, Any]]] = {
    "/peer/v1/envelopes": {
        "post": {
            "operationId": "peer_envelopes",
            "tags": ["peer"],
            "summary": "Deliver one envelope or a batch; answers a signed receipt or refusal for each",
            "description": "Each envelope is verified, decrypted and committed to the inbox before its receipt "
            "is signed (G1-G5). Per-envelope failures are signed refusals inside a 200 answer; only a request "
            "that is not a JSON envelope or batch at all is a problem.",
            "security": _MTLS,
            "requestBody": {
                "required": True,
                "content": {
                    t: {"schema": {"oneOf": [_ref("Envelope"), _ref("EnvelopeBatch")]}}
                    for t in (MEDIA_TYPE, "application/json")
                },
            },
            "responses": {
                "200": _json(_ref("EnvelopeResults"), "One result per envelope, in order."),
                **_problems(400, 403, 408, 413, 415, 503),
            },
        }
    },
    "/peer/v1/keys": {
        "get": {
            "operationId": "peer_keys",
            "tags": ["peer"],
            "summary": "Our signed key bundle",
            "security": _MTLS,
            "responses": {"200": _json(_ref("SignedBundle"), "The signed bundle."), **_problems(403, 503)},
        }
    },
    "/peer/v1/state": {
        "get": {
            "operationId": "peer_state",
            "tags": ["peer"],
            "summary": "What we have seen of the calling peer, signed (asked at start and by `recover`)",
            "description": "A signed statement (label `peer-state`): the highest sequence number received from the "
            "caller, the caller's messages we hold with a sequence number above `after_seq` (id, seq, document "
            "SHA-256, the receipt we issued; at most 2000, `more` when there are more), and the last checkpoint of "
            "the caller's log we cosigned.",
            "security": _MTLS,
            "parameters": [_param("query", "after_seq", _int(minimum=0), "list held messages above this number")],
            "responses": {
                "200": _json({"type": "object"}, "The signed statement {peer-state, kid, signature}."),
                **_problems(403, 422, 503),
            },
        }
    },
    "/peer/v1/epoch": {
        "post": {
            "operationId": "peer_epoch",
            "tags": ["peer"],
            "summary": "The caller's log starts a new epoch after a restore: show its log_epoch entry, get it cosigned",
            "description": "Body: `{entry: base64url entry bytes, index, note: the first checkpoint of the new origin "
            "(signed note), proof: [base64url inclusion-proof nodes]}`. Accepted only if the origin is the next epoch "
            "of the caller's log, the entry is in the checkpoint and names exactly the checkpoint this witness "
            "cosigned last (decision 0009); answers the cosignature line, as `POST /peer/v1/cosign` does.",
            "security": _MTLS,
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {
                "200": _text("text/plain", "One cosignature line."),
                **_problems(400, 403, 409, 422, 503),
            },
        }
    },
    "/peer/v1/announce": {
        "post": {
            "operationId": "peer_announce",
            "tags": ["peer"],
            "summary": "Envelopes whose files are about to be pushed: the receiver checks each file as it arrives",
            "description": "Body: `{envelopes: [envelope, ...]}`, as `POST /peer/v1/envelopes`, sent before the "
            "files' parts (decision 0017). Each envelope is opened and checked as on delivery, but nothing is stored, "
            "audited or answered for it: the files it names are decrypted and hashed as their ciphertext arrives, so "
            "when the envelope itself is delivered only the last part is left to check. An envelope that does not "
            "open is ignored here (its delivery is refused). Answers the file ids now watched.",
            "security": _MTLS,
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["watching"],
                        "properties": {"watching": {"type": "array", "items": {"type": "string"}}},
                    },
                    "The files checked as they arrive.",
                ),
                **_problems(400, 403, 413, 415, 422, 503),
            },
        }
    },
    "/peer/v1/files/{file_id}": {
        "put": {
            "operationId": "peer_file_put",
            "tags": ["peer"],
            "summary": "A part of a file's ciphertext, sent before the envelope that names the file (DESIGN §13)",
            "description": "The body is the file's ChaCha20-Poly1305 STREAM ciphertext, bytes `start..end` of `total` "
            "as `Content-Range: bytes start-end/total` says; `start` must be the offset held (else 409 "
            "`file.offset_mismatch`). The answer, 204 or a problem, carries `Upload-Offset`: the bytes held "
            "(fsync'd), to resume from. A part cut off keeps what arrived (decision 0013); a part the disk "
            "cannot take (503 `file.disk_full`, `file.write_failed`) keeps nothing, the offset held stays; a "
            "gateway that is stopping cuts the parts arriving and refuses new ones (503 `file.stopping`).",
            "security": _MTLS,
            "parameters": [
                _param("path", "file_id", _str(format="uuid", maxLength=64), "the file's id", True),
                _param("header", "Content-Range", _str(maxLength=80), "bytes start-end/total", True),
            ],
            "requestBody": {"required": True, "content": {"application/octet-stream": {}}},
            "responses": {
                "204": {"description": "Held.", "headers": _HELD_OFFSET},
                **_problems(403, 409, 413, 422, 503),
            },
        },
        "head": {
            "operationId": "peer_file_offset",
            "tags": ["peer"],
            "summary": "How much of a file's ciphertext is held (`Upload-Offset`, `Upload-Length`); 404: none",
            "security": _MTLS,
            "parameters": [_param("path", "file_id", _str(format="uuid", maxLength=64), "the file's id", True)],
            "responses": {"200": {"description": "Held.", "headers": _HELD_OFFSET}, **_problems(403, 404)},
        },
    },
    "/peer/v1/evidence/{id}": {
        "get": {
            "operationId": "peer_evidence",
            "tags": ["peer"],
            "summary": "Our log's entries about one message between us, proven into a checkpoint the peer cosigned",
            "description": "The `log` part of an evidence file (docs/auditor-guide.md): owner, checkpoint size, the "
            "cosigned checkpoint note and each entry (base64url bytes) with its RFC 9162 inclusion proof. An id we "
            "do not hold gives a part with no entries.",
            "security": _MTLS,
            "parameters": [_param("path", "id", _str(maxLength=64), "message id", True)],
            "responses": {
                "200": _json({"type": "object"}, "The log part."),
                **_problems(403, 409, 422, 503),
            },
        }
    },
    "/peer/v1/cosign": {
        "post": {
            "operationId": "peer_cosign",
            "tags": ["peer"],
            "summary": "Witness (cosign) the peer's checkpoint: C2SP tlog-witness",
            "description": "Body: `old <size>`, one base64url consistency-proof node per line, a blank line, then "
            "the signed checkpoint note. Cosigned only if signed by the peer's log key and consistent with the "
            "checkpoint cosigned before.",
            "security": _MTLS,
            "requestBody": {"required": True, "content": {COSIGN_MEDIA_TYPE: {"schema": {"type": "string"}}}},
            "responses": {
                "200": _text("text/plain", "One cosignature line: `— <witness name> base64(keyid || time || sig)`."),
                "409": {
                    "description": "`old` is not the size we hold (body: that size), or a fork (`witness.fork`).",
                    "content": {
                        "text/x.tlog.size": {"schema": {"type": "string", "pattern": "^[0-9]+\\n$"}},
                        PROBLEM_TYPE: {"schema": _ref("Problem")},
                    },
                },
                **_problems(400, 403, 408, 422, 503),
            },
        }
    },
}


def _message_schemas() -> dict[str, Schema]:
    """Body schemas generated by msgspec from the body Structs (and `AckRequest`); each type name
    aliases its struct (resolved away by `_without_aliases`: client generators take a `$ref` with a
    sibling as a second model of the same name)."""
    bodies = schemas.body_types()
    _, out = msgspec.json.schema_components((*bodies.values(), AckRequest), ref_template=_ref("{name}")["$ref"])
    for alias, struct in bodies.items():
        out[alias] = _ref(struct.__name__) | {"description": f"Body of a `{alias}` message."}
    return out


def _view_schemas() -> dict[str, Schema]:
    """Components of the answers (`http.views`), generated by msgspec; only what no type can say is
    added here: an inbox body is one of the business message schemas, chosen by `type`; an audit
    row's `entry` is an `AuditEntry` (the log's own format, parsed as it was written)."""
    _, components = msgspec.json.schema_components(
        (*views.REQUEST_TYPES, *views.RESPONSE_TYPES, Problem), ref_template=_ref("{name}")["$ref"]
    )
    components["InboxMessage"]["properties"]["body"] |= {
        "anyOf": [*(_ref(t) for t in BUSINESS_TYPES), {"type": "null"}]
    }
    components["AuditRow"]["properties"]["entry"] |= _ref("AuditEntry")
    components |= _terms_requested(components)
    for name in ("ConsentAsk", "ConsentAnswer"):
        components[name]["properties"]["handling"] = {
            "anyOf": [_ref("HandlingTermsRequest"), {"type": "null"}],
            "description": "handling terms of this message itself; the profile's defaults fill the rest",
        }
    return components


def _terms_requested(components: dict[str, Schema]) -> dict[str, Schema]:
    """The handling terms a request may give: any of the fields of `HandlingTerms` (nested ones
    too); the agreement profile's defaults for the type complete the rest (DESIGN §12)."""
    out: dict[str, Schema] = {}
    for name in ("HandlingTerms", "LegalBasis", "Confidentiality"):
        partial = copy.deepcopy(components[name])
        partial.pop("required", None)
        out[f"{name}Request"] = partial
    terms = out["HandlingTermsRequest"]
    terms["title"] = "HandlingTermsRequest"
    terms["description"] = (
        "Handling terms a back-end gives (any subset); the agreement profile's defaults for the message type "
        "complete the rest, and the result must keep to the profile (422 `handling.*` otherwise)."
    )
    terms["properties"]["legal_basis"] = _ref("LegalBasisRequest")
    terms["properties"]["confidentiality"] = _ref("ConfidentialityRequest")
    out["LegalBasisRequest"]["title"] = "LegalBasisRequest"
    out["ConfidentialityRequest"]["title"] = "ConfidentialityRequest"
    return out


def _slug(method: str, path: str) -> str:
    return "_".join([method.lower(), *(p.strip("{}").replace(".", "_") for p in path.split("/") if p)])


def _summary(handler: Callable[..., Any], fallback: str) -> str:
    doc = (handler.__doc__ or "").strip()
    return doc.splitlines()[0].rstrip(".") if doc else fallback


def _operation(
    method: str, path: str, handler: Callable[..., Any], roles: tuple[str, ...], op_id: str
) -> dict[str, Any]:
    spec = copy.deepcopy(OPERATIONS.get((method, path), {"responses": {"200": {"description": "OK"}}}))
    op: dict[str, Any] = {"operationId": op_id, "tags": spec.pop("tags", ["operations"])}
    op["summary"] = _summary(handler, spec.pop("summary", f"{method} {path}"))
    op.update(spec)
    if roles:
        op["security"] = [{"bearerAuth": []}]
        op["x-roles"] = list(roles)
        op["description"] = (op.get("description", "") + f"\n\nRoles: {', '.join(roles)}.").strip()
        op["responses"].update(_problems(401, 403, 429))
    else:
        op["security"] = []
    if "requestBody" in op:
        op["responses"].update(_problems(408, 413, 415))
    op["responses"] = dict(sorted(op["responses"].items()))
    return op


def _components(message_schemas: dict[str, Schema]) -> dict[str, Any]:
    all_schemas: dict[str, Schema] = {**message_schemas, **copy.deepcopy(VIEW_SCHEMAS)}
    for name, schema in _view_schemas().items():
        if all_schemas.setdefault(name, schema) is not schema:
            raise ValueError(f"two schemas are named {name}")
    all_schemas["BatchRequest"] = _obj(
        {
            "messages": {
                "type": "array",
                "minItems": 1,
                "maxItems": 500,
                "items": {
                    "oneOf": [_ref(f"BatchSubmit-{t}") for t in BUSINESS_TYPES],
                    "discriminator": {
                        "propertyName": "type",
                        "mapping": {t: f"#/components/schemas/BatchSubmit-{t}" for t in BUSINESS_TYPES},
                    },
                },
            }
        },
        ("messages",),
    )
    all_schemas["SubmitRequest"] = {
        "description": "A message for the peer: its type, recipient, body, and optionally when it expires.",
        "oneOf": [_ref(f"Submit-{t}") for t in BUSINESS_TYPES],
        "discriminator": {
            "propertyName": "type",
            "mapping": {t: f"#/components/schemas/Submit-{t}" for t in BUSINESS_TYPES},
        },
    }
    for t in BUSINESS_TYPES:
        all_schemas[f"Submit-{t}"] = _submit_variant(t, t)
        all_schemas[f"BatchSubmit-{t}"] = _submit_variant(t, t, batch=True)
    x_request_id = {"$ref": "#/components/headers/X-Request-Id"}
    retry_after = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 1}}}
    return {
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "cgw_<16 hex id>.<43 base64url secret>",
                "description": "An API token with one role (agency, admin, auditor); see `x-roles` per operation.",
            },
            "peerMutualTLS": {
                "type": "mutualTLS",
                "description": "Mutual TLS with the certificates pinned in the exchanged key bundles.",
            },
        },
        "headers": {
            "X-Request-Id": {
                "description": "The request id (the caller's `X-Request-Id` if printable and ≤ 100 characters)",
                "schema": {"type": "string"},
            }
        },
        "responses": {
            f"Problem{s}": {
                "description": text,
                "headers": {"X-Request-Id": x_request_id, **(retry_after if s in (429, 503) else {})},
                "content": {PROBLEM_TYPE: {"schema": _ref("Problem")}},
            }
            for s, text in _PROBLEM_TEXT.items()
        },
        "schemas": dict(sorted(all_schemas.items())),
    }


def document(routes: Sequence[tuple[str, str, Callable[..., Any], tuple[str, ...]]]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the local API (its route table, `http.local.ROUTES`: method,
    path, handler, roles) and the peer API; a fresh dict each call."""
    paths: dict[str, dict[str, Any]] = {}
    names = Counter(handler.__name__ for _, _, handler, _ in routes)
    for method, path, handler, roles in routes:
        # A handler routed twice (an alias path) gets ids that say which route is which.
        op_id = handler.__name__ if names[handler.__name__] == 1 else _slug(method, path)
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, handler, tuple(roles), op_id)
    for path, ops in PEER_PATHS.items():
        paths[path] = copy.deepcopy(ops)
    for ops in paths.values():
        for op in ops.values():
            # aiohttp's parser refuses a request line or header over its limits before any route.
            if "400" not in op["responses"]:
                op["responses"] = dict(sorted({**op["responses"], **_problems(400)}.items()))
            for resp in op["responses"].values():
                if "$ref" not in resp:
                    resp.setdefault("headers", {})["X-Request-Id"] = {"$ref": "#/components/headers/X-Request-Id"}
    return _without_aliases(
        {
            "openapi": OPENAPI_VERSION,
            "info": {
                "title": "customs-gateway",
                "version": __version__,
                "summary": "Secure bilateral message gateway between two customs administrations.",
                "description": "Local API for agency back-ends, administrators and auditors (bearer tokens, one role "
                "each), and the peer API between the two gateways (mutual TLS plus signed envelopes). Every error is "
                "`application/problem+json` (RFC 9457) with a stable `code` and the `field` at fault.",
                "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
            },
            "tags": [
                {"name": n, "description": d}
                for n, d in (
                    ("messages", "submit and track outbound messages (agency)"),
                    ("inbox", "read and acknowledge messages from the peer (agency)"),
                    ("files", "upload files, streamed and resumable, for documents to carry (agency)"),
                    ("schemas", "message type schemas (agency, auditor)"),
                    ("admin", "keys, peers, tokens (admin)"),
                    ("audit", "the tamper-evident log (auditor)"),
                    ("operations", "health, readiness, metrics, this document (no token)"),
                    ("peer", "gateway to gateway (mutual TLS)"),
                )
            ],
            "paths": paths,
            "components": _components(_message_schemas()),
        }
    )


def _without_aliases(doc: dict[str, Any]) -> dict[str, Any]:
    """Point every `$ref` to a message-type alias (`seizure-share`) at its struct (`SeizureShare`)
    and drop the aliases: each schema then has exactly one component and one name."""
    components = doc["components"]["schemas"]
    prefix = "#/components/schemas/"
    aliases = {
        prefix + name: s["$ref"] for name, s in components.items() if "$ref" in s and set(s) <= {"$ref", "description"}
    }

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: aliases.get(v, v) if k == "$ref" and isinstance(v, str) else fix(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    doc = fix(doc)
    doc["components"]["schemas"] = {n: s for n, s in doc["components"]["schemas"].items() if prefix + n not in aliases}
    return doc
