"""The benchmark's independent cloud-side subscriber: its own process, its own paho client.

Driven over a multiprocessing pipe: ("wait", phase, count, timeout) answers once `count` messages of
that phase arrived (or the timeout passed) with what it recorded for the phase; ("counts",) answers how
many of each phase arrived; ("reset",) forgets what arrived so far and answers "ok".

A phase is the `"phase"` field the benchmark put in each event's payload (its first three letters count).
With `by_type=True` it is the event's type instead (the last level of its `.../events/{type}` topic), and
the phase "*" is every event: for events the agent makes itself, whose payloads carry nothing of ours.

`persistent=True` keeps the subscription through a broker restart: a persistent session (the broker must
keep it: its persistence on, and QoS 0 messages queued for offline clients), and a reconnect every second.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

EVERY = b"*"


@dataclass
class PhaseRecord:
    count: int = 0
    first_recv: float | None = None
    last_recv: float | None = None
    latencies_ms: list[float] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)


def run_subscriber(
    host: str, port: int, conn: Connection, *, persistent: bool = False, by_type: bool = False
) -> None:
    lock = threading.Lock()
    arrived = threading.Condition(lock)
    subscribed = threading.Event()

    raw: list[tuple[float, bytes]] = []
    counts: dict[bytes, int] = {}

    def on_message(client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        # Keep the callback minimal (timestamp, phase tag, bytes): this subscriber must not be the
        # bottleneck of what it measures. JSON is parsed after the phase.
        now = time.monotonic()  # CLOCK_MONOTONIC is system-wide on Linux: comparable across processes
        payload = bytes(msg.payload)
        if by_type:
            _, events, event_type = msg.topic.rpartition("/events/")
            if not events:
                return
            tag = event_type.encode()
        else:
            i = payload.find(b'"phase":"')
            if i < 0:
                return
            tag = payload[i + 9 : i + 12]
        with lock:
            raw.append((now, payload))
            counts[tag] = counts.get(tag, 0) + 1
            if by_type:
                counts[EVERY] = counts.get(EVERY, 0) + 1
            arrived.notify_all()

    def record(phase: str) -> PhaseRecord:
        rec = PhaseRecord()
        for now, payload in raw:
            doc = json.loads(payload)
            body = doc.get("payload", doc)
            if by_type:
                if phase != EVERY.decode() and doc.get("type") != phase:
                    continue
            elif body.get("phase") != phase:
                continue
            rec.count += 1
            rec.first_recv = rec.first_recv or now
            rec.last_recv = now
            if "t0" in body:
                rec.latencies_ms.append((now - body["t0"]) * 1000.0)
            if "seq" in doc:
                rec.seqs.append(doc["seq"])
                rec.event_ids.append(doc["event_id"])
        return rec

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-cloud-subscriber", protocol=paho.MQTTv311,
                         clean_session=not persistent)
    if persistent:
        client.reconnect_delay_set(min_delay=1, max_delay=1)
    client.on_message = on_message
    # QoS 0 on the subscriber's side: the broker still got every message with QoS 1 from the publisher;
    # this only spares the subscriber the PUBACKs, for both the reference and the agent alike.
    client.on_connect = lambda c, *a: c.subscribe([("retail/#", 0), ("bench/#", 0)])
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect(host, port, keepalive=60)
    client.loop_start()
    subscribed.wait(10)
    conn.send("ready")
    while True:
        cmd = conn.recv()
        if cmd[0] == "stop":
            break
        if cmd[0] == "counts":
            with lock:
                conn.send({tag.decode(): n for tag, n in counts.items()})
            continue
        if cmd[0] == "reset":
            with lock:
                raw.clear()
                counts.clear()
            conn.send("ok")
            continue
        _, phase, count, timeout = cmd
        deadline = time.monotonic() + timeout
        tag = phase.encode() if by_type else phase.encode()[:3]
        with lock:
            while counts.get(tag, 0) < count and time.monotonic() < deadline:
                arrived.wait(0.2)
            rec = record(phase)
        conn.send(rec)
    client.disconnect()
    client.loop_stop()
