"""Fixtures of the console's real-browser tests (issue 20): Playwright driving Debian's Chromium
against two real gateways on loopback (`jump_pair` of tests/gateway: SQLite, a clock the test moves).

Without /usr/bin/chromium or the `playwright` package the tests skip with the reason, except under
CI=true, where they fail: CI must never pass by skipping them (`.ci/run` installs Chromium).
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from customs_gateway.core.clock import JumpClock
from tests.gateway.conftest import US, Pair, jump_pair  # noqa: F401 - the fixture, used below

CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT = {"width": 1200, "height": 800}


def _missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium; never `playwright install`)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install -e '.[dev]')"
    return None


def require_browser(why: str | None, env: Mapping[str, str]) -> None:
    """Nothing when `why` is None; else a skip saying why, or under CI=true a failure."""
    if why is None:
        return
    if env.get("CI") == "true":
        pytest.fail(f"CI=true and the browser tests cannot run: {why}", pytrace=False)
    pytest.skip(f"browser tests skipped: {why}")


@pytest.fixture(scope="session")
def browser_available() -> None:
    """Skip (fail under CI=true) when Chromium or Playwright is missing."""
    require_browser(_missing(), os.environ)


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where every page's screenshot goes: $CUSTOMS_GATEWAY_SCREENSHOTS, else the test's tmp_path."""
    where = os.environ.get("CUSTOMS_GATEWAY_SCREENSHOTS")
    out = Path(where) if where else tmp_path / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out


class Console:
    """One browser tab on US-CBP's console: pages are opened and forms sent as a person would,
    and every page it lands on is screenshot and checked for leaked token secrets."""

    def __init__(
        self, page: Any, pair: Pair, clock: JumpClock, screenshots: Path, test: str, secrets: set[str]
    ) -> None:
        self.page, self.pair, self.clock, self.dir, self.test = page, pair, clock, screenshots, test
        self.url = pair.apis[US].url
        self.secrets = secrets  # every token secret known to the test: no page may show one
        self.shots = 0

    @property
    def tokens(self) -> dict[str, str]:
        return self.pair.apis[US].tokens

    async def goto(self, path: str) -> None:
        await self.page.goto(self.url + path)

    async def seen(self, name: str, *, may_show: Iterable[str] = ()) -> Path:
        """The page now shown: screenshot it, and check that neither it nor its URL holds any
        token secret other than `may_show` (the one-time issue page)."""
        html, url = await self.page.content(), self.page.url
        for secret in self.secrets - set(may_show):
            assert secret not in html, f"{name}: a token secret on the page"
            assert secret not in url, f"{name}: a token secret in the URL"
        assert "Traceback" not in html, name
        self.shots += 1
        path = self.dir / f"{self.test}-{self.shots:02d}-{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path

    async def sign_in(self, token: str) -> None:
        from playwright.async_api import expect

        await self.goto("/console/sign-in")
        await expect(self.page.get_by_role("heading", name="Sign in")).to_be_visible()
        await self.seen("sign-in")
        await self.page.get_by_label("Token").fill(token)
        await self.page.get_by_role("button", name="Sign in").click()

    async def sign_in_as(self, role: str) -> None:
        from playwright.async_api import expect

        await self.sign_in(self.tokens[role])
        await expect(self.page).to_have_url(re.compile(r"/console/link$"))
        await expect(self.page.locator(".who")).to_contain_text(role)
        await self.seen(f"link-{role}")


@pytest.fixture
async def console(
    browser_available: None,
    jump_pair: tuple[Pair, JumpClock],  # noqa: F811 - the fixture imported above
    screenshots: Path,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Console]:
    """A fresh Chromium (headless, 1200 px wide) with one tab on US-CBP's console of a running pair."""
    from playwright.async_api import async_playwright

    pair, clock = jump_pair
    secrets = {t for api in pair.apis.values() for t in api.tokens.values()}
    test = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM))
        context = await browser.new_context(viewport=VIEWPORT, accept_downloads=True, locale="en-US")
        context.set_default_timeout(15_000)
        try:
            yield Console(await context.new_page(), pair, clock, screenshots, test, secrets)
        finally:
            await context.close()
            await browser.close()
