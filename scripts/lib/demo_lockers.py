"""Demo: sample pickup orders in the lockers, end to end. The stand-in cloud sends `pickup.create` for a few
orders (with the codes it would text to the customers), a courier signs in on each bank's screen with the
demo staff PIN and loads them through the screen's API (the emulated people put the parcels in and shut
the doors), and once `pickup.ready` reaches the cloud the codes are printed, to be typed on the screens.

Usage: python scripts/lib/demo_lockers.py CLOUD_PORT STORE_ID WEB_URL STAFF_NUMBER STAFF_PIN
(the PIN comes from the demo script, which drew it at random for this run: there is no default PIN).
"""

from __future__ import annotations

import json
import secrets
import sys
import threading
import time
import uuid
from typing import Any

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from cloud_link.events import format_ts, now_ms

ORDERS = [("A", "S"), ("A", "M"), ("A", "L"), ("B", "S"), ("B", "M")]


def call(url: str, body: dict[str, Any], token: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = httpx.post(url, json=body, headers=headers, timeout=10)
    return answer.status_code, answer.json()


def main() -> int:
    port, store, web, staff, pin = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
    ready: dict[str, str] = {}
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="demo-cloud-lockers")
    subscribed = threading.Event()
    client.on_connect = lambda c, *a: c.subscribe(f"retail/v1/{store}/events/pickup.ready", qos=1)
    client.on_subscribe = lambda *a: subscribed.set()

    def on_message(c: paho.Client, u: Any, m: paho.MQTTMessage) -> None:
        payload = json.loads(m.payload)["payload"]
        ready[payload["order_id"]] = payload["compartment"]

    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    subscribed.wait(10)
    orders = []
    for n, (bank, size) in enumerate(ORDERS, start=1):
        order_id, code = f"WEB-{1000 + n}", f"{secrets.randbelow(10**8):08d}"
        body = {"command_id": f"demo-{uuid.uuid4()}", "type": "pickup.create", "ts": format_ts(now_ms()),
                "payload": {"order_id": order_id, "size": size, "code": code}}  # held [lockers] hold_days
        client.publish(f"retail/v1/{store}/commands", json.dumps(body), qos=1).wait_for_publish(10)
        orders.append((bank, order_id, code))
    print(f"[cloud] sent {len(orders)} pickup orders", flush=True)
    time.sleep(2.0)  # the agent takes the commands
    for bank in sorted({b for b, _, _ in orders}):
        status, answer = call(f"{web}/locker/{bank}/api/staff/sign-in",
                              {"kind": "staff", "staff_number": staff, "pin": pin})
        if status != 200:
            print(f"[demo] staff sign-in at bank {bank} failed: {status} {answer}", file=sys.stderr, flush=True)
            return 1
        token = answer["token"]
        for order_bank, order_id, _ in orders:
            if order_bank != bank:
                continue
            status, answer = call(f"{web}/locker/{bank}/api/staff/load", {"order_id": order_id}, token)
            print(f"[screen {bank}] load {order_id}: {answer.get('message', answer)}", flush=True)
            while order_id not in ready and status == 200:  # the courier waits for the door to shut
                time.sleep(0.5)
        call(f"{web}/locker/{bank}/api/staff/sign-out", {}, token)
    print("\n  Pickup codes (type one on its bank's screen):", flush=True)
    for bank, order_id, code in orders:
        print(f"    {web}/locker/{bank}   order {order_id} in {ready.get(order_id, '?')}: code {code}", flush=True)
    print(flush=True)
    client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
