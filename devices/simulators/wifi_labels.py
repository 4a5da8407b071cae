"""Simulated Wi-Fi e-ink labels on the in-store broker (docs/mqtt-devices.md, "Wi-Fi labels").

Product code, like the base-station emulator (DESIGN.md section 5): `edge-agent simulate wifi-labels`
runs it for the demo and training, and the tests drive it in-process. It speaks exactly the contract the
label firmware speaks:

- each label checks in when the simulator connects and then every `checkin_interval` seconds (+-10 %),
  with its type, telemetry and the hash of the picture it shows (a new label shows a white picture);
- it takes pictures from its retained `picture` topic: an empty payload (the agent clearing it) is
  ignored; a picture whose hash it already shows is reported done at once; otherwise it checks the raw
  length, the delta's base hash, decodes (firmware_bridge.picture) and checks the hash, then shows the
  picture and reports `{"xfer", "hash"}`, or reports `{"xfer", "error"}` (bad_encoding, base_unknown,
  hash_mismatch) and keeps what it showed;
- LED commands are recorded per label; `press_button()` publishes a button press.

Fault knobs: `misreport_hash(tag)` (the label shows the picture but reports a wrong hash), `sleep(tag)` /
`wake(tag)` (a sleeping label is not subscribed: it gets its retained picture when it wakes), `send_raw()`
for garbage. `picture(tag)` and `hash(tag)` give what a label shows, for pixel-exact comparisons.

One paho client (MQTT 3.1.1, its own network thread via `loop_start`) carries every simulated label, and
one more thread sends the periodic check-ins; `stop()` ends both.
"""

from __future__ import annotations

import heapq
import json
import logging
import random
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from devices.labels.wifi import DEFAULT_PREFIX, PictureMessage, PictureMessageError
from firmware_bridge.picture import Encoding, PictureError, decode_picture, picture_hash
from firmware_bridge.tag_types import TAG_TYPES_BY_NAME, TagType

log = logging.getLogger(__name__)

LABEL_FIRMWARE = 0x0201
CHECKIN_JITTER = 0.1
# How many of each type `wifi_label_mix` makes, relative.
MIX_WEIGHTS: dict[str, float] = {"2.9-bwr": 0.45, "2.13-bwr": 0.33, "1.54-bw": 0.06, "4.2-bwr": 0.1, "2.9-bwy": 0.06}


class SimulatorError(Exception):
    """A misuse of the simulator (unknown label, not started, broker unreachable)."""


@dataclass(frozen=True)
class WifiLabelSpec:
    tag: bytes
    type: TagType
    battery_mv: int = 2950
    temperature_c: float = 21.5
    rssi: int = -60
    lqi: int = 200
    firmware: int = LABEL_FIRMWARE

    def __post_init__(self) -> None:
        if len(self.tag) != 8:
            raise ValueError(f"a tag id is 8 bytes, got {len(self.tag)}")


def wifi_label_mix(n: int, seed: int = 1) -> list[WifiLabelSpec]:
    """n labels of mixed types (every type in MIX_WEIGHTS when n allows), ids and telemetry from `seed`."""
    if n < 0:
        raise ValueError("label count must not be negative")
    rng = random.Random(seed)
    names = list(MIX_WEIGHTS)
    kinds = names[:n] if n >= len(names) else []
    kinds += rng.choices(names, weights=[MIX_WEIGHTS[k] for k in names], k=n - len(kinds))
    rng.shuffle(kinds)
    seen: set[bytes] = set()
    specs = []
    for name in kinds:
        tag = b"\x57\x1f" + rng.randbytes(6)  # "W"-prefixed ids: easy to tell from radio tags in logs
        while tag in seen:
            tag = b"\x57\x1f" + rng.randbytes(6)
        seen.add(tag)
        specs.append(
            WifiLabelSpec(
                tag,
                TAG_TYPES_BY_NAME[name],
                battery_mv=rng.randrange(2600, 3100),
                temperature_c=round(rng.uniform(18.0, 26.0), 1),
                rssi=rng.randrange(-80, -40),
                lqi=rng.randrange(120, 255),
            )
        )
    return specs


