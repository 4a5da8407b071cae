"""The reliable link (docs/base-station-protocol.md section 2): asyncio, transport injected.

Both ends run the same class (the agent as `host`, the emulator as `device`). Per channel (0 urgent,
1 bulk): 16-bit sequence numbers, a sliding window, cumulative ACKs with a 32-frame selective bitmap,
selective retransmission on timeout (adaptive RTO, Karn) and on SACK holes. The writer always sends
ACKs first, then urgent frames, then bulk frames, and holds bulk back while the transport still has
more than BULK_HIGH_WATER bytes queued, so an urgent frame never waits behind a long bulk backlog.

Frame size adapts to the line: it starts at INITIAL_PAYLOAD, doubles after a run of clean frames and
halves when retransmissions pile up. A frame stuck far above the current size (retransmitted again and
again) is replaced by a one-byte NOP under the same sequence number and handed back to the sender
through `on_undeliverable`, which re-sends its content in smaller pieces (picture chunks are
idempotent by offset).

HELLO / HELLO_ACK carry a random session id per start. A HELLO with a new session from a peer we knew
means the peer restarted: both directions start again at sequence 0, everything unacknowledged is
renumbered and sent again, and `on_peer_reset` tells the owner (which fails in-flight transfers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from firmware_bridge.base_station.frames import (
    BULK,
    CHANNELS,
    MAX_PAYLOAD,
    PROTOCOL_VERSION,
    SACK_BITS,
    URGENT,
    AckFrame,
    DataFrame,
    Frame,
    FrameDecoder,
    HelloAckFrame,
    HelloFrame,
    to_wire,
)
from firmware_bridge.base_station.messages import NOP

log = logging.getLogger(__name__)

WINDOW = 32
INITIAL_PAYLOAD = 128
MIN_PAYLOAD = 24
BULK_HIGH_WATER = 96
HELLO_INTERVAL_S = 0.5
MIN_RTO_S = 0.1
MAX_RTO_S = 5.0
STUCK_RETRANSMITS = 3


class LinkClosedError(Exception):
    """The transport is gone; the owner reconnects and runs the link again."""


class ProtocolVersionError(Exception):
    pass


class Transport(Protocol):
    async def read(self) -> bytes:
        """Some bytes (never empty); raises LinkClosedError when the line is gone."""
        ...

    async def write(self, data: bytes) -> None:
        """Returns once the bytes were handed to the line (back-pressure)."""
        ...

    def out_waiting(self) -> int:
        """Bytes written but not yet on the line, when the transport can tell (else 0)."""
        ...


def seq_before(a: int, b: int) -> bool:
    """a < b in 16-bit serial number arithmetic (RFC 1982)."""
    return a != b and ((b - a) & 0xFFFF) < 0x8000


@dataclass
class _Outgoing:
    payload: bytes
    future: asyncio.Future[None]
    sent_at: float = 0.0
    transmissions: int = 0
    due: bool = True  # needs (re)sending


@dataclass
class _Channel:
    queue: deque[_Outgoing] = field(default_factory=deque)
    inflight: dict[int, _Outgoing] = field(default_factory=dict)
    next_seq: int = 0
    expected: int = 0
    received: dict[int, bytes] = field(default_factory=dict)
    ack_due: bool = False


@dataclass
class LinkStats:
    frames_sent: int = 0
    frames_received: int = 0
    retransmits: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    peer_resets: int = 0
    undeliverable: int = 0
    handshakes: int = 0


class Link:
    def __init__(
        self,
        *,
        name: str = "link",
        on_message: Callable[[int, bytes], None],
        on_peer_reset: Callable[[], None] | None = None,
        on_undeliverable: Callable[[int, bytes], None] | None = None,
        window: int = WINDOW,
        max_payload: int = MAX_PAYLOAD,
        initial_payload: int = INITIAL_PAYLOAD,
    ) -> None:
        self.name = name
        self._on_message = on_message
        self._on_peer_reset = on_peer_reset
        self._on_undeliverable = on_undeliverable
        self.window = min(window, SACK_BITS)
        self.limit_payload = max_payload
        self.payload_size = min(initial_payload, max_payload)
        self.session = secrets.randbits(32) or 1
        self.peer_session: int | None = None
        self.up = asyncio.Event()
        self.stats = LinkStats()
        self.decoder = FrameDecoder()
        self._channels = {ch: _Channel() for ch in CHANNELS}
        self._wake = asyncio.Event()
        self._hello_acked = False
        self._srtt: float | None = None
        self._rttvar = 0.0
        self._rto = 0.5
        self._clean_run = 0
        self._errors_recent = 0

    # -- API for the owner --------------------------------------------------------------------

    def send(self, channel: int, payload: bytes) -> asyncio.Future[None]:
        """Queue one message; the future resolves when the peer acknowledged it."""
        if not payload:
            raise ValueError("empty message")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._channels[channel].queue.append(_Outgoing(payload, future))
        self._wake.set()
        return future

    def send_front(self, channel: int, payloads: list[bytes]) -> list[asyncio.Future[None]]:
        """Queue messages ahead of everything not yet sent (used to re-send undeliverable content)."""
        loop = asyncio.get_running_loop()
        items = [_Outgoing(p, loop.create_future()) for p in payloads]
        self._channels[channel].queue.extendleft(reversed(items))
        self._wake.set()
        return [i.future for i in items]

    def pending(self, channel: int) -> int:
        ch = self._channels[channel]
        return len(ch.queue) + len(ch.inflight)

    @property
    def chunk_payload(self) -> int:
        """The message size the owner should aim for now (frames adapt to the line)."""
        return self.payload_size

    async def run(self, transport: Transport) -> None:
        """Drive the link over one transport until it fails (raises LinkClosedError)."""
        self._hello_acked = False
        self.up.clear()
        self.stats.handshakes += 1
        for ch in self._channels.values():
            for out in ch.inflight.values():
                out.due = True
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._reader(transport), name=f"{self.name}-reader")
                tg.create_task(self._writer(transport), name=f"{self.name}-writer")
                tg.create_task(self._timers(), name=f"{self.name}-timers")
        except* LinkClosedError as group:
            self.up.clear()
            raise LinkClosedError(str(group.exceptions[0])) from None

    # -- receiving ----------------------------------------------------------------------------

    async def _reader(self, transport: Transport) -> None:
        while True:
            data = await transport.read()
            self.stats.bytes_received += len(data)
            for frame in self.decoder.feed(data):
                self.stats.frames_received += 1
                self._handle(frame)

    def _handle(self, frame: Frame) -> None:
        if isinstance(frame, HelloFrame):
            self._on_hello(frame.session, frame.version)
            self._hello_reply_due = True
            self._wake.set()
        elif isinstance(frame, HelloAckFrame):
            self._on_hello(frame.session, frame.version)
            if frame.peer_session == self.session:
                self._hello_acked = True
                self.up.set()
                self._wake.set()
        elif self.peer_session is None or not self.up.is_set():
            return  # no session yet: the peer retransmits after the handshake
        elif isinstance(frame, DataFrame):
            self._on_data(frame)
        elif isinstance(frame, AckFrame):
            self._on_ack(frame)

    def _on_hello(self, session: int, version: int) -> None:
        if version != PROTOCOL_VERSION:
            log.error("%s: peer speaks protocol version %d, we speak %d", self.name, version, PROTOCOL_VERSION)
            return
        if self.peer_session is not None and session != self.peer_session:
            log.warning("%s: peer restarted (session %08x -> %08x)", self.name, self.peer_session, session)
            self.stats.peer_resets += 1
            self.peer_session = session
            self._restart_sequences()
            if self._on_peer_reset is not None:
                self._on_peer_reset()
        self.peer_session = session

    def _restart_sequences(self) -> None:
        for ch in self._channels.values():
            unacked = [ch.inflight[s] for s in sorted(ch.inflight, key=lambda s: (s - ch.next_seq) & 0xFFFF)]
            for out in reversed(unacked):
                out.due = True
                out.transmissions = 0
                ch.queue.appendleft(out)
            ch.inflight.clear()
            ch.next_seq = 0
            ch.expected = 0
            ch.received.clear()
            ch.ack_due = False

    def _on_data(self, frame: DataFrame) -> None:
        ch = self._channels[frame.channel]
        ch.ack_due = True
        self._wake.set()
        if frame.seq == ch.expected:
            self._deliver(frame.channel, frame.payload)
            ch.expected = (ch.expected + 1) & 0xFFFF
            while ch.expected in ch.received:
                self._deliver(frame.channel, ch.received.pop(ch.expected))
                ch.expected = (ch.expected + 1) & 0xFFFF
        elif seq_before(ch.expected, frame.seq) and ((frame.seq - ch.expected) & 0xFFFF) <= SACK_BITS:
            ch.received[frame.seq] = frame.payload
        # else: an old duplicate; the ACK we send tells the peer again

    def _deliver(self, channel: int, payload: bytes) -> None:
        if payload == NOP:
            return
        try:
            self._on_message(channel, payload)
        except Exception:
            log.exception("%s: message handler failed", self.name)

    def _on_ack(self, frame: AckFrame) -> None:
        ch = self._channels[frame.channel]
        now = time.monotonic()
        acked = [s for s in ch.inflight if seq_before(s, frame.next_expected)]
        highest_sacked: int | None = None
        for bit in range(SACK_BITS):
            if frame.sack >> bit & 1:
                seq = (frame.next_expected + 1 + bit) & 0xFFFF
                if seq in ch.inflight:
                    acked.append(seq)
                highest_sacked = seq
        for seq in acked:
            out = ch.inflight.pop(seq)
            if out.transmissions == 1:
                self._rtt_sample(now - out.sent_at)
            self._clean_run += 1
            if not out.future.done():
                out.future.set_result(None)
        if highest_sacked is not None:
            # Holes below a selectively acknowledged frame were most likely lost: resend them now
            # rather than at the timeout (once per RTT at most).
            for seq, out in ch.inflight.items():
                if seq_before(seq, highest_sacked) and not out.due and now - out.sent_at > self._rto / 2:
                    out.due = True
                    self.stats.retransmits += 1
        self._adapt()
        if acked:
            self._wake.set()

    def _rtt_sample(self, rtt: float) -> None:
        if self._srtt is None:
            self._srtt, self._rttvar = rtt, rtt / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - rtt)
            self._srtt = 0.875 * self._srtt + 0.125 * rtt
        self._rto = min(MAX_RTO_S, max(MIN_RTO_S, self._srtt + 4 * self._rttvar))

    def _adapt(self) -> None:
        if self._clean_run >= 16 and self.payload_size < self.limit_payload:
            self.payload_size = min(self.limit_payload, self.payload_size * 2)
            self._clean_run = 0

    def _note_loss(self) -> None:
        self._clean_run = 0
        self._errors_recent += 1
        if self._errors_recent >= 3 and self.payload_size > MIN_PAYLOAD:
            self.payload_size = max(MIN_PAYLOAD, self.payload_size // 2)
            self._errors_recent = 0

    # -- sending ------------------------------------------------------------------------------

    _hello_reply_due = False
    _hello_due = False

    async def _writer(self, transport: Transport) -> None:
        while True:
            frame = self._next_frame(transport)
            if frame is None:
                self._wake.clear()
                # Also poll: the transport's queue drains without telling us. asyncio.timeout, not wait_for:
                # on Python 3.11 wait_for can swallow a cancellation that lands as the event is set
                # (CPython gh-86296), and the link would then never stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.005 if self._bulk_waiting() else 1.0):
                        await self._wake.wait()
                continue
            wire = to_wire(frame)
            await transport.write(wire)
            self.stats.frames_sent += 1
            self.stats.bytes_sent += len(wire)

    def _bulk_waiting(self) -> bool:
        ch = self._channels[BULK]
        return bool(ch.queue) or any(o.due for o in ch.inflight.values())

    def _next_frame(self, transport: Transport) -> Frame | None:
        if self._hello_due:
            self._hello_due = False
            return HelloFrame(PROTOCOL_VERSION, self.session, self.limit_payload, self.window)
        if self._hello_reply_due and self.peer_session is not None:
            self._hello_reply_due = False
            return HelloAckFrame(PROTOCOL_VERSION, self.session, self.limit_payload, self.window, self.peer_session)
        if not self.up.is_set():
            return None
        for ch_id in CHANNELS:
            ch = self._channels[ch_id]
            if ch.ack_due:
                ch.ack_due = False
                return AckFrame(ch_id, ch.expected, self._sack_bits(ch))
        for ch_id in (URGENT, BULK):
            if ch_id == BULK and transport.out_waiting() > BULK_HIGH_WATER:
                return None
            frame = self._next_data(ch_id)
            if frame is not None:
                return frame
        return None

    @staticmethod
    def _sack_bits(ch: _Channel) -> int:
        bits = 0
        for seq in ch.received:
            offset = (seq - ch.expected - 1) & 0xFFFF
            if offset < SACK_BITS:
                bits |= 1 << offset
        return bits

    def _next_data(self, ch_id: int) -> DataFrame | None:
        ch = self._channels[ch_id]
        now = time.monotonic()
        for seq, out in ch.inflight.items():
            if out.due:
                self._maybe_give_up(ch_id, out)
                return self._transmit(ch_id, seq, out, now)
        if ch.queue and len(ch.inflight) < self.window:
            out = ch.queue.popleft()
            seq = ch.next_seq
            ch.next_seq = (seq + 1) & 0xFFFF
            ch.inflight[seq] = out
            return self._transmit(ch_id, seq, out, now)
        return None

    def _transmit(self, ch_id: int, seq: int, out: _Outgoing, now: float) -> DataFrame:
        out.due = False
        out.sent_at = now
        out.transmissions += 1
        return DataFrame(ch_id, seq, out.payload)

    def _maybe_give_up(self, ch_id: int, out: _Outgoing) -> None:
        """A frame far larger than the line now carries is replaced by a NOP and handed back."""
        if (
            out.transmissions >= STUCK_RETRANSMITS
            and len(out.payload) > 2 * self.payload_size
            and self._on_undeliverable is not None
        ):
            original = out.payload
            out.payload = NOP
            self.stats.undeliverable += 1
            try:
                self._on_undeliverable(ch_id, original)
            except Exception:
                log.exception("%s: undeliverable handler failed", self.name)

    async def _timers(self) -> None:
        last_hello = 0.0
        while True:
            await asyncio.sleep(0.02)
            now = time.monotonic()
            if not self._hello_acked and now - last_hello >= HELLO_INTERVAL_S:
                last_hello = now
                self._hello_due = True
                self._wake.set()
            if not self.up.is_set():
                continue
            for ch in self._channels.values():
                for out in ch.inflight.values():
                    if not out.due and now - out.sent_at > self._rto * min(4.0, 1.5 ** (out.transmissions - 1)):
                        out.due = True
                        self.stats.retransmits += 1
                        self._note_loss()
                        self._wake.set()
