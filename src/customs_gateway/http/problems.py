"""RFC 9457 problem+json responses and the middleware that turns every error into one (G9).

A GatewayError becomes its status and code; an aiohttp HTTP error (404, 405, 413…) becomes a
problem with a stable code; anything unexpected is logged with its traceback and answered with a
generic 500 that leaks nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from ..core.encoding import json_bytes
from ..core.errors import GatewayError

PROBLEM_TYPE = "application/problem+json"
log = structlog.get_logger("customs_gateway.http")

_HTTP_CODES = {
    400: "http.bad_request",
    401: "auth.required",
    403: "auth.forbidden",
    404: "http.not_found",
    405: "http.method_not_allowed",
    413: "http.body_too_large",
    415: "http.unsupported_media_type",
    429: "http.rate_limited",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    field: str | None = None,
    instance: str | None = None,
    **extra: Any,
) -> web.Response:
    body: dict[str, Any] = {
        "type": f"https://customs-gateway.invalid/problems/{code}",
        "title": code,
        "status": status,
        "code": code,
        "detail": detail,
    }
    if field is not None:
        body["field"] = field
    if instance is not None:
        body["instance"] = instance
    body.update(extra)
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="customs-gateway"'
    return web.Response(status=status, body=json_bytes(body), content_type=PROBLEM_TYPE, headers=headers)


def from_error(e: GatewayError, request: web.Request) -> web.Response:
    return problem(e.status, e.code, e.detail, field=e.field, instance=request.path)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    if len(request_id) > 100 or not request_id.isprintable():
        request_id = uuid.uuid4().hex
    structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        resp = await handler(request)
    except GatewayError as e:
        if e.status >= 500:
            log.warning("request.unavailable", code=e.code, path=request.path)
        resp = from_error(e, request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = _HTTP_CODES.get(e.status, f"http.{e.status}")
        detail = e.text if e.text and not e.text.startswith(f"{e.status}:") else e.reason
        resp = problem(e.status, code, detail or e.reason, instance=request.path)
        if e.status == 405:
            resp.headers["Allow"] = e.headers.get("Allow", "")
    except Exception:
        log.exception("request.failed", path=request.path, method=request.method)
        resp = problem(500, "internal", "internal error; the request id is in the gateway log", instance=request.path)
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    resp.headers["X-Request-Id"] = request_id
    return resp


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=json_bytes(data), content_type="application/json", headers=headers)
