"""The kiosk page in the system Chromium, through the running agent and a real cloud Mosquitto (issue 5):
browse, cart and order (order.created on the cloud broker, also after a cut link returns), the idle reset,
a keyboard-wedge scanner, live price changes, and the kiosk's touch targets, hygiene and headers."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, ConsoleMessage, Locator, Page, Route, expect

from edge_agent.runtime import Agent
from edge_agent.services.catalog import Product
from tests.conftest import agent_config, running_agent, wait_until
from tests.support.broker import Broker
from tests.support.browser import LANDSCAPE, PORTRAIT, chromium
from tests.support.proxy import FaultProxy
from tests.support.subscriber import CloudSubscriber

# One browser for the module: every test runs in the module's event loop, where the browser lives.
pytestmark = pytest.mark.asyncio(loop_scope="module")

KIOSK = "k1"
MILK_EAN = "6901234567892"
TEA_EAN = "6900000000014"
PICTURE = "https://img.example.test/milk.svg"
# What the product picture's host answers in the tests (the browser never reaches the internet).
PICTURE_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 40 40"><rect width="40" height="40" fill="#cde"/></svg>'
)


def catalog() -> list[Product]:
    def p(**data: Any) -> Product:
        return Product.model_validate({"currency": "CNY", **data})

    return [
        p(sku="A-100", name="光明 鲜牛奶 950ml", price="12.80", former_price="15.80", promotion="第二件半价",
          unit_price="13.47", unit_label="L", category="乳制品 Dairy", barcode=MILK_EAN, image_url=PICTURE),
        p(sku="A-110", name="Greek yoghurt 400g", price="9.90", category="乳制品 Dairy"),
        p(sku="B-200", name="东方树叶 茉莉花茶 500ml", price="4.50", category="饮料 Drinks", barcode=TEA_EAN),
        p(sku="C-300", name="Rice cooker 3 L", price="299", category="家电 Home", on_shelf=False),
    ]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


@contextlib.asynccontextmanager
async def kiosk_agent(tmp_path: Path, broker: Broker | None, **overrides: Any) -> AsyncIterator[Agent]:
    config = agent_config(
        tmp_path / "data",
        broker,
        kiosks=[{"id": KIOSK, "name": "Entrance", "lang": "en"}],
        kiosk={
            "fulfilments": ["phone", "counter", "locker", "till"],
            "checkout_url_template": "https://shop.example.cn/checkout?store={store_id}&order={order_id}",
        },
        scan_links={"product_url_template": "https://shop.example.cn/p/{sku}"},
        **overrides,
    )
    async with running_agent(config, wait_for_cloud=broker is not None) as agent:
        assert agent.catalog is not None
        await agent.catalog.upsert(catalog())
        yield agent


def console_error(msg: ConsoleMessage) -> bool:
    # Chromium logs every 4xx answer as "Failed to load resource"; the API's 404 and 409 are answers the page
    # handles, not errors.
    url = str(msg.location.get("url", ""))
    return msg.type == "error" and not (msg.text.startswith("Failed to load resource") and "/api/" in url)


async def serve_picture(route: Route) -> None:
    await route.fulfill(status=200, content_type="image/svg+xml", body=PICTURE_SVG)


async def open_kiosk(browser: Browser, agent: Agent, query: str = "", viewport: dict[str, int] = PORTRAIT) -> Page:
    page = await browser.new_page(viewport=viewport)  # type: ignore[arg-type]
    errors: list[str] = []
    # A CSP violation or a script error shows up here: the tests fail on it rather than on a timeout.
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(f"{msg.text} {msg.location.get('url')}") if console_error(msg) else None)
    page.errors = errors  # type: ignore[attr-defined]
    await page.route("https://img.example.test/**", serve_picture)
    await page.goto(f"http://127.0.0.1:{agent.web_port}/kiosk/{KIOSK}{query}")
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    await expect(page.locator("#attract")).to_be_visible()
    return page


async def loaded(img: Locator, timeout: float = 5.0) -> bool:
    """The picture arrived and decoded (polled here: the page's CSP forbids wait_for_function's eval)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await img.evaluate("img => img.complete && img.naturalWidth > 0"):
            return True
        await asyncio.sleep(0.05)
    return False


