"""Messages carried in DATA frames (docs/base-station-protocol.md section 3). Sans-IO.

The first byte is the message type; requests from the agent are 0x01-0x7f, messages from the base
station 0x80-0xff. Tag ids are 8 bytes (shown as 16 hex digits), picture hashes 8 bytes (the first 8
bytes of SHA-256 of the raw planes, firmware_bridge.picture). Integers are little-endian.

Every message is a frozen dataclass with `to_bytes()`; `decode_message(payload)` parses any of them.
Each fixed part is described by a struct format and the field names it fills, in order; a message may
end with one variable-length `bytes` field (a chunk of picture data, a list of tags).
"""

from __future__ import annotations

import struct
from dataclasses import astuple, dataclass, fields
from typing import Any, ClassVar, TypeVar

NO_HASH = bytes(8)
# A one-byte no-op: what the link puts in place of a frame it gave up on (see link.py).
NOP = b"\x00"
ALL_TAGS = b"\xff" * 8


class MessageError(ValueError):
    """A payload that is not a valid message."""


class Encoding:
    """How a picture's bytes are sent (firmware_bridge.picture)."""

    RAW = 0
    ZLIB = 1
    DELTA_ZLIB = 2


class FailReason:
    HASH_MISMATCH = 1
    BASE_UNKNOWN = 2
    OUT_OF_RANGE = 3
    CANCELLED = 4
    LOW_BATTERY = 5
    BUSY = 6
    UNKNOWN_TAG = 7
    BAD_ENCODING = 8
    RESET = 9

    NAMES: ClassVar[dict[int, str]] = {
        1: "hash_mismatch",
        2: "base_unknown",
        3: "out_of_range",
        4: "cancelled",
        5: "low_battery",
        6: "busy",
        7: "unknown_tag",
        8: "bad_encoding",
        9: "base_station_reset",
    }


class Status:
    OK = 0
    UNKNOWN_TAG = 1
    BUSY = 2
    INVALID = 3


M = TypeVar("M", bound="Message")


@dataclass(frozen=True, slots=True)
class Message:
    TYPE: ClassVar[int] = 0
    FMT: ClassVar[str] = ""  # struct format of the fixed fields, in declaration order
    TAIL: ClassVar[bool] = False  # whether the last field is variable-length bytes

    def to_bytes(self) -> bytes:
        values = astuple(self)
        if self.TAIL:
            return bytes([self.TYPE]) + struct.pack("<" + self.FMT, *values[:-1]) + bytes(values[-1])
        return bytes([self.TYPE]) + struct.pack("<" + self.FMT, *values)

    @classmethod
    def from_payload(cls: type[M], body: bytes) -> M:
        size = struct.calcsize("<" + cls.FMT)
        if len(body) < size or (not cls.TAIL and len(body) != size):
            raise MessageError(f"{cls.__name__}: {len(body)} bytes, expected {'at least ' if cls.TAIL else ''}{size}")
        values: list[Any] = list(struct.unpack_from("<" + cls.FMT, body))
        if cls.TAIL:
            values.append(bytes(body[size:]))
        return cls(*values)


# -- agent -> base station -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GetInfo(Message):
    TYPE = 0x01
    FMT = "H"
    req: int


@dataclass(frozen=True, slots=True)
class ListTags(Message):
    TYPE = 0x02
    FMT = "HHB"
    req: int
    offset: int
    limit: int


@dataclass(frozen=True, slots=True)
class PushBegin(Message):
    """Start of a full picture: encoding RAW or ZLIB, `size` bytes of encoded data follow in chunks."""

    TYPE = 0x03
    FMT = "H8sBIB"
    xfer: int
    tag: bytes
    encoding: int
    size: int
    page: int


@dataclass(frozen=True, slots=True)
class PushChunk(Message):
    TYPE = 0x04
    FMT = "HI"
    TAIL = True
    xfer: int
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class PushEnd(Message):
    """All chunks sent; `hash` is the hash of the decoded raw picture, checked by the base station."""

    TYPE = 0x05
    FMT = "H8s"
    xfer: int
    hash: bytes


@dataclass(frozen=True, slots=True)
class DeltaBegin(Message):
    """Start of a delta (DELTA_ZLIB) against the picture `base_hash` the tag holds."""

    TYPE = 0x06
    FMT = "H8sBI8sB"
    xfer: int
    tag: bytes
    encoding: int
    size: int
    base_hash: bytes
    page: int


@dataclass(frozen=True, slots=True)
class LedFlash(Message):
    TYPE = 0x07
    FMT = "H8sBBH"
    req: int
    tag: bytes
    colour: int  # 1 red, 2 green, 3 blue, 4 white; 0 stops flashing
    count: int
    period_ms: int


