"""Link-layer frames of the base-station protocol (docs/base-station-protocol.md section 2). Sans-IO.

On the wire a frame is `COBS(body || CRC-32(body) as 4 bytes little-endian) || 0x00`. The body's first
byte holds the frame kind (high nibble) and the channel (low nibble):

    DATA       0x1c  seq:u16  payload...            one message, on channel c (0 urgent, 1 bulk)
    ACK        0x2c  next:u16  sack:u32             cumulative ack of channel c + selective bitmap
    HELLO      0x30  version:u8  session:u32  max_payload:u16  window:u8
    HELLO_ACK  0x40  version:u8  session:u32  max_payload:u16  window:u8  peer_session:u32

All integers little-endian. CRC-32 is the IEEE 802.3 polynomial (zlib.crc32).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from firmware_bridge.cobs import CobsError, cobs_decode, cobs_encode

PROTOCOL_VERSION = 1
URGENT = 0
BULK = 1
CHANNELS = (URGENT, BULK)

KIND_DATA = 0x1
KIND_ACK = 0x2
KIND_HELLO = 0x3
KIND_HELLO_ACK = 0x4

# Largest payload of one DATA frame; the link may use smaller ones (it adapts to the line's quality).
MAX_PAYLOAD = 1024
# A frame body never exceeds this; longer runs between delimiters are garbage and are discarded.
MAX_BODY = MAX_PAYLOAD + 3
MAX_WIRE = MAX_BODY + 4 + (MAX_BODY + 4) // 254 + 2
SACK_BITS = 32


class FrameError(ValueError):
    """A frame that cannot be decoded: bad COBS, bad CRC, unknown kind, wrong length."""


@dataclass(frozen=True, slots=True)
class DataFrame:
    channel: int
    seq: int
    payload: bytes

    def body(self) -> bytes:
        return bytes([KIND_DATA << 4 | self.channel]) + struct.pack("<H", self.seq) + self.payload


@dataclass(frozen=True, slots=True)
class AckFrame:
    channel: int
    next_expected: int
    sack: int = 0  # bit i set: seq next_expected + 1 + i was received

    def body(self) -> bytes:
        return bytes([KIND_ACK << 4 | self.channel]) + struct.pack("<HI", self.next_expected, self.sack)


@dataclass(frozen=True, slots=True)
class HelloFrame:
    version: int
    session: int
    max_payload: int
    window: int

    def body(self) -> bytes:
        return bytes([KIND_HELLO << 4]) + struct.pack(
            "<BIHB", self.version, self.session, self.max_payload, self.window
        )


@dataclass(frozen=True, slots=True)
class HelloAckFrame:
    version: int
    session: int
    max_payload: int
    window: int
    peer_session: int

    def body(self) -> bytes:
        return bytes([KIND_HELLO_ACK << 4]) + struct.pack(
            "<BIHBI", self.version, self.session, self.max_payload, self.window, self.peer_session
        )


Frame = DataFrame | AckFrame | HelloFrame | HelloAckFrame


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def to_wire(frame: Frame) -> bytes:
    body = frame.body()
    return cobs_encode(body + struct.pack("<I", crc32(body))) + b"\x00"


def parse_body(body: bytes) -> Frame:
    """Decode a frame body (CRC already checked and stripped)."""
    if not body:
        raise FrameError("empty frame")
    kind, channel = body[0] >> 4, body[0] & 0x0F
    rest = body[1:]
    if kind == KIND_DATA:
        if channel not in CHANNELS:
            raise FrameError(f"unknown channel {channel}")
        if len(rest) < 2:
            raise FrameError("DATA frame too short")
        if len(rest) - 2 > MAX_PAYLOAD:
            raise FrameError(f"DATA payload of {len(rest) - 2} bytes exceeds {MAX_PAYLOAD}")
        (seq,) = struct.unpack_from("<H", rest)
        return DataFrame(channel, seq, bytes(rest[2:]))
    if kind == KIND_ACK:
        if channel not in CHANNELS:
            raise FrameError(f"unknown channel {channel}")
        if len(rest) != 6:
            raise FrameError("ACK frame must be 7 bytes")
        nxt, sack = struct.unpack("<HI", rest)
        return AckFrame(channel, nxt, sack)
    if kind == KIND_HELLO:
        if len(rest) != 8:
            raise FrameError("HELLO frame must be 9 bytes")
        return HelloFrame(*struct.unpack("<BIHB", rest))
    if kind == KIND_HELLO_ACK:
        if len(rest) != 12:
            raise FrameError("HELLO_ACK frame must be 13 bytes")
        return HelloAckFrame(*struct.unpack("<BIHBI", rest))
    raise FrameError(f"unknown frame kind 0x{kind:x}")


def from_wire(encoded: bytes) -> Frame:
    """Decode one frame as found between two delimiters (without the 0x00)."""
    try:
        raw = cobs_decode(encoded)
    except CobsError as exc:
        raise FrameError(str(exc)) from None
    if len(raw) < 5:
        raise FrameError("frame shorter than its CRC")
    body, (crc,) = raw[:-4], struct.unpack("<I", raw[-4:])
    if crc32(body) != crc:
        raise FrameError("CRC mismatch")
    return parse_body(body)


@dataclass
class DecoderStats:
    frames: int = 0
    crc_errors: int = 0
    bad_frames: int = 0
    overruns: int = 0
    garbage_bytes: int = 0


class FrameDecoder:
    """Turns a byte stream into frames; resynchronises at the next 0x00 after garbage.

    Memory is bounded: a run longer than MAX_WIRE without a delimiter is discarded (counted as an
    overrun) and the decoder waits for the next delimiter.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._discarding = False
        self.stats = DecoderStats()

    def feed(self, data: bytes) -> Iterator[Frame]:
        start = 0
        while True:
            end = data.find(b"\x00", start)
            if end < 0:
                self._append(data[start:])
                return
            self._append(data[start:end])
            chunk, self._buf = bytes(self._buf), bytearray()
            discarding, self._discarding = self._discarding, False
            start = end + 1
            if discarding or not chunk:
                continue
            try:
                frame = from_wire(chunk)
            except FrameError as exc:
                if "CRC" in str(exc):
                    self.stats.crc_errors += 1
                else:
                    self.stats.bad_frames += 1
                self.stats.garbage_bytes += len(chunk)
                continue
            self.stats.frames += 1
            yield frame

    def _append(self, data: bytes) -> None:
        if self._discarding:
            self.stats.garbage_bytes += len(data)
            return
        self._buf += data
        if len(self._buf) > MAX_WIRE:
            self.stats.overruns += 1
            self.stats.garbage_bytes += len(self._buf)
            self._buf = bytearray()
            self._discarding = True

    @property
    def buffered(self) -> int:
        return len(self._buf)
