"""Debian's Chromium, driven by Playwright's sync API, for the browser tests.

``scripts/install.sh`` installs the browser; Playwright's own browser download
is never used. Playwright's sync API runs an event loop in the test's thread,
inside which Django refuses ORM calls: a browser test does its database work
before it opens the browser or after it closes it, and talks to the server
over HTTP in between.
"""

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is not installed"
)
expect = sync_api.expect

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} is missing: scripts/install.sh installs Debian's chromium "
    "when run as root with apt-get",
)


@contextmanager
def browser_page() -> Iterator[Any]:
    """Yield a fresh page of a headless Chromium, closed on the way out."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def log_in(page: Any, base_url: str, path: str, username: str, password: str) -> None:
    """Open ``path``, which sends an anonymous visitor to log in, and log in."""
    page.goto(f"{base_url}{path}")
    expect(page).to_have_url(re.compile(rf"/accounts/login/\?next={re.escape(path)}$"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
