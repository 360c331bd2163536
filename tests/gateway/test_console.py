"""The console's security properties over plain HTTP (issue 20): strict headers on every page,
the session cookie's attributes, CSRF refused, roles as in the API, the idle timeout on the
gateway's clock, errors as pages. Fast: no browser (tests/browser/ has the same in Chromium)."""

from __future__ import annotations

import asyncio
import datetime as dt
import html as html_lib
import re
from collections.abc import AsyncIterator

import aiohttp
import msgspec
import pytest

from customs_gateway.core.clock import JumpClock
from customs_gateway.http.console.routes import HEADERS
from customs_gateway.startup.config import ConsoleConfig

from .conftest import CN, US, Pair, sample

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Browser:
    """A cookie-keeping client of one gateway's console that never follows redirects."""

    def __init__(self, session: aiohttp.ClientSession, url: str, pair: Pair, clock: JumpClock) -> None:
        self.session, self.url, self.pair, self.clock = session, url, pair, clock

    async def get(self, path: str) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.session.get(self.url + path, allow_redirects=False) as r:
            return r.status, await r.text(), r

    async def post(self, path: str, data: dict[str, str]) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.session.post(self.url + path, data=data, allow_redirects=False) as r:
            return r.status, await r.text(), r

    async def csrf(self, path: str = "/console/link") -> str:
        _, html, _ = await self.get(path)
        m = CSRF.search(html)
        assert m, html
        return m.group(1)

    async def sign_in(self, token: str) -> aiohttp.ClientResponse:
        csrf = await self.csrf("/console/sign-in")
        status, _, r = await self.post("/console/sign-in", {"csrf": csrf, "token": token})
        assert status == 303, status
        return r


@pytest.fixture
async def b(jump_pair: tuple[Pair, JumpClock]) -> AsyncIterator[Browser]:
    """A console client of US-CBP's gateway (on a clock the test moves) and its pair."""
    pair, clock = jump_pair
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        yield Browser(s, pair.apis[US].url, pair, clock)


def _token_id(token: str) -> str:
    return token.split(".", maxsplit=1)[0].removeprefix("cgw_")


async def test_sign_in_sets_a_strict_cookie_and_every_page_has_strict_headers(b: Browser) -> None:
    pair = b.pair
    r = await b.sign_in(pair.apis[US].tokens["admin"])
    assert r.headers["Location"] == "/console/link"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console/" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback; Secure when the request came over TLS
    for path in (
        "/console/sign-in",
        "/console/link",
        "/console/messages",
        "/console/keys",
        "/console/tokens",
        "/console/audit",
        "/console/static/console.css",
        "/console/messages/nope",
    ):
        status, html, resp = await b.get(path)
        for name, value in HEADERS.items():
            assert resp.headers[name] == value, (path, name)
        if path.endswith(".css"):
            continue
        assert '<meta charset="utf-8">' in html and 'lang="en"' in html
        assert "Traceback" not in html
    status, html, _ = await b.get("/console/messages/nope")
    assert status == 404 and "message.not_found" in html


async def test_agency_token_and_bad_token_cannot_sign_in(b: Browser) -> None:
    pair = b.pair
    for token, status_code in ((pair.apis[US].tokens["agency"], 403), ("0123456789abcdef.nope", 401)):
        csrf = await b.csrf("/console/sign-in")
        status, html, _ = await b.post("/console/sign-in", {"csrf": csrf, "token": token})
        assert status == status_code and token not in html
        assert (await b.get("/console/link"))[0] == 303


async def test_csrf_missing_or_wrong_is_refused_and_changes_nothing(b: Browser) -> None:
    pair = b.pair
    await b.sign_in(pair.apis[US].tokens["admin"])
    gw = pair.gw(US)
    before = await gw.store.list_tokens()
    for form in ({"role": "admin", "label": "x"}, {"role": "admin", "label": "x", "csrf": "forged"}):
        status, html, _ = await b.post("/console/tokens", form)
        assert status == 403 and "console.csrf" in html
    victim = before[0].id
    status, _, _ = await b.post(f"/console/tokens/{victim}/revoke", {"csrf": "forged"})
    assert status == 403
    assert await gw.store.list_tokens() == before
    # a sign-in without the pre-session's token is refused too (login CSRF)
    async with aiohttp.ClientSession() as fresh:
        status, _, _ = await Browser(fresh, b.url, pair, b.clock).post(
            "/console/sign-in", {"token": pair.apis[US].tokens["admin"]}
        )
        assert status == 403


