"""The base-station protocol, sans-IO parts and the link over an in-memory line: vectors, round trips,
garbage, faults, priorities and resets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.base_station.frames import (
    BULK,
    MAX_WIRE,
    URGENT,
    AckFrame,
    DataFrame,
    FrameDecoder,
    HelloAckFrame,
    HelloFrame,
    from_wire,
    to_wire,
)
from firmware_bridge.base_station.link import Link, LinkClosedError, seq_before
from firmware_bridge.base_station.messages import (
    MESSAGE_TYPES,
    DeltaBegin,
    Info,
    LedFlash,
    MessageError,
    PushChunk,
    SetFast,
    TagCheckin,
    TagList,
    decode_message,
)
from firmware_bridge.cobs import CobsError, cobs_decode, cobs_encode
from tests.support.line import MemoryLine

# -- COBS ---------------------------------------------------------------------------------------

COBS_VECTORS = [
    (b"", b"\x01"),
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
    (bytes(range(0, 255)), b"\x01\xff" + bytes(range(1, 255))),
    (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
]


@pytest.mark.parametrize(("raw", "encoded"), COBS_VECTORS)
def test_cobs_vectors(raw: bytes, encoded: bytes) -> None:
    assert cobs_encode(raw) == encoded
    assert cobs_decode(encoded) == raw


@given(st.binary(max_size=2000))
def test_cobs_round_trip_has_no_zero(data: bytes) -> None:
    encoded = cobs_encode(data)
    assert b"\x00" not in encoded
    assert cobs_decode(encoded) == data
    assert len(encoded) <= len(data) + len(data) // 254 + 1


@given(st.binary(max_size=300))
def test_cobs_decode_of_garbage_raises_only_cobs_error(data: bytes) -> None:
    with contextlib.suppress(CobsError):
        cobs_decode(data)


# -- frames -------------------------------------------------------------------------------------


def test_frame_vector_from_the_spec() -> None:
    assert to_wire(AckFrame(BULK, 5, 0)) == bytes.fromhex("03 21 05 01 01 01 01 05 e5 7c 6b a4 00")
    assert from_wire(bytes.fromhex("03 21 05 01 01 01 01 05 e5 7c 6b a4")) == AckFrame(BULK, 5, 0)


def test_message_vector_from_the_spec() -> None:
    assert PushChunk(5, 1024, b"abc").to_bytes() == bytes.fromhex("04 05 00 00 04 00 00 61 62 63")


frames = st.one_of(
    st.builds(DataFrame, st.sampled_from([URGENT, BULK]), st.integers(0, 0xFFFF), st.binary(min_size=1, max_size=1024)),
    st.builds(AckFrame, st.sampled_from([URGENT, BULK]), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1)),
    st.builds(HelloFrame, st.just(1), st.integers(1, 2**32 - 1), st.integers(0, 0xFFFF), st.integers(0, 255)),
    st.builds(
        HelloAckFrame, st.just(1), st.integers(1, 2**32 - 1), st.integers(0, 0xFFFF), st.integers(0, 255),
        st.integers(1, 2**32 - 1),
    ),
)


@given(st.lists(frames, max_size=8))
def test_frames_round_trip_through_the_stream_decoder(items: list) -> None:
    decoder = FrameDecoder()
    stream = b"".join(to_wire(f) for f in items)
    got = []
    # Fed in arbitrary pieces, as a serial port delivers them.
    rng = random.Random(len(stream))
    i = 0
    while i < len(stream):
        n = rng.randint(1, 50)
        got += list(decoder.feed(stream[i : i + n]))
        i += n
    assert got == items


@settings(max_examples=200)
@given(st.binary(max_size=5000), st.lists(frames, min_size=1, max_size=3))
def test_garbage_never_crashes_and_the_decoder_resynchronises(garbage: bytes, items: list) -> None:
    decoder = FrameDecoder()
    list(decoder.feed(garbage))
    assert decoder.buffered <= MAX_WIRE
    # After a delimiter the decoder is back in step.
    got = list(decoder.feed(b"\x00" + b"".join(to_wire(f) for f in items)))
    assert got[-len(items) :] == items


def test_decoder_memory_stays_bounded_without_delimiters() -> None:
    decoder = FrameDecoder()
    for _ in range(100):
        assert list(decoder.feed(os.urandom(10_000).replace(b"\x00", b"\x01"))) == []
        assert decoder.buffered <= MAX_WIRE
    assert decoder.stats.overruns >= 1
    assert list(decoder.feed(b"\x00" + to_wire(AckFrame(0, 1, 0)))) == [AckFrame(0, 1, 0)]


def test_a_flipped_bit_is_caught_by_the_crc() -> None:
    wire = bytearray(to_wire(DataFrame(BULK, 7, b"price 12.80")))
    wire[5] ^= 0x10
    decoder = FrameDecoder()
    assert list(decoder.feed(bytes(wire))) == []
    assert decoder.stats.crc_errors + decoder.stats.bad_frames == 1


# -- messages -----------------------------------------------------------------------------------


@given(st.binary(max_size=200))
def test_messages_from_garbage_raise_only_message_error(data: bytes) -> None:
    with contextlib.suppress(MessageError):
        decode_message(data)


def test_every_message_type_round_trips() -> None:
    samples = [
        DeltaBegin(9, b"\x01" * 8, 2, 300, b"\x02" * 8, 0),
        LedFlash(3, b"\x03" * 8, 2, 5, 500),
        Info(1, 1, 0x0102, b"serial01", 11, 300, 64, 20000),
        TagList(2, 1, 0, 1, TagList.ENTRY.pack(b"\x04" * 8, 3, b"\x05" * 8)),
        TagCheckin(b"\x06" * 8, 3, 2950, -15, -67, 200, 0x102, b"\x07" * 8, 0),
        SetFast(4, b"\x08" * 8, 600),
    ]
    for msg in samples:
        assert decode_message(msg.to_bytes()) == msg
    assert len(MESSAGE_TYPES) == 19


def test_serial_number_arithmetic_wraps() -> None:
    assert seq_before(65535, 0)
    assert seq_before(1, 2)
    assert not seq_before(2, 1)
    assert not seq_before(0, 65535)


# -- the link over an in-memory line ------------------------------------------------------------


async def _pair(line: MemoryLine, got: list[tuple[int, bytes]], **kw) -> tuple[Link, Link, list[asyncio.Task]]:
    host = Link(name="host", on_message=lambda ch, p: None, **kw)
    device = Link(name="device", on_message=lambda ch, p: got.append((ch, p)))
    tasks = [asyncio.create_task(host.run(line.a)), asyncio.create_task(device.run(line.b))]
    await asyncio.wait_for(host.up.wait(), 10)
    await asyncio.wait_for(device.up.wait(), 10)
    return host, device, tasks


async def _stop(line: MemoryLine, tasks: list[asyncio.Task]) -> None:
    line.close()
    for t in tasks:
        with pytest.raises(LinkClosedError):
            await asyncio.wait_for(t, 5)


async def test_link_delivers_in_order_over_a_clean_line() -> None:
    line = MemoryLine(rate=200_000)
    got: list[tuple[int, bytes]] = []
    host, _, tasks = await _pair(line, got)
    msgs = [os.urandom(random.Random(i).randint(1, 1024)) for i in range(300)]
    await asyncio.wait_for(asyncio.gather(*(host.send(BULK, m) for m in msgs)), 30)
    assert [p for _, p in got] == msgs
    assert host.stats.retransmits == 0
    await _stop(line, tasks)


async def test_link_survives_one_percent_corrupted_and_dropped_bytes() -> None:
    line = MemoryLine(rate=50_000, corrupt=0.01, drop=0.01, seed=7)
    got: list[tuple[int, bytes]] = []
    host, _, tasks = await _pair(line, got)
    msgs = [os.urandom(40) for _ in range(150)]
    await asyncio.wait_for(asyncio.gather(*(host.send(BULK, m) for m in msgs)), 120)
    assert [p for _, p in got] == msgs
    assert host.stats.retransmits > 0 and host.decoder.stats.crc_errors + host.decoder.stats.bad_frames >= 0
    await _stop(line, tasks)


async def test_urgent_messages_overtake_a_bulk_backlog() -> None:
    line = MemoryLine(rate=11_520)
    got: list[tuple[int, bytes]] = []
    host, _, tasks = await _pair(line, got, initial_payload=1024)
    bulk = [host.send(BULK, os.urandom(1000)) for _ in range(60)]  # about 5 s of line time
    await asyncio.sleep(0.5)
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(host.send(URGENT, b"\x07flash"), 5)
    latency = asyncio.get_running_loop().time() - started
    assert latency < 0.5, latency
    assert sum(1 for ch, _ in got if ch == BULK) < 60, "the urgent message did not wait for the backlog"
    await asyncio.wait_for(asyncio.gather(*bulk), 30)
    await _stop(line, tasks)


async def test_a_peer_restart_is_detected_and_pending_messages_are_sent_again() -> None:
    line = MemoryLine(rate=100_000)
    got: list[tuple[int, bytes]] = []
    resets: list[int] = []
    host = Link(name="host", on_message=lambda ch, p: None, on_peer_reset=lambda: resets.append(1))
    device = Link(name="device", on_message=lambda ch, p: got.append((ch, p)))
    t_host = asyncio.create_task(host.run(line.a))
    t_dev = asyncio.create_task(device.run(line.b))
    await asyncio.wait_for(host.up.wait(), 10)
    await asyncio.wait_for(host.send(BULK, b"before"), 10)
    # The base station reboots: a new Link (new session) on the same line.
    t_dev.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t_dev
    pending = host.send(BULK, b"during")
    await asyncio.sleep(0.3)
    got2: list[tuple[int, bytes]] = []
    device2 = Link(name="device2", on_message=lambda ch, p: got2.append((ch, p)))
    t_dev2 = asyncio.create_task(device2.run(line.b))
    await asyncio.wait_for(pending, 10)
    assert resets == [1]
    assert got2 == [(BULK, b"during")]
    await asyncio.wait_for(host.send(BULK, b"after"), 10)
    assert got2[-1] == (BULK, b"after")
    await _stop(line, [t_host, t_dev2])
