"""Wi-Fi e-ink labels on the in-store broker: a LabelStation for the same scheduler as the base stations.

The contract is in docs/mqtt-devices.md, section "Wi-Fi labels". Under the in-store prefix (default
`store/v1`), `{tag_id}` being the label's id in 16 lowercase hex digits:

label -> agent (QoS 1; the agent acknowledges each message after handling it):
- `labels/{tag_id}/checkin`: JSON telemetry and the hash of the picture shown -> TagCheckin, and for the
  first check-in of a label not seen since start also TagDiscovered;
- `labels/{tag_id}/result`: JSON `{"xfer", "hash"}` or `{"xfer", "error"}`: completes a transfer;
- `labels/{tag_id}/button`: JSON `{"button": n}` -> ButtonPress.

agent -> label (QoS 1):
- `labels/{tag_id}/picture`: binary, **retained** so that a sleeping label gets it when it wakes: a 27-byte
  header (`PictureMessage`) and the encoded picture (firmware_bridge.picture). Once the label reported a
  result (or the transfer was cancelled) the agent clears it with an empty retained message, so that the
  label does not apply it again after a reboot;
- `labels/{tag_id}/led`: JSON `{"colour", "count", "period_ms"}`, not retained.

A transfer is `stored` once the broker acknowledged the picture (it then holds it for the label) and
`done` when the label reports: ok only when the hash it reports for what it now shows is exactly the
pushed picture's hash (LabelService checks that again before it confirms anything).

Every incoming message is validated strictly (topic, size, strict JSON, field types and ranges, known tag
type, matching transfer id); a bad one is logged, counted in `stats.bad_messages` (by reason in
`stats.bad_reasons`), acknowledged and dropped. Nothing a label sends can raise out of a paho callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import random
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from devices.labels.updates import LabelService
from firmware_bridge.base_station.client import Transfer, TransferOutcome
from firmware_bridge.base_station.messages import (
    NO_HASH,
    ButtonPress,
    FailReason,
    Message,
    Status,
    TagCheckin,
    TagDiscovered,
)
from firmware_bridge.picture import HASH_LEN, Encoding
from firmware_bridge.tag_types import TAG_TYPES, TAG_TYPES_BY_NAME
from mqtt_io.driver import Endpoint, MqttConnection, MqttError
from mqtt_io.driver import Message as MqttMessage
from mqtt_io.driver import Protocol as MqttProtocol
from mqtt_io.reconnect import keep_connected
from mqtt_io.strict_json import StrictJsonError, loads_strict

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "store/v1"
DEFAULT_MAX_HELD = 256
DEFAULT_MAX_MESSAGE_BYTES = 4096
PICTURE_MAGIC = b"ESL1"
# magic:4s xfer:u16 encoding:u8 raw_len:u32 hash:8s base_hash:8s, little-endian (27 bytes).
PICTURE_HEADER = struct.Struct("<4sHBI8s8s")
INBOUND_CHANNELS = ("checkin", "result", "button")
TAG_ID_RE = re.compile(r"^[0-9a-f]{16}$")
HASH_RE = re.compile(r"^[0-9a-f]{16}$")
FAIL_REASONS = frozenset(FailReason.NAMES.values())
# The largest raw picture of any known tag type: the bound when a picture's raw length must be measured.
MAX_RAW_BYTES = max(t.raw_bytes for t in TAG_TYPES.values())
TEMPERATURE_RANGE_C = (-50.0, 100.0)

EventCallback = Callable[["MqttLabelStation", Message], None]


class PictureMessageError(ValueError):
    """A payload on a picture topic that is not a valid picture message."""


class LabelMessageError(ValueError):
    """A message from a label that breaks the contract; `reason` is the counted reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class PictureMessage:
    """The payload of `labels/{tag_id}/picture` (sans-IO): header, then the encoded picture.

    | offset | size | field     | meaning                                                              |
    |--------|------|-----------|----------------------------------------------------------------------|
    | 0      | 4    | magic     | `ESL1` (0x45 0x53 0x4c 0x31)                                         |
    | 4      | 2    | xfer      | transfer id, u16 LE, 1-65535: echoed in the result                   |
    | 6      | 1    | encoding  | 0 RAW, 1 ZLIB, 2 DELTA_ZLIB (firmware_bridge.picture)                |
    | 7      | 4    | raw_len   | u32 LE, length of the decoded raw picture                            |
    | 11     | 8    | hash      | hash of the decoded raw picture (first 8 bytes of SHA-256)           |
    | 19     | 8    | base_hash | DELTA_ZLIB: hash of the picture the delta applies to; else all zeros |
    | 27     | n    | data      | the encoded picture, to the end of the payload                       |
    """

    xfer: int
    encoding: int
    raw_len: int
    hash: bytes
    base_hash: bytes | None
    data: bytes

    def to_bytes(self) -> bytes:
        return (
            PICTURE_HEADER.pack(
                PICTURE_MAGIC, self.xfer, self.encoding, self.raw_len, self.hash, self.base_hash or NO_HASH
            )
            + self.data
        )

    @classmethod
    def from_bytes(cls, payload: bytes) -> PictureMessage:
        if len(payload) < PICTURE_HEADER.size:
            raise PictureMessageError(f"{len(payload)} bytes, a picture message has at least {PICTURE_HEADER.size}")
        magic, xfer, encoding, raw_len, picture_hash, base_hash = PICTURE_HEADER.unpack_from(payload)
        if magic != PICTURE_MAGIC:
            raise PictureMessageError(f"bad magic {magic!r}")
        if xfer == 0:
            raise PictureMessageError("transfer id 0")
        if encoding not in (Encoding.RAW, Encoding.ZLIB, Encoding.DELTA_ZLIB):
            raise PictureMessageError(f"unknown encoding {encoding}")
        is_delta = encoding == Encoding.DELTA_ZLIB
        if is_delta == (base_hash == NO_HASH):
            raise PictureMessageError("a base hash goes with DELTA_ZLIB, and only with it")
        return cls(xfer, encoding, raw_len, picture_hash, base_hash if is_delta else None,
                   bytes(payload[PICTURE_HEADER.size :]))


