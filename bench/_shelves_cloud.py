"""The shelves benchmark's cloud: a paho client on the cloud broker that sends commands and notes, with the
time they arrived (time.monotonic, the clock the agent and the emulator use too), every command result and
pick event the agent publishes."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


class BenchCloud:
    def __init__(
        self, host: str, port: int, store_id: str, topics: tuple[str, ...] = ("retail/#",),
        client_id: str = "bench-shelves-cloud",
    ) -> None:
        self.commands_topic = f"retail/v1/{store_id}/commands"
        self._lock = threading.Lock()
        self.results: dict[str, tuple[float, dict[str, Any]]] = {}  # command id -> (arrival, payload)
        self.events: list[tuple[float, dict[str, Any]]] = []  # pick.* events: (arrival, envelope)
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311)
        self.client.on_connect = lambda c, *a: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the benchmark's cloud client did not subscribe")

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        now = time.monotonic()
        if "/events/" not in msg.topic and not msg.topic.endswith("/commands/result"):
            return
        doc = json.loads(msg.payload)
        kind = doc.get("type", "")
        with self._lock:
            if kind == "command.result":
                self.results[doc["payload"]["command_id"]] = (now, doc["payload"])
            elif kind.startswith("pick."):
                self.events.append((now, doc))

    def send(self, command_id: str, command_type: str, payload: dict[str, Any]) -> float:
        """Publish a command (QoS 1, acknowledged by the broker); returns the time it was handed to the broker."""
        body = json.dumps({"command_id": command_id, "type": command_type, "payload": payload}, ensure_ascii=False)
        sent = time.monotonic()
        self.client.publish(self.commands_topic, body, qos=1).wait_for_publish(10)
        return sent

    def result(self, command_id: str) -> tuple[float, dict[str, Any]] | None:
        with self._lock:
            return self.results.get(command_id)

    def pick_events(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [doc for _, doc in self.events if doc["type"] == kind]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
