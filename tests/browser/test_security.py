"""The console's defences, seen from a real browser (issue 20): forged and CSRF-less forms are
refused and change nothing, an auditor cannot reach admin actions, an idle session ends on the
gateway's clock, agency tokens cannot sign in, and no page shows a token secret (`Console.seen`
checks every page each test lands on), and markup in data is text that never runs."""

from __future__ import annotations

import datetime as dt
import re

from customs_gateway.service.gateway import issue_token
from tests.gateway.conftest import US, sample

from .conftest import Console


async def test_forged_and_csrf_less_forms_are_refused_and_change_nothing(console: Console) -> None:
    from playwright.async_api import expect

    page, gw = console.page, console.pair.gw(US)
    await console.sign_in_as("admin")
    before = await gw.store.list_tokens()

    # The session's own form with its CSRF field changed, then removed.
    for forge, name in (("e => e.value = 'forged'", "csrf-forged"), ("e => e.remove()", "csrf-missing")):
        await console.goto("/console/tokens")
        await page.get_by_label("Label").fill("should never exist")
        await page.locator("#issue input[name=csrf]").evaluate(forge)
        await page.get_by_role("button", name="Issue").click()
        await expect(page.locator("h1.problem")).to_have_text("console.csrf")
        await console.seen(name)

    # A request from the signed-in browser without any form token.
    resp = await page.request.post(console.url + "/console/tokens", form={"role": "admin", "label": "x"})
    assert resp.status == 403 and "console.csrf" in await resp.text()

    # Another site's page posting a form to the console: the Strict cookie stays home.
    attacker = "http://attacker.example/"
    form = (
        f'<form method="post" action="{console.url}/console/tokens"><input name="role" value="admin">'
        '<input name="label" value="pwned"><button type="submit">Win a prize</button></form>'
    )
    await page.route(attacker, lambda route: route.fulfill(body=form, content_type="text/html"))
    await page.goto(attacker)
    await page.get_by_role("button", name="Win a prize").click()
    await expect(page).to_have_url(re.compile("/console/sign-in$"))
    await console.seen("cross-site-form")
    assert await gw.store.list_tokens() == before


async def test_auditor_reads_but_cannot_reach_admin_actions(console: Console) -> None:
    from playwright.async_api import expect

    page, gw = console.page, console.pair.gw(US)
    await console.sign_in_as("auditor")
    nav = page.locator("header nav")
    await expect(nav.get_by_role("link", name="Audit")).to_be_visible()
    await expect(nav.get_by_role("link", name="Keys")).to_have_count(0)
    await expect(nav.get_by_role("link", name="Tokens")).to_have_count(0)
    for path in ("/console/messages", "/console/messages?direction=inbound", "/console/audit"):
        await console.goto(path)
        await expect(page.locator("h1")).not_to_have_class("problem")
        await console.seen("auditor-" + re.sub(r"\W+", "-", path.removeprefix("/console/")))
    for path in ("/console/keys", "/console/tokens"):
        await console.goto(path)
        await expect(page.locator("h1.problem")).to_have_text("auth.forbidden")
        await console.seen("auditor-forbidden-" + path.rsplit("/", 1)[1])

    # Posting the admin forms with the auditor's own, valid CSRF token: refused, nothing changes.
    csrf = await page.locator("header input[name=csrf]").get_attribute("value")
    assert csrf
    before = (await gw.store.list_tokens(), gw.identity.bundle.bundle.serial)
    for path, form in (
        ("/console/keys/rotate", {"csrf": csrf, "kind": "signing", "confirm": "yes"}),
        ("/console/tokens", {"csrf": csrf, "role": "admin", "label": "escalate"}),
        (f"/console/tokens/{before[0][0].id}/revoke", {"csrf": csrf}),
    ):
        resp = await page.request.post(console.url + path, form=form)
        assert resp.status == 403 and "auth.forbidden" in await resp.text(), path
    assert (await gw.store.list_tokens(), gw.identity.bundle.bundle.serial) == before


async def test_idle_session_expires_on_the_gateway_clock(console: Console) -> None:
    from playwright.async_api import expect

    page = console.page
    idle = dt.timedelta(seconds=console.pair.gw(US).config.console.idle_timeout_seconds)
    await console.sign_in_as("admin")
    console.clock.jump(idle - dt.timedelta(seconds=30))
    await console.goto("/console/audit")
    await expect(page.get_by_role("heading", name="Audit log")).to_be_visible()  # still signed in, touched
    await console.seen("audit-before-idle")
    console.clock.jump(idle + dt.timedelta(seconds=1))
    await page.reload()
    await expect(page).to_have_url(re.compile("/console/sign-in$"))
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await console.seen("expired")


async def test_agency_and_unknown_tokens_cannot_sign_in(console: Console) -> None:
    from playwright.async_api import expect

    page = console.page
    for token, code in ((console.tokens["agency"], "auth.forbidden"), ("cgw_0123456789abcdef.nope", "auth.invalid")):
        await console.sign_in(token)
        await expect(page.locator("h1.problem")).to_have_text(code)
        await console.seen("refused-" + code.replace(".", "-"))
        await console.goto("/console/link")
        await expect(page).to_have_url(re.compile("/console/sign-in$"))


async def test_markup_in_data_is_shown_as_text_and_never_runs(console: Console) -> None:
    from playwright.async_api import expect

    page, gw = console.page, console.pair.gw(US)
    label = "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script> 海关"
    await issue_token(gw.store, gw.clock, "agency", label, "test")
    body = sample("seizure-share")
    body["notes"] = "</pre><script>document.title='pwned'</script> 注意"
    us = console.pair.apis[US]
    status, res = await us.submit("seizure-share", body=body)
    assert status == 202, res
    await console.sign_in_as("admin")
    await console.goto("/console/tokens")
    await expect(page.locator("#tokens")).to_contain_text(label)
    await expect(page).to_have_title("Tokens — customs-gateway")
    await console.seen("markup-in-a-label")
    await console.goto(f"/console/messages/{res['id']}")
    await expect(page.locator("#document")).to_contain_text("</pre><script>document.title='pwned'</script> 注意")
    await expect(page).to_have_title(f"Message {res['id']} — customs-gateway")
    await expect(page.locator("script")).to_have_count(0)
    await console.seen("markup-in-a-document")
