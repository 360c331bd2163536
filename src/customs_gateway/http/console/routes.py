"""The console's pages and forms (DESIGN §14): each handler reads or acts through the same
Gateway, KeyLifecycle and store calls as the JSON API, with the same audit actor, and renders HTML.

Roles (one place, `PAGES`): admin and auditor both see the link, message metadata and the audit
log; only admin changes keys and tokens. Agency tokens cannot sign in.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final

import aiohttp_jinja2
import jinja2
from aiohttp import web
from multidict import MultiDictProxy

from ...core import consent, docfiles, handling
from ...core.encoding import format_ts, json_object
from ...core.envelope import BUSINESS_TYPES, Document, SignedDocument
from ...core.errors import AuthError, GatewayError, NotFound, SchemaError
from ...core.state import STATUSES
from ...service.gateway import Gateway
from ...service.lifecycle import DEFAULT_VALID_DAYS, RENEW_KINDS, KeyLifecycle
from .search import Search, results
from .session import COOKIE, COOKIE_PATH, CsrfRefused, Session, SessionStore

HERE: Final = Path(__file__).parent
SIGNED_IN: Final = ("admin", "auditor")
ADMIN: Final = ("admin",)
PAGE_SIZE: Final = 50  # checkpoints on the audit page
HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


@dataclasses.dataclass(frozen=True)
class Console:
    """What every console handler needs: the gateway and the live sessions."""

    gw: Gateway
    sessions: SessionStore
    #: From the JSON API's module, passed in when it mounts the console (so no import cycle).
    key_expiry: Callable[[Gateway, dt.datetime], Mapping[str, Any]]
    export: Callable[[web.Request], Awaitable[web.StreamResponse]]
    evidence: Callable[[web.Request], Awaitable[web.StreamResponse]]


CONSOLE: Final = web.AppKey("console", Console)


@dataclasses.dataclass(frozen=True)
class Ctx:
    """One signed-in request: the session and, for a POST, its form fields (CSRF already checked)."""

    request: web.Request
    session: Session
    form: Mapping[str, str]

    @property
    def gw(self) -> Gateway:
        return self.request.app[CONSOLE].gw


Page = Callable[[Ctx], Awaitable[web.StreamResponse]]


def render(request: web.Request, name: str, session: Session | None, status: int = 200, **ctx: Any) -> web.Response:
    return aiohttp_jinja2.render_template(name, request, {"session": session, **ctx}, status=status)


def error_page(request: web.Request, session: Session | None, e: GatewayError) -> web.Response:
    """A problem as a page: title (its code), detail and field, never a traceback."""
    return render(request, "error.html", session, status=e.status, code=e.code, detail=e.detail, field=e.field)


def _csrf_refused() -> GatewayError:
    detail = "the form's CSRF token is missing or wrong; nothing was changed"
    return GatewayError(detail, code="console.csrf", status=403)


def _see_other(path: str) -> web.Response:
    return web.Response(status=303, headers={"Location": path})


async def _read_form(request: web.Request) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    """The posted form; a body that is not form data in UTF-8 is a 400, not a 500."""
    try:
        return await request.post()
    except (UnicodeDecodeError, ValueError) as e:
        raise GatewayError("the form could not be read: it is not UTF-8 form data", code="http.malformed") from e


def _guard(roles: tuple[str, ...], page: Page) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """`page` behind a live signed-in session holding one of `roles`, and for a POST its CSRF token."""

    async def handler(request: web.Request) -> web.StreamResponse:
        console = request.app[CONSOLE]
        session = console.sessions.get(request.cookies.get(COOKIE))
        if session is None or session.token_id is None:
            return _see_other("/console/sign-in")
        rec = await console.gw.store.get_token(session.token_id)
        if rec is None or rec.revoked_at is not None or (rec.expires_at and console.gw.clock.now() >= rec.expires_at):
            console.sessions.end(session.id)
            return _see_other("/console/sign-in")
        form: Mapping[str, str] = {}
        try:
            if request.method == "POST":
                form = {k: v for k, v in (await _read_form(request)).items() if isinstance(v, str)}
                session.check_csrf(form.get("csrf"))
            if session.role not in roles:
                raise AuthError(
                    f"role {session.role!r} may not use this page (needs {' or '.join(roles)})",
                    code="auth.forbidden",
                    status=403,
                )
            return await page(Ctx(request, session, form))
        except CsrfRefused:
            return error_page(request, session, _csrf_refused())
        except GatewayError as e:
            return error_page(request, session, e)

    return handler


# --- sign-in and sign-out ---------------------------------------------------------------------
async def sign_in_form(request: web.Request) -> web.StreamResponse:
    """The sign-in page, with a pre-session so that the sign-in form has a CSRF token too."""
    sessions = request.app[CONSOLE].sessions
    session = sessions.get(request.cookies.get(COOKIE)) or sessions.new()
    resp = render(request, "sign_in.html", session)
    _set_cookie(request, resp, session)
    return resp


async def sign_in(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    pre = console.sessions.get(request.cookies.get(COOKIE))
    try:
        form = await _read_form(request)
    except GatewayError as e:
        return error_page(request, None, e)
    token = form.get("token")
    try:
        if pre is None:
            raise CsrfRefused
        pre.check_csrf(str(form.get("csrf", "")))
        if not isinstance(token, str):
            raise SchemaError("enter a token", code="schema.required", field="token")
        caller = await console.gw.authenticate(f"Bearer {token}", SIGNED_IN)
    except CsrfRefused:
        return error_page(request, None, _csrf_refused())
    except GatewayError as e:
        return error_page(request, None, e)
    console.sessions.end(pre.id)
    session = console.sessions.new(caller.token_id, caller.role)  # a new id: no session fixation
    resp = _see_other("/console/link")
    _set_cookie(request, resp, session)
    return resp


async def sign_out(ctx: Ctx) -> web.StreamResponse:
    ctx.request.app[CONSOLE].sessions.end(ctx.session.id)
    resp = _see_other("/console/sign-in")
    resp.del_cookie(COOKIE, path=COOKIE_PATH)
    return resp


def _set_cookie(request: web.Request, resp: web.StreamResponse, session: Session) -> None:
    resp.set_cookie(COOKIE, session.id, path=COOKIE_PATH, httponly=True, samesite="Strict", secure=request.secure)


# --- the link ---------------------------------------------------------------------------------
async def link(ctx: Ctx) -> web.StreamResponse:
    """The link's state, from the same store and gateway readings as /v1/admin/peers and /readyz."""
    key_expiry = ctx.request.app[CONSOLE].key_expiry
    gw = ctx.gw
    now = gw.clock.now()
    st = await gw.store.peer_state(gw.peer.identity)
    depth, oldest = await gw.store.queue_depth(gw.peer.identity)
    ours, theirs = await gw.store.latest_checkpoint(cosigned=True), await gw.store.witness_state(gw.peer.identity)
    down_for = gw.link.unreachable_for(now)
    peer_status = (
        "unreachable"
        if down_for >= gw.config.delivery.peer_unreachable_after_seconds
        else "failing"
        if gw.link.failing_since is not None
        else "reachable"
        if gw.link.last_contact_at
        else "unknown"
    )
    expiry = key_expiry(gw, now)
    return render(
        ctx.request,
        "link.html",
        ctx.session,
        gw=gw,
        peer_status=peer_status,
        state=st,
        depth=depth,
        oldest=oldest,
        skew=gw.peer_clock.offset_seconds,
        ours=ours,
        theirs=theirs,
        expiry=expiry,
        recent=gw.recent,
        delivered_hour=gw.recent.last_hour("delivered", now),
        refused_hour=gw.recent.last_hour("refused", now),
        alerts=alerts(gw, now, peer_status, st.gap_count, oldest, expiry),
    )


