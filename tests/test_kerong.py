"""Kerong KR-CU16 lock boards: byte vectors from docs/lock-boards.md, Hypothesis round trips and garbage
streams, and the driver (KerongBus, KerongBoard) against the lock-board emulator over a real pty."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import tty
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.lockers.board import LockBoardError, LockState, UnlockOutcome, UnlockResult
from devices.lockers.kerong import KerongBoard
from firmware_bridge.emulators.kerong import DEFAULT_LINE_RATE, Action, LockBoardEmulator, Person
from firmware_bridge.emulators.pty_line import LineFaults, PtyPort, TcpPort
from firmware_bridge.kerong.bus import KerongBus, KerongBusError
from firmware_bridge.kerong.frames import (
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
@given(st.binary(max_size=2000), st.booleans(), st.lists(requests, max_size=5), st.lists(replies, max_size=5))
def test_decoder_never_crashes_on_garbage(
    garbage: bytes, replies_side: bool, tail_requests: list[Request], tail_replies: list[LockReply | StatusReply]
) -> None:
    decoder = FrameDecoder(replies=replies_side)
    for i in range(0, len(garbage), 37):
        for _ in decoder.feed(garbage[i : i + 37]):
            pass
        assert decoder.buffered <= MAX_BUFFER
    # After any garbage and a few bytes of silence (no STX), frames decode again.
    list(decoder.feed(b"\x00" * 16))
    tail: list[Request] | list[LockReply | StatusReply] = tail_replies if replies_side else tail_requests
    assert list(decoder.feed(b"".join(f.to_bytes() for f in tail))) == tail
    assert decoder.buffered == 0


@given(requests)
def test_request_decoder_resyncs_after_a_false_start(request_: Request) -> None:
    decoder = FrameDecoder(replies=False)
    assert list(decoder.feed(b"\x02\x00\x31" + request_.to_bytes())) == [request_]


# -- the driver against the emulator over a real pty ----------------------------------------------


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, emulator: LockBoardEmulator, **bus_options: Any) -> AsyncIterator[KerongBus]:
    """The emulator on a pty paced at 19200 baud, and a KerongBus that opened it with pyserial."""
    path = tmp_path / "lockers0"
    async with emulator.running(PtyPort(path, line_rate=DEFAULT_LINE_RATE)):
        bus = KerongBus(str(path), reopen_interval_s=0.1, **bus_options)
        async with bus.running(connect_timeout=5):
            yield bus


async def wait_until(predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def read_until(board: KerongBoard, lock: int, predicate: Callable[[LockState], bool]) -> LockState:
    async with asyncio.timeout(5):
        while True:
            state = await board.read(lock)
            if predicate(state):
                return state
            await asyncio.sleep(0.05)


async def test_read_all_reflects_doors_and_items(tmp_path: Path) -> None:
    emulator = LockBoardEmulator(1)
    emulator.set_item(0, 1, True)
    emulator.set_item(0, 16, True)
    emulator.force_open(0, 9)
    async with rig(tmp_path, emulator) as bus:
        board = KerongBoard(bus, 0)
        assert board.board_id == "kerong-0"
        states = await board.read_all()
        assert len(states) == 16
        assert [s.locked for s in states] == [n != 9 for n in range(1, 17)]
        assert [s.item for s in states] == [n in (1, 16) for n in range(1, 17)]
        assert await board.read(16) == LockState(locked=True, item=True)
        emulator.close_door(0, 9)
        assert (await board.read(9)).locked
        assert bus.stats.timeouts == 0
        assert bus.stats.checksum_errors == 0


async def test_unlock_opens_exactly_that_door_and_the_person_shows_in_later_reads(tmp_path: Path) -> None:
    emulator = LockBoardEmulator(1)
    emulator.set_item(0, 5, True)
    emulator.set_person(0, 5, Person(open_after_s=0.2, hold_s=0.6, action=Action.TAKE))
    async with rig(tmp_path, emulator) as bus:
        board = KerongBoard(bus, 0)
        outcome = await board.unlock(5)
        assert outcome.result == UnlockResult.OPENED
        assert outcome.state == LockState(locked=False, item=True)
        assert [r.lock for r in emulator.unlock_log] == [5]
        await wait_until(lambda: emulator.door_open(0, 5))
        assert (await board.read(5)).locked is False
        final = await read_until(board, 5, lambda s: s.locked)  # the door closed and latched again
        assert final == LockState(locked=True, item=False)  # the item was taken
        assert not emulator.door_open(0, 5)
        states = await board.read_all()
        assert all(s.locked for s in states)
        assert [emulator.unlock_count(0, n) for n in range(1, 17)] == [int(n == 5) for n in range(1, 17)]


async def test_a_jammed_lock_gives_not_opened(tmp_path: Path) -> None:
    emulator = LockBoardEmulator(1)
    emulator.set_jammed(0, 2, True)
    async with rig(tmp_path, emulator) as bus:
        outcome = await KerongBoard(bus, 0).unlock(2)
        assert outcome.result == UnlockResult.NOT_OPENED
        assert outcome.state is not None and outcome.state.locked
        assert emulator.unlock_count(0, 2) == 1  # sent once, not retried


async def test_an_unlock_whose_reply_is_lost_is_not_sent_again(tmp_path: Path) -> None:
    emulator = LockBoardEmulator(1, reply_loss=1.0, lose_only=frozenset({Command.UNLOCK}))
    emulator.set_person(0, 7, Person(open_after_s=None))
    async with rig(tmp_path, emulator) as bus:
        outcome = await KerongBoard(bus, 0).unlock(7)
        assert outcome.result == UnlockResult.OPENED  # learned from the status read
        assert bus.stats.unlocks_unanswered == 1
        assert bus.stats.unlocks_sent == 1
        assert bus.stats.timeouts == 1
        assert len(emulator.unlock_log) == 1
        # No status either: UNKNOWN, and still exactly one more unlock on the line.
        emulator.set_reply_loss(1.0)
        outcome = await KerongBoard(bus, 0).unlock(8)
        assert outcome == UnlockOutcome(UnlockResult.UNKNOWN, None)
        assert [(r.board, r.lock) for r in emulator.unlock_log] == [(0, 7), (0, 8)]


async def test_reads_and_unlocks_through_corrupted_bytes_and_missing_replies(tmp_path: Path) -> None:
    faults = LineFaults(corrupt=0.01, seed=3)
    emulator = LockBoardEmulator([0, 1], faults=faults, reply_loss=0.1, seed=3)
    for c in emulator.compartments.values():
        c.person = Person(open_after_s=None)  # an unlocked door stays unlatched: the status read is definitive
        c.item = (c.board + c.lock) % 3 == 0
    async with rig(tmp_path, emulator, timeout_s=0.1, read_retries=5) as bus:
        boards = [KerongBoard(bus, 0), KerongBoard(bus, 1)]
        for _ in range(15):
            for board in boards:
                states = await board.read_all()
                assert [s.item for s in states] == [(board.board_number + n) % 3 == 0 for n in range(1, 17)]
        outcomes: dict[tuple[int, int], UnlockResult] = {}
        for board in boards:
            for lock in range(1, 17):
                outcomes[board.board_number, lock] = (await board.unlock(lock)).result
        for (b, lock), result in outcomes.items():
            count = emulator.unlock_count(b, lock)
            assert count <= 1, (b, lock)  # never sent twice for one call
            if result == UnlockResult.OPENED:
                assert count == 1 and not emulator.latched(b, lock)
            elif result == UnlockResult.NOT_OPENED:
                assert count == 0 and emulator.latched(b, lock)  # the request itself was damaged
        assert sum(r != UnlockResult.UNKNOWN for r in outcomes.values()) >= 30
        assert bus.stats.timeouts > 0 and bus.stats.retries > 0
        assert faults.stats.corrupted > 0 and emulator.counters.replies_dropped > 0


async def test_two_boards_on_one_bus_are_addressed_correctly(tmp_path: Path) -> None:
    emulator = LockBoardEmulator([0, 3])
    emulator.set_item(3, 5, True)
    emulator.force_open(0, 2)
    async with rig(tmp_path, emulator, read_retries=1) as bus:
        b0, b3 = KerongBoard(bus, 0), KerongBoard(bus, 3)
        s0, s3 = await asyncio.gather(b0.read_all(), b3.read_all())  # concurrent callers share the bus
        assert [s.locked for s in s0] == [n != 2 for n in range(1, 17)]
        assert [s.item for s in s0] == [False] * 16
        assert all(s.locked for s in s3)
        assert [s.item for s in s3] == [n == 5 for n in range(1, 17)]
        emulator.set_person(3, 1, Person(open_after_s=None))
        assert (await b3.unlock(1)).result == UnlockResult.OPENED
        assert [(r.board, r.lock) for r in emulator.unlock_log] == [(3, 1)]
        assert emulator.latched(0, 1)
        with pytest.raises(LockBoardError):
            await KerongBoard(bus, 1).read_all()  # nobody answers for board 1
        assert bus.stats.timeouts >= 2  # both attempts for board 1
        assert bus.stats.wrong_address == 0


async def test_a_reply_for_another_board_is_counted_and_not_taken(tmp_path: Path) -> None:
    # A misbehaving board on the line: the test plays it on a raw pty.
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    device = os.ttyname(slave)
    bus = KerongBus(device, timeout_s=0.2, read_retries=0)
    loop = asyncio.get_running_loop()
    got = bytearray()
    wrong = StatusReply(0x10, Command.READ_ALL, 0xFFFF, 0x0001).to_bytes()
    right = StatusReply(0x00, Command.READ_ALL, 0xFFFE, 0x0000).to_bytes()

    def answer() -> None:
        with contextlib.suppress(BlockingIOError):
            got.extend(os.read(master, 64))
        if got.endswith(Request(Command.READ_ALL, 0).to_bytes()):
            got.clear()
            os.write(master, b"\x02\x55" + wrong + right[:4])  # garbage, another board, then ours in pieces
            loop.call_later(0.02, os.write, master, right[4:])

    loop.add_reader(master, answer)
    try:
        async with bus.running(connect_timeout=5):
            status = await bus.read_status(0)
            assert status == StatusReply.from_bytes(right)
            assert bus.stats.wrong_address == 1
            assert bus.stats.timeouts == 0
    finally:
        loop.remove_reader(master)
        os.close(master)
        os.close(slave)


async def test_the_bus_reopens_the_port_after_an_unplug(tmp_path: Path) -> None:
    emulator = LockBoardEmulator(1)
    async with rig(tmp_path, emulator, timeout_s=0.1, read_retries=1) as bus:
        board = KerongBoard(bus, 0)
        assert len(await board.read_all()) == 16
        port = emulator.port
        assert isinstance(port, PtyPort)
        await port.unplug(0.3)
        await wait_until(lambda: bus.stats.reconnects >= 1 and bus.connected)
        assert len(await board.read_all()) == 16


async def test_requests_keep_the_inter_frame_gap(tmp_path: Path) -> None:
    emulator = LockBoardEmulator(1)
    async with rig(tmp_path, emulator, frame_gap_s=0.05) as bus:
        emulator.set_person(0, 1, Person(open_after_s=None))
        start = time.monotonic()
        await bus.read_status(0)
        await bus.unlock(0, 1)  # unlock, settle, status read: three exchanges with two gaps between
        await bus.read_status(0)
        assert time.monotonic() - start >= 3 * 0.05


async def test_an_unlock_overtakes_queued_status_reads(tmp_path: Path) -> None:
    emulator = LockBoardEmulator(1)
    emulator.set_person(0, 4, Person(open_after_s=None))
    async with rig(tmp_path, emulator) as bus:
        reads = [asyncio.create_task(bus.read_status(0)) for _ in range(8)]
        await asyncio.sleep(0)  # all eight queued (the first already on the line)
        started = time.monotonic()
        report = await bus.unlock(0, 4)
        unlocked_at = emulator.unlock_log[0].at
        finished = [t.done() for t in reads]
        await asyncio.gather(*reads)
    assert report.status is not None and not report.status.locked(4)
    # One exchange and one gap at most before the unlock frame, not eight.
    per_exchange = bus.frame_gap_s + 14 / (DEFAULT_LINE_RATE)
    assert unlocked_at - started < 2 * per_exchange + 0.05
    assert finished.count(True) < len(reads)  # the rest waited (some ran while the solenoid settled)


async def test_unlock_all_releases_every_lock_of_that_board_once(tmp_path: Path) -> None:
    emulator = LockBoardEmulator([0, 1])
    for c in emulator.compartments.values():
        c.person = Person(open_after_s=None)
    emulator.set_jammed(1, 4, True)
    async with rig(tmp_path, emulator) as bus:
        report = await bus.unlock_all(1)
        assert report.answered and report.status is not None
        assert [report.status.locked(n) for n in range(1, 17)] == [n == 4 for n in range(1, 17)]
        assert [(r.board, r.lock, r.command) for r in emulator.unlock_log] == [
            (1, n, Command.UNLOCK_ALL) for n in range(1, 17)
        ]
        assert all(emulator.latched(0, n) for n in range(1, 17))
        assert bus.stats.unlocks_sent == 1


async def control(path: Path, line: str) -> str:
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(line.encode() + b"\n")
        return (await asyncio.wait_for(reader.readline(), 5)).decode().strip()
    finally:
        writer.close()


async def test_the_emulator_as_its_own_process_with_its_control_socket(tmp_path: Path) -> None:
    pty_path, socket_path = tmp_path / "lockers0", tmp_path / "control"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "firmware_bridge.emulators.kerong", "--pty", str(pty_path), "--boards", "2",
        "--control-socket", str(socket_path), "--open-after", "0.2", "--hold", "0.4",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(10):
            lines: list[str] = []
            while not lines or lines[-1] != "ready":
                lines.append((await proc.stdout.readline()).decode().strip())
        assert "boards 0 1 locks 16" in lines
        bus = KerongBus(str(pty_path), timeout_s=0.2)
        async with bus.running(connect_timeout=5):
            board = KerongBoard(bus, 1)
            assert await control(socket_path, "item 1 4 on") == "ok"
            assert await control(socket_path, "force 1 3") == "ok"
            states = await board.read_all()
            assert (states[2].locked, states[3].item) == (False, True)
            assert await control(socket_path, "close 1 3") == "ok"
            assert await control(socket_path, "person 1 4 never 1 take") == "ok"
            assert (await board.unlock(4)).result == UnlockResult.OPENED
            assert await control(socket_path, "state 1 4") == "ok latched=0 door=0 item=1 jammed=0 unlocks=1"
            assert await control(socket_path, "jam 1 5 on") == "ok"
            assert (await board.unlock(5)).result == UnlockResult.NOT_OPENED
            assert (await control(socket_path, "bogus")).startswith("error unknown command")
            assert (await control(socket_path, "state 7 1")).startswith("error")
            status = json.loads((await control(socket_path, "status")).removeprefix("ok "))
            assert status["requests"] >= 4 and status["forced_opens"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0


async def test_random_forced_doors_show_in_reads_without_any_unlock(tmp_path: Path) -> None:
    emulator = LockBoardEmulator(1, forced_per_hour=3600 * 20, hold_s=(0.5, 1.0))
    async with rig(tmp_path, emulator) as bus:
        board = KerongBoard(bus, 0)
        await wait_until(lambda: emulator.counters.forced_opens >= 1)
        states = await board.read_all()
        assert any(not s.locked for s in states)
        assert emulator.unlock_log == []


async def test_the_bus_over_tcp_as_through_ser2net() -> None:
    emulator = LockBoardEmulator(1)
    emulator.set_item(0, 2, True)
    port = TcpPort("127.0.0.1", 0, line_rate=DEFAULT_LINE_RATE)
    async with emulator.running(port):
        host, number = port.address
        bus = KerongBus(f"socket://{host}:{number}", reopen_interval_s=0.1)
        async with bus.running(connect_timeout=5):
            states = await KerongBoard(bus, 0).read_all()
            assert [s.item for s in states] == [n == 2 for n in range(1, 17)]


# -- the two forms of a reply to 0x30 / 0x31 (issue 14.5) -------------------------------------------


def test_an_unlock_reply_in_the_nine_byte_status_form_is_a_lock_reply_of_the_addressed_lock() -> None:
    # Board 0 lock 1 unlocked (hook bit 0 of H1-8 clear), every other lock latched, an item in lock 1.
    wire = bytes.fromhex("02 00 31 fe ff 01 00 03 34")
    assert LockReply.from_bytes(wire) == LockReply(0x00, Command.UNLOCK, 0x02)
    assert parse_reply(wire) == LockReply(0x00, Command.UNLOCK, 0x02)
    # Board 1 lock 3: its bits are bit 2 of H1-8 and IR1-8.
    assert LockReply.from_bytes(bytes.fromhex("02 12 30 04 00 00 00 03 4b")) == LockReply(0x12, Command.READ_LOCK, 0x01)
    assert LockReply(0x00, Command.UNLOCK, 0x02).to_status_bytes(0xFFFE, 0x0001) == wire


def test_the_decoder_takes_both_forms_in_one_stream() -> None:
    short = LockReply(0x00, Command.UNLOCK, 0x01).to_bytes()
    long = bytes.fromhex("02 00 31 fe ff 01 00 03 34")
    status = StatusReply(0x00, Command.READ_ALL, 0xFFFF, 0).to_bytes()
    decoder = FrameDecoder(replies=True)
    frames = list(decoder.feed(b"\x55" + short + long + status + long[:5]))
    frames += list(decoder.feed(long[5:]))
    assert [type(f).__name__ for f in frames] == ["LockReply", "LockReply", "StatusReply", "LockReply"]
    assert decoder.stats.checksum_errors == 0 and decoder.stats.frames == 4


class NineByteBoard:
    """An independent board 0 on a raw pty, written from the wire format alone (not from our codec): it
    answers 0x31 with the 9-byte status form, as other public drivers expect a KR-CU16 to."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.device = os.ttyname(self.slave)
        self.hooks = 0xFFFF
        self.items = 0x0000
        self.unlocks = 0
        self._got = bytearray()

    @staticmethod
    def _frame(body: bytes) -> bytes:
        data = b"\x02" + body + b"\x03"
        return data + bytes([sum(data) & 0xFF])

    def readable(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self._got.extend(os.read(self.master, 64))
        while len(self._got) >= 5:
            start = self._got.find(b"\x02")
            if start < 0:
                self._got.clear()
                return
            del self._got[:start]
            if len(self._got) < 5:
                return
            addr, cmd = self._got[1], self._got[2]
            del self._got[:5]
            if addr >> 4:
                continue  # board 0 only: the other numbers are silent
            if cmd == 0x31:
                self.unlocks += 1
                self.hooks &= ~(1 << (addr & 0x0F))
            if cmd in (0x31, 0x32):
                masks_ = bytes([self.hooks & 0xFF, self.hooks >> 8, self.items & 0xFF, self.items >> 8])
                os.write(self.master, self._frame(bytes([addr if cmd == 0x31 else addr & 0xF0, cmd]) + masks_))

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


async def test_unlocks_against_a_board_answering_in_the_nine_byte_form_wait_no_timeout() -> None:
    board = NineByteBoard()
    loop = asyncio.get_running_loop()
    loop.add_reader(board.master, board.readable)
    bus = KerongBus(board.device, timeout_s=0.3, read_retries=0, unlock_settle_s=0)
    try:
        async with bus.running(connect_timeout=5):
            started = time.monotonic()
            for lock in range(1, 12):
                report = await bus.unlock(0, lock)
                assert report.answered, lock
                assert report.status is not None and not report.status.locked(lock)
            elapsed = time.monotonic() - started
    finally:
        loop.remove_reader(board.master)
        board.close()
    assert board.unlocks == 11
    assert bus.stats.unlocks_unanswered == 0 and bus.stats.timeouts == 0, bus.stats
    assert elapsed < 11 * 0.3, elapsed  # no unlock waited its timeout


async def test_line_errors_are_in_metrics_and_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    from prometheus_client import generate_latest

    from edge_agent.metrics import AgentMetrics

    board = NineByteBoard()
    loop = asyncio.get_running_loop()
    loop.add_reader(board.master, board.readable)
    bus = KerongBus(board.device, timeout_s=0.1, read_retries=0, unlock_settle_s=0)
    metrics = AgentMetrics()
    metrics.watch_lock_buses({"rs485-0": bus})
    try:
        async with bus.running(connect_timeout=5):
            reporter = asyncio.create_task(bus.report_line_errors(interval_s=0.3))
            os.write(board.master, b"\x02\x00\x32\xff\xff\x00\x00\x03\x00")  # a status reply with a bad SUM
            await asyncio.sleep(0.05)
            assert await bus.probe(5, timeout_s=0.05) is None  # board 5: nobody answers
            await bus.read_status(0)
            with pytest.raises(KerongBusError):
                await bus.read_status(7)  # nobody there: a timeout
            await asyncio.sleep(0.5)
            reporter.cancel()
    finally:
        loop.remove_reader(board.master)
        board.close()
    text = generate_latest(metrics.registry).decode()
    assert 'edge_lock_bus{bus="rs485-0",counter="checksum_errors"} 1.0' in text
    assert 'edge_lock_bus{bus="rs485-0",counter="timeouts"} 1.0' in text
    assert 'edge_lock_bus_connected{bus="rs485-0"} 0.0' in text  # closed by now
    assert "1 checksum errors" in caplog.text and "1 timeouts" in caplog.text
