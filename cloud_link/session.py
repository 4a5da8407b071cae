"""The MQTT session to the cloud: connect, resend, publish in order, reconnect forever.

- The reconnect loop (mqtt_io.reconnect) connects with full-jitter backoff (1 s growing to 60 s), MQTT 5
  first and 3.1.1 when the broker rejects 5 (with `protocol = "auto"`).
- On connect: retained `online` status (the Last Will says `offline`), subscribe to commands, then the
  publisher sends the outbox from its oldest event, QoS 1, strictly in `seq` order, at most
  `inflight_window` unacknowledged. An event leaves the outbox only on a successful PUBACK.
- A connection on which PUBACKs stop coming (a dead network under a live TCP socket) is dropped after
  `ack_timeout`; paho's own keepalive check drops one whose PINGRESP does not come.
- Device state is published retained on `state/{device_id}`, latest revision only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol as TypingProtocol

from cloud_link.events import format_ts, now_ms
from cloud_link.outbox import Outbox
from cloud_link.topics import Topics
from mqtt_io.driver import (
    ConnectRefusedError,
    Endpoint,
    Message,
    MqttConnection,
    MqttError,
    Protocol,
    Will,
)
from mqtt_io.reconnect import keep_connected

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionSettings:
    endpoint: Endpoint
    protocol: Protocol = Protocol.AUTO
    inflight_window: int = 100
    backoff_min: float = 1.0
    backoff_max: float = 60.0
    # No PUBACK for this long while messages are in flight: the link is dead, reconnect.
    ack_timeout: float = 60.0
    agent_version: str = "0"


class LinkObserver(TypingProtocol):
    def connected(self, up: bool) -> None: ...

    def reconnected(self) -> None: ...

    def acknowledged(self, count: int) -> None: ...


class _NullLinkObserver:
    def connected(self, up: bool) -> None:
        pass

    def reconnected(self) -> None:
        pass

    def acknowledged(self, count: int) -> None:
        pass


def status_payload(status: str, topics: Topics, boot: int, version: str, reason: str | None = None) -> bytes:
    body: dict[str, object] = {
        "v": 1,
        "status": status,
        "store_id": topics.store_id,
        "boot": boot,
        "ts": format_ts(now_ms()),
        "agent_version": version,
    }
    if reason:
        body["reason"] = reason
    return json.dumps(body, separators=(",", ":")).encode()


class CloudSession:
    def __init__(
        self,
        settings: SessionSettings,
        outbox: Outbox,
        *,
        on_command: Callable[[Message, Callable[[], None]], None] | None = None,
        observer: LinkObserver | None = None,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.topics = outbox.topics
        self._on_command = on_command
        self._observer: LinkObserver = observer or _NullLinkObserver()
        self._conn: MqttConnection | None = None
        self._stopping = asyncio.Event()
        self._inflight: dict[int, tuple[int, float]] = {}  # mid -> (seq, monotonic time sent)
        self._inflight_states: dict[int, tuple[str, int]] = {}  # mid -> (device_id, rev)
        # Acknowledged states whose `sent_rev` is still being written: not to be read and sent again.
        self._recording_states: set[str] = set()
        self._last_sent_seq = 0
        self._acked: list[int] = []
        self._ack_flushes: set[asyncio.Task[int]] = set()
        self._status_acks: dict[int, asyncio.Future[bool]] = {}
        # What the next connection speaks: MQTT 5 first with "auto", until the broker rejects it.
        self._protocol = Protocol.V5 if settings.protocol is Protocol.AUTO else settings.protocol
        self.protocol_in_use: Protocol | None = None
        self.last_ack_ms: int | None = None
        self.connects = 0
        # True while connected and subscribed to the command topic.
        self.subscribed = False

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.is_open

    # -- supervisor ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Keep a connection up until `request_stop()`; never raises for network trouble."""
        await keep_connected(
            self._open,
            self._serve,
            backoff_min=self.settings.backoff_min,
            backoff_max=self.settings.backoff_max,
            what="cloud broker",
            logger=log,
            stopping=self._stopping,
            # A remote broker (or the network to it) that just dropped us gets one backoff before we try again.
            backoff_after_loss=True,
        )
        await self._drain_ack_flushes()

    async def _open(self) -> MqttConnection:
        """A connected connection: MQTT 5 first with `protocol = "auto"`, and 3.1.1 at once (no backoff) when
        the broker rejects 5; the fallback holds for the rest of this session."""
        while True:
            conn = self._new_connection(self._protocol)
            try:
                await conn.connect()
            except ConnectRefusedError as exc:
                if (exc.protocol_rejected and self.settings.protocol is Protocol.AUTO
                        and self._protocol is Protocol.V5 and not self._stopping.is_set()):
                    log.warning("cloud broker rejected MQTT 5 (%s): falling back to MQTT 3.1.1", exc.reason)
                    self._protocol = Protocol.V311
                    continue
                raise
            return conn

    def _new_connection(self, protocol: Protocol) -> MqttConnection:
        ep = self.settings.endpoint
        will = Will(
            self.topics.status,
            status_payload("offline", self.topics, self.outbox.boot, self.settings.agent_version, "connection lost"),
        )
        return MqttConnection(
            dataclasses.replace(ep, will=will),
            protocol,
            on_message=self._on_message,
            on_ack=self._on_ack,
            on_lost=lambda reason: self.outbox.changed.set(),
            max_inflight=self.settings.inflight_window,
        )

    async def _serve(self, conn: MqttConnection) -> None:
        # Deletions of rows acknowledged on the previous connection must land first, or they would
        # be read and sent again.
        await self._drain_ack_flushes()
        self._inflight.clear()
        self._inflight_states.clear()
        self._last_sent_seq = 0
        self._conn = conn
        self.protocol_in_use = conn.protocol
        self.connects += 1
        if self.connects > 1:
            self._observer.reconnected()
        self._observer.connected(True)
        log.info(
            "cloud link up: %s:%d over MQTT %s", conn.endpoint.host, conn.endpoint.port, conn.protocol.value
        )
        try:
            # Subscribe first: `online` tells the cloud that commands will be heard.
            await conn.subscribe(self.topics.commands, qos=1)
            self.subscribed = True
            conn.publish(
                self.topics.status,
                status_payload("online", self.topics, self.outbox.boot, self.settings.agent_version),
                qos=1,
                retain=True,
            )
            # Both end by themselves when the connection closes or a stop is requested.
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._publish_loop(conn), name="cloud-publisher")
                tg.create_task(self._ack_watchdog(conn), name="cloud-ack-watchdog")
        except MqttError as exc:
            log.warning("cloud link lost: %s", exc)
        finally:
            self.subscribed = False
            self._observer.connected(False)
            self._conn = None
            if self._stopping.is_set() and conn.is_open:
                await self._say_goodbye(conn)
            else:
                conn.abort("connection lost")
                reason = conn.closed.result() if conn.closed.done() else "lost"
                log.warning("cloud link down: %s; %d unacknowledged events will be resent", reason,
                            len(self._inflight))

    async def _publish_loop(self, conn: MqttConnection) -> None:
        window = self.settings.inflight_window
        changed = self.outbox.changed
        while conn.is_open and not self._stopping.is_set():
            changed.clear()
            room = window - len(self._inflight) - len(self._inflight_states)
            try:
                if room > 0:
                    now = time.monotonic()
                    for msg in self.outbox.read_events(self._last_sent_seq, room):
                        mid = conn.publish(msg.topic, msg.body, qos=1)
                        self._inflight[mid] = (msg.seq, now)
                        self._last_sent_seq = msg.seq
                    room = window - len(self._inflight) - len(self._inflight_states)
                    if room > 0:
                        busy = {dev for dev, _ in self._inflight_states.values()} | self._recording_states
                        for st in self.outbox.read_states(room, exclude=busy):
                            mid = conn.publish(st.topic, st.body, qos=1, retain=True)
                            self._inflight_states[mid] = (st.device_id, st.rev)
            except MqttError as exc:
                log.info("publisher stopped: %s", exc)
                return
            await changed.wait()

    async def _ack_watchdog(self, conn: MqttConnection) -> None:
        timeout = self.settings.ack_timeout
        while conn.is_open and not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(1.0, timeout / 4)):
                    await self._stopping.wait()
            if self._inflight and conn.is_open:
                oldest_sent = next(iter(self._inflight.values()))[1]
                if time.monotonic() - oldest_sent > timeout:
                    log.warning("no PUBACK for %.0f s with %d in flight: dropping the connection",
                                timeout, len(self._inflight))
                    conn.abort(f"no PUBACK within {timeout:.0f} s")
                    return

    # -- callbacks from the connection (on the loop's thread) ---------------------------------

    def _on_ack(self, mid: int, ok: bool, reason: str) -> None:
        status_fut = self._status_acks.pop(mid, None)
        if status_fut is not None:
            if not status_fut.done():
                status_fut.set_result(ok)
            return
        entry = self._inflight.pop(mid, None)
        if entry is not None:
            if not ok:
                # The broker did not take it (MQTT 5 reason code >= 0x80): it stays in the outbox.
                log.error("cloud broker rejected event seq %d: %s; reconnecting to resend", entry[0], reason)
                if self._conn is not None:
                    asyncio.get_running_loop().call_soon(self._conn.abort, f"PUBACK failure: {reason}")
                return
            self._acked.append(entry[0])
            if len(self._acked) == 1:
                asyncio.get_running_loop().call_soon(self._flush_acks)
        state = self._inflight_states.pop(mid, None)
        if state is not None and ok:
            self._recording_states.add(state[0])
            task = asyncio.get_running_loop().create_task(self._record_state_ack(*state), name="ack-state")
            task.add_done_callback(_log_task_failure)
        self.outbox.changed.set()

    async def _record_state_ack(self, device_id: str, rev: int) -> None:
        try:
            await self.outbox.ack_state(device_id, rev)
        finally:
            self._recording_states.discard(device_id)
            self.outbox.changed.set()

    def _flush_acks(self) -> None:
        seqs, self._acked = self._acked, []
        if not seqs:
            return
        self.last_ack_ms = now_ms()
        self._observer.acknowledged(len(seqs))
        task = asyncio.get_running_loop().create_task(self.outbox.ack(seqs), name="ack-events")
        self._ack_flushes.add(task)
        task.add_done_callback(self._ack_flushes.discard)
        task.add_done_callback(_log_task_failure)

    async def _drain_ack_flushes(self) -> None:
        self._flush_acks()
        if self._ack_flushes:
            await asyncio.gather(*self._ack_flushes, return_exceptions=True)

    def _on_message(self, message: Message) -> None:
        # May arrive before `_serve` runs: a persistent session delivers queued commands right after CONNACK.
        if message.topic == self.topics.commands and self._on_command is not None:
            # The intake acknowledges once the command is recorded durably; if we die before that,
            # the broker delivers it again and the command id keeps it from running twice.
            self._on_command(message, message.ack)
        else:
            log.debug("ignoring message on %s", message.topic)
            message.ack()

    # -- shutdown -----------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask `run()` to say goodbye (retained `offline`), disconnect cleanly and return."""
        self._stopping.set()
        self.outbox.changed.set()

    async def _say_goodbye(self, conn: MqttConnection, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        try:
            mid = conn.publish(
                self.topics.status,
                status_payload("offline", self.topics, self.outbox.boot, self.settings.agent_version, "shutdown"),
                qos=1,
                retain=True,
            )
            fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self._status_acks[mid] = fut
            # PUBACKs are in order, so by the time this one lands the events sent before it are acked too.
            await asyncio.wait_for(fut, timeout * 0.75)
        except (MqttError, TimeoutError) as exc:
            log.warning("offline status not acknowledged before shutdown: %s", exc)
        await conn.disconnect(timeout=max(0.1, deadline - time.monotonic()))
        await self._drain_ack_flushes()
        log.info("cloud link closed cleanly")


def _log_task_failure(task: asyncio.Task[object]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed: %s", task.get_name(), task.exception())