#: A message queued longer than this is an alert on the link page.
OLD_QUEUE: Final = dt.timedelta(minutes=15)


def alerts(
    gw: Gateway,
    now: dt.datetime,
    peer_status: str,
    gaps: int,
    oldest: dt.datetime | None,
    expiry: Mapping[str, Any],
) -> list[str]:
    """What an operator should look at now, worst first; empty when all is well."""
    out: list[str] = []
    if gw.recovery is not None and gw.recovery.view().get("needed"):
        out.append("This store is behind the peer (restored from a backup?): run customs-gateway recover.")
    if peer_status in ("unreachable", "failing"):
        out.append(f"The peer is {peer_status}: {gw.link.last_failure or 'no answer'}.")
    if oldest is not None and now - oldest > OLD_QUEUE:
        out.append(f"A message has been queued since {format_ts(oldest)}.")
    if gaps:
        out.append(f"{gaps} gap(s) in the peer's sequence numbers: messages may be missing.")
    skew = gw.peer_clock.offset_seconds
    if skew is not None and abs(skew) > gw.config.security.skew_seconds / 2:
        out.append(
            f"The peer's clock is {skew:+.0f} s from ours (the limit is {gw.config.security.skew_seconds:.0f} s)."
        )
    theirs = gw.peer.bundle.agreement_profile
    if theirs is not None and theirs != gw.profile.sha256:
        out.append("The peer loads another agreement profile: documents its profile does not allow are refused.")
    out += [
        f"The {kind} key ends in {e.days_left} days ({e.not_after}): renew it."
        for kind, e in expiry.items()
        if getattr(e, "renew_soon", False)
    ]
    return out