async def test_auditor_sees_link_messages_audit_but_no_admin_action(b: Browser) -> None:
    pair = b.pair
    await b.sign_in(pair.apis[US].tokens["auditor"])
    for path in ("/console/link", "/console/messages", "/console/messages?direction=inbound", "/console/audit"):
        assert (await b.get(path))[0] == 200, path
    for path in ("/console/keys", "/console/tokens"):
        status, html, _ = await b.get(path)
        assert status == 403 and "auth.forbidden" in html
    csrf = await b.csrf()
    gw = pair.gw(US)
    before = (await gw.store.list_tokens(), gw.identity.bundle.bundle.serial)
    assert (await b.post("/console/tokens", {"csrf": csrf, "role": "admin"}))[0] == 403
    assert (await b.post("/console/keys/rotate", {"csrf": csrf, "kind": "signing", "confirm": "yes"}))[0] == 403
    assert (await gw.store.list_tokens(), gw.identity.bundle.bundle.serial) == before


async def test_session_expires_after_idle_time_on_the_gateway_clock(b: Browser) -> None:
    pair, clock = b.pair, b.clock
    await b.sign_in(pair.apis[US].tokens["admin"])
    clock.jump(dt.timedelta(minutes=14))
    assert (await b.get("/console/link"))[0] == 200  # touched: the idle time starts again
    clock.jump(dt.timedelta(minutes=14))
    assert (await b.get("/console/link"))[0] == 200
    clock.jump(dt.timedelta(minutes=15))
    status, _, r = await b.get("/console/link")
    assert status == 303 and r.headers["Location"] == "/console/sign-in"


async def test_the_idle_timeout_is_the_configured_one(b: Browser) -> None:
    pair, clock = b.pair, b.clock
    cfg = pair.lp.configs[US]
    await pair.lp.stop(US)
    pair.lp.configs[US] = msgspec.structs.replace(cfg, console=ConsoleConfig(idle_timeout_seconds=120))
    await pair.lp.start(US, clock=clock)
    await b.sign_in(pair.apis[US].tokens["admin"])
    clock.jump(dt.timedelta(seconds=100))
    assert (await b.get("/console/link"))[0] == 200
    clock.jump(dt.timedelta(seconds=121))
    assert (await b.get("/console/link"))[0] == 303


async def test_sign_out_ends_the_session_and_a_revoked_token_ends_it_too(b: Browser) -> None:
    pair = b.pair
    await b.sign_in(pair.apis[US].tokens["admin"])
    old = b.session.cookie_jar.filter_cookies(aiohttp.client.URL(b.url + "/console/"))["console_session"].value
    status, _, _ = await b.post("/console/sign-out", {"csrf": await b.csrf()})
    assert status == 303
    async with aiohttp.ClientSession(cookies={"console_session": old}) as replay:
        assert (await Browser(replay, b.url, pair, b.clock).get("/console/link"))[0] == 303
    await b.sign_in(pair.apis[US].tokens["auditor"])
    tid = _token_id(pair.apis[US].tokens["auditor"])
    await pair.gw(US).revoke_token(tid, "test")
    assert (await b.get("/console/link"))[0] == 303


async def test_issue_and_revoke_record_the_same_actor_as_the_api(b: Browser) -> None:
    pair = b.pair
    admin = pair.apis[US].tokens["admin"]
    await b.sign_in(admin)
    status, html, r = await b.post("/console/tokens", {"csrf": await b.csrf(), "role": "agency", "label": "海关 test"})
    assert status == 200 and r.headers["Cache-Control"] == "no-store"
    secret = re.search(r'<pre id="secret">([^<]+)</pre>', html)
    assert secret and "海关 test" not in html
    tid = _token_id(secret.group(1))
    _, tokens_html, _ = await b.get("/console/tokens")
    assert secret.group(1) not in tokens_html and "海关 test" in tokens_html
    status, _, _ = await b.post(f"/console/tokens/{tid}/revoke", {"csrf": await b.csrf()})
    assert status == 200
    gw = pair.gw(US)
    entries = [e for _, e in await gw.store.audit_entries(0, 10_000)]
    actor = f"token:{_token_id(admin)}"
    assert any(b'"token_revoked"' in e and actor.encode() in e for e in entries)


