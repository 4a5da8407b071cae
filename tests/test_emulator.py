"""The base-station emulator against a real host `Link`: over real ptys opened with pyserial, over TCP
(`socket://`), over the in-memory line, and as its own process driven through its control socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import serial

from firmware_bridge.base_station.frames import BULK, PROTOCOL_VERSION, URGENT
from firmware_bridge.base_station.link import Link, LinkClosedError
from firmware_bridge.base_station.messages import (
    ButtonPress,
    Cancel,
    DeltaBegin,
    FailReason,
    GetInfo,
    Info,
    LedFlash,
    ListTags,
    Message,
    PushBegin,
    PushChunk,
    PushEnd,
    Result,
    SetFast,
    SetPage,
    Status,
    TagCheckin,
    TagDiscovered,
    TagList,
    TransferDone,
    TransferFailed,
    TransferStored,
    decode_message,
)
from firmware_bridge.emulators.base_station import (
    LOW_BATTERY_MV,
    RADIO_RETRIES,
    BaseStationEmulator,
    ControlServer,
    TagSpec,
    mixed,
)
from firmware_bridge.emulators.pty_line import (
    LineFaults,
    PtyPort,
    StaticPort,
    TcpPort,
    TokenBucket,
    cancel_and_wait,
)
from firmware_bridge.picture import EncodedPicture, Encoding, encode_picture, picture_hash, xor_bytes
from firmware_bridge.tag_types import TAG_TYPES, TAG_TYPES_BY_NAME, TagType
from tests.support.line import MemoryLine

LINE_RATE = 11520.0
T_154 = TAG_TYPES_BY_NAME["1.54-bw"]
T_29 = TAG_TYPES_BY_NAME["2.9-bwr"]
T_42 = TAG_TYPES_BY_NAME["4.2-bwr"]


def tag_id(n: int) -> bytes:
    return bytes.fromhex("00124b0000") + n.to_bytes(3, "big")


def specs(*types: TagType, **fields: Any) -> list[TagSpec]:
    return [TagSpec(tag_id(i + 1), t, **fields) for i, t in enumerate(types)]


def picture(tag_type: TagType, seed: int) -> bytes:
    """A picture with structure (text-like runs on white) that compresses like a real tag picture."""
    rng = random.Random(seed)
    raw = bytearray(tag_type.raw_bytes)
    for _ in range(40):
        start = rng.randrange(len(raw) - 40)
        raw[start : start + rng.randrange(4, 40)] = rng.randbytes(1) * 40
    return bytes(raw[: tag_type.raw_bytes])


def delta_of(raw: bytes, base: bytes) -> EncodedPicture:
    """A DELTA_ZLIB encoding whatever its size (encode_picture picks the smallest encoding)."""
    data = zlib.compress(xor_bytes(raw, base))
    return EncodedPicture(Encoding.DELTA_ZLIB, data, picture_hash(raw), picture_hash(base), len(raw))


def edited(raw: bytes, seed: int) -> bytes:
    rng = random.Random(seed)
    out = bytearray(raw)
    start = rng.randrange(len(out) - 64)
    out[start : start + 48] = rng.randbytes(48)
    return bytes(out)


# -- the agent's side, reduced to a Link and a log -----------------------------------------------


class SerialLineTransport:
    """A pyserial port as a link transport: a reader thread, blocking writes in a worker thread."""

    def __init__(self, port: Any) -> None:
        self.port = port
        self.failure: Exception | None = None
        self._loop = asyncio.get_running_loop()
        self._incoming: asyncio.Queue[bytes | Exception] = asyncio.Queue()
        self._stop = threading.Event()
        self._writer = ThreadPoolExecutor(1)
        self._thread = threading.Thread(target=self._read_loop, daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, path: str) -> SerialLineTransport:
        return cls(serial.serial_for_url(path, baudrate=115200, exclusive=True, timeout=0.05))

    def _read_loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.port.read(max(1, self.port.in_waiting))
            except Exception as exc:  # SerialException/OSError once the pty is gone
                self.failure = exc
                if not self._stop.is_set():
                    self._loop.call_soon_threadsafe(self._incoming.put_nowait, exc)
                return
            if data:
                self._loop.call_soon_threadsafe(self._incoming.put_nowait, bytes(data))

    async def read(self) -> bytes:
        item = await self._incoming.get()
        if isinstance(item, Exception):
            self._incoming.put_nowait(item)
            raise LinkClosedError(str(item))
        return item

    async def write(self, data: bytes) -> None:
        try:
            await self._loop.run_in_executor(self._writer, self.port.write, data)
        except (serial.SerialException, OSError) as exc:
            raise LinkClosedError(str(exc)) from None

    def out_waiting(self) -> int:
        return 0  # a pty cannot tell (TIOCOUTQ is always 0 on a pty)

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            self.port.cancel_read()
        self._thread.join(1.0)
        with contextlib.suppress(Exception):
            self.port.close()
        self._writer.shutdown(wait=False, cancel_futures=True)


class Host:
    """The agent's end: a real Link and every message it received, with their channel."""

    def __init__(self) -> None:
        self.link = Link(name="host", on_message=self._on_message, on_peer_reset=self._on_peer_reset)
        self.received: list[tuple[int, Message]] = []
        self.peer_resets = 0
        self._changed = asyncio.Event()
        self._req = 0

    def _on_message(self, channel: int, payload: bytes) -> None:
        self.received.append((channel, decode_message(payload)))
        self._changed.set()

    def _on_peer_reset(self) -> None:
        self.peer_resets += 1
        self._changed.set()

    def messages(self, kind: type[Message] = Message) -> list[Any]:
        return [m for _, m in self.received if isinstance(m, kind)]

    async def expect(self, predicate: Callable[[Message], bool], timeout: float = 10.0) -> Any:
        """The first message received (so far or later) that satisfies predicate."""
        async with asyncio.timeout(timeout):
            while True:
                for _, msg in self.received:
                    if predicate(msg):
                        return msg
                self._changed.clear()
                await self._changed.wait()

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.02)

    async def outcome(self, xfer: int, timeout: float = 15.0) -> TransferDone | TransferFailed:
        msg = await self.expect(lambda m: isinstance(m, TransferDone | TransferFailed) and m.xfer == xfer, timeout)
        assert isinstance(msg, TransferDone | TransferFailed)
        return msg

    async def done(self, xfer: int, timeout: float = 15.0) -> TransferDone:
        outcome = await self.outcome(xfer, timeout)
        assert isinstance(outcome, TransferDone), outcome
        return outcome

    async def failed(self, xfer: int, timeout: float = 15.0) -> TransferFailed:
        outcome = await self.outcome(xfer, timeout)
        assert isinstance(outcome, TransferFailed), outcome
        return outcome

    def next_req(self) -> int:
        self._req += 1
        return self._req

    async def request(self, build: Callable[[int], Message], channel: int = URGENT, timeout: float = 5.0) -> Any:
        req = self.next_req()
        self.link.send(channel, build(req).to_bytes())
        return await self.expect(lambda m: getattr(m, "req", None) == req, timeout)

    def push(
        self,
        xfer: int,
        tag: bytes,
        enc: EncodedPicture,
        *,
        chunk: int = 200,
        order: Callable[[list[bytes]], list[bytes]] | None = None,
        end_hash: bytes | None = None,
        page: int = 0,
    ) -> list[asyncio.Future[None]]:
        if enc.kind == Encoding.DELTA_ZLIB:
            assert enc.base_hash is not None
            begin: Message = DeltaBegin(xfer, tag, enc.kind, len(enc.data), enc.base_hash, page)
        else:
            begin = PushBegin(xfer, tag, enc.kind, len(enc.data), page)
        chunks = [PushChunk(xfer, o, enc.data[o : o + chunk]).to_bytes() for o in range(0, len(enc.data), chunk)]
        if order is not None:
            chunks = order(chunks)
        payloads = [begin.to_bytes(), *chunks, PushEnd(xfer, end_hash or enc.hash).to_bytes()]
        return [self.link.send(BULK, p) for p in payloads]


