"""An independent cloud-side subscriber: its own paho client and thread, as the cloud would be."""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from cloud_link import contract
from tests.support.broker import Broker


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class CloudSubscriber:
    def __init__(
        self,
        broker: Broker,
        topic: str = "retail/#",
        *,
        client_id: str = "cloud-test-subscriber",
        username: str | None = None,
        password: str | None = None,
        persistent: bool = False,
    ) -> None:
        """`persistent`: a session the broker keeps (clean_session false), so what is published while this
        subscriber is away (the broker restarting) waits for it, as for the real cloud's consumers."""
        self.broker = broker
        self.topic = topic
        self.messages: queue.Queue[Received] = queue.Queue()
        self.all: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311, clean_session=not persistent
        )
        self.client.reconnect_delay_set(1, 2)
        if broker.tls is not None:
            self.client.tls_set(
                ca_certs=str(broker.tls.ca),
                certfile=str(broker.tls.client_cert),
                keyfile=str(broker.tls.client_key),
            )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        rec = Received(msg.topic, bytes(msg.payload), bool(msg.retain))
        with self._lock:
            self.all.append(rec)
        self.messages.put(rec)

    def start(self) -> CloudSubscriber:
        self.client.connect(self.broker.host, self.broker.port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("subscriber did not get SUBACK")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos).wait_for_publish(5)

    def assert_contract(self) -> int:
        """Check every message the agent sent against the JSON Schemas of docs/cloud-contract.md."""
        with self._lock:
            snapshot = list(self.all)
        checked = 0
        for m in snapshot:
            if "/events/" in m.topic or m.topic.endswith("/commands/result"):
                contract.validate_event(m.payload)
            elif "/state/" in m.topic:
                contract.validate("state", m.payload)
            elif m.topic.endswith("/status"):
                contract.validate("status", m.payload)
            else:
                continue  # what the test itself published (commands, device messages)
            checked += 1
        return checked

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [m.json() for m in self.all if "/events/" in m.topic]

    def wait_for(self, predicate: Any, timeout: float = 15.0) -> list[Received]:
        """Wait until predicate(list of all messages) is true; returns the messages."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                snapshot = list(self.all)
            if predicate(snapshot):
                return snapshot
            time.sleep(0.02)
        with self._lock:
            snapshot = list(self.all)
        raise AssertionError(f"timed out after {timeout} s; got {len(snapshot)} messages: "
                             f"{[m.topic for m in snapshot][-10:]}")

    def wait_events(self, n: int, timeout: float = 20.0, event_type: str | None = None) -> list[dict[str, Any]]:
        def enough(msgs: list[Received]) -> bool:
            return len(_events(msgs, event_type)) >= n

        return _events(self.wait_for(enough, timeout), event_type)


def _events(msgs: list[Received], event_type: str | None) -> list[dict[str, Any]]:
    out = []
    for m in msgs:
        if "/events/" in m.topic or m.topic.endswith("/commands/result"):
            doc = m.json()
            if event_type is None or doc.get("type") == event_type:
                out.append(doc)
    return out
