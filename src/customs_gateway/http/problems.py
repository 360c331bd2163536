"""RFC 9457 problem+json responses and the middleware that turns every error into one (G9).

A GatewayError becomes its status and code; an aiohttp HTTP error (404, 405, 413…) becomes a
problem with a stable code; anything unexpected is logged with its traceback and answered with a
generic 500 that leaks nothing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Annotated, Any, Final

import msgspec
import structlog
from aiohttp import ClientConnectionResetError, web
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_request import BaseRequest

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


class ProblemItem(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One problem found."""

    field: Annotated[str | None, msgspec.Meta(description="JSON path, header or parameter")]
    code: Annotated[str, msgspec.Meta(description="stable machine code")]
    detail: Annotated[str, msgspec.Meta(description="what is wrong; an enum lists the allowed values")]


class Problem(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """RFC 9457 problem details with the gateway's `code` and `field` (G9): every 4xx and 5xx answer."""

    type: Annotated[
        str,
        msgspec.Meta(
            description="https://customs-gateway.invalid/problems/<code>", extra_json_schema={"format": "uri"}
        ),
    ]
    title: Annotated[str, msgspec.Meta(description="a short human summary of the problem type (by the code's family)")]
    status: Annotated[int, msgspec.Meta(ge=400, le=599, description="HTTP status")]
    code: Annotated[
        str,
        msgspec.Meta(
            description="stable machine code, e.g. schema.required, auth.forbidden", examples=["schema.required"]
        ),
    ]
    detail: Annotated[str, msgspec.Meta(description="what is wrong, for people; never echoes a body value")]
    errors: Annotated[
        list[ProblemItem],
        msgspec.Meta(
            max_length=20,
            description="every problem found (at most 20), the first being the one above; a body missing "
            "two fields and with a bad enum value lists all three",
        ),
    ]
    field: Annotated[
        str | None,
        msgspec.Meta(
            description="the field, header or parameter at fault (JSON path for bodies)", examples=["$.body.ports"]
        ),
    ] = None
    instance: Annotated[str | None, msgspec.Meta(description="the request path")] = None


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    field: str | None = None,
    instance: str | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> web.Response:
    body = Problem(
        type=f"https://customs-gateway.invalid/problems/{code}",
        title=problem_title(status, code),
        status=status,
        code=code,
        detail=detail,
        field=field,
        instance=instance,
        # Every problem found (RFC 9457 extension member); one entry when there was one.
        errors=[msgspec.convert(e, ProblemItem) for e in errors] if errors else [ProblemItem(field, code, detail)],
    )
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="customs-gateway"'
    return web.Response(status=status, body=json_bytes(body), content_type=PROBLEM_TYPE, headers=headers)


#: Human titles by code family (RFC 9457 `title`: a short summary of the problem type).
_TITLES: Final = {
    "schema": "The request does not follow the schema",
    "auth": "Not authorized",
    "rate": "Too many requests",
    "store": "Storage unavailable",
    "key": "Key problem",
    "keys": "Key problem",
    "recovery": "Restore recovery",
    "message": "Message problem",
    "token": "Token problem",
    "replay": "Replayed or out-of-window message",
    "ack": "Acknowledgement problem",
    "witness": "Witness refused",
    "audit": "Audit log problem",
    "config": "Configuration problem",
    "peer": "Peer problem",
}


def problem_title(status: int, code: str) -> str:
    """A short human title for a problem: by the code's family, else the HTTP status phrase."""
    family = code.split(".", 1)[0]
    if family in _TITLES:
        return _TITLES[family]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def from_error(e: GatewayError, request: web.Request) -> web.Response:
    resp = problem(e.status, e.code, e.detail, field=e.field, instance=request.path, errors=list(e.errors) or None)
    retry_after = getattr(e, "retry_after", None)
    if retry_after is None and e.status == 503:
        retry_after = 1
    if retry_after is not None:
        resp.headers["Retry-After"] = str(retry_after)
    return resp


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    # A log correlation id: 128 bits from the OS CSPRNG as 32 hex characters, the shape
    # uuid4().hex had, at a fraction of its cost (no UUID object to build).
    request_id = request.headers.get("X-Request-Id") or os.urandom(16).hex()
    if len(request_id) > 100 or not request_id.isprintable():
        request_id = os.urandom(16).hex()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    if "id" in request.match_info:  # {id} always names a message
        structlog.contextvars.bind_contextvars(message_id=request.match_info["id"])
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
    except (RequestPayloadError, HttpProcessingError) as e:
        # A body that breaks its framing or content coding (e.g. `Content-Encoding: gzip` over bytes
        # that are not gzip), found by aiohttp's parser while the handler reads it.
        cause = e.__cause__ if isinstance(e, RequestPayloadError) and e.__cause__ is not None else e
        log.info("http.malformed_body", error=type(cause).__name__)
        coding = isinstance(cause, ContentEncodingError)
        what = "does not decode as its Content-Encoding says" if coding else "breaks its framing"
        resp = problem(400, "http.malformed", f"the request body {what}", instance=request.path)
        resp.force_close()  # the rest of the body is unread: the connection cannot carry another request
    except Exception:
        log.exception("request.failed", path=request.path, method=request.method)
        resp = problem(500, "internal", "internal error; the request id is in the gateway log", instance=request.path)
    finally:
        structlog.contextvars.clear_contextvars()
    resp.headers["X-Request-Id"] = request_id
    return resp


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=json_bytes(data), content_type="application/json", headers=headers)


async def read_body(request: web.Request, timeout: float) -> bytes:
    """The whole request body, or 408 if the client trickles it slower than `timeout` allows."""
    if request.content.is_eof():  # already all here (the usual small request): nothing to wait for
        return await request.read()
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except (ConnectionResetError, ClientConnectionResetError) as e:
        # The client hung up mid-body: nobody is left to answer and nothing was written.
        log.info("request.client_closed", path=request.path)
        raise GatewayError(
            "the client closed the connection before sending the whole body", code="http.client_closed"
        ) from e
    except TimeoutError as e:
        raise GatewayError(
            f"request body not received within {timeout:.0f} s", code="http.body_timeout", status=408
        ) from e


class ProblemRequestHandler(RequestHandler):
    """Answers requests that aiohttp's HTTP parser rejects (bad request line, header too long…)
    with problem+json like every other refusal (G9), and logs only the error class: the raw
    request may hold a bearer token (G8)."""

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        log.warning("http.malformed_request", status=status, error=type(exc).__name__ if exc else None)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send the error")
        if status >= 500:
            code, detail = "internal", "internal error; the request id is in the gateway log"
        else:
            code = "http.malformed" if status == 400 else _HTTP_CODES.get(status, f"http.{status}")
            detail = f"the request is not valid HTTP ({HTTPStatus(status).phrase})"
        resp = problem(status, code, detail)
        resp.force_close()
        return resp


class _ProblemServer(web.Server):
    def __call__(self) -> RequestHandler:
        return ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


class ProblemAppRunner(web.AppRunner):
    """An AppRunner whose connections use ProblemRequestHandler."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _ProblemServer  # same state, our handler factory
        return server
