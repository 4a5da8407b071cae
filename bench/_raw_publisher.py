"""The reference: a bare paho QoS 1 publisher (its own network thread), same broker, same window."""

from __future__ import annotations

import json
import time
from multiprocessing.connection import Connection

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


def run_raw_publisher(host: str, port: int, count: int, window: int, pad: str, conn: Connection) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw-publisher", protocol=paho.MQTTv5)
    client.max_inflight_messages = window
    client.max_queued_messages = 0
    client.connect(host, port, keepalive=60)
    client.loop_start()
    time.sleep(0.5)
    conn.send("ready")
    conn.recv()
    infos: list[paho.MQTTMessageInfo] = []
    for i in range(count):
        # paho has 65,535 message ids: keep far fewer than that outstanding in its queue.
        if i >= 20_000:
            infos[i - 20_000].wait_for_publish(60)
        payload = json.dumps({"phase": "raw", "t0": time.monotonic(), "i": i, "pad": pad}, separators=(",", ":"))
        infos.append(client.publish("bench/raw", payload, qos=1))
    for info in infos:
        info.wait_for_publish(60)
    conn.send("done")
    client.disconnect()
    client.loop_stop()
