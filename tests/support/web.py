"""Signing in to a running agent's web UI from tests: over the JSON API (httpx) or in Chromium (Playwright)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from playwright.async_api import Browser, Error, Page

from edge_agent.runtime import Agent
from edge_agent.services.web_users import Role

PASSWORD = "correct horse battery"


@asynccontextmanager
async def signed_in(
    agent: Agent, username: str, role: Role = Role.TECHNICIAN, *, timeout: float = 20
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client with a session of `role` (the account is made when missing, password PASSWORD), sending
    the session's CSRF token on every request."""
    assert agent.users is not None
    if agent.users.get(username) is None:
        await agent.users.add(username, PASSWORD, role)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{agent.web_port}", timeout=timeout) as client:
        answer = await client.post("/api/auth/login", json={"username": username, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        client.headers["X-CSRF-Token"] = answer.json()["csrf"]
        yield client


async def sign_in_page(browser: Browser, agent: Agent, username: str, password: str = PASSWORD) -> Page:
    """A 1280x800 page signed in through the sign-in form, in English, on the dashboard."""
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    base = f"http://127.0.0.1:{agent.web_port}"
    await page.goto(f"{base}/login")
    await page.evaluate("localStorage.setItem('edge-lang', 'en')")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/")
    return page


async def until(page: Page, expression: str, timeout: float = 10.0) -> None:
    """Until `expression` is true in the page (wait_for_function would need 'unsafe-eval', which our CSP refuses)."""
    deadline = time.monotonic() + timeout
    failed: Error | None = None
    while True:
        # A page that is re-rendering (a language switch, a live update) can be caught without the element
        # for a moment, and the expression throws: that is "not yet", not an answer. The last error is
        # reported if it never comes true.
        try:
            if await page.evaluate(expression):
                return
        except Error as exc:
            failed = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {expression}" + (f" (last error: {failed})" if failed else ""))
        await page.wait_for_timeout(50)