@dataclass(frozen=True, slots=True)
class SetPage(Message):
    TYPE = 0x08
    FMT = "H8sB"
    req: int
    tag: bytes
    page: int


@dataclass(frozen=True, slots=True)
class SetFast(Message):
    """Fast check-in: from its next check-in the tag listens all the time for `seconds` (0: back to normal at
    once). Bounded, so a host that forgets to end it cannot drain the tags' batteries."""

    TYPE = 0x0A
    FMT = "H8sH"
    req: int
    tag: bytes
    seconds: int


@dataclass(frozen=True, slots=True)
class Cancel(Message):
    TYPE = 0x09
    FMT = "H"
    xfer: int


# -- base station -> agent -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Info(Message):
    TYPE = 0x81
    FMT = "HBH8sBHBI"
    req: int
    protocol: int
    firmware: int
    serial: bytes
    radio_channel: int
    tags: int
    max_transfers: int
    air_rate: int


@dataclass(frozen=True, slots=True)
class TagList(Message):
    """`entries` is `count` records of tag:8s type:B hash:8s (17 bytes each)."""

    TYPE = 0x82
    FMT = "HHHB"
    TAIL = True
    req: int
    total: int
    offset: int
    count: int
    entries: bytes

    ENTRY: ClassVar[struct.Struct] = struct.Struct("<8sB8s")

    def records(self) -> list[tuple[bytes, int, bytes]]:
        size = self.ENTRY.size
        if len(self.entries) != self.count * size:
            raise MessageError("TagList: entries do not match count")
        return [self.ENTRY.unpack_from(self.entries, i * size) for i in range(self.count)]


@dataclass(frozen=True, slots=True)
class Result(Message):
    """Answer to LED_FLASH and SET_PAGE (and GET_INFO/LIST_TAGS errors)."""

    TYPE = 0x83
    FMT = "HB"
    req: int
    status: int


@dataclass(frozen=True, slots=True)
class TransferStored(Message):
    """The base station holds the whole picture (hash verified) and will deliver it over the air."""

    TYPE = 0x84
    FMT = "H8s"
    xfer: int
    tag: bytes


@dataclass(frozen=True, slots=True)
class TagCheckin(Message):
    TYPE = 0x90
    FMT = "8sBHhbBH8sB"
    tag: bytes
    type_code: int
    battery_mv: int
    temperature_dc: int  # tenths of a degree Celsius
    rssi: int
    lqi: int
    firmware: int
    hash: bytes
    page: int


@dataclass(frozen=True, slots=True)
class ButtonPress(Message):
    TYPE = 0x91
    FMT = "8sB"
    tag: bytes
    button: int


@dataclass(frozen=True, slots=True)
class TransferDone(Message):
    """The tag shows the picture: `hash` is the hash the tag computed over what it now displays."""

    TYPE = 0x92
    FMT = "H8s8s"
    xfer: int
    tag: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class TransferFailed(Message):
    TYPE = 0x93
    FMT = "H8sB"
    xfer: int
    tag: bytes
    reason: int


@dataclass(frozen=True, slots=True)
class TagDiscovered(Message):
    TYPE = 0x94
    FMT = "8sBH"
    tag: bytes
    type_code: int
    firmware: int


MESSAGE_TYPES: dict[int, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        GetInfo,
        ListTags,
        PushBegin,
        PushChunk,
        PushEnd,
        DeltaBegin,
        LedFlash,
        SetPage,
        SetFast,
        Cancel,
        Info,
        TagList,
        Result,
        TransferStored,
        TagCheckin,
        ButtonPress,
        TransferDone,
        TransferFailed,
        TagDiscovered,
    )
}

# Bytes a PushChunk adds around its data: type, xfer, offset.
CHUNK_OVERHEAD = 1 + struct.calcsize("<HI")


def decode_message(payload: bytes) -> Message:
    if not payload:
        raise MessageError("empty message")
    cls = MESSAGE_TYPES.get(payload[0])
    if cls is None:
        raise MessageError(f"unknown message type 0x{payload[0]:02x}")
    try:
        return cls.from_payload(payload[1:])
    except struct.error as exc:
        raise MessageError(f"{cls.__name__}: {exc}") from None


def tag_hex(tag: bytes) -> str:
    return tag.hex()


def tag_bytes(tag_id: str) -> bytes:
    raw = bytes.fromhex(tag_id)
    if len(raw) != 8:
        raise ValueError(f"tag id must be 16 hex digits, got {tag_id!r}")
    return raw


def field_names(cls: type[Message]) -> list[str]:
    return [f.name for f in fields(cls)]