async def start(page: Page) -> None:
    await page.click("#start-button")
    await expect(page.locator("#screen-home")).to_be_visible()


async def open_milk(page: Page) -> None:
    """Home -> Dairy -> the milk's product page."""
    await page.click('#category-grid [data-category="乳制品 Dairy"]')
    await expect(page.locator("#screen-list")).to_be_visible()
    await page.click('#product-grid [data-sku="A-100"]')
    await expect(page.locator("#product")).to_have_attribute("data-sku", "A-100")


async def test_browse_add_to_cart_and_order_at_the_till(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber, browser: Browser
) -> None:
    async with kiosk_agent(tmp_path, cloud_broker) as agent:
        page = await open_kiosk(browser, agent)
        await start(page)
        dairy = page.locator('#category-grid [data-category="乳制品 Dairy"]')
        await expect(dairy).to_contain_text("2 products")
        await open_milk(page)
        await expect(page.locator("#product-name")).to_have_text("光明 鲜牛奶 950ml")
        await expect(page.locator("#product-price")).to_have_text("¥12.80")
        await expect(page.locator("#product-former-price")).to_have_text("¥15.80")
        await expect(page.locator("#product-promotion")).to_have_text("第二件半价")
        await expect(page.locator("#product-unit-price")).to_contain_text("13.47")
        await expect(page.locator("#product-badge")).to_have_attribute("data-kind", "on_shelf")
        # The catalog's picture (https, allowed by the CSP for images only).
        picture = page.locator("#product-picture img")
        await expect(picture).to_have_attribute("src", PICTURE)
        assert await loaded(picture), "the catalog's picture is shown (CSP img-src https:)"
        # "Continue on your phone": the product's page as a QR code, an SVG from the kiosk's API.
        phone_qr = page.locator("#product-qr")
        await expect(phone_qr).to_have_attribute("data-data", "https://shop.example.cn/p/A-100")
        await expect(phone_qr).to_have_attribute("src", re.compile(r"^/kiosk/k1/api/qr\?data="))
        await expect(phone_qr).to_be_visible()
        assert await loaded(phone_qr), "the QR code's SVG is shown (CSP img-src 'self')"
        # Two, then into the cart.
        await page.click("#product-plus")
        await expect(page.locator("#product-qty")).to_have_text("2")
        await page.click("#product-add")
        await expect(page.locator("#toast")).to_contain_text("Added to cart: 光明 鲜牛奶 950ml")
        await expect(page.locator("#cart-count")).to_have_attribute("data-count", "2")

        # An online-only product says so, and goes into the cart as well.
        await page.click("#home-button")
        await page.click('#category-grid [data-category="家电 Home"]')
        await page.click('#product-grid [data-sku="C-300"]')
        await expect(page.locator("#product-badge")).to_have_attribute("data-kind", "online_only")
        await expect(page.locator("#product-picture .placeholder")).to_have_text("R")  # no picture: a tile
        await page.click("#product-add")
        await expect(page.locator("#cart-count")).to_have_attribute("data-count", "3")

        # The cart: one more rice cooker, then one fewer; the running total.
        await page.click("#cart-button")
        cooker = page.locator('#cart-lines [data-sku="C-300"]')
        await cooker.locator(".qty-plus").click()
        await expect(cooker).to_have_attribute("data-quantity", "2")
        await cooker.locator(".qty-minus").click()
        await expect(cooker).to_have_attribute("data-quantity", "1")
        await expect(page.locator("#cart-total")).to_have_text("¥324.60")

        await page.click("#cart-checkout")
        await expect(page.locator("#screen-checkout")).to_be_visible()
        await page.click('#choices [data-fulfilment="till"]')
        await expect(page.locator("#screen-done")).to_be_visible()
        number = page.locator("#order-number")
        await expect(number).to_have_text(re.compile(r"^K\d{4}-\d{4,}$"))
        order_number = await number.inner_text()
        await expect(page.locator("#done-total")).to_have_text("¥324.60")
        await expect(page.locator("#done-qr")).to_have_attribute("data-data", order_number)
        await expect(page.locator("#cart-count")).to_have_attribute("data-count", "0")

        created = await asyncio.to_thread(subscriber.wait_events, 1, 20, "order.created")
        payload = created[0]["payload"]
        assert payload["order_number"] == order_number
        assert payload["fulfilment"] == "till" and payload["total"] == "324.6"
        assert sorted((i["sku"], i["quantity"]) for i in payload["items"]) == [("A-100", 2), ("C-300", 1)]
        # Done: back to the attract screen for the next shopper.
        await page.click("#done-button")
        await expect(page.locator("#attract")).to_be_visible()
        assert page.errors == []  # type: ignore[attr-defined]


