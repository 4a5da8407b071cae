"""Screenshots of the kiosk page for the README: docs/screenshots/kiosk-{portrait,landscape}-{screen}.png.

Starts the agent in this process (no cloud, a temporary data directory) with two kiosks, a portrait one in
Chinese and a landscape one in English, loads a demo catalog (Chinese and English names, promotions, one
product online only, one without a picture), and walks the system Chromium through the screens.

The product pictures' https URLs are answered by the browser itself (Playwright routes) with drawings made
here: the kiosk loads pictures from the retailer's CDN, and this script has none.

Usage (from the repo root): .venv/bin/python scripts/lib/kiosk_screenshots.py [OUT_DIR]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

from playwright.async_api import Page, Route, async_playwright

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edge_agent.config import parse_config  # noqa: E402
from edge_agent.runtime import Agent  # noqa: E402
from edge_agent.services.catalog import Product  # noqa: E402
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, LANDSCAPE, PORTRAIT  # noqa: E402

PICTURES = "https://img.demo.example/"

# sku, name, price, former price, promotion, category, unit price and label, picture colour (None: no picture),
# on the shelf
DEMO: list[tuple[str, str, str, str | None, str | None, str, tuple[str, str] | None, str | None, bool]] = [
    ("D-100", "光明 鲜牛奶 950ml", "12.80", "15.80", "第二件半价", "乳制品 Dairy", ("13.47", "L"), "#2f6fb5", True),
    ("D-110", "安慕希 希腊风味酸奶 原味 205g×12", "59.90", None, None, "乳制品 Dairy", None, "#3f8fd5", True),
    ("D-120", "Greek yoghurt natural 400 g", "9.90", None, None, "乳制品 Dairy", ("24.75", "kg"), "#8fb5d5", True),
    ("D-130", "蒙牛 纯甄 常温酸奶 200g×10", "45.00", "52.00", "限时特价", "乳制品 Dairy", None, None, True),
    ("B-200", "东方树叶 茉莉花茶 500ml", "4.50", None, None, "饮料 Drinks", ("9.00", "L"), "#4a9a5a", True),
    ("B-210", "农夫山泉 饮用天然水 550ml×24", "36.00", "42.00", "整箱优惠", "饮料 Drinks", None, "#d04848", True),
    ("B-220", "Sparkling water lemon 330 ml", "3.80", None, None, "饮料 Drinks", None, "#e0c040", True),
    ("S-300", "三只松鼠 每日坚果 750g", "69.00", None, "满99减20", "零食 Snacks", None, "#c08040", True),
    ("S-310", "Dark chocolate 70 % 100 g", "14.50", None, None, "零食 Snacks", ("14.50", "100 g"), "#5a3a2a", True),
    ("R-400", "金龙鱼 东北大米 5kg", "39.80", None, None, "粮油 Rice & oil", ("3.98", "500 g"), "#d8c8a0", True),
    ("H-500", "美的 电饭煲 3L MB-FB30", "299.00", "349.00", "线上专享", "家电 Home", None, "#888888", False),
]


def demo_catalog() -> list[Product]:
    products = []
    for sku, name, price, former, promotion, category, unit, colour, on_shelf in DEMO:
        data: dict[str, Any] = {
            "sku": sku, "name": name, "price": price, "currency": "CNY", "category": category, "on_shelf": on_shelf,
        }
        if former:
            data["former_price"] = former
        if promotion:
            data["promotion"] = promotion
        if unit:
            data["unit_price"], data["unit_label"] = unit
        if colour:
            data["image_url"] = f"{PICTURES}{sku}.svg"
        products.append(Product.model_validate(data))
    return products


def picture(sku: str) -> str:
    """A packshot stand-in: a carton in the product's colour with a label band."""
    colour = next((row[7] for row in DEMO if row[0] == sku), None) or "#999"
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 400 300">'
        '<rect width="400" height="300" fill="#fff"/>'
        '<ellipse cx="200" cy="272" rx="110" ry="14" fill="#000" opacity=".08"/>'
        f'<path d="M130 60 L200 30 L270 60 L270 265 L130 265 Z" fill="{colour}"/>'
        '<path d="M200 30 L270 60 L270 265 L200 265 Z" fill="#000" opacity=".12"/>'
        '<rect x="140" y="130" width="120" height="70" rx="8" fill="#fff" opacity=".9"/>'
        f'<rect x="155" y="150" width="90" height="10" rx="5" fill="{colour}"/>'
        f'<rect x="155" y="170" width="60" height="10" rx="5" fill="{colour}" opacity=".6"/>'
        "</svg>"
    )