# -- parsing what labels send ------------------------------------------------------------------------


def parse_label_topic(prefix: str, topic: str) -> tuple[bytes, str]:
    """(tag id, channel) of `{prefix}/labels/{tag_id}/{channel}`; raises LabelMessageError."""
    base = prefix.split("/")
    parts = topic.split("/")
    if parts[: len(base)] != base or len(parts) != len(base) + 3 or parts[len(base)] != "labels":
        raise LabelMessageError("bad_topic", f"unexpected topic {topic!r}")
    tag_id, channel = parts[len(base) + 1], parts[len(base) + 2]
    if not TAG_ID_RE.fullmatch(tag_id):
        raise LabelMessageError("bad_tag_id", f"invalid tag id {tag_id!r}: 16 lowercase hex digits expected")
    if channel not in INBOUND_CHANNELS:
        raise LabelMessageError("bad_topic", f"unknown channel {channel!r}")
    return bytes.fromhex(tag_id), channel


def _int_field(body: dict[str, Any], key: str, low: int, high: int) -> int:
    value = body.get(key)
    # bool is an int in Python, never in our contract.
    if not isinstance(value, int) or isinstance(value, bool):
        raise LabelMessageError("bad_field", f"{key!r} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise LabelMessageError("bad_field", f"{key!r} = {value} is outside {low}..{high}")
    return value


def _hash_field(body: dict[str, Any], key: str, *, nullable: bool) -> bytes | None:
    value = body.get(key)
    if value is None and nullable and key in body:
        return None
    if not isinstance(value, str) or not HASH_RE.fullmatch(value):
        raise LabelMessageError("bad_field", f"{key!r} must be 16 lowercase hex digits{' or null' if nullable else ''}")
    return bytes.fromhex(value)


def _object(payload: bytes, max_bytes: int) -> dict[str, Any]:
    if len(payload) > max_bytes:
        raise LabelMessageError("too_large", f"{len(payload)} bytes, the limit is {max_bytes}")
    try:
        body = loads_strict(payload)
    except StrictJsonError as exc:
        raise LabelMessageError("malformed_json", f"not valid UTF-8 JSON: {exc}") from None
    if not isinstance(body, dict):
        raise LabelMessageError("not_object", f"expected a JSON object, got {type(body).__name__}")
    return body


def parse_checkin(tag: bytes, body: dict[str, Any]) -> TagCheckin:
    """A check-in as the TagCheckin the scheduler knows (temperature in tenths of a degree, page 0)."""
    type_name = body.get("type")
    if not isinstance(type_name, str):
        raise LabelMessageError("bad_field", "'type' must be a tag type name such as \"2.9-bwr\"")
    tag_type = TAG_TYPES_BY_NAME.get(type_name)
    if tag_type is None:
        raise LabelMessageError("unknown_tag_type", f"unknown tag type {type_name[:40]!r}")
    temperature = body.get("temperature_c")
    if not isinstance(temperature, int | float) or isinstance(temperature, bool):
        raise LabelMessageError("bad_field", "'temperature_c' must be a number")
    low, high = TEMPERATURE_RANGE_C
    if not low <= temperature <= high:
        raise LabelMessageError("bad_field", f"'temperature_c' = {temperature} is outside {low}..{high}")
    shown = _hash_field(body, "hash", nullable=True)
    return TagCheckin(
        tag=tag,
        type_code=tag_type.code,
        battery_mv=_int_field(body, "battery_mv", 0, 0xFFFF),
        temperature_dc=round(temperature * 10),
        rssi=_int_field(body, "rssi", -128, 127),
        lqi=_int_field(body, "lqi", 0, 255),
        firmware=_int_field(body, "fw", 0, 0xFFFF),
        hash=shown or NO_HASH,
        page=0,
    )


@dataclass(frozen=True)
class LabelResult:
    xfer: int
    hash: bytes | None
    error: str | None


def parse_result(body: dict[str, Any]) -> LabelResult:
    xfer = _int_field(body, "xfer", 1, 0xFFFF)
    has_hash, has_error = "hash" in body, "error" in body
    if has_hash == has_error:
        raise LabelMessageError("bad_field", "a result has exactly one of 'hash' and 'error'")
    if has_hash:
        return LabelResult(xfer, _hash_field(body, "hash", nullable=False), None)
    error = body["error"]
    if not isinstance(error, str) or error not in FAIL_REASONS:
        raise LabelMessageError("bad_field", f"'error' must be one of {sorted(FAIL_REASONS)}")
    return LabelResult(xfer, None, error)


def parse_button(tag: bytes, body: dict[str, Any]) -> ButtonPress:
    return ButtonPress(tag, _int_field(body, "button", 0, 255))


# -- the station -------------------------------------------------------------------------------------


@dataclass
class WifiStationStats:
    bad_messages: int = 0
    bad_reasons: dict[str, int] = field(default_factory=dict)
    # Results for a transfer that already ended (a label reporting twice, or after its picture was replaced).
    stale_results: int = 0
    retained_ignored: int = 0
    checkins: int = 0
    transfers_started: int = 0
    transfers_done: int = 0
    transfers_failed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    pictures_cleared: int = 0
    connects: int = 0
    reconnects: int = 0
    last_error: str | None = None


@dataclass
class _KnownTag:
    type_code: int
    shown: bytes


@dataclass
class _Active:
    transfer: Transfer
    topic: str
    payload: bytes


class MqttLabelStation:
    """Wi-Fi labels on the in-store broker, as one LabelStation (devices.labels.updates).

    `endpoint.client_id` must be this station's own (e.g. `edge-agent-{store_id}-labels`): the broker
    drops the older of two connections with the same id. Give the endpoint a `session_expiry` so that what
    labels report while the agent restarts waits at the broker.
    """

    def __init__(
        self,
        name: str,
        endpoint: Endpoint,
        *,
        topic_prefix: str = DEFAULT_PREFIX,
        on_event: EventCallback | None = None,
        max_held: int = DEFAULT_MAX_HELD,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        backoff_min: float = 1.0,
        backoff_max: float = 30.0,
        on_bad_input: Callable[[str, str], None] | None = None,
    ) -> None:
        if max_held < 1:
            raise ValueError("max_held must be at least 1")
        self.name = name
        self.endpoint = endpoint
        self.prefix = topic_prefix.rstrip("/")
        self._on_event = on_event
        self._max_held = max_held
        self.max_message_bytes = max_message_bytes
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self._on_bad_input = on_bad_input
        self.stats = WifiStationStats()
        self._tags: dict[bytes, _KnownTag] = {}
        self._transfers: dict[int, _Active] = {}
        self._by_tag: dict[bytes, int] = {}
        self._last_xfer: dict[bytes, int] = {}  # tag -> the transfer that ended last (to recognise stale results)
        self._pending_clear: set[bytes] = set()
        # A random start: a result still queued for the previous agent run rarely names a new transfer (and
        # when it does, the hash check decides).
        self._xfer_ids = itertools.count(random.randrange(1, 0x10000))
        self._conn: MqttConnection | None = None
        self._generation = 0
        self._ready = asyncio.Event()
        self._session = 0
        # PUBACK bookkeeping of the current connection, by message id.
        self._picture_mids: dict[int, int] = {}
        self._clear_mids: dict[int, bytes] = {}
        self._led_mids: dict[int, asyncio.Future[bool]] = {}

    # -- LabelStation ----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    @property
    def max_held(self) -> int:
        return self._max_held

    @property
    def sync_token(self) -> object:
        """Changes on every (re)connection: the scheduler then syncs again."""
        return self._session

    @property
    def bad_messages(self) -> int:
        return self.stats.bad_messages

    @property
    def transfers_in_flight(self) -> int:
        return len(self._transfers)

    def open_transfer(self, tag: bytes) -> Transfer | None:
        """The transfer to this label that waits for its result, if any (diagnostics, tests)."""
        xfer = self._by_tag.get(tag)
        return None if xfer is None else self._transfers[xfer].transfer

    async def sync(self) -> list[tuple[bytes, int, bytes]]:
        """Labels seen since start: (tag, type code, hash shown; zeros when none)."""
        return [(tag, known.type_code, known.shown) for tag, known in self._tags.items()]

    def push(
        self,
        tag: bytes,
        *,
        encoding: int,
        data: bytes,
        picture_hash: bytes,
        base_hash: bytes | None = None,
        page: int = 0,
    ) -> Transfer:
        """Publish a picture (retained) for a label; Wi-Fi labels have one page, `page` is ignored."""
        if len(tag) != 8 or len(picture_hash) != HASH_LEN:
            raise ValueError("a tag id and a picture hash are 8 bytes each")
        if encoding not in (Encoding.RAW, Encoding.ZLIB, Encoding.DELTA_ZLIB):
            raise ValueError(f"unknown encoding {encoding}")
        if encoding == Encoding.DELTA_ZLIB and base_hash is None:
            raise ValueError("a delta needs the base picture's hash")
        loop = asyncio.get_running_loop()
        xfer = self._next_xfer()
        previous = self._by_tag.get(tag)
        if previous is not None:
            # The new retained picture replaces the older one at the broker: that transfer is over.
            self._finish(previous, TransferOutcome(False, None, "cancelled"), clear=False)
        raw_len = self._raw_len(tag, encoding, data)
        message = PictureMessage(
            xfer, encoding, raw_len or 0, picture_hash, base_hash if encoding == Encoding.DELTA_ZLIB else None, data
        ).to_bytes()
        transfer = Transfer(xfer, tag, picture_hash, len(message), loop.create_future(), loop.create_future())
        self.stats.transfers_started += 1
        self._transfers[xfer] = active = _Active(transfer, self._topic(tag, "picture"), message)
        self._by_tag[tag] = xfer
        if raw_len is None:
            log.warning("wifi labels %s: picture for %s does not inflate; not sent", self.name, tag.hex())
            # Clear what the replaced transfer left retained: nothing valid replaces it.
            self._finish(xfer, TransferOutcome(False, None, "bad_encoding"), clear=previous is not None)
            return transfer
        self._pending_clear.discard(tag)
        log.debug("wifi labels %s: transfer %d to %s, encoding %d, %d bytes", self.name, xfer, tag.hex(), encoding,
                  len(message))
        self._publish_picture(active)
        return transfer

    def cancel(self, xfer: int) -> None:
        if xfer in self._transfers:
            self._finish(xfer, TransferOutcome(False, None, "cancelled"), clear=True)

    async def set_fast(self, tag: bytes, seconds: int, timeout: float = 5.0) -> int:
        """Wi-Fi labels hold their broker connection and hear every command at once: fast already (Status.OK)."""
        if len(tag) != 8:
            raise ValueError("a tag id is 8 bytes")
        return 0

    async def led_flash(
        self, tag: bytes, *, colour: int = 2, count: int = 5, period_ms: int = 500, timeout: float = 5.0
    ) -> int:
        """Publish an LED command; returns 0 (Status.OK) once the broker acknowledged it.

        Raises TimeoutError when the broker is unreachable for `timeout` seconds.
        """
        if len(tag) != 8:
            raise ValueError("a tag id is 8 bytes")
        if not (0 <= colour <= 4 and 0 <= count <= 255 and 0 <= period_ms <= 0xFFFF):
            raise ValueError("colour 0-4, count 0-255, period_ms 0-65535")
        payload = json.dumps({"colour": colour, "count": count, "period_ms": period_ms}).encode()
        topic = self._topic(tag, "led")
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while True:
                await self._ready.wait()
                conn = self._conn
                if conn is None:
                    await asyncio.sleep(0.05)
                    continue
                acked: asyncio.Future[bool] = loop.create_future()
                try:
                    mid = conn.publish(topic, payload, qos=1, retain=False)
                except MqttError:
                    await asyncio.sleep(0.05)  # the connection just went; the run loop makes a new one
                    continue
                self._led_mids[mid] = acked
                try:
                    ok = await acked
                except MqttError:
                    continue  # lost before the PUBACK: send it again on the next connection
                finally:
                    self._led_mids.pop(mid, None)
                return Status.OK if ok else Status.INVALID

    # -- connection ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected to the in-store broker until cancelled (reconnecting with backoff)."""
        await keep_connected(
            self._open,
            self._serve,
            backoff_min=self.backoff_min,
            backoff_max=self.backoff_max,
            what=f"wifi labels {self.name}: in-store broker",
            logger=log,
        )

    async def _open(self) -> MqttConnection:
        """A new connection, connected and subscribed to what labels send; a failed one is cleaned up."""
        self._generation += 1
        conn = MqttConnection(
            self.endpoint,
            MqttProtocol.V311,
            on_message=self._on_message,
            on_ack=functools.partial(self._on_ack, self._generation),
            max_inflight=100,
        )
        try:
            await conn.connect()
            self._conn = conn
            for channel in INBOUND_CHANNELS:
                await conn.subscribe(f"{self.prefix}/labels/+/{channel}", qos=1)
        except asyncio.CancelledError:
            self._lost(conn, "wifi label station stopping")
            raise
        except MqttError as exc:
            self._lost(conn, "connect failed")
            self.stats.last_error = str(exc)
            raise
        return conn

    async def _serve(self, conn: MqttConnection) -> None:
        """Ready while `conn` is up: pictures not yet confirmed go out again, the scheduler syncs again."""
        self.stats.connects += 1
        if self.stats.connects > 1:
            self.stats.reconnects += 1
        self._session += 1
        self._after_connect(conn)
        self._ready.set()
        log.info("wifi labels %s: connected to %s:%d", self.name, self.endpoint.host, self.endpoint.port)
        try:
            reason = await asyncio.shield(conn.closed)
            self.stats.last_error = reason
            log.warning("wifi labels %s: in-store broker connection lost: %s", self.name, reason)
        finally:
            self._lost(conn, "wifi label station stopping")

    def _after_connect(self, conn: MqttConnection) -> None:
        """Clear what should be cleared, and publish every picture not yet confirmed again (idempotent)."""
        for tag in list(self._pending_clear):
            if tag in self._by_tag:
                self._pending_clear.discard(tag)
            else:
                self._publish_clear(tag)
        for active in list(self._transfers.values()):
            self._publish_picture(active)

    def _lost(self, conn: MqttConnection, reason: str) -> None:
        self._ready.clear()
        if self._conn is conn:
            self._conn = None
        conn.abort(reason)
        self._picture_mids.clear()
        self._clear_mids.clear()
        for future in self._led_mids.values():
            if not future.done():
                future.set_exception(MqttError(reason))
        self._led_mids.clear()

    # -- publishing ------------------------------------------------------------------------------

    def _topic(self, tag: bytes, channel: str) -> str:
        return f"{self.prefix}/labels/{tag.hex()}/{channel}"

    def _publish_picture(self, active: _Active) -> None:
        conn = self._conn
        if conn is None:
            return  # published when the connection is back
        try:
            mid = conn.publish(active.topic, active.payload, qos=1, retain=True)
        except MqttError as exc:
            log.debug("wifi labels %s: picture %d waits for the connection: %s", self.name, active.transfer.xfer, exc)
            return
        self._picture_mids[mid] = active.transfer.xfer

    def _publish_clear(self, tag: bytes) -> None:
        """An empty retained message removes the retained picture at the broker."""
        self._pending_clear.add(tag)  # until the broker acknowledged it
        conn = self._conn
        if conn is None:
            return
        try:
            mid = conn.publish(self._topic(tag, "picture"), b"", qos=1, retain=True)
        except MqttError:
            return
        self._clear_mids[mid] = tag

    def _on_ack(self, generation: int, mid: int, ok: bool, reason: str) -> None:
        if generation != self._generation:
            return
        if (xfer := self._picture_mids.pop(mid, None)) is not None:
            active = self._transfers.get(xfer)
            if active is None:
                return
            if ok:
                if not active.transfer.stored.done():
                    active.transfer.stored.set_result(None)
            else:
                self._finish(xfer, TransferOutcome(False, None, f"broker refused the picture: {reason}"), clear=False)
        elif (tag := self._clear_mids.pop(mid, None)) is not None:
            if ok:
                self._pending_clear.discard(tag)
                self.stats.pictures_cleared += 1
        elif (future := self._led_mids.get(mid)) is not None and not future.done():
            future.set_result(ok)

    # -- transfers -------------------------------------------------------------------------------

    def _next_xfer(self) -> int:
        while True:
            xfer = next(self._xfer_ids) & 0xFFFF
            if xfer and xfer not in self._transfers:
                return xfer

    def _raw_len(self, tag: bytes, encoding: int, data: bytes) -> int | None:
        """The decoded picture's length: from the label's type when it checked in, else measured."""
        known = self._tags.get(tag)
        if known is not None:
            return TAG_TYPES[known.type_code].raw_bytes
        if encoding == Encoding.RAW:
            return len(data)
        inflater = zlib.decompressobj()
        try:
            out = inflater.decompress(data, MAX_RAW_BYTES + 1)
        except zlib.error:
            return None
        return len(out) if inflater.eof and len(out) <= MAX_RAW_BYTES else None

    def _finish(self, xfer: int, outcome: TransferOutcome, *, clear: bool) -> None:
        active = self._transfers.pop(xfer, None)
        if active is None:
            return
        transfer = active.transfer
        if self._by_tag.get(transfer.tag) == xfer:
            del self._by_tag[transfer.tag]
        self._last_xfer[transfer.tag] = xfer
        if outcome.ok:
            self.stats.transfers_done += 1
        else:
            self.stats.transfers_failed += 1
            reason = outcome.reason or "unknown"
            key = "wrong_hash" if reason.startswith("tag reports hash") else reason
            self.stats.reasons[key] = self.stats.reasons.get(key, 0) + 1
        if not transfer.stored.done():
            transfer.stored.set_result(None)
        if not transfer.done.done():
            transfer.done.set_result(outcome)
        if clear and transfer.tag not in self._by_tag:
            self._publish_clear(transfer.tag)

    # -- from the labels -------------------------------------------------------------------------

    def _on_message(self, message: MqttMessage) -> None:
        """Every label message, on the event loop's thread; acknowledged once handled, bad or not."""
        try:
            self._handle(message)
        except LabelMessageError as exc:
            self._bad(exc.reason, message.topic, str(exc))
        except Exception as exc:  # never into paho: a bug here must not cost the connection
            log.exception("wifi labels %s: handling a message on %s failed", self.name, message.topic)
            self._bad("internal_error", message.topic, str(exc))
        finally:
            message.ack()

    def _bad(self, reason: str, topic: str, detail: str) -> None:
        self.stats.bad_messages += 1
        self.stats.bad_reasons[reason] = self.stats.bad_reasons.get(reason, 0) + 1
        log.warning("wifi labels %s: rejected message on %s (%s): %s", self.name, topic[:200], reason, detail)
        if self._on_bad_input is not None:
            with contextlib.suppress(Exception):
                self._on_bad_input("wifi_label", reason)

    def _handle(self, message: MqttMessage) -> None:
        tag, channel = parse_label_topic(self.prefix, message.topic)
        if message.retain and channel != "checkin":
            # A retained result or button press would come again on every reconnect: not an event.
            self.stats.retained_ignored += 1
            log.debug("wifi labels %s: ignoring retained %s", self.name, message.topic)
            return
        body = _object(message.payload, self.max_message_bytes)
        if channel == "checkin":
            self._on_checkin(tag, parse_checkin(tag, body))
        elif channel == "result":
            self._on_result(tag, parse_result(body))
        else:
            self._emit(parse_button(tag, body))

    def _on_checkin(self, tag: bytes, checkin: TagCheckin) -> None:
        self.stats.checkins += 1
        first = tag not in self._tags
        self._tags[tag] = _KnownTag(checkin.type_code, checkin.hash)
        if first:
            self._emit(TagDiscovered(tag, checkin.type_code, checkin.firmware))
        self._emit(checkin)

    def _on_result(self, tag: bytes, result: LabelResult) -> None:
        xfer = self._by_tag.get(tag)
        if xfer != result.xfer:
            if self._last_xfer.get(tag) == result.xfer:
                self.stats.stale_results += 1
                log.debug("wifi labels %s: stale result for transfer %d of %s", self.name, result.xfer, tag.hex())
                return
            raise LabelMessageError(
                "unknown_xfer", f"result for transfer {result.xfer}, but {tag.hex()} has {xfer or 'none'} open"
            )
        target = self._transfers[xfer].transfer.target_hash
        if result.error is not None:
            outcome = TransferOutcome(False, None, result.error)
        else:
            assert result.hash is not None
            known = self._tags.get(tag)
            if known is not None:
                known.shown = result.hash
            if result.hash == target:
                outcome = TransferOutcome(True, result.hash)
            else:
                outcome = TransferOutcome(
                    False, result.hash, f"tag reports hash {result.hash.hex()}, expected {target.hex()}"
                )
        self._finish(xfer, outcome, clear=True)

    def _emit(self, msg: Message) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(self, msg)
        except Exception:
            log.exception("wifi labels %s: event handler failed", self.name)


def add_wifi_labels(
    labels: LabelService,
    endpoint: Endpoint,
    *,
    topic_prefix: str,
    name: str = "wifi",
    max_held: int = DEFAULT_MAX_HELD,
    on_bad_input: Callable[[str, str], None] | None = None,
) -> MqttLabelStation:
    """Build the Wi-Fi label station on the in-store broker and register it with the scheduler.

    `endpoint.client_id` must be the station's own (not the device gateway's): e.g.
    `edge-agent-{store_id}-labels`. `on_bad_input(source, reason)` (the agent's metrics) counts rejected
    label messages as source `wifi_label`.
    """
    station = MqttLabelStation(
        name,
        endpoint,
        topic_prefix=topic_prefix,
        on_event=labels.on_station_event,
        max_held=max_held,
        on_bad_input=on_bad_input,
    )
    labels.add_label_station(station)
    return station


__all__ = [
    "PICTURE_HEADER",
    "PICTURE_MAGIC",
    "LabelMessageError",
    "MqttLabelStation",
    "PictureMessage",
    "PictureMessageError",
    "WifiStationStats",
    "add_wifi_labels",
    "parse_checkin",
    "parse_label_topic",
    "parse_result",
]
