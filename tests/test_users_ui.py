"""The configuration, events, users, account and API-docs pages in the system Chromium, against a running agent
started from a real configuration file: an admin edits a value and sees the restart notice (and the file on
disk changed), adds and removes a user; a technician verifies the audit chain, filters events, and reads the
API in Swagger UI served from local files under the page's CSP; a staff member changes their own password.

With EDGE_SCREENSHOTS=1 it also saves docs/screenshots/ui-config.png and ui-events.png (1280x800)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Page

from edge_agent.services.web_users import Role
from tests.support.browser import chromium
from tests.support.web import PASSWORD
from tests.test_config_api import agent_from_file

SHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
LOCKERS = "\n[lockers]\nenabled = true\n"
KEY = "ab" * 32


async def sign_in(context: BrowserContext, base: str, username: str, password: str = PASSWORD) -> Page:
    page = await context.new_page()
    await page.goto(f"{base}/login")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/")
    return page


async def test_admin_technician_and_staff_pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The key in the agent's environment: the editor checks secrets against it like `check-config` does.
    monkeypatch.setenv("EDGE_AGENT_STORE_HMAC_KEY", KEY)
    screenshots = os.environ.get("EDGE_SCREENSHOTS") == "1"
    async with agent_from_file(tmp_path, LOCKERS) as agent, chromium() as browser:
        assert agent.users is not None and agent.audit is not None and agent.config_path is not None
        await agent.users.add("admin1", PASSWORD, Role.ADMIN)
        await agent.users.add("tech1", PASSWORD, Role.TECHNICIAN)
        await agent.users.add("staff1", PASSWORD, Role.STAFF)
        base = f"http://127.0.0.1:{agent.web_port}"
        problems: list[str] = []

        # -- admin: configuration ----------------------------------------------------------------------
        admin_ctx = await browser.new_context(viewport={"width": 1280, "height": 800})
        page = await sign_in(admin_ctx, base, "admin1")
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        await page.goto(f"{base}/ui/config")
        await page.wait_for_selector("body[data-ready='1'] #cfg-editor")
        text = await page.input_value("#cfg-editor")
        assert 'store_id = "store-0001"' in text
        await page.fill("#cfg-editor", text.replace("keepalive_s = 30", "keepalive_s = 1\nmystery = true"))
        await page.click("#cfg-check")
        await page.wait_for_selector("#cfg-problems")
        report = await page.inner_text("#cfg-report")
        assert "cloud.mystery" in report and "cloud.keepalive_s" in report
        await page.fill("#cfg-editor", text.replace("keepalive_s = 30", "keepalive_s = 45"))
        await page.click("#cfg-save")
        await page.wait_for_selector("#cfg-restart")
        assert "cloud.keepalive_s" in await page.inner_text("#cfg-restart")
        assert "keepalive_s = 45" in agent.config_path.read_text()
        await page.wait_for_selector("#cfg-version-table tbody tr")
        assert await page.locator("#cfg-version-table tbody tr").count() == 1
        if screenshots:
            SHOTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SHOTS / "ui-config.png"), full_page=False)

        # -- admin: users ---------------------------------------------------------------------------------
        await page.goto(f"{base}/ui/users")
        await page.wait_for_selector("body[data-ready='1'] #us-table tr[data-user='admin1']")
        assert await page.locator("tr[data-user='admin1'] button.danger").count() == 0  # not yourself
        await page.fill("#us-new-name", "tech2")
        await page.select_option("#us-new-role", "technician")
        await page.fill("#us-new-password", "a new technician pw")
        await page.fill("#us-new-password2", "a new technician pw")
        await page.click("#us-add button[type=submit]")
        await page.wait_for_selector("#us-table tr[data-user='tech2']")
        user = agent.users.get("tech2")
        assert user is not None and user.role is Role.TECHNICIAN
        page.once("dialog", lambda dialog: dialog.accept())
        await page.click("tr[data-user='tech2'] button.danger")
        await page.wait_for_selector("#us-table tr[data-user='tech2']", state="detached")
        assert agent.users.get("tech2") is None
        await admin_ctx.close()

        # -- technician: events and audit, /docs ------------------------------------------------------------
        for i in range(3):
            await agent.audit.append("test", compartment=f"A-0{i + 1}", actor="tech:tech1", order_id=None,
                                     detail={"reason": "安装测试"})
        for i in range(6):
            await agent.publish("pickup.ready" if i % 2 else "order.test", {"order_id": f"o-{i}"})
        tech_ctx = await browser.new_context(viewport={"width": 1280, "height": 800})
        page = await sign_in(tech_ctx, base, "tech1")
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        await page.goto(f"{base}/ui/events")
        await page.wait_for_selector("body[data-ready='1'] #au-table tr[data-seq='3']")
        assert await page.locator("#ev-table tr[data-type='order.test']").count() == 3
        await page.fill("#ev-type", "pickup.")
        await page.click("#ev-apply")
        await page.wait_for_selector("#ev-table tr[data-type='order.test']", state="detached")
        assert await page.locator("#ev-table tr[data-type='pickup.ready']").count() == 3
        await page.click("#ev-tab-recent")
        await page.wait_for_selector("#ev-table tr[data-type='pickup.ready'] .badge.warn")  # published, not yet sent
        assert "1,000" in await page.inner_text("#ev-note")
        await page.click("#ev-tab-unsent")
        await page.wait_for_selector("#ev-table tr[data-type='pickup.ready']")
        await page.click("#au-verify")
        await page.wait_for_selector("#au-verdict[data-ok='1']")
        assert "3" in await page.inner_text("#au-verdict")
        assert await page.get_attribute("#ev-diagnostics", "href") == "/api/diagnostics.zip"
        if screenshots:
            await page.screenshot(path=str(SHOTS / "ui-events.png"), full_page=False)
        await page.goto(f"{base}/docs")
        await page.wait_for_selector(".opblock", timeout=20_000)
        docs = await page.inner_text("#swagger-ui")
        assert "/api/config" in docs and "/api/users" in docs and "/api/events" in docs
        await tech_ctx.close()

        # -- staff: my account ----------------------------------------------------------------------------
        staff_ctx = await browser.new_context()
        page = await sign_in(staff_ctx, base, "staff1")
        await page.click("#who")
        await page.wait_for_selector("body[data-ready='1'] #acc-form")
        await page.fill("#acc-current", PASSWORD)
        await page.fill("#acc-password", "a brand new staff password")
        await page.fill("#acc-password2", "a brand new staff password")
        await page.click("#acc-form button[type=submit]")
        await page.wait_for_selector("#flash:not([hidden]):not(.error)")
        await staff_ctx.close()
        check = await agent.users.sign_in("staff1", "a brand new staff password", "test")
        assert check.user is not None
        # No page broke its CSP or threw (Swagger UI included).
        assert not [p for p in problems if "Content Security Policy" in p or "Uncaught" in p], problems