async def test_search_by_date_range_on_both_directions(b: Browser) -> None:
    pair, clock = b.pair, b.clock
    us, cn = pair.apis[US], pair.apis[CN]
    sent: dict[str, list[tuple[str, dt.date]]] = {US: [], CN: []}
    for _ in range(2):
        for name, api in ((US, us), (CN, cn)):
            status, res = await api.submit("seminar-notice")
            assert status == 202, res
            await api.wait_status(res["id"], {"delivered"})
            sent[name].append((res["id"], clock.now().date()))
        clock.jump(dt.timedelta(days=3))
    (first, day1), (second, day2) = sent[US]
    (in_first, in_day1), (in_second, in_day2) = sent[CN]  # received by US the same day
    assert day2 - day1 == dt.timedelta(days=3) and (in_day1, in_day2) == (day1, day2)
    await b.sign_in(pair.apis[US].tokens["auditor"])
    for direction, one, two in (("outbound", first, second), ("inbound", in_first, in_second)):
        for since, until, want, unwanted in (
            (day1, day1, one, two),
            (day1 + dt.timedelta(days=1), None, two, one),
            (None, day2 - dt.timedelta(days=1), one, two),
            (day1, day2, one, None),
        ):
            query = f"direction={direction}&since={since or ''}&until={until or ''}"
            status, html, _ = await b.get(f"/console/messages?{query}")
            assert status == 200 and want in html, (query, html)
            assert unwanted is None or unwanted not in html, query
        status, html, _ = await b.get(f"/console/messages?direction={direction}&since={day2 + dt.timedelta(days=1)}")
        assert status == 200 and "No message." in html
    # A received message's page: its sender, acknowledgement and document.
    status, html, _ = await b.get(f"/console/messages/{in_first}")
    assert status == 200 and f"<td>{CN}</td>" in html and 'id="status">unacknowledged<' in html
    assert '<pre id="document">' in html and '"title":' in html_lib.unescape(html)
    for query, code in (
        ("since=2026-13-01", "schema.date"),
        ("until=yesterday", "schema.date"),
        ("since=2026-12-03T10:00:00Z", "schema.date"),
        ("since=2026-12-05&until=2026-12-04", "schema.range"),
        ("direction=inbound&cursor=abc", "schema.cursor"),
    ):
        status, html, _ = await b.get(f"/console/messages?{query}")
        assert status == 422 and code in html and "Traceback" not in html, query


async def test_evidence_of_one_message_or_a_clear_error_page(b: Browser) -> None:
    pair = b.pair
    status, res = await pair.apis[US].submit("seminar-notice")
    assert status == 202, res
    await pair.apis[US].wait_status(res["id"], {"delivered"})
    await b.sign_in(pair.apis[US].tokens["auditor"])
    _, html, _ = await b.get(f"/console/messages/{res['id']}")
    assert f'href="/console/messages/{res["id"]}/evidence"' in html
    for mid, status_code, code in (
        (res["id"], 409, "evidence.not_cosigned"),
        ("0190b1d4-0000-7000-8000-000000000000", 404, "evidence.not_found"),
        ("nope", 404, "evidence.not_found"),
        ("x" * 65, 422, "schema.pattern"),
    ):
        status, html, r = await b.get(f"/console/messages/{mid}/evidence")
        assert status == status_code and code in html and "Traceback" not in html, (mid, html)
        assert r.headers["Content-Security-Policy"] == HEADERS["Content-Security-Policy"]