async def serve_picture(route: Route) -> None:
    sku = route.request.url.rsplit("/", 1)[-1].removesuffix(".svg")
    await route.fulfill(status=200, content_type="image/svg+xml", body=picture(sku))


async def shoot(page: Page, out: Path, name: str) -> None:
    await asyncio.sleep(0.6)  # pictures and QR codes in, transitions done
    await page.screenshot(path=str(out / f"{name}.png"))


async def walk(page: Page, base: str, kiosk: str, *, orientation: str, fulfilment: str, out: Path) -> None:
    prefix = f"kiosk-{orientation}"
    await page.route(PICTURES + "**", serve_picture)
    await page.goto(f"{base}/kiosk/{kiosk}")
    await page.wait_for_selector("body[data-ready=true]")
    await page.wait_for_selector("#highlight:not([hidden])")
    await shoot(page, out, f"{prefix}-attract")
    await page.click("#start-button")
    await page.wait_for_selector("#category-grid .category:not(.category-all)")
    await shoot(page, out, f"{prefix}-categories")
    await page.click('#category-grid [data-category="乳制品 Dairy"]')
    await page.wait_for_selector('#product-grid [data-sku="D-100"]')
    await shoot(page, out, f"{prefix}-list")
    await page.click('#product-grid [data-sku="D-100"]')
    await page.click("#product-plus")
    await shoot(page, out, f"{prefix}-product")
    await page.click("#product-add")
    await page.click("#home-button")
    await page.click('#category-grid [data-category="家电 Home"]')
    await page.click('#product-grid [data-sku="H-500"]')
    await page.click("#product-add")
    await page.click("#search-button")
    for key in "CHOC":
        await page.click(f'#keyboard [data-key="{key}"]')
    await page.wait_for_selector("#search-grid .card")
    await page.wait_for_selector("#toast", state="hidden")  # the "added" note goes by itself
    await shoot(page, out, f"{prefix}-search")
    await page.click("#cart-button")
    await shoot(page, out, f"{prefix}-cart")
    await page.click("#cart-checkout")
    await shoot(page, out, f"{prefix}-checkout")
    await page.click(f'#choices [data-fulfilment="{fulfilment}"]')
    await page.wait_for_selector("#screen-done:not([hidden])")
    await shoot(page, out, f"{prefix}-confirmation")
    await page.click("#done-button")
    # The idle warning: a short idle time for the picture's sake.
    await page.goto(f"{base}/kiosk/{kiosk}?idle_s=3&warning_s=15")
    await page.wait_for_selector("body[data-ready=true]")
    await page.click("#start-button")
    await page.click('#category-grid [data-category="饮料 Drinks"]')
    await page.click('#product-grid [data-sku="B-200"]')
    await page.click("#product-add")
    await page.click("#product-back")
    await page.wait_for_selector("#idle-overlay:not([hidden])", timeout=10_000)
    await shoot(page, out, f"{prefix}-idle-warning")


async def main(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="kiosk-shots-") as tmp:
        config = parse_config(
            {
                "agent": {"store_id": "store-0042", "data_dir": str(Path(tmp) / "data")},
                "web": {"host": "127.0.0.1", "port": 0, "https": False},
                "cloud": {"enabled": False},
                "local_broker": {"enabled": False},
                "scan_links": {"product_url_template": "https://shop.example.cn/p/{sku}?store={store_id}"},
                "kiosk": {
                    "fulfilments": ["phone", "counter", "locker", "till"],
                    "checkout_url_template": "https://shop.example.cn/checkout?store={store_id}&order={order_id}",
                },
                "kiosks": [
                    {"id": "entrance", "name": "Entrance", "lang": "zh-CN", "orientation": "portrait"},
                    {"id": "aisle-3", "name": "Aisle 3", "lang": "en", "orientation": "landscape"},
                ],
            }
        )
        agent = Agent(config)
        task = asyncio.create_task(agent.run(), name="agent")
        try:
            await asyncio.wait_for(agent.started.wait(), 30)
            assert agent.catalog is not None
            await agent.catalog.upsert(demo_catalog())
            base = f"http://127.0.0.1:{agent.web_port}"
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                try:
                    for kiosk, viewport, orientation, fulfilment in (
                        ("entrance", PORTRAIT, "portrait", "phone"),
                        ("aisle-3", LANDSCAPE, "landscape", "till"),
                    ):
                        page = await browser.new_page(viewport=viewport)  # type: ignore[arg-type]
                        await walk(page, base, kiosk, orientation=orientation, fulfilment=fulfilment, out=out)
                        await page.close()
                finally:
                    await browser.close()
        finally:
            agent.request_stop()
            await asyncio.wait_for(task, 20)


def run(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(out))
    for path in sorted(out.glob("kiosk-*.png")):
        print(f"{path} {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    run(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots")
