"""The discovery and pairing pages in the system Chromium, against a running agent with the base-station and
Kerong emulators on real ptys and a simulated Wi-Fi scanner on a real in-store broker: a technician scans the
lock bus and sees the unconfigured board, adopts a discovered tag, then pairs a tag with a product by typing two
codes as a keyboard-wedge scanner does (fast, each ended by Enter), sees the preview at once, and the emulated
tag ends up showing the product; a CSV import with a bad row shows the per-row report.

With EDGE_SCREENSHOTS=1 it also saves docs/screenshots/ui-discovery.png and ui-pairing.png (1280x800)."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from playwright.async_api import FilePayload

from devices.labels.render import picture_image
from devices.simulators.mqtt_device import SimulatedScanner
from edge_agent.services.catalog import Product
from edge_agent.services.web_users import Role
from firmware_bridge.emulators.base_station import BaseStationEmulator, mixed
from firmware_bridge.emulators.kerong import LockBoardEmulator, Person
from firmware_bridge.emulators.pty_line import PtyPort
from firmware_bridge.tag_types import tag_type
from tests.conftest import agent_config, running_agent, wait_until
from tests.support.broker import Broker
from tests.support.browser import chromium
from tests.support.lockers import compartment, one_board
from tests.support.web import PASSWORD, until
from tests.support.web import sign_in_page as sign_in

KEY_ENV = {"EDGE_AGENT_STORE_HMAC_KEY": "ef" * 32}
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
PRODUCTS = [
    {"sku": "milk-1", "name": "有机纯牛奶 250ml", "price": "12.80", "currency": "CNY", "barcode": "6901234567892",
     "unit_price": "25.60", "unit_label": "500 ml", "origin": "内蒙古"},
    {"sku": "rice-5", "name": "Jasmine rice 5 kg", "price": "59.00", "currency": "CNY", "barcode": "4006381333931"},
    {"sku": "water-1", "name": "农夫山泉 550ml", "price": "2.00", "currency": "CNY", "promotion": "第二件半价"},
]




async def test_discover_adopt_and_pair_by_two_scans_in_the_browser(tmp_path: Path, local_broker: Broker) -> None:
    screenshots = os.environ.get("EDGE_SCREENSHOTS") == "1"
    emu = BaseStationEmulator(mixed(4, seed=31), checkin_interval=0.5, air_rate=200_000, seed=31)
    tags = sorted(t.hex() for t in emu.tags)
    boards = LockBoardEmulator([0, 3])
    for c in boards.compartments.values():
        c.person = Person(open_after_s=None)
    lockers_pty = tmp_path / "lockers0"
    config = agent_config(
        tmp_path / "data", None, local_broker,
        base_stations=[{"name": "bs1", "url": str(tmp_path / "bs0")}],
        lockers=one_board(lockers_pty, compartment("A-01", 1)),
        local_broker={"state_coalesce_s": 0.1},
    )
    stop = threading.Event()
    scanner = SimulatedScanner(local_broker.host, local_broker.port, "store/v1", "aisle-scanner-3")
    async with (
        emu.running(PtyPort(tmp_path / "bs0")),
        boards.running(PtyPort(lockers_pty)),
        running_agent(config, env=KEY_ENV) as agent,
        chromium() as browser,
    ):
        assert agent.labels is not None and agent.catalog is not None and agent.users is not None
        assert agent.gateway is not None
        labels, gateway = agent.labels, agent.gateway
        runner = asyncio.create_task(asyncio.to_thread(scanner.run, interval=30, count=0, bad_every=0, stop=stop))
        try:
            await wait_until(lambda: len(labels.registry.all()) == 4 and all(t.last_seen_ms for t in labels.registry.all()),
                             timeout=20)
            await wait_until(lambda: (r := gateway.registry.get("aisle-scanner-3")) is not None and r.online is True)
            await agent.catalog.upsert([Product.model_validate(p) for p in PRODUCTS])
            await agent.users.add("tech", PASSWORD, Role.TECHNICIAN)
            page = await sign_in(browser, agent, "tech")
            base = f"http://127.0.0.1:{agent.web_port}"

            # Discovery: the four tags (the default allow-list is empty), the scanner; a bus scan finds board 3.
            await page.goto(f"{base}/ui/discovery")
            await until(page, "document.getElementById('app').dataset.loaded !== undefined")
            assert await page.locator("#discovered-tags tbody tr").count() == 4
            assert await page.locator("#discovered-devices tr[data-device='aisle-scanner-3']").count() == 1
            await page.click("#scan-buses")
            await page.locator("#discovered-boards tr[data-board='rs485:3']").wait_for(timeout=10_000)
            if screenshots:
                await page.screenshot(path=str(SCREENSHOTS / "ui-discovery.png"))
            await page.click(f"#discovered-tags tr[data-tag='{tags[3]}'] button")
            await page.locator(f"#discovered-tags tr[data-tag='{tags[3]}']").wait_for(state="detached")
            assert labels.registry.get(tags[3]).adopted  # type: ignore[union-attr]
            await page.click("#discovered-devices tr[data-device='aisle-scanner-3'] button")
            await page.locator("#discovered-devices tr[data-device='aisle-scanner-3']").wait_for(state="detached")
            assert gateway.registry.get("aisle-scanner-3").adopted  # type: ignore[union-attr]

            # Pairing by two scans: the tag's id as printed on its case, then the product's EAN-13.
            await page.goto(f"{base}/ui/pairing")
            await until(page, "document.body.dataset.ready === '1'")
            await until(page, "document.activeElement && document.activeElement.id === 'scan-input'")
            assert await page.get_attribute("#step-tag", "aria-current") == "step"
            tag = tags[0]
            printed = ":".join(tag[i : i + 2] for i in range(0, 16, 2)).upper()
            await page.keyboard.type(printed, delay=8)
            await page.keyboard.press("Enter")
            # The scanner sends the product at once: the page takes the codes in order.
            await page.keyboard.type("6901234567892", delay=8)
            await page.keyboard.press("Enter")
            await until(page, "(() => { const i = document.getElementById('preview-image');"
                              " return i !== null && i.complete && i.naturalWidth > 0; })()")
            await until(page, "document.getElementById('pair-result').dataset.sku === 'milk-1'")
            assert await page.get_attribute("#step-tag", "aria-current") == "step"  # ready for the next tag
            rec = labels.registry.get(tag)
            assert rec is not None and rec.sku == "milk-1" and rec.adopted
            if screenshots:
                await page.screenshot(path=str(SCREENSHOTS / "ui-pairing.png"))
            # The emulated tag ends up showing the product, exactly as rendered.
            await wait_until(lambda: (r := labels.registry.get(tag)) is not None
                             and r.current_hash == emu.tag_hash(bytes.fromhex(tag)).hex()
                             and labels.progress()["confirmed"] >= 1, timeout=60)
            shown = picture_image(emu.tag_picture(bytes.fromhex(tag)), tag_type(rec.type_code))
            preview = await page.evaluate("document.getElementById('preview-image').naturalWidth")
            assert preview == shown.width * 2  # the page's preview is at scale 2

            # Searching instead of scanning: choose a tag, then a product found by a part of its name.
            await page.fill("input[type=search][placeholder^='Find a tag']", tags[1][:8])
            await page.locator(f"text={tags[1]}").wait_for()
            await page.click(f"tr:has-text('{tags[1]}') button")
            await until(page, "document.getElementById('app').dataset.step === 'product'")
            await page.fill("input[type=search][placeholder^='Find a product']", "山泉")
            await page.click("tr:has-text('water-1') button")
            await until(page, "document.getElementById('pair-result').dataset.sku === 'water-1'")
            assert labels.registry.get(tags[1]).sku == "water-1"  # type: ignore[union-attr]

            # A CSV import with a bad row: the good row is applied, the bad one listed with its row number.
            await page.select_option("#csv-kind", "pairing")
            upload = FilePayload(name="pairings.csv", mimeType="text/csv",
                                 buffer=f"tag_id,sku\n{tags[2]},rice-5\n{tags[3]},no-such-sku\n".encode())
            await page.set_input_files("#csv-file", files=[upload])
            await page.click("#csv-import")
            await page.locator("#import-errors tbody tr").wait_for()
            cells = await page.locator("#import-errors tbody tr td").all_inner_texts()
            assert cells[:2] == ["3", "sku"] and "no-such-sku" in cells[2]
            assert labels.registry.get(tags[2]).sku == "rice-5"  # type: ignore[union-attr]
        finally:
            stop.set()
            await runner
