"""The radio base station's emulator: our serial protocol from the device side (DESIGN.md section 5).

Product code: `edge-agent simulate base-station` runs it on a pty or a TCP port for the demo, the tests,
the benchmarks and technician training. It runs the same `Link` as the agent (as the device), holds
simulated tags, decodes every picture it receives with `firmware_bridge.picture` and keeps the picture
each tag shows, so a test compares pixels.

Behaviour (docs/base-station-protocol.md):

- GET_INFO -> INFO and LIST_TAGS -> TAG_LIST, answered on the channel the request came on. A TAG_LIST
  page holds at most what one frame of the link's current size carries, so it may hold fewer records than
  asked for: the agent asks again from `offset + count`.
- LED_FLASH, SET_PAGE and SET_FAST -> RESULT on the urgent channel at once; the tag gets the command at its
  next check-in (at once for a tag in fast mode). SET_FAST keeps the tag listening for its seconds.
  CANCEL ends a transfer with TRANSFER_FAILED(CANCELLED).
- PUSH_BEGIN / DELTA_BEGIN open a transfer (refused with TRANSFER_FAILED: UNKNOWN_TAG, BAD_ENCODING,
  BUSY past `max_transfers`, LOW_BATTERY, BASE_UNKNOWN when a delta's base is not what the tag shows).
  PUSH_CHUNKs land at their offsets, in any order, repeated or not. Once PUSH_END was seen and every byte
  arrived, the picture is decoded and its hash checked (HASH_MISMATCH, BAD_ENCODING), then
  TRANSFER_STORED, and the radio delivers it: TRANSFER_DONE with the hash of what the tag now shows.
- Radio: one delivery on the air at a time at `air_rate` bytes/s of encoded data; a tag listens only
  when it checks in (every `checkin_interval` seconds, with jitter), unless it is in fast mode; a
  delivery attempt is lost with probability `radio_loss` and retried up to 3 times, then
  TRANSFER_FAILED(OUT_OF_RANGE) (always so for a tag out of range).
- Events: TAG_CHECKIN (bulk channel, dropped while the agent is not draining the link), BUTTON_PRESS
  (urgent), TAG_DISCOVERED (bulk); transfer events and RESULT go on the urgent channel.
- Fault knobs: `reset()` (a reboot: transfers and pending output are lost, a new link session starts),
  `unplug()`, tags out of range, low battery, and corrupted / dropped / inserted bytes on the line.

A transfer that receives nothing for `receive_timeout` seconds is dropped (TRANSFER_FAILED(CANCELLED)),
so a half-sent transfer never holds a slot for ever.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import heapq
import json
import logging
import os
import random
import struct
import sys
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from firmware_bridge.base_station.frames import BULK, MAX_PAYLOAD, PROTOCOL_VERSION, URGENT
from firmware_bridge.base_station.link import Link, LinkClosedError, LinkStats
from firmware_bridge.base_station.messages import (
    ButtonPress,
    Cancel,
    DeltaBegin,
    Encoding,
    FailReason,
    GetInfo,
    Info,
    LedFlash,
    ListTags,
    Message,
    MessageError,
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
from firmware_bridge.emulators.base_station_control import ControlServer
from firmware_bridge.emulators.pty_line import (
    DEFAULT_LINE_RATE,
    FaultyTransport,
    LineFaults,
    LinePort,
    cancel_and_wait,
)
from firmware_bridge.emulators.sim_tags import (
    MAX_TAGS,
    EmulatorError,
    LedFlashRecord,
    SimTag,
    TagSpec,
    mixed,
)
from firmware_bridge.emulators.support import host_port, open_port, positive, rate, run_emulator
from firmware_bridge.picture import PictureError, decode_picture, picture_hash
from firmware_bridge.tag_types import TagType

__all__ = [
    "BaseStationEmulator",
    "ControlServer",
    "EmulatorCounters",
    "EmulatorError",
    "LedFlashRecord",
    "SimTag",
    "TagSpec",
    "add_arguments",
    "main",
    "mixed",
    "run_base_station",
]

log = logging.getLogger(__name__)

EMULATOR_FIRMWARE = 0x0100
RADIO_CHANNEL = 11
DEFAULT_AIR_RATE = 20000.0  # bytes/s of encoded picture data
DEFAULT_CHECKIN_S = 30.0
DEFAULT_MAX_TRANSFERS = 64
DEFAULT_RECEIVE_TIMEOUT_S = 120.0
LOW_BATTERY_MV = 2200
RADIO_RETRIES = 3
CHECKIN_JITTER = 0.1  # each interval is checkin_interval x (1 +- 10 %)
# Check-ins are telemetry: while this many bulk messages wait for the agent, new ones are dropped.
CHECKIN_BACKLOG = 256
OUT_OF_RANGE_PROBE_BYTES = 32  # air time of an attempt no tag answers
STATE_JSON_INTERVAL_S = 0.25
SCHEDULE_POLL_S = 0.1
HOUSEKEEPING_S = 0.25
TAG_LIST_HEADER = 1 + struct.calcsize("<" + TagList.FMT)


def max_encoded_size(tag_type: TagType, encoding: int) -> int:
    """The largest encoded picture a transfer may announce (zlib's compressBound for the compressed ones)."""
    n = tag_type.raw_bytes
    if encoding == Encoding.RAW:
        return n
    return n + (n >> 12) + (n >> 14) + (n >> 25) + 13 + 64


# -- transfers ------------------------------------------------------------------------------------

RECEIVING = "receiving"
STORED = "stored"
ON_AIR = "on_air"


@dataclass(eq=False)
class _Transfer:
    xfer: int
    tag: SimTag
    encoding: int
    size: int
    page: int
    base_hash: bytes | None
    last_activity: float
    data: bytearray = field(init=False)
    mask: bytearray = field(init=False)  # 1 per byte received
    received: int = 0
    end_hash: bytes | None = None
    raw: bytes | None = None
    state: str = RECEIVING
    dead: bool = False  # cancelled, failed or dropped by a reset: the radio abandons it

    def __post_init__(self) -> None:
        self.data = bytearray(self.size)
        self.mask = bytearray(self.size)

    def put(self, offset: int, chunk: bytes) -> int:
        """Store a chunk; returns how many of its bytes were new."""
        end = offset + len(chunk)
        new = self.mask.count(0, offset, end)
        self.data[offset:end] = chunk
        self.mask[offset:end] = b"\x01" * len(chunk)
        self.received += new
        return new


@dataclass
class EmulatorCounters:
    frames: int = 0
    crc_errors: int = 0
    bad_frames: int = 0
    garbage_bytes: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    retransmits: int = 0
    messages: int = 0
    bad_messages: int = 0
    unknown_transfer_messages: int = 0
    picture_bytes_received: int = 0
    transfers_started: int = 0
    transfers_stored: int = 0
    transfers_done: int = 0
    transfers_failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    radio_retries: int = 0
    checkins_sent: int = 0
    checkins_dropped: int = 0
    button_presses: int = 0
    resets: int = 0
    peer_resets: int = 0
    connections: int = 0


_LINK_TOTALS = ("bytes_received", "bytes_sent", "retransmits", "peer_resets")


class BaseStationEmulator:
    def __init__(
        self,
        tags: Iterable[TagSpec],
        *,
        air_rate: float = DEFAULT_AIR_RATE,
        checkin_interval: float = DEFAULT_CHECKIN_S,
        radio_loss: float = 0.0,
        max_transfers: int = DEFAULT_MAX_TRANSFERS,
        receive_timeout: float = DEFAULT_RECEIVE_TIMEOUT_S,
        faults: LineFaults | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        seed: int = 0,
    ) -> None:
        if air_rate <= 0 or checkin_interval <= 0 or max_transfers <= 0:
            raise ValueError("air_rate, checkin_interval and max_transfers must be positive")
        if not 0.0 <= radio_loss < 1.0:
            raise ValueError("radio_loss must be within 0..1 (exclusive)")
        self.air_rate = air_rate
        self.checkin_interval = checkin_interval
        self.radio_loss = radio_loss
        self.max_transfers = max_transfers
        self.receive_timeout = receive_timeout
        self.faults = faults if faults is not None else LineFaults(seed=seed)
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self._rng = random.Random(seed + 1)
        self.serial = b"BS" + random.Random(seed).randbytes(6)
        self.tags: dict[bytes, SimTag] = {}
        for spec in tags:
            self._add(spec)
        self.led_flashes: dict[bytes, list[LedFlashRecord]] = {}
        # SET_FAST requests each tag took (seconds; 0 ended fast mode), in order: what tests compare.
        self.fast_requests: dict[bytes, list[int]] = {}
        self.port: LinePort | None = None
        self._counters = EmulatorCounters()
        self._retired = LinkStats()  # link statistics of the sessions before the last reset
        self._retired_decoder = EmulatorCounters()
        self._generation = 0
        self.link = self._new_link()
        self._transfers: dict[int, _Transfer] = {}
        self._relink = asyncio.Event()
        self._radio_wake = asyncio.Event()
        self._schedule: list[tuple[float, int, bytes]] = []
        self._schedule_seq = 0
        self._schedule_wake = asyncio.Event()
        self._air_clock = 0.0
        self._json_dirty = True
        self._json_written = 0.0
        self._started = asyncio.Event()

    # -- setup ---------------------------------------------------------------------------------

    def _add(self, spec: TagSpec) -> SimTag:
        if spec.tag in self.tags:
            raise EmulatorError(f"tag {spec.tag.hex()} exists already")
        if len(self.tags) >= MAX_TAGS:
            raise EmulatorError(f"a base station holds at most {MAX_TAGS} tags")
        tag = SimTag.from_spec(spec)
        self.tags[spec.tag] = tag
        return tag

    def _new_link(self) -> Link:
        generation = self._generation

        def on_message(channel: int, payload: bytes) -> None:
            if generation == self._generation:
                self._on_message(channel, payload)

        def on_peer_reset() -> None:
            if generation == self._generation:
                self._on_host_reset()

        def on_undeliverable(channel: int, payload: bytes) -> None:
            if generation == self._generation:
                self._on_undeliverable(channel, payload)

        return Link(
            name="base-station",
            on_message=on_message,
            on_peer_reset=on_peer_reset,
            on_undeliverable=on_undeliverable,
        )

    def _tag(self, tag: bytes) -> SimTag:
        try:
            return self.tags[bytes(tag)]
        except KeyError:
            raise EmulatorError(f"unknown tag {bytes(tag).hex()}") from None

    # -- running -------------------------------------------------------------------------------

    async def run(self, port: LinePort) -> None:
        """Serve the agent through `port` until cancelled; closes the port on the way out."""
        self.port = port
        try:
            await port.start()
            self._start_schedule()
            self._write_state_json()
            self._started.set()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._serve(port), name="base-station-serve")
                tg.create_task(self._radio(), name="base-station-radio")
                tg.create_task(self._checkins(), name="base-station-checkins")
                tg.create_task(self._housekeeping(), name="base-station-housekeeping")
        finally:
            self._write_state_json()
            await port.close()

    @contextlib.asynccontextmanager
    async def running(self, port: LinePort) -> AsyncIterator[BaseStationEmulator]:
        """Run in the background for the block's duration (the port is open when the block starts)."""
        task = asyncio.create_task(self.run(port), name="base-station-emulator")
        started = asyncio.create_task(self._started.wait())
        await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if task.done():
            task.result()  # raises what made it fail (a port that cannot open)
        try:
            yield self
        finally:
            await cancel_and_wait(task)

    async def _serve(self, port: LinePort) -> None:
        while True:
            transport = FaultyTransport(await port.connection(), self.faults)
            self._counters.connections += 1
            await self._serve_transport(transport)

    async def _serve_transport(self, transport: FaultyTransport) -> None:
        """Run the link until the line closes; after a reset(), the new link takes over the same line."""
        lost = asyncio.create_task(transport.lost.wait(), name="base-station-line-lost")
        try:
            while True:
                self._relink.clear()
                link = self.link
                runner = asyncio.create_task(link.run(transport), name="base-station-link")
                relink = asyncio.create_task(self._relink.wait(), name="base-station-relink")
                try:
                    await asyncio.wait({runner, relink, lost}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    relink.cancel()
                    if not runner.done():
                        await cancel_and_wait(runner, owner=link)
                if lost.done():
                    log.info("base-station emulator: line closed")
                    return
                exc = None if runner.cancelled() else runner.exception()
                if isinstance(exc, LinkClosedError):
                    return
                if exc is not None:
                    raise exc
        finally:
            lost.cancel()

    # -- fault knobs and controls --------------------------------------------------------------

    def reset(self) -> None:
        """A base-station reboot: transfers and pending output are lost; a new link session starts."""
        log.warning("base-station emulator: reset")
        self._counters.resets += 1
        for transfer in self._transfers.values():
            transfer.dead = True
        self._transfers.clear()
        for tag in self.tags.values():
            tag.awake = False
            tag.pending_led = None
            tag.pending_page = None
        for name in _LINK_TOTALS:
            setattr(self._retired, name, getattr(self._retired, name) + getattr(self.link.stats, name))
        dec = self.link.decoder.stats
        self._retired_decoder.frames += dec.frames
        self._retired_decoder.crc_errors += dec.crc_errors
        self._retired_decoder.bad_frames += dec.bad_frames
        self._retired_decoder.garbage_bytes += dec.garbage_bytes
        self._generation += 1
        self.link = self._new_link()
        self._relink.set()

    async def unplug(self, seconds: float) -> None:
        """Pull the cable for `seconds` (the base station keeps its state, as on a self-powered one)."""
        if self.port is None:
            raise EmulatorError("the emulator is not running")
        await self.port.unplug(seconds)

    def set_line_faults(self, corrupt: float, drop: float, insert: float = 0.0) -> None:
        self.faults.set(corrupt, drop, insert)

    def set_out_of_range(self, tag: bytes, out_of_range: bool) -> None:
        self._tag(tag).in_range = not out_of_range

    def set_battery(self, tag: bytes, millivolts: int) -> None:
        if not 0 <= millivolts <= 0xFFFF:
            raise ValueError("battery millivolts must fit 16 bits")
        self._tag(tag).battery_mv = millivolts
        self._json_dirty = True

    def set_fast(self, tag: bytes | None, fast: bool) -> None:
        """Fast mode: the tag listens all the time (no waiting for its check-in). None: every tag."""
        for sim in self.tags.values() if tag is None else [self._tag(tag)]:
            sim.fast = fast
        self._radio_wake.set()

    def set_checkin_interval(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError("check-in interval must be positive")
        self.checkin_interval = seconds
        self._start_schedule()

    def press_button(self, tag: bytes, button: int) -> bool:
        """A shopper presses a button on the tag; False if the tag is out of range (nothing is heard)."""
        sim = self._tag(tag)
        if not 0 <= button <= 0xFF:
            raise ValueError("button number must fit one byte")
        if not sim.in_range:
            return False
        self._counters.button_presses += 1
        self._send(URGENT, ButtonPress(sim.tag, button))
        return True

    def discover(self, spec: TagSpec) -> None:
        """A new tag joins the base station: TAG_DISCOVERED, then its check-ins."""
        sim = self._add(spec)
        self._json_dirty = True
        self._send(BULK, TagDiscovered(sim.tag, sim.type.code, sim.firmware))
        if self._started.is_set():
            self._schedule_checkin(sim, time.monotonic() + self._rng.uniform(0.05, 1.0))

    def set_picture(self, tag: bytes, raw: bytes) -> None:
        """Make the tag show `raw` (e.g. what the agent's database says it shows), without the radio."""
        sim = self._tag(tag)
        if len(raw) != sim.type.raw_bytes:
            raise ValueError(f"a {sim.type.name} picture has {sim.type.raw_bytes} bytes, got {len(raw)}")
        sim.picture = bytes(raw)
        sim.hash = picture_hash(sim.picture)
        self._write_picture(sim)

    # -- inspection ----------------------------------------------------------------------------

    def tag_picture(self, tag: bytes) -> bytes:
        return self._tag(tag).picture

    def tag_hash(self, tag: bytes) -> bytes:
        return self._tag(tag).hash

    @property
    def transfers_held(self) -> int:
        return len(self._transfers)

    @property
    def counters(self) -> EmulatorCounters:
        """A snapshot of the counters, link and decoder statistics included (summed over resets)."""
        snap = dataclasses.replace(self._counters, failures=dict(self._counters.failures))
        stats, dec = self.link.stats, self.link.decoder.stats
        snap.frames = self._retired_decoder.frames + dec.frames
        snap.crc_errors = self._retired_decoder.crc_errors + dec.crc_errors
        snap.bad_frames = self._retired_decoder.bad_frames + dec.bad_frames
        snap.garbage_bytes = self._retired_decoder.garbage_bytes + dec.garbage_bytes
        for name in _LINK_TOTALS:
            setattr(snap, name, getattr(self._retired, name) + getattr(stats, name))
        return snap

    # -- messages from the agent ---------------------------------------------------------------

    def _send(self, channel: int, message: Message) -> None:
        self.link.send(channel, message.to_bytes())

    def _on_message(self, channel: int, payload: bytes) -> None:
        self._counters.messages += 1
        try:
            msg = decode_message(payload)
        except MessageError as exc:
            self._counters.bad_messages += 1
            log.warning("base-station emulator: bad message: %s", exc)
            return
        if isinstance(msg, PushChunk):
            self._on_chunk(msg)
        elif isinstance(msg, PushBegin | DeltaBegin):
            self._on_begin(msg)
        elif isinstance(msg, PushEnd):
            self._on_end(msg)
        elif isinstance(msg, GetInfo):
            self._send(channel, self._info(msg.req))
        elif isinstance(msg, ListTags):
            self._send(channel, self._tag_list(msg.req, msg.offset, msg.limit))
        elif isinstance(msg, LedFlash):
            self._on_led_flash(msg)
        elif isinstance(msg, SetPage):
            self._on_set_page(msg)
        elif isinstance(msg, SetFast):
            self._on_set_fast(msg)
        elif isinstance(msg, Cancel):
            self._on_cancel(msg)
        else:
            self._counters.bad_messages += 1
            log.warning("base-station emulator: unexpected %s from the agent", type(msg).__name__)

    def _info(self, req: int) -> Info:
        return Info(
            req=req,
            protocol=PROTOCOL_VERSION,
            firmware=EMULATOR_FIRMWARE,
            serial=self.serial,
            radio_channel=RADIO_CHANNEL,
            tags=len(self.tags),
            max_transfers=min(self.max_transfers, 0xFF),
            air_rate=min(int(self.air_rate), 0xFFFFFFFF),
        )

    def _tag_list(self, req: int, offset: int, limit: int, fit_payload: int | None = None) -> TagList:
        # One page fits one frame of the size the line carries now (a long frame on a bad line never
        # arrives); the agent continues from offset + count.
        payload = min(self.link.chunk_payload if fit_payload is None else fit_payload, MAX_PAYLOAD)
        fit = max(1, (payload - TAG_LIST_HEADER) // TagList.ENTRY.size)
        tags = list(self.tags.values())[offset : offset + min(limit, fit)]
        entries = b"".join(TagList.ENTRY.pack(t.tag, t.type.code, t.hash) for t in tags)
        return TagList(req, len(self.tags), offset, len(tags), entries)

    def _on_led_flash(self, msg: LedFlash) -> None:
        sim = self.tags.get(msg.tag)
        if sim is None:
            self._send(URGENT, Result(msg.req, Status.UNKNOWN_TAG))
            return
        sim.pending_led = LedFlashRecord(msg.colour, msg.count, msg.period_ms, 0.0)
        self._send(URGENT, Result(msg.req, Status.OK))
        if sim.always_listening:
            self._deliver_commands(sim)

    def _on_set_page(self, msg: SetPage) -> None:
        sim = self.tags.get(msg.tag)
        if sim is None:
            self._send(URGENT, Result(msg.req, Status.UNKNOWN_TAG))
            return
        sim.pending_page = msg.page
        self._send(URGENT, Result(msg.req, Status.OK))
        if sim.always_listening:
            self._deliver_commands(sim)

    def _on_set_fast(self, msg: SetFast) -> None:
        sim = self.tags.get(msg.tag)
        if sim is None:
            self._send(URGENT, Result(msg.req, Status.UNKNOWN_TAG))
            return
        sim.pending_fast = msg.seconds
        self._send(URGENT, Result(msg.req, Status.OK))
        if sim.always_listening:
            self._deliver_commands(sim)

    def _on_cancel(self, msg: Cancel) -> None:
        transfer = self._transfers.get(msg.xfer)
        if transfer is None:
            self._counters.unknown_transfer_messages += 1
            return
        self._fail(transfer, FailReason.CANCELLED)

    def _refuse(self, xfer: int, tag: bytes, reason: int) -> None:
        self._counters.transfers_failed += 1
        name = FailReason.NAMES.get(reason, str(reason))
        self._counters.failures[name] = self._counters.failures.get(name, 0) + 1
        log.info("base-station emulator: transfer %d to %s failed: %s", xfer, tag.hex(), name)
        self._send(URGENT, TransferFailed(xfer, tag, reason))

    def _fail(self, transfer: _Transfer, reason: int) -> None:
        transfer.dead = True
        if self._transfers.get(transfer.xfer) is transfer:
            del self._transfers[transfer.xfer]
        self._refuse(transfer.xfer, transfer.tag.tag, reason)
        self._after_tag_activity(transfer.tag)

    def _on_begin(self, msg: PushBegin | DeltaBegin) -> None:
        old = self._transfers.get(msg.xfer)
        if old is not None:
            if old.state == RECEIVING and old.tag.tag == msg.tag and old.size == msg.size:
                return  # the same BEGIN again (the agent re-sent it after a reconnect)
            old.dead = True  # the agent reuses the id: it has forgotten the old transfer
            del self._transfers[msg.xfer]
        sim = self.tags.get(msg.tag)
        if sim is None:
            self._refuse(msg.xfer, msg.tag, FailReason.UNKNOWN_TAG)
            return
        delta = isinstance(msg, DeltaBegin)
        kinds = (Encoding.DELTA_ZLIB,) if delta else (Encoding.RAW, Encoding.ZLIB)
        if msg.encoding not in kinds or not 0 < msg.size <= max_encoded_size(sim.type, msg.encoding):
            self._refuse(msg.xfer, msg.tag, FailReason.BAD_ENCODING)
            return
        if msg.encoding == Encoding.RAW and msg.size != sim.type.raw_bytes:
            self._refuse(msg.xfer, msg.tag, FailReason.BAD_ENCODING)
            return
        if len(self._transfers) >= self.max_transfers:
            self._refuse(msg.xfer, msg.tag, FailReason.BUSY)
            return
        if sim.battery_mv < LOW_BATTERY_MV:
            self._refuse(msg.xfer, msg.tag, FailReason.LOW_BATTERY)
            return
        base_hash = msg.base_hash if isinstance(msg, DeltaBegin) else None
        if base_hash is not None and base_hash != sim.hash:
            self._refuse(msg.xfer, msg.tag, FailReason.BASE_UNKNOWN)
            return
        self._counters.transfers_started += 1
        self._transfers[msg.xfer] = _Transfer(
            msg.xfer, sim, msg.encoding, msg.size, msg.page, base_hash, time.monotonic()
        )

    def _on_chunk(self, msg: PushChunk) -> None:
        transfer = self._transfers.get(msg.xfer)
        if transfer is None:
            self._counters.unknown_transfer_messages += 1
            return
        if transfer.state != RECEIVING:
            return  # a late repeat: the picture is complete already
        if msg.offset + len(msg.data) > transfer.size:
            self._fail(transfer, FailReason.BAD_ENCODING)
            return
        transfer.last_activity = time.monotonic()
        self._counters.picture_bytes_received += transfer.put(msg.offset, msg.data)
        self._maybe_complete(transfer)

    def _on_end(self, msg: PushEnd) -> None:
        transfer = self._transfers.get(msg.xfer)
        if transfer is None:
            self._counters.unknown_transfer_messages += 1
            return
        if transfer.state != RECEIVING:
            return
        transfer.end_hash = msg.hash
        transfer.last_activity = time.monotonic()
        self._maybe_complete(transfer)

    def _maybe_complete(self, transfer: _Transfer) -> None:
        if transfer.end_hash is None or transfer.received < transfer.size:
            return
        sim = transfer.tag
        base: bytes | None = None
        if transfer.base_hash is not None:
            if sim.hash != transfer.base_hash:  # another picture reached the tag in the meantime
                self._fail(transfer, FailReason.BASE_UNKNOWN)
                return
            base = sim.picture
        try:
            raw = decode_picture(
                transfer.encoding, bytes(transfer.data), sim.type.raw_bytes, base, base_hash=transfer.base_hash
            )
        except PictureError as exc:
            log.info("base-station emulator: transfer %d: %s", transfer.xfer, exc)
            self._fail(transfer, FailReason.BAD_ENCODING)
            return
        if picture_hash(raw) != transfer.end_hash:
            self._fail(transfer, FailReason.HASH_MISMATCH)
            return
        transfer.raw = raw
        transfer.state = STORED
        transfer.data = transfer.mask = bytearray()  # only the decoded picture is kept
        self._counters.transfers_stored += 1
        self._send(URGENT, TransferStored(transfer.xfer, sim.tag))
        if sim.listening:
            self._radio_wake.set()

    def _on_host_reset(self) -> None:
        """The agent restarted: transfers it was still sending will never complete."""
        self._counters.peer_resets += 1
        for xfer, transfer in list(self._transfers.items()):
            if transfer.state == RECEIVING:
                transfer.dead = True
                del self._transfers[xfer]

    def _on_undeliverable(self, channel: int, payload: bytes) -> None:
        """The link gave up on a frame too long for the line: a TAG_LIST page is re-sent shorter."""
        try:
            msg = decode_message(payload)
        except MessageError:
            return
        if isinstance(msg, TagList) and msg.count > 1:
            shorter = self._tag_list(msg.req, msg.offset, msg.count, self.link.chunk_payload)
            self.link.send_front(channel, [shorter.to_bytes()])
        else:
            self.link.send_front(channel, [payload])

    # -- radio ---------------------------------------------------------------------------------

    async def _radio(self) -> None:
        while True:
            transfer = next((t for t in self._transfers.values() if t.state == STORED and t.tag.listening), None)
            if transfer is None:
                self._radio_wake.clear()
                await self._radio_wake.wait()
                continue
            await self._deliver(transfer)

    async def _air_time(self, nbytes: int) -> None:
        # A virtual clock: air time accumulates exactly even when timers fire late.
        now = time.monotonic()
        self._air_clock = max(self._air_clock, now - 0.005) + nbytes / self.air_rate
        if self._air_clock > now:
            await asyncio.sleep(self._air_clock - now)

    async def _deliver(self, transfer: _Transfer) -> None:
        transfer.state = ON_AIR
        sim = transfer.tag
        for attempt in range(1 + RADIO_RETRIES):
            if attempt:
                self._counters.radio_retries += 1
            if sim.battery_mv < LOW_BATTERY_MV:
                self._fail(transfer, FailReason.LOW_BATTERY)
                return
            if not sim.in_range:
                await self._air_time(OUT_OF_RANGE_PROBE_BYTES)
            elif self.radio_loss and self._rng.random() < self.radio_loss:
                await self._air_time(1 + int(transfer.size * self._rng.random()))
            else:
                await self._air_time(transfer.size)
                if transfer.dead:
                    return
                self._show(transfer)
                return
            if transfer.dead:
                return
        self._fail(transfer, FailReason.OUT_OF_RANGE)

    def _show(self, transfer: _Transfer) -> None:
        sim = transfer.tag
        assert transfer.raw is not None
        sim.picture = transfer.raw
        sim.hash = picture_hash(sim.picture)  # what the tag computes over what it now displays
        sim.page = transfer.page
        sim.pictures_shown += 1
        del self._transfers[transfer.xfer]
        transfer.dead = True
        self._counters.transfers_done += 1
        self._send(URGENT, TransferDone(transfer.xfer, sim.tag, sim.hash))
        self._write_picture(sim)
        self._after_tag_activity(sim)

    def _after_tag_activity(self, sim: SimTag) -> None:
        if sim.awake and not any(t.tag is sim and t.state == STORED for t in self._transfers.values()):
            sim.awake = False  # nothing more for it: back to sleep until its next check-in

    # -- check-ins -----------------------------------------------------------------------------

    def _start_schedule(self) -> None:
        """Spread every tag's next check-in over one interval (tags do not wake all at once)."""
        now = time.monotonic()
        self._schedule = []
        for sim in self.tags.values():
            self._schedule_seq += 1
            self._schedule.append((now + self._rng.uniform(0, self.checkin_interval), self._schedule_seq, sim.tag))
        heapq.heapify(self._schedule)
        self._schedule_wake.set()

    def _schedule_checkin(self, sim: SimTag, when: float) -> None:
        self._schedule_seq += 1
        heapq.heappush(self._schedule, (when, self._schedule_seq, sim.tag))
        self._schedule_wake.set()

    async def _checkins(self) -> None:
        """One task for every tag: a heap of wake-up times."""
        while True:
            self._schedule_wake.clear()
            now = time.monotonic()
            if not self._schedule:
                await self._schedule_wake.wait()
                continue
            if self._schedule[0][0] > now:
                # A short sleep rather than wait_for(event): new wake-ups are seen within SCHEDULE_POLL_S.
                await asyncio.sleep(min(self._schedule[0][0] - now, SCHEDULE_POLL_S))
                continue
            handled = 0
            while self._schedule and self._schedule[0][0] <= now and handled < 500:
                _, _, tag_id = heapq.heappop(self._schedule)
                sim = self.tags.get(tag_id)
                if sim is None:
                    continue
                self._wake_tag(sim)
                jitter = self._rng.uniform(1 - CHECKIN_JITTER, 1 + CHECKIN_JITTER)
                self._schedule_checkin(sim, now + self.checkin_interval * jitter)
                handled += 1
            await asyncio.sleep(0)

    def _wake_tag(self, sim: SimTag) -> None:
        """The tag's periodic wake-up: it reports, takes pending commands, and listens if data waits."""
        if sim.in_range:
            sim.checkins += 1
            self._deliver_commands(sim)
            if self.link.pending(BULK) < CHECKIN_BACKLOG:
                self._counters.checkins_sent += 1
                rssi = max(-128, min(127, sim.rssi + self._rng.randint(-2, 2)))
                self._send(
                    BULK,
                    TagCheckin(
                        sim.tag,
                        sim.type.code,
                        sim.battery_mv,
                        sim.temperature_dc,
                        rssi,
                        sim.lqi,
                        sim.firmware,
                        sim.hash,
                        sim.page,
                    ),
                )
            else:
                self._counters.checkins_dropped += 1
        # The base station tries pending pictures at the tag's expected wake-up, in range or not.
        if any(t.tag is sim and t.state == STORED for t in self._transfers.values()):
            sim.awake = True
            self._radio_wake.set()

    def _deliver_commands(self, sim: SimTag) -> None:
        if not sim.in_range:
            return
        if sim.pending_led is not None:
            record = LedFlashRecord(
                sim.pending_led.colour, sim.pending_led.count, sim.pending_led.period_ms, time.monotonic()
            )
            sim.pending_led = None
            sim.led = record if record.colour else None
            self.led_flashes.setdefault(sim.tag, []).append(record)
            self._json_dirty = True
        if sim.pending_page is not None:
            sim.page, sim.pending_page = sim.pending_page, None
            self._json_dirty = True
        if sim.pending_fast is not None:
            seconds, sim.pending_fast = sim.pending_fast, None
            sim.fast_until = time.monotonic() + seconds if seconds else 0.0
            self.fast_requests.setdefault(sim.tag, []).append(seconds)
            self._radio_wake.set()  # a listening tag takes stored pictures at once

    # -- housekeeping and state dump -----------------------------------------------------------

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            now = time.monotonic()
            for transfer in list(self._transfers.values()):
                if transfer.state == RECEIVING and now - transfer.last_activity > self.receive_timeout:
                    log.info("base-station emulator: transfer %d timed out", transfer.xfer)
                    self._fail(transfer, FailReason.CANCELLED)
            if self._json_dirty and now - self._json_written >= STATE_JSON_INTERVAL_S:
                self._write_state_json()

    def _write_picture(self, sim: SimTag) -> None:
        self._json_dirty = True
        if self.state_dir is not None:
            _atomic_write(self.state_dir / f"{sim.tag.hex()}.bin", sim.picture)

    def _write_state_json(self) -> None:
        self._json_written = time.monotonic()
        self._json_dirty = False
        if self.state_dir is None:
            return
        # One tag per line, each dumped by json's C encoder (indent= would use the slow Python one).
        rows = ",\n  ".join(
            json.dumps(
                {
                    "tag": sim.tag.hex(),
                    "type": sim.type.name,
                    "hash": sim.hash.hex(),
                    "battery_mv": sim.battery_mv,
                    "page": sim.page,
                    "in_range": sim.in_range,
                    "led_flashes": len(self.led_flashes.get(sim.tag, ())),
                    "pictures_shown": sim.pictures_shown,
                }
            )
            for sim in self.tags.values()
        )
        head = json.dumps({"serial": self.serial.hex(), "counters": asdict(self.counters)})[:-1]
        _atomic_write(self.state_dir / "tags.json", f'{head}, "tags": [\n  {rows}\n]}}\n'.encode())


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("base-station emulator: cannot write %s: %s", path, exc)


# -- command line ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `edge-agent simulate base-station` (and of `python -m ...emulator`)."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--pty", metavar="PATH", help="symlink to the emulator's pty (default /tmp/bs0)")
    where.add_argument("--tcp", metavar="HOST:PORT", type=host_port, help="listen on TCP (agent: socket://HOST:PORT)")
    parser.add_argument("--tags", type=int, default=20, help="number of simulated tags, of mixed sizes (default 20)")
    parser.add_argument("--seed", type=int, default=1, help="seed of tag ids, telemetry and faults (default 1)")
    parser.add_argument("--fast", action="store_true", help="tags listen all the time (no waiting for check-ins)")
    parser.add_argument(
        "--line-rate", type=positive, default=DEFAULT_LINE_RATE, help="line bytes/s each way (default 11520)"
    )
    parser.add_argument(
        "--air-rate", type=positive, default=DEFAULT_AIR_RATE, help="radio bytes/s of picture data (default 20000)"
    )
    parser.add_argument(
        "--checkin", type=positive, default=DEFAULT_CHECKIN_S, help="tag check-in interval, seconds (default 30)"
    )
    parser.add_argument("--radio-loss", type=rate, default=0.0, help="probability a radio delivery attempt fails")
    parser.add_argument(
        "--max-transfers", type=int, default=DEFAULT_MAX_TRANSFERS, help="transfers held at once (default 64)"
    )
    parser.add_argument("--corrupt", type=rate, default=0.0, help="per-byte rate of flipped bits, both directions")
    parser.add_argument("--drop", type=rate, default=0.0, help="per-byte rate of dropped bytes, both directions")
    parser.add_argument("--insert", type=rate, default=0.0, help="per-byte rate of inserted bytes, both directions")
    parser.add_argument("--state-dir", metavar="DIR", help="write each tag's picture and tags.json here")
    parser.add_argument("--control-socket", metavar="PATH", help="unix socket taking fault commands (see 'help')")


def run_base_station(args: argparse.Namespace) -> int:
    """Run the emulator until SIGTERM or SIGINT; returns the process exit code."""
    try:
        faults = LineFaults(args.corrupt, args.drop, args.insert, seed=args.seed)
        emulator = BaseStationEmulator(
            mixed(args.tags, args.seed, fast=args.fast),
            air_rate=args.air_rate,
            checkin_interval=args.checkin,
            radio_loss=args.radio_loss,
            max_transfers=args.max_transfers,
            faults=faults,
            state_dir=args.state_dir,
            seed=args.seed,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    port = open_port(args, "/tmp/bs0")  # noqa: S108 - a well-known demo path
    control = ControlServer(emulator, args.control_socket) if args.control_socket else None
    code = run_emulator(emulator.running, port, lambda: [f"tags {len(emulator.tags)}"], control)
    log.info("base-station emulator stopped")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="base-station-emulator", description="The radio base station's emulator.")
    add_arguments(parser)
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_base_station(args)


if __name__ == "__main__":
    sys.exit(main())
