"""OrderService on a real migrated SQLite file with the real outbox (issue 5): prices from the catalog, order
numbers, refusals that store nothing, a full outbox, and an order stored but not announced before a crash."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cloud_link.contract import validate, validate_event
from cloud_link.outbox import Outbox
from cloud_link.topics import Topics
from edge_agent.services.catalog import Product, ProductCatalog
from edge_agent.services.orders import OrderError, OrderService, OrderUnavailableError
from edge_agent.storage import Database

CHECKOUT = "https://shop.example.cn/checkout?store={store_id}&order={order_id}"


class Sink:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    async def publish_event(self, event_type: str, payload: dict[str, Any]) -> Any:
        return await self.outbox.publish(event_type, payload)


class Crash(Exception):
    pass


class CrashingSink:
    async def publish_event(self, event_type: str, payload: dict[str, Any]) -> Any:
        raise Crash("the power went out")


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(tmp_path / "data")
    yield database
    database.close()


@pytest.fixture
async def outbox(db: Database) -> Outbox:
    box = Outbox(db, Topics("retail/v1", "sh-0042"), max_bytes=1 << 20)
    await box.open()
    return box


@pytest.fixture
async def catalog(db: Database) -> ProductCatalog:
    cat = ProductCatalog(db)
    await cat.upsert([
        Product.model_validate({"sku": "TEA", "name": "东方树叶 茉莉花茶 500ml", "price": "4.50", "currency": "CNY"}),
        Product.model_validate({"sku": "MILK", "name": "光明 鲜牛奶", "price": "12.80", "currency": "CNY",
                                "on_shelf": False}),
        Product.model_validate({"sku": "GONE", "name": "Sold out", "price": "1", "currency": "CNY",
                                "available": False}),
        Product.model_validate({"sku": "EURO", "name": "Vollmilch", "price": "1.19", "currency": "EUR"}),
    ])
    return cat


def service(db: Database, catalog: ProductCatalog, sink: Any, **kwargs: Any) -> OrderService:
    options: dict[str, Any] = {"store_id": "sh-0042", "fulfilments": ["phone", "counter", "till"],
                               "checkout_url_template": CHECKOUT}
    options.update(kwargs)
    return OrderService(db, catalog, sink, **options)


def stored_orders(db: Database) -> list[tuple[Any, ...]]:
    return db.read(lambda c: c.execute("SELECT order_number, state FROM orders ORDER BY created_ms").fetchall())


def outbox_events(db: Database) -> list[tuple[str, bytes]]:
    return db.read(lambda c: c.execute("SELECT type, body FROM outbox ORDER BY seq").fetchall())


async def test_an_order_is_priced_from_the_catalog_stored_and_announced(
    db: Database, outbox: Outbox, catalog: ProductCatalog
) -> None:
    orders = service(db, catalog, Sink(outbox))
    order = await orders.place(source="kiosk:k1", items=[("TEA", 2), ("MILK", 1)], fulfilment="phone")
    assert uuid.UUID(order.order_id).version == 7
    assert re.fullmatch(r"K[0-9]{4}-0001", order.order_number)
    assert [(line.sku, line.quantity, line.price, line.line_total) for line in order.items] == [
        ("TEA", 2, Decimal("4.5"), Decimal("9")), ("MILK", 1, Decimal("12.8"), Decimal("12.8"))
    ]
    assert order.total == Decimal("21.8") and order.currency == "CNY"
    assert order.checkout_url == f"https://shop.example.cn/checkout?store=sh-0042&order={order.order_id}"
    # A price change afterwards does not change the order.
    await catalog.upsert([Product.model_validate({"sku": "TEA", "name": "x", "price": "99", "currency": "CNY"})])
    assert orders.get(order.order_id) == order
    assert stored_orders(db) == [(order.order_number, "published")]
    [(kind, body)] = outbox_events(db)
    assert kind == "order.created"
    validate_event(body)
    payload = json.loads(body)["payload"]
    validate("payload.order.created.json", payload)
    assert payload["items"][0] == {"sku": "TEA", "name": "东方树叶 茉莉花茶 500ml", "quantity": 2, "price": "4.5",
                                   "line_total": "9"}
    assert payload["total"] == "21.8" and payload["item_count"] == 3 and payload["source"] == "kiosk:k1"


async def test_order_numbers_are_unique_under_concurrency_and_name_the_source(
    db: Database, outbox: Outbox, catalog: ProductCatalog
) -> None:
    orders = service(db, catalog, Sink(outbox))
    placed = await asyncio.gather(*(
        orders.place(source=f"{kind}:x{i}", items=[("TEA", 1)], fulfilment="counter")
        for i in range(30) for kind in (["kiosk", "tag", "device"][i % 3],)
    ))
    numbers = [p.order_number for p in placed]
    assert len(set(numbers)) == 30
    assert sorted(int(n.split("-")[1]) for n in numbers) == list(range(1, 31))
    assert {n[0] for n in numbers} == {"K", "S", "D"}
    assert all(p.checkout_url is None for p in placed)


@pytest.mark.parametrize(
    ("items", "fulfilment", "source", "message"),
    [
        ([("NOPE", 1)], "counter", "kiosk:k1", "not in the catalog"),
        ([("GONE", 1)], "counter", "kiosk:k1", "not available"),
        ([("TEA", 0)], "counter", "kiosk:k1", "quantity"),
        ([("TEA", 100)], "counter", "kiosk:k1", "quantity"),
        ([("TEA", True)], "counter", "kiosk:k1", "quantity"),
        ([("TEA", 1), ("TEA", 2)], "counter", "kiosk:k1", "twice"),
        ([("TEA", 1), ("EURO", 1)], "counter", "kiosk:k1", "EUR"),
        ([], "counter", "kiosk:k1", "at least one"),
        ([(f"S{i}", 1) for i in range(51)], "counter", "kiosk:k1", "at most 50"),
        ([("bad sku", 1)], "counter", "kiosk:k1", "not a valid sku"),
        ([("TEA", 1)], "locker", "kiosk:k1", "not offered"),
        ([("TEA", 1)], "cash", "kiosk:k1", "not offered"),
        ([("TEA", 1)], "counter", "web:k1", "source"),
        ([("TEA", 1)], "counter", "kiosk:", "source"),
    ],
)
async def test_refused_orders_store_nothing(
    db: Database, outbox: Outbox, catalog: ProductCatalog, items: list[tuple[str, int]], fulfilment: str,
    source: str, message: str,
) -> None:
    orders = service(db, catalog, Sink(outbox))
    with pytest.raises(OrderError, match=message):
        await orders.place(source=source, items=items, fulfilment=fulfilment)
    assert stored_orders(db) == []
    assert outbox_events(db) == []


async def test_a_full_outbox_refuses_the_order(db: Database, catalog: ProductCatalog) -> None:
    tiny = Outbox(db, Topics("retail/v1", "sh-0042"), max_bytes=300)
    await tiny.open()
    orders = service(db, catalog, Sink(tiny))
    with pytest.raises(OrderUnavailableError, match="counter"):
        await orders.place(source="kiosk:k1", items=[("TEA", 1)], fulfilment="till")
    [(_number, state)] = stored_orders(db)
    assert state == "refused"
    order_id = db.read(lambda c: c.execute("SELECT order_id FROM orders").fetchone()[0])
    assert orders.get(order_id) is None


async def test_an_order_not_announced_before_a_crash_is_announced_at_the_next_start(
    db: Database, outbox: Outbox, catalog: ProductCatalog
) -> None:
    with pytest.raises(Crash):
        await service(db, catalog, CrashingSink()).place(source="kiosk:k1", items=[("TEA", 3)], fulfilment="till")
    [(number, state)] = stored_orders(db)
    assert state == "placed" and outbox_events(db) == []
    again = service(db, catalog, Sink(outbox))
    assert await again.recover() == 1
    assert await again.recover() == 0
    [(_kind, body)] = outbox_events(db)
    validate_event(body)
    assert json.loads(body)["payload"]["order_number"] == number
    assert stored_orders(db) == [(number, "published")]
    # The next order of the day continues the count.
    assert (await again.place(source="kiosk:k1", items=[("TEA", 1)], fulfilment="till")).order_number.endswith("2")


def test_phone_needs_a_checkout_template(db: Database, catalog: ProductCatalog) -> None:
    with pytest.raises(ValueError, match="checkout_url_template"):
        OrderService(db, catalog, CrashingSink(), store_id="s", fulfilments=["phone"])
    assert OrderService(db, catalog, CrashingSink(), store_id="s", fulfilments=["till"]).fulfilments() == ["till"]


async def test_get_refuses_what_is_not_an_order_id(db: Database, outbox: Outbox, catalog: ProductCatalog) -> None:
    orders = service(db, catalog, Sink(outbox))
    assert orders.get("not-a-uuid") is None
    assert orders.get(str(uuid.uuid4())) is None


async def test_old_orders_are_purged_but_never_unannounced_ones(
    db: Database, outbox: Outbox, catalog: ProductCatalog
) -> None:
    orders = service(db, catalog, Sink(outbox))
    kept = await orders.place(source="kiosk:k1", items=[("TEA", 1)], fulfilment="till")
    old = await orders.place(source="kiosk:k1", items=[("TEA", 1)], fulfilment="till")
    with pytest.raises(Crash):
        await service(db, catalog, CrashingSink()).place(source="kiosk:k1", items=[("TEA", 1)], fulfilment="till")
    await db.write(lambda c: c.execute("UPDATE orders SET created_ms = 0 WHERE order_id != ?", (kept.order_id,)))
    assert await orders.purge(keep_days=30) == 1
    assert orders.get(old.order_id) is None and orders.get(kept.order_id) == kept
    assert [state for _, state in stored_orders(db)] == ["placed", "published"]
