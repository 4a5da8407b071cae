"""A Wi-Fi device on the in-store broker, as the tests play it: its own MQTT connection with a Last Will of
`offline`, listening on its `cmd` topic, announcing itself retained as real devices do (docs/mqtt-devices.md)."""

from __future__ import annotations

import json
import socket
import threading
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.broker import Broker

PREFIX = "store/v1"
SCANNER = {"kind": "scanner", "model": "HS-2", "fw": "1.4.2", "capabilities": ["scan", "tap"]}
# A staff handheld: scans only.
HANDHELD = {"kind": "scanner", "model": "HS-2", "fw": "1.4.2", "capabilities": ["scan"]}


class MqttDevice:
    """A Wi-Fi device: its own connection, a Last Will of `offline`, listening on its `cmd` topic."""

    def __init__(self, broker: Broker, device_id: str) -> None:
        self.base = f"{PREFIX}/devices/{device_id}"
        self.commands: list[dict[str, Any]] = []
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{device_id}")
        self.client.will_set(f"{self.base}/availability", "offline", qos=1, retain=True)
        self.client.on_connect = lambda c, *_: c.subscribe(f"{self.base}/cmd", qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.commands.append(json.loads(m.payload))
        self.broker = broker

    def start(self) -> MqttDevice:
        self.client.connect(self.broker.host, self.broker.port, keepalive=10)
        self.client.loop_start()
        assert self._subscribed.wait(10)
        return self

    def pub(self, channel: str, payload: bytes | str | dict[str, Any], *, retain: bool = False) -> None:
        body = json.dumps(payload) if isinstance(payload, dict) else payload
        self.client.publish(f"{self.base}/{channel}", body, qos=1, retain=retain).wait_for_publish(5)

    def come_online(self, announce: dict[str, Any] = SCANNER) -> None:
        self.pub("announce", announce, retain=True)
        self.pub("availability", "online", retain=True)

    def scan(self, code: str, symbology: str = "ean13") -> None:
        self.pub("event", {"kind": "scan", "data": {"code": code, "symbology": symbology}})

    def kill(self) -> None:
        """The device vanishes without a DISCONNECT (power cut): the broker publishes its Will."""
        self.client.loop_stop()
        sock = self.client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def handheld(broker: Broker, device_id: str) -> MqttDevice:
    """A staff handheld scanner, connected and announced (bound to no kiosk unless the config says so)."""
    device = MqttDevice(broker, device_id).start()
    device.come_online(HANDHELD)
    return device