async def test_idle_warning_then_the_cart_is_cleared(tmp_path: Path, browser: Browser) -> None:
    async with kiosk_agent(tmp_path, None) as agent:
        page = await open_kiosk(browser, agent, "?idle_s=3&warning_s=2")
        await start(page)
        await open_milk(page)
        await page.click("#product-add")
        await expect(page.locator("#cart-count")).to_have_attribute("data-count", "1")
        touched = time.monotonic()
        # The warning first, counting down; a touch keeps the session.
        await expect(page.locator("#idle-overlay")).to_be_visible(timeout=6000)
        assert time.monotonic() - touched > 2.5, "only after the idle time"
        await expect(page.locator("#idle-text")).to_contain_text("start over")
        box = await page.locator("#idle-continue").bounding_box()
        assert box is not None and box["width"] >= 80 and box["height"] >= 80
        await page.click("#idle-continue")
        await expect(page.locator("#idle-overlay")).to_be_hidden()
        await expect(page.locator("#screen-product")).to_be_visible()
        # The agent asks open pages to reload (new configuration): not under a shopper's fingers.
        assert agent.kiosk_hub is not None
        await page.evaluate("() => { window.beforeReload = true; }")
        agent.kiosk_hub.reload(KIOSK)
        await asyncio.sleep(0.5)
        assert await page.evaluate("() => window.beforeReload === true")
        # Left alone again: warning, then the attract screen with an empty cart (a fresh page, here).
        await expect(page.locator("#idle-overlay")).to_be_visible(timeout=6000)
        await expect(page.locator("#attract")).to_be_visible(timeout=5000)
        await expect(page.locator("body")).to_have_attribute("data-ready", "true")
        assert await page.evaluate("() => window.beforeReload === undefined")
        await expect(page.locator("#idle-overlay")).to_be_hidden()
        await expect(page.locator("#cart-count")).to_have_attribute("data-count", "0")
        await start(page)
        await page.click("#cart-button")
        await expect(page.locator("#cart-lines li")).to_have_count(0)
        assert page.errors == []  # type: ignore[attr-defined]


async def test_a_keyboard_wedge_scan_adds_the_product(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber, browser: Browser
) -> None:
    async with kiosk_agent(tmp_path, cloud_broker) as agent:
        page = await open_kiosk(browser, agent)
        # A scanner types fast and ends with Enter: caught anywhere, even on the attract screen.
        await page.keyboard.type(TEA_EAN, delay=10)
        await page.keyboard.press("Enter")
        await expect(page.locator("#toast")).to_contain_text("Added to cart: 东方树叶 茉莉花茶 500ml")
        await expect(page.locator("#cart-count")).to_have_attribute("data-count", "1")
        await expect(page.locator('#cart-lines [data-sku="B-200"]')).to_be_visible()
        # Typed into nothing: the search box stays empty.
        await page.click("#search-button")
        await expect(page.locator("#search-field")).to_have_attribute("data-value", "")
        # An unknown code: a clear message, nothing added.
        await page.keyboard.type("6900000000021", delay=10)
        await page.keyboard.press("Enter")
        await expect(page.locator("#toast")).to_have_attribute("data-kind", "error")
        await expect(page.locator("#toast")).to_contain_text("not a product of this store")
        await expect(page.locator("#cart-count")).to_have_attribute("data-count", "1")
        # Slow typing (a person at a keyboard) is not a scan.
        await page.keyboard.type(MILK_EAN, delay=120)
        await page.keyboard.press("Enter")
        await asyncio.sleep(0.5)
        await expect(page.locator("#cart-count")).to_have_attribute("data-count", "1")
        # The on-screen keyboard still searches, with results as the shopper types; Back returns to them.
        for key in "YOG":
            await page.click(f'#keyboard [data-key="{key}"]')
        await expect(page.locator("#search-field")).to_have_attribute("data-value", "YOG")
        await page.click('#search-grid [data-sku="A-110"]')
        await expect(page.locator("#product-name")).to_have_text("Greek yoghurt 400g")
        await page.click("#product-back")
        await expect(page.locator("#screen-search")).to_be_visible()
        await expect(page.locator("#search-field")).to_have_attribute("data-value", "YOG")
        # The Search key opens the full list of matches.
        await page.click('#keyboard [data-key="enter"]')
        await expect(page.locator("#list-title")).to_have_text("“YOG”")
        await expect(page.locator("#product-grid .card")).to_have_count(1)
        scans = await asyncio.to_thread(subscriber.wait_events, 2, 20, "scan.kiosk")
        assert [s["payload"]["status"] for s in scans] == ["ok", "unknown"]
        assert page.errors == []  # type: ignore[attr-defined]


