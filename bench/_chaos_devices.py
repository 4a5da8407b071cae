"""The chaos benchmark's devices and its cloud-side counter, each in a process of its own.

Devices: `count` Wi-Fi devices on the in-store broker, each its own paho client, publishing QoS 1 events
`{"kind": "reading", "data": {"seq": N}}` on `store/v1/devices/<id>/event` at `rate` messages a second
in total, round robin, every `seq` unique. A message counts as sent once the store broker acknowledged it.

Counter: a persistent QoS 1 session on the cloud broker (clean_session false, reconnecting every second
by itself, so a restart of the cloud broker costs it nothing: the broker keeps what arrives for it),
recording every `data.seq` of `device.event` events, how many came twice (and how many of those with
another `event_id`: stored twice by the agent, not merely sent twice), and the `count` of every
`alarm.broker_dropped`. It also counts what a ThingsBoard gateway relays (`--peer thingsboard-gateway`):
its telemetry on `v1/gateway/telemetry`, `{"<device>": [{"ts": ..., "values": {"seq": N}}, ...], ...}`,
several devices and entries a message; those carry no event_id, so new_event_ids stays 0 for them. Each run
of the benchmark has one relay and a counter of its own, so the two formats never mix.
"""

from __future__ import annotations

import json
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

GATEWAY_TELEMETRY = "v1/gateway/telemetry"  # ThingsBoard's gateway API: telemetry of the devices behind it


def run_devices(host: str, port: int, count: int, rate: float, conn: Connection) -> None:
    clients = []
    for n in range(count):
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"chaos-dev{n:02d}", protocol=paho.MQTTv311)
        client.max_inflight_messages = 100
        client.max_queued_messages = 0
        client.connect(host, port, keepalive=30)
        client.loop_start()
        clients.append(client)
    conn.send("ready")
    seconds = conn.recv()
    infos: list[paho.MQTTMessageInfo] = []
    started = time.monotonic()
    total = int(seconds * rate)
    for seq in range(total):
        due = started + seq / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        n = seq % count
        body = json.dumps({"kind": "reading", "data": {"seq": seq}}, separators=(",", ":"))
        infos.append(clients[n].publish(f"store/v1/devices/dev{n:02d}/event", body, qos=1))
    sent = 0
    for info in infos:
        try:
            info.wait_for_publish(30)
        except (RuntimeError, ValueError):
            continue
        if info.is_published():
            sent += 1
    conn.send({"published": total, "sent": sent, "seconds": round(time.monotonic() - started, 2)})
    for client in clients:
        client.loop_stop()
        client.disconnect()


def run_counter(host: str, port: int, conn: Connection) -> None:
    lock = threading.Lock()
    seen: dict[int, str] = {}  # seq -> the event_id it first came with
    state: dict[str, Any] = {"duplicates": 0, "new_event_ids": 0, "broker_dropped": 0, "malformed": 0,
                             "last": time.monotonic()}
    subscribed = threading.Event()

    def record_gateway_telemetry(doc: dict[str, Any]) -> None:
        # The json converter makes `seq` an integer (its "integer" type); a string would do as well.
        for entries in doc.values():
            for entry in entries if isinstance(entries, list) else [entries]:
                values = entry.get("values", entry) if isinstance(entry, dict) else {}
                if "seq" not in values:
                    continue
                seq = int(values["seq"])
                if seq in seen:
                    state["duplicates"] += 1
                else:
                    seen[seq] = ""
                state["last"] = time.monotonic()

    def on_message(client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        if not isinstance(doc, dict):
            return
        with lock:
            if msg.topic == GATEWAY_TELEMETRY:
                # A peer's payload we did not make: never let it raise out of the paho callback (its network
                # thread would die with it, and the count with it).
                try:
                    record_gateway_telemetry(doc)
                except (TypeError, ValueError, AttributeError):
                    state["malformed"] += 1
            elif doc.get("type") == "device.event":
                seq = doc["payload"]["data"]["seq"]
                first = seen.get(seq)
                if first is not None:
                    state["duplicates"] += 1
                    if first != doc["event_id"]:
                        state["new_event_ids"] += 1  # stored twice: the cloud cannot tell by event_id
                else:
                    seen[seq] = doc["event_id"]
                state["last"] = time.monotonic()
            elif doc.get("type") == "alarm.broker_dropped":
                state["broker_dropped"] += int(doc["payload"]["count"])

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="chaos-cloud-counter", protocol=paho.MQTTv311,
                         clean_session=False)
    client.reconnect_delay_set(min_delay=1, max_delay=1)
    client.on_message = on_message
    client.on_connect = lambda c, *a: c.subscribe([("retail/v1/+/events/#", 1), (GATEWAY_TELEMETRY, 1)])
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect(host, port, keepalive=10)
    client.loop_start()
    subscribed.wait(10)
    conn.send("ready")
    while True:
        cmd = conn.recv()
        if cmd == "stop":
            break
        with lock:
            conn.send({"unique": len(seen), "duplicates": state["duplicates"], "new_event_ids": state["new_event_ids"],
                       "broker_dropped": state["broker_dropped"], "malformed": state["malformed"],
                       "idle_s": time.monotonic() - state["last"],
                       "seen": sorted(seen) if cmd == "seen" else None})
    client.loop_stop()
    client.disconnect()
