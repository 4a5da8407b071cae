"""The kiosk JSON API on the real app and a real migrated SQLite file (httpx over ASGI): formatting per
currency and locale, the phone link, QR codes only of our own data, and any body at all never a 5xx nor a
stored order unless it was one."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_link.outbox import Outbox
from cloud_link.topics import Topics
from devices.labels.registry import TagRegistry
from edge_agent.metrics import AgentMetrics
from edge_agent.services.catalog import Product, ProductCatalog
from edge_agent.services.kiosks import KioskHub, KioskSpec
from edge_agent.services.orders import OrderService
from edge_agent.storage import Database
from edge_agent.web.app import WebContext, create_app
from edge_agent.web.kiosk_api import KioskApi

BASE = "https://s.example.cn"


class Sink:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    async def publish_event(self, event_type: str, payload: dict[str, Any]) -> Any:
        return await self.outbox.publish(event_type, payload)

    async def put_state(self, device_id: str, state: dict[str, Any]) -> Any:
        return await self.outbox.put_state(device_id, state)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(tmp_path / "data")
    yield database
    database.close()


async def build(db: Database, *, locale: str = "zh_CN", product_url: str | None = None) -> httpx.AsyncClient:
    outbox = Outbox(db, Topics("retail/v1", "sh-0042"), max_bytes=1 << 20)
    await outbox.open()
    catalog = ProductCatalog(db)
    await catalog.upsert([
        Product.model_validate({"sku": "TEA", "name": "茶", "price": "4.50", "currency": "CNY",
                                "barcode": "6901234567892"}),
        Product.model_validate({"sku": "MILK", "name": "Vollmilch", "price": "1234.5", "currency": "EUR",
                                "unit_price": "1.19", "unit_label": "l"}),
    ])
    tags = TagRegistry(db)
    await tags.ensure("0123456789abcdef", 3, "bs1")
    await catalog.pair_tags([("0123456789abcdef", "TEA")])
    sink = Sink(outbox)
    orders = OrderService(db, catalog, sink, store_id="sh-0042", fulfilments=["counter", "till"])
    hub = KioskHub(catalog, tags, sink, [KioskSpec("k1", "Entrance"), KioskSpec("k2", "Back", "en")],
                   public_base_url=BASE)
    api = KioskApi(hub=hub, catalog=catalog, orders=orders, tags=tags, store_id="sh-0042", currency="CNY",
                   price_locale=locale, public_base_url=BASE, product_url_template=product_url,
                   orders_per_minute=10_000)
    metrics = AgentMetrics()
    app = create_app(WebContext(store_id="sh-0042", outbox=outbox, metrics=metrics, session=None, kiosk_api=api))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kiosk.test")


async def test_prices_are_formatted_for_the_store_and_the_phone_link_is_the_tags(db: Database) -> None:
    async with await build(db) as http:
        tea = (await http.get("/kiosk/k1/api/products/TEA")).json()
        assert tea["price_text"] == "¥4.50"
        code = db.read(lambda c: c.execute("SELECT scan_code FROM tags").fetchone()[0])
        assert tea["phone_url"] == f"{BASE}/s/{code}"
        assert (await http.get("/kiosk/k1/api/products/MILK")).json()["phone_url"] is None
        unknown = (await http.post("/kiosk/k2/api/scan", json={"code": "nothing"})).json()
        assert unknown == {"status": "unknown", "message": unknown["message"]} and "not a product" in unknown["message"]
        linked = (await http.post("/kiosk/k2/api/scan", json={"code": f"{BASE}/s/{code}"})).json()
        assert linked["status"] == "ok" and linked["product"]["sku"] == "TEA"
        assert (await http.get("/kiosk/k1/api/qr", params={"data": f"{BASE}/s/{code}"})).status_code == 200
        for bad in ("hello", "javascript:alert(1)", f"{BASE}x/s/1", "K1122-0001\n", "<svg>"):
            assert (await http.get("/kiosk/k1/api/qr", params={"data": bad})).status_code == 400, bad


async def test_another_locale_and_the_clouds_product_page(db: Database) -> None:
    async with await build(db, locale="de_DE", product_url="https://m.example.de/p/{sku}?s={store_id}") as http:
        milk = (await http.get("/kiosk/k1/api/products/MILK")).json()
        assert milk["price_text"] == "1.234,50 €" and milk["unit_price_text"] == "1,19 € / l"
        assert milk["phone_url"] == "https://m.example.de/p/MILK?s=sh-0042"
        assert (await http.get("/kiosk/k1/api/qr", params={"data": milk["phone_url"]})).status_code == 200
        assert (await http.get("/kiosk/k1/api/qr", params={"data": "https://m.example.de.evil/p"})).status_code == 400


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=30,
)
ORDERISH = st.fixed_dictionaries(
    {"items": st.lists(st.fixed_dictionaries({"sku": st.sampled_from(["TEA", "MILK", "NOPE", "", "a b"]),
                                              "quantity": st.integers(-2, 120)}), max_size=4)},
    optional={"fulfilment": st.sampled_from(["counter", "till", "phone", "", "x" * 40]), "extra": JSON},
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(JSON, ORDERISH), kiosk=st.sampled_from(["k1", "k9", "k1%2F..", "-"]))
async def test_any_order_body_is_answered_4xx_or_201(db: Database, body: Any, kiosk: str) -> None:
    async with await build(db) as http:
        before = db.read(lambda c: c.execute("SELECT COUNT(*) FROM orders").fetchone()[0])
        answer = await http.post(f"/kiosk/{kiosk}/api/orders", content=json.dumps(body),
                                 headers={"content-type": "application/json"})
        after = db.read(lambda c: c.execute("SELECT COUNT(*) FROM orders").fetchone()[0])
        assert answer.status_code in (201, 404, 409, 422), answer.text
        assert after == before + (1 if answer.status_code == 201 else 0)
        if answer.status_code == 201:
            assert answer.json()["order_number"]
