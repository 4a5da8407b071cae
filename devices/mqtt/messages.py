"""In-store device topics and their payloads, validated strictly (docs/mqtt-devices.md, sections 1 and 3).

Everything a device sends is untrusted: the topic must name a known channel and a well-formed device id,
the payload must fit `max_message_bytes`, be strict UTF-8 JSON and match its channel's model exactly
(pydantic, `extra="forbid"`, strict types). A failure raises `DeviceMessageError` whose `reason` is
the label counted in `edge_bad_inputs_total{source="mqtt_device"}`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from mqtt_io.strict_json import StrictJsonError, loads_strict

DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
KIND_RE = re.compile(r"^[a-z][a-z0-9_.]{0,39}$")
ID_PATTERN = DEVICE_ID_RE.pattern
# A scanned code: printable ASCII without spaces (EAN/UPC digits, Code 128, a URL from a QR code).
CODE_PATTERN = r"^[!-~]{1,128}$"
SYMBOLOGY_PATTERN = r"^[a-z0-9_-]{1,16}$"
TARGET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"

# Channels a device publishes on; `cmd` is ours (agent -> device) and comes back through our own
# wildcard subscription, so it is recognised and skipped, never counted as bad input.
DEVICE_CHANNELS = ("announce", "availability", "state", "telemetry", "event")
COMMAND_CHANNEL = "cmd"
# Channels whose messages are meant to be retained: a retained copy is the device's current truth.
RETAINED_CHANNELS = ("announce", "availability", "state")
DEVICE_KINDS = ("kiosk", "tablet", "scanner", "other")


class DeviceMessageError(ValueError):
    """A rejected message; `reason` is the counted label, `device_id` the device it came from, if known."""

    def __init__(self, reason: str, detail: str, device_id: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.device_id = device_id


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


Capability = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.]{0,31}$")]


class Announce(_Strict):
    """What a device says it is (retained on `announce`)."""

    kind: Literal["kiosk", "tablet", "scanner", "other"]
    model: str = Field(min_length=1, max_length=64)
    fw: str = Field(min_length=1, max_length=32)
    capabilities: list[Capability] = Field(default_factory=list, max_length=16)
    # A scanner mounted at a kiosk names it here; its scans go to that kiosk's cart.
    kiosk_id: str | None = Field(default=None, pattern=ID_PATTERN)


class ScanData(_Strict):
    code: str = Field(pattern=CODE_PATTERN)
    symbology: str | None = Field(default=None, pattern=SYMBOLOGY_PATTERN)


class TapData(_Strict):
    target: str = Field(pattern=TARGET_PATTERN)


class EventBody(_Strict):
    kind: str = Field(pattern=KIND_RE.pattern)
    data: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class DeviceMessage:
    """One valid message. `body` by channel: announce `Announce | None` (None: the retained copy was
    cleared), availability `bool | None` (online), state `dict | None`, telemetry `dict`, event
    `EventBody` with `scan` / `tap` parsed into `detail`."""

    device_id: str
    channel: str
    body: Any
    detail: ScanData | TapData | None = None


def parse_topic(prefix: str, topic: str) -> tuple[str, str]:
    """(device_id, channel) of `{prefix}/devices/{device_id}/{channel}`; the channel may be `cmd`."""
    parts = topic.split("/")
    base = prefix.split("/")
    if parts[: len(base)] != base or len(parts) != len(base) + 3 or parts[len(base)] != "devices":
        raise DeviceMessageError("bad_topic", f"unexpected topic {topic!r}")
    device_id, channel = parts[len(base) + 1], parts[len(base) + 2]
    if not DEVICE_ID_RE.fullmatch(device_id):
        raise DeviceMessageError("bad_device_id", f"invalid device id {device_id!r}")
    if channel not in DEVICE_CHANNELS and channel != COMMAND_CHANNEL:
        raise DeviceMessageError("bad_topic", f"unknown channel {channel!r}", device_id)
    return device_id, channel


def parse_device_message(prefix: str, topic: str, payload: bytes, max_bytes: int) -> DeviceMessage:
    """Validate one in-store message (not `cmd`); raises DeviceMessageError with a counted reason."""
    device_id, channel = parse_topic(prefix, topic)
    if channel == COMMAND_CHANNEL:
        raise DeviceMessageError("bad_topic", "cmd is the agent's channel", device_id)
    if len(payload) > max_bytes:
        raise DeviceMessageError("too_large", f"{len(payload)} bytes, the limit is {max_bytes}", device_id)
    if channel in RETAINED_CHANNELS and not payload:
        # An empty payload is how a retained message is deleted (mosquitto_pub -r -n): nothing to validate.
        return DeviceMessage(device_id, channel, None)
    if channel == "availability":
        if payload not in (b"online", b"offline"):
            raise DeviceMessageError("bad_availability", "availability must be 'online' or 'offline'", device_id)
        return DeviceMessage(device_id, channel, payload == b"online")
    try:
        body = loads_strict(payload)
    except StrictJsonError as exc:
        raise DeviceMessageError("malformed_json", f"not valid UTF-8 JSON: {exc}", device_id) from None
    if not isinstance(body, dict):
        raise DeviceMessageError("not_object", f"expected a JSON object, got {type(body).__name__}", device_id)
    if channel == "announce":
        try:
            return DeviceMessage(device_id, channel, Announce.model_validate(body))
        except ValidationError as exc:
            raise DeviceMessageError("bad_announce", _summary(exc), device_id) from None
    if channel == "event":
        return _parse_event(device_id, body)
    return DeviceMessage(device_id, channel, body)


def _parse_event(device_id: str, body: dict[str, Any]) -> DeviceMessage:
    try:
        event = EventBody.model_validate(body)
        detail: ScanData | TapData | None = None
        if event.kind == "scan":
            detail = ScanData.model_validate(event.data)
        elif event.kind == "tap":
            detail = TapData.model_validate(event.data)
    except ValidationError as exc:
        raise DeviceMessageError("bad_event", _summary(exc), device_id) from None
    return DeviceMessage(device_id, "event", event, detail)


def _summary(exc: ValidationError) -> str:
    """The first few problems, by field path; never the offending values (they may be huge)."""
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {e['msg']}" for e in exc.errors()[:3]]
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")
