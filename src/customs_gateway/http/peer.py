"""The peer API: envelopes in (signed receipts or refusals out) and our signed key bundle.

Mutual TLS proves the connection comes from the holder of the pinned peer certificate; the
handler checks the presented certificate's fingerprint again, so a misconfigured trust store can
never widen who may call. Envelope signatures are checked on top of that (G1).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any, Final

import msgspec
import structlog
from aiohttp import ClientConnectionResetError, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Middleware

from ..core.encoding import json_bytes
from ..core.errors import AuthError, GatewayError, SchemaError
from ..core.upload import UploadError
from ..service.evidence import peer_log_part
from ..service.gateway import Gateway, WitnessSizeMismatch
from ..service.peer_files import OffsetMismatch, parse_content_range
from ..service.tls import PeerTLS
from . import views
from .problems import Handler, from_error, json_response, problem_middleware, read_body

GATEWAY: Final = web.AppKey("peer_gateway", Gateway)
PEER_TLS: Final = web.AppKey("peer_tls", object)
log = structlog.get_logger("customs_gateway.peer")


def _check_peer(request: web.Request) -> None:
    structlog.contextvars.bind_contextvars(peer=request.app[GATEWAY].peer.identity)
    peer_tls = request.app[PEER_TLS]
    if not isinstance(peer_tls, PeerTLS):
        return  # explicit insecure dev mode, logged at start-up
    transport = request.transport
    ssl_obj = transport.get_extra_info("ssl_object") if transport is not None else None
    der = ssl_obj.getpeercert(binary_form=True) if ssl_obj is not None else None
    # Exactly the certificates pinned now: one whose overlap ended may linger in the context.
    if not der or hashlib.sha256(der).hexdigest() not in peer_tls.pinned():
        raise AuthError(
            "the client certificate is not the pinned peer certificate", code="peer.certificate", status=403
        )


def _check_json(request: web.Request) -> None:
    ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype not in ("application/json", "application/vnd.customs-gateway.envelope+json"):
        raise GatewayError(
            "envelopes must be sent as JSON",
            code="http.unsupported_media_type",
            status=415,
            field="Content-Type",
        )


async def envelopes(request: web.Request) -> web.Response:
    _check_peer(request)
    _check_json(request)
    gw = request.app[GATEWAY]
    raw = await read_body(request, gw.config.security.body_read_timeout_seconds)
    return web.Response(body=envelope_results(await gw.receive(raw)), content_type="application/json")


def envelope_results(results: list[dict[str, Any]]) -> bytes:
    """The body of the answer to `POST /peer/v1/envelopes`: one result per envelope, in order."""
    return json_bytes(msgspec.convert({"results": results}, views.EnvelopeResults))


async def announce(request: web.Request) -> web.Response:
    """Envelopes whose files are about to be pushed (decision 0017): the files are checked as
    they arrive. Nothing is stored; the envelopes are delivered again with `POST envelopes`."""
    _check_peer(request)
    _check_json(request)
    gw = request.app[GATEWAY]
    raw = await read_body(request, gw.config.security.body_read_timeout_seconds)
    watching = await gw.announce(raw)
    return json_response({"watching": watching})


async def keys(request: web.Request) -> web.Response:
    _check_peer(request)
    gw = request.app[GATEWAY]
    return web.Response(body=gw.identity.bundle.to_bytes(), content_type="application/json")


async def cosign(request: web.Request) -> web.Response:
    _check_peer(request)
    raw = await read_body(request, request.app[GATEWAY].config.security.body_read_timeout_seconds)
    try:
        line = await request.app[GATEWAY].witness(raw)
    except WitnessSizeMismatch as e:
        return web.Response(status=409, text=f"{e.held}\n", content_type="text/x.tlog.size")
    return web.Response(body=line, content_type="text/plain", charset="utf-8")


async def epoch(request: web.Request) -> web.Response:
    """The peer's log starts a new epoch after a restore: accept it (or not) and cosign."""
    _check_peer(request)
    gw = request.app[GATEWAY]
    raw = await read_body(request, gw.config.security.body_read_timeout_seconds)
    line = await gw.accept_epoch(raw)
    return web.Response(body=line, content_type="text/plain", charset="utf-8")


async def state(request: web.Request) -> web.Response:
    """What we have seen of the peer, signed: asked by a peer that may have been restored."""
    _check_peer(request)
    raw = request.query.get("after_seq", "0")
    if not raw.isdigit() or len(raw) > 18:
        raise SchemaError("after_seq must be a whole number", code="schema.type", field="after_seq")
    body = await request.app[GATEWAY].peer_state_statement(int(raw))
    return web.Response(body=body, content_type="application/json")


