"""The pickup shelves page (/ui/shelves) in the system Chromium, against a running agent with the base-station
emulator on a real pty and pickups but no lock board: a technician defines a shelf by scanning three labels in
slot order (as a keyboard-wedge scanner types them: fast, each ended by Enter; one typed as printed on the case),
listed in order, removes a wrong scan, saves; the grid shows three empty slots. Then an order is
loaded by two scans, the slot's label first: the slot fills on the page (order, masked customer, hold
deadline) and the agent holds the order in that slot. A customer's code at a locker screen highlights the slot
(released); staff hand it over by scanning the slot's label; a cancelled order is retrieved by scanning its
barcode: both slots are empty again, and the technician deletes the shelf.

With EDGE_SCREENSHOTS=1 it also saves docs/screenshots/ui-shelves.png (1280 wide, the whole page)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from edge_agent.services.web_users import Role
from firmware_bridge.emulators.base_station import BaseStationEmulator, mixed
from firmware_bridge.emulators.pty_line import PtyPort
from tests.conftest import agent_config, running_agent, wait_until
from tests.support.browser import chromium
from tests.support.web import PASSWORD, until
from tests.support.web import sign_in_page as sign_in

KEY_ENV = {"EDGE_AGENT_STORE_HMAC_KEY": "a7" * 32}
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "screenshots" / "ui-shelves.png"


async def test_define_a_shelf_by_scans_and_load_an_order(tmp_path: Path) -> None:
    screenshots = os.environ.get("EDGE_SCREENSHOTS") == "1"
    emu = BaseStationEmulator(mixed(4, seed=23), checkin_interval=0.5, air_rate=200_000, seed=23)
    tags = sorted(t.hex() for t in emu.tags)
    config = agent_config(
        tmp_path / "data", None,
        base_stations=[{"name": "bs1", "url": str(tmp_path / "bs0")}], lockers={"enabled": True},
    )
    async with emu.running(PtyPort(tmp_path / "bs0")), running_agent(config, env=KEY_ENV) as agent, chromium() as browser:
        assert agent.labels is not None and agent.lockers is not None and agent.users is not None
        assert agent.shelves is not None
        labels = agent.labels
        await wait_until(lambda: len(labels.registry.all()) == 4, timeout=20)
        await agent.users.add("tina", PASSWORD, Role.TECHNICIAN)
        page = await sign_in(browser, agent, "tina")
        base = f"http://127.0.0.1:{agent.web_port}"
        await page.goto(f"{base}/ui/shelves")
        await until(page, "document.getElementById('app').dataset.loaded !== undefined")
        assert await page.locator("#shelf-none").count() == 1

        # Define shelf B: an id and a name, then the labels scanned in slot order. The fourth scan is a mistake,
        # taken back with "Remove last"; the second label is typed as printed on its case.
        await page.fill("#shelf-new-id", "B")
        await page.fill("#shelf-new-name", "B")
        await page.click("#shelf-label-scan")
        printed = ":".join(tags[1][i : i + 2] for i in range(0, 16, 2)).upper()
        for code in (tags[0], printed, tags[2], tags[3]):
            await page.keyboard.type(code, delay=5)
            await page.keyboard.press("Enter")
        await until(page, "document.querySelectorAll('#shelf-new-labels li[data-tag]').length === 4")
        await page.click("#shelf-remove-last")
        listed = await page.eval_on_selector_all("#shelf-new-labels li[data-tag]", "items => items.map(i => i.dataset.tag)")
        assert listed == tags[:3]
        await page.click("#shelf-save")
        await page.locator(".shelf[data-shelf='B'] .shelf-slot").nth(2).wait_for(timeout=5_000)
        states = await page.eval_on_selector_all(".shelf[data-shelf='B'] .shelf-slot", "cells => cells.map(c => c.dataset.state)")
        assert states == ["empty", "empty", "empty"]
        [shelf] = agent.shelves.shelves()
        assert [(s.position, s.tag_id) for s in shelf.slots] == [(1, tags[0]), (2, tags[1]), (3, tags[2])]

        # An order waiting to be put out, loaded by two scans: slot 2's label first, then the order's barcode.
        hold_until = int(time.time() * 1000) + 2 * 86_400_000
        pickup_code = await agent.lockers.create_pickup("ORD-4711", "S", hold_until, customer="王** 1234")
        assert pickup_code is not None
        await page.click("#shelf-load-scan")
        await page.keyboard.type(tags[1], delay=5)
        await page.keyboard.press("Enter")
        await until(page, "document.getElementById('shelf-load-status').textContent.includes('now scan the order')")
        await page.keyboard.type("ORD-4711", delay=5)
        await page.keyboard.press("Enter")
        slot = page.locator(".shelf-slot[data-slot='B-2'][data-state='ready']")
        await slot.wait_for(timeout=5_000)
        text = await slot.inner_text()
        assert "ORD-4711" in text and "王** 1234" in text
        assert await page.get_attribute("#shelf-load-status", "class") == "ok-text"
        held = agent.lockers.pickup("ORD-4711")
        assert held is not None and held.state == "ready"
        assert [s.order_id for s in agent.shelves.shelves()[0].slots] == [None, "ORD-4711", None]

        # The customer's code at a locker screen releases the order: the slot is highlighted on the page, live.
        await agent.lockers.collect("locker:test", pickup_code)
        await page.locator(".shelf-slot.shelf-released[data-slot='B-2']").wait_for(timeout=5_000)
        # Another order cancelled while on its slot must be taken back.
        await agent.lockers.create_pickup("ORD-4712", "S", hold_until, customer="Li** 0042")
        await agent.shelves.load("ORD-4712", tags[2], actor="test")
        await page.locator(".shelf-slot[data-slot='B-3'][data-state='ready']").wait_for(timeout=5_000)
        await agent.lockers.cancel_pickup("ORD-4712")
        await page.locator(".shelf-slot[data-slot='B-3'][data-state='retrieval']").wait_for(timeout=5_000)
        if screenshots:
            await page.screenshot(path=str(SCREENSHOT), full_page=True)

        # Hand over: staff scan the flashing slot's label. Retrieve: the order's barcode.
        await page.click("#shelf-handover-scan")
        await page.keyboard.type(tags[1], delay=5)
        await page.keyboard.press("Enter")
        await page.locator(".shelf-slot[data-slot='B-2'][data-state='empty']").wait_for(timeout=5_000)
        assert agent.lockers.pickup("ORD-4711").state == "collected"  # type: ignore[union-attr]
        await page.click("#shelf-retrieve-scan")
        await page.keyboard.type("ORD-4712", delay=5)
        await page.keyboard.press("Enter")
        await page.locator(".shelf-slot[data-slot='B-3'][data-state='empty']").wait_for(timeout=5_000)
        assert "ORD-4712" in await page.inner_text("#api-shelves-retrieve-status")

        # Every slot empty again: the technician deletes the shelf (asked first).
        await page.click("#shelf-list tr[data-shelf='B'] button.shelf-delete")
        await page.click("#shelf-dialog-ok")
        await page.locator("#shelf-none").wait_for(timeout=5_000)
        assert agent.shelves.shelves() == []
