"""A simulated Wi-Fi device on the in-store broker (docs/mqtt-devices.md).

Two modes:
- `sensor` (the default): a shelf sensor publishing its state once at start and whenever it changes
  (battery steps down), telemetry every `interval` seconds, and now and then an event (a button press);
- `scanner`, `kiosk`, `tablet`: a device that announces itself (retained), keeps its availability
  retained with a Last Will of `offline`, and every `interval` seconds scans the next EAN-13 code of
  `codes` (every third time a tap instead). It obeys the agent's commands on its `cmd` topic:
  `show_message` and `reload` are logged, `reboot` takes it offline for a second, then it announces
  itself again.

With `bad_every` it also sends a malformed message every N messages, to show the agent rejecting bad
input. Runs paho's own network thread: it is a stand-alone test peer, not agent code.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import threading
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger(__name__)

# Valid EAN-13 codes (check digits correct): what the demo's catalog sells, and one nobody sells.
DEFAULT_CODES = ("6901234567892", "4006381333931", "6920152400012", "9780201379624")
DEVICE_KINDS = ("sensor", "scanner", "kiosk", "tablet")


def run_simulated_device(
    *,
    host: str,
    port: int,
    prefix: str,
    device_id: str,
    interval: float,
    count: int,
    bad_every: int = 0,
    kind: str = "sensor",
    kiosk_id: str | None = None,
    codes: tuple[str, ...] = DEFAULT_CODES,
) -> int:
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    if kind == "sensor":
        return _run_sensor(host, port, prefix, device_id, interval, count, bad_every, stop)
    device = SimulatedScanner(host, port, prefix, device_id, kind=kind, kiosk_id=kiosk_id, codes=codes)
    return device.run(interval=interval, count=count, bad_every=bad_every, stop=stop)


class SimulatedScanner:
    """A handheld scanner (or a kiosk's tablet) that announces itself, scans, taps and obeys commands."""

    def __init__(
        self,
        host: str,
        port: int,
        prefix: str,
        device_id: str,
        *,
        kind: str = "scanner",
        kiosk_id: str | None = None,
        codes: tuple[str, ...] = DEFAULT_CODES,
        model: str = "SIM-HS2",
        fw: str = "sim-2.0",
    ) -> None:
        self.host, self.port = host, port
        self.base = f"{prefix}/devices/{device_id}"
        self.device_id = device_id
        self.announce: dict[str, Any] = {"kind": kind, "model": model, "fw": fw,
                                         "capabilities": ["scan", "tap", "show_message"]}
        if kiosk_id is not None:
            self.announce["kiosk_id"] = kiosk_id
        self.codes = codes or DEFAULT_CODES
        self.commands: list[dict[str, Any]] = []
        self.announced = 0
        self._reboot = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sim-{device_id}")
        # The broker says we are gone if we vanish without a DISCONNECT (power, Wi-Fi, crash).
        self.client.will_set(f"{self.base}/availability", "offline", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        client.subscribe(f"{self.base}/cmd", qos=1)
        self._come_online()

    def _come_online(self) -> None:
        self.client.publish(f"{self.base}/announce", json.dumps(self.announce), qos=1, retain=True)
        self.client.publish(f"{self.base}/availability", "online", qos=1, retain=True)
        self.client.publish(f"{self.base}/state", json.dumps({"battery_mv": 3900, "screen": "ready"}), qos=1,
                            retain=True)
        self.announced += 1

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            command = json.loads(msg.payload)
            name = command["command"]
        except (ValueError, KeyError, TypeError):
            log.warning("%s: unreadable command %r", self.device_id, msg.payload[:100])
            return
        self.commands.append(command)
        if name == "show_message":
            log.info("%s shows %r for %s s", self.device_id, command.get("text"), command.get("seconds"))
        elif name == "reload":
            log.info("%s reloads", self.device_id)
        elif name == "reboot":
            log.info("%s reboots", self.device_id)
            self._reboot.set()  # handled by the main loop: never block paho's thread
        else:
            log.warning("%s: unknown command %s", self.device_id, name)

    def run(self, *, interval: float, count: int, bad_every: int, stop: threading.Event) -> int:
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            log.error("cannot reach the in-store broker at %s:%d: %s", self.host, self.port, exc)
            return 1
        self.client.loop_start()
        log.info("simulated %s %s on %s:%d under %s", self.announce["kind"], self.device_id, self.host, self.port,
                 self.base)
        sent = 0
        try:
            while not stop.is_set() and (count == 0 or sent < count):
                if self._reboot.is_set():
                    self._reboot.clear()
                    self.client.publish(f"{self.base}/availability", "offline", qos=1, retain=True)
                    stop.wait(1.0)
                    self._come_online()
                    continue
                sent += 1
                if sent % 3 == 0:
                    event: dict[str, Any] = {"kind": "tap", "data": {"target": "trigger"}}
                else:
                    event = {"kind": "scan", "data": {"code": self.codes[sent % len(self.codes)],
                                                      "symbology": "ean13"}}
                self.client.publish(f"{self.base}/event", json.dumps(event), qos=1).wait_for_publish(5)
                if bad_every and sent % bad_every == 0:
                    self.client.publish(f"{self.base}/event", b"\xff{not json", qos=1)
                stop.wait(interval)
        finally:
            # A clean goodbye: offline (retained), then DISCONNECT, so the Will is not needed.
            self.client.publish(f"{self.base}/availability", "offline", qos=1, retain=True).wait_for_publish(5)
            self.client.disconnect()
            self.client.loop_stop()
        return 0


def _run_sensor(  # noqa: PLR0917  (the stand-alone sensor's settings, passed through once)
    host: str, port: int, prefix: str, device_id: str, interval: float, count: int, bad_every: int,
    stop: threading.Event,
) -> int:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sim-{device_id}")
    base = f"{prefix}/devices/{device_id}"
    client.will_set(f"{base}/availability", "offline", qos=1, retain=True)
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        log.error("cannot reach the in-store broker at %s:%d: %s", host, port, exc)
        return 1
    client.loop_start()
    battery = 3000
    sent = 0
    try:
        client.publish(f"{base}/availability", "online", qos=1, retain=True)
        client.publish(f"{base}/state", json.dumps({"battery_mv": battery, "fw": "sim-1.0"}), qos=1, retain=True)
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
                client.publish(f"{base}/state", json.dumps({"battery_mv": battery, "fw": "sim-1.0"}), qos=1,
                               retain=True)
            if bad_every and sent % bad_every == 0:
                client.publish(f"{base}/telemetry", b"\xff{not json", qos=1)
            stop.wait(interval)
    finally:
        client.publish(f"{base}/availability", "offline", qos=1, retain=True).wait_for_publish(5)
        client.disconnect()
        client.loop_stop()
    return 0