async def test_a_price_change_reaches_an_open_page_without_a_reload(tmp_path: Path, browser: Browser) -> None:
    async with kiosk_agent(tmp_path, None) as agent:
        assert agent.catalog is not None
        page = await open_kiosk(browser, agent)
        await expect(page.locator("body")).to_have_attribute("data-live", "true")
        await start(page)
        await open_milk(page)
        await expect(page.locator("#product-price")).to_have_text("¥12.80")
        await page.evaluate("() => { window.notReloaded = true; }")
        milk = next(p for p in catalog() if p.sku == "A-100")
        changed = time.monotonic()
        await agent.catalog.upsert([milk.model_copy(update={"price": milk.price - 2, "promotion": None})])
        await expect(page.locator("#product-price")).to_have_text("¥10.80", timeout=2000)
        assert time.monotonic() - changed < 2.0
        await expect(page.locator("#product-promotion")).to_be_hidden()
        # Out of stock: the page greys out Add to cart at once.
        await agent.catalog.upsert([milk.model_copy(update={"available": False})])
        await expect(page.locator("#product-add")).to_be_disabled(timeout=2000)
        await expect(page.locator("#product-badge")).to_have_attribute("data-kind", "unavailable")
        assert await page.evaluate("() => window.notReloaded === true")
        assert page.errors == []  # type: ignore[attr-defined]


async def test_an_answer_older_than_a_live_update_does_not_paint_over_it(tmp_path: Path, browser: Browser) -> None:
    """The product page asks the agent for the product fresh; a price change made while that answer is on its
    way arrives over SSE first. The stale answer, held back here until the live update is shown, must not
    bring the old price and promotion back."""
    async with kiosk_agent(tmp_path, None) as agent:
        assert agent.catalog is not None
        page = await open_kiosk(browser, agent)
        await expect(page.locator("body")).to_have_attribute("data-live", "true")
        answered, release, delivered = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def hold_back(route: Route) -> None:
            response = await route.fetch()  # the agent answers now, with the old price
            answered.set()
            await release.wait()
            await route.fulfill(response=response)
            delivered.set()

        await page.route(f"**/kiosk/{KIOSK}/api/products/A-100", hold_back)
        await start(page)
        await open_milk(page)
        await asyncio.wait_for(answered.wait(), 5)
        milk = next(p for p in catalog() if p.sku == "A-100")
        await agent.catalog.upsert([milk.model_copy(update={"price": milk.price - 2, "promotion": None})])
        await expect(page.locator("#product-price")).to_have_text("¥10.80", timeout=2000)
        release.set()
        await asyncio.wait_for(delivered.wait(), 5)
        # The page has had the old answer; a round trip through the page makes sure its handler ran.
        await page.evaluate("() => new Promise((resolve) => setTimeout(resolve, 200))")
        await expect(page.locator("#product-price")).to_have_text("¥10.80")
        await expect(page.locator("#product-promotion")).to_be_hidden()
        # Back in the list, the card shows the live price too.
        await page.click("#product-back")
        await expect(page.locator('#product-grid [data-sku="A-100"]')).to_contain_text("¥10.80")
        assert page.errors == []  # type: ignore[attr-defined]