async def evidence(request: web.Request) -> web.Response:
    """Our log's entries about one message between us, proven into a checkpoint the peer cosigned."""
    _check_peer(request)
    body = await peer_log_part(request.app[GATEWAY], request.match_info["id"])
    return web.Response(body=body, content_type="application/json")


async def file_put(request: web.Request) -> web.Response:
    """A part of a file's ciphertext (`Content-Range`), appended at the offset held; the answer
    (204, or a problem) carries `Upload-Offset`, the bytes held, to resume from."""
    _check_peer(request)
    files = request.app[GATEWAY].peer_files
    file_id = request.match_info["file_id"]
    start, end, total = parse_content_range(request.headers.get("Content-Range"), files.max_total)
    timeout = request.app[GATEWAY].config.security.body_read_timeout_seconds
    try:
        held = await files.receive(file_id, start, end, total, _pieces(request, timeout))
    except OffsetMismatch as e:
        resp = from_error(e, request)
        resp.headers["Upload-Offset"] = str(e.held)
        return resp
    except UploadError as e:  # e.g. 503 file.disk_full: nothing of the part kept
        resp = from_error(e, request)
        rec = files.held(file_id)
        resp.headers["Upload-Offset"] = str(rec.offset if rec else 0)
        return resp
    except (TimeoutError, ConnectionResetError, ClientConnectionResetError, HttpProcessingError) as e:
        # What arrived is kept (and counted by the record): the sender resumes from there.
        rec = files.held(file_id)
        log.info("file.part_interrupted", file_id=file_id, held=rec.offset if rec else 0, why=type(e).__name__)
        err = GatewayError("the part was cut off; resume from Upload-Offset", code="file.part_interrupted", status=400)
        resp = from_error(err, request)
        resp.headers["Upload-Offset"] = str(rec.offset if rec else 0)
        return resp
    return web.Response(status=204, headers={"Upload-Offset": str(held)})


async def _pieces(request: web.Request, timeout: float) -> AsyncIterator[bytes]:
    """The request body in pieces, each arriving within `timeout` seconds (a stalled sender ends
    the part, keeping what arrived)."""
    while True:
        async with asyncio.timeout(timeout):
            piece = await request.content.readany()
        if not piece:
            return
        yield piece


async def file_head(request: web.Request) -> web.Response:
    """How much of a file's ciphertext is held: `Upload-Offset` (and `Upload-Length`); 404 none.
    The offset counts bytes written and not yet fsync'd while this process runs (`PeerFiles.held`)."""
    _check_peer(request)
    rec = request.app[GATEWAY].peer_files.held(request.match_info["file_id"])
    if rec is None:
        return web.Response(status=404, headers={"Upload-Offset": "0"})
    return web.Response(status=200, headers={"Upload-Offset": str(rec.offset), "Upload-Length": str(rec.total)})


def _concurrency_cap(limit: int) -> Middleware:
    """At most `limit` peer requests in flight: the rest get 503 + Retry-After at once, so a
    flood cannot queue up unbounded work (the honest peer keeps one request in flight)."""
    in_flight = 0

    @web.middleware
    async def cap(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal in_flight
        if in_flight >= limit:
            raise GatewayError(f"more than {limit} concurrent peer requests", code="peer.busy", status=503)
        in_flight += 1
        try:
            return await handler(request)
        finally:
            in_flight -= 1

    return cap


def peer_app(gw: Gateway, peer_tls: PeerTLS | None) -> web.Application:
    app = web.Application(
        middlewares=[problem_middleware, _concurrency_cap(gw.config.security.max_peer_requests)],
        client_max_size=gw.config.security.max_body_bytes,
    )
    app[GATEWAY] = gw
    app[PEER_TLS] = peer_tls
    app.router.add_post("/peer/v1/envelopes", envelopes)
    app.router.add_post("/peer/v1/announce", announce)
    app.router.add_get("/peer/v1/keys", keys)
    app.router.add_post("/peer/v1/cosign", cosign)
    app.router.add_get("/peer/v1/state", state)
    app.router.add_post("/peer/v1/epoch", epoch)
    app.router.add_get("/peer/v1/evidence/{id}", evidence)
    app.router.add_put("/peer/v1/files/{file_id}", file_put)
    app.router.add_route("HEAD", "/peer/v1/files/{file_id}", file_head)
    return app


__all__ = ["GatewayError", "peer_app"]