# --- messages ---------------------------------------------------------------------------------
async def messages(ctx: Ctx) -> web.StreamResponse:
    """Sent messages or the inbox, searched (`search.Search`: reference, type, status, dates)."""
    s = Search.from_query(ctx.request.query, ctx.gw.profile)
    rows, nxt = await results(ctx.gw, s)
    return render(
        ctx.request,
        "messages.html",
        ctx.session,
        rows=rows,
        next_url=s.next_url(nxt) if nxt else None,
        q=s.form(),
        statuses=STATUSES,
        types=BUSINESS_TYPES,
        purposes=[p.id for p in ctx.gw.profile.purposes],
        levels=[c.id for c in ctx.gw.profile.confidentiality],
    )


async def message(ctx: Ctx) -> web.StreamResponse:
    gw, mid = ctx.gw, ctx.request.match_info["id"]
    m = await gw.store.get_message(mid)
    if m is not None and m.type not in BUSINESS_TYPES:
        m = None
    thread = await gw.store.thread(mid)
    if m is None and thread is None:
        raise NotFound(f"no message {mid}", code="message.not_found", field="id")
    item = None if m is not None else await gw.store.inbox_item(mid)
    if item is not None and item.type not in BUSINESS_TYPES:
        item = None
    if m is not None and m.disposed_at is None:
        doc: Document | None = Document.from_bytes(SignedDocument.from_bytes(m.signed_document).document_bytes)
    else:
        doc = Document.from_bytes(item.body) if item is not None and item.disposed_at is None else None
    terms = handling.from_wire(doc.handling) if doc is not None and doc.handling is not None else None
    today = gw.clock.now().date()
    records = (await gw.store.consents_for([mid])).get(mid, []) if m is not None or item is not None else []
    holds = (await gw.store.holds_for([mid])).get(mid, [])
    row = m if m is not None else item
    disposed_at = None if row is None else row.disposed_at
    retain_until = None if row is None else row.retain_until
    return render(
        ctx.request,
        "message.html",
        ctx.session,
        mid=mid,
        m=m,
        item=item,
        body=docfiles.without_keys(doc.body) if doc is not None else None,
        receipt=json_object(m.receipt) if m and m.receipt else None,
        refusal=json_object(m.refusal) if m and m.refusal else None,
        thread=thread[1] if thread else [],
        terms=handling.to_wire(terms) if terms is not None else None,
        permissions=consent.permissions(terms, records, today) if item is not None else None,
        consents=[(r, consent.status_of(r, today)) for r in records],
        holds=holds,
        disposed_at=disposed_at,
        retain_until=retain_until,
    )


# --- keys ---------------------------------------------------------------------------------------
def _lifecycle(gw: Gateway) -> KeyLifecycle:
    if not isinstance(gw.lifecycle, KeyLifecycle):
        raise GatewayError("key lifecycle is not enabled on this gateway", code="keys.unavailable", status=503)
    return gw.lifecycle


async def keys(ctx: Ctx) -> web.StreamResponse:
    key_expiry = ctx.request.app[CONSOLE].key_expiry
    gw = ctx.gw
    now = gw.clock.now()
    rows = [r.to_dict() for r in gw.identity.bundle.bundle.keys]
    return render(ctx.request, "keys.html", ctx.session, rows=rows, expiry=key_expiry(gw, now), renew_kinds=RENEW_KINDS)


async def key_action(ctx: Ctx) -> web.StreamResponse:
    """Rotate, renew or revoke: first a confirmation page, then (with confirm=yes) the action."""
    action, f = ctx.request.match_info["action"], ctx.form
    if action not in ("rotate", "renew", "revoke"):
        raise NotFound(f"no key action {action}", code="http.not_found")
    if f.get("confirm") != "yes":
        return render(ctx.request, "confirm.html", ctx.session, action=action, fields=dict(f))
    lc, actor = _lifecycle(ctx.gw), ctx.session.actor
    kind = f.get("kind", "")
    if action == "rotate":
        res = await lc.rotate(kind, actor)
    elif action == "renew":
        days = f.get("valid_days", str(DEFAULT_VALID_DAYS))
        if not days.isdigit():
            raise SchemaError("valid_days must be a whole number of days", code="schema.type", field="valid_days")
        res = await lc.renew(kind, int(days), actor)
    else:
        res = await lc.revoke(f.get("kid", ""), f.get("reason", "").strip(), actor)
    return render(ctx.request, "done.html", ctx.session, action=action, result=res)