async def test_live_scans_removals_and_messages_reach_the_open_page(tmp_path: Path, browser: Browser) -> None:
    async with kiosk_agent(tmp_path, None) as agent:
        assert agent.catalog is not None and agent.kiosk_hub is not None
        hub = agent.kiosk_hub
        page = await open_kiosk(browser, agent)
        await expect(page.locator("body")).to_have_attribute("data-live", "true")
        # A scanner on the agent's side (serial, or an MQTT handheld bound to this kiosk): the stream brings it.
        await hub.scanned(KIOSK, TEA_EAN, "serial")
        await expect(page.locator('#cart-lines [data-sku="B-200"]')).to_be_visible()
        await expect(page.locator("#toast")).to_contain_text("Added to cart: 东方树叶 茉莉花茶 500ml")
        await hub.scanned(KIOSK, "6900000000021", "serial")
        await expect(page.locator("#toast")).to_have_attribute("data-kind", "error")
        # The product leaves the catalog: out of the cart, and the shopper is told why.
        await agent.catalog.delete(["B-200"])
        await expect(page.locator("#cart-lines li")).to_have_count(0)
        await expect(page.locator("#banner")).to_contain_text("no longer available")
        await expect(page.locator("#cart-count")).to_have_attribute("data-count", "0")
        # A message from staff or the cloud.
        hub.message("Till 2 is closed / 2号收银台暂停服务", KIOSK)
        await expect(page.locator("#banner")).to_have_text("Till 2 is closed / 2号收银台暂停服务")
        assert page.errors == []  # type: ignore[attr-defined]
        # A new configuration or version: a page nobody uses (the attract screen) reloads at once.
        idle = await open_kiosk(browser, agent)
        await expect(idle.locator("body")).to_have_attribute("data-live", "true")
        await idle.evaluate("() => { window.beforeReload = true; }")
        async with idle.expect_event("load"):
            hub.reload(KIOSK)
        await expect(idle.locator("body")).to_have_attribute("data-ready", "true")
        assert await idle.evaluate("() => window.beforeReload === undefined")
        assert await page.evaluate("() => document.body.dataset.screen") == "cart", "the shopper's page waits"
        assert page.errors == []  # type: ignore[attr-defined]


async def test_an_order_while_the_cloud_is_unreachable_arrives_when_the_link_returns(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber, browser: Browser
) -> None:
    # The store reaches the cloud through a proxy we can cut; the test's subscriber stays on the broker.
    proxy = await FaultProxy(cloud_broker.host, cloud_broker.port).start()
    try:
        async with kiosk_agent(tmp_path, cloud_broker, cloud={"port": proxy.port}) as agent:
            assert agent.session is not None and agent.outbox is not None
            page = await open_kiosk(browser, agent)
            await proxy.stop()
            await wait_until(lambda: agent.session is not None and not agent.session.connected, timeout=10)
            # The wedge scanner, then the cart, then the till: the order number comes from the agent at once.
            await page.keyboard.type(MILK_EAN, delay=10)
            await page.keyboard.press("Enter")
            await expect(page.locator('#cart-lines [data-sku="A-100"]')).to_be_visible()
            await page.click("#cart-checkout")
            await page.click('#choices [data-fulfilment="till"]')
            await expect(page.locator("#order-number")).to_have_text(re.compile(r"^K\d{4}-\d{4,}$"), timeout=3000)
            order_number = await page.locator("#order-number").inner_text()
            await asyncio.sleep(0.5)
            assert [e for e in subscriber.events() if e["type"] == "order.created"] == []
            await proxy.start()
            created = await asyncio.to_thread(subscriber.wait_events, 1, 30, "order.created")
    finally:
        await proxy.stop()
    assert created[0]["payload"]["order_number"] == order_number
    assert [(i["sku"], i["quantity"]) for i in created[0]["payload"]["items"]] == [("A-100", 1)]