@dataclass(frozen=True)
class LedRecord:
    colour: int
    count: int
    period_ms: int
    at: float  # time.monotonic() of receipt


@dataclass
class SimulatorCounters:
    checkins: int = 0
    pictures_received: int = 0
    pictures_shown: int = 0
    results_ok: int = 0
    results_error: dict[str, int] = field(default_factory=dict)
    cleared_seen: int = 0
    bad_pictures: int = 0
    bad_led: int = 0
    led_flashes: int = 0
    buttons: int = 0


@dataclass(eq=False)
class _Label:
    spec: WifiLabelSpec
    picture: bytes
    hash: bytes
    asleep: bool = False
    misreport: int = 0
    leds: list[LedRecord] = field(default_factory=list)
    shown: int = 0


class WifiLabelSimulator:
    def __init__(
        self,
        host: str,
        port: int,
        specs: Iterable[WifiLabelSpec],
        *,
        prefix: str = DEFAULT_PREFIX,
        checkin_interval: float = 30.0,
        seed: int = 1,
        client_id: str | None = None,
        keepalive: int = 30,
    ) -> None:
        self.host = host
        self.port = port
        self.prefix = prefix.rstrip("/")
        self.checkin_interval = checkin_interval
        self.keepalive = keepalive
        self._labels: dict[bytes, _Label] = {}
        for spec in specs:
            if spec.tag in self._labels:
                raise ValueError(f"label {spec.tag.hex()} given twice")
            white = bytes(spec.type.raw_bytes)
            self._labels[spec.tag] = _Label(spec, white, picture_hash(white))
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._counters = SimulatorCounters()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._subscribe_mid: int | None = None
        self._checkin_thread: threading.Thread | None = None
        self._started = False
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"sim-wifi-labels-{seed}-{random.getrandbits(32):08x}",
            protocol=paho.MQTTv311,
            clean_session=True,
        )
        self._client.reconnect_delay_set(1, 5)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> WifiLabelSimulator:
        """Connect, subscribe every awake label, send the boot check-ins; raises SimulatorError on failure."""
        if self._started:
            return self
        try:
            self._client.connect(self.host, self.port, keepalive=self.keepalive)
        except OSError as exc:
            raise SimulatorError(f"cannot reach the in-store broker at {self.host}:{self.port}: {exc}") from exc
        self._client.loop_start()
        self._started = True
        if not self._ready.wait(timeout):
            self.stop()
            raise SimulatorError(f"no subscription at {self.host}:{self.port} within {timeout} s")
        self._checkin_thread = threading.Thread(target=self._checkin_loop, name="wifi-label-checkins", daemon=True)
        self._checkin_thread.start()
        return self

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        self._stop.set()
        if self._checkin_thread is not None:
            self._checkin_thread.join(5)
            self._checkin_thread = None
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> WifiLabelSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests look at ------------------------------------------------------------------------

    @property
    def tags(self) -> list[bytes]:
        return list(self._labels)

    def tag_type(self, tag: bytes) -> TagType:
        return self._label(tag).spec.type

    def picture(self, tag: bytes) -> bytes:
        with self._lock:
            return self._label(tag).picture

    def hash(self, tag: bytes) -> bytes:
        with self._lock:
            return self._label(tag).hash

    def pictures_shown(self, tag: bytes) -> int:
        with self._lock:
            return self._label(tag).shown

    def leds(self, tag: bytes) -> list[LedRecord]:
        with self._lock:
            return list(self._label(tag).leds)

    def counters(self) -> SimulatorCounters:
        with self._lock:
            return replace(self._counters, results_error=dict(self._counters.results_error))

    # -- actions and fault knobs -------------------------------------------------------------------

    def press_button(self, tag: bytes, button: int = 1, timeout: float = 5.0) -> None:
        self._label(tag)
        self._publish(self._topic(tag, "button"), json.dumps({"button": button}).encode(), timeout)
        with self._lock:
            self._counters.buttons += 1

    def checkin(self, tag: bytes | None = None) -> None:
        """Send a check-in now, for one label or (None) for every awake label."""
        for t in [tag] if tag is not None else list(self._labels):
            self._send_checkin(t)

    def misreport_hash(self, tag: bytes, times: int = 1) -> None:
        """The label's next `times` results report a wrong hash (it shows the right picture)."""
        with self._lock:
            self._label(tag).misreport = times

    def sleep(self, tag: bytes) -> None:
        """The label stops listening (unsubscribes): pictures wait, retained, at the broker."""
        with self._lock:
            label = self._label(tag)
            if label.asleep:
                return
            label.asleep = True
        self._client.unsubscribe([self._topic(tag, "picture"), self._topic(tag, "led")])

    def wake(self, tag: bytes) -> None:
        """The label listens again: the broker sends it the retained picture, and it checks in."""
        with self._lock:
            label = self._label(tag)
            if not label.asleep:
                return
            label.asleep = False
        self._client.subscribe([(self._topic(tag, "picture"), 1), (self._topic(tag, "led"), 1)])
        self._send_checkin(tag)

    def send_raw(self, tag_id: str, channel: str, payload: bytes, *, retain: bool = False,
                 timeout: float = 5.0) -> None:
        """Publish anything on `{prefix}/labels/{tag_id}/{channel}` (garbage tests)."""
        self._publish(f"{self.prefix}/labels/{tag_id}/{channel}", payload, timeout, retain=retain)

    # -- internals ---------------------------------------------------------------------------------

    def _label(self, tag: bytes) -> _Label:
        try:
            return self._labels[tag]
        except KeyError:
            raise SimulatorError(f"no simulated label {tag.hex()}") from None

    def _topic(self, tag: bytes, channel: str) -> str:
        return f"{self.prefix}/labels/{tag.hex()}/{channel}"

    def _publish(self, topic: str, payload: bytes, timeout: float | None = None, *, retain: bool = False) -> None:
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if timeout is not None and info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            info.wait_for_publish(timeout)

    def _send_checkin(self, tag: bytes) -> None:
        with self._lock:
            label = self._label(tag)
            if label.asleep or not self._client.is_connected():
                return
            spec = label.spec
            body = {
                "type": spec.type.name,
                "battery_mv": spec.battery_mv,
                "temperature_c": spec.temperature_c,
                "rssi": max(-128, min(127, spec.rssi + self._rng.randint(-2, 2))),
                "lqi": spec.lqi,
                "fw": spec.firmware,
                "hash": label.hash.hex(),
            }
            self._counters.checkins += 1
        self._publish(self._topic(tag, "checkin"), json.dumps(body).encode())

    def _checkin_loop(self) -> None:
        now = time.monotonic()
        heap = [(now + self._rng.uniform(0, self.checkin_interval), i, tag) for i, tag in enumerate(self._labels)]
        heapq.heapify(heap)
        seq = len(heap)
        while heap and not self._stop.is_set():
            when, _, tag = heap[0]
            if self._stop.wait(max(0.0, min(when - time.monotonic(), 0.5))):
                return
            if when > time.monotonic():
                continue
            heapq.heappop(heap)
            try:
                self._send_checkin(tag)
            except Exception:  # a simulator thread must not die silently
                log.exception("wifi label simulator: check-in of %s failed", tag.hex())
            seq += 1
            jitter = self._rng.uniform(1 - CHECKIN_JITTER, 1 + CHECKIN_JITTER)
            heapq.heappush(heap, (time.monotonic() + self.checkin_interval * jitter, seq, tag))

    # -- paho callbacks (paho's thread) -------------------------------------------------------------

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        if reason.is_failure:
            log.warning("wifi label simulator: broker refused the connection: %s", reason)
            return
        with self._lock:
            topics = [
                (self._topic(tag, channel), 1)
                for tag, label in self._labels.items()
                if not label.asleep
                for channel in ("picture", "led")
            ]
        if not topics:
            self._ready.set()
            return
        _, mid = client.subscribe(topics)
        self._subscribe_mid = mid

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        if mid != self._subscribe_mid:
            return
        first = not self._ready.is_set()
        self._ready.set()
        # A label (re)connecting reports at once.
        try:
            self.checkin()
        except Exception:
            log.exception("wifi label simulator: boot check-ins failed")
        if first:
            log.info("wifi label simulator: %d labels on %s:%d under %s/labels", len(self._labels), self.host,
                     self.port, self.prefix)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            parts = msg.topic.split("/")
            tag, channel = bytes.fromhex(parts[-2]), parts[-1]
            if tag not in self._labels:
                return
            if channel == "picture":
                self._on_picture(tag, bytes(msg.payload))
            elif channel == "led":
                self._on_led(tag, bytes(msg.payload))
        except Exception:  # never into paho's thread
            log.exception("wifi label simulator: handling %s failed", msg.topic)

    def _on_led(self, tag: bytes, payload: bytes) -> None:
        try:
            body = json.loads(payload)
            record = LedRecord(int(body["colour"]), int(body["count"]), int(body["period_ms"]), time.monotonic())
        except (ValueError, KeyError, TypeError):
            with self._lock:
                self._counters.bad_led += 1
            return
        with self._lock:
            label = self._labels[tag]
            if label.asleep:
                return
            label.leds.append(record)
            self._counters.led_flashes += 1

    def _on_picture(self, tag: bytes, payload: bytes) -> None:
        if not payload:
            with self._lock:
                self._counters.cleared_seen += 1  # the agent cleared the retained picture
            return
        try:
            message = PictureMessage.from_bytes(payload)
        except PictureMessageError as exc:
            log.info("wifi label simulator: %s: unusable picture message: %s", tag.hex(), exc)
            with self._lock:
                self._counters.bad_pictures += 1
            return
        with self._lock:
            label = self._labels[tag]
            if label.asleep:
                return
            self._counters.pictures_received += 1
            error = None if label.hash == message.hash else self._apply(label, message)
            if error is None:
                self._counters.results_ok += 1
                reported = label.hash
                if label.misreport > 0:
                    label.misreport -= 1
                    reported = bytes(b ^ 0xFF for b in reported)
                body: dict[str, Any] = {"xfer": message.xfer, "hash": reported.hex()}
            else:
                self._counters.results_error[error] = self._counters.results_error.get(error, 0) + 1
                body = {"xfer": message.xfer, "error": error}
        self._publish(self._topic(tag, "result"), json.dumps(body).encode())

    def _apply(self, label: _Label, message: PictureMessage) -> str | None:
        """Decode and show a picture; returns the error to report, or None when shown."""
        if message.raw_len != label.spec.type.raw_bytes:
            return "bad_encoding"
        base: bytes | None = None
        if message.encoding == Encoding.DELTA_ZLIB:
            if message.base_hash != label.hash:
                return "base_unknown"
            base = label.picture
        try:
            raw = decode_picture(message.encoding, message.data, message.raw_len, base, base_hash=message.base_hash)
        except PictureError as exc:
            log.info("wifi label simulator: %s: %s", label.spec.tag.hex(), exc)
            return "bad_encoding"
        if picture_hash(raw) != message.hash:
            return "hash_mismatch"
        label.picture = raw
        label.hash = message.hash
        label.shown += 1
        self._counters.pictures_shown += 1
        return None


def run_wifi_labels(host: str, port: int, prefix: str, count: int, seed: int, *, checkin_interval: float = 30.0) -> int:
    """`edge-agent simulate wifi-labels`: run `count` labels until SIGTERM or SIGINT; the exit code."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        simulator = WifiLabelSimulator(
            host, port, wifi_label_mix(count, seed), prefix=prefix, checkin_interval=checkin_interval, seed=seed
        )
        simulator.start()
    except (ValueError, SimulatorError) as exc:
        log.error("wifi label simulator: %s", exc)
        return 1
    for tag in simulator.tags:
        print(f"label {tag.hex()} {simulator.tag_type(tag).name}", flush=True)
    try:
        while not stop.wait(60.0):
            c = simulator.counters()
            log.info("wifi label simulator: %d check-ins, %d pictures shown, %d errors, %d LED flashes",
                     c.checkins, c.pictures_shown, sum(c.results_error.values()), c.led_flashes)
    finally:
        simulator.stop()
    return 0