async def test_bad_input_gets_an_error_page_never_a_traceback(b: Browser) -> None:
    pair = b.pair
    await b.sign_in(pair.apis[US].tokens["admin"])
    csrf = await b.csrf()
    before = (await pair.gw(US).store.list_tokens(), pair.gw(US).identity.bundle.bundle.serial)
    posts = [
        ("/console/keys/bogus", {"kind": "signing"}, 404),
        ("/console/keys/rotate", {"kind": "bogus", "confirm": "yes"}, None),
        ("/console/keys/renew", {"kind": "signing", "valid_days": "abc", "confirm": "yes"}, 422),
        ("/console/keys/revoke", {"kid": "nope", "reason": "x", "confirm": "yes"}, None),
        ("/console/tokens", {"role": "bogus", "label": "x"}, None),
        ("/console/tokens", {"role": "agency", "label": "x", "valid_days": "-1"}, 422),
        ("/console/tokens/nope/revoke", {}, None),
    ]
    for path, form, want in posts:
        status, html, _ = await b.post(path, {"csrf": csrf, **form})
        assert 400 <= status < 500 and (want is None or status == want), (path, form, status)
        assert 'class="problem"' in html and "Traceback" not in html, (path, html)
    for path in ("/console/messages/%00", "/console/messages?type=bogus", "/console/messages?direction=sideways"):
        status, html, _ = await b.get(path)
        assert 400 <= status < 500 and 'class="problem"' in html and "Traceback" not in html, (path, html)
    # A form body that is not UTF-8 (it was a 500): an error page, on a signed-in page and on sign-in.
    raw = b"csrf=" + csrf.encode() + b"&role=agency&label=\xff\xfe"
    for path in ("/console/tokens", "/console/sign-in"):
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        async with b.session.post(b.url + path, data=raw, headers=headers, allow_redirects=False) as r:
            html = await r.text()
            assert r.status == 400 and 'class="problem"' in html and "UTF-8" in html, (path, r.status, html)
    assert (await pair.gw(US).store.list_tokens(), pair.gw(US).identity.bundle.bundle.serial) == before


async def test_a_message_page_shows_its_terms_permissions_and_consent(b: Browser) -> None:
    """Issue 17 in the console: the handling terms of a message, and on the receiver's side its
    current permissions and the consent requests about it, both sides alike."""
    pair = b.pair
    status, share = await pair.apis[CN].submit("seizure-share")
    assert status == 202, share
    await pair.apis[CN].wait_status(share["id"], {"delivered"})
    party = "State Administration for Market Regulation / 国家市场监督管理总局"
    status, req, _ = await pair.apis[US].call(
        "POST",
        f"/v1/inbox/{share['id']}/consent-requests",
        json_body={"use": "onward_transfer", "authority": party, "reason": "Product safety recall"},
    )
    assert status == 202, req
    await pair.apis[US].wait_status(req["id"], {"delivered"})
    status, dec, _ = await pair.apis[CN].call(
        "POST",
        f"/v1/messages/{share['id']}/consent-requests/{req['id']}/decision",
        json_body={"decision": "granted_with_conditions", "conditions": "Recall only <b>no press</b>"},
    )
    assert status == 202, dec
    await pair.apis[CN].wait_status(dec["id"], {"delivered"})
    await b.sign_in(pair.apis[US].tokens["admin"])
    _, page, _ = await b.get(f"/console/messages/{share['id']}")
    text = html_lib.unescape(page)
    assert 'id="handling"' in page and "ipr-enforcement" in text and "law-enforcement-sensitive" in text
    assert 'id="permissions"' in page and party in text
    assert "granted_with_conditions" in text and "<b>no press</b>" not in page  # escaped, shown as text
    assert "Recall only <b>no press</b>" in text


