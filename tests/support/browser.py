"""The system Chromium, driven by Playwright, for the browser tests (DESIGN.md section 4).

Playwright's own browser download is never used: the tests run the Chromium the store's kiosks run
(`/usr/bin/chromium`, Debian's package, installed by scripts/lib/setup.sh), headless.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from playwright.async_api import Browser, async_playwright

CHROMIUM = Path(os.environ.get("EDGE_AGENT_TEST_CHROMIUM", "/usr/bin/chromium"))
# --no-sandbox: CI runs as root in a container, where Chromium's sandbox cannot start.
# --disable-background-networking: no update checks or safe-browsing calls from the test browser.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]

PORTRAIT = {"width": 1080, "height": 1920}
LANDSCAPE = {"width": 1920, "height": 1080}


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless system Chromium for the duration of the block."""
    if not CHROMIUM.exists():
        # A failure, not a skip: the browser tests are part of the suite, and setup.sh installs Chromium.
        raise FileNotFoundError(f"{CHROMIUM} is missing: install Debian's chromium package (scripts/test does)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()
