"""Demo: act as the retailer's cloud. Send a sample catalog and the tag pairings as cloud commands, then
change a price now and then, so the demo shows tags being updated end to end.

Usage: python scripts/lib/demo_seed.py CLOUD_PORT STORE_ID TAGS SEED
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
import uuid

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from cloud_link.events import format_ts, now_ms
from firmware_bridge.emulators.base_station import mixed

NAMES = [
    ("有机纯牛奶 250ml", "内蒙古"),
    ("金龙鱼 东北大米 5kg", "黑龙江"),
    ("农夫山泉 饮用天然水 550ml", "浙江"),
    ("红富士苹果 精选", "山东烟台"),
    ("法式可颂面包", "上海"),
    ("老干妈 风味豆豉油制辣椒 280g", "贵州"),
    ("Jasmine rice 5 kg", "Thailand"),
    ("Barilla Spaghetti n.5 500 g", "Italia"),
    ("安慕希 希腊风味酸奶 原味 205g×12", "内蒙古"),
    ("青岛啤酒 经典 500ml×12", "山东青岛"),
]


CATEGORIES = ["乳制品 Dairy", "粮油 Staples", "饮料 Drinks", "水果 Fruit", "烘焙 Bakery", "调味 Condiments",
              "粮油 Staples", "意面 Pasta", "乳制品 Dairy", "饮料 Drinks"]


def ean13(i: int) -> str:
    """A valid EAN-13 with China's 690 prefix, so the kiosk's scanners find the demo products."""
    body = f"690{i:09d}"
    total = sum(int(d) * (3 if n % 2 else 1) for n, d in enumerate(body))
    return body + str((10 - total % 10) % 10)


def products(count: int, rng: random.Random) -> list[dict[str, object]]:
    out = []
    for i in range(count):
        name, origin = NAMES[i % len(NAMES)]
        price = rng.choice([3.5, 4.8, 9.9, 12.8, 15.0, 19.9, 29.9, 39.8, 59.0])
        product: dict[str, object] = {
            "sku": f"demo-{i:04d}",
            "name": f"{name}" if i < len(NAMES) else f"{name} ({i})",
            "price": f"{price:.2f}",
            "currency": "CNY",
            "unit_price": f"{price / 2:.2f}",
            "unit_label": "500 g",
            "origin": origin,
            "barcode": ean13(i),
            "category": CATEGORIES[i % len(CATEGORIES)],
            "on_shelf": i % 9 != 8,  # a few only online: the kiosk's "endless aisle"
        }
        if i % 7 == 3:
            product["former_price"] = f"{price * 1.25:.2f}"
            product["promotion"] = "限时特价"
        out.append(product)
    return out


def send(client: paho.Client, topic: str, command_type: str, payload: dict[str, object]) -> None:
    # `ts`: the cloud's clock, by which the agent judges its own (docs/cloud-contract.md 2.12).
    body = json.dumps({"command_id": f"demo-{uuid.uuid4()}", "type": command_type, "ts": format_ts(now_ms()),
                       "payload": payload})
    client.publish(topic, body, qos=1).wait_for_publish(10)


def main() -> int:
    port, store, count, seed = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    topic = f"retail/v1/{store}/commands"
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="demo-cloud")
    discovered: set[str] = set()
    client.on_connect = lambda c, *a: c.subscribe(f"retail/v1/{store}/events/tag.discovered", qos=1)
    client.on_message = lambda c, u, m: discovered.add(json.loads(m.payload)["payload"]["tag_id"])
    subscribed = threading.Event()
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    subscribed.wait(10)
    tags = sorted(spec.tag.hex() for spec in mixed(count, seed))
    # Wait until the store reports its tags: the agent is then listening for commands, and a pairing of
    # an unknown tag would be refused, as it should be.
    deadline = time.monotonic() + 60
    while not set(tags) <= discovered and time.monotonic() < deadline:
        time.sleep(0.2)
    catalog = products(count, rng)
    for start in range(0, len(catalog), 100):
        send(client, topic, "catalog.upsert", {"products": catalog[start : start + 100]})
    send(client, topic, "tag.pair", {"pairs": [{"tag_id": t, "sku": f"demo-{i:04d}"} for i, t in enumerate(tags)]})
    print(f"[cloud] sent a catalog of {len(catalog)} products and {len(tags)} tag pairings", flush=True)
    try:
        while True:
            time.sleep(20)
            product = dict(rng.choice(catalog))
            price = float(str(product["price"])) + 1
            product["price"] = f"{price:.2f}"
            product["unit_price"] = f"{price / 2:.2f}"
            send(client, topic, "catalog.upsert", {"products": [product]})
            print(f"[cloud] price change: {product['sku']} {product['name']} -> ¥{price:.2f}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