async def test_the_link_page_counts_deliveries_and_raises_alerts(b: Browser) -> None:
    pair = b.pair
    status, res = await pair.apis[US].submit("seminar-notice")
    assert status == 202, res
    await pair.apis[US].wait_status(res["id"], {"delivered"})
    await b.sign_in(pair.apis[US].tokens["auditor"])
    _, page, _ = await b.get("/console/link")
    assert re.search(r'id="delivered-hour">[1-9]', page), page
    assert 'id="refused-hour">0<' in page
    assert "None: the link is healthy." in page
    # The peer goes away with a message queued; 16 minutes later the page says so.
    await pair.lp.stop(CN)
    status, res = await pair.apis[US].submit("seminar-notice")
    assert status == 202, res
    b.clock.jump(dt.timedelta(minutes=16))
    await b.sign_in(pair.apis[US].tokens["auditor"])  # the session has been idle past its timeout
    for _ in range(100):
        _, page, _ = await b.get("/console/link")
        if "is failing" in page or "is unreachable" in page:
            break
        await asyncio.sleep(0.1)
    text = html_lib.unescape(page)
    assert "has been queued since" in text, text
    assert "The peer is failing" in text or "The peer is unreachable" in text, text


async def test_search_by_handling_terms_on_both_directions(b: Browser) -> None:
    pair = b.pair
    sent = {}
    for name, msg_type, terms in (
        ("share", "seizure-share", None),
        ("notice", "seminar-notice", None),
        ("inquiry", "seizure-share", {"purpose": "investigation"}),
    ):
        body = {"type": msg_type, "to": CN, "body": sample(msg_type), **({"handling": terms} if terms else {})}
        status, res, _ = await pair.apis[US].call("POST", "/v1/messages", json_body=body)
        assert status == 202, res
        sent[name] = res["id"]
    for mid in sent.values():
        await pair.apis[US].wait_status(mid, {"delivered"})
    await b.sign_in(pair.apis[US].tokens["auditor"])

    async def found(query: str) -> set[str]:
        status, page, _ = await b.get(f"/console/messages?{query}")
        assert status == 200, page
        return {mid for mid in sent.values() if mid in page}

    assert await found("purpose=training") == {sent["notice"]}
    assert await found("purpose=investigation") == {sent["inquiry"]}
    assert await found("level=law-enforcement-sensitive") == {sent["share"], sent["inquiry"]}
    assert await found("level=unrestricted&type=seminar-notice") == {sent["notice"]}
    # The receiver's inbox, through CN-GACC's console.
    b.url = pair.apis[CN].url
    await b.sign_in(pair.apis[CN].tokens["auditor"])
    assert await found("direction=inbound&purpose=ipr-enforcement") == {sent["share"]}
    status, page, _ = await b.get("/console/messages?purpose=tax")
    assert status == 422 and "schema.enum" in page and "Traceback" not in page


async def test_a_message_page_shows_its_hold_and_its_disposal(b: Browser) -> None:
    """Issue 18 in the console: a held message lists its holds (ours and the peer's, reasons
    escaped); a disposed one says so, with no document left to show."""
    pair = b.pair
    until = (b.clock.now().date() + dt.timedelta(days=1)).isoformat()
    ids = []
    for _ in range(2):
        status, res, _ = await pair.apis[US].call(
            "POST",
            "/v1/messages",
            json_body={
                "type": "seminar-notice",
                "to": CN,
                "body": sample("seminar-notice"),
                "handling": {"retain_until": until},
            },
        )
        assert status == 202, res
        await pair.apis[US].wait_status(res["id"], {"delivered"})
        ids.append(res["id"])
    held, gone = ids
    status, hold, _ = await pair.apis[US].call(
        "POST", "/v1/admin/holds", role="admin", json_body={"message_id": held, "reason": "Court <i>order</i> 17"}
    )
    assert status == 201, hold
    await b.sign_in(pair.apis[US].tokens["admin"])
    _, page, _ = await b.get(f"/console/messages/{held}")
    assert 'id="holds"' in page and "<i>order</i>" not in page and "Court <i>order</i> 17" in html_lib.unescape(page)
    assert f"Kept until {until}" in page
    b.clock.jump(dt.timedelta(days=2))
    assert (await pair.gw(US).disposal.run_once()).disposed == [gone]
    await b.sign_in(pair.apis[US].tokens["admin"])  # idle past the timeout on the moved clock
    _, page, _ = await b.get(f"/console/messages/{gone}")
    assert 'id="disposed"' in page and 'id="document"' not in page and "Traceback" not in page
    _, page, _ = await b.get(f"/console/messages/{held}")
    assert 'id="document"' in page and 'id="disposed"' not in page
