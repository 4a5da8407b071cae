"""The devices and lockers pages in the system Chromium, against a running agent with the base-station and
Kerong emulators on real ptys: a technician finds a tag by flashing its LED from the tag's detail pane (the
flash reaches the emulated tag), and test-opens a compartment with a reason (the unlock reaches the emulated
lock board and the audit log names the user and the reason); staff get no test-open button.

With EDGE_SCREENSHOTS=1 it also saves docs/screenshots/ui-devices.png and ui-lockers.png (1280x800)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from edge_agent.services.catalog import Product
from edge_agent.services.web_users import Role
from firmware_bridge.emulators.base_station import BaseStationEmulator, mixed
from firmware_bridge.emulators.kerong import Action, Person
from firmware_bridge.emulators.pty_line import PtyPort
from tests.conftest import agent_config, running_agent, wait_until
from tests.support.browser import chromium
from tests.support.lockers import compartment, idle_emulator, one_board
from tests.support.web import PASSWORD, until
from tests.support.web import sign_in_page as sign_in

KEY_ENV = {"EDGE_AGENT_STORE_HMAC_KEY": "ab" * 32}
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
NAMES = ["有机纯牛奶 250ml", "Jasmine rice 5 kg", "农夫山泉 550ml", "Croissant"]




async def test_flash_a_tag_and_test_open_a_door_from_the_browser(tmp_path: Path) -> None:
    screenshots = os.environ.get("EDGE_SCREENSHOTS") == "1"
    emu = BaseStationEmulator(mixed(4, seed=11), checkin_interval=0.5, air_rate=200_000, seed=11)
    lock_board = idle_emulator()
    lockers_pty = tmp_path / "lockers0"
    bank = one_board(
        lockers_pty,
        *(compartment(f"A-{n:02d}", n, size="SML"[(n - 1) // 3 % 3], row=(n - 1) // 3 + 1, column=(n - 1) % 3 + 1)
          for n in range(1, 7)),
    )
    config = agent_config(
        tmp_path / "data", None, base_stations=[{"name": "bs1", "url": str(tmp_path / "bs0")}], lockers=bank
    )
    async with (
        emu.running(PtyPort(tmp_path / "bs0")),
        lock_board.running(PtyPort(lockers_pty)),
        running_agent(config, env=KEY_ENV) as agent,
        chromium() as browser,
    ):
        assert agent.users is not None and agent.labels is not None and agent.catalog is not None
        assert agent.lockers is not None and agent.audit is not None
        labels, lockers = agent.labels, agent.lockers
        await agent.users.add("tech", PASSWORD, Role.TECHNICIAN)
        await agent.users.add("desk", PASSWORD, Role.STAFF)
        await wait_until(lambda: len(labels.registry.all()) == 4, timeout=20)
        tags = sorted(t.hex() for t in emu.tags)
        await agent.catalog.upsert(
            [Product.model_validate({"sku": f"sku-{i}", "name": n, "price": "12.80", "currency": "CNY"})
             for i, n in enumerate(NAMES)]
        )
        await agent.catalog.pair_tags([(tag, f"sku-{i}") for i, tag in enumerate(tags[:3])])
        # A parcel in A-04 (size M), for the lockers page to show a pickup in progress (never its code).
        await wait_until(lambda: len(lockers.door_states()) == 6, timeout=20)
        await lockers.create_pickup("ORD-1042", "M", int(time.time() * 1000) + 86_400_000, "73310526")
        lock_board.compartments[(0, 4)].person = Person(open_after_s=0.1, hold_s=0.2, action=Action.PLACE)
        await lockers.start_load("ORD-1042", actor="staff-1")
        await wait_until(lambda: labels.progress()["confirmed"] == 3, timeout=60)
        await wait_until(lambda: (p := lockers.pickup("ORD-1042")) is not None and p.state == "ready", timeout=20)

        page = await sign_in(browser, agent, "tech")
        base = f"http://127.0.0.1:{agent.web_port}"
        await page.goto(f"{base}/ui/devices")
        await page.wait_for_selector("body[data-ready='1'] [data-station='bs1']")
        assert "Retransmits" in await page.inner_text("[data-station='bs1']")
        # Every tab renders from its API.
        await page.click("#tab-boards")
        await page.wait_for_selector("#compartments-table [data-compartment='A-04']")
        await page.click("#tab-kiosks")
        await page.wait_for_selector("#devices-body[data-tab='kiosks']")
        await page.click("#tab-gpio")
        await page.wait_for_selector("#devices-body[data-tab='gpio']")
        await page.click("#tab-tags")
        await page.click(f"tr[data-tag='{tags[0]}']")
        await page.wait_for_selector(f"#tag-detail h2:text('{tags[0]}')")
        await until(page, "document.querySelector('#tag-preview-shown')?.naturalWidth > 0")
        await page.select_option("#flash-colour", "blue")
        await page.click("#tag-flash")
        await wait_until(lambda: bytes.fromhex(tags[0]) in emu.led_flashes, timeout=10)
        assert emu.led_flashes[bytes.fromhex(tags[0])][-1].colour == 3  # blue
        await page.wait_for_selector("#flash:not([hidden])")
        # The search finds a tag by its product's name.
        await page.fill("#tag-search", "农夫")
        await until(
            page,
            f"document.querySelectorAll('#tags-table tbody tr').length === 1 "
            f"&& document.querySelector('#tags-table tbody tr').dataset.tag === '{tags[2]}'"
        )
        if screenshots:
            await page.click(f"tr[data-tag='{tags[2]}']")
            await page.wait_for_selector(f"#tag-detail h2:text('{tags[2]}')")
            await until(page, "document.querySelector('#tag-preview-shown')?.complete "
                              "&& document.querySelector('#tag-preview-shown').naturalWidth > 0")
            await page.screenshot(path=str(SCREENSHOTS / "ui-devices.png"))

        await page.goto(f"{base}/ui/lockers")
        await page.wait_for_selector("body[data-lockers-ready='1'] [data-compartment='A-01'] .lk-test")
        text = await page.inner_text("#lk-banks")
        assert "ORD-1042" in text and "73310526" not in text
        await page.click("[data-compartment='A-01'] .lk-test")
        await page.fill("#lk-reason", "hinge replaced, check 检查")
        await page.click("#lk-confirm")
        await wait_until(lambda: lock_board.unlock_count(0, 1) == 1, timeout=10)
        await page.wait_for_selector("[data-compartment='A-01'][data-door='open']", timeout=10_000)
        record = agent.audit.records(limit=1000)[-1]
        assert (record.kind, record.compartment, record.actor) == ("test", "A-01", "web:tech")
        assert record.detail["reason"] == "hinge replaced, check 检查"
        assert agent.audit.verify().ok
        if screenshots:
            await page.wait_for_timeout(300)
            await page.screenshot(path=str(SCREENSHOTS / "ui-lockers.png"))
        lock_board.close_door(0, 1)
        await page.wait_for_selector("[data-compartment='A-01'][data-door='closed']", timeout=10_000)

        # Staff see the doors, but no test-open or service buttons.
        staff = await sign_in(browser, agent, "desk")
        await staff.goto(f"{base}/ui/lockers")
        await staff.wait_for_selector("body[data-lockers-ready='1'] [data-compartment='A-01']")
        assert await staff.locator(".lk-test").count() == 0
        assert await staff.locator(".lk-disable").count() == 0
        assert lock_board.unlock_count(0, 1) == 1
