"""The browser tests' gate: without Chromium or Playwright they skip with the reason, except under
CI=true, where they fail, so CI never passes by skipping them. Runs without a browser."""

from __future__ import annotations

import pytest

from .conftest import require_browser


def test_nothing_missing_runs() -> None:
    require_browser(None, {"CI": "true"})
    require_browser(None, {})


@pytest.mark.parametrize("env", [{}, {"CI": "false"}, {"CI": "1"}])
def test_missing_chromium_skips_with_the_reason_outside_ci(env: dict[str, str]) -> None:
    with pytest.raises(pytest.skip.Exception, match="/usr/bin/chromium is missing"):
        require_browser("/usr/bin/chromium is missing", env)


def test_missing_chromium_fails_under_ci() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"CI=true .* /usr/bin/chromium is missing"):
        require_browser("/usr/bin/chromium is missing", {"CI": "true"})