async def small_buttons(page: Page, viewport: dict[str, int], minimum: int = 80) -> list[str]:
    """Visible buttons under `minimum` CSS px either way, or (outside the scrolling lists) not on the screen.

    The issue asks for 48 px; the page aims for 80 (a finger at arm's length on a 27" screen), so that is
    what is checked."""
    found: list[str] = await page.evaluate(
        """([width, height, minimum]) => {
            const bad = [];
            for (const b of document.querySelectorAll('button')) {
                const r = b.getBoundingClientRect();
                if (r.width === 0 && r.height === 0) continue;  // hidden
                const inList = b.closest('.scroll') !== null;
                const off = !inList && (r.right > width + 0.5 || r.bottom > height + 0.5 || r.left < 0 || r.top < 0);
                if (r.width < minimum || r.height < minimum || off) {
                    bad.push(`${b.id || b.className} "${b.textContent.trim()}" ${r.width}x${r.height}@${r.left},${r.top}`);
                }
            }
            return bad;
        }""",
        [viewport["width"], viewport["height"], minimum],
    )
    return found


async def test_touch_targets_kiosk_hygiene_and_headers(tmp_path: Path, browser: Browser) -> None:
    async with kiosk_agent(tmp_path, None) as agent:
        for viewport in (PORTRAIT, LANDSCAPE):
            page = await open_kiosk(browser, agent, "?idle_s=60", viewport=viewport)
            problems = await small_buttons(page, viewport)
            await start(page)
            problems += await small_buttons(page, viewport)
            await open_milk(page)
            problems += await small_buttons(page, viewport)
            await page.click("#product-add")
            await page.click("#search-button")
            problems += await small_buttons(page, viewport)
            await page.click("#cart-button")
            problems += await small_buttons(page, viewport)
            await page.click("#cart-checkout")
            problems += await small_buttons(page, viewport)
            await page.click('#choices [data-fulfilment="till"]')
            await expect(page.locator("#screen-done")).to_be_visible()
            problems += await small_buttons(page, viewport)
            assert problems == [], (viewport, problems)
            done = await page.locator("#done-button").bounding_box()
            assert done is not None and done["height"] >= 80, "aim for 80 px and more"
            assert page.errors == []  # type: ignore[attr-defined]
            await page.close()

        page = await open_kiosk(browser, agent)
        prevented = await page.evaluate(
            """() => {
                const event = new MouseEvent('contextmenu', {bubbles: true, cancelable: true});
                document.querySelector('#start-button').dispatchEvent(event);
                return event.defaultPrevented;
            }"""
        )
        assert prevented is True
        kiosk: dict[str, Any] = await page.evaluate(
            """() => ({
                userSelect: getComputedStyle(document.body).userSelect,
                touchAction: getComputedStyle(document.body).touchAction,
                links: document.querySelectorAll('a, [href]:not(link)').length,
                inputs: document.querySelectorAll('input, textarea, select, form').length,
                viewport: document.querySelector('meta[name=viewport]').content,
            })"""
        )
        assert kiosk["userSelect"] == "none" and kiosk["touchAction"] == "manipulation"
        assert kiosk["links"] == 0 and kiosk["inputs"] == 0, "no way out of the app"
        assert "user-scalable=no" in kiosk["viewport"]
        # The language button: one shopper reads Chinese; the reset brings back the kiosk's language.
        await start(page)
        await page.click("#lang-button")
        await expect(page.locator("#home-button")).to_have_text("首页")
        await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
        assert page.errors == []  # type: ignore[attr-defined]

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{agent.web_port}", timeout=10) as client:
            screen = await client.get(f"/kiosk/{KIOSK}")
            assert screen.status_code == 200
            csp = screen.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
            assert "img-src 'self' https: data:" in csp and "connect-src 'self'" in csp
            assert screen.headers["x-frame-options"] == "DENY"
            assert screen.headers["cache-control"] == "no-store"
            assert "<script>" not in screen.text and " style=" not in screen.text
            for path in ("/kiosk/nope", "/kiosk/k1..x", "/kiosk/%2e%2e"):
                missing = await client.get(path)
                assert missing.status_code == 404, path
                assert "content-security-policy" in missing.headers
                assert "not set up" in missing.text
            assert (await client.get("/static/kiosk/index.html")).status_code == 404
            js = re.search(r'src="([^"]+)"', screen.text)
            assert js is not None and "?v=" in js.group(1)
            script = await client.get(js.group(1))
            assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
            assert "immutable" in script.headers["cache-control"]
