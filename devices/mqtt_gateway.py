"""Wi-Fi devices on the in-store broker: their state, telemetry and events, relayed to the agent.

Topics (docs/mqtt-devices.md), under `local_broker.topic_prefix` (default `store/v1`):
- `devices/{device_id}/state`      JSON object: the device's latest state (kept per device, retained upstream)
- `devices/{device_id}/telemetry`  JSON object of readings: a `telemetry.device` event
- `devices/{device_id}/event`      JSON object `{"kind": "...", "data": {...}}`: a `device.event` event

A device can never name an event type of its own: it cannot fake an order or a pickup upstream.
Malformed messages are counted and logged, never relayed and never fatal. A message is acknowledged
to the broker (QoS 1) only after the agent stored what it carried, so a crash loses nothing: the
session is persistent, and when storage refuses a message (outbox full) the gateway drops the
connection, forgets what it had queued, and lets the broker deliver it all again a little later.
Retained telemetry and events are ignored (they would be relayed again on every reconnect); a retained
state is fine, state is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cloud_link.mqtt_driver import Endpoint, Message, MqttConnection, MqttError
from cloud_link.mqtt_driver import Protocol as MqttProtocol
from cloud_link.session import backoff_delay
from cloud_link.strict_json import StrictJsonError, loads_strict

log = logging.getLogger(__name__)

DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
KIND_RE = re.compile(r"^[a-z][a-z0-9_.]{0,39}$")


class DeviceSink(Protocol):
    """Where relayed device data goes (the agent's event bus)."""

    async def publish_event(self, event_type: str, payload: dict[str, Any]) -> None: ...

    async def put_state(self, device_id: str, state: dict[str, Any]) -> None: ...

    def bad_input(self, source: str, reason: str) -> None: ...


class DeviceMessageError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class DeviceMessage:
    device_id: str
    channel: str
    body: dict[str, Any]


def parse_device_message(prefix: str, topic: str, payload: bytes, max_bytes: int) -> DeviceMessage:
    """Validate one in-store message; raises DeviceMessageError with a counted reason."""
    parts = topic.split("/")
    base = prefix.split("/")
    if parts[: len(base)] != base or len(parts) != len(base) + 3 or parts[len(base)] != "devices":
        raise DeviceMessageError("bad_topic", f"unexpected topic {topic!r}")
    device_id, channel = parts[len(base) + 1], parts[len(base) + 2]
    if not DEVICE_ID_RE.fullmatch(device_id):
        raise DeviceMessageError("bad_device_id", f"invalid device id {device_id!r}")
    if channel not in ("state", "telemetry", "event"):
        raise DeviceMessageError("bad_topic", f"unknown channel {channel!r}")
    if len(payload) > max_bytes:
        raise DeviceMessageError("too_large", f"{len(payload)} bytes, the limit is {max_bytes}")
    try:
        body = loads_strict(payload)
    except StrictJsonError as exc:
        raise DeviceMessageError("malformed_json", f"not valid UTF-8 JSON: {exc}") from None
    if not isinstance(body, dict):
        raise DeviceMessageError("not_object", f"expected a JSON object, got {type(body).__name__}")
    if channel == "event":
        kind = body.get("kind")
        if not isinstance(kind, str) or not KIND_RE.fullmatch(kind):
            raise DeviceMessageError("bad_event", "event needs 'kind': lowercase words, at most 40 characters")
        data = body.get("data", {})
        if not isinstance(data, dict):
            raise DeviceMessageError("bad_event", "event 'data' must be a JSON object")
    return DeviceMessage(device_id, channel, body)


class MqttDeviceGateway:
    def __init__(
        self,
        endpoint: Endpoint,
        sink: DeviceSink,
        *,
        topic_prefix: str = "store/v1",
        max_message_bytes: int = 16384,
        backoff_min: float = 1.0,
        backoff_max: float = 30.0,
    ) -> None:
        self.endpoint = endpoint
        self.sink = sink
        self.prefix = topic_prefix
        self.max_message_bytes = max_message_bytes
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.relayed = 0
        self.rejected = 0
        self.connected = False
        self._queue: asyncio.Queue[tuple[Message, Callable[[], None]]] = asyncio.Queue(1000)
        self._conn: MqttConnection | None = None
        # Set after storage refused a message: wait this long before asking for redelivery.
        self._pause_s = 0.0

    async def run(self) -> None:
        """Stay connected to the in-store broker and relay until cancelled."""
        worker = asyncio.create_task(self._relay_loop(), name="device-relay")
        try:
            attempt = 0
            while True:
                conn = MqttConnection(self.endpoint, MqttProtocol.V311, on_message=self._enqueue, max_inflight=20)
                try:
                    await conn.connect()
                    await conn.subscribe(f"{self.prefix}/devices/+/+", qos=1)
                except MqttError as exc:
                    conn.abort("connect failed")
                    delay = backoff_delay(attempt, self.backoff_min, self.backoff_max)
                    attempt += 1
                    log.warning("in-store broker unavailable (%s); retrying in %.1f s", exc, delay)
                    await asyncio.sleep(delay)
                    continue
                attempt = 0
                self._conn = conn
                self.connected = True
                log.info("in-store broker connected at %s:%d", self.endpoint.host, self.endpoint.port)
                try:
                    reason = await asyncio.shield(conn.closed)
                    log.warning("in-store broker connection lost: %s", reason)
                finally:
                    self.connected = False
                    self._conn = None
                    conn.abort("gateway stopping")
                if self._pause_s:
                    await asyncio.sleep(self._pause_s)
                    self._pause_s = 0.0
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    def _enqueue(self, message: Message) -> None:
        if message.retain and not message.topic.endswith("/state"):
            log.debug("ignoring retained %s", message.topic)
            message.ack()
            return
        try:
            self._queue.put_nowait((message, message.ack))
        except asyncio.QueueFull:
            self._ask_for_redelivery("relay queue full", pause_s=1.0)

    def _ask_for_redelivery(self, reason: str, pause_s: float) -> None:
        """Drop the connection and what is queued: unacknowledged, the broker delivers it again."""
        log.warning("in-store relay paused (%s): the broker will deliver unacknowledged messages again", reason)
        while not self._queue.empty():
            self._queue.get_nowait()
        self._pause_s = pause_s
        if self._conn is not None:
            self._conn.abort(reason)

    async def _relay_loop(self) -> None:
        while True:
            message, ack = await self._queue.get()
            try:
                await self.relay(message.topic, message.payload)
            except Exception as exc:
                # Storage refused it (outbox full, disk error): not acknowledged, offered again later.
                log.error("could not store a device message from %s: %s", message.topic, exc)
                self._ask_for_redelivery(f"storage refused: {exc}", pause_s=5.0)
                continue
            ack()

    async def relay(self, topic: str, payload: bytes) -> bool:
        """Relay one message; returns False (counted, logged) when it was rejected as bad input."""
        try:
            msg = parse_device_message(self.prefix, topic, payload, self.max_message_bytes)
        except DeviceMessageError as exc:
            self.rejected += 1
            self.sink.bad_input("device", exc.reason)
            log.warning("rejected device message on %s: %s", topic, exc)
            return False
        if msg.channel == "state":
            await self.sink.put_state(msg.device_id, msg.body)
        elif msg.channel == "telemetry":
            await self.sink.publish_event("telemetry.device", {"device_id": msg.device_id, "readings": msg.body})
        else:
            await self.sink.publish_event(
                "device.event",
                {"device_id": msg.device_id, "kind": msg.body["kind"], "data": msg.body.get("data", {})},
            )
        self.relayed += 1
        return True
