"""Kerong KR-CU16 lock boards: byte vectors from docs/lock-boards.md, Hypothesis round trips and garbage
streams, and the driver (KerongBus, KerongBoard) against the lock-board emulator over a real pty."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.kerong import (
    MAX_BUFFER,
    Command,
    FrameDecoder,
    KerongFrameError,
    LockReply,
    Request,
    StatusReply,
    address,
    checksum,
    masks,
    parse_reply,
)

# -- byte vectors (docs/lock-boards.md) -----------------------------------------------------------

REQUEST_VECTORS = [
    (Request(Command.READ_LOCK, 0, 1), "02 00 30 03 35"),
    (Request(Command.UNLOCK, 0, 1), "02 00 31 03 36"),
    (Request(Command.READ_ALL, 0), "02 00 32 03 37"),
    (Request(Command.UNLOCK_ALL, 0), "02 00 33 03 38"),
    (Request(Command.UNLOCK, 1, 3), "02 12 31 03 48"),
    (Request(Command.READ_LOCK, 1, 3), "02 12 30 03 47"),
    (Request(Command.READ_ALL, 1), "02 10 32 03 47"),
    (Request(Command.UNLOCK_ALL, 1), "02 10 33 03 48"),
    (Request(Command.UNLOCK, 15, 16), "02 ff 31 03 35"),
]

REPLY_VECTORS: list[tuple[LockReply | StatusReply, str]] = [
    (StatusReply(0x00, Command.READ_ALL, 0xFFFF, 0x0000), "02 00 32 ff ff 00 00 03 35"),
    (StatusReply(0x10, Command.READ_ALL, 0xFFFB, 0x0005), "02 10 32 fb ff 05 00 03 46"),
    (StatusReply(0x00, Command.UNLOCK_ALL, 0x0000, 0x8001), "02 00 33 00 00 01 80 03 b9"),
    (LockReply(0x12, Command.UNLOCK, 0x00), "02 12 31 00 03 48"),
    (LockReply(0x00, Command.READ_LOCK, 0x03), "02 00 30 03 03 38"),
]


@pytest.mark.parametrize(("request_", "wire"), REQUEST_VECTORS)
def test_request_vectors(request_: Request, wire: str) -> None:
    assert request_.to_bytes() == bytes.fromhex(wire)
    assert Request.from_bytes(bytes.fromhex(wire)) == request_


@pytest.mark.parametrize(("reply", "wire"), REPLY_VECTORS)
def test_reply_vectors(reply: LockReply | StatusReply, wire: str) -> None:
    assert reply.to_bytes() == bytes.fromhex(wire)
    assert parse_reply(bytes.fromhex(wire)) == reply
    assert type(reply).from_bytes(bytes.fromhex(wire)) == reply


def test_address_and_checksum() -> None:
    assert address(0, 1) == 0x00
    assert address(1, 3) == 0x12
    assert address(15, 16) == 0xFF
    assert checksum(bytes.fromhex("02 00 31 03")) == 0x36
    assert checksum(bytes.fromhex("02 00 32 ff ff 00 00 03")) == 0x35  # 0x235: the low byte
    for board, lock in ((16, 1), (-1, 1), (0, 0), (0, 17)):
        with pytest.raises(ValueError):
            address(board, lock)


def test_status_bit_order_lock_1_is_bit_0_of_the_first_byte() -> None:
    # hooks: every lock latched but lock 3 (bit 2 of H1-8); items in lock 1 and lock 3 (IR1-8 = 0x05)
    status = StatusReply.from_bytes(bytes.fromhex("02 10 32 fb ff 05 00 03 46"))
    assert status.board == 1
    assert [status.locked(n) for n in range(1, 17)] == [n != 3 for n in range(1, 17)]
    assert [status.item(n) for n in range(1, 17)] == [n in (1, 3) for n in range(1, 17)]
    # lock 16 is bit 7 of the second byte
    assert StatusReply.from_bytes(StatusReply(0, Command.READ_ALL, 0x8000, 0x0100).to_bytes()).locked(16)
    assert StatusReply(0, Command.READ_ALL, 0x8000, 0x0100).to_bytes()[3:7] == bytes([0x00, 0x80, 0x00, 0x01])
    assert masks([(True, False), (False, True)]) == (0b01, 0b10)


@pytest.mark.parametrize(
    "wire",
    [
        "02 00 31 03 37",  # SUM
        "02 00 31 04 37",  # ETX
        "03 00 31 03 37",  # STX
        "02 00 40 03 45",  # unknown command
        "02 00 31 03",  # short
    ],
)
def test_bad_requests_are_refused(wire: str) -> None:
    with pytest.raises(KerongFrameError):
        Request.from_bytes(bytes.fromhex(wire))


def test_reply_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(KerongFrameError):
        StatusReply.from_bytes(LockReply(0, Command.UNLOCK, 0).to_bytes())
    with pytest.raises(KerongFrameError):
        LockReply.from_bytes(bytes.fromhex("02 00 32 00 03 37"))


# -- Hypothesis -----------------------------------------------------------------------------------

requests = st.builds(Request, st.sampled_from(list(Command)), st.integers(0, 15), st.integers(1, 16))
lock_replies = st.builds(
    LockReply, st.integers(0, 255), st.sampled_from([Command.READ_LOCK, Command.UNLOCK]), st.integers(0, 255)
)
status_replies = st.builds(
    StatusReply,
    st.integers(0, 255),
    st.sampled_from([Command.READ_ALL, Command.UNLOCK_ALL]),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
)
replies = st.one_of(lock_replies, status_replies)


@given(requests)
def test_request_round_trip(request_: Request) -> None:
    assert Request.from_bytes(request_.to_bytes()) == request_


@given(replies)
def test_reply_round_trip(reply: LockReply | StatusReply) -> None:
    assert parse_reply(reply.to_bytes()) == reply


@given(st.lists(replies, max_size=20), st.data())
def test_decoder_finds_replies_between_garbage(frames: list[LockReply | StatusReply], data: st.DataObject) -> None:
    # Garbage without STX never hides a frame; fed in random slices.
    stream = bytearray()
    for frame in frames:
        stream += data.draw(st.binary(max_size=12).map(lambda b: b.replace(b"\x02", b"")))
        stream += frame.to_bytes()
    decoder = FrameDecoder(replies=True)
    got = []
    pos = 0
    while pos < len(stream):
        n = data.draw(st.integers(1, 40))
        got += list(decoder.feed(bytes(stream[pos : pos + n])))
        pos += n
        assert decoder.buffered <= MAX_BUFFER
    assert got == frames


@settings(max_examples=300)
@given(st.binary(max_size=2000), st.booleans(), st.lists(requests, max_size=5))
def test_decoder_never_crashes_on_garbage(garbage: bytes, replies_side: bool, tail: list[Request]) -> None:
    decoder = FrameDecoder(replies=replies_side)
    for i in range(0, len(garbage), 37):
        for _ in decoder.feed(garbage[i : i + 37]):
            pass
        assert decoder.buffered <= MAX_BUFFER
    if not replies_side:
        # After any garbage and a few bytes of silence (no STX, no ETX), frames decode again.
        list(decoder.feed(b"\x00" * 16))
        assert list(decoder.feed(b"".join(r.to_bytes() for r in tail))) == tail


@given(requests)
def test_request_decoder_resyncs_after_a_false_start(request_: Request) -> None:
    decoder = FrameDecoder(replies=False)
    assert list(decoder.feed(b"\x02\x00\x31" + request_.to_bytes())) == [request_]
