"""KioskHub on a real database, catalog, tag registry and outbox: codes to products, scan events, live
streams (bounded), presence reported as device state only on change."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cloud_link.contract import validate
from cloud_link.outbox import Outbox
from cloud_link.topics import Topics
from devices.labels.registry import TagRegistry
from edge_agent.services.catalog import Product, ProductCatalog
from edge_agent.services.kiosks import MAX_STREAMS_PER_KIOSK, STREAM_QUEUE, KioskHub, KioskSpec
from edge_agent.storage import Database
from edge_agent.wiring.kiosks import connect_kiosk_hub

BASE = "https://s.example.cn"


class Sink:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    async def publish_event(self, event_type: str, payload: dict[str, Any]) -> Any:
        return await self.outbox.publish(event_type, payload)

    async def put_state(self, device_id: str, state: dict[str, Any]) -> Any:
        return await self.outbox.put_state(device_id, state)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


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
        Product.model_validate({"sku": "TEA", "name": "茶", "price": "4.5", "currency": "CNY",
                                "barcode": "6901234567892"}),
        Product.model_validate({"sku": "COLA", "name": "Cola", "price": "3", "currency": "CNY",
                                "barcode": "036000291452"}),
    ])
    return cat


@pytest.fixture
async def hub(db: Database, outbox: Outbox, catalog: ProductCatalog) -> KioskHub:
    tags = TagRegistry(db)
    await tags.ensure("0123456789abcdef", 3, "bs1")
    await catalog.pair_tags([("0123456789abcdef", "TEA")])
    hub = KioskHub(catalog, tags, Sink(outbox), [KioskSpec("k1", "Entrance"), KioskSpec("k2", "Back", "en")],
                   public_base_url=BASE + "/", heartbeat_s=30, grace_s=5, clock=Clock())
    connect_kiosk_hub(hub, catalog)  # as wiring/kiosks.py does
    return hub


def events(db: Database, kind: str) -> list[dict[str, Any]]:
    rows = db.read(lambda c: c.execute("SELECT body FROM outbox WHERE type = ? ORDER BY seq", (kind,)).fetchall())
    return [json.loads(r[0])["payload"] for r in rows]


def states(db: Database) -> dict[str, dict[str, Any]]:
    rows = db.read(lambda c: c.execute("SELECT device_id, body FROM device_state").fetchall())
    return {r[0]: json.loads(r[1])["state"] for r in rows}


def scan_code(db: Database) -> str:
    return str(db.read(lambda c: c.execute("SELECT scan_code FROM tags").fetchone()[0]))


async def test_codes_resolve_to_products(hub: KioskHub, db: Database) -> None:
    def sku(code: str) -> str | None:
        product = hub.resolve_code(code)
        return None if product is None else product.sku

    assert sku("6901234567892") == "TEA"
    assert sku(" 6901234567892\r") == "TEA"
    assert sku("6901234567893") is None  # check digit: a misread, never a neighbour
    assert sku("036000291452") == "COLA"  # UPC-A
    assert sku("0036000291452") == "COLA"  # the same UPC-A read as EAN-13
    assert sku(f"{BASE}/s/{scan_code(db)}") == "TEA"
    assert sku(f"{BASE}/s/{scan_code(db)}?utm=x") == "TEA"
    assert sku(f"{BASE}/s/nope") is None
    assert sku(f"{BASE}/s/../admin") is None
    assert sku("https://evil.example.com/s/" + scan_code(db)) is None
    assert sku("") is None
    assert sku("x" * 10_000) is None


async def test_scans_are_recorded_and_reach_the_kiosks_pages(hub: KioskHub, db: Database) -> None:
    async with hub.stream("k1") as page, hub.stream("k2") as other:
        assert (await hub.scanned("k1", "6901234567892", "serial")) is not None
        assert await hub.scanned("k1", "wx://pay/1234567890", "serial") is None
        assert await hub.scanned("k1", "6901234567892", "wedge") is not None  # the page has its answer
        assert await hub.scanned("k1", "036000291452", "device:scanner-3") is not None
        got = [await page.get(0.1) for _ in range(4)]
        assert [(e.kind, e.data["status"], e.product and e.product.sku) for e in got if e] == [
            ("scan", "ok", "TEA"), ("scan", "unknown", None), ("scan", "ok", "COLA")]
        assert await other.get(0.05) is None
    with pytest.raises(KeyError):
        await hub.scanned("k9", "6901234567892", "serial")
    recorded = events(db, "scan.kiosk")
    for payload in recorded:
        validate("payload.scan.kiosk.json", payload)
    assert recorded[1] == {"kiosk_id": "k1", "source": "serial", "status": "unknown", "code_kind": "other"}
    assert recorded[3]["source"] == "mqtt" and recorded[3]["device_id"] == "scanner-3"


async def test_catalog_changes_reach_every_open_page(hub: KioskHub, catalog: ProductCatalog) -> None:
    async with hub.stream("k1") as one, hub.stream("k2") as two:
        await catalog.upsert([Product.model_validate({"sku": "TEA", "name": "茶", "price": "3.9",
                                                      "currency": "CNY", "available": False})])
        await catalog.delete(["COLA"])
        for page in (one, two):
            price = await page.get(0.1)
            assert price is not None and price.kind == "price" and price.product is not None
            assert str(price.product.price) == "3.9" and price.product.available is False
            removed = await page.get(0.1)
            assert removed is not None and (removed.kind, removed.data) == ("removed", {"sku": "COLA"})


async def test_a_bulk_change_reloads_the_pages(hub: KioskHub, catalog: ProductCatalog) -> None:
    async with hub.stream("k1") as page:
        await catalog.upsert([Product.model_validate({"sku": f"B{i:04d}", "name": "n", "price": "1", "currency": "CNY"})
                              for i in range(1500)])
        first = await page.get(0.1)
        assert first is not None and first.kind == "reload"
        assert await page.get(0.01) is None


async def test_a_page_that_stops_reading_is_told_to_reload(hub: KioskHub) -> None:
    async with hub.stream("k1") as page:
        for i in range(STREAM_QUEUE + 10):
            hub.message(f"m{i}", "k1")
        first = await page.get(0.1)
        assert first is not None and first.kind == "reload"
        assert page.overflowed == 1


async def test_streams_per_kiosk_are_bounded(hub: KioskHub) -> None:
    assert hub.stream_slots("k1") == MAX_STREAMS_PER_KIOSK and hub.stream_slots("nope") == 0
    opened = [hub.stream("k1") for _ in range(MAX_STREAMS_PER_KIOSK)]
    for cm in opened:
        await cm.__aenter__()
    assert hub.stream_slots("k1") == 0
    with pytest.raises(OverflowError):
        async with hub.stream("k1"):
            pass
    for cm in opened:
        await cm.__aexit__(None, None, None)
    assert hub.stream_slots("k1") == MAX_STREAMS_PER_KIOSK


async def test_presence_is_reported_only_when_it_changes(hub: KioskHub, db: Database) -> None:
    clock = hub._clock
    assert isinstance(clock, Clock)
    assert await hub.report() == 2  # the first report tells the cloud about every kiosk
    assert {k: s["online"] for k, s in states(db).items()} == {"kiosk-k1": False, "kiosk-k2": False}
    async with hub.stream("k1"):
        assert await hub.report() == 1 and states(db)["kiosk-k1"]["online"] is True
        assert await hub.report() == 0
    # Closed: still online during the grace period (a reload), offline after it.
    clock.now += 4
    assert await hub.report() == 0
    clock.now += 2
    assert await hub.report() == 1 and states(db)["kiosk-k1"]["online"] is False
    hub.heartbeat("k2")
    assert await hub.report() == 1 and states(db)["kiosk-k2"]["online"] is True
    clock.now += 29
    assert await hub.report() == 0
    clock.now += 2
    assert await hub.report() == 1 and states(db)["kiosk-k2"]["online"] is False
    state = states(db)["kiosk-k2"]
    assert set(state) == {"kind", "online", "name", "lang", "orientation", "since_ms", "last_seen_ms"}
    assert state["lang"] == "en"


async def test_close_ends_every_stream(hub: KioskHub) -> None:
    async with hub.stream("k1") as page:
        hub.close()
        assert page.closed and await page.get(5) is None
        assert hub.stream_slots("k1") == 0
