"""First-run setup and sign-in in the system Chromium (Playwright): a fresh agent sends the browser to /setup,
the one-time token from the agent's log creates the first admin, who lands on the dashboard signed in; sign-out;
a wrong password is said so, the right one signs in; the setup page is gone once used.

With EDGE_SCREENSHOTS=1 it also saves docs/screenshots/ui-setup.png and ui-login.png (1280x800)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from edge_agent.services.web_users import MAX_PASSWORD, MIN_DISTINCT, MIN_PASSWORD, WeakPasswordError, check_password
from tests.conftest import agent_config, running_agent
from tests.support.browser import chromium

SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
PASSWORD = "correct horse battery"


def _token_from_log(caplog: pytest.LogCaptureFixture) -> str:
    for record in caplog.records:
        found = re.search(r"one-time setup token ([0-9a-f-]{27})", record.getMessage())
        if found:
            return found.group(1)
    raise AssertionError("the agent did not log a setup token")


async def _screenshot(page: Page, name: str) -> None:
    if os.environ.get("EDGE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / name))


async def test_first_run_setup_then_sign_out_and_in(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edge_agent")
    config = agent_config(tmp_path / "data", None, agent={"store_id": "sh-0042"})
    async with running_agent(config) as agent, chromium() as browser:
        assert agent.users is not None
        token = _token_from_log(caplog)
        assert token == agent.users.setup_token()
        base = f"http://127.0.0.1:{agent.web_port}"
        context = await browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
        page = await context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))

        # No account yet: the dashboard sends the browser to sign in, and sign-in to setup.
        await page.goto(base + "/")
        await expect(page).to_have_url(base + "/setup")
        await expect(page.locator("h1")).to_have_text("First-run setup")
        # The hint names every rule the server enforces, with the server's own numbers.
        rules = await page.locator("#password-rules").text_content() or ""
        assert f"{MIN_PASSWORD} characters" in rules and f"{MAX_PASSWORD:,}" in rules
        assert f"{MIN_DISTINCT} different" in rules and "most common" in rules and "user name" in rules
        for weak, rule in (("short", "at least"), ("aaaabbbbaaaabbbb", "repeated"), ("password1234", "common"),
                           ("boss-is-my-name", "user name")):
            with pytest.raises(WeakPasswordError, match=rule):
                check_password(weak, "boss")
        await page.fill("#username", "boss")
        await _screenshot(page, "ui-setup.png")
        await page.fill("#token", "000000-000000-000000-000000")
        await page.fill("#password", PASSWORD)
        await page.fill("#password2", PASSWORD)
        await page.click("#create-admin")
        await expect(page.locator("#message")).not_to_be_empty()  # a wrong token is refused, said on the page
        assert agent.users.count() == 0
        await page.fill("#token", token)
        await page.click("#create-admin")
        await expect(page).to_have_url(base + "/")
        await expect(page.locator("#who")).to_have_text("boss · admin")
        assert agent.users.setup_token() is None

        # Sign out, then a wrong password, then the right one.
        await page.click("#sign-out")
        await expect(page).to_have_url(re.compile(re.escape(base) + r"/login.*"))
        await page.fill("#username", "boss")
        await _screenshot(page, "ui-login.png")
        await page.fill("#password", "not the password")
        await page.click("#sign-in")
        await expect(page.locator("#message")).to_have_text("Wrong user name or password.")
        await expect(page.locator("#password")).to_have_value("")
        await page.fill("#password", PASSWORD)
        await page.click("#sign-in")
        await expect(page).to_have_url(base + "/")
        await expect(page.locator("#who")).to_have_text("boss · admin")

        # The token is used up: the setup page sends the browser to sign in.
        await page.goto(base + "/setup")
        await expect(page).to_have_url(base + "/login")
        # An admin page opened signed out comes back after sign-in.
        await context.clear_cookies()
        await page.goto(base + "/ui/users")
        await expect(page).to_have_url(re.compile(re.escape(base) + r"/login\?next=.*users"))
        await page.fill("#username", "boss")
        await page.fill("#password", PASSWORD)
        await page.click("#sign-in")
        await expect(page).to_have_url(base + "/ui/users")
        await context.close()
    # 401s of the wrong tries show in the console as failed requests; nothing else may.
    assert [e for e in errors if "401" not in e and "400" not in e] == [], errors

