"""Kerong KR-CU16 lock boards on RS485 (docs/lock-boards.md section 2). Sans-IO: frames, checksum, decoder.

Every frame starts with STX 0x02 and ends with ETX 0x03 followed by SUM, the low byte of the sum of all
bytes before it (STX and ETX included):

    request (host -> board)         02 ADDR CMD 03 SUM                         5 bytes
    lock reply (0x30, 0x31)         02 ADDR CMD STATE 03 SUM                   6 bytes (assumed, see below)
    status reply (0x32, 0x33)       02 ADDR CMD H1-8 H9-16 IR1-8 IR9-16 03 SUM   9 bytes

ADDR holds the board number (0-15) in its high nibble and the lock number minus one (0-15) in its low
nibble: board 0 lock 1 is 0x00, board 1 lock 3 is 0x12. Board-wide commands (0x32, 0x33) carry lock
nibble 0. Unlocking board 0 lock 1 is `02 00 31 03 36`.

Bit order (ours, stated once and used everywhere): in H1-8 bit 0 (the least significant) is lock 1 and
bit 7 is lock 8; in H9-16 bit 0 is lock 9 and bit 7 lock 16; IR bytes likewise. A hook bit of 1 means
locked (door closed and latched); an IR bit of 1 means an item is inside. In this module the four bytes
become two 16-bit masks, bit (lock - 1) for each lock.

The vendor documentation we rely on gives the 9-byte status reply; it does not pin down the replies to
0x30 and 0x31. Boards answer them in one of two forms, and the decoder takes both (their ETX and SUM tell
them apart): 6 bytes with one STATE byte (bit 0 hook, bit 1 IR; what our emulator sends by default), or
the 9-byte status form of the whole board with the command byte 0x30 or 0x31 (what other public drivers
expect); from the latter the addressed lock's two bits become the same STATE. The driver (kerong/bus.py)
never depends on that byte: a single-lock read is a 0x32 status read, and an unlock reply only tells the
driver that the board heard the command; the outcome always comes from a 0x32 status read.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

STX = 0x02
ETX = 0x03
BOARDS = 16
LOCKS_PER_BOARD = 16
REQUEST_LEN = 5
LOCK_REPLY_LEN = 6
STATUS_REPLY_LEN = 9
# No frame is longer than a status reply; the decoder never holds more than this many bytes of a frame.
MAX_FRAME = STATUS_REPLY_LEN
MAX_BUFFER = 64

STATE_HOOK = 0x01  # STATE byte of a 6-byte lock reply: latched
STATE_ITEM = 0x02  # ... and an item inside


class Command(enum.IntEnum):
    READ_LOCK = 0x30
    UNLOCK = 0x31
    READ_ALL = 0x32
    UNLOCK_ALL = 0x33


BOARD_COMMANDS = (Command.READ_ALL, Command.UNLOCK_ALL)
# The lengths a reply to each command may have, the shorter tried first (see the module docs).
REPLY_LENGTHS = {
    Command.READ_LOCK: (LOCK_REPLY_LEN, STATUS_REPLY_LEN),
    Command.UNLOCK: (LOCK_REPLY_LEN, STATUS_REPLY_LEN),
    Command.READ_ALL: (STATUS_REPLY_LEN,),
    Command.UNLOCK_ALL: (STATUS_REPLY_LEN,),
}


class KerongFrameError(ValueError):
    """Bytes that are not a valid Kerong frame: wrong length, STX, ETX, SUM, command or address."""


def checksum(data: bytes) -> int:
    """SUM: the low byte of the sum of every byte given (all bytes of a frame before SUM)."""
    return sum(data) & 0xFF


def address(board: int, lock: int = 1) -> int:
    """ADDR byte: board number in the high nibble, lock number minus one in the low nibble."""
    if not 0 <= board < BOARDS:
        raise ValueError(f"board number must be within 0..{BOARDS - 1}, got {board}")
    if not 1 <= lock <= LOCKS_PER_BOARD:
        raise ValueError(f"lock number must be within 1..{LOCKS_PER_BOARD}, got {lock}")
    return board << 4 | (lock - 1)


def _seal(body: bytes) -> bytes:
    frame = bytes([STX]) + body + bytes([ETX])
    return frame + bytes([checksum(frame)])


def _unseal(data: bytes, length: int) -> bytes:
    """Check STX, ETX, SUM and length; returns the bytes between STX and ETX."""
    if len(data) != length:
        raise KerongFrameError(f"expected {length} bytes, got {len(data)}")
    if data[0] != STX:
        raise KerongFrameError(f"expected STX 0x02, got 0x{data[0]:02x}")
    if data[-2] != ETX:
        raise KerongFrameError(f"expected ETX 0x03, got 0x{data[-2]:02x}")
    if checksum(data[:-1]) != data[-1]:
        raise KerongFrameError(f"checksum 0x{data[-1]:02x}, expected 0x{checksum(data[:-1]):02x}")
    return bytes(data[1:-2])


def _command(value: int) -> Command:
    try:
        return Command(value)
    except ValueError:
        raise KerongFrameError(f"unknown command 0x{value:02x}") from None


def _bit(mask: int, lock: int) -> bool:
    if not 1 <= lock <= LOCKS_PER_BOARD:
        raise ValueError(f"lock number must be within 1..{LOCKS_PER_BOARD}, got {lock}")
    return bool(mask >> (lock - 1) & 1)


@dataclass(frozen=True, slots=True)
class Request:
    """Host to board. Board-wide commands (READ_ALL, UNLOCK_ALL) use lock 1 (address nibble 0)."""

    command: Command
    board: int
    lock: int = 1

    def __post_init__(self) -> None:
        address(self.board, self.lock)  # validates both

    @property
    def address(self) -> int:
        return address(self.board, self.lock)

    def to_bytes(self) -> bytes:
        return _seal(bytes([self.address, self.command]))

    @classmethod
    def from_bytes(cls, data: bytes) -> Request:
        addr, cmd = _unseal(data, REQUEST_LEN)
        return cls(_command(cmd), addr >> 4, (addr & 0x0F) + 1)


@dataclass(frozen=True, slots=True)
class LockReply:
    """Board to host after READ_LOCK or UNLOCK: 02 ADDR CMD STATE 03 SUM (format assumed, see above)."""

    address: int
    command: Command
    state: int  # bit 0: hook (1 = latched), bit 1: IR (1 = item inside)

    def __post_init__(self) -> None:
        if self.command not in (Command.READ_LOCK, Command.UNLOCK):
            raise ValueError(f"a lock reply answers 0x30 or 0x31, not 0x{self.command:02x}")
        if not (0 <= self.address <= 0xFF and 0 <= self.state <= 0xFF):
            raise ValueError("address and state are single bytes")

    @property
    def locked(self) -> bool:
        return bool(self.state & STATE_HOOK)

    @property
    def item(self) -> bool:
        return bool(self.state & STATE_ITEM)

    def to_bytes(self) -> bytes:
        return _seal(bytes([self.address, self.command, self.state]))

    def to_status_bytes(self, hooks: int, items: int) -> bytes:
        """The 9-byte form of this reply: the whole board's masks (which must agree with `state`)."""
        return _seal(bytes([self.address, self.command, hooks & 0xFF, hooks >> 8, items & 0xFF, items >> 8]))

    @classmethod
    def from_bytes(cls, data: bytes) -> LockReply:
        """Either form: 6 bytes with STATE, or 9 bytes with the whole board's masks."""
        if len(data) == STATUS_REPLY_LEN:
            addr, cmd, h_lo, h_hi, ir_lo, ir_hi = _unseal(data, STATUS_REPLY_LEN)
            lock = (addr & 0x0F) + 1
            state = (STATE_HOOK if _bit(h_lo | h_hi << 8, lock) else 0) | (
                STATE_ITEM if _bit(ir_lo | ir_hi << 8, lock) else 0
            )
        else:
            addr, cmd, state = _unseal(data, LOCK_REPLY_LEN)
        command = _command(cmd)
        if command not in (Command.READ_LOCK, Command.UNLOCK):
            raise KerongFrameError(f"command 0x{cmd:02x} is not answered by a lock reply")
        return cls(addr, command, state)


