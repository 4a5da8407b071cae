"""One MQTT connection, a paho-mqtt 2.x client driven by the asyncio event loop.

As aiomqtt 2.x and Home Assistant do: paho's socket is registered with the loop (`add_reader`,
`add_writer`), a small task calls `loop_misc()` every second for keepalive, and every paho callback
runs on the loop's thread. No paho thread exists that could die silently.

Each `MqttConnection` object is used for exactly one connection. Reconnecting means making a new one:
nothing of paho's internal queue survives a disconnect, so the caller (which keeps the durable outbox)
alone decides what is sent again, and in which order.

Every callback body is wrapped: an exception in our code is logged and turns into a clean disconnect,
never an exception escaping into paho or the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

MISC_INTERVAL_S = 1.0


class Protocol(enum.StrEnum):
    AUTO = "auto"
    V5 = "5"
    V311 = "3.1.1"


@dataclass(frozen=True)
class TlsSettings:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    key_password: str | None = None
    # Only for test rigs with self-made names; never in production config.
    check_hostname: bool = True


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    client_id: str
    keepalive: int = 30
    tls: TlsSettings | None = None
    username: str | None = None
    password: str | None = None
    will: Will | None = None
    connect_timeout: float = 10.0
    # A persistent session: the broker keeps our subscriptions and queues QoS 1 messages for us while
    # we are away (commands sent during an outage arrive after it). 0 means a clean session.
    session_expiry: int = 0


class MqttError(Exception):
    """A connection-level failure, with the reason as paho or the broker gave it."""


class ConnectRefusedError(MqttError):
    def __init__(self, reason: str, *, protocol_rejected: bool = False) -> None:
        super().__init__(f"broker refused the connection: {reason}")
        self.reason = reason
        self.protocol_rejected = protocol_rejected


@dataclass
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int = 0
    # Acknowledges the message on the connection it came in on (manual ack); a no-op if that closed.
    ack: Callable[[], None] = lambda: None
    # The connection it came in on: once that closed, a QoS 1 message not acknowledged comes again on the
    # next one (a persistent session), so whoever queued it may drop it.
    connection: MqttConnection | None = None
    # The broker's DUP flag: it sent this message before (a redelivery after a reconnect), so whoever
    # stored the first delivery without acknowledging it may have it already.
    dup: bool = False


@dataclass
class _Callbacks:
    on_message: Callable[[Message], None] | None = None
    on_ack: Callable[[int, bool, str], None] | None = None
    on_lost: Callable[[str], None] | None = None


def _paho_protocol(protocol: Protocol) -> MQTTProtocolVersion:
    return MQTTProtocolVersion.MQTTv311 if protocol is Protocol.V311 else MQTTProtocolVersion.MQTTv5


class MqttConnection:
    """A single connection. Create, `await connect()`, use, then `await disconnect()` or `abort()`."""

    def __init__(
        self,
        endpoint: Endpoint,
        protocol: Protocol,
        *,
        on_message: Callable[[Message], None] | None = None,
        on_ack: Callable[[int, bool, str], None] | None = None,
        on_lost: Callable[[str], None] | None = None,
        max_inflight: int = 100,
    ) -> None:
        if protocol is Protocol.AUTO:
            raise ValueError("pick a concrete protocol per connection; AUTO is the session's business")
        self.endpoint = endpoint
        self.protocol = protocol
        self._cb = _Callbacks(on_message, on_ack, on_lost)
        self._loop = asyncio.get_running_loop()
        self._connack: asyncio.Future[bool] = self._loop.create_future()
        self.closed: asyncio.Future[str] = self._loop.create_future()
        self._sock: Any = None
        self._writer_registered = False
        self._reading_paused = False
        self._misc_task: asyncio.Task[None] | None = None
        self._pending_subs: dict[int, asyncio.Future[list[int]]] = {}

        persistent = endpoint.session_expiry > 0
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=endpoint.client_id,
            protocol=_paho_protocol(protocol),
            clean_session=None if protocol is Protocol.V5 else not persistent,
            reconnect_on_failure=False,
            # Incoming QoS 1 messages are acknowledged by us, after we stored what they asked for.
            manual_ack=True,
        )
        # Our wrappers catch everything; this only covers paho's own internals.
        client.suppress_exceptions = True
        client.max_inflight_messages = max_inflight
        client.max_queued_messages = 0
        if endpoint.username is not None:
            client.username_pw_set(endpoint.username, endpoint.password)
        if endpoint.tls is not None:
            client.tls_set_context(_tls_context(endpoint.tls))
            if not endpoint.tls.check_hostname:
                client.tls_insecure_set(True)
        if endpoint.will is not None:
            w = endpoint.will
            client.will_set(w.topic, w.payload, qos=w.qos, retain=w.retain)
        client.on_connect = self._guard(self._on_connect)
        client.on_disconnect = self._guard(self._on_disconnect)
        client.on_message = self._guard(self._on_message)
        client.on_publish = self._guard(self._on_publish)
        client.on_subscribe = self._guard(self._on_subscribe)
        self._client = client

    # -- lifecycle ----------------------------------------------------------------------------

    async def connect(self) -> bool:
        """Open the socket, send CONNECT and wait for CONNACK; returns `session_present`."""
        ep = self.endpoint
        clean: Any = paho.MQTT_CLEAN_START_FIRST_ONLY
        props: Properties | None = None
        if self.protocol is Protocol.V5:
            clean = ep.session_expiry == 0
            if ep.session_expiry:
                props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = ep.session_expiry
        try:
            # The blocking part (DNS, TCP, TLS handshake, writing CONNECT) runs off the loop.
            await asyncio.wait_for(
                self._loop.run_in_executor(
                    None,
                    lambda: self._client.connect(ep.host, ep.port, ep.keepalive, clean_start=clean, properties=props),
                ),
                ep.connect_timeout,
            )
        except (OSError, ssl.SSLError, ValueError, TimeoutError) as exc:
            self._finish(f"cannot connect to {ep.host}:{ep.port}: {exc}")
            raise MqttError(f"cannot connect to {ep.host}:{ep.port}: {exc}") from exc
        self._attach()
        try:
            return await asyncio.wait_for(asyncio.shield(self._connack), ep.connect_timeout)
        except TimeoutError:
            self.abort("no CONNACK within the connect timeout")
            raise MqttError(f"no CONNACK from {ep.host}:{ep.port} within {ep.connect_timeout} s") from None
        except MqttError:
            self.abort("connection refused")
            raise

    def _attach(self) -> None:
        """Hand paho's socket to the event loop (now that we are on the loop's thread)."""
        client = self._client
        sock = client.socket()
        if sock is None:
            self._fail_connack(MqttError("connection closed during connect"))
            return
        self._sock = sock
        client.on_socket_close = self._guard(self._on_socket_close)
        client.on_socket_register_write = self._guard(self._on_register_write)
        client.on_socket_unregister_write = self._guard(self._on_unregister_write)
        if not self._reading_paused:
            self._loop.add_reader(sock, self._readable)
        if client.want_write():
            self._on_register_write(client, None, sock)
        self._misc_task = self._loop.create_task(self._misc(), name=f"mqtt-misc-{self.endpoint.client_id}")
        # A TLS socket may hold decrypted bytes the selector cannot see.
        self._loop.call_soon(self._readable)

    async def disconnect(self, timeout: float = 2.0) -> None:
        """Send DISCONNECT (no Will is published) and wait for the socket to close."""
        if self.closed.done():
            return
        try:
            self._client.disconnect()
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        except (TimeoutError, OSError):
            pass
        finally:
            self.abort("disconnected")

    def abort(self, reason: str) -> None:
        """Drop the connection at once, as a network failure would (the broker sends the Will)."""
        sock = self._sock
        if sock is not None:
            self._detach(sock)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        self._finish(reason)

    @property
    def is_open(self) -> bool:
        return not self.closed.done() and self._connack.done() and not self._connack.exception()

    # -- operations ---------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int:
        """Queue a PUBLISH; returns its message id. `on_ack(mid, ok, reason)` reports the PUBACK."""
        if self.closed.done():
            raise MqttError(f"connection closed: {self.closed.result()}")
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_QUEUE_SIZE):
            raise MqttError(f"publish to {topic} failed: {paho.error_string(info.rc)}")
        return int(info.mid)

    def ack(self, mid: int, qos: int = 1) -> None:
        """Acknowledge an incoming message once what it asked for is durable (manual ack)."""
        if self.is_open and qos > 0:
            self._client.ack(mid, qos)

    async def subscribe(self, topic: str, qos: int = 1, timeout: float = 10.0) -> list[int]:
        rc, mid = self._client.subscribe(topic, qos)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise MqttError(f"subscribe to {topic} failed: {paho.error_string(rc)}")
        fut: asyncio.Future[list[int]] = self._loop.create_future()
        self._pending_subs[mid] = fut
        try:
            granted = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            # A broker that takes a connection but never answers the subscription is a link failure like any
            # other: the caller's reconnect loop retries it (a bare TimeoutError would end the cloud session).
            raise MqttError(f"no SUBACK for {topic} within {timeout:g} s") from None
        finally:
            self._pending_subs.pop(mid, None)
        if any(code >= 0x80 for code in granted):
            raise MqttError(f"broker refused the subscription to {topic}: {granted}")
        return granted

    # -- flow control -------------------------------------------------------------------------

    def pause_reading(self) -> None:
        """Stop reading the socket: what the broker sends waits in TCP's buffers and then at the broker.

        How a receiver that stores before it acknowledges keeps up with any burst: the broker's own
        in-flight limit is not a promise (Mosquitto 2.0 sends 20 more for every PUBACK after a session
        resumes), but TCP's window is. Keep pauses short of the keepalive: PINGRESP is not read meanwhile."""
        if self._reading_paused:
            return
        self._reading_paused = True
        if self._sock is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._sock)

    def resume_reading(self) -> None:
        if not self._reading_paused:
            return
        self._reading_paused = False
        if self._sock is not None and not self.closed.done():
            self._loop.add_reader(self._sock, self._readable)
            # Bytes paho or TLS already buffered would not wake the selector.
            self._loop.call_soon(self._readable)

    @property
    def reading_paused(self) -> bool:
        return self._reading_paused

    # -- event-loop plumbing ------------------------------------------------------------------

    def _readable(self) -> None:
        if not self._reading_paused:
            self._drive("read", self._read_all)

    def _writable(self) -> None:
        self._drive("write", self._client.loop_write)

    def _read_all(self) -> MQTTErrorCode:
        rc = self._client.loop_read()
        # TLS: drain what the SSL layer buffered, the selector will not fire for it again.
        while (rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is not None and not self._reading_paused
               and _pending(self._sock)):
            rc = self._client.loop_read()
        return rc

    def _drive(self, what: str, step: Callable[[], MQTTErrorCode]) -> None:
        """Run one paho I/O step for the event loop; any failure ends this connection, nothing escapes."""
        if self._sock is None:
            return
        try:
            rc = step()
        except Exception as exc:
            log.exception("MQTT %s on %s failed", what, self.endpoint.host)
            self.abort(f"{what} failed: {exc}")
            return
        if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN):
            self.abort(f"{what}: {paho.error_string(rc)}")

    async def _misc(self) -> None:
        while not self.closed.done():
            await asyncio.sleep(MISC_INTERVAL_S)
            try:
                rc = self._client.loop_misc()
            except Exception as exc:
                log.exception("MQTT keepalive check failed")
                self.abort(f"keepalive check failed: {exc}")
                return
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                # paho notices a missing PINGRESP here (MQTT_ERR_KEEPALIVE) and closes the socket.
                self.abort(f"keepalive: {paho.error_string(rc)}")
                return

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if not self._writer_registered and self._sock is not None:
            self._loop.add_writer(sock, self._writable)
            self._writer_registered = True

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if self._writer_registered:
            self._loop.remove_writer(sock)
            self._writer_registered = False

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._detach(sock)

    def _detach(self, sock: Any) -> None:
        if self._sock is None:
            return
        self._sock = None
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(sock)
        if self._writer_registered:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_writer(sock)
            self._writer_registered = False

    def _finish(self, reason: str) -> None:
        if self._misc_task is not None and self._misc_task is not asyncio.current_task():
            self._misc_task.cancel()
        self._fail_connack(MqttError(reason))
        for fut in self._pending_subs.values():
            if not fut.done():
                fut.set_exception(MqttError(reason))
        if not self.closed.done():
            self.closed.set_result(reason)
            if self._cb.on_lost is not None:
                try:
                    self._cb.on_lost(reason)
                except Exception:
                    log.exception("connection-lost handler failed")

    def _fail_connack(self, exc: Exception) -> None:
        if not self._connack.done():
            self._connack.set_exception(exc)
            # Nobody may be waiting any more; don't let asyncio warn about it.
            self._connack.exception()

    # -- paho callbacks (all wrapped by _guard) -----------------------------------------------

    def _guard(self, fn: Callable[..., None]) -> Callable[..., None]:
        def wrapper(*args: Any) -> None:
            try:
                fn(*args)
            except Exception as exc:
                log.exception("MQTT callback %s failed; dropping the connection", fn.__name__)
                self._loop.call_soon(self.abort, f"callback {fn.__name__} failed: {exc}")

        return wrapper

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Properties | None
    ) -> None:
        if self._connack.done():
            return
        if reason.is_failure:
            # 3.1.1's "unacceptable protocol level" (1) or 5's "unsupported protocol version" (0x84).
            rejected = int(reason.value) in (1, 0x84)
            self._connack.set_exception(ConnectRefusedError(str(reason), protocol_rejected=rejected))
        else:
            self._connack.set_result(bool(getattr(flags, "session_present", False)))

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Properties | None
    ) -> None:
        text = str(reason)
        if not self._connack.done():
            # Closed before CONNACK: a 3.1.1-only broker may just hang up on an MQTT 5 CONNECT.
            self._connack.set_exception(ConnectRefusedError(f"closed before CONNACK ({text})",
                                                            protocol_rejected=True))
        self._loop.call_soon(self.abort, f"disconnected: {text}")

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if self._cb.on_message is None:
            return
        mid, qos = int(msg.mid), int(msg.qos)
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            # Acknowledged all the same: unacknowledged, it would hold one of the broker's in-flight slots
            # for the whole connection and come back on every reconnect.
            log.warning("dropping a message whose topic is not UTF-8")
            self.ack(mid, qos)
            return
        self._cb.on_message(
            Message(topic, bytes(msg.payload), qos, bool(msg.retain), mid, ack=lambda: self.ack(mid, qos),
                    connection=self, dup=bool(msg.dup))
        )

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Properties | None
    ) -> None:
        if self._cb.on_ack is not None:
            self._cb.on_ack(mid, not reason.is_failure, str(reason))

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reasons: list[ReasonCode], properties: Properties | None
    ) -> None:
        fut = self._pending_subs.get(mid)
        if fut is not None and not fut.done():
            fut.set_result([int(r.value) for r in reasons])


def _pending(sock: Any) -> int:
    pending = getattr(sock, "pending", None)
    return int(pending()) if pending is not None else 0


def _tls_context(tls: TlsSettings) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file, password=tls.key_password)
    if not tls.check_hostname:
        ctx.check_hostname = False
    return ctx
