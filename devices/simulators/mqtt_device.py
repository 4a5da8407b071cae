"""A simulated Wi-Fi device (a handheld scanner or a shelf sensor) on the in-store broker.

It publishes its state once at start and whenever it changes (battery steps down), telemetry every
`interval` seconds, and now and then an event (a button press). With `bad_every` it also sends a
malformed message every N telemetry messages, to show the agent rejecting bad input.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import threading

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger(__name__)


def run_simulated_device(
    *, host: str, port: int, prefix: str, device_id: str, interval: float, count: int, bad_every: int = 0
) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sim-{device_id}")
    base = f"{prefix}/devices/{device_id}"
    client.will_set(f"{base}/state", json.dumps({"online": False}), qos=1)
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        log.error("cannot reach the in-store broker at %s:%d: %s", host, port, exc)
        return 1
    client.loop_start()
    battery = 3000
    sent = 0
    try:
        client.publish(f"{base}/state", json.dumps({"online": True, "battery_mv": battery, "fw": "sim-1.0"}), qos=1)
        log.info("simulated device %s publishing on %s:%d under %s", device_id, host, port, base)
        while not stop.is_set() and (count == 0 or sent < count):
            sent += 1
            reading = {"temperature_c": round(random.uniform(3.0, 7.0), 2), "battery_mv": battery, "n": sent}
            client.publish(f"{base}/telemetry", json.dumps(reading), qos=1).wait_for_publish(5)
            if sent % 5 == 0:
                client.publish(
                    f"{base}/event", json.dumps({"kind": "button.pressed", "data": {"button": 1, "n": sent}}), qos=1
                ).wait_for_publish(5)
            if sent % 10 == 0 and battery > 2400:
                battery -= 50
                client.publish(f"{base}/state", json.dumps({"online": True, "battery_mv": battery, "fw": "sim-1.0"}),
                               qos=1)
            if bad_every and sent % bad_every == 0:
                client.publish(f"{base}/telemetry", b"\xff{not json", qos=1)
            stop.wait(interval)
    finally:
        client.publish(f"{base}/state", json.dumps({"online": False, "battery_mv": battery}), qos=1).wait_for_publish(5)
        client.disconnect()
        client.loop_stop()
    return 0
