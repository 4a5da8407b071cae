"""The picking board (/ui/picking) in the system Chromium, against a running agent with the base-station emulator
on a real pty: a pick list started through the picking service appears on the open board without a reload,
with its picker, colour, lines and lit tags and a ticking elapsed time; staff confirm one line "Picked", one
"Short" (the quantity asked in a dialog) and the last by scanning its barcode into the board's scan field (as a
keyboard-wedge scanner types it): each line's state changes on the page and its tag's LED goes off in the
emulator; the finished list moves to "Finished today". A second list: a substitute by sku, then "Cancel list".

With EDGE_SCREENSHOTS=1 it also saves docs/screenshots/ui-picking.png (1280 wide, the whole page)."""

from __future__ import annotations

import os
from pathlib import Path

from edge_agent.services.web_users import Role
from tests.conftest import agent_config, running_agent, wait_until
from tests.support.browser import chromium
from tests.support.web import PASSWORD, until
from tests.support.web import sign_in_page as sign_in
from tests.test_picking_api import picking_agent

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "screenshots" / "ui-picking.png"
GREEN = 2


async def test_picking_board_is_live_and_confirms_lines(tmp_path: Path) -> None:
    screenshots = os.environ.get("EDGE_SCREENSHOTS") == "1"
    async with picking_agent(tmp_path) as (agent, emu, tags), chromium() as browser:
        assert agent.picking is not None and agent.users is not None
        await agent.users.add("stella", PASSWORD, Role.STAFF)
        page = await sign_in(browser, agent, "stella")
        base = f"http://127.0.0.1:{agent.web_port}"
        await page.goto(f"{base}/ui/picking")
        await until(page, "document.getElementById('app').dataset.loaded !== undefined")
        assert await page.locator("#pick-none").count() == 1

        # Started while the board is open: it appears through the live stream, no reload.
        await agent.picking.start(
            "PL-7", picker="amy", colour="green", order_ids=["O-1", "O-2"],
            lines=[("O-1", "milk-1", 2), ("O-1", "rice-5", 3), ("O-2", "water-1", 1)],
        )
        card = page.locator("[data-list='PL-7']")
        await card.wait_for(timeout=5_000)
        assert await card.locator(".pick-picker").inner_text() == "amy"
        assert await card.locator(".pick-swatch.pick-green").count() == 1
        rows = card.locator("table.pick-open tbody tr")
        assert await rows.count() == 3
        first = await rows.nth(0).inner_text()
        assert "有机纯牛奶 250ml" in first and "O-1" in first and tags[0] in first
        ticking = await card.locator(".pick-elapsed").inner_text()
        await page.wait_for_timeout(2_200)  # the ticker runs once a second
        assert await card.locator(".pick-elapsed").inner_text() != ticking

        # The tags light up green in the emulator.
        def led(tag: str) -> int | None:
            record = emu.tags[bytes.fromhex(tag)].led
            return None if record is None else record.colour

        await wait_until(lambda: all(led(t) == GREEN for t in tags), timeout=15)
        if screenshots:
            await agent.picking.start("PL-8", picker="bo", colour="blue", order_ids=["O-5"], lines=[("O-5", "rice-5", 1)])
            await page.locator("[data-list='PL-8']").wait_for(timeout=5_000)
            await page.screenshot(path=str(SCREENSHOT), full_page=True)
            await agent.picking.cancel("PL-8", actor="test")
            await page.locator("#pick-recent [data-list='PL-8']").wait_for(timeout=5_000)

        # "Picked": line 1 is done in full; its tag goes dark.
        await card.locator("tr[data-line='1'] button.pk-picked").click()
        await card.locator("table.pick-done tr[data-line='1'][data-state='picked']").wait_for(timeout=5_000)
        assert await card.locator("table.pick-open tr[data-line='1']").count() == 0
        await wait_until(lambda: led(tags[0]) is None, timeout=15)
        line = agent.picking.get("PL-7").lines[0]  # type: ignore[union-attr]
        assert line.state == "picked" and line.confirmed_by == "web:stella"

        # "Short": two of three rice taken, asked in a dialog.
        await card.locator("tr[data-line='2'] button.pk-short").click()
        await page.fill("#pk-short-qty", "2")
        await page.click("#pk-short-ok")
        await card.locator("table.pick-done tr[data-line='2'][data-state='short']").wait_for(timeout=5_000)
        await wait_until(lambda: led(tags[1]) is None, timeout=15)
        line = agent.picking.get("PL-7").lines[1]  # type: ignore[union-attr]
        assert line.state == "short" and line.picked_qty == 2

        # A product scanned into the board's field: the wedge scanner types fast and presses Enter.
        assert await page.evaluate("document.activeElement.id") == "pick-scan"
        await page.keyboard.type("water-1", delay=8)
        await page.keyboard.press("Enter")
        await until(page, "document.getElementById('pick-scan-result').className === 'ok-text'")
        await page.locator("#pick-recent [data-list='PL-7'][data-state='completed']").wait_for(timeout=5_000)
        assert await page.locator("#pick-lists [data-list='PL-7']").count() == 0
        await wait_until(lambda: led(tags[2]) is None, timeout=15)
        assert agent.picking.get("PL-7").state == "completed"  # type: ignore[union-attr]

        # "Substitute" (sku or barcode asked in a dialog) on one line, then "Cancel list" (asked first) for the rest.
        await agent.picking.start("PL-9", picker="cy", colour="red", order_ids=["O-9"],
                                  lines=[("O-9", "milk-1", 1), ("O-9", "rice-5", 2)])
        card = page.locator("#pick-lists [data-list='PL-9']")
        await card.wait_for(timeout=5_000)
        await wait_until(lambda: led(tags[1]) == 1, timeout=15)  # red
        await card.locator("tr[data-line='1'] button.pk-substitute").click()
        await page.fill("#pk-sub-code", "water-1")
        await page.fill("#pk-sub-qty", "2")
        await page.click("#pk-sub-ok")
        await card.locator("table.pick-done tr[data-line='1'][data-state='substituted']").wait_for(timeout=5_000)
        assert "农夫山泉 550ml" in await card.locator("table.pick-done tr[data-line='1']").inner_text()
        await card.locator("button.pk-cancel").click()
        await page.click("#pk-cancel-ok")
        await page.locator("#pick-recent [data-list='PL-9'][data-state='cancelled']").wait_for(timeout=5_000)
        await wait_until(lambda: led(tags[1]) is None, timeout=15)
        plist = agent.picking.get("PL-9")
        assert plist is not None and [x.state for x in plist.lines] == ["substituted", "cancelled"]
        assert plist.lines[0].substitute_sku == "water-1" and plist.lines[0].picked_qty == 2

        # The same board in Chinese.
        await page.click("#lang-button")
        await until(page, "document.querySelector('#pick-recent h2')?.textContent === '今日已结束'")


async def test_pages_say_when_picking_and_shelves_are_off(tmp_path: Path) -> None:
    """A store with neither labels nor lockers: both pages say the feature is off instead of failing."""
    async with running_agent(agent_config(tmp_path / "data", None)) as agent, chromium() as browser:
        assert agent.picking is None and agent.shelves is None and agent.users is not None
        await agent.users.add("stella", PASSWORD, Role.STAFF)
        page = await sign_in(browser, agent, "stella")
        base = f"http://127.0.0.1:{agent.web_port}"
        await page.goto(f"{base}/ui/picking")
        await page.locator("#pick-off").wait_for(timeout=5_000)
        assert await page.locator("#pick-scan-card").is_hidden()
        await page.goto(f"{base}/ui/shelves")
        await page.locator("#shelf-off").wait_for(timeout=5_000)
        assert await page.locator("#flash").is_hidden()  # no error shown