async def all_tags(host: Host) -> list[tuple[bytes, int, bytes]]:
    records: list[tuple[bytes, int, bytes]] = []
    while True:
        offset = len(records)
        page = await host.request(lambda req: ListTags(req, offset, 40))  # noqa: B023 - called at once
        assert isinstance(page, TagList)
        records += page.records()
        if page.count == 0 or len(records) >= page.total:
            return records


@contextlib.asynccontextmanager
async def run_host(host: Host, transport: Any) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(host.link.run(transport))
    try:
        await asyncio.wait_for(host.link.up.wait(), 5.0)
        yield task
    finally:
        await cancel_and_wait(task, owner=host.link)


@contextlib.asynccontextmanager
async def over_memory(emulator: BaseStationEmulator, rate: float = 2_000_000.0) -> AsyncIterator[Host]:
    line = MemoryLine(rate=rate)
    host = Host()
    async with emulator.running(StaticPort(line.b)), run_host(host, line.a):
        yield host
    line.close()


@contextlib.asynccontextmanager
async def over_pty(emulator: BaseStationEmulator, path: Path, **port_options: Any) -> AsyncIterator[Host]:
    port = PtyPort(path, **port_options)
    host = Host()
    async with emulator.running(port):
        transport = SerialLineTransport.open(str(path))
        try:
            async with run_host(host, transport):
                yield host
        finally:
            transport.close()


# -- tags, transports -----------------------------------------------------------------------------


def test_mixed_tags_cover_every_type_mostly_small() -> None:
    tags = mixed(300, seed=7)
    assert len({t.tag for t in tags}) == 300
    counts = {name: sum(t.type.name == name for t in tags) for name in TAG_TYPES_BY_NAME}
    assert all(counts[name] >= 1 for name in TAG_TYPES_BY_NAME)
    assert counts["2.9-bwr"] + counts["2.13-bwr"] > 0.6 * 300
    assert [t.tag for t in mixed(300, seed=7)] == [t.tag for t in tags]
    assert [t.tag for t in mixed(300, seed=8)] != [t.tag for t in tags]
    assert {t.type.name for t in mixed(len(TAG_TYPES), seed=1)} == set(TAG_TYPES_BY_NAME)
    assert all(t.fast for t in mixed(5, seed=1, fast=True))


