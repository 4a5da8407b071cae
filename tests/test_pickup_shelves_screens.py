"""A pickup-shelf order's code at the kiosk ("Pick up an order" keypad) and at the locker screen, in the system
Chromium through the running agent: both screens say which shelf slot is flashing, in their language, through
the one shared code check (the releases are audited, the wrong codes counted per screen)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, expect

from devices.labels.registry import TagRegistry
from edge_agent.runtime import Agent
from edge_agent.services.pickup_shelves import mask_customer
from firmware_bridge.emulators.pty_line import PtyPort
from tests.conftest import agent_config, running_agent
from tests.support.browser import PORTRAIT, chromium
from tests.support.lockers import compartment, idle_emulator, one_board

pytestmark = pytest.mark.asyncio(loop_scope="module")

KEY_ENV = {"EDGE_AGENT_STORE_HMAC_KEY": "ef" * 32}
TAGS = ["00124b00000000a1", "00124b00000000a2", "00124b00000000a3"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


async def _page(browser: Browser, url: str) -> Page:
    page = await browser.new_page(viewport=PORTRAIT)  # type: ignore[arg-type]
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors  # type: ignore[attr-defined]
    await page.goto(url)
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    return page


async def _shelf_order(agent: Agent) -> str:
    """Shelf B (3 slots) with order-5 in slot 2; returns the customer's code."""
    assert agent.lockers is not None and agent.shelves is not None and agent.db is not None
    registry = TagRegistry(agent.db)
    for t in TAGS:
        await registry.ensure(t, 2, "bs1")
    await agent.shelves.define_shelf("B", "B", TAGS)
    hold = int(time.time() * 1000) + 86_400_000
    code = await agent.lockers.create_pickup("order-5", "M", hold, customer=mask_customer("Li Wei", "5551234"))
    assert code is not None
    await agent.shelves.load("order-5", TAGS[1], actor="staff-1")
    return code


async def test_the_kiosk_and_the_locker_screen_say_which_slot_is_flashing(tmp_path: Path, browser: Browser) -> None:
    pty = tmp_path / "lockers0"
    config = agent_config(
        tmp_path / "data", None, lockers=one_board(pty, compartment("A-01", 1)),
        kiosks=[{"id": "k1", "name": "Entrance", "lang": "en"}],
    )
    async with idle_emulator().running(PtyPort(pty)), running_agent(config, env=KEY_ENV, wait_for_cloud=False) as agent:
        code = await _shelf_order(agent)
        # No cloud link here: pickup.ready (with the code) waits in the outbox like every event.
        assert agent.outbox is not None
        queued = [json.loads(m.body) for m in agent.outbox.read_events(0, 100)]
        ready = [e["payload"] for e in queued if e["type"] == "pickup.ready"]
        assert ready == [{"order_id": "order-5", "slot": "B-2", "shelf": "B", "hold_until": ready[0]["hold_until"],
                          "code": code}]
        base = f"http://127.0.0.1:{agent.web_port}"

        kiosk = await _page(browser, f"{base}/kiosk/k1")
        await kiosk.click("#start-button")
        await kiosk.click("#pickup-button")
        await expect(kiosk.locator("#screen-pickup")).to_be_visible()
        message = kiosk.locator("#pickup-message")
        for digit in "1234":
            await kiosk.click(f'#pickup-keypad [data-key="{digit}"]')
        await kiosk.click('#pickup-keypad [data-key="enter"]')
        await expect(message).to_have_text("Pickup codes have 8 to 12 digits.")  # not even sent
        for digit in "0000":
            await kiosk.click(f'#pickup-keypad [data-key="{digit}"]')
        await kiosk.click('#pickup-keypad [data-key="enter"]')
        await expect(message).to_have_text("This code is not valid. Please check it and try again.")
        await expect(kiosk.locator("#pickup-field")).to_have_text("")
        for digit in code:
            await kiosk.click(f'#pickup-keypad [data-key="{digit}"]')
        await kiosk.click('#pickup-keypad [data-key="enter"]')
        await expect(message).to_have_text(
            "Shelf B, slot 2 is flashing. A member of staff will hand you your order."
        )
        # In Chinese for the next customer who reads Chinese.
        await kiosk.click("#lang-button")
        for digit in code:
            await kiosk.click(f'#pickup-keypad [data-key="{digit}"]')
        await kiosk.click('#pickup-keypad [data-key="enter"]')
        await expect(message).to_have_text("货架 B 第 2 格的标签正在闪烁。工作人员会把订单交给您。")
        assert kiosk.errors == []  # type: ignore[attr-defined]

        screen = await _page(browser, f"{base}/locker/A")
        for digit in code:
            await screen.click(f'#keypad [data-key="{digit}"]')
        await screen.click('#keypad [data-key="enter"]')
        await expect(screen.locator("#door-message")).to_have_text("Shelf B, slot 2 is flashing.")
        await expect(screen.locator("#door-hint")).to_contain_text("flashing label")
        assert screen.errors == []  # type: ignore[attr-defined]

        assert agent.audit is not None and agent.audit.verify().ok
        releases = [(r.kind, r.actor) for r in agent.audit.records()]
        assert releases == [("shelf_release", "kiosk:k1")] * 2 + [("shelf_release", "locker-screen:A")]
        # The kiosk's one wrong code counted against the kiosk only.
        assert agent.db is not None
        attempts = agent.db.read(
            lambda c: c.execute("SELECT terminal, ok FROM code_attempts ORDER BY rowid").fetchall()
        )
        assert [(str(t), bool(ok)) for t, ok in attempts] == [
            ("kiosk:k1", False), ("kiosk:k1", True), ("kiosk:k1", True), ("locker-screen:A", True)
        ]
