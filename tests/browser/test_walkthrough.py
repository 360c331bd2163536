"""An administrator's day in a real browser (issue 20): sign in, find a message by its case
reference and a date range, read it (Chinese and English) and download its evidence, rotate a key
through its confirmation step, issue a token (shown once) and revoke it, download the audit export
and verify both files with the CLI, sign out."""

from __future__ import annotations

import re
from pathlib import Path

from customs_gateway.cli.main import main
from tests.gateway.conftest import CN, US, sample
from tests.gateway.test_audit_export import _checkpoint

from .conftest import Console

CASE = "CBP-2026-LGB-777001"
CHINESE = "带有仿冒 AEROSTRIDE 商标的运动鞋"


async def _seizure_share(console: Console) -> str:
    """A seizure-share with Chinese and English text, sent by US-CBP's agency and delivered."""
    body = sample("seizure-share")
    body["case_reference"] = CASE
    us = console.pair.apis[US]
    status, res = await us.submit("seizure-share", body=body)
    assert status == 202, res
    await us.wait_status(res["id"], {"delivered"})
    return str(res["id"])


async def test_admin_walk_through(console: Console, tmp_path: Path) -> None:
    from playwright.async_api import expect

    page = console.page
    mid = await _seizure_share(console)
    other = console.pair.apis[US]
    status, decoy = await other.submit("seizure-share")  # another case: the search must leave it out
    assert status == 202, decoy
    for side in (US, CN):  # both logs checkpointed and cosigned: the evidence can be proven
        await _checkpoint(console.pair, side)
    await console.sign_in_as("admin")
    await expect(page.locator("#peer-status")).to_have_text("reachable")

    # Find the message by its case reference, typed as a person might (other case, full-width).
    await page.get_by_role("link", name="Messages", exact=True).click()
    await expect(page.get_by_role("heading", name="Messages sent")).to_be_visible()
    await console.seen("messages")
    await page.get_by_label("Reference").fill(" cbp-2026-ＬＧＢ-777001 ")
    await page.get_by_role("button", name="Search").click()
    rows = page.locator("#messages tr")
    await expect(rows).to_have_count(2)  # the header and the one message
    await expect(page.locator("#messages")).not_to_contain_text(decoy["id"])
    await console.seen("messages-by-reference")
    today = console.clock.now().date()
    await page.get_by_label("Since").fill(today.isoformat())
    await page.get_by_label("Until").fill(today.isoformat())
    await page.get_by_role("button", name="Search").click()
    await expect(page).to_have_url(re.compile(f"until={today.isoformat()}"))
    await expect(rows).to_have_count(2)
    await expect(page.get_by_label("Reference")).to_have_value(" cbp-2026-ＬＧＢ-777001 ")
    await console.seen("messages-by-reference-and-date")
    await page.get_by_role("link", name=mid).click()
    await expect(page).to_have_url(re.compile(f"/console/messages/{mid}$"))
    await expect(page.locator("#status")).to_have_text(re.compile("delivered|acknowledged"))
    document = page.locator("#document")
    await expect(document).to_contain_text(CHINESE)
    await expect(document).to_contain_text("Athletic shoes bearing counterfeit AEROSTRIDE marks")
    await expect(document).to_contain_text(CASE)
    await console.seen("message")
    async with page.expect_download() as info:
        await page.locator("#evidence").click()
    download = await info.value
    assert download.suggested_filename == f"evidence-{mid}.jsonl"
    evidence = tmp_path / download.suggested_filename
    await download.save_as(evidence)
    assert main(["audit", "verify", str(evidence)]) == 0

    # Rotate the signing key: a confirmation page first, then the rotation.
    gw = console.pair.gw(US)
    serial = gw.identity.bundle.bundle.serial
    await page.get_by_role("link", name="Keys").click()
    await expect(page.get_by_role("heading", name="Keys", exact=True)).to_be_visible()
    await console.seen("keys")
    await page.locator("#rotate select[name=kind]").select_option("signing")
    await page.get_by_role("button", name="Rotate…").click()
    await expect(page.get_by_role("heading", name="Confirm: rotate")).to_be_visible()
    await console.seen("keys-rotate-confirm")
    assert gw.identity.bundle.bundle.serial == serial  # nothing changed before the confirmation
    await page.get_by_role("button", name="Yes, rotate").click()
    await expect(page.locator("#done")).to_have_text("Done: rotate")
    await console.seen("keys-rotated")
    assert gw.identity.bundle.bundle.serial > serial

    # Issue a token: its secret is shown once, on that page only; then revoke it.
    await page.get_by_role("link", name="Tokens").click()
    await expect(page.get_by_role("heading", name="Tokens")).to_be_visible()
    await console.seen("tokens")
    await page.locator("#issue select[name=role]").select_option("agency")
    await page.get_by_label("Label").fill("海关 browser test / agency")
    await page.get_by_role("button", name="Issue").click()
    await expect(page.get_by_role("heading", name="Token issued")).to_be_visible()
    secret = (await page.locator("#secret").inner_text()).strip()
    token_id = (await page.locator("#token-id").inner_text()).strip()
    assert secret.startswith(f"cgw_{token_id}."), secret
    console.secrets.add(secret)
    await console.seen("token-issued", may_show={secret})
    await page.get_by_role("link", name="Back to tokens").click()
    row = page.locator("#tokens tr", has_text=token_id)
    await expect(row).to_contain_text("海关 browser test / agency")
    await console.seen("tokens-with-new")  # the secret is gone: seen() checks every page
    await row.get_by_role("button", name="Revoke").click()
    await expect(page.locator("#done")).to_have_text("Done: revoke token")
    await console.seen("token-revoked")
    rec = await gw.store.get_token(token_id)
    assert rec is not None and rec.revoked_at is not None

    # The audit export, downloaded by the browser and verified offline by the CLI.
    await _checkpoint(console.pair, US)
    await page.get_by_role("link", name="Audit").click()
    await expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    await expect(page.locator("#checkpoints")).not_to_contain_text("No checkpoint yet.")
    await console.seen("audit")
    async with page.expect_download() as info:
        await page.locator("#export").click()
    download = await info.value
    assert re.fullmatch(rf"audit-{US}-\d+\.jsonl", download.suggested_filename), download.suggested_filename
    path = tmp_path / download.suggested_filename
    await download.save_as(path)
    assert main(["audit", "verify", str(path)]) == 0
    assert not any(s.encode() in path.read_bytes() for s in console.secrets)

    # Sign out: back to the sign-in page, and the console is closed to this browser.
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await console.seen("signed-out")
    await console.goto("/console/link")
    await expect(page).to_have_url(re.compile("/console/sign-in$"))