def test_line_faults_rates_and_seed() -> None:
    data = bytes(range(256)) * 200
    faults = LineFaults(0.01, 0.01, 0.01, seed=3)
    damaged = faults.apply(data)
    n = len(data)
    for count in (faults.stats.corrupted, faults.stats.dropped, faults.stats.inserted):
        assert 0.005 * n < count < 0.02 * n
    assert len(damaged) == n - faults.stats.dropped + faults.stats.inserted
    assert LineFaults(0.01, 0.01, 0.01, seed=3).apply(data) == damaged
    assert LineFaults().apply(data) is data
    with pytest.raises(ValueError):
        faults.set(0.7, 0.7, 0.0)


async def test_token_bucket_holds_the_rate() -> None:
    bucket = TokenBucket(20_000.0)
    start = time.monotonic()
    moved = 0
    while moved < 10_000:
        moved += await bucket.take(10_000 - moved)
    elapsed = time.monotonic() - start
    assert (10_000 - bucket.capacity) / 20_000 * 0.95 <= elapsed <= 10_000 / 20_000 * 1.3 + 0.05


async def test_pty_output_is_paced_at_the_line_rate(tmp_path: Path) -> None:
    port = PtyPort(tmp_path / "bs0", line_rate=LINE_RATE)
    await port.start()
    try:
        device = os.readlink(tmp_path / "bs0")
        assert device.startswith("/dev/pts/")
        reader = serial.serial_for_url(str(tmp_path / "bs0"), baudrate=115200, exclusive=True, timeout=0.05)
        transport = await port.connection()
        payload = bytes(range(1, 256)) * 23  # 5,865 bytes, and raw mode keeps every byte as it is
        start = time.monotonic()
        write = asyncio.create_task(transport.write(payload))
        got = bytearray()
        async with asyncio.timeout(5):
            while len(got) < len(payload):
                got += await asyncio.to_thread(reader.read, 4096)
        elapsed = time.monotonic() - start
        await write
        reader.close()
        assert bytes(got) == payload
        assert elapsed >= (len(payload) - 300) / LINE_RATE
        assert elapsed <= len(payload) / LINE_RATE * 1.3 + 0.1
    finally:
        await port.close()
    assert not (tmp_path / "bs0").exists()


# -- requests -------------------------------------------------------------------------------------


async def test_handshake_info_and_tag_list(tmp_path: Path) -> None:
    emulator = BaseStationEmulator(mixed(45, seed=2), max_transfers=12, air_rate=30_000, seed=2)
    async with over_pty(emulator, tmp_path / "bs0") as host:
        assert host.link.peer_session == emulator.link.session
        assert emulator.link.peer_session == host.link.session
        info = await host.request(GetInfo)
        assert isinstance(info, Info)
        assert (info.protocol, info.tags, info.max_transfers, info.air_rate) == (PROTOCOL_VERSION, 45, 12, 30_000)
        assert info.serial == emulator.serial
        records = await all_tags(host)
    assert [r[0] for r in records] == list(emulator.tags)
    for tag, code, digest in records:
        sim = emulator.tags[tag]
        assert code == sim.type.code
        assert digest == picture_hash(bytes(sim.type.raw_bytes))  # every tag starts all white


async def test_tag_list_page_past_the_end_is_empty() -> None:
    emulator = BaseStationEmulator(specs(T_29, T_29))
    async with over_memory(emulator) as host:
        page = await host.request(lambda req: ListTags(req, 5, 10))
        assert (page.total, page.offset, page.count, page.entries) == (2, 5, 0, b"")


# -- transfers ------------------------------------------------------------------------------------


async def test_full_and_delta_push_over_pty_show_exact_pictures(tmp_path: Path) -> None:
    emulator = BaseStationEmulator(specs(T_29, T_154, fast=True), state_dir=tmp_path / "state")
    tag = tag_id(1)
    first = picture(T_29, 1)
    second = edited(first, 2)
    async with over_pty(emulator, tmp_path / "bs0") as host:
        full = encode_picture(first)
        assert full.kind == Encoding.ZLIB
        host.push(1, tag, full, page=1)
        stored = await host.expect(lambda m: isinstance(m, TransferStored) and m.xfer == 1)
        assert stored.tag == tag
        done = await host.outcome(1)
        assert done == TransferDone(1, tag, full.hash)
        assert emulator.tag_picture(tag) == first
        assert emulator.tags[tag].page == 1

        delta = encode_picture(second, first)
        assert delta.kind == Encoding.DELTA_ZLIB
        host.push(2, tag, delta)
        assert await host.outcome(2) == TransferDone(2, tag, picture_hash(second))
        assert emulator.tag_picture(tag) == second
        assert emulator.tag_hash(tag) == picture_hash(second)
        assert emulator.tag_picture(tag_id(2)) == bytes(T_154.raw_bytes)

        assert (tmp_path / "state" / f"{tag.hex()}.bin").read_bytes() == second
        state_file = tmp_path / "state" / "tags.json"

        def state_says_second() -> bool:
            with contextlib.suppress(FileNotFoundError, ValueError):
                rows = {row["tag"]: row for row in json.loads(state_file.read_text())["tags"]}
                return bool(rows[tag.hex()]["hash"] == picture_hash(second).hex())
            return False

        await host.wait_until(state_says_second, timeout=3)
        counters = emulator.counters
        assert (counters.transfers_done, counters.transfers_failed) == (2, 0)
        assert counters.picture_bytes_received == len(full.data) + len(delta.data)
        assert counters.frames > 0 and counters.crc_errors == 0


