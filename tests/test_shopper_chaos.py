"""Issue 14.10: what a shopper saw survives a kill -9 of the agent.

Shoppers open shelf tags' scan links and place kiosk orders against the agent as its own process while it
is killed (SIGKILL) and started again. Every 302 a phone got had its scan.tag committed first, and every
order number a kiosk showed had its order.created committed first: afterwards each of them must be at the
cloud broker, whatever the kill interrupted (requests cut off by the kill got no answer, so they promise
nothing).
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.storage.database import migrate
from tests.conftest import agent_config
from tests.support.agent_process import wait_http, write_config
from tests.support.broker import Broker, free_port

TAGS = 5000
PHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"


def seed(data_dir: Path) -> dict[str, str]:
    """A product and TAGS paired tags; returns scan code -> tag id."""
    migrate(data_dir / "agent.db")
    conn = sqlite3.connect(data_dir / "agent.db")
    now = int(time.time() * 1000)
    conn.execute("INSERT INTO products(sku, name, price, currency, rev, updated_ms) "
                 "VALUES ('TEA', 'Tea', '4.50', 'CNY', 1, ?)", (now,))
    codes = {}
    for i in range(TAGS):
        tag, code = f"{0x4A3F000000000000 + i:016x}", f"chaos{i:05d}"
        conn.execute("INSERT INTO tags(tag_id, type_code, base_station, sku, scan_code, created_ms) "
                     "VALUES (?, 3, 'bs1', 'TEA', ?, ?)", (tag, code, now))
        codes[code] = tag
    conn.commit()
    conn.close()
    return codes


class Cloud:
    """The cloud side: the tag of every scan.tag and the number of every order.created."""

    def __init__(self, broker: Broker) -> None:
        self.scanned: set[str] = set()
        self.orders: set[str] = set()
        self._lock = threading.Lock()
        ready = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="shopper-chaos", protocol=paho.MQTTv311,
                                  clean_session=False)
        self.client.on_connect = lambda c, *a: c.subscribe("retail/v1/+/events/#", 1)
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert ready.wait(10)

    def _on_message(self, client: object, userdata: object, msg: paho.MQTTMessage) -> None:
        doc = json.loads(msg.payload)
        with self._lock:
            if doc["type"] == "scan.tag":
                self.scanned.add(doc["payload"]["tag_id"])
            elif doc["type"] == "order.created":
                self.orders.add(doc["payload"]["order_number"])

    def has(self, tags: set[str], orders: set[str]) -> bool:
        with self._lock:
            return tags <= self.scanned and orders <= self.orders

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Shoppers(threading.Thread):
    """Scan every code once, in turn, and place a kiosk order every fifth scan; record what was answered."""

    def __init__(self, port: int, codes: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.codes = list(codes.items())
        self.redirected: set[str] = set()  # tag ids whose scan got its 302
        self.ordered: set[str] = set()  # order numbers a kiosk showed
        self.cut_off = 0  # requests the kill left without an answer
        self.stop = threading.Event()

    def run(self) -> None:
        base = f"http://127.0.0.1:{self.port}"
        with httpx.Client(timeout=5) as http:
            for n, (code, tag) in enumerate(self.codes):
                if self.stop.is_set():
                    return
                try:
                    scan = http.get(f"{base}/s/{code}", headers={"User-Agent": PHONE}, follow_redirects=False)
                    if scan.status_code == 302:
                        self.redirected.add(tag)
                    if n % 5 == 0:
                        order = http.post(f"{base}/kiosk/k1/api/orders",
                                          json={"items": [{"sku": "TEA", "quantity": 1}], "fulfilment": "counter"})
                        if order.status_code == 201:
                            self.ordered.add(order.json()["order_number"])
                except httpx.HTTPError:
                    self.cut_off += 1
                    time.sleep(0.05)
                time.sleep(0.002)  # a steady stream over the whole run, kills included


def test_every_302_and_every_order_number_a_shopper_saw_is_at_the_cloud_after_kill_9(
    tmp_path: Path, cloud_broker: Broker
) -> None:
    codes = seed(tmp_path / "data")
    port = free_port()
    config = agent_config(
        tmp_path / "data", cloud_broker, agent={"log_level": "INFO"},
        web={"port": port, "https": False},
        scan_links={"product_url_template": "https://m.example.cn/p/{sku}?tag={tag_id}",
                    "rate_limit_per_minute": 1_000_000, "rate_limit_burst": 100_000},
        kiosk={"fulfilments": ["counter"], "orders_per_minute": 10_000},
        kiosks=[{"id": "k1", "name": "Entrance"}],
    )
    path = write_config(config, tmp_path / "agent.toml")
    cloud = Cloud(cloud_broker)
    log = (tmp_path / "agent.log").open("ab")
    agents: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        agents.append(subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config", str(path)],
                                       stdout=log, stderr=subprocess.STDOUT))
        wait_http(port)

    shoppers = Shoppers(port, codes)
    try:
        start()
        shoppers.start()
        for _ in range(2):  # twice: killed mid-traffic, started again half a second later
            time.sleep(1.0)
            agents[-1].send_signal(signal.SIGKILL)
            agents[-1].wait(10)
            time.sleep(0.5)
            start()
        time.sleep(1.0)
        shoppers.stop.set()
        shoppers.join(30)
        deadline = time.monotonic() + 60
        while not cloud.has(shoppers.redirected, shoppers.ordered) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        shoppers.stop.set()
        for proc in agents:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(10)
        cloud.stop()
        log.close()
    assert len(shoppers.redirected) > 50 and len(shoppers.ordered) > 10, (shoppers.redirected, shoppers.ordered)
    print(f"redirects {len(shoppers.redirected)}, orders {len(shoppers.ordered)}, cut off {shoppers.cut_off}")
    assert shoppers.cut_off >= 1  # the kills did cut requests off
    missing_scans = shoppers.redirected - cloud.scanned
    missing_orders = shoppers.ordered - cloud.orders
    assert not missing_scans and not missing_orders, (sorted(missing_scans)[:5], sorted(missing_orders)[:5])