# --- tokens -------------------------------------------------------------------------------------
async def tokens(ctx: Ctx) -> web.StreamResponse:
    return render(ctx.request, "tokens.html", ctx.session, rows=await ctx.gw.store.list_tokens())


async def issue(ctx: Ctx) -> web.StreamResponse:
    f = ctx.form
    days = f.get("valid_days") or None
    if days is not None and not days.isdigit():
        raise SchemaError("valid_days must be a whole number of days", code="schema.type", field="valid_days")
    tid, secret = await ctx.gw.issue_token(
        f.get("role", ""), f.get("label", ""), ctx.session.actor, valid_days=int(days) if days else None
    )
    # The one page that shows a secret: once, never cached (every console response is no-store).
    return render(ctx.request, "issued.html", ctx.session, token_id=tid, role=f.get("role"), secret=secret)


async def revoke_token(ctx: Ctx) -> web.StreamResponse:
    rec = await ctx.gw.revoke_token(ctx.request.match_info["token_id"], ctx.session.actor)
    return render(ctx.request, "done.html", ctx.session, action="revoke token", result={"id": rec.id})


# --- audit --------------------------------------------------------------------------------------
async def audit(ctx: Ctx) -> web.StreamResponse:
    gw = ctx.gw
    size = await gw.store.audit_size()
    rows = (await gw.store.checkpoints(-1, 1000))[-PAGE_SIZE:][::-1]
    return render(ctx.request, "audit.html", ctx.session, size=size, rows=rows)


async def audit_export(ctx: Ctx) -> web.StreamResponse:
    return await ctx.request.app[CONSOLE].export(ctx.request)  # the API's own export handler, as is


async def evidence(ctx: Ctx) -> web.StreamResponse:
    """Evidence for one message: the API's own handler (the same collector, both logs' proofs)."""
    return await ctx.request.app[CONSOLE].evidence(ctx.request)


async def root(request: web.Request) -> web.StreamResponse:
    return _see_other("/console/link")


async def _strict_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path == "/console" or request.path.startswith("/console/"):
        response.headers.update(HEADERS)


PAGES: Final = (
    ("POST", "/console/sign-out", sign_out, SIGNED_IN),
    ("GET", "/console/link", link, SIGNED_IN),
    ("GET", "/console/messages", messages, SIGNED_IN),
    ("GET", "/console/messages/{id}", message, SIGNED_IN),
    ("GET", "/console/messages/{id}/evidence", evidence, SIGNED_IN),
    ("GET", "/console/audit", audit, SIGNED_IN),
    ("GET", "/console/audit/export", audit_export, SIGNED_IN),
    ("GET", "/console/keys", keys, ADMIN),
    ("POST", "/console/keys/{action}", key_action, ADMIN),
    ("GET", "/console/tokens", tokens, ADMIN),
    ("POST", "/console/tokens", issue, ADMIN),
    ("POST", "/console/tokens/{token_id}/revoke", revoke_token, ADMIN),
)


def _pretty(value: Any) -> str:
    """JSON for people: indented, and Chinese (any non-ASCII) as itself, never as \\u escapes;
    the template autoescapes it for HTML."""
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True)


def _fmt(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return format_ts(value)
    return "—" if value is None else str(value)


def setup(
    app: web.Application,
    gw: Gateway,
    *,
    key_expiry: Callable[[Gateway, dt.datetime], Mapping[str, Any]],
    export: Callable[[web.Request], Awaitable[web.StreamResponse]],
    evidence: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> None:
    """Mount the console on `app` (the local listener) at /console/; `key_expiry`, `export` and
    `evidence` are the JSON API's, so both show the same readings and hand out the same files."""
    env = aiohttp_jinja2.setup(
        app, loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, default_helpers=False
    )
    env.filters["ts"] = _fmt
    env.filters["pretty"] = _pretty
    idle = dt.timedelta(seconds=gw.config.console.idle_timeout_seconds)
    app[CONSOLE] = Console(gw, SessionStore(gw.clock, idle), key_expiry, export, evidence)
    app.on_response_prepare.append(_strict_headers)
    app.router.add_get("/console", root)
    app.router.add_get("/console/", root)
    app.router.add_get("/console/sign-in", sign_in_form)
    app.router.add_post("/console/sign-in", sign_in)
    app.router.add_static("/console/static/", HERE / "static", append_version=False)
    for method, path, page, roles in PAGES:
        app.router.add_route(method, path, _guard(roles, page))
