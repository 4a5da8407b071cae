"""The event envelope, event classes and their full-outbox policies.

Every event carries a UUIDv7 `event_id` (for deduplication), a per-agent `seq` that only grows and is
never reused across restarts (for ordering and gap detection), the `boot` counter, `store_id`, `type`,
`ts` (UTC, millisecond precision) and `payload`. See docs/cloud-contract.md.
"""

from __future__ import annotations

import enum
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import uuid_utils

ENVELOPE_VERSION = 1

# `order.created`, `pickup.collected`, `telemetry.device`: dotted lowercase words, at least two.
EVENT_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}(\.[a-z][a-z0-9_]{0,39}){1,3}$")

# The payload of one event, serialised; larger payloads belong in the cloud's object storage.
MAX_PAYLOAD_BYTES = 256 * 1024


class EventClass(enum.StrEnum):
    """How an event is treated when the outbox is full (DESIGN.md section 7)."""

    # Orders, pickups, scans, alarms, audit records: never dropped. When full they are refused with
    # OutboxFullError, an alarm and a metric. They may use the reserve kept back from other classes.
    CRITICAL = "critical"
    # Other business events (device lifecycle, tag updates, command results): never dropped either,
    # but refused earlier, once the outbox reaches the reserve kept for critical events.
    STANDARD = "standard"
    # Periodic readings: when full, the oldest telemetry is dropped to make room.
    TELEMETRY = "telemetry"


CRITICAL_PREFIXES = ("order.", "pickup.", "pick.", "scan.", "alarm.", "audit.")
TELEMETRY_PREFIXES = ("telemetry.",)


class EventError(ValueError):
    """An event that cannot be accepted as given (bad type, payload not JSON, too large)."""


def classify(event_type: str) -> EventClass:
    if event_type.startswith(CRITICAL_PREFIXES):
        return EventClass.CRITICAL
    if event_type.startswith(TELEMETRY_PREFIXES):
        return EventClass.TELEMETRY
    return EventClass.STANDARD


def validate_event_type(event_type: str) -> None:
    if not isinstance(event_type, str) or not EVENT_TYPE_RE.fullmatch(event_type):
        raise EventError(
            f"invalid event type {event_type!r}: expected dotted lowercase words such as 'order.created'"
        )


def encode_payload(payload: Any) -> str:
    """Serialise a payload once, up front, so a bad one fails in the producer with a clear error."""
    if not isinstance(payload, dict):
        raise EventError(f"event payload must be a JSON object, got {type(payload).__name__}")
    try:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise EventError(f"event payload is not JSON-serialisable: {exc}") from exc
    if len(text.encode()) > MAX_PAYLOAD_BYTES:
        raise EventError(f"event payload is {len(text.encode())} bytes, more than {MAX_PAYLOAD_BYTES}")
    return text


def new_event_id() -> str:
    return str(uuid_utils.uuid7())


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def format_ts(ms: int) -> str:
    """UTC timestamp with milliseconds, e.g. `2026-11-22T18:13:00.123Z`."""
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def render_envelope(
    *, event_id: str, seq: int, boot: int, store_id: str, event_type: str, ts_ms: int, payload_json: str
) -> bytes:
    """The wire form of an event.

    Built by formatting rather than json.dumps of a dict: every field but the payload is validated to
    need no escaping (UUID, integers, checked type and store id, fixed-format time), and the payload was
    serialised once by `encode_payload`. This keeps the writer's hot path short.
    """
    return (
        f'{{"v":{ENVELOPE_VERSION},"event_id":"{event_id}","seq":{seq},"boot":{boot},'
        f'"store_id":"{store_id}","type":"{event_type}","ts":"{format_ts(ts_ms)}",'
        f'"payload":{payload_json}}}'
    ).encode()


@dataclass(frozen=True, slots=True)
class Event:
    """An event as committed to the outbox."""

    event_id: str
    seq: int
    boot: int
    store_id: str
    type: str
    ts_ms: int
    payload: dict[str, Any]

    @property
    def cls(self) -> EventClass:
        return classify(self.type)

    def to_wire(self) -> dict[str, Any]:
        return {
            "v": ENVELOPE_VERSION,
            "event_id": self.event_id,
            "seq": self.seq,
            "boot": self.boot,
            "store_id": self.store_id,
            "type": self.type,
            "ts": format_ts(self.ts_ms),
            "payload": self.payload,
        }
