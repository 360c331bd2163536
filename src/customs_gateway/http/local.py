"""The local API (DESIGN §5): submit, status, list, inbox with long-poll, ack, schemas, admin.

Every endpoint authenticates a bearer token and admits only its roles (G8): 401 without a valid
token, 403 with a wrong role. Handlers parse, call the Gateway, and render; nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import re
import tempfile
from typing import Any, Final

import msgspec
import structlog
from aiohttp import web

from ..core import reference, schemas
from ..core.bundle import KeyBundle
from ..core.encoding import b64url, format_ts, json_bytes, json_object
from ..core.envelope import BUSINESS_TYPES
from ..core.errors import Conflict, DecodeError, GatewayError, NotFound, SchemaError
from ..core.merkle import leaf_hash
from ..core.rotation import EXPIRY_WARNING_DAYS
from ..core.state import STATUSES
from ..core.tlscert import describe
from ..service.audit_export import export_bundle
from ..service.disposal import utc_day
from ..service.evidence import EvidenceCollector, PeerUnavailable
from ..service.gateway import Caller, Gateway, Submitted
from ..service.lifecycle import DEFAULT_VALID_DAYS, MAX_VALID_DAYS, RENEW_KINDS
from ..service.lifecycle import KeyLifecycle as KeyLifecycleAPI
from ..store.base import InboxItem, MessageFilter
from . import files, views
from .appkeys import CALLER, EVIDENCE, GATEWAY
from .console import setup as setup_console
from .metrics import metrics
from .openapi import document
from .problems import Handler, json_response, problem_middleware, read_body

MAX_LONG_POLL: Final = 30.0
MAX_PAGE: Final = 500

AGENCY = ("agency",)
ADMIN = ("admin",)
AUDITOR = ("auditor",)


def _guarded(handler: Handler, roles: tuple[str, ...]) -> Handler:
    """`handler` behind the role check of its route (ROUTES is the one place roles are said):
    the bearer token must hold one of `roles`; the caller is kept for the handler (`_caller`)."""
    if not roles:
        return handler

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        caller = await request.app[GATEWAY].authenticate(request.headers.get("Authorization"), roles)
        structlog.contextvars.bind_contextvars(token_id=caller.token_id, role=caller.role)
        request[CALLER] = caller
        return await handler(request)

    return guarded


def _caller(request: web.Request) -> Caller:
    """Who called (set by `_guarded` from the route's roles)."""
    return request[CALLER]  # KeyError: a handler that needs its caller has no roles in ROUTES


async def _json_body(request: web.Request) -> bytes:
    ctype = request.headers.get("Content-Type", "")
    if ctype.split(";")[0].strip().lower() != "application/json":
        raise GatewayError(
            "request body must be application/json",
            code="http.unsupported_media_type",
            status=415,
            field="Content-Type",
        )
    return await read_body(request, request.app[GATEWAY].config.security.body_read_timeout_seconds)


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        v = int(raw)
    except ValueError as e:
        raise SchemaError(f"{name} must be an integer", code="schema.type", field=name) from e
    if not lo <= v <= hi:
        raise SchemaError(f"{name} must be between {lo} and {hi}", code="schema.range", field=name)
    return v


_MESSAGE_ID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


async def _inbox_cursor(request: web.Request, name: str) -> int:
    """An inbox cursor: a `next_cursor` handed out before, never beyond the newest message (a
    stale or invented cursor would silently skip every message after it)."""
    cursor = _int_param(request, name, 0, 0, 2**62)
    if cursor:
        last = await request.app[GATEWAY].store.inbox_last_cursor()
        if cursor > last:
            raise SchemaError(
                f"{name} {cursor} is beyond the newest inbox message (cursor {last}): use a next_cursor you were given",
                code="schema.cursor",
                field=name,
            )
    return cursor


def _time_param(request: web.Request, name: str) -> dt.datetime | None:
    """An RFC 3339 time in a query parameter: any fraction of a second, `Z` or an offset."""
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        when = dt.datetime.fromisoformat(raw.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        when = None
    if when is None or when.tzinfo is None or "T" not in raw.upper():
        raise SchemaError(
            f"{name} must be an RFC 3339 time with a zone, e.g. 2026-12-03T15:07:20Z or 2026-12-03T23:07:20+08:00",
            code="schema.date",
            field=name,
        )
    return when.astimezone(dt.timezone.utc)


def _reference_param(request: web.Request) -> bytes | None:
    """The `reference` filter as the tag the store indexes (`core.reference`), or None."""
    raw = request.query.get("reference")
    return None if raw is None else reference.query_tag(request.app[GATEWAY].index_key, raw)


async def submit(request: web.Request) -> web.Response:
    caller = _caller(request)
    gw = request.app[GATEWAY]
    raw = await _json_body(request)
    key = request.headers.get("Idempotency-Key")
    done = await gw.submit(raw, caller, key)
    return _submit_answer(done)


def _submit_answer(done: Submitted) -> web.Response:
    headers = {"Location": f"/v1/messages/{done.message.id}"}
    if not done.created:
        headers["Idempotent-Replayed"] = "true"
    return json_response(views.SubmitResponse.of(done.message, done.terms), status=202, headers=headers)


async def submit_batch(request: web.Request) -> web.Response:
    """Submit up to 500 messages at once; one result per message, in order."""
    gw = request.app[GATEWAY]
    results = await gw.submit_batch(await _json_body(request), _caller(request))
    return json_response(views.BatchResults([views.BatchResult.of(r) for r in results]))


async def get_message(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    m = await gw.store.get_message(request.match_info["id"])
    if m is None or m.type not in BUSINESS_TYPES:
        raise NotFound(f"no message {request.match_info['id']}", code="message.not_found", field="id")
    consents = await gw.store.consents_for([m.id])
    holds = await gw.store.holds_for([m.id])
    return json_response(views.Message.of(m, consents.get(m.id, []), gw.clock.now().date(), holds.get(m.id, [])))


async def get_inbox_item(request: web.Request) -> web.Response:
    """One received business message with its body, handling terms and current permissions."""
    gw = request.app[GATEWAY]
    it = await _inbox_item(gw, request.match_info["id"])
    consents = await gw.store.consents_for([it.id])
    holds = await gw.store.holds_for([it.id])
    return json_response(
        views.InboxMessage.full(it, consents.get(it.id, []), gw.clock.now().date(), holds.get(it.id, []))
    )


async def _inbox_item(gw: Gateway, message_id: str) -> InboxItem:
    if not _MESSAGE_ID.fullmatch(message_id):
        raise SchemaError("id must be a message id (a lower-case UUID)", code="schema.uuid", field="id")
    it = await gw.store.inbox_item(message_id)
    if it is None or it.type not in BUSINESS_TYPES:
        raise NotFound(f"no inbox message {message_id}", code="inbox.not_found", field="id")
    return it


async def ask_consent(request: web.Request) -> web.Response:
    """Ask the provider of a received message for consent to pass it on or use it as evidence: a
    `consent-request` naming the message, queued like any submission (202, idempotent)."""
    gw = request.app[GATEWAY]
    it = await _inbox_item(gw, request.match_info["id"])
    if it.disposed_at is not None:
        raise Conflict(
            f"message {it.id} was disposed of at its retention date: there is nothing left to use",
            code="inbox.disposed",
            field="id",
        )
    ask = schemas.check_struct(views.ConsentAsk, await _json_body(request))
    body = {"message_id": it.id, "use": ask.use, "reason": ask.reason}
    body.update({k: v for k, v in (("authority", ask.authority), ("proceeding", ask.proceeding)) if v is not None})
    return await _submit_as(request, "consent-request", body, ask.handling)


async def decide_consent(request: web.Request) -> web.Response:
    """Decide on a consent request the peer made about one of our messages: a `consent-decision`
    naming the request, queued like any submission (202, idempotent)."""
    gw = request.app[GATEWAY]
    mid, rid = request.match_info["id"], request.match_info["request_id"]
    rec = await gw.store.consent(rid) if _MESSAGE_ID.fullmatch(rid) else None
    if rec is None or rec.role != "provider" or rec.message_id != mid:
        raise NotFound(
            f"no consent request {rid} about message {mid} from {gw.peer.identity}",
            code="consent.not_found",
            field="request_id",
        )
    answer = schemas.check_struct(views.ConsentAnswer, await _json_body(request))
    body: dict[str, Any] = {"request_id": rid, "decision": answer.decision}
    for name in ("conditions", "reason", "valid_until"):
        if (value := getattr(answer, name)) is not None:
            body[name] = value
    return await _submit_as(request, "consent-decision", body, answer.handling)


async def _submit_as(
    request: web.Request, msg_type: str, body: dict[str, Any], terms: dict[str, Any] | None
) -> web.Response:
    """Submit a document the API composed, as POST /v1/messages would; problems in the body are
    named as fields of the request (`$.use`, not `$.body.use`)."""
    gw = request.app[GATEWAY]
    req: dict[str, Any] = {"type": msg_type, "to": gw.peer.identity, "body": body}
    if terms is not None:
        req["handling"] = terms
    try:
        done = await gw.submit(json_bytes(req), _caller(request), request.headers.get("Idempotency-Key"))
    except SchemaError as e:
        e.moved(_unbodied)
        raise
    return _submit_answer(done)


def _unbodied(field: str | None) -> str | None:
    return "$." + field[len("$.body.") :] if field is not None and field.startswith("$.body.") else field


async def get_thread(request: web.Request) -> web.Response:
    """The thread of one business message (DESIGN §12): from its first message, both directions."""
    mid = request.match_info["id"]
    if not _MESSAGE_ID.fullmatch(mid):
        raise SchemaError("id must be a message id (a lower-case UUID)", code="schema.uuid", field="id")
    found = await request.app[GATEWAY].store.thread(mid)
    if found is None:
        raise NotFound(f"no message {mid}", code="message.not_found", field="id")
    root, items, cut = found
    return json_response(views.Thread(mid, root, [views.ThreadMessage.of(t) for t in items], cut))


async def list_messages(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    q = request.query
    limit = _int_param(request, "limit", 100, 1, MAX_PAGE)
    direction = q.get("direction", "outbound")
    if direction not in ("outbound", "inbound"):
        raise SchemaError("direction must be outbound or inbound", code="schema.enum", field="direction")
    status, mtype = q.get("status"), q.get("type")
    if status is not None and status not in STATUSES:
        raise SchemaError(f"status must be one of {', '.join(STATUSES)}", code="schema.enum", field="status")
    if mtype is not None and mtype not in BUSINESS_TYPES:
        raise SchemaError(f"type must be one of {', '.join(BUSINESS_TYPES)}", code="schema.enum", field="type")
    since = _time_param(request, "since")
    ref = _reference_param(request)
    if direction == "inbound":
        if status is not None:
            raise SchemaError(
                "status filters outbound messages only (inbound ones carry ack_status)",
                code="schema.combination",
                field="status",
            )
        cursor = await _inbox_cursor(request, "cursor")
        types = (mtype,) if mtype else BUSINESS_TYPES
        items = await gw.store.inbox_after(cursor, limit, types, ref)
        if since is not None:
            items = [i for i in items if i.received_at >= since]
        nxt_in = items[-1].cursor if len(items) == limit else None
        return json_response(views.InboxSummaryList([views.InboxSummary.of(i) for i in items], nxt_in))
    cursor_s = q.get("cursor")
    if cursor_s is not None and not _MESSAGE_ID.fullmatch(cursor_s):
        raise SchemaError(
            "cursor must be the next_cursor of an earlier page (a message id)", code="schema.cursor", field="cursor"
        )
    msgs = await gw.store.list_messages(MessageFilter(status, mtype, since, reference=ref), cursor_s, limit)
    nxt = msgs[-1].id if len(msgs) == limit else None
    consents = await gw.store.consents_for([m.id for m in msgs])
    today = gw.clock.now().date()
    return json_response(views.MessageList([views.Message.of(m, consents.get(m.id, []), today) for m in msgs], nxt))


async def inbox(request: web.Request) -> web.Response:
    caller = _caller(request)
    gw = request.app[GATEWAY]
    cursor = await _inbox_cursor(request, "after")
    limit = _int_param(request, "limit", 100, 1, MAX_PAGE)
    wait = request.query.get("wait", "0")
    try:
        wait_s = float(wait)
    except ValueError as e:
        raise SchemaError("wait must be a number of seconds", code="schema.type", field="wait") from e
    if not 0 <= wait_s <= MAX_LONG_POLL:
        raise SchemaError(f"wait must be between 0 and {MAX_LONG_POLL:.0f} seconds", code="schema.range", field="wait")
    ref = _reference_param(request)
    items = await gw.store.inbox_after(cursor, limit, BUSINESS_TYPES, ref)
    if not items and wait_s > 0:
        gw.long_polls.acquire(caller.token_id)
        try:
            deadline = asyncio.get_running_loop().time() + wait_s
            async with gw.inbox_changed:
                while not items:
                    left = deadline - asyncio.get_running_loop().time()
                    if left <= 0:
                        break
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(gw.inbox_changed.wait(), left)
                    items = await gw.store.inbox_after(cursor, limit, BUSINESS_TYPES, ref)
        finally:
            gw.long_polls.release(caller.token_id)
    nxt = items[-1].cursor if items else cursor
    consents = await gw.store.consents_for([i.id for i in items])
    today = gw.clock.now().date()
    return json_response(
        views.InboxPage([views.InboxMessage.full(i, consents.get(i.id, []), today) for i in items], nxt)
    )


async def ack(request: web.Request) -> web.Response:
    caller = _caller(request)
    raw = await _json_body(request)
    out = await request.app[GATEWAY].acknowledge(request.match_info["id"], raw, caller)
    return json_response(views.AckResponse(out.id, out.status, request.match_info["id"]), status=202)  # type: ignore[arg-type]


async def get_schemas(request: web.Request) -> web.Response:
    return json_response(schemas.all_schemas())


async def admin_keys(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    now = gw.clock.now()
    in_use = gw.identity.active_signing_key(now).kid
    held = {*gw.identity.signing, *gw.identity.decryption}
    own = [
        msgspec.convert(
            {
                **r.to_dict(),
                "fingerprint": hashlib.sha256(r.public).hexdigest(),
                "signing_now": r.kid == in_use,
                "pending_announcement": r.kid in gw.identity.pending,
                "private_key_held": r.kid in held or r.use == "witness",
            },
            views.OwnKey,
        )
        for r in gw.identity.bundle.bundle.keys
    ]
    peer = [
        msgspec.convert({**r.to_dict(), "fingerprint": hashlib.sha256(r.public).hexdigest()}, views.PeerKey)
        for r in gw.peer.records()
    ]
    return json_response(
        views.AdminKeys(
            identity=gw.name,
            bundle_serial=gw.identity.bundle.bundle.serial,
            keys=own,
            tls=_tls_pins(gw.identity.bundle.bundle),
            expiry=key_expiry(gw, now),
            peer=views.PeerKeys(gw.peer.identity, gw.peer.bundle.serial, peer, _tls_pins(gw.peer.bundle)),
        )
    )


def _tls_pins(bundle: KeyBundle) -> views.TlsPins:
    """A bundle's certificates as fingerprints: the current one and those pinned for an overlap."""

    fp, not_after = describe(bundle.tls_certificate)
    return views.TlsPins(
        certificate_sha256=fp,
        not_after=format_ts(not_after) if not_after else None,
        previous=[views.PinnedCertificate(describe(p)[0], format_ts(u)) for p, u in bundle.tls_previous],
    )


def _lifecycle(request: web.Request) -> KeyLifecycleAPI:
    lc = request.app[GATEWAY].lifecycle
    if not isinstance(lc, KeyLifecycleAPI):
        raise GatewayError("key lifecycle is not enabled on this gateway", code="keys.unavailable", status=503)
    return lc


async def admin_rotate(request: web.Request) -> web.Response:
    """Rotate our signing or encryption keys; the new bundle is announced to the peer."""
    caller = _caller(request)
    d = _json_dict(await _json_body(request), allowed={"kind"})
    kind = d.get("kind")
    if kind not in ("signing", "encryption"):
        raise SchemaError("kind must be signing or encryption", code="schema.enum", field="$.kind")
    res = await _lifecycle(request).rotate(str(kind), caller.actor)
    return json_response(msgspec.convert(res, views.RotateResponse), status=202)


async def admin_renew(request: web.Request) -> web.Response:
    """Renew keys of one kind, or the TLS certificate, with a later expiry (DESIGN §11)."""
    caller = _caller(request)
    d = _json_dict(await _json_body(request), allowed={"kind", "valid_days"})
    kind = d.get("kind")
    if kind not in RENEW_KINDS:
        raise SchemaError(f"kind must be one of {', '.join(RENEW_KINDS)}", code="schema.enum", field="$.kind")
    days = d.get("valid_days", DEFAULT_VALID_DAYS)
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_VALID_DAYS:
        raise SchemaError(
            f"valid_days must be a whole number of days from 1 to {MAX_VALID_DAYS}",
            code="schema.range",
            field="$.valid_days",
        )
    res = await _lifecycle(request).renew(str(kind), days, caller.actor)
    return json_response(msgspec.convert(res, views.RenewResponse), status=202)


async def admin_revoke(request: web.Request) -> web.Response:
    """Revoke one of our keys from now on; the revocation is announced to the peer."""
    caller = _caller(request)
    reason = await _reason(request, "reason is required")
    res = await _lifecycle(request).revoke(request.match_info["kid"], reason, caller.actor)
    return json_response(msgspec.convert(res, views.RevokeResponse), status=202)


async def _reason(request: web.Request, missing: str) -> str:
    """The body `{"reason": "..."}` of an admin action that must say why (`missing` if it does not)."""
    reason = _json_dict(await _json_body(request), allowed={"reason"}).get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise SchemaError(missing, code="schema.required", field="$.reason")
    return reason


def _json_dict(raw: bytes, *, allowed: set[str]) -> dict[str, Any]:
    try:
        d = json_object(raw, field="request body")
    except DecodeError as e:
        raise SchemaError(e.detail, code="schema.json", field="$") from e
    schemas.refuse_duplicate_keys(raw, d)
    extra = sorted(set(d) - allowed)
    if extra:
        raise SchemaError(f"unknown field {extra[0]!r}", code="schema.unknown_field", field=f"$.{extra[0]}")
    return d


async def admin_peers(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    st = await gw.store.peer_state(gw.peer.identity)
    depth, oldest = await gw.store.queue_depth(gw.peer.identity)
    peer = views.PeerStatus(
        identity=gw.peer.identity,
        url=gw.config.peer.url,
        bundle_serial=gw.peer.bundle.serial,
        next_seq=st.next_seq,
        received_high_water=st.recv_high_water,
        sequence_gaps=st.gap_count,
        recent_gaps=[views.SequenceGap(a, b) for a, b in st.gaps],
        queue_depth=depth,
        oldest_queued_at=format_ts(oldest) if oldest else None,
        clock_offset_seconds=None if gw.peer_clock.offset_seconds is None else round(gw.peer_clock.offset_seconds, 3),
        clock_offset_measured_at=format_ts(gw.peer_clock.measured_at) if gw.peer_clock.measured_at else None,
        recovery=_recovery_view(gw),
        agreement_profile=_profile_view(gw),
    )
    return json_response(views.AdminPeers([peer]))


def _profile_view(gw: Gateway) -> views.AgreementProfile:
    return views.AgreementProfile.of(gw.profile.agreement.id, gw.profile.sha256, gw.peer.bundle.agreement_profile)


async def admin_tokens(request: web.Request) -> web.Response:
    caller = _caller(request)
    req: views.TokenRequest = schemas.check_struct(views.TokenRequest, await _json_body(request))
    gw = request.app[GATEWAY]
    tid, secret = await gw.issue_token(req.role, req.label, caller.actor, valid_days=req.valid_days)
    rec = await gw.store.get_token(tid)
    expires = format_ts(rec.expires_at) if rec is not None and rec.expires_at else None
    body = views.TokenResponse(tid, req.role, secret, "shown once; store it now", expires)
    return json_response(body, status=201)


async def admin_list_tokens(request: web.Request) -> web.Response:
    return json_response(
        views.TokenList([views.TokenView.of(t) for t in await request.app[GATEWAY].store.list_tokens()])
    )


async def admin_revoke_token(request: web.Request) -> web.Response:
    caller = _caller(request)
    rec = await request.app[GATEWAY].revoke_token(request.match_info["token_id"], caller.actor)
    assert rec.revoked_at is not None
    return json_response(views.TokenRevoked(rec.id, rec.role, rec.label, format_ts(rec.revoked_at)))  # type: ignore[arg-type]


# --- retention and legal holds (DESIGN §12, `service.disposal`) -------------------------------
async def admin_holds(request: web.Request) -> web.Response:
    active = request.query.get("active", "false")
    if active not in ("true", "false"):
        raise SchemaError("active must be true or false", code="schema.enum", field="active")
    limit = _int_param(request, "limit", 100, 1, 1000)
    holds = await request.app[GATEWAY].store.list_holds(active == "true", limit)
    return json_response(views.HoldList([views.HoldView.of(h) for h in holds]))


async def admin_place_hold(request: web.Request) -> web.Response:
    """Place a legal hold: the message is kept past its retention date until released."""
    gw = request.app[GATEWAY]
    raw = await _json_body(request)
    hold = await gw.disposal.place(raw, _caller(request))
    return json_response(views.HoldView.of(hold), status=201)


def _hold_id(request: web.Request) -> str:
    message_id = request.match_info["id"]
    if not _MESSAGE_ID.fullmatch(message_id):
        raise SchemaError("id must be a message id (a lower-case UUID)", code="schema.uuid", field="id")
    return message_id


async def admin_get_hold(request: web.Request) -> web.Response:
    return json_response(views.HoldView.of(await request.app[GATEWAY].disposal.hold_of(_hold_id(request))))


async def admin_release_hold(request: web.Request) -> web.Response:
    """Release our legal hold: disposal resumes (at once if the retention date has passed)."""
    gw = request.app[GATEWAY]
    message_id = _hold_id(request)
    raw = await _json_body(request) if request.can_read_body else b"{}"
    hold = await gw.disposal.release(message_id, raw, _caller(request))
    return json_response(views.HoldView.of(hold))


async def _retention_status(gw: Gateway) -> views.RetentionStatus:
    today = utc_day(gw.clock.now())
    last = gw.disposal.last_run
    return views.RetentionStatus.of(
        today, await gw.store.retention_totals(today), None if last is None else last.to_dict()
    )


async def admin_retention(request: web.Request) -> web.Response:
    return json_response(await _retention_status(request.app[GATEWAY]))


async def admin_retention_run(request: web.Request) -> web.Response:
    """Run one disposal round now (the worker runs them on its own schedule)."""
    gw = request.app[GATEWAY]
    await gw.disposal.run_once()
    return json_response(await _retention_status(gw))


async def audit_entries(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    start = _int_param(request, "start", 0, 0, 2**62)
    limit = _int_param(request, "limit", 100, 1, 1000)
    rows = await gw.store.audit_entries(start, start + limit)
    # `raw` is the exact entry bytes (the Merkle leaf is SHA-256(0x00 || raw)); `entry` the same, parsed.
    return json_response(views.AuditEntries([views.AuditRow(i, b64url(e), json_object(e)) for i, e in rows]))


async def audit_checkpoint(request: web.Request) -> web.Response:
    store = request.app[GATEWAY].store
    cosigned = request.query.get("cosigned", "false")
    if cosigned not in ("true", "false"):
        raise SchemaError("cosigned must be true or false", code="schema.enum", field="cosigned")
    cp = await store.latest_checkpoint(cosigned=cosigned == "true")
    if cp is None:
        raise NotFound("no checkpoint has been made yet", code="audit.no_checkpoint")
    return web.Response(body=cp.cosigned_note or cp.note, content_type="text/plain", charset="utf-8")


async def audit_inclusion(request: web.Request) -> web.Response:
    store = request.app[GATEWAY].store
    size = _int_param(request, "size", -1, 1, 2**62)
    if size < 0:
        raise SchemaError("size is required", code="schema.required", field="size")
    index = _int_param(request, "index", -1, 0, size - 1)
    if index < 0:
        raise SchemaError("index is required", code="schema.required", field="index")
    proof = await store.inclusion_proof(index, size)
    entry = await store.audit_entries(index, index + 1)
    return json_response(views.InclusionProof(index, size, b64url(leaf_hash(entry[0][1])), [b64url(p) for p in proof]))


async def audit_consistency(request: web.Request) -> web.Response:
    store = request.app[GATEWAY].store
    new = _int_param(request, "new", -1, 0, 2**62)
    old = _int_param(request, "old", -1, 0, 2**62)
    if new < 0 or old < 0:
        raise SchemaError("old and new are required", code="schema.required", field="old" if old < 0 else "new")
    if old > new:
        raise SchemaError("old must not exceed new", code="schema.range", field="old")
    proof = await store.consistency_proof(old, new)
    return json_response(views.ConsistencyProof(old, new, [b64url(p) for p in proof]))


async def audit_export(request: web.Request) -> web.StreamResponse:
    """The self-contained audit bundle (JSON Lines) up to the latest checkpoint, streamed."""
    gw = request.app[GATEWAY]
    peer_raw = gw.config.path(gw.config.peer.bundle).read_bytes()
    with tempfile.TemporaryFile(prefix="audit-export-") as spool:  # on disk, not in memory
        summary = await export_bundle(
            gw.store,
            log=gw.name,
            peer=gw.peer.identity,
            own_bundle=gw.identity.bundle.to_bytes(),
            peer_bundle=peer_raw,
            out=spool,
            now=gw.clock.now(),
        )
        spool.seek(0)
        resp = web.StreamResponse(
            headers={
                "Content-Type": "application/x-ndjson",
                "Content-Disposition": f'attachment; filename="audit-{gw.name}-{summary.size}.jsonl"',
            }
        )
        await resp.prepare(request)
        while chunk := spool.read(256 * 1024):
            await resp.write(chunk)
        await resp.write_eof()
        return resp


async def audit_evidence(request: web.Request) -> web.Response:
    """Evidence for one message (JSON Lines): both logs' entries about it, proven and cosigned."""
    collector = request.app.get(EVIDENCE)
    if collector is None:
        raise PeerUnavailable("this gateway is not connected to its peer")
    message_id = request.match_info["id"]
    body = await collector.build(message_id)
    return web.Response(
        body=body,
        headers={
            "Content-Type": "application/x-ndjson",
            "Content-Disposition": f'attachment; filename="evidence-{message_id}.jsonl"',
        },
    )


async def healthz(request: web.Request) -> web.Response:
    return json_response(views.Health("ok"))


async def readyz(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    store = keys = "ok"
    try:
        await gw.store.audit_size()
        await gw.store.append_audit([])  # takes the write lock: a locked or read-only store is not ready
    except GatewayError as e:
        store = e.code
    try:
        gw.identity.active_signing_key(gw.clock.now())
    except GatewayError as e:
        keys = e.code
    checks = views.ReadinessChecks(store, keys, "ok" if gw.peer.records() else "missing")
    ok = store == keys == checks.peer_bundle == "ok"
    # Readiness is about serving the local API (accepting and storing submissions); the link to
    # the peer is reported beside it and never makes this gateway unready (decision 0007).
    now = gw.clock.now()
    down_for = gw.link.unreachable_for(now)
    after = gw.config.delivery.peer_unreachable_after_seconds
    peer = views.PeerLink(
        status="unreachable"
        if down_for >= after
        else "failing"
        if gw.link.failing_since is not None
        else "reachable"
        if gw.link.last_contact_at
        else "unknown",
        failing_for_seconds=round(down_for, 1),
        unreachable_after_seconds=after,
        last_contact_at=format_ts(gw.link.last_contact_at) if gw.link.last_contact_at else None,
        last_failure=gw.link.last_failure,
    )
    body = views.Readiness(
        status="ready" if ok else "not_ready",
        checks=checks,
        peer=peer,
        agreement_profile=_profile_view(gw),
        expiry=key_expiry(gw, now),
        recovery=_recovery_view(gw),
    )
    return json_response(body, status=200 if ok else 503)


def _recovery_view(gw: Gateway) -> views.RecoveryStatus:
    """Whether this store was found behind its peer (restored from a backup) and why."""
    if gw.recovery is None:
        return views.RecoveryStatus(checked=False, needed=False, reasons=[])
    return msgspec.convert(gw.recovery.view(), views.RecoveryStatus)


async def admin_recover(request: web.Request) -> web.Response:
    """After a restore from backup: level this store with what the peer has seen (DESIGN §11)."""
    caller = _caller(request)
    reason = await _reason(request, "reason is required: why the store was restored")
    gw = request.app[GATEWAY]
    if gw.recovery is None:
        raise GatewayError("recovery is not available on this gateway", code="recovery.unavailable", status=503)
    return json_response(msgspec.convert(await gw.recovery.recover(reason, caller.actor), views.RecoverResponse))


def key_expiry(gw: Gateway, now: dt.datetime) -> dict[str, views.KeyExpiry]:
    """Per key kind: when it ends, days left, and whether that is inside the warning window."""
    out: dict[str, views.KeyExpiry] = {}
    for kind, end in gw.identity.expiry().items():
        days = (end - now).total_seconds() / 86400
        out[kind] = views.KeyExpiry(format_ts(end), round(days, 1), days <= EXPIRY_WARNING_DAYS)
    return out


async def not_found(request: web.Request) -> web.Response:
    raise NotFound(f"no such endpoint {request.path}", code="http.not_found")


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the local API (from ROUTES) and the peer API; a fresh dict each call."""
    return document(ROUTES)


async def openapi_json(request: web.Request) -> web.Response:
    """This OpenAPI 3.1 document."""
    return json_response(openapi_document())


ROUTES: Final = (
    ("POST", "/v1/messages", submit, AGENCY),
    ("POST", "/v1/messages:batch", submit_batch, AGENCY),
    ("GET", "/v1/messages", list_messages, AGENCY),
    ("GET", "/v1/messages/{id}", get_message, AGENCY),
    ("GET", "/v1/threads/{id}", get_thread, ("agency", "auditor")),
    ("GET", "/v1/inbox", inbox, AGENCY),
    ("GET", "/v1/inbox/{id}", get_inbox_item, AGENCY),
    ("POST", "/v1/inbox/{id}/ack", ack, AGENCY),
    ("POST", "/v1/inbox/{id}/consent-requests", ask_consent, AGENCY),
    ("POST", "/v1/messages/{id}/consent-requests/{request_id}/decision", decide_consent, AGENCY),
    ("POST", "/v1/files", files.create_file, AGENCY),
    ("GET", "/v1/files/{file_id}", files.get_file, AGENCY),
    ("HEAD", "/v1/files/{file_id}", files.file_offset, AGENCY),
    ("PATCH", "/v1/files/{file_id}", files.append_file, AGENCY),
    ("GET", "/v1/inbox/{id}/files/{file_id}", files.inbox_file, AGENCY),
    ("GET", "/v1/messages/{id}/files/{file_id}", files.message_file, AGENCY),
    ("GET", "/v1/schemas", get_schemas, ("agency", "auditor")),
    ("GET", "/v1/admin/keys", admin_keys, ADMIN),
    ("POST", "/v1/admin/keys", admin_rotate, ADMIN),
    ("POST", "/v1/admin/keys/rotate", admin_rotate, ADMIN),
    ("POST", "/v1/admin/keys/renew", admin_renew, ADMIN),
    ("POST", "/v1/admin/recover", admin_recover, ADMIN),
    ("POST", "/v1/admin/keys/{kid}/revoke", admin_revoke, ADMIN),
    ("GET", "/v1/admin/peers", admin_peers, ADMIN),
    ("POST", "/v1/admin/tokens", admin_tokens, ADMIN),
    ("GET", "/v1/admin/tokens", admin_list_tokens, ADMIN),
    ("POST", "/v1/admin/tokens/{token_id}/revoke", admin_revoke_token, ADMIN),
    ("GET", "/v1/admin/holds", admin_holds, ADMIN),
    ("POST", "/v1/admin/holds", admin_place_hold, ADMIN),
    ("GET", "/v1/admin/holds/{id}", admin_get_hold, ADMIN),
    ("POST", "/v1/admin/holds/{id}/release", admin_release_hold, ADMIN),
    ("GET", "/v1/admin/retention", admin_retention, ADMIN),
    ("POST", "/v1/admin/retention/run", admin_retention_run, ADMIN),
    ("GET", "/v1/audit/entries", audit_entries, AUDITOR),
    ("GET", "/v1/audit/checkpoint", audit_checkpoint, AUDITOR),
    ("GET", "/v1/audit/proof/inclusion", audit_inclusion, AUDITOR),
    ("GET", "/v1/audit/proof/consistency", audit_consistency, AUDITOR),
    ("GET", "/v1/audit/export", audit_export, AUDITOR),
    ("GET", "/v1/audit/evidence/{id}", audit_evidence, AUDITOR),
    ("GET", "/healthz", healthz, ()),
    ("GET", "/metrics", metrics, ()),
    ("GET", "/openapi.json", openapi_json, ()),
    ("GET", "/readyz", readyz, ()),
)


def local_app(gw: Gateway, evidence: EvidenceCollector | None = None) -> web.Application:
    app = web.Application(middlewares=[problem_middleware], client_max_size=gw.config.security.max_body_bytes)
    app[GATEWAY] = gw
    if evidence is not None:
        app[EVIDENCE] = evidence
    for method, path, handler, roles in ROUTES:
        app.router.add_route(method, path, _guarded(handler, roles))
    files.setup(app, gw)
    setup_console(app, gw, key_expiry=key_expiry, export=audit_export, evidence=audit_evidence)
    return app
