"""Wi-Fi devices on the in-store broker (kiosks, tablets, handheld scanners): the agent's side.

Topics (docs/mqtt-devices.md), under `local_broker.topic_prefix` (default `store/v1`):
- `devices/{id}/announce`      retained JSON: what the device is (kind, model, fw, capabilities, kiosk_id)
- `devices/{id}/availability`  retained `online` / `offline` (the device's Last Will sets `offline`)
- `devices/{id}/state`         retained JSON object: the device's own state
- `devices/{id}/telemetry`     JSON object of readings: a `telemetry.device` event
- `devices/{id}/event`         `{"kind", "data"}`: a scan goes to its kiosk's cart (or `scan.device`),
                               a tap is `device.tap`, anything else `device.event`
- `devices/{id}/cmd`           agent -> device: reboot, reload, show_message
- `agent/availability`, `agent/state`: the agent's own, retained, with a Last Will

Announce, availability and state become the device's state upstream, coalesced (devices.mqtt.coalesce).
A device can never name an event type of its own: it cannot fake an order or a pickup upstream.
Malformed messages are counted, logged once per device per minute, never relayed and never fatal.

An event is acknowledged to the broker (QoS 1) only after the agent stored what it carried, so a crash
loses nothing: the session is persistent. What arrives waits in the intake; past INTAKE_HIGH messages the
connection is not read until the intake is down to INTAKE_LOW, so a burst of any size (a persistent
session's backlog after a restart) waits in TCP's buffers and at the broker instead of being dropped, and
no reconnect is needed to slow the broker down. The intake is stored in batches, devices side by side and
each device's messages in order, so one commit serves many messages (group commit). When storage refuses a
message (outbox full) the gateway drops that connection, forgets what it had queued from it, and lets the
broker deliver it all again a little later.
Announce, availability and state are acknowledged once in memory: they are retained at the broker and
come back on every subscription. Retained telemetry and events are ignored (they would be relayed again
on every reconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cloud_link.ports import StateSink
from devices.mqtt.broker_drops import SYS_DROPPED_TOPIC, BrokerDrops, parse_count
from devices.mqtt.coalesce import StateCoalescer
from devices.mqtt.messages import (
    COMMAND_CHANNEL,
    DEVICE_ID_RE,
    KIND_RE,
    RETAINED_CHANNELS,
    DeviceMessage,
    DeviceMessageError,
    EventBody,
    ScanData,
    TapData,
    parse_device_message,
)
from devices.mqtt.ratelog import RateLimitedLog
from devices.mqtt.registry import DeviceRecord, DeviceRegistry
from mqtt_io.driver import Endpoint, Message, MqttConnection, MqttError, Will
from mqtt_io.driver import Protocol as MqttProtocol
from mqtt_io.flow import IntakeFlow
from mqtt_io.reconnect import keep_connected

__all__ = [
    "BAD_INPUT_SOURCE",
    "DEVICE_ID_RE",
    "KIND_RE",
    "DeviceCommandError",
    "DeviceMessageError",
    "DeviceSink",
    "MqttDeviceGateway",
    "parse_device_message",
]

log = logging.getLogger(__name__)

BAD_INPUT_SOURCE = "mqtt_device"
# Messages waiting to be stored: at INTAKE_HIGH the connection stops being read, at INTAKE_LOW it is read
# again. Bounded memory (at most INTAKE_HIGH x max_message_bytes) and never a dropped message.
INTAKE_HIGH = 1000
INTAKE_LOW = 250
# Messages stored together, in one transaction where they go to the outbox.
BATCH_MAX = 256
# Scan handler for kiosk-bound devices: (kiosk_id, code, source) -> whatever the kiosk answers.
ScanHandler = Callable[[str, str, str], Awaitable[object]]
StaffScanHandler = Callable[[str, str], Awaitable[bool]]


class DeviceSink(StateSink, Protocol):
    """Where relayed device data goes (the agent's event bus): events, device state, and events made from an MQTT
    message, stored with its dedup key."""

    async def publish_from_message(
        self, event_type: str, payload: dict[str, Any], key: str, *, redelivered: bool
    ) -> bool:
        """Store an event made from an MQTT message with its stable key (the payload carries it as
        `msg_key`); False when the message was redelivered and its key is stored already."""
        ...

    def bad_input(self, source: str, reason: str) -> None: ...


@dataclass(frozen=True)
class MessageKey:
    """What identifies one device message across the broker's deliveries of it (cloud contract 2.9).

    A QoS 1 message comes again with the same packet id and bytes after a reconnect, so its key hashes the
    topic, the packet id and the payload; the broker numbers one session's messages with 65,535 ids in
    turn, so the key is unique among that many messages in a row. A QoS 0 message is never delivered
    again: its key is random. `redelivered` is the broker's DUP flag."""

    value: str
    redelivered: bool = False

    @classmethod
    def of(cls, topic: str, payload: bytes, mid: int = 0, qos: int = 0, dup: bool = False) -> MessageKey:
        if qos == 0:
            return cls(secrets.token_hex(12))
        digest = hashlib.sha256(f"{topic}\n{mid}\n".encode())
        digest.update(payload)
        return cls(digest.hexdigest()[:24], dup)


class DeviceCommandError(Exception):
    """A command could not be handed to a device; `code` is the cloud-facing error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class MqttDeviceGateway:
    def __init__(
        self,
        endpoint: Endpoint,
        sink: DeviceSink,
        *,
        topic_prefix: str = "store/v1",
        max_message_bytes: int = 16384,
        backoff_min: float = 0.2,
        backoff_max: float = 2.0,
        registry: DeviceRegistry | None = None,
        coalesce_s: float = 1.0,
        agent_state: dict[str, Any] | None = None,
        on_scan: ScanHandler | None = None,
        log_interval_s: float = 60.0,
        save_interval_s: float = 5.0,
    ) -> None:
        self.prefix = topic_prefix
        self.agent_topic = f"{topic_prefix}/agent"
        # The broker announces our death: a retained "offline" on the agent's availability topic.
        self.endpoint = dataclasses.replace(
            endpoint, will=Will(f"{self.agent_topic}/availability", b"offline", qos=1, retain=True)
        )
        self.sink = sink
        self.max_message_bytes = max_message_bytes
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.registry = registry if registry is not None else DeviceRegistry()  # an empty one is falsy
        self.states = StateCoalescer(sink.put_state, coalesce_s)
        self.agent_state = agent_state or {}
        self.on_scan = on_scan
        # Staff scanners (picking): handhelds bound to no kiosk, and the devices named in `staff_scanners`. Their
        # scans go to `on_staff_scan(device_id, code)` first; True means it took the scan.
        self.on_staff_scan: StaffScanHandler | None = None
        self.staff_scanners: frozenset[str] = frozenset()
        self.save_interval_s = save_interval_s
        self._bad_log = RateLimitedLog(log_interval_s)
        self.relayed = 0
        self.duplicates = 0  # redeliveries of messages stored before their PUBACK went out
        self.rejected = 0
        self.ignored = 0
        self.connected = False
        self.down_since: float | None = time.monotonic()  # not connected since (None: connected)
        self.connections = 0
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._flow = IntakeFlow("in-store intake", INTAKE_HIGH, INTAKE_LOW)
        # What the broker itself dropped (its queue limits): reported upstream, never silent.
        self.drops = BrokerDrops(sink.publish_event, self.registry.store)
        self._drop_count: int | None = None
        self._drop_seen = asyncio.Event()
        self._drops_unreadable_logged = False
        self._conn: MqttConnection | None = None
        self._acks: dict[int, asyncio.Future[None]] = {}
        # Set after storage refused a message: wait this long before asking for redelivery.
        self._pause_s = 0.0

    async def run(self) -> None:
        """Stay connected to the in-store broker and relay until cancelled."""
        worker = asyncio.create_task(self._relay_loop(), name="device-relay")
        states = asyncio.create_task(self.states.run(), name="device-states")
        saver = asyncio.create_task(self._save_registry(), name="device-registry")
        drops = asyncio.create_task(self._report_drops(), name="broker-drops")
        try:
            # A short backoff cap (local_broker.reconnect_max_s): the broker is on this box, and after it
            # restarts the agent must be back, announced, within seconds.
            await keep_connected(
                self._open,
                self._serve,
                backoff_min=self.backoff_min,
                backoff_max=self.backoff_max,
                what="in-store broker",
                logger=log,
            )
        finally:
            for task in (worker, states, saver, drops):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _open(self) -> MqttConnection:
        """A new connection, connected, subscribed and announced (the agent's retained availability)."""
        conn = MqttConnection(
            self.endpoint, MqttProtocol.V311, on_message=self._enqueue, on_ack=self._on_ack, max_inflight=20
        )
        try:
            await conn.connect()
            await conn.subscribe(f"{self.prefix}/devices/+/+", qos=1)
            await self._watch_broker_drops(conn)
            self._publish_agent(conn, online=True)
        except BaseException:  # a failure (retried by keep_connected) or a cancel: no half-open connection left
            conn.abort("connect failed")
            raise
        return conn

    async def _serve(self, conn: MqttConnection) -> None:
        """Relay while `conn` is up; once lost, fail what waits for its PUBACKs, and once cancelled say goodbye.
        After storage refused a message, wait `_pause_s` before the broker is asked to deliver it again."""
        self._conn = conn
        self.connected = True
        self.down_since = None
        self.connections += 1
        log.info("in-store broker connected at %s:%d", self.endpoint.host, self.endpoint.port)
        try:
            reason = await asyncio.shield(conn.closed)
            log.warning("in-store broker connection lost: %s", reason)
        finally:
            self.connected = False
            self.down_since = time.monotonic()
            self._conn = None
            self._flow.forget()
            self._fail_acks(f"connection lost: {conn.closed.result() if conn.closed.done() else 'stopping'}")
            if not conn.closed.done():
                await self._say_goodbye(conn)
            conn.abort("gateway stopping")
        if self._pause_s:
            await asyncio.sleep(self._pause_s)
            self._pause_s = 0.0

    async def _save_registry(self) -> None:
        """The registry to SQLite, written behind (devices.mqtt.registry); once more when stopping."""
        try:
            while True:
                await asyncio.sleep(self.save_interval_s)
                try:
                    await self.registry.save()
                except Exception as exc:  # disk trouble: the registry stays in memory and is tried again
                    log.error("could not save the device registry: %s", exc)
        finally:
            with contextlib.suppress(Exception):
                await self.registry.save()

    def _publish_agent(self, conn: MqttConnection, *, online: bool) -> None:
        """The agent's own retained availability (and state): republished on every connection."""
        conn.publish(f"{self.agent_topic}/availability", b"online" if online else b"offline", qos=1, retain=True)
        if online:
            body = json.dumps(self.agent_state, separators=(",", ":"), sort_keys=True).encode()
            conn.publish(f"{self.agent_topic}/state", body, qos=1, retain=True)

    async def _say_goodbye(self, conn: MqttConnection) -> None:
        """On a clean stop: retained `offline`, then DISCONNECT (which suppresses the Will)."""
        with contextlib.suppress(MqttError, OSError):
            self._publish_agent(conn, online=False)
            await asyncio.shield(conn.disconnect(1.0))

    # -- incoming ------------------------------------------------------------------------------

    async def _watch_broker_drops(self, conn: MqttConnection) -> None:
        try:
            await conn.subscribe(SYS_DROPPED_TOPIC, qos=0)
        except MqttError as exc:
            if not conn.is_open:
                raise
            # A broker whose ACL hides $SYS: everything else works; say once what cannot be seen.
            if not self._drops_unreadable_logged:
                self._drops_unreadable_logged = True
                log.warning("the in-store broker does not let the agent read %s (%s): messages it drops for lack "
                            "of room cannot be reported", SYS_DROPPED_TOPIC, exc)

    async def _report_drops(self) -> None:
        while True:
            await self._drop_seen.wait()
            self._drop_seen.clear()
            if self._drop_count is None:
                continue
            try:
                await self.drops.observed(self._drop_count)
            except Exception as exc:  # the outbox refused the alarm: the next reading tries again
                log.error("could not report the in-store broker's dropped messages: %s", exc)
                await asyncio.sleep(5.0)
                self._drop_seen.set()

    def _enqueue(self, message: Message) -> None:
        if message.topic == SYS_DROPPED_TOPIC:
            count = parse_count(message.payload)
            if count is not None:
                self._drop_count = count
                self._drop_seen.set()
            return
        channel = message.topic.rsplit("/", 1)[-1]
        if channel == COMMAND_CHANNEL:
            message.ack()  # our own command, back through the wildcard subscription
            return
        if message.retain and channel not in RETAINED_CHANNELS:
            log.debug("ignoring retained %s", message.topic)
            message.ack()
            return
        self._queue.put_nowait(message)
        self._flow.arrived(self._queue.qsize(), message.connection)

    @property
    def intake_pauses(self) -> int:
        """How often the intake was long enough to stop reading the broker."""
        return self._flow.pauses

    def _take_batch(self, first: Message) -> list[Message]:
        """Up to BATCH_MAX queued messages, less those of a closed connection (the broker sends them again:
        storing them now would relay them twice); reading resumes once the intake is low."""
        batch = [first]
        while len(batch) < BATCH_MAX and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        self._flow.taken(self._queue.qsize())
        return [m for m in batch if m.qos == 0 or m.connection is None or not m.connection.closed.done()]

    async def _relay_loop(self) -> None:
        while True:
            batch = self._take_batch(await self._queue.get())
            if batch:
                await self._store_batch(batch)

    async def _store_batch(self, batch: list[Message]) -> None:
        """Relay a batch: each device's messages in order, devices side by side (so their events share a
        commit), then acknowledge what was stored, in the order it arrived. A message storage refused is not
        acknowledged, nor are the later ones of its device: its connection is dropped for the broker to
        deliver them again."""
        by_device: dict[str, list[int]] = {}
        for index, message in enumerate(batch):
            by_device.setdefault(message.topic.rpartition("/")[0], []).append(index)
        stored = [False] * len(batch)
        refused: list[tuple[Message, Exception]] = []

        async def relay_in_order(indices: list[int]) -> None:
            for index in indices:
                message = batch[index]
                try:
                    key = MessageKey.of(message.topic, message.payload, message.mid, message.qos, message.dup)
                    await self.relay(message.topic, message.payload, key)
                except (ValueError, TypeError) as exc:
                    # The message itself cannot be stored (e.g. an event the outbox refuses as too large):
                    # offered again it would fail again, for ever. Counted, logged, acknowledged.
                    self.rejected += 1
                    self.sink.bad_input(BAD_INPUT_SOURCE, "unprocessable")
                    log.error("device message on %.200r could not be relayed: %s", message.topic, exc)
                except Exception as exc:
                    # Storage refused it (outbox full, disk error): not acknowledged, offered again later.
                    refused.append((message, exc))
                    return
                stored[index] = True

        if len(by_device) == 1:
            await relay_in_order(next(iter(by_device.values())))
        else:
            await asyncio.gather(*(relay_in_order(indices) for indices in by_device.values()))
        for index, message in enumerate(batch):
            if stored[index]:
                message.ack()
        if refused:
            message, exc = refused[0]
            log.error("could not store %d device message(s), the first from %s: %s", len(refused), message.topic, exc)
            connections = {m.connection for m, _ in refused if m.connection is not None}
            self._ask_for_redelivery(connections, f"storage refused: {exc}", pause_s=5.0)

    def _ask_for_redelivery(self, connections: set[MqttConnection], reason: str, pause_s: float) -> None:
        """Drop the connections: what they delivered and nobody acknowledged, the broker delivers again (and
        what is still queued from them is dropped as it is taken)."""
        log.warning("in-store relay paused (%s): the broker will deliver unacknowledged messages again", reason)
        self._pause_s = max(self._pause_s, pause_s)
        for conn in connections:
            conn.abort(reason)

    async def relay(self, topic: str, payload: bytes, key: MessageKey | None = None) -> bool:
        """Handle one message; returns False (counted, logged) when it was rejected as bad input. `key`
        identifies it across the broker's deliveries (a random one when not given)."""
        key = key or MessageKey.of(topic, payload)
        try:
            msg = parse_device_message(self.prefix, topic, payload, self.max_message_bytes)
        except DeviceMessageError as exc:
            self._reject(topic, exc)
            return False
        record = self.registry.seen(msg.device_id)
        if msg.channel in RETAINED_CHANNELS:
            self._update_state(record, msg)
        if not record.adopted:
            self.ignored += 1
            log.debug("not relaying %s from %s: the device is not adopted", msg.channel, msg.device_id)
            return True
        if msg.channel in RETAINED_CHANNELS:
            pass
        elif msg.channel == "telemetry":
            await self._publish(key, "telemetry.device", {"device_id": msg.device_id, "readings": msg.body})
        else:
            await self._relay_event(record, msg.body, msg.detail, key)
        self.relayed += 1
        return True

    async def _publish(self, key: MessageKey, event_type: str, payload: dict[str, Any]) -> None:
        payload["msg_key"] = key.value
        if not await self.sink.publish_from_message(event_type, payload, key.value, redelivered=key.redelivered):
            self.duplicates += 1
            log.info("%s from %s: the broker delivered it again after it was stored; not stored twice",
                     event_type, payload.get("device_id"))

    def _reject(self, topic: str, exc: DeviceMessageError) -> None:
        self.rejected += 1
        self.sink.bad_input(BAD_INPUT_SOURCE, exc.reason)
        # One line per device per minute; messages with no usable device id share one key.
        suppressed = self._bad_log.allow(exc.device_id or "?")
        if suppressed is not None:
            more = f" ({suppressed} more from it since the last report)" if suppressed else ""
            log.warning("rejected device message on %.200r: %s: %s%s", topic, exc.reason, exc, more)

    def _update_state(self, record: DeviceRecord, msg: DeviceMessage) -> None:
        if msg.channel == "announce":
            record.announce = msg.body
        elif msg.channel == "availability":
            if not self.registry.set_online(record, msg.body):
                return  # the same again (a retained copy on re-subscribing): nothing new upstream
        else:
            record.state = msg.body
        if record.adopted:
            self.states.update(record.device_id, record.cloud_state())

    async def _relay_event(
        self, record: DeviceRecord, event: EventBody, detail: ScanData | TapData | None, key: MessageKey
    ) -> None:
        device_id = record.device_id
        if isinstance(detail, ScanData):
            kiosk_id = record.kiosk_id
            staff = kiosk_id is None or device_id in self.staff_scanners
            if staff and self.on_staff_scan is not None:
                try:
                    if await self.on_staff_scan(device_id, detail.code):
                        return
                except Exception:
                    log.exception("the staff scan of %s failed; relaying it as scan.device", device_id)
            if kiosk_id is not None and self.on_scan is not None:
                try:
                    await self.on_scan(kiosk_id, detail.code, f"device:{device_id}")
                    return
                except Exception as exc:
                    # The scan must not vanish: the cloud gets it as an unbound scan instead.
                    log.error("kiosk %s did not take the scan of %s (%s); sending it as scan.device",
                              kiosk_id, device_id, exc)
            await self._publish(
                key, "scan.device", {"device_id": device_id, "code": detail.code, "symbology": detail.symbology}
            )
        elif isinstance(detail, TapData):
            await self._publish(key, "device.tap", {"device_id": device_id, "target": detail.target})
        else:
            await self._publish(key, "device.event", {"device_id": device_id, "kind": event.kind, "data": event.data})

    def adopt(self, device_id: str) -> bool:
        """Adopt a discovered device (the technician UI's explicit choice); False if no such device was heard.
        Its state goes to the cloud at once; what it sent before adoption stays unrelayed."""
        record = self.registry.adopt(device_id)
        if record is None:
            return False
        self.states.update(device_id, record.cloud_state())
        return True

    # -- commands to devices ------------------------------------------------------------------

    async def send_command(self, device_id: str, command: dict[str, Any], timeout: float = 5.0) -> None:
        """Publish a command on the device's `cmd` topic (QoS 1, not retained) and wait for the broker's
        PUBACK. Raises DeviceCommandError: unknown_device, not_adopted, device_offline, broker_unavailable."""
        if not DEVICE_ID_RE.fullmatch(device_id):
            raise DeviceCommandError("unknown_device", f"invalid device id {device_id!r}")
        record = self.registry.get(device_id)
        if record is None:
            raise DeviceCommandError("unknown_device", f"no device {device_id} has been heard on the in-store broker")
        if not record.adopted:
            raise DeviceCommandError("not_adopted", f"device {device_id} is discovered but not adopted")
        if record.online is False:
            raise DeviceCommandError("device_offline", f"device {device_id} is offline")
        conn = self._conn
        if conn is None or not conn.is_open:
            raise DeviceCommandError("broker_unavailable", "the agent is not connected to the in-store broker")
        body = json.dumps(command, separators=(",", ":"), ensure_ascii=False).encode()
        try:
            mid = conn.publish(f"{self.prefix}/devices/{device_id}/{COMMAND_CHANNEL}", body, qos=1)
        except MqttError as exc:
            raise DeviceCommandError("broker_unavailable", str(exc)) from None
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks[mid] = done
        try:
            await asyncio.wait_for(done, timeout)
        except TimeoutError:
            raise DeviceCommandError(
                "broker_unavailable", f"the broker did not acknowledge within {timeout} s"
            ) from None
        except MqttError as exc:
            raise DeviceCommandError("broker_unavailable", str(exc)) from None
        finally:
            self._acks.pop(mid, None)

    def _on_ack(self, mid: int, ok: bool, reason: str) -> None:
        done = self._acks.get(mid)
        if done is None or done.done():
            return  # our own retained availability/state
        if ok:
            done.set_result(None)
        else:
            done.set_exception(MqttError(f"broker refused the command: {reason}"))

    def _fail_acks(self, reason: str) -> None:
        for done in self._acks.values():
            if not done.done():
                done.set_exception(MqttError(reason))