@dataclass(frozen=True, slots=True)
class StatusReply:
    """Board to host after READ_ALL or UNLOCK_ALL: 02 ADDR CMD H1-8 H9-16 IR1-8 IR9-16 03 SUM.

    `hooks` and `items` are 16-bit masks, bit (lock - 1) for each lock (bit 0 of H1-8 is lock 1).
    """

    address: int
    command: Command
    hooks: int
    items: int

    def __post_init__(self) -> None:
        if self.command not in BOARD_COMMANDS:
            raise ValueError(f"a status reply answers 0x32 or 0x33, not 0x{self.command:02x}")
        if not (0 <= self.address <= 0xFF and 0 <= self.hooks <= 0xFFFF and 0 <= self.items <= 0xFFFF):
            raise ValueError("address is one byte, hooks and items 16-bit masks")

    @property
    def board(self) -> int:
        return self.address >> 4

    def locked(self, lock: int) -> bool:
        return _bit(self.hooks, lock)

    def item(self, lock: int) -> bool:
        return _bit(self.items, lock)

    def to_bytes(self) -> bytes:
        return _seal(
            bytes([self.address, self.command, self.hooks & 0xFF, self.hooks >> 8, self.items & 0xFF, self.items >> 8])
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> StatusReply:
        addr, cmd, h_lo, h_hi, ir_lo, ir_hi = _unseal(data, STATUS_REPLY_LEN)
        command = _command(cmd)
        if command not in BOARD_COMMANDS:
            raise KerongFrameError(f"command 0x{cmd:02x} does not have a 9-byte reply")
        return cls(addr, command, h_lo | h_hi << 8, ir_lo | ir_hi << 8)


def masks(states: list[tuple[bool, bool]]) -> tuple[int, int]:
    """(hooks, items) masks from per-lock (locked, item) pairs, index 0 being lock 1."""
    hooks = items = 0
    for i, (locked, item) in enumerate(states[:LOCKS_PER_BOARD]):
        hooks |= int(locked) << i
        items |= int(item) << i
    return hooks, items


Reply = LockReply | StatusReply
Frame = Request | LockReply | StatusReply


def parse_reply(data: bytes) -> Reply:
    """A whole reply of either length."""
    if len(data) < 3:
        raise KerongFrameError("too short for a reply")
    if data[2] in (Command.READ_LOCK, Command.UNLOCK):
        return LockReply.from_bytes(data)
    if data[2] in BOARD_COMMANDS:
        return StatusReply.from_bytes(data)
    raise KerongFrameError(f"unknown command 0x{data[2]:02x}")


@dataclass
class DecoderStats:
    frames: int = 0
    checksum_errors: int = 0
    bad_frames: int = 0  # STX with a wrong ETX, an unknown command or an impossible field
    garbage_bytes: int = 0


class FrameDecoder:
    """Turns a byte stream into frames, resynchronising after garbage. Sans-IO, bounded memory.

    `replies=True` decodes what boards send (6- or 9-byte replies, the length told by the CMD byte),
    `replies=False` what the host sends (5-byte requests; the emulator's side). The decoder looks for
    STX; once enough bytes are there it checks ETX and SUM; on any mismatch it drops that STX byte and
    looks for the next one, so a frame that starts inside garbage is still found. It never holds more
    than MAX_BUFFER bytes (only the last MAX_FRAME can still start a frame).
    """

    def __init__(self, *, replies: bool) -> None:
        self.replies = replies
        self._buf = bytearray()
        self.stats = DecoderStats()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def reset(self) -> None:
        """Forget what is buffered (the host does this before each request: stale bytes are not answers)."""
        self.stats.garbage_bytes += len(self._buf)
        self._buf.clear()

    def _lengths(self, cmd: int) -> tuple[int, ...]:
        if cmd not in _COMMAND_VALUES:
            return ()
        return REPLY_LENGTHS[Command(cmd)] if self.replies else (REQUEST_LEN,)

    def feed(self, data: bytes) -> Iterator[Frame]:
        for start in range(0, len(data), MAX_BUFFER):
            self._buf += data[start : start + MAX_BUFFER]
            yield from self._drain()
            if len(self._buf) > MAX_BUFFER:  # cannot happen (_drain leaves < MAX_FRAME), kept as a guard
                self.stats.garbage_bytes += len(self._buf) - MAX_FRAME
                del self._buf[: len(self._buf) - MAX_FRAME]

    def _drain(self) -> Iterator[Frame]:
        buf = self._buf
        while True:
            stx = buf.find(STX)
            if stx < 0:
                self.stats.garbage_bytes += len(buf)
                buf.clear()
                return
            if stx:
                self.stats.garbage_bytes += stx
                del buf[:stx]
            if len(buf) < 3:
                return
            lengths = self._lengths(buf[2])
            if not lengths:
                self.stats.bad_frames += 1
                self._skip()
                continue
            found: bytes | None = None
            sum_wrong = False
            for length in lengths:
                if len(buf) < length:
                    return  # a longer form may still complete
                candidate = bytes(buf[:length])
                if candidate[-2] != ETX:
                    continue
                if checksum(candidate[:-1]) != candidate[-1]:
                    sum_wrong = True
                    continue
                found = candidate
                break
            if found is None:
                if sum_wrong:
                    self.stats.checksum_errors += 1
                else:
                    self.stats.bad_frames += 1
                self._skip()
                continue
            try:
                frame: Frame = parse_reply(found) if self.replies else Request.from_bytes(found)
            except (KerongFrameError, ValueError):
                self.stats.bad_frames += 1
                self._skip()
                continue
            del buf[: len(found)]
            self.stats.frames += 1
            yield frame

    def _skip(self) -> None:
        self.stats.garbage_bytes += 1
        del self._buf[:1]


_COMMAND_VALUES = frozenset(int(c) for c in Command)
