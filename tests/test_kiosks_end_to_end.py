"""Kiosks through the running agent (issue 5): the JSON API over HTTP, the live stream, orders reaching a real
cloud Mosquitto (also after an outage), kiosk presence as device state, bad requests, and a serial scanner on
a real pty."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from cloud_link.contract import validate
from edge_agent.runtime import Agent
from edge_agent.services.catalog import Product
from firmware_bridge.emulators.pty_line import PtyPort
from tests.conftest import agent_config, running_agent, wait_until
from tests.support.broker import Broker
from tests.support.proxy import FaultProxy
from tests.support.subscriber import CloudSubscriber

COMMANDS = "retail/v1/store-0001/commands"
CHECKOUT = "https://shop.example.cn/checkout?store={store_id}&order={order_id}"
TEA = {"sku": "TEA", "name": "东方树叶 茉莉花茶 500ml", "price": "4.50", "currency": "CNY", "barcode": "6901234567892",
       "category": "饮料 Drinks", "unit_price": "9", "unit_label": "L", "image_url": "https://cdn.example.cn/tea.jpg"}
MILK = {"sku": "MILK", "name": "光明 鲜牛奶 950ml", "price": "12.80", "currency": "CNY", "category": "乳制品 Dairy",
        "former_price": "15.80", "promotion": "限时特价", "on_shelf": False}
GONE = {"sku": "GONE", "name": "Sold out", "price": "1", "currency": "CNY", "available": False}


def kiosk_config(tmp_path: Path, broker: Broker, **overrides: Any) -> Any:
    options: dict[str, Any] = {
        "kiosk": {"fulfilments": ["phone", "counter", "till"], "checkout_url_template": CHECKOUT,
                  "heartbeat_s": 5},
        "kiosks": [{"id": "k1", "name": "Entrance"}, {"id": "k2", "name": "Back", "lang": "en"}],
    }
    options.update(overrides)
    return agent_config(tmp_path / "data", broker, **options)


async def stock(agent: Agent) -> None:
    assert agent.catalog is not None
    await agent.catalog.upsert([Product.model_validate(p) for p in (TEA, MILK, GONE)])


def base(agent: Agent, kiosk: str = "k1") -> str:
    return f"http://127.0.0.1:{agent.web_port}/kiosk/{kiosk}/api"


def order_rows(agent: Agent) -> int:
    assert agent.db is not None
    return int(agent.db.read(lambda c: c.execute("SELECT COUNT(*) FROM orders").fetchone()[0]))


async def test_browse_scan_add_and_order_through_the_agent(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    async with running_agent(kiosk_config(tmp_path, cloud_broker)) as agent, httpx.AsyncClient(timeout=10) as http:
        await stock(agent)
        config = (await http.get(f"{base(agent)}/config")).json()
        assert config["fulfilments"] == ["phone", "counter", "till"] and config["lang"] == "zh-CN"
        assert (await http.get(f"{base(agent, 'k2')}/config")).json()["lang"] == "en"
        cats = (await http.get(f"{base(agent)}/categories")).json()["categories"]
        assert cats == [{"id": "乳制品 Dairy", "name": "乳制品 Dairy", "count": 1},
                        {"id": "饮料 Drinks", "name": "饮料 Drinks", "count": 1}]
        found = (await http.get(f"{base(agent)}/products", params={"q": "牛奶"})).json()
        assert found["total"] == 1
        milk = found["products"][0]
        assert milk["price_text"] == "¥12.80" and milk["former_price_text"] == "¥15.80"
        assert milk["on_shelf"] is False and milk["available"] is True and milk["promotion"] == "限时特价"
        tea = (await http.get(f"{base(agent)}/products/TEA")).json()
        assert tea["unit_price_text"] == "¥9.00 / L" and tea["image_url"] == "https://cdn.example.cn/tea.jpg"
        assert (await http.get(f"{base(agent)}/products/NOPE")).status_code == 404
        page = (await http.get(f"{base(agent)}/products", params={"category": "饮料 Drinks", "limit": 1})).json()
        assert [p["sku"] for p in page["products"]] == ["TEA"] and page["total"] == 1

        # The keyboard-wedge path: a product's EAN-13, then a code of nothing we sell.
        scan = (await http.post(f"{base(agent)}/scan", json={"code": "6901234567892"})).json()
        assert scan["status"] == "ok" and scan["product"]["sku"] == "TEA"
        unknown = (await http.post(f"{base(agent)}/scan", json={"code": "134567890123456789"})).json()
        assert unknown["status"] == "unknown" and "未找到" in unknown["message"]
        added = await http.post(f"{base(agent)}/cart/add", json={"sku": "TEA", "quantity": 2})
        assert added.status_code == 200 and added.json()["sku"] == "TEA"
        assert (await http.post(f"{base(agent)}/cart/add", json={"sku": "GONE"})).status_code == 409

        placed = await http.post(f"{base(agent)}/orders", json={
            "items": [{"sku": "TEA", "quantity": 2}, {"sku": "MILK", "quantity": 1}], "fulfilment": "phone"})
        assert placed.status_code == 201, placed.text
        order = placed.json()
        assert order["total"] == "21.8" and order["total_text"] == "¥21.80"
        assert order["qr_data"] == order["checkout_url"] and order["order_id"] in order["checkout_url"]
        assert (await http.get(f"{base(agent)}/orders/{order['order_id']}")).json() == order
        assert (await http.get(f"{base(agent, 'k2')}/orders/{order['order_id']}")).status_code == 404
        qr = await http.get(f"{base(agent)}/qr", params={"data": order["checkout_url"]})
        assert qr.status_code == 200 and qr.headers["content-type"] == "image/svg+xml"
        assert qr.text.startswith("<svg") and "<path" in qr.text
        assert (await http.get(f"{base(agent)}/qr", params={"data": order["order_number"]})).status_code == 200
        evil = await http.get(f"{base(agent)}/qr", params={"data": "https://evil.example.com/pay"})
        assert evil.status_code == 400

        created = await asyncio.to_thread(subscriber.wait_events, 1, 20, "order.created")
        scans = await asyncio.to_thread(subscriber.wait_events, 2, 20, "scan.kiosk")
        carts = await asyncio.to_thread(subscriber.wait_events, 1, 20, "cart.add")
    payload = created[0]["payload"]
    validate("payload.order.created.json", payload)
    assert payload["order_number"] == order["order_number"] and payload["source"] == "kiosk:k1"
    assert [(i["sku"], i["quantity"], i["price"]) for i in payload["items"]] == [("TEA", 2, "4.5"), ("MILK", 1, "12.8")]
    assert scans[0]["payload"] == {"kiosk_id": "k1", "source": "wedge", "status": "ok", "code_kind": "ean13",
                                   "code": "6901234567892", "sku": "TEA"}
    # An unknown code is never sent: it may be a payment code.
    assert scans[1]["payload"] == {"kiosk_id": "k1", "source": "wedge", "status": "unknown", "code_kind": "barcode"}
    assert carts[0]["payload"] == {"kiosk_id": "k1", "sku": "TEA", "quantity": 2, "price": "4.5", "currency": "CNY"}


async def test_an_order_while_the_cloud_is_down_gets_a_local_number_and_arrives_later(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    proxy = await FaultProxy(cloud_broker.host, cloud_broker.port).start()
    config = kiosk_config(tmp_path, cloud_broker, cloud={"port": proxy.port})
    try:
        async with running_agent(config) as agent, httpx.AsyncClient(timeout=10) as http:
            assert agent.session is not None and agent.outbox is not None
            await stock(agent)
            await proxy.stop()
            await wait_until(lambda: not agent.session.connected, timeout=10)
            placed = await http.post(f"{base(agent)}/orders",
                                     json={"items": [{"sku": "MILK", "quantity": 3}], "fulfilment": "till"})
            assert placed.status_code == 201
            order = placed.json()
            assert order["checkout_url"] is None and order["qr_data"] == order["order_number"]
            assert agent.outbox.stats().events >= 1
            assert [e for e in subscriber.events() if e["type"] == "order.created"] == []
            await proxy.start()
            created = await asyncio.to_thread(subscriber.wait_events, 1, 30, "order.created")
            await wait_until(lambda: agent.outbox is not None and agent.outbox.stats().events == 0, timeout=30)
    finally:
        await proxy.stop()
    assert created[0]["payload"]["order_id"] == order["order_id"]
    assert created[0]["payload"]["total"] == "38.4"


async def test_an_order_taken_while_the_cloud_broker_is_stopped_arrives_after_it_restarts(
    tmp_path: Path, cloud_broker: Broker
) -> None:
    watcher = CloudSubscriber(cloud_broker, client_id="cloud-orders-persistent", persistent=True).start()
    try:
        async with running_agent(kiosk_config(tmp_path, cloud_broker)) as agent, httpx.AsyncClient(timeout=10) as http:
            assert agent.session is not None and agent.outbox is not None
            await stock(agent)
            await asyncio.to_thread(cloud_broker.stop)
            await wait_until(lambda: not agent.session.connected, timeout=10)
            placed = await http.post(f"{base(agent)}/orders",
                                     json={"items": [{"sku": "MILK", "quantity": 1}], "fulfilment": "till"})
            assert placed.status_code == 201 and placed.json()["order_number"]
            await asyncio.to_thread(cloud_broker.start)
            created = await asyncio.to_thread(watcher.wait_events, 1, 30, "order.created")
            await wait_until(lambda: agent.outbox is not None and agent.outbox.stats().events == 0, timeout=30)
    finally:
        watcher.stop()
    assert created[0]["payload"]["order_id"] == placed.json()["order_id"]


@contextlib.asynccontextmanager
async def live(http: httpx.AsyncClient, url: str) -> AsyncIterator[asyncio.Queue[tuple[str, Any]]]:
    """An open /live stream; its events arrive in the queue as (event, data)."""
    events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def read() -> None:
        async with http.stream("GET", url) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            name = ""
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    await events.put((name, json.loads(line[6:])))

    task = asyncio.create_task(read())
    try:
        assert await asyncio.wait_for(events.get(), 5) == ("hello", {"kiosk_id": url.split("/")[-3]})
        yield events
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await task


def kiosk_states(subscriber: CloudSubscriber, kiosk: str) -> list[dict[str, Any]]:
    return [m.json()["state"] for m in list(subscriber.all) if m.topic.endswith(f"/state/kiosk-{kiosk}")]


async def test_live_updates_reach_an_open_page_within_2_s_and_presence_is_reported(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    async with running_agent(kiosk_config(tmp_path, cloud_broker)) as agent, httpx.AsyncClient(timeout=30) as http:
        await stock(agent)
        await wait_until(lambda: any(s["online"] is False for s in kiosk_states(subscriber, "k1")), timeout=10)
        async with live(http, f"{base(agent)}/live") as events:
            await wait_until(lambda: kiosk_states(subscriber, "k1")[-1]["online"] is True, timeout=5)
            # A price change by the cloud's catalog.upsert command.
            started = time.monotonic()
            subscriber.publish(COMMANDS, json.dumps({"command_id": "c-1", "type": "catalog.upsert", "payload": {
                "products": [{**TEA, "price": "3.90", "available": False}]}}))
            name, data = await asyncio.wait_for(events.get(), 5)
            assert time.monotonic() - started < 2.0
            assert name == "price" and data["sku"] == "TEA" and data["price_text"] == "¥3.90"
            assert data["available"] is False
            subscriber.publish(COMMANDS, json.dumps({"command_id": "c-2", "type": "catalog.delete",
                                                     "payload": {"skus": ["MILK"]}}))
            assert await asyncio.wait_for(events.get(), 5) == ("removed", {"sku": "MILK"})
            assert agent.kiosk_hub is not None
            agent.kiosk_hub.message("请到服务台取货")
            assert await asyncio.wait_for(events.get(), 5) == ("message", {"text": "请到服务台取货"})
        # The page went away: offline once the heartbeat period has passed.
        await wait_until(lambda: kiosk_states(subscriber, "k1")[-1]["online"] is False, timeout=15)
        # A browser that cannot hold a stream heartbeats instead.
        beat = await http.post(f"{base(agent, 'k2')}/heartbeat", json={})
        assert beat.status_code == 200
        await wait_until(lambda: (s := kiosk_states(subscriber, "k2")) != [] and s[-1]["online"] is True, timeout=5)
    state = kiosk_states(subscriber, "k2")[-1]
    assert state["kind"] == "kiosk" and state["name"] == "Back" and state["lang"] == "en"


async def test_bad_requests_are_refused_and_store_nothing(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    async with running_agent(kiosk_config(tmp_path, cloud_broker)) as agent, httpx.AsyncClient(timeout=10) as http:
        await stock(agent)
        orders = f"{base(agent)}/orders"
        json_type = {"content-type": "application/json"}
        line = {"sku": "TEA", "quantity": 1}
        cases: list[tuple[str, dict[str, Any], int]] = [
            ("{not json", json_type, 422),
            ('{"items": [{"sku": "TEA", "quantity": NaN}], "fulfilment": "till"}', json_type, 422),
            (json.dumps({"items": [line], "fulfilment": "till", "price": "0.01"}), json_type, 422),
            (json.dumps({"items": [{**line, "price": "0.01"}], "fulfilment": "till"}), json_type, 422),
            (json.dumps({"items": [line] * 51, "fulfilment": "till"}), json_type, 422),
            (json.dumps({"items": [{"sku": "TEA", "quantity": 0}], "fulfilment": "till"}), json_type, 422),
            (json.dumps({"items": [{"sku": "TEA", "quantity": 100}], "fulfilment": "till"}), json_type, 422),
            (json.dumps({"items": [{"sku": "TEA", "quantity": "1"}], "fulfilment": "till"}), json_type, 422),
            (json.dumps({"items": [], "fulfilment": "till"}), json_type, 422),
            (json.dumps({"items": [line], "fulfilment": "till"}), {"content-type": "text/plain"}, 415),
            (json.dumps({"items": [line], "fulfilment": "till", "pad": "x" * 20_000}), json_type, 413),
            (json.dumps({"items": [line, line], "fulfilment": "till"}), json_type, 409),
            (json.dumps({"items": [{"sku": "GONE", "quantity": 1}], "fulfilment": "till"}), json_type, 409),
            (json.dumps({"items": [line], "fulfilment": "locker"}), json_type, 409),
            ("[]", json_type, 422),
        ]
        for body, headers, status in cases:
            answer = await http.post(orders, content=body, headers=headers)
            assert answer.status_code == status, (body[:80], answer.status_code, answer.text[:200])
        assert (await http.post(f"{base(agent, 'nope')}/orders", json={"items": [line], "fulfilment": "till"})
                ).status_code == 404
        assert (await http.get(f"{base(agent, '../etc')}/config")).status_code == 404
        assert (await http.get(f"{base(agent)}/products", params={"limit": 100_000})).status_code == 422
        assert (await http.get(f"{base(agent)}/products", params={"q": "x" * 500})).status_code == 422
        assert (await http.post(f"{base(agent)}/scan", json={"code": "x" * 600})).status_code == 422
        assert (await http.post(f"{base(agent)}/cart/add", json={"sku": "TEA", "quantity": 1, "x": 1})
                ).status_code == 422
        assert order_rows(agent) == 0
        assert agent.outbox is not None
        await asyncio.sleep(0.5)
        assert not [e for e in subscriber.events() if e["type"] in ("order.created", "cart.add")]
        # The agent is fine, and one good order still goes through.
        assert (await http.get(f"http://127.0.0.1:{agent.web_port}/healthz")).json()["status"] == "ok"
        good = await http.post(orders, json={"items": [line], "fulfilment": "till"})
        assert good.status_code == 201
        metrics = (await http.get(f"http://127.0.0.1:{agent.web_port}/metrics")).text
        assert 'source="kiosk_api"' in metrics


async def test_orders_are_rate_limited_per_client_address(tmp_path: Path, cloud_broker: Broker) -> None:
    config = kiosk_config(tmp_path, cloud_broker, kiosk={"fulfilments": ["till"], "orders_per_minute": 3})
    async with running_agent(config) as agent, httpx.AsyncClient(timeout=10) as http:
        await stock(agent)
        body = {"items": [{"sku": "TEA", "quantity": 1}], "fulfilment": "till"}
        codes = [(await http.post(f"{base(agent)}/orders", json=body)).status_code for _ in range(4)]
        assert codes == [201, 201, 201, 429]
        assert order_rows(agent) == 3


async def test_a_serial_scanner_on_a_pty_fills_its_kiosk(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    pty = PtyPort(tmp_path / "scanner0", line_rate=None)
    await pty.start()
    kiosks = [{"id": "k1", "name": "Entrance", "scanner_url": str(tmp_path / "scanner0"), "scanner_baudrate": 9600}]
    config = kiosk_config(tmp_path, cloud_broker, kiosks=kiosks)
    try:
        async with running_agent(config) as agent, httpx.AsyncClient(timeout=30) as http:
            await stock(agent)
            scanner = agent.scanners[0]
            await wait_until(lambda: scanner.connected, timeout=10)
            async with live(http, f"{base(agent)}/live") as events:
                line = await pty.connection()
                # Noise, an over-long line and a code split across writes, then a UPC-A read as EAN-13 ...
                await line.write(b"\x00\xff\xfe garbage\r\n" + b"9" * 400 + b"\r\n69012345")
                await line.write(b"67892\r\n")
                name, data = await asyncio.wait_for(events.get(), 5)
                assert name == "scan" and data["status"] == "ok" and data["product"]["sku"] == "TEA"
                await line.write(b"4006381333932\n")  # wrong check digit: a misread, never a neighbour
                name, data = await asyncio.wait_for(events.get(), 5)
                assert name == "scan" and data["status"] == "unknown" and data["message"]
                # Unplugged and plugged back in: the agent re-opens the port by itself.
                await pty.unplug(0.5)
                await wait_until(lambda: scanner.opens >= 2 and scanner.connected, timeout=15)
                line = await pty.connection()
                await line.write(b"6901234567892\r")
                name, data = await asyncio.wait_for(events.get(), 5)
                assert data["product"]["sku"] == "TEA"
            assert scanner.dropped == 2
            scans = await asyncio.to_thread(subscriber.wait_events, 3, 20, "scan.kiosk")
    finally:
        await pty.close()
    assert [s["payload"]["source"] for s in scans] == ["serial"] * 3
    assert [s["payload"]["status"] for s in scans] == ["ok", "unknown", "ok"]


async def test_the_agent_stops_promptly_with_pages_streaming(tmp_path: Path, cloud_broker: Broker) -> None:
    agent = Agent(kiosk_config(tmp_path, cloud_broker))
    task = asyncio.create_task(agent.run())
    await asyncio.wait_for(agent.started.wait(), 20)
    async with httpx.AsyncClient(timeout=30) as http, live(http, f"{base(agent)}/live"), \
            live(http, f"{base(agent, 'k2')}/live"):
        started = time.monotonic()
        agent.request_stop()
        await asyncio.wait_for(task, 10)
        assert time.monotonic() - started < 3.0
