"""The agent's side of one base station: reconnecting serial port, link, requests, transfers, events.

`run()` keeps the port open: when it fails (USB unplugged, ser2net gone) it is re-opened every
`reopen_interval_s` until it comes back, without restarting anything; the link's unacknowledged
messages are sent again. A base-station reset (new session in its HELLO) fails every transfer in
progress with reason `base_station_reset`, so the scheduler above queues them again: no job is lost.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from firmware_bridge.base_station.frames import BULK, URGENT
from firmware_bridge.base_station.link import Link, LinkClosedError
from firmware_bridge.base_station.messages import (
    CHUNK_OVERHEAD,
    NO_HASH,
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
    TagList,
    TransferDone,
    TransferFailed,
    TransferStored,
    decode_message,
)
from firmware_bridge.serial_port import SerialOpenError, SerialPort

log = logging.getLogger(__name__)

MIN_CHUNK = 16
# An open port whose base station has not answered the handshake by then is a problem (/healthz, the log).
HANDSHAKE_GRACE_S = 10.0


class BaseStationError(Exception):
    pass


@dataclass(frozen=True)
class TransferOutcome:
    ok: bool
    shown_hash: bytes | None = None
    reason: str | None = None


@dataclass
class Transfer:
    xfer: int
    tag: bytes
    target_hash: bytes
    wire_payload_bytes: int
    stored: asyncio.Future[None]
    done: asyncio.Future[TransferOutcome]


@dataclass
class ClientStats:
    bad_messages: int = 0
    transfers_started: int = 0
    transfers_done: int = 0
    transfers_failed: int = 0
    reconnects: int = 0
    last_error: str | None = None
    open_failures: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


class BaseStationClient:
    def __init__(
        self,
        name: str,
        url: str,
        *,
        baudrate: int = 115200,
        on_event: Callable[[BaseStationClient, Message], None] | None = None,
        reopen_interval_s: float = 1.0,
    ) -> None:
        self.name = name
        self.url = url
        self.baudrate = baudrate
        self._on_event = on_event
        self.reopen_interval_s = reopen_interval_s
        self.link = Link(
            name=f"bs-{name}",
            on_message=self._on_message,
            on_peer_reset=self._on_peer_reset,
            on_undeliverable=self._on_undeliverable,
        )
        self.stats = ClientStats()
        self.info: Info | None = None
        self._req_ids = itertools.count(1)
        self._requests: dict[int, asyncio.Future[Message]] = {}
        self._xfer_ids = itertools.count(1)
        self._transfers: dict[int, Transfer] = {}
        self._port: SerialPort | None = None
        self._opened_at: float | None = None

    @property
    def connected(self) -> bool:
        return self.link.up.is_set() and self._port is not None

    @property
    def transfers_in_flight(self) -> int:
        return len(self._transfers)

    @property
    def max_held(self) -> int:
        """Transfers the base station holds at once (from its INFO; 64 until it answered)."""
        return self.info.max_transfers if self.info else 64

    @property
    def sync_token(self) -> object:
        """Changes whenever the base station (re)started: the scheduler then syncs again."""
        return self.link.peer_session

    def link_statistics(self) -> dict[str, int]:
        """The serial link's counters since the agent started (the technician's devices page)."""
        link, decoder = self.link.stats, self.link.decoder.stats
        return {
            "frames_sent": link.frames_sent,
            "frames_received": link.frames_received,
            "retransmits": link.retransmits,
            "crc_errors": decoder.crc_errors,
            "bad_frames": decoder.bad_frames,
            "overruns": decoder.overruns,
            "garbage_bytes": decoder.garbage_bytes,
            "bytes_sent": link.bytes_sent,
            "bytes_received": link.bytes_received,
            "peer_resets": link.peer_resets,
            "reconnects": self.stats.reconnects,
            "handshakes": link.handshakes,
            "undeliverable": link.undeliverable,
            "bad_messages": self.stats.bad_messages,
            "queue_urgent": self.link.pending(URGENT),
            "queue_bulk": self.link.pending(BULK),
            "transfers_in_flight": self.transfers_in_flight,
            "transfers_started": self.stats.transfers_started,
            "transfers_done": self.stats.transfers_done,
            "transfers_failed": self.stats.transfers_failed,
            "frame_payload": self.link.chunk_payload,
        }

    async def sync(self) -> list[tuple[bytes, int, bytes]]:
        """After (re)connecting: INFO and the tag list (tag, type code, shown hash)."""
        await self.get_info()
        return await self.list_tags()

    # -- connection ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Keep the base station connected until cancelled."""
        while True:
            try:
                self._port = await SerialPort.open(self.url, self.baudrate)
            except SerialOpenError as exc:
                self.stats.open_failures += 1
                if self.stats.open_failures == 1 or self.stats.open_failures % 60 == 0:
                    log.warning("base station %s: %s; retrying every %.0f s", self.name, exc.reason,
                                self.reopen_interval_s)
                self.stats.last_error = exc.reason
                await asyncio.sleep(self.reopen_interval_s)
                continue
            self.stats.open_failures = 0
            self._opened_at = time.monotonic()
            log.info("base station %s: %s open", self.name, self.url)
            watcher = asyncio.get_running_loop().create_task(self._warn_without_handshake(), name="bs-handshake")
            try:
                await self.link.run(self._port)
            except LinkClosedError as exc:
                self.stats.reconnects += 1
                self.stats.last_error = str(exc)
                log.warning("base station %s: line lost (%s); re-opening", self.name, exc)
            finally:
                watcher.cancel()
                port, self._port = self._port, None
                self._opened_at = None
                if port is not None:
                    port.close()
            await asyncio.sleep(min(self.reopen_interval_s, 0.2))

    async def _warn_without_handshake(self) -> None:
        """An open port whose base station never answers the handshake is not silent in the log."""
        try:
            await asyncio.wait_for(self.link.up.wait(), HANDSHAKE_GRACE_S)
        except TimeoutError:
            self.stats.last_error = f"no handshake within {HANDSHAKE_GRACE_S:.0f} s of opening {self.url}"
            log.warning("base station %s: %s is open but the base station has not answered the handshake in "
                        "%.0f s (wrong device, baud rate or firmware?)", self.name, self.url, HANDSHAKE_GRACE_S)

    @property
    def problem(self) -> str | None:
        """Why this base station is not working (for /healthz), or None while it works or is still starting."""
        if self.connected:
            return None
        if self._port is None or self._opened_at is None:
            return f"port {self.url} not open" + (f": {self.stats.last_error}" if self.stats.last_error else "")
        open_s = time.monotonic() - self._opened_at
        if open_s < HANDSHAKE_GRACE_S:
            return None
        return f"port {self.url} open for {open_s:.0f} s, no handshake with the base station"

    async def wait_connected(self, timeout: float) -> None:
        await asyncio.wait_for(self.link.up.wait(), timeout)

    # -- requests -----------------------------------------------------------------------------

    async def _request(self, channel: int, build: Callable[[int], Message], timeout: float) -> Message:
        req = next(self._req_ids) & 0xFFFF
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._requests[req] = future
        try:
            self.link.send(channel, build(req).to_bytes())
            return await asyncio.wait_for(future, timeout)
        finally:
            self._requests.pop(req, None)

    async def get_info(self, timeout: float = 5.0) -> Info:
        reply = await self._request(URGENT, GetInfo, timeout)
        if not isinstance(reply, Info):
            raise BaseStationError(f"GET_INFO answered with {reply}")
        self.info = reply
        return reply

    async def list_tags(self, timeout: float = 10.0) -> list[tuple[bytes, int, bytes]]:
        records: list[tuple[bytes, int, bytes]] = []
        offset = 0
        while True:
            reply = await self._request(URGENT, functools.partial(_list_tags, offset=offset), timeout)
            if not isinstance(reply, TagList):
                raise BaseStationError(f"LIST_TAGS answered with {reply}")
            records += reply.records()
            offset += reply.count
            if reply.count == 0 or offset >= reply.total:
                return records

    async def led_flash(
        self, tag: bytes, *, colour: int = 2, count: int = 5, period_ms: int = 500, timeout: float = 5.0
    ) -> int:
        """Flash a tag's LED (urgent channel); returns the base station's status code."""
        reply = await self._request(URGENT, lambda req: LedFlash(req, tag, colour, count, period_ms), timeout)
        if not isinstance(reply, Result):
            raise BaseStationError(f"LED_FLASH answered with {reply}")
        return reply.status

    async def set_page(self, tag: bytes, page: int, timeout: float = 5.0) -> int:
        reply = await self._request(URGENT, lambda req: SetPage(req, tag, page), timeout)
        if not isinstance(reply, Result):
            raise BaseStationError(f"SET_PAGE answered with {reply}")
        return reply.status

    async def set_fast(self, tag: bytes, seconds: int, timeout: float = 5.0) -> int:
        """Fast check-in for `seconds` (0 ends it): the tag listens all the time from its next check-in, so LED
        flashes, pages and pictures reach it at once (pick-to-light zones). Returns the status code."""
        if not 0 <= seconds <= 0xFFFF:
            raise ValueError("fast check-in lasts 0-65535 seconds")
        reply = await self._request(URGENT, lambda req: SetFast(req, tag, seconds), timeout)
        if not isinstance(reply, Result):
            raise BaseStationError(f"SET_FAST answered with {reply}")
        return reply.status

    # -- transfers ----------------------------------------------------------------------------

    def push(
        self,
        tag: bytes,
        *,
        encoding: int,
        data: bytes,
        picture_hash: bytes,
        base_hash: bytes | None = None,
        page: int = 0,
    ) -> Transfer:
        """Send a picture (full, or a delta against `base_hash`) on the bulk channel."""
        xfer = self._next_xfer()
        loop = asyncio.get_running_loop()
        if encoding == Encoding.DELTA_ZLIB:
            if base_hash is None:
                raise ValueError("a delta needs the base picture's hash")
            begin: Message = DeltaBegin(xfer, tag, encoding, len(data), base_hash, page)
        else:
            begin = PushBegin(xfer, tag, encoding, len(data), page)
        payloads = [begin.to_bytes()]
        size = max(MIN_CHUNK, self.link.chunk_payload - CHUNK_OVERHEAD)
        payloads += [PushChunk(xfer, off, data[off : off + size]).to_bytes() for off in range(0, len(data), size)]
        payloads.append(PushEnd(xfer, picture_hash).to_bytes())
        transfer = Transfer(
            xfer, tag, picture_hash, sum(map(len, payloads)), loop.create_future(), loop.create_future()
        )
        self._transfers[xfer] = transfer
        self.stats.transfers_started += 1
        for payload in payloads:
            self.link.send(BULK, payload)
        return transfer

    def cancel(self, xfer: int) -> None:
        if xfer in self._transfers:
            self.link.send(URGENT, Cancel(xfer).to_bytes())

    def _next_xfer(self) -> int:
        while True:
            xfer = next(self._xfer_ids) & 0xFFFF
            if xfer and xfer not in self._transfers:
                return xfer

    def _finish(self, xfer: int, outcome: TransferOutcome) -> None:
        transfer = self._transfers.pop(xfer, None)
        if transfer is None:
            return
        if outcome.ok:
            self.stats.transfers_done += 1
        else:
            self.stats.transfers_failed += 1
            reason = outcome.reason or "unknown"
            self.stats.reasons[reason] = self.stats.reasons.get(reason, 0) + 1
        if not transfer.stored.done():
            transfer.stored.set_result(None)
        if not transfer.done.done():
            transfer.done.set_result(outcome)

    # -- from the link ------------------------------------------------------------------------

    def _on_message(self, channel: int, payload: bytes) -> None:
        try:
            msg = decode_message(payload)
        except MessageError as exc:
            self.stats.bad_messages += 1
            log.warning("base station %s: undecodable message: %s", self.name, exc)
            return
        if isinstance(msg, Info | TagList | Result):
            future = self._requests.get(msg.req)
            if future is not None and not future.done():
                future.set_result(msg)
            return
        if isinstance(msg, TransferStored):
            transfer = self._transfers.get(msg.xfer)
            if transfer is not None and not transfer.stored.done():
                transfer.stored.set_result(None)
            return
        if isinstance(msg, TransferDone):
            self._finish(msg.xfer, TransferOutcome(True, msg.hash))
        elif isinstance(msg, TransferFailed):
            self._finish(msg.xfer, TransferOutcome(False, None, FailReason.NAMES.get(msg.reason, str(msg.reason))))
        if self._on_event is not None:
            try:
                self._on_event(self, msg)
            except Exception:
                log.exception("base station %s: event handler failed", self.name)

    def _on_peer_reset(self) -> None:
        pending = list(self._transfers)
        if pending:
            log.warning("base station %s restarted: %d transfers will be sent again", self.name, len(pending))
        for xfer in pending:
            self._finish(xfer, TransferOutcome(False, None, "base_station_reset"))

    def _on_undeliverable(self, channel: int, payload: bytes) -> None:
        """Re-send a chunk the line could not carry, in pieces of the size it carries now."""
        try:
            msg = decode_message(payload)
        except MessageError:
            return
        if not isinstance(msg, PushChunk):
            self.link.send_front(channel, [payload])
            return
        size = max(MIN_CHUNK, self.link.chunk_payload - CHUNK_OVERHEAD)
        pieces = [
            PushChunk(msg.xfer, msg.offset + off, msg.data[off : off + size]).to_bytes()
            for off in range(0, len(msg.data), size)
        ]
        self.link.send_front(channel, pieces)


def _list_tags(req: int, *, offset: int) -> ListTags:
    return ListTags(req, offset, 40)


__all__ = ["NO_HASH", "BaseStationClient", "BaseStationError", "Transfer", "TransferOutcome"]
