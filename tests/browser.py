"""A real browser for tests of pages people look at: Debian's chromium, driven by playwright.

`make setup` installs chromium where it can (as root); without it the browser tests skip, unless
BITSWARM_REQUIRE_BROWSER is set (`make test` sets it where chromium can be installed), when a
missing browser fails them instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Read at import: the autouse bitswarm_home fixture clears every BITSWARM_* variable before a test runs.
REQUIRE = bool(os.environ.get("BITSWARM_REQUIRE_BROWSER"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
needs_browser = pytest.mark.skipif(not CHROMIUM.exists() and not REQUIRE,
                                   reason=f"{CHROMIUM} is missing: `make setup` installs Debian's chromium "
                                          "(BITSWARM_REQUIRE_BROWSER=1 makes this a failure)")
SCREENSHOTS = Path(__file__).resolve().parents[1] / "build" / "screenshots"


@pytest.fixture
def page():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing and BITSWARM_REQUIRE_BROWSER is set: run `make setup` "
                    "(it installs Debian's chromium as root), or `apt-get install chromium`")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the Python package playwright is missing: run `make setup` (it is in the test extra)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            pg = browser.new_page(viewport={"width": 1280, "height": 800})
            pg.problems = []
            pg.on("pageerror", lambda e: pg.problems.append(f"page error: {e}"))
            pg.on("console", lambda m: m.type == "error" and pg.problems.append(f"console: {m.text}"))
            pg.on("response", lambda r: r.status >= 400 and pg.problems.append(
                f"{r.status} from {r.request.method} {r.url} {r.request.post_data}"))
            yield pg
        finally:
            browser.close()