async def test_raw_push_over_pty_is_paced_by_the_line_rate(tmp_path: Path) -> None:
    emulator = BaseStationEmulator(specs(T_42, fast=True), air_rate=1_000_000)
    raw = picture(T_42, 5)
    enc = EncodedPicture(Encoding.RAW, raw, picture_hash(raw), None, len(raw))  # 30,000 bytes, uncompressed
    async with over_pty(emulator, tmp_path / "bs0") as host:
        sent_before = host.link.stats.bytes_sent
        start = time.monotonic()
        futures = host.push(1, tag_id(1), enc, chunk=1000)
        await asyncio.wait_for(asyncio.gather(*futures), 15)
        elapsed = time.monotonic() - start
        wire = host.link.stats.bytes_sent - sent_before
        assert (await host.done(1)).hash == enc.hash
    assert emulator.tag_picture(tag_id(1)) == raw
    assert elapsed >= 20_000 / LINE_RATE
    assert elapsed >= (wire - 500) / LINE_RATE * 0.97
    assert elapsed <= wire / LINE_RATE * 1.5 + 0.5  # and the line is used well


async def test_chunks_out_of_order_and_repeated_still_complete() -> None:
    emulator = BaseStationEmulator(specs(T_29, fast=True))
    raw = picture(T_29, 9)
    enc = encode_picture(raw)
    rng = random.Random(4)

    def scramble(chunks: list[bytes]) -> list[bytes]:
        chunks = chunks + rng.sample(chunks, len(chunks) // 2)
        rng.shuffle(chunks)
        return chunks

    async with over_memory(emulator) as host:
        # END goes before the last chunks: the transfer completes when the last byte arrives.
        xfer = 7
        begin = PushBegin(xfer, tag_id(1), enc.kind, len(enc.data), 0)
        chunks = scramble([PushChunk(xfer, o, enc.data[o : o + 64]).to_bytes() for o in range(0, len(enc.data), 64)])
        host.link.send(BULK, begin.to_bytes())
        for payload in chunks[:-3]:
            host.link.send(BULK, payload)
        host.link.send(BULK, PushEnd(xfer, enc.hash).to_bytes())
        await host.wait_until(lambda: emulator.counters.messages >= len(chunks) - 1)
        assert not host.messages(TransferStored) or emulator.counters.picture_bytes_received == len(enc.data)
        for payload in chunks[-3:]:
            host.link.send(BULK, payload)
        assert await host.outcome(xfer) == TransferDone(xfer, tag_id(1), enc.hash)
    assert emulator.tag_picture(tag_id(1)) == raw
    assert emulator.counters.picture_bytes_received == len(enc.data)


async def test_wrong_end_hash_fails_with_hash_mismatch() -> None:
    emulator = BaseStationEmulator(specs(T_29, fast=True))
    raw = picture(T_29, 3)
    async with over_memory(emulator) as host:
        host.push(1, tag_id(1), encode_picture(raw), end_hash=picture_hash(b"something else"))
        assert await host.outcome(1) == TransferFailed(1, tag_id(1), FailReason.HASH_MISMATCH)
        assert not host.messages(TransferStored)
    assert emulator.tag_picture(tag_id(1)) == bytes(T_29.raw_bytes)
    assert emulator.transfers_held == 0
    assert emulator.counters.failures == {"hash_mismatch": 1}


async def test_delta_against_an_unknown_base_is_refused() -> None:
    emulator = BaseStationEmulator(specs(T_29, fast=True))
    old, new = picture(T_29, 1), picture(T_29, 2)
    async with over_memory(emulator) as host:
        host.push(1, tag_id(1), delta_of(new, old))  # the tag shows white, not `old`
        assert await host.outcome(1) == TransferFailed(1, tag_id(1), FailReason.BASE_UNKNOWN)
        # The chunks and END that follow the refused BEGIN are ignored.
        await host.wait_until(lambda: emulator.counters.unknown_transfer_messages > 0)
        assert emulator.transfers_held == 0


async def test_bad_data_and_refusals() -> None:
    emulator = BaseStationEmulator(specs(T_29, T_29, T_29, fast=True), max_transfers=2)
    t1, t2, t3 = tag_id(1), tag_id(2), tag_id(3)
    raw = picture(T_29, 1)
    enc = encode_picture(raw)
    async with over_memory(emulator) as host:
        # Not zlib at all.
        garbage = EncodedPicture(Encoding.ZLIB, b"\x01" * 300, enc.hash, None, len(raw))
        host.push(1, t1, garbage)
        assert (await host.failed(1)).reason == FailReason.BAD_ENCODING
        # A raw picture of the wrong size, and an unknown encoding.
        host.link.send(BULK, PushBegin(2, t1, Encoding.RAW, 100, 0).to_bytes())
        assert (await host.failed(2)).reason == FailReason.BAD_ENCODING
        host.link.send(BULK, PushBegin(3, t1, 9, 100, 0).to_bytes())
        assert (await host.failed(3)).reason == FailReason.BAD_ENCODING
        # A chunk past the announced size.
        host.link.send(BULK, PushBegin(4, t1, Encoding.ZLIB, 10, 0).to_bytes())
        host.link.send(BULK, PushChunk(4, 8, b"abcd").to_bytes())
        assert (await host.failed(4)).reason == FailReason.BAD_ENCODING
        # Unknown tag.
        host.push(5, tag_id(99), enc)
        assert await host.outcome(5) == TransferFailed(5, tag_id(99), FailReason.UNKNOWN_TAG)
        # Two transfers held at once (BEGIN without END), the third is refused.
        host.link.send(BULK, PushBegin(6, t1, enc.kind, len(enc.data), 0).to_bytes())
        host.link.send(BULK, PushBegin(7, t2, enc.kind, len(enc.data), 0).to_bytes())
        host.link.send(BULK, PushBegin(8, t3, enc.kind, len(enc.data), 0).to_bytes())
        assert (await host.failed(8)).reason == FailReason.BUSY
        assert emulator.transfers_held == 2
        # Cancel frees a slot and ends the transfer.
        host.link.send(URGENT, Cancel(6).to_bytes())
        assert await host.outcome(6) == TransferFailed(6, t1, FailReason.CANCELLED)
        host.link.send(URGENT, Cancel(7).to_bytes())
        assert (await host.failed(7)).reason == FailReason.CANCELLED
        # Low battery.
        emulator.set_battery(t3, LOW_BATTERY_MV - 1)
        host.push(9, t3, enc)
        assert await host.outcome(9) == TransferFailed(9, t3, FailReason.LOW_BATTERY)
        emulator.set_battery(t3, LOW_BATTERY_MV + 300)
        host.push(10, t3, enc)
        assert (await host.done(10)).hash == enc.hash
    assert emulator.transfers_held == 0
    assert emulator.counters.transfers_failed == 9


async def test_out_of_range_tag_fails_after_the_retries() -> None:
    emulator = BaseStationEmulator(specs(T_29, T_29, fast=True))
    emulator.set_out_of_range(tag_id(1), True)
    raw = picture(T_29, 1)
    async with over_memory(emulator) as host:
        host.push(1, tag_id(1), encode_picture(raw))
        await host.expect(lambda m: isinstance(m, TransferStored))
        assert await host.outcome(1) == TransferFailed(1, tag_id(1), FailReason.OUT_OF_RANGE)
        assert emulator.counters.radio_retries == RADIO_RETRIES
        emulator.set_out_of_range(tag_id(1), False)
        host.push(2, tag_id(1), encode_picture(raw))
        assert isinstance(await host.outcome(2), TransferDone)
    assert emulator.tag_picture(tag_id(1)) == raw


async def test_radio_loss_is_retried_and_air_time_counts() -> None:
    emulator = BaseStationEmulator(specs(*[T_29] * 8, fast=True), radio_loss=0.3, air_rate=50_000, seed=5)
    pictures = {tag_id(i + 1): picture(T_29, i) for i in range(8)}
    async with over_memory(emulator) as host:
        encoded = {tag: encode_picture(raw) for tag, raw in pictures.items()}
        start = time.monotonic()
        for xfer, (tag, enc) in enumerate(encoded.items(), 1):
            host.push(xfer, tag, enc)
        outcomes = [await host.outcome(xfer) for xfer in range(1, 9)]
        elapsed = time.monotonic() - start
    done = [o for o in outcomes if isinstance(o, TransferDone)]
    assert emulator.counters.radio_retries > 0
    assert len(done) >= 6  # 0.3**4: a delivery fails for good less than 1 % of the time
    for outcome in done:
        assert emulator.tag_picture(outcome.tag) == pictures[outcome.tag]
    assert elapsed >= sum(len(encoded[o.tag].data) for o in done) / 50_000


async def test_transfers_wait_for_the_tags_checkin() -> None:
    emulator = BaseStationEmulator(specs(T_29, T_29), checkin_interval=0.6)
    raw = picture(T_29, 1)
    async with over_memory(emulator) as host:
        await host.expect(lambda m: isinstance(m, TagCheckin) and m.tag == tag_id(1), timeout=3)
        seen = len(host.received)
        host.push(1, tag_id(1), encode_picture(raw))
        await host.expect(lambda m: isinstance(m, TransferStored))
        done = await host.outcome(1, timeout=3)
        assert isinstance(done, TransferDone)
        # The tag took its picture when it woke up: its check-in comes before the DONE.
        later = [m for _, m in host.received[seen:]]
        checkin_at = next(i for i, m in enumerate(later) if isinstance(m, TagCheckin) and m.tag == tag_id(1))
        assert checkin_at < later.index(done)
        checkin = await host.expect(lambda m: isinstance(m, TagCheckin) and m.hash == picture_hash(raw), timeout=3)
    assert checkin.type_code == T_29.code
    assert (checkin.battery_mv, checkin.temperature_dc, checkin.lqi) == (2950, 215, 210)
    assert abs(checkin.rssi - -62) <= 2
    assert host.messages(TagCheckin)[0].hash == picture_hash(bytes(T_29.raw_bytes))


async def test_led_flash_and_set_page_answer_at_once_and_reach_the_tag_at_checkin() -> None:
    emulator = BaseStationEmulator(specs(T_29, T_154), checkin_interval=0.5)
    emulator.set_fast(tag_id(2), True)
    async with over_memory(emulator) as host:
        result = await host.request(lambda req: LedFlash(req, tag_id(1), 1, 3, 250))
        assert result.status == Status.OK
        assert next(ch for ch, m in host.received if m is result) == URGENT
        assert tag_id(1) not in emulator.led_flashes  # not yet: the tag is asleep
        result = await host.request(lambda req: SetPage(req, tag_id(1), 2))
        assert result.status == Status.OK
        await host.wait_until(lambda: tag_id(1) in emulator.led_flashes, timeout=3)
        flash = emulator.led_flashes[tag_id(1)][0]
        assert (flash.colour, flash.count, flash.period_ms) == (1, 3, 250)
        assert emulator.tags[tag_id(1)].page == 2
        checkin = await host.expect(lambda m: isinstance(m, TagCheckin) and m.page == 2, timeout=3)
        assert checkin.tag == tag_id(1)
        # A tag in fast mode flashes at once.
        await host.request(lambda req: LedFlash(req, tag_id(2), 2, 1, 100))
        assert len(emulator.led_flashes[tag_id(2)]) == 1
        unknown = await host.request(lambda req: LedFlash(req, tag_id(77), 2, 1, 100))
        assert isinstance(unknown, Result) and unknown.status == Status.UNKNOWN_TAG
        unknown = await host.request(lambda req: SetPage(req, tag_id(77), 1))
        assert unknown.status == Status.UNKNOWN_TAG


async def test_set_fast_keeps_a_tag_listening_for_its_seconds_from_its_next_checkin() -> None:
    emulator = BaseStationEmulator(specs(T_29, T_29), checkin_interval=0.5)
    async with over_memory(emulator) as host:
        result = await host.request(lambda req: SetFast(req, tag_id(1), 2))
        assert result.status == Status.OK and tag_id(1) not in emulator.fast_requests  # heard at its check-in
        await host.wait_until(lambda: emulator.fast_requests.get(tag_id(1)) == [2], timeout=3)
        assert emulator.tags[tag_id(1)].listening and not emulator.tags[tag_id(2)].always_listening
        # Listening: a flash reaches it at once, not at its next check-in.
        await host.request(lambda req: LedFlash(req, tag_id(1), 3, 1, 100))
        assert len(emulator.led_flashes[tag_id(1)]) == 1
        # 0 ends it at once (the tag is listening, so it hears that at once too).
        await host.request(lambda req: SetFast(req, tag_id(1), 0))
        assert emulator.fast_requests[tag_id(1)] == [2, 0] and not emulator.tags[tag_id(1)].always_listening
        # The time runs out by itself.
        await host.request(lambda req: SetFast(req, tag_id(2), 1))
        await host.wait_until(lambda: emulator.fast_requests.get(tag_id(2)) == [1], timeout=3)
        assert emulator.tags[tag_id(2)].always_listening
        await asyncio.sleep(1.1)
        assert not emulator.tags[tag_id(2)].always_listening
        unknown = await host.request(lambda req: SetFast(req, tag_id(77), 5))
        assert unknown.status == Status.UNKNOWN_TAG
    assert SetFast(7, tag_id(1), 300).to_bytes() == bytes([0x0A, 0x07, 0x00]) + tag_id(1) + bytes([0x2C, 0x01])


async def test_button_press_and_discovered_tag() -> None:
    emulator = BaseStationEmulator(specs(T_29), checkin_interval=0.3)
    async with over_memory(emulator) as host:
        assert emulator.press_button(tag_id(1), 2)
        press = await host.expect(lambda m: isinstance(m, ButtonPress))
        assert press == ButtonPress(tag_id(1), 2)
        emulator.set_out_of_range(tag_id(1), True)
        assert not emulator.press_button(tag_id(1), 1)

        emulator.discover(TagSpec(tag_id(50), T_42))
        found = await host.expect(lambda m: isinstance(m, TagDiscovered))
        assert found == TagDiscovered(tag_id(50), T_42.code, emulator.tags[tag_id(50)].firmware)
        await host.expect(lambda m: isinstance(m, TagCheckin) and m.tag == tag_id(50), timeout=3)
        assert [r[0] for r in await all_tags(host)] == [tag_id(1), tag_id(50)]
        # An out-of-range tag does not check in.
        count = sum(1 for m in host.messages(TagCheckin) if m.tag == tag_id(1))
        await asyncio.sleep(0.8)
        assert sum(1 for m in host.messages(TagCheckin) if m.tag == tag_id(1)) == count


# -- faults over a real pty -----------------------------------------------------------------------


async def test_reset_mid_transfer_is_seen_as_a_peer_reset_and_the_transfer_never_completes(tmp_path: Path) -> None:
    emulator = BaseStationEmulator(specs(T_29, fast=True))
    raw = picture(T_29, 11)
    enc = encode_picture(raw)
    async with over_pty(emulator, tmp_path / "bs0") as host:
        old_session = emulator.link.session
        host.link.send(BULK, PushBegin(1, tag_id(1), enc.kind, len(enc.data), 0).to_bytes())
        first = [host.link.send(BULK, PushChunk(1, 0, enc.data[:100]).to_bytes())]
        await asyncio.wait_for(asyncio.gather(*first), 5)
        assert emulator.transfers_held == 1

        emulator.reset()
        assert emulator.transfers_held == 0
        await host.wait_until(lambda: host.peer_resets == 1, timeout=5)
        assert host.link.peer_session == emulator.link.session != old_session
        # What the agent still sends for the lost transfer goes nowhere.
        rest = [PushChunk(1, o, enc.data[o : o + 100]).to_bytes() for o in range(100, len(enc.data), 100)]
        futures = [host.link.send(BULK, p) for p in [*rest, PushEnd(1, enc.hash).to_bytes()]]
        await asyncio.wait_for(asyncio.gather(*futures), 5)
        await asyncio.sleep(0.3)
        assert not host.messages(TransferDone)
        assert emulator.tag_picture(tag_id(1)) == bytes(T_29.raw_bytes)
        assert emulator.counters.unknown_transfer_messages == len(futures)
        # The agent sends it again after the reset: it arrives.
        host.push(2, tag_id(1), enc)
        assert (await host.done(2)).hash == enc.hash
    assert emulator.tag_picture(tag_id(1)) == raw
    assert emulator.counters.resets == 1


async def test_corrupted_and_dropped_bytes_both_ways_still_deliver_pixel_exact(tmp_path: Path) -> None:
    emulator = BaseStationEmulator(specs(T_154, T_29, fast=True), faults=LineFaults(0.01, 0.01, seed=9))
    first = picture(T_154, 21)
    second = edited(first, 22)
    async with over_pty(emulator, tmp_path / "bs0") as host:
        full = encode_picture(first)
        host.push(1, tag_id(1), full, chunk=32)
        assert (await host.done(1, timeout=30)).hash == picture_hash(first)
        delta = encode_picture(second, first)
        host.push(2, tag_id(1), delta, chunk=32)
        assert (await host.done(2, timeout=30)).hash == picture_hash(second)
        info = await host.request(GetInfo, timeout=10)
        assert info.tags == 2
    assert emulator.tag_picture(tag_id(1)) == second
    counters = emulator.counters
    assert counters.crc_errors + counters.bad_frames > 0  # what the agent sent was damaged
    assert host.link.decoder.stats.crc_errors + host.link.decoder.stats.bad_frames > 0  # and what we sent
    assert emulator.faults.stats.corrupted > 0 and emulator.faults.stats.dropped > 0


async def test_unplug_points_the_path_at_a_new_pty(tmp_path: Path) -> None:
    path = tmp_path / "bs0"
    emulator = BaseStationEmulator(specs(T_29, fast=True))
    host = Host()
    async with emulator.running(PtyPort(path)):
        old_device = os.readlink(path)
        transport = SerialLineTransport.open(str(path))
        task = asyncio.create_task(host.link.run(transport))
        await asyncio.wait_for(host.link.up.wait(), 5)
        assert (await host.request(GetInfo)).tags == 1

        unplug = asyncio.create_task(emulator.unplug(0.5))
        await host.wait_until(lambda: transport.failure is not None, timeout=5)  # the agent's next read fails
        assert isinstance(transport.failure, serial.SerialException | OSError)
        await cancel_and_wait(task, owner=host.link)
        assert not path.exists()  # the device is gone while unplugged
        await asyncio.wait_for(unplug, 5)
        assert os.readlink(path) != old_device  # (the old one is still held open: its number is not reused)
        transport.close()

        transport = SerialLineTransport.open(str(path))
        task = asyncio.create_task(host.link.run(transport))
        try:
            await asyncio.wait_for(host.link.up.wait(), 5)
            assert host.peer_resets == 0  # the same base station, same session
            assert (await host.request(GetInfo)).tags == 1
            raw = picture(T_29, 30)
            host.push(1, tag_id(1), encode_picture(raw))
            assert isinstance(await host.outcome(1), TransferDone)
            assert emulator.tag_picture(tag_id(1)) == raw
        finally:
            await cancel_and_wait(task, owner=host.link)
            transport.close()
    assert emulator.counters.connections == 2


async def test_tcp_port_with_pyserial_socket_url() -> None:
    emulator = BaseStationEmulator(specs(T_29, fast=True))
    port = TcpPort("127.0.0.1", 0)
    host = Host()
    async with emulator.running(port):
        hostname, number = port.address
        transport = SerialLineTransport(serial.serial_for_url(f"socket://{hostname}:{number}", timeout=0.05))
        try:
            async with run_host(host, transport):
                # A second client is turned away while the first is connected.
                second = serial.serial_for_url(f"socket://{hostname}:{number}", timeout=0.5)
                with pytest.raises(serial.SerialException, match="disconnected"):
                    await asyncio.to_thread(second.read, 1)
                second.close()
                raw = picture(T_29, 40)
                host.push(1, tag_id(1), encode_picture(raw))
                assert isinstance(await host.outcome(1), TransferDone)
        finally:
            transport.close()
        # The agent comes back (ser2net-style reconnect): same base station, same session.
        await host.wait_until(lambda: port.transport is None or port.transport.closed, timeout=5)
        transport = SerialLineTransport(serial.serial_for_url(f"socket://{hostname}:{number}", timeout=0.05))
        try:
            async with run_host(host, transport):
                assert (await host.request(GetInfo)).tags == 1
        finally:
            transport.close()
    assert emulator.tag_picture(tag_id(1)) == raw
    assert port.refused == 1
    assert emulator.counters.connections == 2
    assert host.peer_resets == 0


async def test_a_transfer_left_half_sent_is_dropped_after_the_receive_timeout() -> None:
    emulator = BaseStationEmulator(specs(T_29, fast=True), receive_timeout=0.3)
    enc = encode_picture(picture(T_29, 60))
    async with over_memory(emulator) as host:
        host.link.send(BULK, PushBegin(1, tag_id(1), enc.kind, len(enc.data), 0).to_bytes())
        host.link.send(BULK, PushChunk(1, 0, enc.data[:50]).to_bytes())
        start = time.monotonic()
        assert await host.failed(1, timeout=3) == TransferFailed(1, tag_id(1), FailReason.CANCELLED)
        assert time.monotonic() - start >= 0.25
        assert emulator.transfers_held == 0


async def test_control_server_commands() -> None:
    emulator = BaseStationEmulator(specs(T_29, T_29))
    control = ControlServer(emulator, "/nonexistent")
    t1 = tag_id(1).hex()
    assert control.execute(f"battery {t1} 2100") == "ok"
    assert emulator.tags[tag_id(1)].battery_mv == 2100
    assert control.execute(f"out-of-range {t1} on") == "ok"
    assert not emulator.tags[tag_id(1)].in_range
    assert control.execute(f"button {t1} 1") == "error tag out of range"
    assert control.execute("faults 0.01 0.02 0.001") == "ok"
    assert (emulator.faults.corrupt, emulator.faults.drop, emulator.faults.insert) == (0.01, 0.02, 0.001)
    assert control.execute("fast all on") == "ok"
    assert all(t.fast for t in emulator.tags.values())
    assert control.execute("reset") == "ok"
    assert emulator.counters.resets == 1
    assert control.execute("status").startswith('ok {"frames":')
    assert control.execute("battery nothex 3").startswith("error tag id")
    assert control.execute("battery 12").startswith("error battery takes 2")
    assert control.execute("faults 2 0 0").startswith("error")
    assert control.execute("explode").startswith("error unknown command")
    assert control.execute("").startswith("error")


# -- as its own process ---------------------------------------------------------------------------


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    args = [
        sys.executable,
        "-m",
        "firmware_bridge.emulators.base_station",
        "--pty",
        str(tmp_path / "bs0"),
        "--tags",
        "12",
        "--seed",
        "3",
        "--fast",
        "--checkin",
        "0.5",
        "--state-dir",
        str(tmp_path / "state"),
        "--control-socket",
        str(tmp_path / "control.sock"),
        "--log-level",
        "WARNING",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent)
    lines: dict[str, str] = {}
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = proc.stdout.readline().strip()
            if not line or line == "ready":
                break
            key, _, value = line.partition(" ")
            lines[key] = value
        yield proc, lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


async def control(path: Path, command: str) -> str:
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(command.encode() + b"\n")
        return (await asyncio.wait_for(reader.readline(), 5)).decode().strip()
    finally:
        writer.close()


async def test_cli_process_with_state_dir_control_socket_and_sigterm(
    tmp_path: Path, emulator_process: tuple[subprocess.Popen[str], dict[str, str]]
) -> None:
    proc, lines = emulator_process
    assert lines["pty"].startswith(f"{tmp_path / 'bs0'} (/dev/pts/")
    assert lines["tags"] == "12"
    sock = tmp_path / "control.sock"
    host = Host()
    transport = SerialLineTransport.open(str(tmp_path / "bs0"))
    try:
        async with run_host(host, transport):
            records = await all_tags(host)
            assert len(records) == 12
            tag, code, _ = records[0]
            tag_type = TAG_TYPES[code]
            raw = picture(tag_type, 50)
            host.push(1, tag, encode_picture(raw))
            assert isinstance(await host.outcome(1), TransferDone)
            assert (tmp_path / "state" / f"{tag.hex()}.bin").read_bytes() == raw

            assert await control(sock, f"out-of-range {tag.hex()} on") == "ok"
            host.push(2, tag, encode_picture(picture(tag_type, 51)))
            assert (await host.failed(2)).reason == FailReason.OUT_OF_RANGE
            assert await control(sock, f"out-of-range {tag.hex()} off") == "ok"
            assert await control(sock, f"button {tag.hex()} 3") == "ok"
            assert await host.expect(lambda m: isinstance(m, ButtonPress)) == ButtonPress(tag, 3)
            assert (await control(sock, "bogus")).startswith("error")

            def tags_json() -> dict[str, Any]:
                with contextlib.suppress(FileNotFoundError, ValueError):
                    return {
                        row["tag"]: row for row in json.loads((tmp_path / "state" / "tags.json").read_text())["tags"]
                    }
                return {}

            await host.wait_until(lambda: tags_json().get(tag.hex(), {}).get("hash") == picture_hash(raw).hex(), 3)
            assert len(tags_json()) == 12

            assert await control(sock, "reset") == "ok"
            await host.wait_until(lambda: host.peer_resets == 1, timeout=5)
    finally:
        transport.close()
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 10) == 0
    assert not (tmp_path / "bs0").exists()
    assert not sock.exists()
